//! A weft overlay on "nodes" that are network namespaces, driven by a real
//! kube-apiserver: Node objects registered for each netns, weft-controller on the host,
//! one weft-agent inside each node netns (reaching the API server over the underlay with
//! its own service account's token, RBAC from `manifests/`), and pods made by running the
//! `weft` plugin through `cnitool`, exactly as a runtime does.
//!
//! Used by the overlay tests and by `weft-e2e demo`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};

use crate::fixtures::kubelet_like_node;
use crate::harness::{self, ControlPlane};
use crate::topo::{self, in_netns, Topology};

pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The pod network is dual-stack (the underlay stays IPv4-only).
pub const CLUSTER_CIDR_V6: &str = "fd00:10:244::/48";
const NAMESPACE: &str = "weft-system";
/// The net-conf of the agents in [`Options::policy_off`].
const NETCONF_POLICY_OFF: &str = "net-conf-policy-off.json";

pub struct Pod {
    pub netns: String,
    pub node: usize,
    pub ip: Ipv4Addr,
    pub ip6: Option<std::net::Ipv6Addr>,
}

/// What [`Overlay::start_with`] builds.
pub struct Options {
    /// Netns name tag and underlay subnet (192.168.`subnet`.0/24): distinct per user of
    /// the machine, so overlays of other checkouts can run at the same time.
    pub tag: &'static str,
    pub subnet: u8,
    pub nodes: usize,
    pub pods_per_node: usize,
    /// Nodes whose agent runs with `networkPolicy: false`.
    pub policy_off: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tag: "we",
            subnet: 79,
            nodes: 1,
            pods_per_node: 0,
            policy_off: Vec::new(),
        }
    }
}

pub struct Overlay {
    // Field order is drop order: processes first, then namespaces, then the API server.
    probes: Vec<Child>,
    agents: Vec<Option<Child>>,
    controller: Option<Child>,
    pub pods: Vec<Pod>,
    pub topo: Topology,
    pub cp: ControlPlane,
    pub dir: tempfile::TempDir,
    agent_kubeconfig: PathBuf,
    policy_off: Vec<usize>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> Result<String> {
    let out = topo::run(
        Command::new(harness::bin("kubectl")?)
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .args(args),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    cmd.spawn().with_context(|| format!("spawn {cmd:?}"))
}

impl Overlay {
    pub fn node_name(i: usize) -> String {
        format!("node-{}", i + 1)
    }

    /// Everything up and every node ready; `pods_per_node` pods on each node.
    pub async fn start(nodes: usize, pods_per_node: usize) -> Result<Self> {
        Self::start_with(Options {
            nodes,
            pods_per_node,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(opts: Options) -> Result<Self> {
        let Options {
            tag,
            subnet,
            nodes,
            pods_per_node,
            policy_off,
        } = opts;
        let topo = Topology::new(tag, subnet, nodes)?;
        let cp = ControlPlane::start_with(harness::Options {
            bind: IpAddr::V4(topo.host_ip),
            ..Default::default()
        })
        .await?;
        let dir = tempfile::Builder::new().prefix("weft-overlay-").tempdir()?;

        // RBAC exactly as shipped.
        let manifests = repo_root().join("manifests");
        for f in ["namespace.yaml", "rbac-agent.yaml", "rbac-controller.yaml"] {
            kubectl(
                &cp,
                &["apply", "-f", &manifests.join(f).display().to_string()],
            )
            .with_context(|| format!("apply manifests/{f}"))?;
        }
        let agent_kubeconfig = cp
            .service_account_kubeconfig(NAMESPACE, "weft-agent")
            .await?;
        let controller_kubeconfig = cp
            .service_account_kubeconfig(NAMESPACE, "weft-controller")
            .await?;

        let nodes_api: Api<Node> = Api::all(cp.client().await?);
        for (i, n) in topo.nodes.iter().enumerate() {
            nodes_api
                .create(
                    &PostParams::default(),
                    &kubelet_like_node(&Self::node_name(i), n.ip),
                )
                .await
                .with_context(|| format!("register {}", Self::node_name(i)))?;
        }
        let netconf = dir.path().join("net-conf.json");
        for (path, policy) in [
            (&netconf, true),
            (&dir.path().join(NETCONF_POLICY_OFF), false),
        ] {
            std::fs::write(
                path,
                serde_json::json!({
                    "clusterCIDRs": [CLUSTER_CIDR, CLUSTER_CIDR_V6],
                    "nodeSubnetSizeV4": 24,
                    "nodeSubnetSizeV6": 64,
                    "networkPolicy": policy,
                })
                .to_string(),
            )?;
        }

        let mut controller = Command::new(topo::workspace_bin("weft-controller")?);
        controller
            .arg(format!("--kubeconfig={}", controller_kubeconfig.display()))
            .arg(format!("--config={}", netconf.display()))
            .arg("--http-addr=127.0.0.1:0")
            .env("POD_NAMESPACE", NAMESPACE)
            .env("RUST_LOG", "info");
        let controller = spawn_logged(controller, &dir.path().join("controller.log"))?;

        let mut o = Overlay {
            probes: Vec::new(),
            agents: Vec::new(),
            controller: Some(controller),
            pods: Vec::new(),
            topo,
            cp,
            dir,
            agent_kubeconfig,
            policy_off,
        };
        for i in 0..nodes {
            let child = o.spawn_agent(i)?;
            o.agents.push(Some(child));
        }
        for i in 0..nodes {
            o.wait_node_ready(i, Duration::from_secs(60)).await?;
        }
        for i in 0..nodes {
            for j in 0..pods_per_node {
                o.add_pod(i, j)?;
            }
        }
        Ok(o)
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(Self::node_name(i))
    }

    pub fn subnet_file(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("subnet.env")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn spawn_agent(&self, i: usize) -> Result<Child> {
        std::fs::create_dir_all(self.node_dir(i))?;
        let mut cmd = in_netns(
            &self.topo.nodes[i].netns,
            topo::workspace_bin("weft-agent")?,
        );
        cmd.arg(format!("--node-name={}", Self::node_name(i)))
            .arg(format!("--kubeconfig={}", self.agent_kubeconfig.display()))
            .arg(format!(
                "--config={}",
                self.dir.path().join(self.netconf_name(i)).display()
            ))
            .arg(format!("--subnet-file={}", self.subnet_file(i).display()))
            .arg("--metrics-addr=127.0.0.1:9943")
            .env("RUST_LOG", "info");
        let log = self.dir.path().join(format!("agent-{}.log", i + 1));
        // Append so a restarted agent's log follows the first one's.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        cmd.spawn().context("spawn weft-agent")
    }

    fn netconf_name(&self, i: usize) -> &'static str {
        match self.policy_off.contains(&i) {
            true => NETCONF_POLICY_OFF,
            false => "net-conf.json",
        }
    }

    /// The pid of node `i`'s agent (`ip netns exec` execs it), if it runs.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents[i].as_ref().map(Child::id)
    }

    /// Kills node `i`'s agent with SIGKILL (the datapath stays in the kernel).
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.agents[i].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        self.kill_agent(i)?;
        let child = self.spawn_agent(i)?;
        self.agents[i] = Some(child);
        Ok(())
    }

    /// Ready = the agent set NetworkUnavailable=False on its Node and wrote the subnet file.
    pub async fn wait_node_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.cp.client().await?);
        let name = Self::node_name(i);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(agent) = self.agents[i].as_mut() {
                if let Some(status) = agent.try_wait()? {
                    bail!(
                        "agent on {name} exited with {status}: {}",
                        self.log(&format!("agent-{}.log", i + 1))
                    );
                }
            }
            let node = nodes.get(&name).await?;
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "False");
            if ready && self.subnet_file(i).is_file() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} not ready after {timeout:?}; agent log:\n{}\ncontroller log:\n{}",
                    self.log(&format!("agent-{}.log", i + 1)),
                    self.log("controller.log")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A pod on node `i` through `cnitool add`, run inside the node's netns.
    pub fn add_pod(&mut self, i: usize, j: usize) -> Result<()> {
        let netns = self.topo.add_netns(&format!("p{i}{j}"))?;
        let netconf_dir = self.node_dir(i).join("net.d");
        let cni_bin = self.dir.path().join("cni-bin");
        if !cni_bin.exists() {
            std::fs::create_dir_all(&cni_bin)?;
            std::os::unix::fs::symlink(topo::workspace_bin("weft")?, cni_bin.join("weft"))?;
            for p in ["portmap", "loopback"] {
                std::os::unix::fs::symlink(harness::bin(p)?, cni_bin.join(p))?;
            }
        }
        if !netconf_dir.exists() {
            std::fs::create_dir_all(&netconf_dir)?;
            let conf = serde_json::json!({
                "cniVersion": "1.1.0",
                "name": "weft",
                "plugins": [
                    {"type": "weft", "subnetFile": self.subnet_file(i), "dataDir": self.node_dir(i).join("ipam")},
                    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                ],
            });
            std::fs::write(
                netconf_dir.join("10-weft.conflist"),
                serde_json::to_vec_pretty(&conf)?,
            )?;
        }
        let out = topo::run(
            in_netns(&self.topo.nodes[i].netns, harness::bin("cnitool")?)
                .args(["add", "weft", &format!("/var/run/netns/{netns}")])
                .env("NETCONFPATH", &netconf_dir)
                .env("CNI_PATH", &cni_bin)
                .env("CNI_CACHE_DIR", self.node_dir(i).join("cni-cache")),
        )?;
        let result: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("cnitool printed no JSON result")?;
        let addr = result["ips"][0]["address"]
            .as_str()
            .context("result has no IP")?;
        let ip: Ipv4Addr = addr.split('/').next().unwrap_or_default().parse()?;
        let ip6 = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["address"].as_str()?.split('/').next()?.parse().ok())
            .next();
        self.pods.push(Pod {
            netns,
            node: i,
            ip,
            ip6,
        });
        Ok(())
    }

    /// Starts the probe server in every pod on port 7777 and waits until each listens.
    pub fn start_probes(&mut self) -> Result<()> {
        let exe = topo::workspace_bin("weft-e2e")?;
        for pod in &self.pods {
            let mut child = in_netns(&pod.netns, &exe)
                .args(["probe", "serve", &format!("{}:7777", pod.ip)])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let mut line = String::new();
            use std::io::BufRead;
            std::io::BufReader::new(child.stdout.take().context("probe stdout")?)
                .read_line(&mut line)?;
            if !line.starts_with("listening") {
                bail!("probe in {} did not start: {line:?}", pod.netns);
            }
            self.probes.push(child);
        }
        Ok(())
    }

    /// TCP from pod `from` to pod `to`: the address the server saw.
    pub fn connect(&self, from: usize, to: usize) -> Result<String> {
        let exe = topo::workspace_bin("weft-e2e")?;
        let target = SocketAddr::new(IpAddr::V4(self.pods[to].ip), 7777);
        let out = topo::run(in_netns(&self.pods[from].netns, exe).args([
            "probe",
            "connect",
            &target.to_string(),
            "--send-bytes",
            "1000000",
        ]))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn ping(
        &self,
        from: usize,
        to: IpAddr,
        count: u32,
        interval: &str,
    ) -> Result<std::process::Output> {
        Ok(in_netns(&self.pods[from].netns, "ping")
            .args([
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                &to.to_string(),
            ])
            .stdin(Stdio::null())
            .output()?)
    }

    /// `ip route show dev weft.1` in node `i`.
    pub fn weft_routes(&self, i: usize) -> Result<String> {
        let out = topo::ip(&[
            "-n",
            &self.topo.nodes[i].netns,
            "route",
            "show",
            "dev",
            "weft.1",
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn node_pod_cidr(&self, i: usize) -> Result<String> {
        let text = std::fs::read_to_string(self.subnet_file(i))?;
        text.lines()
            .find_map(|l| l.strip_prefix("WEFT_NODE_CIDRS="))
            .map(|v| v.split(',').next().unwrap_or_default().to_string())
            .context("subnet file has no WEFT_NODE_CIDRS")
    }

    pub async fn delete_node_object(&self, i: usize) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.cp.client().await?);
        nodes
            .delete(&Self::node_name(i), &DeleteParams::default())
            .await?;
        Ok(())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        for c in self
            .probes
            .iter_mut()
            .chain(self.agents.iter_mut().flatten())
            .chain(self.controller.iter_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
