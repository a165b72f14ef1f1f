//! `weft-e2e up` / `weft-e2e down`: a local Kubernetes cluster on this machine whose
//! nodes are namespaces, not containers.
//!
//! The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) runs
//! on the host. Each node is a network namespace on an underlay bridge plus a persistent
//! mount namespace in which the node's own directories are bind-mounted over the paths
//! Kubernetes and weft use (`/etc/cni/net.d`, `/opt/cni/bin`, `/run/weft`,
//! `/var/lib/kubelet`, `/run/containerd`, ...). The node's containerd, kubelet and
//! kube-proxy run inside both namespaces, so hostPath volumes, CNI configuration and pod
//! network namespaces are per node although all nodes share one kernel and one root
//! filesystem. Every daemon is detached, with a pid file and a log under the state
//! directory; `down` needs nothing but that directory and the namespace names.

pub mod controlplane;
pub mod down;
pub mod images;
pub mod node;
pub mod pki;
pub mod process;
pub mod runtime;
pub mod up;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Names of everything the cluster creates on the host (netns, links, cgroups, nodes).
pub const PREFIX: &str = "weft-e2e";
/// The underlay: the host's address on [`BRIDGE`]; node `i` (1-based) is .10+i.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
pub const BRIDGE: &str = "weft-e2e0";
pub const API_PORT: u16 = 6443;
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The kubernetes Service's ClusterIP (first address of [`SERVICE_CIDR`]).
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Pod network as weft's default net-conf.json has it; kube-proxy uses it to tell
/// pod traffic from the rest.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The Kubernetes binaries `up` needs (built by scripts/build-k8s.sh).
pub const KUBERNETES_BINS: [&str; 7] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
];
pub const PAUSE_IMAGE: &str = "weft.dev/pause:3.10";
pub const PROBE_IMAGE: &str = "weft.dev/probe:0.1.0";
/// Built by scripts/build-coredns.sh; the tag is the version pinned in e2e/go/coredns
/// and named in e2e/addons/coredns.yaml.
pub const COREDNS_IMAGE: &str = "weft.dev/coredns:1.14.7";
/// The kube-dns Service (e2e/addons/coredns.yaml) and the kubelets' clusterDNS.
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Where the cluster keeps its state: `WEFT_E2E_DIR`, default /var/lib/weft-e2e.
pub fn state_dir() -> PathBuf {
    std::env::var_os("WEFT_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/weft-e2e"))
}

/// Persistent mount namespaces (bind-mounted ns files) live here, on a private mount.
pub const NS_DIR: &str = "/run/weft-e2e/ns";

/// Paths of one cluster's state directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Layout { dir: dir.into() }
    }
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn pids(&self) -> PathBuf {
        self.dir.join("pids")
    }
    pub fn images(&self) -> PathBuf {
        self.dir.join("images")
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }
    pub fn kubeconfig(&self, component: &str) -> PathBuf {
        self.dir
            .join("kubeconfigs")
            .join(format!("{component}.kubeconfig"))
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }
    /// Host directories this cluster created as mount points (removed by `down`).
    pub fn created_dirs_file(&self) -> PathBuf {
        self.dir.join("created-dirs")
    }
    pub fn sysctl_file(&self) -> PathBuf {
        self.dir.join("sysctl.orig")
    }
}

/// The control-plane node's name: the host itself, where the API server runs.
pub const CONTROL_PLANE: &str = "weft-e2e-control-plane";
/// The taint (and role label) that keeps workloads off the control-plane node, as
/// kubeadm sets it; e2e frameworks treat nodes with it as not blocking.
pub const CONTROL_PLANE_ROLE: &str = "node-role.kubernetes.io/control-plane";

/// One node: its name (also its netns and cgroup name) and underlay address.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub index: u8,
    pub name: String,
    pub ip: Ipv4Addr,
    /// The control-plane node: the host's own network namespace (where kube-apiserver
    /// listens), so that the control plane is on the pod network as on a real cluster.
    pub control_plane: bool,
}

impl NodeSpec {
    /// Worker node `index` (1-based): a network namespace of its own.
    pub fn new(index: u8) -> Self {
        NodeSpec {
            index,
            name: format!("{PREFIX}-{index}"),
            ip: Ipv4Addr::new(172, 30, 0, 10 + index),
            control_plane: false,
        }
    }
    /// The control-plane node: kubelet, containerd and kube-proxy in the host's network
    /// namespace (its underlay address is [`HOST_IP`]) with a mount namespace of their
    /// own; weft's DaemonSet runs an agent there like on every node.
    pub fn control_plane() -> Self {
        NodeSpec {
            index: 0,
            name: CONTROL_PLANE.into(),
            ip: HOST_IP,
            control_plane: true,
        }
    }
    /// The node's own network namespace; `None` for the control-plane node (the host's).
    pub fn netns_path(&self) -> Option<PathBuf> {
        (!self.control_plane).then(|| Path::new("/run/netns").join(&self.name))
    }
    pub fn mntns_path(&self) -> PathBuf {
        Path::new(NS_DIR).join(&self.name)
    }
    /// The kubelet's cgroupRoot (cgroupfs driver).
    pub fn cgroup_root(&self) -> String {
        format!("/{}", self.name)
    }
    /// The host end of the node's underlay veth (<= 15 bytes).
    pub fn veth(&self) -> String {
        format!("{PREFIX}-v{}", self.index)
    }
}

pub fn api_server_url() -> String {
    format!("https://{HOST_IP}:{API_PORT}")
}

/// What the local-cluster tests need, checked before they start: `Ok(false)` when
/// `WEFT_SKIP_CLUSTER=1` asks to skip on purpose; `Err` naming what is missing (root,
/// a built component, dockerd, a cluster already up), which the tests turn into a
/// failure: a cluster test that cannot run must not pass.
pub fn test_preflight() -> Result<bool, String> {
    if std::env::var("WEFT_SKIP_CLUSTER").as_deref() == Ok("1") {
        eprintln!("WEFT_SKIP_CLUSTER=1: skipping the local cluster test");
        return Ok(false);
    }
    let how = "; set WEFT_SKIP_CLUSTER=1 to skip this test on purpose";
    if !nix::unistd::geteuid().is_root() {
        return Err(format!("the local cluster test needs root{how}"));
    }
    let containerd = ["containerd", "containerd-shim-runc-v2"];
    for b in KUBERNETES_BINS.iter().chain(&containerd) {
        if let Err(e) = crate::harness::bin(b) {
            return Err(format!(
                "{e:#} (containerd: scripts/build-containerd.sh){how}"
            ));
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let docker = std::process::Command::new(root.join("scripts/start-docker.sh"))
        .status()
        .map_err(|e| format!("run scripts/start-docker.sh: {e}{how}"))?;
    if !docker.success() {
        return Err(format!(
            "dockerd is not available (apt-get install -y docker.io){how}"
        ));
    }
    let state = state_dir();
    if state.exists() {
        return Err(format!(
            "{} exists: a local cluster is up (or was not cleaned); `weft-e2e down` first{how}",
            state.display()
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_fit_kernel_limits() {
        for i in 1..=20 {
            let n = NodeSpec::new(i);
            assert!(n.veth().len() <= 15, "{}", n.veth());
            assert!(n.name.len() <= 15);
        }
        assert!(BRIDGE.len() <= 15);
        assert_eq!(NodeSpec::new(2).ip, Ipv4Addr::new(172, 30, 0, 12));
    }
}
