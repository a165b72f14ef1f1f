//! Command line: flags, defaults and the `cleanup` subcommand.
//!
//! Flags shared by the agent and `cleanup` (`--config`, `--subnet-file`, `--log-format`)
//! are global, so they may be given before or after the subcommand.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use regex::Regex;

/// Default address of the HTTP server (`/healthz`, `/readyz`, `/metrics`).
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9943";
/// Default period of the full resync (datapath reprogrammed from the whole Node set).
pub const DEFAULT_RESYNC: &str = "60s";
/// Default minimum time between two syncs (bursts of Node changes within it coalesce).
pub const DEFAULT_DEBOUNCE: &str = "100ms";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "weft-agent",
    version,
    about = "weft node agent: keeps the VXLAN overlay of this node in sync with the cluster's Nodes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Remove the VXLAN device, the bridge, weft's firewall rules and the subnet file.
    Cleanup,
    /// Install the `weft` CNI binary and the conflist on the host (the init container).
    InstallCni(crate::install_cni::InstallCniArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the agent needs to run; [`crate::run::run`] takes it.
#[derive(Parser, Debug, Clone)]
pub struct Opts {
    /// Name of this node's Node object (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// The cluster network config (the weft-config ConfigMap's net-conf.json).
    #[arg(long, global = true, default_value = weft_common::netconf::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Where to write the node subnet file read by the CNI plugin.
    #[arg(long, global = true, default_value = weft_common::subnet_file::DEFAULT_PATH)]
    pub subnet_file: PathBuf,

    /// kubeconfig file; without it: in-cluster config, then $KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Log format; the level filter comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address of the HTTP server for /healthz, /readyz and /metrics. kubelet's probes
    /// and Prometheus reach it on the node's address, so the default is every address;
    /// pods reach it too: it serves GET only, closes a connection that has not sent its
    /// request within 5 s, and keeps at most 256 open (the oldest idle one makes room).
    #[arg(long, default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,

    /// Period of the full resync, e.g. 60s, 5m, 500ms.
    #[arg(long, default_value = DEFAULT_RESYNC, value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// Minimum time between two syncs: the first Node change after a quiet period syncs
    /// at once; changes arriving during a sync or within this window after it are applied
    /// together at its end.
    #[arg(long, default_value = DEFAULT_DEBOUNCE, value_parser = parse_duration)]
    pub debounce: Duration,

    /// Underlay interface by name or by one of its addresses; repeatable, first match wins.
    #[arg(long = "iface", value_name = "NAME")]
    pub ifaces: Vec<String>,

    /// Underlay interface by name regex; repeatable, tried after --iface.
    #[arg(long = "iface-regex", value_name = "REGEX", value_parser = parse_regex)]
    pub iface_regexes: Vec<Regex>,

    /// Underlay address to use and publish (default: the node's InternalIP). With --iface
    /// and an address not on this host (NAT), it is only published.
    #[arg(long, value_name = "ADDR")]
    pub public_ip: Option<IpAddr>,
}

impl Opts {
    /// Options with every default, for a node name; for in-process runs (tests).
    pub fn for_node(node_name: &str) -> Self {
        Opts::parse_from(["weft-agent", "--node-name", node_name])
    }
}

fn parse_regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| format!("invalid regex {s:?}: {e}"))
}

/// Parses `500ms`, `30s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 30s, 5m, 1h)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let o = Opts::for_node("n1");
        assert_eq!(o.node_name.as_deref(), Some("n1"));
        assert_eq!(o.config, PathBuf::from("/etc/weft/net-conf.json"));
        assert_eq!(o.subnet_file, PathBuf::from("/run/weft/subnet.env"));
        assert_eq!(o.metrics_addr.to_string(), "0.0.0.0:9943");
        assert_eq!(o.resync_interval, Duration::from_secs(60));
        assert_eq!(o.debounce, Duration::from_millis(100));
        assert_eq!(o.log_format, LogFormat::Text);
        assert!(o.ifaces.is_empty() && o.iface_regexes.is_empty() && o.public_ip.is_none());
    }

    #[test]
    fn cleanup_takes_global_flags_after_the_subcommand() {
        let cli = Cli::try_parse_from(["weft-agent", "cleanup", "--config", "/x.json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Cleanup)));
        assert_eq!(cli.opts.config, PathBuf::from("/x.json"));
    }

    #[test]
    fn underlay_flags_repeat_and_bad_regex_is_rejected() {
        let cli = Cli::try_parse_from([
            "weft-agent",
            "--iface",
            "eth1",
            "--iface",
            "10.0.0.5",
            "--iface-regex",
            "^en",
            "--public-ip",
            "192.0.2.7",
        ])
        .unwrap();
        assert_eq!(cli.opts.ifaces, ["eth1", "10.0.0.5"]);
        assert_eq!(cli.opts.iface_regexes[0].as_str(), "^en");
        assert!(Cli::try_parse_from(["weft-agent", "--iface-regex", "("]).is_err());
        assert!(Cli::try_parse_from(["weft-agent", "--public-ip", "nope"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }
}
