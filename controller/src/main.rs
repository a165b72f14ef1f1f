//! `weft-controller`: gives every Node a pod subnet (flags and wiring only).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};
use ipnet::IpNet;
use weft_controller::{config::Overrides, leader::LeaseConfig, Options};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "weft-controller",
    version,
    about = "Gives every Node its pod subnet (spec.podCIDR/podCIDRs)"
)]
struct Cli {
    /// Network config (the weft-config ConfigMap's net-conf.json).
    #[arg(long, env = "WEFT_CONFIG", default_value = weft_common::netconf::DEFAULT_PATH)]
    config: PathBuf,
    /// Cluster CIDR overriding the file's clusterCIDRs (repeat for dual-stack:
    /// one IPv4, one IPv6).
    #[arg(
        long = "cluster-cidr",
        env = "WEFT_CLUSTER_CIDRS",
        value_delimiter = ','
    )]
    cluster_cidrs: Vec<IpNet>,
    /// IPv4 node subnet prefix length (file default 24).
    #[arg(long, env = "WEFT_NODE_SUBNET_SIZE_V4")]
    node_subnet_size_v4: Option<u8>,
    /// IPv6 node subnet prefix length (file default 64).
    #[arg(long, env = "WEFT_NODE_SUBNET_SIZE_V6")]
    node_subnet_size_v6: Option<u8>,
    /// Kubeconfig to use instead of the in-cluster config or $KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Address for /healthz, /readyz and /metrics. kubelet's probes and Prometheus reach
    /// it on the node's address (host network), so the default is every address; pods
    /// reach it too: it serves GET only, closes a connection that has not sent its
    /// request within 5 s, and keeps at most 256 open (the oldest idle one makes room).
    #[arg(
        long,
        env = "WEFT_CONTROLLER_HTTP_ADDR",
        default_value = "0.0.0.0:9944"
    )]
    http_addr: SocketAddr,
    /// Take the Lease before allocating (run two replicas); false: always allocate.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "weft-system")]
    lease_namespace: String,
    /// Name of the coordination.k8s.io Lease.
    #[arg(long, default_value = "weft-controller")]
    lease_name: String,
    /// Identity in the Lease (default: POD_NAME or host name, and the pid).
    #[arg(long)]
    identity: Option<String>,
    /// Node patches in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Log format.
    #[arg(long, value_enum, env = "WEFT_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// Logs to stderr; colours only when stderr is a terminal: `kubectl logs` and journald
/// show escapes verbatim.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match weft_common::http_serve::raise_nofile_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let opts = Options {
        config_path: cli.config,
        overrides: Overrides {
            cluster_cidrs: cli.cluster_cidrs,
            node_subnet_size_v4: cli.node_subnet_size_v4,
            node_subnet_size_v6: cli.node_subnet_size_v6,
        },
        kubeconfig: cli.kubeconfig,
        http_addr: cli.http_addr,
        leader_elect: cli.leader_elect,
        lease: LeaseConfig {
            namespace: cli.lease_namespace,
            name: cli.lease_name,
            identity: cli
                .identity
                .unwrap_or_else(weft_controller::default_identity),
        },
        concurrency: cli.concurrency,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(weft_controller::run(opts))?;
    Ok(())
}
