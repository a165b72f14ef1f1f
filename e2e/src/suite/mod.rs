//! `weft-e2e test`: the connectivity suite, run against any cluster whose pod network is
//! weft (the local one of `weft-e2e up`, or kind). It places probe pods (see
//! [`crate::probe`]) in namespace [`NAMESPACE`], one per node plus a second on the first
//! node, a hostNetwork probe and a hostPort probe, runs each check with its own deadline
//! through `kubectl exec`, prints a table and fails if any check failed.
//!
//! The last checks disturb the cluster on purpose (agent rollout restart, a Node deleted
//! and re-registered) and run after the others.

mod checks;
mod disrupt;
mod kubectl;
mod objects;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use kubectl::Kubectl;

/// Everything the suite creates lives here and goes with it.
pub const NAMESPACE: &str = "weft-e2e-test";
/// TCP/UDP port of the probe pods.
pub const PROBE_PORT: u16 = 7000;
/// Port of the hostNetwork probe (in the node's network namespace).
pub const HOST_PROBE_PORT: u16 = 7001;
/// Host port of the hostPort probe (portmap).
pub const HOST_PORT: u16 = 30700;

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub kubeconfig: Option<PathBuf>,
    /// Run only checks whose name contains one of these (all when empty).
    pub only: Vec<String>,
    /// Leave the namespace in place afterwards.
    pub keep: bool,
    /// Skip the checks that disturb the cluster (agent rollout, Node re-registration).
    pub no_disrupt: bool,
}

/// A schedulable node as the suite sees it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// A running probe pod.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
}

/// What every check gets.
pub struct Ctx {
    pub client: kube::Client,
    pub kubectl: Kubectl,
    pub nodes: Vec<NodeInfo>,
    /// Probe pods by name (`probe-1`.. one per node, `probe-1b`, `probe-host`, ...).
    pub pods: BTreeMap<String, PodInfo>,
    /// Services `svc-<i>` (each selecting `probe-<i>`): name -> ClusterIP.
    pub services: BTreeMap<String, Ipv4Addr>,
}

impl Ctx {
    pub fn pod(&self, name: &str) -> Result<&PodInfo> {
        self.pods
            .get(name)
            .with_context(|| format!("probe pod {name} is not running"))
    }
    /// `probe-<i>`, 1-based node index.
    pub fn probe(&self, i: usize) -> Result<&PodInfo> {
        self.pod(&format!("probe-{i}"))
    }
}

/// Outcome of one check: a short note for the table's detail lines.
pub type CheckResult = Result<String>;
type CheckFn = for<'a> fn(&'a mut Ctx) -> Pin<Box<dyn Future<Output = CheckResult> + 'a>>;

/// A named check with its deadline.
pub struct Check {
    pub name: &'static str,
    pub timeout: Duration,
    pub run: CheckFn,
}

struct Row {
    name: String,
    ok: bool,
    secs: f64,
    detail: String,
}

/// The kubeconfig to use: the option, else $KUBECONFIG, else the local cluster's.
pub fn kubeconfig_path(opt: Option<&PathBuf>) -> PathBuf {
    if let Some(p) = opt {
        return p.clone();
    }
    match std::env::var_os("KUBECONFIG") {
        Some(k) if !k.is_empty() => PathBuf::from(k),
        _ => crate::cluster::Layout::new(crate::cluster::state_dir()).admin_kubeconfig(),
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let kubeconfig = kubeconfig_path(opts.kubeconfig.as_ref());
    let client = crate::harness::client_from(&kubeconfig).await?;
    let kubectl = Kubectl::new(&kubeconfig)?;
    let nodes = objects::schedulable_nodes(&client).await?;
    if nodes.len() < 2 {
        bail!(
            "the suite needs at least 2 schedulable nodes, found {}",
            nodes.len()
        );
    }
    println!(
        "weft-e2e test: {} nodes ({}), kubeconfig {}",
        nodes.len(),
        nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        kubeconfig.display()
    );
    let mut ctx = Ctx {
        client,
        kubectl,
        nodes,
        pods: BTreeMap::new(),
        services: BTreeMap::new(),
    };

    let mut rows = Vec::new();
    let t = Instant::now();
    let setup = tokio::time::timeout(Duration::from_secs(180), objects::setup(&mut ctx)).await;
    let setup = match setup {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("timed out after 180 s")),
    };
    let setup_ok = setup.is_ok();
    rows.push(Row {
        name: "setup: namespace, probe pods, services".into(),
        ok: setup_ok,
        secs: t.elapsed().as_secs_f64(),
        detail: setup.unwrap_or_else(|e| format!("{e:#}")),
    });
    if setup_ok {
        let disruptive = if opts.no_disrupt {
            Vec::new()
        } else {
            disrupt::all()
        };
        for check in checks::all().into_iter().chain(disruptive) {
            if !opts.only.is_empty() && !opts.only.iter().any(|o| check.name.contains(o.as_str())) {
                continue;
            }
            eprintln!("[weft-e2e test] {} ...", check.name);
            let t = Instant::now();
            let r = match tokio::time::timeout(check.timeout, (check.run)(&mut ctx)).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("timed out after {:?}", check.timeout)),
            };
            let row = Row {
                name: check.name.into(),
                ok: r.is_ok(),
                secs: t.elapsed().as_secs_f64(),
                detail: r.unwrap_or_else(|e| format!("{e:#}")),
            };
            eprintln!(
                "[weft-e2e test] {} {} ({:.1} s)",
                check.name,
                if row.ok { "PASS" } else { "FAIL" },
                row.secs
            );
            rows.push(row);
        }
    }
    if !opts.keep {
        if let Err(e) = objects::delete_namespace(&ctx.client).await {
            eprintln!("[weft-e2e test] deleting namespace {NAMESPACE}: {e:#}");
        }
    }
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.ok).count();
    println!(
        "{} checks, {} failed, {:.1} s",
        rows.len(),
        failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} of {} checks failed", rows.len());
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    println!();
    println!("{:<w$}  {:<6}  {:>7}", "CHECK", "RESULT", "TIME");
    for r in rows {
        println!(
            "{:<w$}  {:<6}  {:>6.1}s",
            r.name,
            if r.ok { "PASS" } else { "FAIL" },
            r.secs
        );
    }
    println!();
    for r in rows.iter().filter(|r| !r.detail.is_empty()) {
        let tag = if r.ok { "note" } else { "FAILED" };
        println!("{tag}: {}: {}", r.name, r.detail.replace('\n', "\n    "));
    }
}

/// Retries `f` until it succeeds or `within` has passed; the last error otherwise.
/// For conditions that become true shortly (a fresh pod's ARP, a Service's rules).
pub async fn retry<T, F, Fut>(within: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
