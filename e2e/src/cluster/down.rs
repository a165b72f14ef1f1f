//! `weft-e2e down`: stops everything `up` started and removes what it made, from the
//! state directory and the namespace names alone; safe to run twice or after a failed
//! `up`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{controlplane, node, process, Layout, NodeSpec, BRIDGE, NS_DIR, PREFIX};
use crate::topo::ip;

pub fn run_down() -> Result<()> {
    let started = Instant::now();
    let layout = Layout::new(super::state_dir());
    let nodes = discover_nodes(&layout);
    for n in &nodes {
        process::stop(
            &layout,
            &format!("kube-proxy-{}", n.name),
            Duration::from_secs(5),
        );
        process::stop(
            &layout,
            &format!("kubelet-{}", n.name),
            Duration::from_secs(5),
        );
    }
    tracing::info!(
        secs = started.elapsed().as_secs_f64(),
        "kubelets and kube-proxies stopped"
    );
    for n in &nodes {
        kill_node_processes(n);
        tracing::info!(node = %n.name, secs = started.elapsed().as_secs_f64(), "node processes killed");
        process::stop(
            &layout,
            &format!("containerd-{}", n.name),
            Duration::from_secs(1),
        );
        let ns = n.mntns_path();
        if ns.exists() {
            let _ = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&ns);
        }
        if let Some(netns) = n.netns_path() {
            if netns.exists() {
                let _ = ip(&["netns", "del", &n.name]);
            }
            // Gone with its netns unless something still pins that netns; then the pair
            // goes now.
            let _ = ip(&["link", "del", &n.veth()]);
        } else {
            clean_host_network(&layout, n);
        }
        remove_cgroups(n);
        tracing::info!(node = %n.name, secs = started.elapsed().as_secs_f64(), "node removed");
    }
    // Their state is deleted next: no need to wait for a graceful shutdown.
    std::thread::scope(|s| {
        for d in controlplane::DAEMONS {
            let layout = &layout;
            s.spawn(move || process::stop(layout, d, Duration::from_secs(2)));
        }
    });
    let _ = Command::new("iptables")
        .args(node::forward_rule("-D"))
        .output();
    let _ = ip(&["link", "del", BRIDGE]);
    node::remove_guard();
    // The kernel dismantles a deleted netns asynchronously; wait until the veths are
    // gone so that an `up` right after this one does not trip over them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes
        .iter()
        .filter(|n| !n.control_plane)
        .any(|n| Path::new("/sys/class/net").join(n.veth()).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::mount::umount2(NS_DIR, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(Path::new(NS_DIR).parent().unwrap_or(Path::new(NS_DIR)));
    restore_sysctls(&layout);
    remove_created_dirs(&layout);
    if layout.dir.exists() {
        std::fs::remove_dir_all(&layout.dir)?;
    }
    println!(
        "cluster down in {:.1} s ({} nodes)",
        started.elapsed().as_secs_f64(),
        nodes.len()
    );
    Ok(())
}

/// Nodes known from the state directory, the mount namespaces and the netns names.
pub fn discover_nodes(layout: &Layout) -> Vec<NodeSpec> {
    let mut names: Vec<String> = Vec::new();
    let dirs = [
        layout.dir.join("nodes"),
        PathBuf::from(NS_DIR),
        PathBuf::from("/run/netns"),
    ];
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(d) {
            names.extend(
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
    }
    let mut idx: Vec<u8> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&format!("{PREFIX}-"))?.parse().ok())
        .collect();
    idx.sort();
    idx.dedup();
    let mut nodes: Vec<NodeSpec> = idx.into_iter().map(NodeSpec::new).collect();
    if names.iter().any(|n| n == super::CONTROL_PLANE) {
        nodes.insert(0, NodeSpec::control_plane());
    }
    nodes
}

/// What the control-plane node's daemons left in the host's network namespace, which
/// `down` cannot simply delete. weft's own (its devices, routes, nftables table and
/// iptables FORWARD accepts) goes by the agent's code, as `weft-agent cleanup` does;
/// then kube-proxy's and the portmap plugin's nftables tables and the kubelet's empty
/// marker chains. Only names weft, kube-proxy, portmap and the kubelet own are touched.
fn clean_host_network(layout: &Layout, node: &NodeSpec) {
    let subnet_file = layout.node_dir(&node.name).join("root/run/weft/subnet.env");
    let weft = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection()?;
                tokio::spawn(conn);
                let conf = weft_common::netconf::NetConf::default();
                weft_agent::datapath::cleanup(&handle, &conf, &subnet_file).await?;
                Ok(())
            })
        });
    if let Err(e) = weft {
        tracing::warn!(error = %e, "cleaning up weft's datapath on the host");
    }
    if let Err(e) = weft_agent::iptables::remove() {
        tracing::warn!(error = %e, "removing weft's iptables FORWARD accepts on the host");
    }
    // kube-proxy's tables, and those of the CNI portmap plugin that weft's conflist
    // chains (run for the node's pods, it programs the host side: the host's netns).
    for family in ["ip", "ip6"] {
        for table in ["kube-proxy", "cni_hostport"] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, table])
                .output();
        }
    }
    for tool in ["iptables", "ip6tables"] {
        // The kubelet's marker chains (empty; it makes them in every table it checks).
        for table in ["mangle", "nat", "filter"] {
            for chain in ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"] {
                let _ = Command::new(tool).args(["-t", table, "-X", chain]).output();
            }
        }
    }
}

/// SIGKILL to every process of the node: those in its mount or network namespace
/// (containerd, shims, hostNetwork containers) and those in its cgroups (containers),
/// until none is left.
fn kill_node_processes(n: &NodeSpec) {
    let ino = |p: PathBuf| std::fs::metadata(p).ok().map(|m| m.ino());
    // The control-plane node's network namespace is the host's: its processes are found
    // by mount namespace and cgroup only.
    let (mnt, net) = (ino(n.mntns_path()), n.netns_path().and_then(ino));
    let cg = n.cgroup_root();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut found = 0;
        for pid in pids() {
            let ns_ino = |kind: &str| {
                std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                    .ok()
                    .and_then(|l| {
                        l.to_str()?
                            .split('[')
                            .nth(1)?
                            .trim_end_matches(']')
                            .parse::<u64>()
                            .ok()
                    })
            };
            let in_ns =
                (mnt.is_some() && ns_ino("mnt") == mnt) || (net.is_some() && ns_ino("net") == net);
            let in_cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| {
                t.lines().any(|l| {
                    let path = l.splitn(3, ':').nth(2).unwrap_or("");
                    path == cg || path.starts_with(&format!("{cg}/"))
                })
            });
            // A zombie is past killing; its reaper (pid 1 here) collects it.
            if (in_ns || in_cg) && !process::is_zombie(pid) {
                found += 1;
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        if found == 0 || Instant::now() > deadline {
            if found > 0 {
                tracing::warn!(node = %n.name, found, "processes survive SIGKILL");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pids() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&p| p != me)
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the node's cgroup trees, deepest first, in every hierarchy.
fn remove_cgroups(n: &NodeSpec) {
    fn rm_tree(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm_tree(&e.path());
                }
            }
        }
        // Emptied cgroups may take a moment to release their last task.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The kubelet and runc also make the node's tree in the v2 hierarchy of this hybrid
    // layout.
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    for h in node::cgroup_hierarchies().into_iter().chain([unified]) {
        let dir = h.join(&n.name);
        if dir.exists() {
            rm_tree(&dir);
        }
    }
}

fn restore_sysctls(layout: &Layout) {
    let Ok(text) = std::fs::read_to_string(layout.sysctl_file()) else {
        return;
    };
    let settings: Vec<String> = text
        .lines()
        .map(|l| l.replace(' ', ""))
        .filter(|l| l.contains('='))
        .collect();
    if !settings.is_empty() {
        let _ = Command::new("sysctl").arg("-qw").args(&settings).output();
    }
}

/// Mount points `up` created on the host, removed deepest first if empty.
fn remove_created_dirs(layout: &Layout) {
    let Ok(text) = std::fs::read_to_string(layout.created_dirs_file()) else {
        return;
    };
    let mut dirs: Vec<&str> = text.lines().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}
