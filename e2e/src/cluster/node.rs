//! A node of the local cluster: a network namespace on the underlay bridge, a persistent
//! mount namespace with the node's own directories bound over the well-known paths,
//! per-node cgroup roots, and the node's containerd, kubelet and kube-proxy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::runtime::Containerd;
use super::{
    process, Layout, NodeSpec, BRIDGE, CLUSTER_CIDR, CONTROL_PLANE_ROLE, DNS_SERVICE_IP, HOST_IP,
    NS_DIR, SERVICE_CIDR, UNDERLAY_PREFIX_LEN,
};
use crate::harness::bin;
use crate::topo::{ip, run};

/// Paths that are per node: inside a node's mount namespace each is a bind mount of
/// `nodes/<name>/root/<path>`. hostPath volumes of pods (weft's CNI install, subnet file,
/// IPAM store) resolve through them, so nodes share none of it.
pub const NODE_PATHS: [&str; 11] = [
    "/etc/cni/net.d",
    "/opt/cni/bin",
    "/run/containerd",
    "/run/netns",
    "/run/weft",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/var/lib/weft",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
];

/// CNI plugins every node has before weft installs its own (containerd runs `loopback`
/// for every pod sandbox).
const CNI_PLUGINS: [&str; 4] = ["loopback", "bridge", "host-local", "portmap"];

/// Host-side underlay: the bridge with the host's address, and a FORWARD accept so
/// bridged node-to-node traffic passes the host's firewall when br_netfilter hands
/// bridged frames to it (dockerd sets FORWARD's policy to DROP).
pub fn create_underlay() -> Result<()> {
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&[
        "addr",
        "add",
        &format!("{HOST_IP}/{UNDERLAY_PREFIX_LEN}"),
        "dev",
        BRIDGE,
    ])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    run(Command::new("iptables").args(forward_rule("-I")))?;
    add_guard(None)
}

/// The nftables table of the host's guard (see [`add_guard`]).
pub const GUARD_TABLE: &str = "weft-e2e-guard";

/// The host's guard: traffic for the pod network or the Service range never leaves the
/// machine by its default route, whatever the state of the cluster.
/// * Pod CIDR: an `unreachable` route for the whole cluster CIDR. The nodes' pod CIDRs
///   (routes weft's agent on the control-plane node writes) are more specific; an
///   address in no node's CIDR gets "no route to host" instead of the default gateway.
/// * Service CIDR: a route would break the host's own connections to ClusterIPs (the
///   route lookup happens before kube-proxy's DNAT), so it is a rule: after NAT, a packet
///   still addressed to the Service range was not translated and is dropped, counted
///   (`nft list table inet weft-e2e-guard`).
///
/// `netns`: a named network namespace instead of the host's (tests).
pub fn add_guard(netns: Option<&str>) -> Result<()> {
    let ns_args: Vec<&str> = netns.map(|n| vec!["-n", n]).unwrap_or_default();
    let mut route = ns_args.clone();
    route.extend(["route", "replace", "unreachable", CLUSTER_CIDR]);
    ip(&route)?;
    let script = format!(
        "table inet {GUARD_TABLE} {{\n\
         \tchain leak {{\n\
         \t\ttype filter hook postrouting priority 200; policy accept;\n\
         \t\toifname \"lo\" accept\n\
         \t\tip daddr {SERVICE_CIDR} counter drop comment \"untranslated Service traffic\"\n\
         \t}}\n\
         }}\n"
    );
    let mut nft = match netns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    let mut child = nft
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("run nft")?;
    std::io::Write::write_all(
        &mut child.stdin.take().context("nft stdin")?,
        script.as_bytes(),
    )?;
    let status = child.wait()?;
    if !status.success() {
        bail!("nft -f (guard table {GUARD_TABLE}) failed: {status}");
    }
    Ok(())
}

/// Removes the guard (`down`); each part may already be gone.
pub fn remove_guard() {
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", GUARD_TABLE])
        .output();
    let _ = Command::new("ip")
        .args(["route", "del", "unreachable", CLUSTER_CIDR])
        .output();
}

/// The host FORWARD rule for the underlay bridge, for `-I` (insert) or `-D` (delete).
pub fn forward_rule(op: &str) -> Vec<String> {
    let mut v = vec![op.to_string(), "FORWARD".into()];
    if op == "-I" {
        v.push("1".into());
    }
    v.extend(
        [
            "-i",
            BRIDGE,
            "-o",
            BRIDGE,
            "-m",
            "comment",
            "--comment",
            "weft-e2e underlay",
            "-j",
            "ACCEPT",
        ]
        .map(String::from),
    );
    v
}

/// Network namespace, veth to the underlay, sysctls (a worker node's; the control-plane
/// node is the host's own).
pub fn create_netns(node: &NodeSpec) -> Result<()> {
    let Some(netns) = node.netns_path() else {
        return Ok(());
    };
    let ns = node.name.as_str();
    ip(&["netns", "add", ns])?;
    let veth = node.veth();
    ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["link", "set", &veth, "master", BRIDGE, "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{}/{UNDERLAY_PREFIX_LEN}", node.ip),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    // No default route: nothing leaves the underlay. Service ClusterIPs need a route for
    // locally generated traffic to reach kube-proxy's DNAT (the API server's Service).
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        SERVICE_CIDR,
        "via",
        &HOST_IP.to_string(),
    ])?;
    run(Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args([
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
        ]))?;
    Ok(())
}

/// Makes `NS_DIR` a private mount, as persistent mount namespace files require.
pub fn prepare_ns_dir() -> Result<()> {
    std::fs::create_dir_all(NS_DIR)?;
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(NS_DIR));
    if !mounted {
        run(Command::new("mount").args(["--bind", NS_DIR, NS_DIR]))?;
    }
    run(Command::new("mount").args(["--make-private", NS_DIR]))?;
    Ok(())
}

/// The persistent mount namespace with the node's bind mounts. Host mount points that
/// did not exist are created (empty) and recorded in `created`.
pub fn create_mntns(layout: &Layout, node: &NodeSpec, created: &mut Vec<PathBuf>) -> Result<()> {
    let root = layout.node_dir(&node.name).join("root");
    // The new namespace starts as a copy of the host's mounts, including the nsfs mounts
    // of every network namespace and of the other nodes' mount namespaces: such a copy
    // would keep those namespaces (and the veths in them) alive after `down` deleted
    // them. Drop the copies first. A network namespace deleted meanwhile (by anything
    // else on the host) takes its mount with it: only a mount that stays is an error.
    let mut script = String::from(
        "set -e\n\
         awk '{for (i = 7; i < NF; i++) if ($i == \"-\") { if ($(i + 1) == \"nsfs\") print $5; break }}' \
         /proc/self/mountinfo | while read -r m; do \
         if ! umount -l \"$m\" 2>/dev/null && mountpoint -q \"$m\"; then \
         echo \"cannot unmount $m\" >&2; exit 1; fi; done\n",
    );
    for p in NODE_PATHS {
        let src = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(&src)?;
        mkdir_recorded(Path::new(p), created)?;
        script.push_str(&format!("mount --bind '{}' '{p}'\n", src.display()));
    }
    let nsfile = node.mntns_path();
    std::fs::write(&nsfile, b"")?;
    run(Command::new("unshare")
        .arg(format!("--mount={}", nsfile.display()))
        .args(["--propagation", "private", "--", "sh", "-c", &script]))
    .with_context(|| format!("mount namespace of {}", node.name))?;
    Ok(())
}

fn mkdir_recorded(p: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    if p.exists() {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        mkdir_recorded(parent, created)?;
    }
    std::fs::create_dir(p).with_context(|| format!("create {}", p.display()))?;
    created.push(p.to_owned());
    Ok(())
}

/// cgroup v1 hierarchies the kubelet's cgroupfs manager expects under its cgroupRoot.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| n != "unified") && p.join("cgroup.procs").exists()
        })
        .collect();
    v.sort();
    v
}

pub fn create_cgroups(node: &NodeSpec) -> Result<()> {
    for h in cgroup_hierarchies() {
        let dir = h.join(&node.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        if h.ends_with("cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                std::fs::write(dir.join(f), std::fs::read(h.join(f))?)?;
            }
        }
    }
    Ok(())
}

/// containerd, kubelet and kube-proxy configuration plus the CNI plugins.
pub fn write_config(layout: &Layout, node: &NodeSpec, runtime: &Containerd) -> Result<()> {
    let dir = layout.node_dir(&node.name);
    std::fs::write(dir.join("containerd.toml"), runtime.config())?;
    std::fs::write(
        dir.join("kubelet.json"),
        serde_json::to_vec_pretty(&kubelet_config(node))?,
    )?;
    let kp = kube_proxy_config(node, &layout.kubeconfig("kube-proxy"));
    std::fs::write(dir.join("kube-proxy.json"), serde_json::to_vec_pretty(&kp)?)?;
    let cni_bin = dir.join("root/opt/cni/bin");
    for p in CNI_PLUGINS {
        std::fs::copy(bin(p)?, cni_bin.join(p))
            .with_context(|| format!("install CNI plugin {p}"))?;
    }
    Ok(())
}

fn kubelet_config(node: &NodeSpec) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root(),
        // Cgroups are v1 here; 1.34 still runs on them when told so.
        "failCgroupV1": false,
        "failSwapOn": false,
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "address": node.ip.to_string(),
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        // The API server reaches kubelets only over the private underlay.
        "authentication": {"anonymous": {"enabled": true}, "webhook": {"enabled": false}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [DNS_SERVICE_IP.to_string()],
        "resolvConf": "",
        "serializeImagePulls": false,
        // Nothing can be pulled: never garbage-collect the imported images, and keep
        // disk-pressure eviction out of the way of a busy build machine.
        "imageGCHighThresholdPercent": 100,
        // kubeadm's control-plane taint: only what tolerates it (weft's DaemonSet) runs
        // there.
        "registerWithTaints": if node.control_plane {
            serde_json::json!([{"key": CONTROL_PLANE_ROLE, "effect": "NoSchedule"}])
        } else {
            serde_json::json!([])
        },
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%"
        },
    })
}

fn kube_proxy_config(node: &NodeSpec, kubeconfig: &Path) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "mode": "nftables",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": node.name,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        // Leave the host-wide conntrack table size alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        // On the control-plane node (the host's netns) NodePorts must not open on the
        // machine's real interfaces: the underlay address only.
        "nodePortAddresses": if node.control_plane {
            serde_json::json!([format!("{}/32", node.ip)])
        } else {
            serde_json::Value::Null
        },
    })
}

pub fn containerd_socket(layout: &Layout, node: &NodeSpec) -> PathBuf {
    layout
        .node_dir(&node.name)
        .join("root/run/containerd/containerd.sock")
}

pub fn start_containerd(layout: &Layout, node: &NodeSpec, runtime: &Containerd) -> Result<()> {
    let mut cmd = process::in_node(node, &runtime.containerd);
    cmd.env("PATH", runtime.path_env());
    cmd.arg("--config")
        .arg(layout.node_dir(&node.name).join("containerd.toml"));
    process::spawn(layout, &format!("containerd-{}", node.name), cmd)?;
    Ok(())
}

/// Waits until the node's containerd answers on its socket (seen from the host).
pub fn wait_containerd(
    layout: &Layout,
    node: &NodeSpec,
    runtime: &Containerd,
    timeout: Duration,
) -> Result<()> {
    let sock = containerd_socket(layout, node);
    let deadline = Instant::now() + timeout;
    loop {
        process::check_alive(layout, &format!("containerd-{}", node.name))?;
        if sock.exists() {
            let ok = Command::new(&runtime.ctr)
                .arg("-a")
                .arg(&sock)
                .arg("version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "containerd of {} does not answer on {} after {timeout:?}",
                node.name,
                sock.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn start_kubelet(layout: &Layout, node: &NodeSpec) -> Result<()> {
    let dir = layout.node_dir(&node.name);
    let mut cmd = process::in_node(node, bin("kubelet")?);
    cmd.arg(format!("--config={}", dir.join("kubelet.json").display()))
        .arg(format!(
            "--kubeconfig={}",
            layout
                .kubeconfig(&format!("kubelet-{}", node.name))
                .display()
        ))
        .arg(format!("--hostname-override={}", node.name))
        .arg(format!("--node-ip={}", node.ip))
        .arg("--v=1");
    process::spawn(layout, &format!("kubelet-{}", node.name), cmd)?;
    Ok(())
}

pub fn start_kube_proxy(layout: &Layout, node: &NodeSpec) -> Result<()> {
    let dir = layout.node_dir(&node.name);
    let mut cmd = process::in_node(node, bin("kube-proxy")?);
    cmd.arg(format!(
        "--config={}",
        dir.join("kube-proxy.json").display()
    ))
    .arg("--v=1");
    process::spawn(layout, &format!("kube-proxy-{}", node.name), cmd)?;
    Ok(())
}
