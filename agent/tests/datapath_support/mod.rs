//! Test scaffolding for the datapath's netns tests: an underlay bridge in its own netns,
//! "nodes" as network namespaces with a veth on it, each running a [`Datapath`] on a
//! thread that lives in the node's netns, and "pods" as namespaces on the node bridge.
//! Pods are wired with `ip` (the CNI plugin's job, not under test here).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use weft_agent::datapath::{Datapath, DatapathConfig, SyncStats};
use weft_agent::peers::Peer;
use weft_common::annotations::{Mac, Vtep};
use weft_common::netns::Netns;

pub const MTU: u32 = 1450;
pub const CLUSTER: &str = "10.244.0.0/16";
pub const CLUSTER_V6: &str = "fd00:10:244::/48";
pub const OUTSIDE_IP: &str = "192.168.77.100";

/// Runs a command, returning its output; panics when it cannot be started.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(ns: &str, args: &str) -> String {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    must(&v)
}

/// `ip netns exec <ns> <args...>`
pub fn exec(ns: &str, args: &str) -> Output {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend(args.split_whitespace());
    run(&v)
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread inside the named netns.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        Netns::open(path.as_ref()).unwrap().enter().unwrap();
        f()
    })
}

/// Runs `f` with an rtnetlink handle on a current-thread runtime of a thread in netns
/// `ns` (a test driving a [`Datapath`] of its own).
pub fn in_netns_with_netlink<F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            f(handle).await
        })
    })
}

/// Network namespaces deleted on drop.
#[derive(Default)]
pub struct NetnsGuard(pub Vec<String>);

impl NetnsGuard {
    pub fn add(&mut self, name: String) -> String {
        must(&["ip", "netns", "add", &name]);
        self.0.push(name.clone());
        ip(&name, "link set lo up");
        name
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

enum Cmd {
    Setup(Box<DatapathConfig>, mpsc::Sender<Result<Mac, String>>),
    Sync(Vec<Peer>, mpsc::Sender<Result<SyncStats, String>>),
    Drop(mpsc::Sender<()>),
}

/// A Datapath living on a thread inside a node's netns (as the agent would).
pub struct Agent {
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    pub fn start(ns: &str) -> Agent {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let path = format!("/var/run/netns/{ns}");
        let thread = std::thread::spawn(move || {
            Netns::open(path.as_ref()).unwrap().enter().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(conn);
                let mut dp: Option<Datapath> = None;
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Cmd::Setup(cfg, reply) => {
                            let r = Datapath::setup(*cfg, handle.clone())
                                .await
                                .map_err(|e| e.to_string());
                            let _ = reply.send(r.map(|d| {
                                let mac = d.vtep_mac();
                                dp = Some(d);
                                mac
                            }));
                        }
                        Cmd::Sync(peers, reply) => {
                            let d = dp.as_ref().expect("sync before setup");
                            let _ = reply.send(d.sync(&peers).await.map_err(|e| e.to_string()));
                        }
                        Cmd::Drop(reply) => {
                            dp = None;
                            let _ = reply.send(());
                        }
                    }
                }
            });
        });
        Agent {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn setup(&self, cfg: DatapathConfig) -> Result<Mac, String> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Cmd::Setup(Box::new(cfg), tx))
            .unwrap();
        rx.recv().unwrap()
    }

    pub fn sync(&self, peers: Vec<Peer>) -> Result<SyncStats, String> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Cmd::Sync(peers, tx))
            .unwrap();
        rx.recv().unwrap()
    }

    /// Forgets the Datapath, as a killed agent would; the kernel keeps everything.
    pub fn drop_datapath(&self) {
        let (tx, rx) = mpsc::channel();
        self.tx.as_ref().unwrap().send(Cmd::Drop(tx)).unwrap();
        rx.recv().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Node {
    pub index: u8,
    pub ns: String,
    pub ip: IpAddr,
    pub pod_cidr: IpNet,
    /// `fd00:10:244:<index>::/64` in a dual-stack cluster.
    pub pod_cidr_v6: Option<IpNet>,
    pub mac: Option<Mac>,
    pub agent: Agent,
    pub pods: Vec<Pod>,
    pub subnet_file: std::path::PathBuf,
}

pub struct Pod {
    pub ns: String,
    pub ip: IpAddr,
    /// In a dual-stack cluster.
    pub ip6: Option<IpAddr>,
}

impl Node {
    pub fn config(&self) -> DatapathConfig {
        let ifindex: u32 = {
            let out = ip(&self.ns, "-j link show eth0");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v[0]["ifindex"].as_u64().unwrap() as u32
        };
        DatapathConfig {
            vxlan_device: "weft.1".into(),
            vni: 1,
            port: 8472,
            underlay_ip: self.ip,
            underlay_ifindex: ifindex,
            mtu: MTU,
            mac: self.mac,
            pod_cidrs: self.pod_cidrs(),
            node_subnet_size_v4: 24,
            node_subnet_size_v6: 64,
            service_cidrs: Vec::new(),
            cluster_cidrs: if self.pod_cidr_v6.is_some() {
                vec![CLUSTER.parse().unwrap(), CLUSTER_V6.parse().unwrap()]
            } else {
                vec![CLUSTER.parse().unwrap()]
            },
            bridge: "weft0".into(),
            direct_routing: false,
            masquerade: true,
            subnet_file: self.subnet_file.clone(),
        }
    }

    pub fn pod_cidrs(&self) -> Vec<IpNet> {
        std::iter::once(self.pod_cidr)
            .chain(self.pod_cidr_v6)
            .collect()
    }

    pub fn peer(&self) -> Peer {
        Peer {
            name: format!("node-{}", self.index),
            pod_cidrs: self.pod_cidrs(),
            vtep: self.mac.map(|mac| Vtep {
                mac,
                public_ip: self.ip,
            }),
            node_ip: Some(self.ip),
            ..Default::default()
        }
    }
}

/// Underlay, nodes with datapaths set up, pods, and an outside host.
pub struct Cluster {
    pub prefix: String,
    pub underlay: String,
    pub outside: String,
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
    // Last: namespaces go after the agents' threads stopped.
    pub guard: NetnsGuard,
}

impl Cluster {
    /// `nodes` node namespaces with `pods_per_node` pods each; datapaths set up, not synced.
    pub fn new(tag: &str, nodes: u8, pods_per_node: u8) -> Cluster {
        Cluster::build(tag, nodes, pods_per_node, false)
    }

    /// As [`Cluster::new`], with an IPv6 pod CIDR on every node and IPv6 on every pod
    /// (the underlay stays IPv4-only).
    pub fn dual_stack(tag: &str, nodes: u8, pods_per_node: u8) -> Cluster {
        Cluster::build(tag, nodes, pods_per_node, true)
    }

    fn build(tag: &str, nodes: u8, pods_per_node: u8, dual: bool) -> Cluster {
        let prefix = format!("wa-{}-{tag}", std::process::id());
        let mut guard = NetnsGuard::default();
        let underlay = guard.add(format!("{prefix}-ul"));
        ip(&underlay, "link add br0 type bridge");
        ip(&underlay, "link set br0 up");
        let attach = |guard: &mut NetnsGuard, name: String, port: &str, addr: &str| {
            let ns = guard.add(name);
            ip(
                &underlay,
                &format!("link add {port} type veth peer name eth0 netns {ns}"),
            );
            ip(&underlay, &format!("link set {port} master br0 up"));
            ip(&ns, &format!("addr add {addr}/24 dev eth0"));
            ip(&ns, "link set eth0 up");
            ns
        };
        let outside = attach(&mut guard, format!("{prefix}-out"), "out", OUTSIDE_IP);
        let dir = tempfile::tempdir().unwrap();
        let mut list = Vec::new();
        for i in 1..=nodes {
            let ns = attach(
                &mut guard,
                format!("{prefix}-n{i}"),
                &format!("n{i}"),
                &format!("192.168.77.{i}"),
            );
            let node = Node {
                index: i,
                agent: Agent::start(&ns),
                ns,
                ip: format!("192.168.77.{i}").parse().unwrap(),
                pod_cidr: format!("10.244.{i}.0/24").parse().unwrap(),
                pod_cidr_v6: dual.then(|| format!("fd00:10:244:{i}::/64").parse().unwrap()),
                mac: None,
                pods: Vec::new(),
                subnet_file: dir.path().join(format!("n{i}/subnet.env")),
            };
            list.push(node);
        }
        let mut c = Cluster {
            prefix,
            underlay,
            outside,
            nodes: list,
            dir,
            guard,
        };
        for i in 0..c.nodes.len() {
            let cfg = c.nodes[i].config();
            let mac = c.nodes[i].agent.setup(cfg).expect("setup");
            c.nodes[i].mac = Some(mac);
            for j in 1..=pods_per_node {
                c.add_pod(i, j);
            }
        }
        c
    }

    /// Adds pod `j` to node `node` (index into `nodes`).
    pub fn add_pod(&mut self, node: usize, j: u8) {
        let n = &self.nodes[node];
        let ns = self.guard.add(format!("{}-n{}p{j}", self.prefix, n.index));
        let pod_ip: IpAddr = format!("10.244.{}.{}", n.index, 10 + j).parse().unwrap();
        ip(
            &n.ns,
            &format!("link add vp{j} type veth peer name eth0 netns {ns}"),
        );
        ip(&n.ns, &format!("link set vp{j} mtu {MTU} master weft0 up"));
        ip(&ns, &format!("link set eth0 mtu {MTU} up"));
        ip(&ns, &format!("addr add {pod_ip}/24 dev eth0"));
        ip(&ns, &format!("route add default via 10.244.{}.1", n.index));
        let ip6 = n.pod_cidr_v6.map(|_| {
            let a: IpAddr = format!("fd00:10:244:{}::{}", n.index, 10 + j)
                .parse()
                .unwrap();
            ip(&ns, &format!("addr add {a}/64 dev eth0 nodad"));
            ip(
                &ns,
                &format!("-6 route add default via fd00:10:244:{}::1", n.index),
            );
            a
        });
        self.nodes[node].pods.push(Pod {
            ns,
            ip: pod_ip,
            ip6,
        });
    }

    /// Every node but `node`, as peers.
    pub fn peers_of(&self, node: usize) -> Vec<Peer> {
        (0..self.nodes.len())
            .filter(|i| *i != node)
            .map(|i| self.nodes[i].peer())
            .collect()
    }

    pub fn sync_all(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            n.agent.sync(self.peers_of(i)).expect("sync");
        }
    }
}

/// Pings until one answer arrives or the deadline passes.
pub fn ping_ok(ns: &str, dst: IpAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if exec(ns, &format!("ping -c 1 -W 1 {dst}")).status.success() {
            return true;
        }
    }
    false
}

/// Listens on `port` inside `ns` and returns the peer address of the first connection
/// (a thread; join it after connecting).
pub fn accept_one(
    ns: &str,
    bind: IpAddr,
    port: u16,
) -> (std::thread::JoinHandle<SocketAddr>, mpsc::Receiver<()>) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let h = in_netns(ns, move || {
        let l = TcpListener::bind((bind, port)).unwrap();
        ready_tx.send(()).unwrap();
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match l.accept() {
                Ok((_, peer)) => return peer,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection within 10 s");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    (h, ready_rx)
}

/// Connects from `ns` to `dst:port` and returns the address the listener saw.
pub fn seen_source(from: &str, to_ns: &str, dst: IpAddr, port: u16) -> IpAddr {
    let any = if dst.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    let (listener, ready) = accept_one(to_ns, any, port);
    ready.recv().unwrap();
    let target = SocketAddr::new(dst, port);
    in_netns(from, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {target}: {e}"))
    })
    .join()
    .unwrap();
    listener.join().unwrap().ip()
}

/// Output of `ip <args>` in `ns` without the trailing whitespace.
pub fn show(ns: &str, args: &str) -> String {
    ip(ns, args).trim().to_owned()
}
