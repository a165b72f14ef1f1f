//! A real control plane for tests and benchmarks: etcd and kube-apiserver built from
//! source (scripts/build-k8s.sh), started on this machine with RBAC, service-account
//! token issuance and the usual admission chain.
//!
//! [`ControlPlane`] owns the processes: dropping it (also while a test panics) stops them
//! and removes their state; children also get SIGKILL if the test process dies first.

mod kubeconfig;
mod process;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

pub use kubeconfig::write_kubeconfig;
use process::Child;

/// Where built Kubernetes components live (`WEFT_CACHE`, default /var/cache/weft).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WEFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/weft"))
}

/// Path of a built component; an error that says how to build it when it is missing.
pub fn bin(name: &str) -> Result<PathBuf> {
    let sub = if ["bridge", "host-local", "portmap", "loopback"].contains(&name) {
        "cni"
    } else {
        "bin"
    };
    let path = cache_dir().join(sub).join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run scripts/build-k8s.sh to build the Kubernetes components",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on `ip` (the kernel picks; the tiny race with other programs is
/// acceptable on a test machine).
pub fn free_port(ip: IpAddr) -> Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Address kube-apiserver listens on; loopback by default. Tests whose "nodes" live in
    /// network namespaces pass the host's address on their underlay.
    pub bind: IpAddr,
    /// Extra kube-apiserver flags.
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            extra_args: Vec::new(),
        }
    }
}

pub struct ControlPlane {
    /// Admin kubeconfig (group system:masters).
    pub kubeconfig: PathBuf,
    /// `https://ip:port` of kube-apiserver.
    pub server: String,
    pub dir: PathBuf,
    // Dropped in reverse order of start: apiserver first, then etcd.
    apiserver: Option<Child>,
    etcd: Option<Child>,
    admin_token: String,
}

const ADMIN_TOKEN_USER: &str = "weft-e2e-admin";

impl ControlPlane {
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Result<Self> {
        let started = Instant::now();
        let etcd_bin = bin("etcd")?;
        let apiserver_bin = bin("kube-apiserver")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-cp-")
            .tempdir()
            .context("create control plane directory")?
            .keep();
        let mut cp = ControlPlane {
            kubeconfig: dir.join("admin.kubeconfig"),
            server: String::new(),
            dir: dir.clone(),
            apiserver: None,
            etcd: None,
            admin_token: random_token(),
        };

        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let client_port = free_port(lo)?;
        let peer_port = free_port(lo)?;
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cp.etcd = Some(Child::spawn(
            "etcd",
            &etcd_bin,
            &[
                "--name=weft-e2e".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=weft-e2e={peer_url}"),
                // Test data: durability is not the point, speed is.
                "--unsafe-no-fsync".into(),
                "--quota-backend-bytes=4294967296".into(),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
        )?);

        let sa_key = dir.join("sa.key");
        let status = std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&sa_key)
            .arg("2048")
            .stderr(std::process::Stdio::null())
            .status()
            .context("run openssl to make the service-account signing key")?;
        if !status.success() {
            bail!("openssl genrsa failed: {status}");
        }
        std::fs::write(
            dir.join("tokens.csv"),
            format!(
                "{},{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},system:masters\n",
                cp.admin_token
            ),
        )?;

        let port = free_port(opts.bind)?;
        cp.server = match opts.bind {
            IpAddr::V4(ip) => format!("https://{ip}:{port}"),
            IpAddr::V6(ip) => format!("https://[{ip}]:{port}"),
        };
        wait_for_tcp(
            &format!("127.0.0.1:{client_port}"),
            Duration::from_secs(30),
            cp.etcd.as_mut(),
        )
        .context("etcd did not start")?;

        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={}", opts.bind),
            format!("--advertise-address={}", advertise_address(opts.bind)),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", sa_key.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged=true".into(),
            "--endpoint-reconciler-type=none".into(),
            "--enable-priority-and-fairness=false".into(),
            "--max-requests-inflight=2000".into(),
            "--max-mutating-requests-inflight=1000".into(),
            "--v=1".into(),
        ];
        args.extend(opts.extra_args.iter().cloned());
        cp.apiserver = Some(Child::spawn(
            "kube-apiserver",
            &apiserver_bin,
            &args,
            &dir.join("kube-apiserver.log"),
        )?);
        write_kubeconfig(
            &cp.kubeconfig,
            &cp.server,
            &cp.admin_token,
            ADMIN_TOKEN_USER,
        )?;
        cp.wait_ready(Duration::from_secs(90)).await?;
        tracing::info!(server = %cp.server, dir = %cp.dir.display(), secs = started.elapsed().as_secs_f64(), "control plane ready");
        Ok(cp)
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.client().await?;
        let mut last;
        loop {
            for (name, child) in [
                ("kube-apiserver", self.apiserver.as_mut()),
                ("etcd", self.etcd.as_mut()),
            ] {
                if let Some(child) = child {
                    child
                        .check_alive()
                        .with_context(|| format!("{name} exited during start"))?;
                }
            }
            let req = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(req).await {
                Ok(text) if text.trim() == "ok" => return Ok(()),
                Ok(text) => last = text,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after {timeout:?}: {last}; log: {}",
                    self.dir.join("kube-apiserver.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kubeconfig holding a fresh token of the named service account (created, with its
    /// namespace, if missing). RBAC for it comes from whatever the test applied.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let client = self.client().await?;
        let pp = PostParams::default();
        let ns_api: Api<Namespace> = Api::all(client.clone());
        if ns_api.get_opt(namespace).await?.is_none() {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            ignore_conflict(ns_api.create(&pp, &ns).await)?;
        }
        let sa_api: Api<ServiceAccount> = Api::namespaced(client, namespace);
        if sa_api.get_opt(name).await?.is_none() {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            ignore_conflict(sa_api.create(&pp, &sa).await)?;
        }
        let tr = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
                expiration_seconds: Some(24 * 3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = sa_api
            .create_token_request(name, &pp, &tr)
            .await
            .with_context(|| format!("token for service account {namespace}/{name}"))?
            .status
            .context("token request has no status")?
            .token;
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        write_kubeconfig(
            &path,
            &self.server,
            &token,
            &format!("system:serviceaccount:{namespace}:{name}"),
        )?;
        Ok(path)
    }

    /// The log file of a component started by the harness.
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        drop(self.apiserver.take());
        drop(self.etcd.take());
        if std::env::var_os("WEFT_KEEP_CP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn ignore_conflict<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// kube-apiserver refuses a loopback advertise address only in some paths; with the
/// endpoint reconciler off, the bind address itself is a fine answer.
fn advertise_address(bind: IpAddr) -> IpAddr {
    bind
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

fn wait_for_tcp(addr: &str, timeout: Duration, mut child: Option<&mut Child>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(c) = child.as_mut() {
            c.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
