//! `weft-e2e bench controller [--kubeconfig PATH] [--nodes N] [--leader-elect]`
//!
//! Against a real kube-apiserver (the harness starts one unless `--kubeconfig` points at
//! an existing one): creates N kubelet-like Nodes without pod CIDRs, starts the release
//! weft-controller binary, and measures
//! * allocate_N_s: start to every Node patched (the controller's allocations counter),
//! * startup_N_s: a restart with N allocated Nodes, start to /readyz answering 200,
//! * rss_mb_N: the controller's VmRSS (the larger of after allocation and after restart),
//! * duplicates: pod CIDRs held by more than one Node (plus Nodes left without one).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use weft_e2e::harness::{self, ControlPlane};

const CLUSTER_CIDR: &str = "10.128.0.0/9";
const LEASE_NAMESPACE: &str = "weft-system";

struct Args {
    kubeconfig: Option<PathBuf>,
    nodes: usize,
    leader_elect: bool,
    controller_bin: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut out = Args {
        kubeconfig: None,
        nodes: 5000,
        leader_elect: false,
        controller_bin: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--kubeconfig" => out.kubeconfig = Some(value()?.into()),
            "--nodes" => out.nodes = value()?.parse().context("--nodes")?,
            "--controller-bin" => out.controller_bin = Some(value()?.into()),
            "--leader-elect" => out.leader_elect = true,
            other => bail!("unknown argument {other:?} (--kubeconfig PATH, --nodes N, --leader-elect, --controller-bin PATH)"),
        }
    }
    Ok(out)
}

pub fn run(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    let bin = match &args.controller_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory of the running binary")?
            .join("weft-controller"),
    };
    if !bin.is_file() {
        bail!(
            "{} is missing: cargo build --release -p weft-controller",
            bin.display()
        );
    }
    let (_cp, kubeconfig) = match &args.kubeconfig {
        Some(k) => (None, k.clone()),
        None => {
            let cp = ControlPlane::start().await?;
            let k = cp.kubeconfig.clone();
            (Some(cp), k)
        }
    };
    let client = harness::client_from(&kubeconfig).await?;
    let n = args.nodes;
    let nodes: Api<Node> = Api::all(client.clone());
    if args.leader_elect {
        ensure_namespace(&client, LEASE_NAMESPACE).await?;
    }

    let t = Instant::now();
    create_nodes(&nodes, n).await?;
    println!("created {n} nodes in {:.1} s", t.elapsed().as_secs_f64());

    let workdir = tempfile::Builder::new()
        .prefix("weft-bench-ctrl-")
        .tempdir()?;
    let port = harness::free_port(Ipv4Addr::LOCALHOST.into())?;
    let http: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();

    // Run 1: allocate everything.
    let started = Instant::now();
    let mut ctrl = Controller::spawn(
        &bin,
        &kubeconfig,
        http,
        args.leader_elect,
        &workdir.path().join("run1.log"),
    )?;
    let deadline = Duration::from_secs(300);
    loop {
        ctrl.check_alive()?;
        if metric(http, "weft_controller_allocations_total").unwrap_or(0.0) >= n as f64 {
            break;
        }
        if started.elapsed() > deadline {
            bail!(
                "not all {n} nodes allocated after {deadline:?}; log {}",
                ctrl.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let allocate_s = started.elapsed().as_secs_f64();
    println!("allocated {n} pod CIDRs in {allocate_s:.2} s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = ctrl.rss_mb()?;
    println!(
        "controller RSS after allocation: {rss1:.1} MB (peak {:.1} MB)",
        ctrl.hwm_mb()?
    );
    ctrl.stop()?;

    // Run 2: restart with everything allocated; time to ready.
    let started = Instant::now();
    let mut ctrl = Controller::spawn(
        &bin,
        &kubeconfig,
        http,
        args.leader_elect,
        &workdir.path().join("run2.log"),
    )?;
    loop {
        ctrl.check_alive()?;
        if http_get(http, "/readyz")
            .map(|(code, _)| code == 200)
            .unwrap_or(false)
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "controller not ready 60 s after restart; log {}",
                ctrl.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let startup_s = started.elapsed().as_secs_f64();
    println!("restart with {n} allocated nodes: ready in {startup_s:.2} s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss2 = ctrl.rss_mb()?;
    let reallocated = metric(http, "weft_controller_allocations_total").unwrap_or(0.0);
    println!(
        "controller RSS after restart: {rss2:.1} MB; allocations after restart: {reallocated}"
    );
    ctrl.stop()?;

    let (duplicates, missing) = count_duplicates(&nodes).await?;
    println!("duplicate pod CIDRs: {duplicates}; nodes without a pod CIDR: {missing}");
    if args.kubeconfig.is_some() {
        cleanup(&nodes, n).await;
    }
    let rss = rss1.max(rss2);
    println!(
        "{}",
        serde_json::json!({
            "allocate_5000_s": round2(allocate_s),
            "startup_5000_s": round2(startup_s),
            "rss_mb_5000": round2(rss),
            "duplicates": duplicates + missing,
            "nodes": n,
        })
    );
    Ok(())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn node_name(i: usize) -> String {
    format!("bench-node-{i:05}")
}

async fn create_nodes(api: &Api<Node>, n: usize) -> Result<()> {
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let node = weft_e2e::fixtures::kubelet_like_node(&node_name(i), weft_e2e::fixtures::node_ip(i as u32));
                match api.create(&PostParams::default(), &node).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => bail!(
                        "node {} already exists: run the bench against an API server without bench nodes",
                        node_name(i)
                    ),
                    Err(e) => Err(e).with_context(|| format!("create node {}", node_name(i))),
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns).await?;
    }
    Ok(())
}

/// (pod CIDRs held by more than one node, bench nodes without a pod CIDR).
async fn count_duplicates(api: &Api<Node>) -> Result<(usize, usize)> {
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut missing = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for node in &page.items {
            let cidrs = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidrs.clone())
                .unwrap_or_default();
            if cidrs.is_empty() {
                missing += 1;
            }
            for c in cidrs {
                *owners.entry(c).or_default() += 1;
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok((
        owners.values().filter(|&&k| k > 1).map(|k| k - 1).sum(),
        missing,
    ))
}

async fn cleanup(api: &Api<Node>, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let _ = api.delete(&node_name(i), &DeleteParams::default()).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn spawn(
        bin: &Path,
        kubeconfig: &Path,
        http: SocketAddr,
        leader_elect: bool,
        log: &Path,
    ) -> Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("--config=/nonexistent/net-conf.json")
            .arg(format!("--cluster-cidr={CLUSTER_CIDR}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--http-addr={http}"))
            .arg(format!("--leader-elect={leader_elect}"))
            .arg(format!("--lease-namespace={LEASE_NAMESPACE}"))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Controller {
            child,
            log: log.to_owned(),
        })
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "weft-controller exited ({status}); log {}",
                self.log.display()
            );
        }
        Ok(())
    }

    fn status_kb(&self, key: &str) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/<pid>/status"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()?;
        Ok(kb)
    }

    fn rss_mb(&self) -> Result<f64> {
        Ok(self.status_kb("VmRSS:")? / 1024.0)
    }

    fn hwm_mb(&self) -> Result<f64> {
        Ok(self.status_kb("VmHWM:")? / 1024.0)
    }

    /// SIGTERM, then wait (SIGKILL after 10 s).
    fn stop(&mut self) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET: (status code, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .context("no HTTP status line")?
        .parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of an unlabelled metric on the controller's /metrics.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics").ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
