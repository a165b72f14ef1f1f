//! The control plane on the host: etcd on loopback, kube-apiserver on the underlay
//! address (nodes reach it there; the `kubernetes` Service's endpoint is the same address),
//! kube-controller-manager without node IPAM (weft's controller hands out pod CIDRs) and
//! kube-scheduler. All detached, with pid files (see [`super::process`]).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{process, Layout, API_PORT, HOST_IP, SERVICE_CIDR};
use crate::harness::{bin, free_port};

/// Daemon names, in start order; `down` stops them in reverse.
pub const DAEMONS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// Starts etcd and kube-apiserver and waits until the API server is ready.
pub async fn start_api(layout: &Layout) -> Result<()> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let client_port = free_port(lo)?;
    let peer_port = free_port(lo)?;
    let etcd_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = Command::new(bin("etcd")?);
    etcd.args([
        "--name=weft-e2e".to_string(),
        format!("--data-dir={}", layout.dir.join("etcd").display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=weft-e2e={peer_url}"),
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ]);
    process::spawn(layout, "etcd", etcd)?;

    let pki = layout.pki();
    let mut api = Command::new(bin("kube-apiserver")?);
    api.args([
        format!("--etcd-servers={etcd_url}"),
        format!("--bind-address={HOST_IP}"),
        format!("--advertise-address={HOST_IP}"),
        format!("--secure-port={API_PORT}"),
        format!("--tls-cert-file={}", pki.join("apiserver.crt").display()),
        format!(
            "--tls-private-key-file={}",
            pki.join("apiserver.key").display()
        ),
        format!(
            "--token-auth-file={}",
            layout.dir.join("tokens.csv").display()
        ),
        "--authorization-mode=Node,RBAC".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!(
            "--service-account-key-file={}",
            pki.join("sa.key").display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            pki.join("sa.key").display()
        ),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--kubelet-preferred-address-types=InternalIP".into(),
        "--allow-privileged=true".into(),
        "--enable-priority-and-fairness=false".into(),
        "--v=1".into(),
    ]);
    // etcd first answers within a second or two; the API server retries meanwhile.
    process::spawn(layout, "kube-apiserver", api)?;
    wait_api_ready(layout, Duration::from_secs(120)).await
}

/// Polls `/readyz` with kubectl (quiet, unlike a kube client whose every refused
/// attempt is logged as an error).
async fn wait_api_ready(layout: &Layout, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let kubectl = bin("kubectl")?;
    loop {
        process::check_alive(layout, "etcd")?;
        process::check_alive(layout, "kube-apiserver")?;
        let out = tokio::process::Command::new(&kubectl)
            .arg(format!(
                "--kubeconfig={}",
                layout.admin_kubeconfig().display()
            ))
            .args(["get", "--raw", "/readyz", "--request-timeout=2s"])
            .output()
            .await?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver not ready after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts kube-controller-manager and kube-scheduler (they wait for nothing).
pub fn start_controllers(layout: &Layout) -> Result<()> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let pki = layout.pki();
    let mut kcm = Command::new(bin("kube-controller-manager")?);
    kcm.args([
        format!(
            "--kubeconfig={}",
            layout.kubeconfig("kube-controller-manager").display()
        ),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=true".into(),
        format!(
            "--service-account-private-key-file={}",
            pki.join("sa.key").display()
        ),
        format!("--root-ca-file={}", pki.join("ca.crt").display()),
        // weft-controller allocates pod CIDRs.
        "--allocate-node-cidrs=false".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--cluster-name=weft-e2e".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port(lo)?),
        "--v=1".into(),
    ]);
    process::spawn(layout, "kube-controller-manager", kcm)
        .context("start kube-controller-manager")?;
    let mut sched = Command::new(bin("kube-scheduler")?);
    sched.args([
        format!(
            "--kubeconfig={}",
            layout.kubeconfig("kube-scheduler").display()
        ),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port(lo)?),
        "--v=1".into(),
    ]);
    process::spawn(layout, "kube-scheduler", sched).context("start kube-scheduler")?;
    Ok(())
}
