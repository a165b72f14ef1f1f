//! Test hosts as network namespaces: "nodes" joined by an underlay bridge that the host
//! joins too (so they reach a kube-apiserver bound to the host's underlay address), and
//! pods.
//! Scaffolding only, so it drives `ip`; weft itself talks netlink.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

pub fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// `ip netns exec NS PROG ARGS...` as a Command, to run or spawn.
pub fn in_netns(ns: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog);
    c
}

/// A binary of this workspace: `WEFT_BIN_DIR`, else next to the running executable (or
/// one level up, for test binaries in target/*/deps), else target/debug.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("WEFT_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    } else {
        if let Some(exe_dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            dirs.push(exe_dir.clone());
            if let Some(up) = exe_dir.parent() {
                dirs.push(up.to_path_buf());
            }
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        dirs.push(target.join("debug"));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} not found in {dirs:?}: build the workspace first (cargo build --workspace)"
            )
        })
}

pub struct NodeNs {
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// Nodes on an underlay bridge. The bridge lives in its own netns (so the host's
/// iptables, e.g. Docker's FORWARD drop policy with br_netfilter, never sees the frames);
/// the host joins it through a veth holding `host_ip`. Everything is removed on drop.
pub struct Topology {
    pub prefix: String,
    /// The netns holding the underlay bridge `br0`.
    pub underlay: String,
    /// The host's end of its veth into the underlay.
    pub host_link: String,
    pub host_ip: Ipv4Addr,
    pub nodes: Vec<NodeNs>,
    extra_netns: Vec<String>,
}

impl Topology {
    /// `n` nodes with addresses 192.168.`subnet`.1..n/24; the host is .254.
    pub fn new(tag: &str, subnet: u8, n: usize) -> Result<Self> {
        remove_stale(tag);
        let prefix = format!("{tag}{}", std::process::id() % 100_000);
        let mut t = Topology {
            underlay: format!("{prefix}u"),
            host_link: format!("{prefix}h"),
            prefix,
            host_ip: Ipv4Addr::new(192, 168, subnet, 254),
            nodes: Vec::new(),
            extra_netns: Vec::new(),
        };
        let u = t.underlay.clone();
        ip(&["netns", "add", &u])?;
        ip(&["-n", &u, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &u, "link", "set", "br0", "up"])?;
        ip(&[
            "link",
            "add",
            &t.host_link,
            "type",
            "veth",
            "peer",
            "name",
            "host",
            "netns",
            &u,
        ])?;
        ip(&["-n", &u, "link", "set", "host", "master", "br0", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", t.host_ip),
            "dev",
            &t.host_link,
        ])?;
        ip(&["link", "set", &t.host_link, "up"])?;
        for i in 1..=n {
            let netns = format!("{}n{i}", t.prefix);
            let node_ip = Ipv4Addr::new(192, 168, subnet, i as u8);
            ip(&["netns", "add", &netns])?;
            t.nodes.push(NodeNs {
                netns: netns.clone(),
                ip: node_ip,
            });
            let port = format!("n{i}");
            ip(&[
                "-n", &u, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ])?;
            ip(&["-n", &u, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{node_ip}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &netns,
                "route",
                "add",
                "default",
                "via",
                &t.host_ip.to_string(),
            ])?;
        }
        Ok(t)
    }

    /// Another netns (a pod), removed with the topology.
    pub fn add_netns(&mut self, name: &str) -> Result<String> {
        let full = format!("{}{name}", self.prefix);
        ip(&["netns", "add", &full])?;
        ip(&["-n", &full, "link", "set", "lo", "up"])?;
        self.extra_netns.push(full.clone());
        Ok(full)
    }

    pub fn forget_netns(&mut self, name: &str) {
        self.extra_netns.retain(|n| n != name);
    }
}

/// Removes what an earlier run with the same tag left behind when it was killed before
/// its drop ran (its pid is gone): otherwise its addresses would clash with ours.
fn remove_stale(tag: &str) {
    let owner_alive = |name: &str| -> bool {
        let digits: String = name[tag.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        match digits.parse::<u32>() {
            Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true, // not ours: leave it alone
        }
    };
    if let Ok(out) = ip(&["netns", "list"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(tag) && !owner_alive(name) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(out) = ip(&["-br", "link"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let name = name.split('@').next().unwrap_or_default();
            if name.starts_with(tag) && name.ends_with('h') && !owner_alive(name) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self
            .extra_netns
            .iter()
            .chain(self.nodes.iter().map(|n| &n.netns))
        {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.underlay]);
    }
}
