//! The connectivity checks that leave the cluster as they found it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, PostParams};

use super::objects::{delete_pod, probe_pod, wait_pod_ready};
use super::{retry, Check, CheckResult, Ctx, HOST_PORT, HOST_PROBE_PORT, NAMESPACE, PROBE_PORT};

/// Builds a [`Check`] from an `async fn(&mut Ctx) -> CheckResult`.
macro_rules! check {
    ($name:expr, $secs:expr, $f:path) => {{
        fn run<'a>(
            c: &'a mut Ctx,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = CheckResult> + 'a>> {
            Box::pin($f(c))
        }
        Check {
            name: $name,
            timeout: Duration::from_secs($secs),
            run,
        }
    }};
}
pub(super) use check;

pub fn all() -> Vec<Check> {
    vec![
        check!("pod to pod, same node (TCP+UDP)", 40, same_node),
        check!("pod to pod, every pair of nodes", 60, every_pair),
        check!("server sees the client's pod IP (no NAT)", 40, no_nat),
        check!("cluster DNS from every node", 120, dns),
        check!("ClusterIP Service, backend on another node", 60, cluster_ip),
        check!("node to pod, same node (hostNetwork pod)", 40, node_to_pod),
        check!(
            "hostNetwork pod to pod on another node",
            40,
            host_to_remote_pod
        ),
        check!(
            "pod to node, both nodes (hostNetwork server)",
            40,
            pod_to_node
        ),
        check!(
            "hostPort via portmap, from another node's pod",
            60,
            host_port
        ),
        check!("200 MiB TCP transfer across nodes", 120, bulk),
        check!("recreated pod gets a working IP", 120, recreate),
    ]
}

/// Reachability settles within a few seconds of a pod's start (ARP, rules): retry
/// within this window, then fail.
const SETTLE: Duration = Duration::from_secs(15);

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

async fn connect(c: &Ctx, from: &str, to: SocketAddr) -> Result<SocketAddr> {
    retry(SETTLE, || {
        c.kubectl.connect(from, to, &["--timeout-secs", "3"])
    })
    .await
    .with_context(|| format!("{from} -> {to}"))
}

async fn same_node(c: &mut Ctx) -> CheckResult {
    let (a, b) = (c.pod("probe-1b")?, c.probe(1)?);
    ensure!(
        a.node == b.node,
        "probe-1b and probe-1 are on different nodes"
    );
    let seen = connect(c, &a.name, addr(b.ip, PROBE_PORT)).await?;
    let seen_udp = retry(SETTLE, || c.kubectl.udp(&a.name, addr(b.ip, PROBE_PORT))).await?;
    Ok(format!(
        "{} -> {} on {}: tcp seen {seen}, udp seen {seen_udp}",
        a.ip, b.ip, a.node
    ))
}

async fn every_pair(c: &mut Ctx) -> CheckResult {
    let n = c.nodes.len();
    let mut jobs = Vec::new();
    for i in 1..=n {
        for j in 1..=n {
            if i != j {
                jobs.push((i, j));
            }
        }
    }
    let c = &*c;
    let results = join_all(jobs.iter().map(|&(i, j)| async move {
        let (a, b) = (c.probe(i)?, c.probe(j)?);
        connect(c, &a.name, addr(b.ip, PROBE_PORT)).await
    }))
    .await;
    let failed: Vec<String> = jobs
        .iter()
        .zip(&results)
        .filter_map(|((i, j), r)| {
            r.as_ref()
                .err()
                .map(|e| format!("node {i} -> node {j}: {e:#}"))
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} pairs failed:\n{}",
            failed.len(),
            jobs.len(),
            failed.join("\n")
        );
    }
    Ok(format!("{} ordered pairs", jobs.len()))
}

async fn no_nat(c: &mut Ctx) -> CheckResult {
    let mut notes = Vec::new();
    let pairs = [
        ("probe-1", "probe-2"),
        ("probe-2", "probe-1"),
        ("probe-1b", "probe-1"),
    ];
    for (from, to) in pairs {
        let (a, b) = (c.pod(from)?, c.pod(to)?);
        let seen = connect(c, from, addr(b.ip, PROBE_PORT)).await?;
        ensure!(
            seen.ip() == IpAddr::V4(a.ip),
            "tcp {from} ({}) -> {to}: server saw {seen}",
            a.ip
        );
        let seen = retry(SETTLE, || c.kubectl.udp(from, addr(b.ip, PROBE_PORT))).await?;
        ensure!(
            seen.ip() == IpAddr::V4(a.ip),
            "udp {from} ({}) -> {to}: server saw {seen}",
            a.ip
        );
        notes.push(format!("{from}->{to}"));
    }
    Ok(format!("tcp+udp {}", notes.join(", ")))
}

async fn dns(c: &mut Ctx) -> CheckResult {
    // CoreDNS must have a ready endpoint before any lookup can work.
    let ep: Api<Endpoints> = Api::namespaced(c.client.clone(), "kube-system");
    retry(Duration::from_secs(60), || async {
        let e = ep.get("kube-dns").await?;
        let ready = e
            .subsets
            .unwrap_or_default()
            .iter()
            .any(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()));
        ensure!(
            ready,
            "service kube-dns in kube-system has no ready endpoint"
        );
        Ok(())
    })
    .await?;
    let kubernetes: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let api_ip: IpAddr = kubernetes
        .get("kubernetes")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("kubernetes Service without ClusterIP")?
        .parse()?;
    let n = c.nodes.len();
    let mut notes = Vec::new();
    for i in 1..=n {
        let pod = c.probe(i)?.name.clone();
        let got = retry(SETTLE, || c.kubectl.resolve(&pod, "kubernetes.default")).await?;
        ensure!(
            got.contains(&api_ip),
            "{pod}: kubernetes.default -> {got:?}, want {api_ip}"
        );
        // A Service whose pod runs on another node, by its short name + namespace.
        let other = i % n + 1;
        let svc = format!("svc-{other}");
        let want = IpAddr::V4(c.services[&svc]);
        let name = format!("{svc}.{NAMESPACE}");
        let got = retry(SETTLE, || c.kubectl.resolve(&pod, &name)).await?;
        ensure!(got.contains(&want), "{pod}: {name} -> {got:?}, want {want}");
        notes.push(format!("{pod}: {name}={want}"));
    }
    Ok(format!("kubernetes.default={api_ip}; {}", notes.join(", ")))
}

async fn cluster_ip(c: &mut Ctx) -> CheckResult {
    let n = c.nodes.len();
    let mut notes = Vec::new();
    for i in 1..=n {
        let other = i % n + 1;
        let from = c.probe(i)?.name.clone();
        let vip = c.services[&format!("svc-{other}")];
        let seen = connect(c, &from, addr(vip, PROBE_PORT)).await?;
        notes.push(format!("{from} -> svc-{other} {vip} (seen {seen})"));
    }
    Ok(notes.join(", "))
}

async fn node_to_pod(c: &mut Ctx) -> CheckResult {
    let (h, p) = (c.pod("probe-host")?, c.probe(1)?);
    ensure!(
        h.node == p.node,
        "probe-host and probe-1 are on different nodes"
    );
    let seen = connect(c, &h.name, addr(p.ip, PROBE_PORT)).await?;
    Ok(format!("{} -> {}: seen {seen}", h.node, p.ip))
}

async fn host_to_remote_pod(c: &mut Ctx) -> CheckResult {
    let (h, p) = (c.pod("probe-host")?, c.probe(2)?);
    let seen = connect(c, &h.name, addr(p.ip, PROBE_PORT)).await?;
    Ok(format!("{} -> {} on {}: seen {seen}", h.node, p.ip, p.node))
}

async fn pod_to_node(c: &mut Ctx) -> CheckResult {
    let h = c.pod("probe-host")?;
    let target = addr(h.ip, HOST_PROBE_PORT);
    let mut notes = Vec::new();
    for from in ["probe-1", "probe-2"] {
        let seen = connect(c, from, target).await?;
        notes.push(format!("{from} -> {target}: seen {seen}"));
    }
    Ok(notes.join(", "))
}

async fn host_port(c: &mut Ctx) -> CheckResult {
    let hp = c.pod("probe-hostport")?;
    let node_ip = c
        .nodes
        .iter()
        .find(|n| n.name == hp.node)
        .context("node of probe-hostport")?
        .ip;
    let from = c
        .nodes
        .iter()
        .position(|n| n.name != hp.node)
        .map(|i| format!("probe-{}", i + 1))
        .context("a node other than probe-hostport's")?;
    let seen = connect(c, &from, addr(node_ip, HOST_PORT)).await?;
    Ok(format!(
        "{from} -> {node_ip}:{HOST_PORT} -> {}:{PROBE_PORT}: seen {seen}",
        hp.ip
    ))
}

async fn bulk(c: &mut Ctx) -> CheckResult {
    const BYTES: u64 = 200 * 1024 * 1024;
    let (a, b) = (c.probe(1)?, c.probe(2)?);
    let t = Instant::now();
    c.kubectl
        .connect(
            &a.name,
            addr(b.ip, PROBE_PORT),
            &["--send-bytes", &BYTES.to_string(), "--timeout-secs", "30"],
        )
        .await?;
    let secs = t.elapsed().as_secs_f64();
    Ok(format!(
        "{} -> {}: {BYTES} bytes in {secs:.1} s incl. exec ({:.0} Mbit/s)",
        a.node,
        b.node,
        BYTES as f64 * 8.0 / secs / 1e6
    ))
}

async fn recreate(c: &mut Ctx) -> CheckResult {
    let old = c.pod("probe-recreate")?.clone();
    delete_pod(&c.client, &old.name, Duration::from_secs(60)).await?;
    let api: Api<Pod> = Api::namespaced(c.client.clone(), NAMESPACE);
    api.create(
        &PostParams::default(),
        &probe_pod(&old.name, &old.node, false, false),
    )
    .await?;
    let new = wait_pod_ready(&c.client, &old.name, Duration::from_secs(60)).await?;
    c.pods.insert(new.name.clone(), new.clone());
    let p1 = c.probe(1)?.clone();
    let seen_in = connect(c, &p1.name, addr(new.ip, PROBE_PORT)).await?;
    let seen_out = connect(c, &new.name, addr(p1.ip, PROBE_PORT)).await?;
    ensure!(
        seen_out.ip() == IpAddr::V4(new.ip),
        "probe-1 saw {seen_out}, not the new pod's {}",
        new.ip
    );
    Ok(format!(
        "on {}: {} -> {}; in seen {seen_in}, out seen {seen_out}",
        new.node, old.ip, new.ip
    ))
}
