//! The two agents under test, each on its own netns node: how each is configured,
//! started, stopped and measured (CPU and memory from /proc), and how its node is reset
//! to an empty datapath before a cold start.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::stats::cpu_ticks;
use crate::bench::agent::{vm_status, KillOnDrop, RSS_CLUSTER_CIDR};
use weft_e2e::topo;

/// Port of weft-agent's /metrics, on its node's address.
const WEFT_METRICS_PORT: u16 = 9943;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Weft,
    Flannel,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Weft, Kind::Flannel];

    /// The suffix of its JSON keys.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Weft => "weft",
            Kind::Flannel => "flannel",
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            Kind::Weft => "weft-agent",
            Kind::Flannel => "flanneld",
        }
    }

    /// Its VXLAN device.
    pub fn device(self) -> &'static str {
        match self {
            Kind::Weft => "weft.1",
            Kind::Flannel => "flannel.1",
        }
    }

    /// Its own Node object.
    pub fn node_name(self) -> &'static str {
        match self {
            Kind::Weft => "bench-weft",
            Kind::Flannel => "bench-flannel",
        }
    }
}

/// One agent's set-up on its node.
pub struct Agent {
    pub kind: Kind,
    pub netns: String,
    bin: PathBuf,
    kubeconfig: PathBuf,
    dir: PathBuf,
    /// weft-agent's /metrics (on the node's address, reachable from the host).
    pub metrics: Option<SocketAddr>,
    starts: usize,
}

impl Agent {
    /// Writes the agent's network config into `dir`.
    pub fn new(
        kind: Kind,
        netns: &str,
        node_ip: Ipv4Addr,
        bin: PathBuf,
        kubeconfig: &Path,
        dir: &Path,
    ) -> Result<Self> {
        let dir = dir.join(kind.key());
        std::fs::create_dir_all(&dir)?;
        let conf = match kind {
            // The same cluster CIDR for both; flannel on nftables, as weft.
            Kind::Weft => serde_json::json!({
                "clusterCIDRs": [RSS_CLUSTER_CIDR],
                "nodeSubnetSizeV4": 24,
            }),
            Kind::Flannel => serde_json::json!({
                "Network": RSS_CLUSTER_CIDR,
                "EnableNFTables": true,
                "Backend": {"Type": "vxlan"},
            }),
        };
        std::fs::write(dir.join("net-conf.json"), conf.to_string())?;
        Ok(Agent {
            kind,
            netns: netns.to_owned(),
            bin,
            kubeconfig: kubeconfig.to_owned(),
            metrics: (kind == Kind::Weft).then(|| (node_ip, WEFT_METRICS_PORT).into()),
            dir,
            starts: 0,
        })
    }

    /// Removes what either agent left on the node (VXLAN devices, bridges, nftables,
    /// subnet file), so the next start begins from an empty datapath.
    pub fn reset_node(&self) -> Result<()> {
        for dev in ["weft.1", "weft0", "flannel.1", "cni0"] {
            // Absent devices are fine.
            let _ = topo::run(std::process::Command::new("ip").args([
                "-n",
                &self.netns,
                "link",
                "del",
                dev,
            ]));
        }
        topo::run(topo::in_netns(&self.netns, "nft").args(["flush", "ruleset"]))?;
        let _ = std::fs::remove_file(self.dir.join("subnet.env"));
        Ok(())
    }

    /// Starts the agent in its node's netns; its output goes to `<dir>/<n>-<what>.log`.
    pub fn start(&mut self, what: &str) -> Result<Running> {
        self.starts += 1;
        let log = self.dir.join(format!("{:02}-{what}.log", self.starts));
        let out = std::fs::File::create(&log)?;
        let mut cmd = topo::in_netns(&self.netns, &self.bin);
        let conf = self.dir.join("net-conf.json");
        let subnet_file = self.dir.join("subnet.env");
        match self.kind {
            Kind::Weft => {
                cmd.arg(format!("--node-name={}", self.kind.node_name()))
                    .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                    .arg(format!("--config={}", conf.display()))
                    .arg(format!("--subnet-file={}", subnet_file.display()))
                    .arg("--iface=eth0")
                    .arg(format!(
                        "--metrics-addr={}",
                        self.metrics.expect("weft has a metrics address")
                    ))
                    .env("RUST_LOG", "info");
            }
            Kind::Flannel => {
                cmd.arg("--kube-subnet-mgr")
                    .arg(format!("--kubeconfig-file={}", self.kubeconfig.display()))
                    .arg(format!("--net-config-path={}", conf.display()))
                    .arg(format!("--subnet-file={}", subnet_file.display()))
                    .arg("--iface=eth0")
                    .arg("--ip-masq")
                    .env("NODE_NAME", self.kind.node_name());
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec. The
        // setting survives `ip netns exec`'s exec of the agent: if the benchmark dies, so
        // does the agent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        Ok(Running {
            // `ip netns exec` execs the agent: the child's pid is the agent's.
            pid: child.id(),
            child: KillOnDrop(child),
            started,
            log,
            program: self.kind.program(),
        })
    }
}

/// A running agent; killed when dropped.
pub struct Running {
    child: KillOnDrop,
    pub pid: u32,
    pub started: Instant,
    pub log: PathBuf,
    program: &'static str,
}

impl Running {
    /// An error with the log's tail when the agent has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.0.try_wait()? {
            bail!(
                "{} exited with {status}; last log lines:\n{}",
                self.program,
                log_tail(&self.log, 15)
            );
        }
        Ok(())
    }

    /// CPU time (user + system, all threads) so far.
    pub fn cpu_ms(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let ticks = cpu_ticks(&stat).context("malformed /proc/PID/stat")?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if hz <= 0 {
            bail!("sysconf(_SC_CLK_TCK) failed");
        }
        Ok(ticks as f64 * 1000.0 / hz as f64)
    }

    /// Resident memory now (MiB).
    pub fn rss_mb(&self) -> Result<f64> {
        vm_status(self.pid, "VmRSS:")
    }

    /// SIGTERM, then SIGKILL after 10 s. Both agents leave their datapath in place.
    pub fn stop(mut self) -> Result<()> {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!("{} ignored SIGTERM for 10 s; killing it", self.program);
                break; // KillOnDrop
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}
