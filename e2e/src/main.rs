//! `weft-e2e`: bring a local cluster up and down, run the connectivity suite, and run
//! the benchmarks. Every benchmark prints its figures and ends with one JSON line.

use clap::{Parser, Subcommand};

mod bench;
mod demo;

#[derive(Parser)]
#[command(
    name = "weft-e2e",
    version,
    about = "weft end-to-end tooling and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// weft working on this machine without a cluster: netns nodes, a real API server.
    Demo {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Keep everything running until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// The connectivity probe (run inside pods by the tests).
    Probe {
        #[command(subcommand)]
        action: ProbeAction,
    },
    /// Run one benchmark: cni, agent, controller, flannel (weft-agent vs flanneld) or
    /// policy (NetworkPolicy at 5000 pods and 1000 policies).
    Bench {
        #[arg(value_enum)]
        name: bench::Name,
        /// Extra arguments for the benchmark.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Start a local cluster: control plane on the host, nodes as network + mount
    /// namespaces with their own containerd, kubelet and kube-proxy, weft applied
    /// (`kubectl apply -k`, or `helm install` with --helm).
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        /// The weft image (built by scripts/build-image.sh when docker lacks it).
        #[arg(long, default_value = "weft.dev/weft:0.1.0")]
        image: String,
        /// Rebuild the weft image (scripts/build-image.sh) even if docker has it.
        #[arg(long)]
        build_image: bool,
        /// Kustomization directory of weft.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests"))]
        manifests: std::path::PathBuf,
        /// Install weft with `helm install` of --chart (release "weft" in kube-system)
        /// instead of `kubectl apply -k` of --manifests.
        #[arg(long, conflicts_with = "no_weft")]
        helm: bool,
        /// Helm chart of weft, for --helm (helm: scripts/build-helm.sh).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/weft"))]
        chart: std::path::PathBuf,
        /// Stop once the nodes are registered (NotReady), without applying weft.
        #[arg(long)]
        no_weft: bool,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Stop the local cluster and remove everything `up` made.
    Down,
    /// Run Kubernetes' own network e2e specs (v1.34.4, built by
    /// scripts/build-conformance.sh): the [sig-network] Conformance and networking
    /// NodeConformance specs, or the NetworkPolicy specs with --netpol. Prints a table
    /// and totals; fails if any spec fails.
    Conformance {
        /// Default: $KUBECONFIG, else the local cluster's admin kubeconfig.
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// The NetworkPolicy specs ([Feature:NetworkPolicy]) instead.
        #[arg(long)]
        netpol: bool,
        /// A ginkgo focus replacing the default one.
        #[arg(long)]
        focus: Option<String>,
        /// More ginkgo skip expressions, besides the named skip list.
        #[arg(long)]
        skip: Vec<String>,
        /// Parallel ginkgo processes; [Serial] specs still run alone, last.
        #[arg(long, default_value_t = 3)]
        procs: usize,
        /// More arguments for the spec binary, after `--`.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Run the connectivity suite against a cluster running weft; prints a table and
    /// fails if any check fails.
    Test {
        /// Default: $KUBECONFIG, else the local cluster's admin kubeconfig.
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// Run only the checks whose name contains one of these words.
        #[arg(long)]
        only: Vec<String>,
        /// Keep the test namespace afterwards (for inspection).
        #[arg(long)]
        keep: bool,
        /// Skip the checks that disturb the cluster: the agents' rollout restart and the
        /// Node deleted and re-registered (which runs last and may leave that node broken).
        #[arg(long)]
        no_disrupt: bool,
    },
}

#[derive(Subcommand)]
enum ProbeAction {
    /// Serve TCP and UDP on ADDR, answering each client with the address it saw.
    Serve { addr: std::net::SocketAddr },
    /// Connect over TCP to ADDR and print the address the server saw.
    Connect {
        addr: std::net::SocketAddr,
        /// Bytes to send after the greeting (a bulk transfer check).
        #[arg(long, default_value_t = 0, conflicts_with = "duration_secs")]
        send_bytes: u64,
        /// Send a slow, paced stream for this long instead (a long-lived connection
        /// that must survive whatever happens meanwhile).
        #[arg(long)]
        duration_secs: Option<u64>,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Resolve NAME with the system resolver (/etc/resolv.conf) and print its addresses.
    Resolve { name: String },
    /// Send one UDP datagram to ADDR and print the address the server saw.
    Udp {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,kube_client::client::builder=off,kube_client::client::tls=off",
                )
            }),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { name, args } => bench::run(name, &args),
        Command::Probe { action } => probe(action),
        Command::Up {
            nodes,
            image,
            build_image,
            manifests,
            helm,
            chart,
            no_weft,
            timeout_secs,
        } => weft_e2e::cluster::up::run_up(&weft_e2e::cluster::up::Options {
            nodes,
            image,
            build_image,
            weft: (!no_weft).then(|| {
                use weft_e2e::cluster::up::Install;
                if helm {
                    Install::Helm(chart)
                } else {
                    Install::Kustomize(manifests)
                }
            }),
            timeout: std::time::Duration::from_secs(timeout_secs),
        }),
        Command::Down => weft_e2e::cluster::down::run_down(),
        Command::Conformance {
            kubeconfig,
            netpol,
            focus,
            skip,
            procs,
            extra,
        } => weft_e2e::conformance::run_conformance(&weft_e2e::conformance::Options {
            kubeconfig,
            netpol,
            focus,
            skip,
            extra,
            procs,
        }),
        Command::Test {
            kubeconfig,
            only,
            keep,
            no_disrupt,
        } => weft_e2e::suite::run(&weft_e2e::suite::Options {
            kubeconfig,
            only,
            keep,
            no_disrupt,
        }),
        Command::Demo { nodes, keep } => {
            tokio::runtime::Runtime::new()?.block_on(demo::run(nodes, keep))
        }
    }
}

fn probe(action: ProbeAction) -> anyhow::Result<()> {
    use std::time::Duration;
    use weft_e2e::probe;
    match action {
        ProbeAction::Serve { addr } => probe::serve(addr),
        ProbeAction::Connect {
            addr,
            send_bytes,
            duration_secs,
            timeout_secs,
        } => {
            let payload = match duration_secs {
                Some(s) => probe::Payload::Paced(Duration::from_secs(s)),
                None => probe::Payload::Bytes(send_bytes),
            };
            println!(
                "{}",
                probe::connect_with(addr, payload, Duration::from_secs(timeout_secs))?
            );
            Ok(())
        }
        ProbeAction::Resolve { name } => {
            for ip in probe::resolve(&name)? {
                println!("{ip}");
            }
            Ok(())
        }
        ProbeAction::Udp { addr, timeout_secs } => {
            println!("{}", probe::udp(addr, Duration::from_secs(timeout_secs))?);
            Ok(())
        }
    }
}
