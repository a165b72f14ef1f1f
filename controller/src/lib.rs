//! weft-controller as a library, so tests and benchmarks can drive it.
//!
//! The controller gives every Node one pod subnet per configured address family, once,
//! and never the same subnet to two Nodes:
//!
//! * [`allocator`]: the pure allocation table (round-robin, adopt, release, exhaustion).
//! * [`config`]: `net-conf.json` plus flag/env overrides, validated at start.
//! * [`node`]: the small Node projection the watch keeps (name, uid, pod CIDRs).
//! * [`reconcile`]: the watch-and-patch loop; [`patch`]: one Node patch and its outcome.
//! * [`rejected`]: pod CIDRs a Node claims that the table refused, and why.
//! * [`events`], [`leader`], [`http`], [`metrics`]: Events, the Lease, health and metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod allocator;
pub mod config;
pub mod events;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod node;
pub mod patch;
pub mod reconcile;
pub mod rejected;

/// Everything that can stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] weft_common::Error),
    #[error("network config {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("HTTP listener {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How to run the controller (the binary's flags).
#[derive(Clone, Debug)]
pub struct Options {
    pub config_path: PathBuf,
    pub overrides: config::Overrides,
    /// None: in-cluster config or $KUBECONFIG / ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    pub http_addr: SocketAddr,
    pub leader_elect: bool,
    pub lease: leader::LeaseConfig,
    /// Patches in flight at once.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config_path: weft_common::netconf::DEFAULT_PATH.into(),
            overrides: config::Overrides::default(),
            kubeconfig: None,
            http_addr: ([0, 0, 0, 0], 9944).into(),
            leader_elect: true,
            lease: leader::LeaseConfig {
                namespace: "weft-system".into(),
                name: "weft-controller".into(),
                identity: default_identity(),
            },
            concurrency: 64,
        }
    }
}

/// POD_NAME, else the host name, plus the pid (two replicas on one host differ).
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weft-controller".into());
    format!("{base}_{}", std::process::id())
}

/// Builds the Kubernetes client from `opts.kubeconfig` or the usual places.
pub async fn client(opts: &Options) -> Result<kube::Client, Error> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Kubeconfig {
            path: "(inferred)".into(),
            reason: e.to_string(),
        })?,
    };
    kube::Client::try_from(config).map_err(Error::Client)
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(opts: Options) -> Result<(), Error> {
    let conf = config::load(&opts.config_path, &opts.overrides)?;
    let client = client(&opts).await?;
    run_with(opts, conf, client, shutdown_signal()).await
}

/// Runs the controller with a given config and client until `shutdown` completes.
pub async fn run_with(
    opts: Options,
    conf: weft_common::netconf::NetConf,
    client: kube::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let pools = config::pools(&conf);
    let cidrs: Vec<String> = pools
        .iter()
        .map(|(c, l)| format!("{c} (/{l} per node)"))
        .collect();
    tracing::info!(cluster_cidrs = ?cidrs, leader_elect = opts.leader_elect, "starting weft-controller");
    let metrics = Arc::new(metrics::Metrics::default());
    let alloc = allocator::Allocator::from_config(&pools);
    metrics.set_pools(alloc.stats());
    let addr = http::spawn(opts.http_addr, metrics.clone()).await?;
    tracing::info!(%addr, "serving /healthz, /readyz, /metrics");
    let (leader_rx, lease_task) = if opts.leader_elect {
        let (rx, task) = leader::spawn(client.clone(), opts.lease.clone());
        (rx, Some(task))
    } else {
        (leader::always(), None)
    };
    metrics
        .leader
        .store(*leader_rx.borrow(), std::sync::atomic::Ordering::Relaxed);
    let events = events::Events::spawn(
        client.clone(),
        Some(opts.lease.identity.clone()),
        metrics.clone(),
    );
    let reconciler =
        reconcile::Reconciler::new(client, alloc, events, metrics, leader_rx, opts.concurrency);
    reconciler.run(shutdown).await;
    if let Some(task) = lease_task {
        // The receiver is gone with the reconciler: the task releases the lease and ends.
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
