//! `weft-e2e bench flannel`: weft-agent and flanneld side by side.
//!
//! One real kube-apiserver (the harness, bound to the host's underlay address) holds N
//! kubelet-like Nodes (~20 KB each) with pod CIDRs and both annotation sets, weft's and
//! flannel's vxlan backend's, as the agents on those nodes would have published them.
//! Two netns nodes on one underlay: weft-agent (the release binary next to this one) runs
//! on the first as Node `bench-weft`, flanneld (built by scripts/build-flannel.sh) on the
//! second as `bench-flannel`, one agent at a time, alternating (the first agent of each
//! run alternates too). Per agent and run:
//! * cold start: from an empty node (VXLAN device, bridges, nftables removed) to N routes,
//!   N permanent neighbours and N FDB entries on its VXLAN device; the CPU time (user +
//!   system, all threads) it took; RSS 1 s after convergence;
//! * one Node added (route present) and one deleted (route gone), `--changes` times each,
//!   quiet between them; the run's p50. Timed from just before the API request to the
//!   kernel's route notification;
//! * a hand-deleted route (netlink, as `ip route del`): from sending the deletion to the
//!   notification of the route's return (flanneld never restores it: the time waited,
//!   `_timed_out`);
//! * a burst: every Node's VTEP MAC changed (both annotation sets; 32 API writes in
//!   flight, as fast as the API server takes them), to every new neighbour and FDB entry
//!   in the kernel; how long the writes took; for weft, the syncs it did
//!   (`weft_agent_reconcile_total` before and after, from its /metrics);
//! * stale entries: the agent stopped (SIGTERM), `--stale` Nodes deleted, the agent
//!   started again; to none of their routes, neighbours or FDB entries left.
//!
//! The kernel is read through netlink only (kernel.rs): dumps for counts, route
//! notifications for single changes. Prints a Markdown table (median and range per
//! figure) and ends with one JSON line: the medians at the largest N as `<key>_weft` /
//! `<key>_flannel` (`cold_start_ms`, `cpu_ms`, `rss_mb`, `add_p50_ms`, `del_p50_ms`,
//! `repair_ms`, `stale_ms`, `burst_ms`, `burst_api_ms`, and `<key>_timed_out` for the
//! times), `burst_syncs_weft`, and every figure at every N under `by_n` (median, min, max).
//!
//! Options: `--nodes 1000,5000`, `--runs 3`, `--quick` (200 nodes, 1 run, unless given),
//! `--changes 5`, `--stale 10`, `--gap-ms 500` (quiet time before each single change),
//! `--change-timeout-secs 10`, `--repair-timeout-secs 10`, `--stale-timeout-secs 20`,
//! `--cold-timeout-secs 300`, `--only weft|flannel`, `--flannel-bin PATH`, `--keep-logs`
//! (keep the agents' logs; they are kept anyway when the benchmark fails).

mod agents;
mod cluster;
pub(super) mod kernel;
mod report;
pub(super) mod stats;
mod steps;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use weft_e2e::harness::{self, ControlPlane, Options};
use weft_e2e::topo::{self, Topology};

use self::agents::{Agent, Kind};
use self::cluster::{pod_cidr, Cluster};
use self::kernel::{Change, NodeKernel};
use self::report::{Figures, Results};
use self::stats::Sample;
use self::steps::{burst, repair, stale, wait_route};
use crate::bench::agent::RSS_CLUSTER_CIDR;

struct Args {
    nodes: Vec<usize>,
    runs: usize,
    changes: usize,
    stale: usize,
    gap: Duration,
    change_timeout: Duration,
    repair_timeout: Duration,
    stale_timeout: Duration,
    cold_timeout: Duration,
    agents: Vec<Kind>,
    flannel_bin: Option<PathBuf>,
    keep_logs: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args {
        nodes: vec![1000, 5000],
        runs: 3,
        changes: 5,
        stale: 10,
        gap: Duration::from_millis(500),
        change_timeout: Duration::from_secs(10),
        repair_timeout: Duration::from_secs(10),
        stale_timeout: Duration::from_secs(20),
        cold_timeout: Duration::from_secs(300),
        agents: Kind::ALL.to_vec(),
        flannel_bin: None,
        keep_logs: false,
    };
    let (mut nodes, mut runs, mut quick) = (None, None, false);
    let secs = |v: &str| -> Result<Duration> { Ok(Duration::from_secs(v.parse()?)) };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--nodes" => {
                nodes = Some(
                    value()?
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<Result<Vec<_>, _>>()
                        .context("--nodes N[,N...]")?,
                )
            }
            "--runs" => runs = Some(value()?.parse().context("--runs")?),
            "--quick" => quick = true,
            "--changes" => out.changes = value()?.parse().context("--changes")?,
            "--stale" => out.stale = value()?.parse().context("--stale")?,
            "--gap-ms" => out.gap = Duration::from_millis(value()?.parse()?),
            "--change-timeout-secs" => out.change_timeout = secs(value()?)?,
            "--repair-timeout-secs" => out.repair_timeout = secs(value()?)?,
            "--stale-timeout-secs" => out.stale_timeout = secs(value()?)?,
            "--cold-timeout-secs" => out.cold_timeout = secs(value()?)?,
            "--only" => {
                out.agents = match value()?.as_str() {
                    "weft" => vec![Kind::Weft],
                    "flannel" => vec![Kind::Flannel],
                    other => bail!("--only weft|flannel, not {other:?}"),
                }
            }
            "--flannel-bin" => out.flannel_bin = Some(value()?.into()),
            "--keep-logs" => out.keep_logs = true,
            other => bail!(
                "unknown option {other:?} (see the doc of e2e/src/bench/flannel.rs: --nodes, \
                 --runs, --quick, --changes, --stale, --gap-ms, --*-timeout-secs, --only, \
                 --flannel-bin, --keep-logs)"
            ),
        }
    }
    out.nodes = nodes.unwrap_or(if quick { vec![200] } else { out.nodes });
    out.nodes.sort_unstable();
    out.nodes.dedup();
    out.runs = runs.unwrap_or(if quick { 1 } else { out.runs });
    if out.nodes.is_empty() || out.nodes[0] == 0 || out.runs == 0 {
        bail!("--nodes and --runs must be positive");
    }
    if out.stale >= out.nodes[0] {
        bail!("--stale must be below the smallest --nodes");
    }
    Ok(out)
}

pub fn run(args: &[String]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench flannel needs root (network namespaces)");
    }
    let args = parse(args)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(args))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One agent's node: its set-up and its kernel.
struct Side {
    agent: Agent,
    kernel: NodeKernel,
}

async fn bench(args: Args) -> Result<()> {
    let flannel_bin = args
        .flannel_bin
        .clone()
        .unwrap_or_else(|| harness::cache_dir().join("bin/flanneld"));
    if args.agents.contains(&Kind::Flannel) && !flannel_bin.is_file() {
        bail!(
            "{} is missing: run scripts/build-flannel.sh",
            flannel_bin.display()
        );
    }
    let weft_bin = topo::workspace_bin("weft-agent")?;
    eprintln!(
        "weft-agent: {}; flanneld: {}",
        weft_bin.display(),
        flannel_bin.display()
    );
    let cluster_cidr: Ipv4Net = RSS_CLUSTER_CIDR.parse()?;

    // Declared first, dropped last: the netns nodes outlive everything that uses them.
    let topo = Topology::new("we", 84, Kind::ALL.len())?;
    let cp = ControlPlane::start_with(Options {
        bind: IpAddr::V4(topo.host_ip),
        ..Default::default()
    })
    .await?;
    let api: Api<Node> = Api::all(harness::client_from(&cp.kubeconfig).await?);
    let dir = tempfile::Builder::new()
        .prefix("weft-bench-flannel-")
        .tempdir()?;
    let mut sides = Vec::new();
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        let node = &topo.nodes[i];
        api.create(&PostParams::default(), &cluster::own_node(kind, node.ip))
            .await
            .with_context(|| format!("create Node {}", kind.node_name()))?;
        if !args.agents.contains(&kind) {
            continue;
        }
        let bin = match kind {
            Kind::Weft => weft_bin.clone(),
            Kind::Flannel => flannel_bin.clone(),
        };
        sides.push(Side {
            agent: Agent::new(kind, &node.netns, node.ip, bin, &cp.kubeconfig, dir.path())?,
            kernel: NodeKernel::open(&node.netns, cluster_cidr)?,
        });
    }
    let mut cluster = Cluster { api, gen: 0 };
    let outcome = all_runs(&args, &mut sides, &mut cluster).await;
    drop(sides);
    if outcome.is_err() || args.keep_logs {
        eprintln!("agent logs kept in {}", dir.keep().display());
    }
    let results = outcome?;
    let table = report::table(&results, &args.nodes);
    println!("\n{table}");
    println!("{}", report::json(&results, &args.nodes, args.runs));
    Ok(())
}

/// Every N, every run, the agents alternating.
async fn all_runs(args: &Args, sides: &mut [Side], cluster: &mut Cluster) -> Result<Results> {
    let mut results = Results::new();
    let mut have = 0usize;
    for &n in &args.nodes {
        let t = Instant::now();
        cluster.create(have as u32 + 1..=n as u32).await?;
        eprintln!(
            "{n} remote Nodes ({} created in {:.1} s)",
            n - have,
            t.elapsed().as_secs_f64()
        );
        have = n;
        for run in 0..args.runs {
            for i in 0..sides.len() {
                // Alternate which agent goes first.
                let j = (i + run) % sides.len();
                let side = &mut sides[j];
                let f = measure(args, side, cluster, n as u32)
                    .await
                    .with_context(|| {
                        format!("{} at N = {n}, run {}", side.agent.kind.program(), run + 1)
                    })?;
                append(results.entry((n, side.agent.kind)).or_default(), f);
            }
        }
    }
    Ok(results)
}

fn append(all: &mut Figures, one: Figures) {
    all.cold.extend(one.cold);
    all.cpu.extend(one.cpu);
    all.rss.extend(one.rss);
    all.add.extend(one.add);
    all.del.extend(one.del);
    all.repair.extend(one.repair);
    all.stale.extend(one.stale);
    all.burst.extend(one.burst);
    all.burst_api.extend(one.burst_api);
    all.burst_syncs.extend(one.burst_syncs);
}

/// One run of one agent at N remote Nodes; the cluster is back to N Nodes afterwards.
async fn measure(args: &Args, side: &mut Side, cluster: &mut Cluster, n: u32) -> Result<Figures> {
    let device = side.agent.kind.device();
    let name = side.agent.kind.program();
    let mut f = Figures::default();

    // Cold start.
    side.agent.reset_node()?;
    let mut agent = side.agent.start("cold")?;
    let deadline = agent.started + args.cold_timeout;
    let (mut polls, mut polling) = (0u32, Duration::ZERO);
    loop {
        agent.check_alive()?;
        let t = Instant::now();
        let e = side.kernel.snapshot(device).await?;
        polls += 1;
        polling += t.elapsed();
        // Done when the dump that saw every entry ends (at most one dump late).
        if e.complete(n as usize) {
            f.cold.push(Sample::ok(ms(agent.started.elapsed())));
            f.cpu.push(Sample::ok(agent.cpu_ms()?));
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not program {n} nodes within {:?} (routes {}, neighbours {}, FDB {}); log {}",
                args.cold_timeout,
                e.routes.len(),
                e.neighs.len(),
                e.fdb.len(),
                agent.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "{name} N={n}: cold start polled the kernel {polls} times, {:.1} ms per dump of its entries",
        ms(polling) / f64::from(polls)
    );
    // A settled figure, not the peak of the initial list.
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.check_alive()?;
    f.rss.push(Sample::ok(agent.rss_mb()?));

    // Single changes.
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    let added: Vec<u32> = (n + 1..=n + args.changes as u32).collect();
    for &k in &added {
        tokio::time::sleep(args.gap).await;
        side.kernel.drain();
        let t0 = Instant::now();
        cluster.create(std::iter::once(k)).await?;
        adds.push(wait_route(side, pod_cidr(k), Change::New, t0, args.change_timeout).await?);
    }
    for &k in &added {
        tokio::time::sleep(args.gap).await;
        side.kernel.drain();
        let t0 = Instant::now();
        cluster.delete(std::iter::once(k)).await?;
        dels.push(wait_route(side, pod_cidr(k), Change::Del, t0, args.change_timeout).await?);
    }
    f.add.extend(Sample::p50(&adds));
    f.del.extend(Sample::p50(&dels));

    // A route deleted by hand.
    tokio::time::sleep(args.gap).await;
    f.repair
        .push(repair(side, pod_cidr(1), args.repair_timeout).await?);
    agent.check_alive()?;

    // A burst: every Node's VTEP MAC changes.
    tokio::time::sleep(args.gap).await;
    let (burst, api, syncs) = burst(side, &agent, cluster, n).await?;
    f.burst.push(burst);
    f.burst_api.push(api);
    f.burst_syncs.extend(syncs);

    // Nodes deleted while the agent is down.
    agent.stop()?;
    let gone: Vec<u32> = (n - args.stale as u32 + 1..=n).collect();
    cluster.delete(gone.iter().copied()).await?;
    let agent = side.agent.start("restart")?;
    f.stale
        .push(stale(side, agent, &gone, n, args.stale_timeout).await?);
    cluster.create(gone.into_iter()).await?;

    let show = |v: &[Sample]| {
        v.first()
            .map(|s| format!("{:.0}{}", s.ms, if s.timed_out { "+" } else { "" }))
            .unwrap_or_else(|| "-".into())
    };
    eprintln!(
        "{name} N={n}: cold {} ms, cpu {} ms, rss {:.1} MiB, add p50 {} ms, del p50 {} ms, \
         repair {} ms, burst {} ms ({} syncs), stale {} ms (+ = timed out)",
        show(&f.cold),
        show(&f.cpu),
        f.rss[0].ms,
        show(&f.add),
        show(&f.del),
        show(&f.repair),
        show(&f.burst),
        show(&f.burst_syncs),
        show(&f.stale),
    );
    Ok(f)
}
