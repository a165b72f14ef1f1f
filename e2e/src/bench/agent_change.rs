//! `bench agent`'s one-change latency: the agent's own share of a Node change at 5000
//! Nodes, without an API server.
//!
//! The real reconcile loop ([`Reconciler`]) and datapath run in a throwaway netns on a
//! two-worker runtime, as in the agent, fed by a scripted watch stream: a list of 5000
//! Nodes, then one Node added (or deleted) at a time, with quiet between changes. Each
//! change is timed from just before its watch event is parsed (a ~20 KB kubelet-like
//! Node, as the API server sends it) to the kernel's notification of the route's arrival
//! (or removal), read on a thread of its own. What `bench flannel` measures on top of
//! this is the API server's share (the write, the watch), the same for any agent.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::channel::mpsc;
use ipnet::Ipv4Net;
use kube::runtime::watcher;
use weft_agent::datapath::Datapath;
use weft_agent::metrics::Metrics;
use weft_agent::nodes::SlimNode;
use weft_agent::reconcile::{Reconciler, MAX_WINDOW};
use weft_common::annotations as ann;
use weft_common::netns::Netns;
use weft_e2e::fixtures::kubelet_like_node;

use super::agent::{config, ip, median, Namespaces};
use super::flannel::kernel::{Change, NodeKernel};

/// Remote Nodes listed before the changes.
const NODES: u32 = 5000;
/// Quiet time before each change (longer than the coalescing window).
const GAP: Duration = Duration::from_millis(300);

/// Medians (ms) of the single changes.
#[derive(Clone, Copy, Debug)]
pub struct ChangeLatency {
    pub add_ms: f64,
    pub del_ms: f64,
    pub add_max_ms: f64,
    pub del_max_ms: f64,
}

type Event = Result<watcher::Event<SlimNode>, watcher::Error>;

/// Node `k` as the API server would send it: kubelet-like, with weft's annotations and
/// pod CIDR 10.(k/256).(k%256).0/24, serialised (the timed part parses it).
fn node_json(k: u32) -> Vec<u8> {
    let internal = Ipv4Addr::new(172, 16, (k / 250) as u8, (k % 250 + 1) as u8);
    let mut node = kubelet_like_node(&format!("node-{k}"), internal);
    let cidr = format!("10.{}.{}.0/24", k / 256, k % 256);
    let spec = node.spec.get_or_insert_with(Default::default);
    spec.pod_cidr = Some(cidr.clone());
    spec.pod_cidrs = Some(vec![cidr]);
    let meta = &mut node.metadata;
    meta.resource_version = Some("1".into());
    meta.uid = Some(format!("uid-{k}"));
    let a = meta.annotations.get_or_insert_with(Default::default);
    a.insert(
        ann::VTEP_MAC.into(),
        format!(
            "02:00:00:{:02x}:{:02x}:{:02x}",
            k >> 16,
            (k >> 8) & 0xff,
            k & 0xff
        ),
    );
    a.insert(ann::PUBLIC_IP.into(), internal.to_string());
    a.insert(ann::VNI.into(), "1".into());
    serde_json::to_vec(&node).expect("a Node serialises")
}

fn parse(bytes: &[u8]) -> SlimNode {
    serde_json::from_slice(bytes).expect("a Node parses")
}

/// Waits for the notification of `dst`'s route changing as `change` says.
async fn wait_route(
    kernel: &mut NodeKernel,
    dst: Ipv4Net,
    change: Change,
    t0: Instant,
) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(e) = kernel.next_event(deadline).await {
        if e.dst == dst && e.change == change {
            return Ok(e.at.duration_since(t0).as_secs_f64() * 1000.0);
        }
    }
    bail!("no {change:?} notification for {dst} within 10 s")
}

pub fn change_latency(prefix: &str, dir: &std::path::Path, changes: u32) -> Result<ChangeLatency> {
    let mut nss = Namespaces(Vec::new());
    let ns = nss.add(format!("{prefix}-chg"))?;
    ip(&ns, "link add eth0 type veth peer name eth1")?;
    ip(&ns, "addr add 172.16.255.254/12 dev eth0")?;
    ip(&ns, "link set eth0 up")?;
    ip(&ns, "link set eth1 up")?;
    let cfg = config(&ns, "172.16.255.254", "10.255.255.0/24", dir)?;
    let cluster: Ipv4Net = "10.0.0.0/8".parse()?;
    let mut kernel = NodeKernel::open(&ns, cluster)?;

    let (tx, rx) = mpsc::unbounded::<Event>();
    let (ready_tx, mut ready) = tokio::sync::watch::channel(false);
    let netns = Netns::open(format!("/var/run/netns/{ns}").as_ref())?;
    // The agent's side: a thread in the netns whose runtime's workers inherit it.
    let agent = std::thread::spawn(move || -> Result<()> {
        netns.enter()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            let datapath = Datapath::setup(cfg, handle).await?;
            let (own_tx, _own) = tokio::sync::watch::channel(None);
            let r = Reconciler {
                pod_cidrs: datapath.config().pod_cidrs.clone(),
                datapath,
                node_name: "bench-self".into(),
                metrics: Arc::new(Metrics::default()),
                debounce: Duration::from_millis(100),
                max_window: MAX_WINDOW,
                resync: Duration::from_secs(3600),
                own_node: own_tx,
                ready: ready_tx,
                rejections: None,
            };
            // Ends when the sender is dropped (the watch "ended").
            let _ = r.run(rx).await;
            Ok(())
        })
    });

    let send = |e: watcher::Event<SlimNode>| {
        tx.unbounded_send(Ok(e))
            .map_err(|_| anyhow::anyhow!("the reconcile loop ended"))
    };
    send(watcher::Event::Init)?;
    for k in 1..=NODES {
        send(watcher::Event::InitApply(parse(&node_json(k))))?;
    }
    send(watcher::Event::InitDone)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (adds, dels) = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r))
            .await
            .context("the first sync did not end within 60 s")??;
        let (mut adds, mut dels) = (Vec::new(), Vec::new());
        let added: Vec<u32> = (NODES + 1..=NODES + changes).collect();
        for &k in &added {
            let bytes = node_json(k);
            tokio::time::sleep(GAP).await;
            kernel.drain();
            let t0 = Instant::now();
            send(watcher::Event::Apply(parse(&bytes)))?;
            adds.push(wait_route(&mut kernel, pod_cidr(k), Change::New, t0).await?);
        }
        for &k in &added {
            let bytes = node_json(k);
            tokio::time::sleep(GAP).await;
            kernel.drain();
            let t0 = Instant::now();
            send(watcher::Event::Delete(parse(&bytes)))?;
            dels.push(wait_route(&mut kernel, pod_cidr(k), Change::Del, t0).await?);
        }
        anyhow::Ok((adds, dels))
    })?;
    drop(tx);
    agent
        .join()
        .map_err(|_| anyhow::anyhow!("the agent thread panicked"))??;
    drop(kernel);
    drop(nss);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let out = ChangeLatency {
        add_max_ms: max(&adds),
        del_max_ms: max(&dels),
        add_ms: median(&mut adds.clone()),
        del_ms: median(&mut dels.clone()),
    };
    eprintln!(
        "one Node change at N={NODES}, watch event to route notification (agent only): \
         add p50 {:.2} ms (max {:.2}), delete p50 {:.2} ms (max {:.2}); {changes} each",
        out.add_ms, out.add_max_ms, out.del_ms, out.del_max_ms
    );
    eprintln!("  adds: {adds:.2?}");
    eprintln!("  dels: {dels:.2?}");
    Ok(out)
}

fn pod_cidr(k: u32) -> Ipv4Net {
    format!("10.{}.{}.0/24", k / 256, k % 256)
        .parse()
        .expect("valid")
}
