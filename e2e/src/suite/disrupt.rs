//! Checks that disturb the cluster on purpose: a rolling restart of the weft agents under
//! a live cross-node connection, and a Node deleted and registered again.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::checks::check;
use super::objects::{probe_pod, wait_pod_ready};
use super::{retry, Check, CheckResult, Ctx, NAMESPACE, PROBE_PORT};
use crate::cluster::{self, Layout, NodeSpec};

const AGENT_NAMESPACE: &str = "weft-system";
const AGENT_DAEMONSET: &str = "weft-agent";
/// How long the paced stream runs; the rollout must finish inside it.
const STREAM_SECS: u64 = 30;

pub fn all() -> Vec<Check> {
    vec![
        check!(
            "agent rollout restart under a cross-node stream",
            STREAM_SECS + 90,
            rollout_restart
        ),
        check!(
            "Node deleted and re-registered: its pods work",
            240,
            reregister
        ),
    ]
}

async fn rollout_restart(c: &mut Ctx) -> CheckResult {
    let (a, b) = (c.probe(1)?.clone(), c.probe(2)?.clone());
    let kubectl = c.kubectl.clone();
    let to = SocketAddr::from((b.ip, PROBE_PORT));
    let stream_started = Instant::now();
    let stream = tokio::spawn(async move {
        let r = kubectl
            .connect(
                &a.name,
                to,
                &[
                    "--duration-secs",
                    &STREAM_SECS.to_string(),
                    "--timeout-secs",
                    "10",
                ],
            )
            .await;
        (r, Instant::now())
    });
    // Let the stream carry data for a moment before the disturbance (not a readiness
    // wait: the stream itself reports whether it ever connected).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let api: Api<DaemonSet> = Api::namespaced(c.client.clone(), AGENT_NAMESPACE);
    // What `kubectl rollout restart` does: a new template annotation.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": now}}}}});
    let t = Instant::now();
    let ds = api
        .patch(
            AGENT_DAEMONSET,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .context("patch the weft-agent DaemonSet")?;
    let generation = ds.metadata.generation.unwrap_or(0);
    retry(Duration::from_secs(STREAM_SECS + 30), || async {
        let ds = api.get(AGENT_DAEMONSET).await?;
        let s = ds.status.context("no DaemonSet status")?;
        let done = s.observed_generation.unwrap_or(0) >= generation
            && s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled
            && s.number_available.unwrap_or(0) == s.desired_number_scheduled
            && s.number_unavailable.unwrap_or(0) == 0;
        ensure!(done, "rollout not finished: {s:?}");
        Ok(())
    })
    .await?;
    let rollout_done = Instant::now();
    let rollout_secs = t.elapsed().as_secs_f64();
    let (r, stream_end) = stream.await.context("stream task")?;
    let seen = r.context("the cross-node stream broke during the rollout")?;
    ensure!(
        stream_end > rollout_done,
        "the rollout ({rollout_secs:.1} s) outlasted the {STREAM_SECS} s stream"
    );
    Ok(format!(
        "rollout {rollout_secs:.1} s inside a {STREAM_SECS} s paced stream {} -> {to} \
         (server saw {seen}), stream ran {:.1} s",
        b.node,
        stream_end.duration_since(stream_started).as_secs_f64()
    ))
}

fn is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec.as_ref()?.pod_cidr.clone()
}

async fn reregister(c: &mut Ctx) -> CheckResult {
    let n = c.nodes.len();
    // The last node: the first keeps probe-host and probe-1b, the second the hostPort
    // and recreated probes (with two nodes the second it is).
    let victim = c.nodes[n - 1].name.clone();
    let victim_pod = c.probe(n)?.clone();
    let peer = c.probe(1)?.clone();
    let api: Api<Node> = Api::all(c.client.clone());
    let old = api.get(&victim).await?;
    let old_uid = old.metadata.uid.clone();
    let old_cidr = pod_cidr(&old);
    api.delete(&victim, &DeleteParams::default()).await?;

    // Does the kubelet register its Node again by itself? (1.34's does not: it registers
    // once at start; measured, nothing after 25 s. Then its kubelet is restarted.)
    let back = |api: Api<Node>, victim: String, old_uid: Option<String>| async move {
        let node = api.get(&victim).await?;
        ensure!(
            node.metadata.uid != old_uid,
            "{victim} not registered again yet"
        );
        Ok(node)
    };
    let mut how = "the kubelet registered it again by itself".to_string();
    let t = Instant::now();
    let first = retry(Duration::from_secs(20), || {
        back(api.clone(), victim.clone(), old_uid.clone())
    })
    .await;
    if first.is_err() {
        how = format!(
            "no re-registration after {:.0} s; {}",
            t.elapsed().as_secs_f64(),
            restart_kubelet(&victim)?
        );
        retry(Duration::from_secs(60), || {
            back(api.clone(), victim.clone(), old_uid.clone())
        })
        .await?;
    }
    let registered = t.elapsed().as_secs_f64();
    let node = retry(Duration::from_secs(120), || async {
        let node = api.get(&victim).await?;
        ensure!(
            is_ready(&node) && pod_cidr(&node).is_some(),
            "{victim} not Ready with a pod CIDR"
        );
        Ok(node)
    })
    .await?;
    let new_cidr = pod_cidr(&node);
    let ready = t.elapsed().as_secs_f64();

    let mut problems = Vec::new();
    let mut notes = vec![
        how,
        format!("registered {registered:.1} s, Ready {ready:.1} s"),
        format!("pod CIDR {old_cidr:?} -> {new_cidr:?}"),
    ];
    // The pod that ran there before (unless the pod GC removed it meanwhile).
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NAMESPACE);
    match pods.get_opt(&victim_pod.name).await? {
        Some(p) if p.metadata.deletion_timestamp.is_none() => {
            match both_ways(
                c,
                &peer.name,
                peer.ip.into(),
                &victim_pod.name,
                victim_pod.ip.into(),
            )
            .await
            {
                Ok(()) => notes.push(format!(
                    "old pod {} ({}) works",
                    victim_pod.name, victim_pod.ip
                )),
                Err(e) => problems.push(format!(
                    "old pod {} ({}) kept running but is unreachable: {e:#}",
                    victim_pod.name, victim_pod.ip
                )),
            }
        }
        _ => notes.push(format!("old pod {} was removed", victim_pod.name)),
    }
    // A new pod on the node.
    let name = format!("probe-{n}-new");
    pods.create(
        &PostParams::default(),
        &probe_pod(&name, &victim, false, false),
    )
    .await?;
    let new = wait_pod_ready(&c.client, &name, Duration::from_secs(90)).await?;
    c.pods.insert(name.clone(), new.clone());
    match both_ways(c, &peer.name, peer.ip.into(), &name, new.ip.into()).await {
        Ok(()) => notes.push(format!("new pod {name} ({}) works", new.ip)),
        Err(e) => problems.push(format!("new pod {name} ({}): {e:#}", new.ip)),
    }
    if !problems.is_empty() {
        bail!("{}; {}", problems.join("; "), notes.join("; "));
    }
    Ok(notes.join("; "))
}

/// TCP both ways between two probe pods, each seeing the other's pod IP.
async fn both_ways(c: &Ctx, a: &str, a_ip: IpAddr, b: &str, b_ip: IpAddr) -> Result<()> {
    for (from, from_ip, to_ip) in [(a, a_ip, b_ip), (b, b_ip, a_ip)] {
        let seen = retry(Duration::from_secs(30), || {
            c.kubectl.connect(
                from,
                SocketAddr::new(to_ip, PROBE_PORT),
                &["--timeout-secs", "3"],
            )
        })
        .await
        .with_context(|| format!("{from} -> {to_ip}"))?;
        ensure!(seen.ip() == from_ip, "{from} -> {to_ip}: server saw {seen}");
    }
    Ok(())
}

/// Restarts the kubelet of `node`: through the local cluster's state directory when it
/// is one of `weft-e2e up`'s nodes, else as a kind node (a docker container with systemd).
fn restart_kubelet(node: &str) -> Result<String> {
    let layout = Layout::new(cluster::state_dir());
    let local = node
        .strip_prefix(&format!("{}-", cluster::PREFIX))
        .and_then(|i| i.parse::<u8>().ok())
        .filter(|_| layout.dir.join("nodes").join(node).is_dir());
    if let Some(index) = local {
        let spec = NodeSpec::new(index);
        let name = format!("kubelet-{node}");
        cluster::process::stop(&layout, &name, Duration::from_secs(10));
        cluster::node::start_kubelet(&layout, &spec)?;
        return Ok("restarted its kubelet (local cluster)".into());
    }
    let out = Command::new("docker")
        .args(["exec", node, "systemctl", "restart", "kubelet"])
        .output()
        .context("docker exec (kind node)")?;
    if !out.status.success() {
        bail!(
            "cannot restart the kubelet of {node}: not a local node and `docker exec {node} \
             systemctl restart kubelet` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok("restarted its kubelet (docker exec, kind)".into())
}
