//! `weft-e2e bench agent`: the agent's datapath.
//!
//! * Convergence: in a throwaway netns, the time [`Datapath::sync`] takes to program N
//!   remote nodes from nothing (N = 100, 1000, 5000) and one changed node at 5000, against
//!   the same entries written by `ip -batch` / `bridge -batch` (the floor); and the one
//!   change again by an incremental sync (no dump), as a Node change triggers it.
//! * One-change latency, the agent's own share ([`super::agent_change`]): the reconcile
//!   loop and datapath at 5000 Nodes fed a scripted watch stream; one Node added or
//!   deleted at a time, from its watch event to the kernel's route notification.
//! * Throughput: iperf3, one TCP stream, pod to pod across two netns "nodes" through
//!   weft's datapath vs the same topology built by hand with `ip`, alternating A B A B;
//!   plus the plain underlay veth. Medians, and the median of the per-pair ratios.
//!   weft masquerades pod traffic leaving the cluster, and any nat rule turns connection
//!   tracking on for every packet of the netns. So the hand-built pair that
//!   `throughput_ratio` compares with does the same job: it loads a hand-written nftables
//!   ruleset with the same forward accepts and masquerade. A third pair, hand-built
//!   without any ruleset (no conntrack), runs in the same rotation and gives
//!   `bare_gbps` and `throughput_ratio_vs_bare`: the price of masquerade itself.
//! * RSS with 5000 nodes: a real control plane (the harness, bound to the host's address
//!   on a one-node underlay) holding 5000 kubelet-like Nodes with pod CIDRs and weft
//!   annotations; the real `weft-agent` binary runs in the node netns until its Node is
//!   ready and `weft.1` holds 5000 routes; then its VmRSS.
//!
//! Options: `--runs N` (throughput runs per variant, default 9), `--seconds S` (iperf3
//! duration, default 3), `--skip-throughput`, `--no-masquerade` (weft's pair and the
//! hand-built one both without a ruleset; no third pair),
//! `--skip-convergence`, `--skip-change-latency`, `--changes N` (single changes of each
//! kind, default 15), `--skip-rss`, `--kubeconfig PATH` (an admin kubeconfig of an API server reachable from
//! the node netns at 192.168.83.0/24, instead of starting one).

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use weft_agent::datapath::{Datapath, DatapathConfig, SyncKind};
use weft_agent::peers::Peer;
use weft_common::annotations::{Mac, Vtep};
use weft_common::netns::Netns;
use weft_e2e::fixtures::{kubelet_like_node, node_ip};
use weft_e2e::harness::{self, ControlPlane, Options};
use weft_e2e::topo::{self, Topology};

const MTU: u32 = 1450;

pub(crate) fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("run {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn ip(ns: &str, args: &str) -> Result<String> {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    sh(&v)
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Network namespaces removed on drop.
pub(super) struct Namespaces(pub(super) Vec<String>);

impl Namespaces {
    pub(super) fn add(&mut self, name: String) -> Result<String> {
        sh(&["ip", "netns", "add", &name])?;
        self.0.push(name.clone());
        ip(&name, "link set lo up")?;
        Ok(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn open_ns(name: &str) -> Result<Netns> {
    Ok(Netns::open(format!("/var/run/netns/{name}").as_ref())?)
}

/// Runs `f` with a netlink handle on a thread inside the named netns.
fn in_ns<T, F, Fut>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T>>,
{
    let netns = open_ns(ns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                netns.enter()?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let (conn, handle, _) = rtnetlink::new_connection()?;
                    let task = tokio::spawn(conn);
                    let out = f(handle).await;
                    task.abort();
                    out
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in netns {ns} panicked"))?
    })
}

fn ifindex(ns: &str, dev: &str) -> Result<u32> {
    let v: serde_json::Value = serde_json::from_str(&ip(ns, &format!("-j link show {dev}"))?)?;
    v[0]["ifindex"]
        .as_u64()
        .map(|i| i as u32)
        .context("no ifindex")
}

pub(super) fn config(
    ns: &str,
    underlay_ip: &str,
    pod_cidr: &str,
    dir: &Path,
) -> Result<DatapathConfig> {
    Ok(DatapathConfig {
        vxlan_device: "weft.1".into(),
        vni: 1,
        port: 8472,
        underlay_ip: underlay_ip.parse()?,
        underlay_ifindex: ifindex(ns, "eth0")?,
        mtu: MTU,
        mac: None,
        pod_cidrs: vec![pod_cidr.parse()?],
        node_subnet_size_v4: 24,
        node_subnet_size_v6: 64,
        service_cidrs: Vec::new(),
        cluster_cidrs: vec!["10.0.0.0/8".parse()?],
        bridge: "weft0".into(),
        direct_routing: false,
        masquerade: true,
        subnet_file: dir.join(format!("{ns}.env")),
    })
}

/// Remote node `k` (1-based): pod CIDR 10.(k/256).(k%256).0/24, underlay 172.16.x.y.
fn synthetic_peer(k: u32, mac_salt: u8) -> Peer {
    let cidr: IpNet = format!("10.{}.{}.0/24", k / 256, k % 256)
        .parse()
        .expect("valid");
    let public_ip: IpAddr = format!("172.16.{}.{}", k / 250, k % 250 + 1)
        .parse()
        .expect("valid");
    Peer {
        name: format!("node-{k}"),
        pod_cidrs: vec![cidr],
        vtep: Some(Vtep {
            mac: Mac([0x02, mac_salt, 0, (k >> 16) as u8, (k >> 8) as u8, k as u8]),
            public_ip,
        }),
        node_ip: Some(public_ip),
        ..Default::default()
    }
}

/// The `ip -batch`, `bridge -batch` and `ip -batch` (routes) files for `peers`.
fn batch_files(peers: &[Peer], dir: &Path) -> Result<[std::path::PathBuf; 3]> {
    let mut neigh = String::new();
    let mut fdb = String::new();
    let mut route = String::new();
    for p in peers {
        let cidr = p.pod_cidrs[0];
        let vtep = p.vtep.expect("synthetic peers have a VTEP");
        let gw = cidr.network();
        neigh.push_str(&format!(
            "neigh replace {gw} lladdr {} dev weft.1 nud permanent\n",
            vtep.mac
        ));
        fdb.push_str(&format!(
            "fdb replace {} dev weft.1 dst {} self permanent\n",
            vtep.mac, vtep.public_ip
        ));
        route.push_str(&format!(
            "route replace {cidr} via {gw} dev weft.1 onlink proto 87\n"
        ));
    }
    let files = [
        dir.join("neigh.batch"),
        dir.join("fdb.batch"),
        dir.join("route.batch"),
    ];
    std::fs::write(&files[0], neigh)?;
    std::fs::write(&files[1], fdb)?;
    std::fs::write(&files[2], route)?;
    Ok(files)
}

struct Convergence {
    program_ms: Vec<(u32, f64, f64)>,
    one_change_ms: f64,
    /// The same change by an incremental sync (what a Node change triggers): no dump.
    one_change_incremental_ms: f64,
}

/// Times weft's sync against the `ip -batch` floor, alternating, in one netns.
fn convergence(prefix: &str, dir: &Path) -> Result<Convergence> {
    let mut nss = Namespaces(Vec::new());
    let ns = nss.add(format!("{prefix}-conv"))?;
    ip(&ns, "link add eth0 type veth peer name eth1")?;
    ip(&ns, "addr add 172.16.255.254/12 dev eth0")?;
    ip(&ns, "link set eth0 up")?;
    ip(&ns, "link set eth1 up")?;
    let cfg = config(&ns, "172.16.255.254", "10.255.255.0/24", dir)?;
    let dir = dir.to_owned();
    let ns_name = ns.clone();
    let out = in_ns(&ns, move |handle| async move {
        let dp = Datapath::setup(cfg, handle).await?;
        let mut program = Vec::new();
        for n in [100u32, 1000, 5000] {
            let peers: Vec<Peer> = (1..=n).map(|k| synthetic_peer(k, 0)).collect();
            let files = batch_files(&peers, &dir)?;
            let (mut weft, mut floor) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                dp.sync(&[]).await?;
                let t = Instant::now();
                let s = dp.sync(&peers).await?;
                weft.push(ms(t.elapsed()));
                assert_eq!(s.added, 3 * n as usize);
                dp.sync(&[]).await?;
                let t = Instant::now();
                for (tool, file) in [("ip", &files[0]), ("bridge", &files[1]), ("ip", &files[2])] {
                    let f = file.to_str().expect("utf-8 path");
                    let st = Command::new(tool).args(["-batch", f]).status()?;
                    if !st.success() {
                        bail!("{tool} -batch {f} failed");
                    }
                }
                floor.push(ms(t.elapsed()));
                // The floor's entries are exactly weft's: a sync must find nothing to do.
                let s = dp.sync(&peers).await?;
                assert_eq!(
                    (s.added, s.updated, s.removed),
                    (0, 0, 0),
                    "floor wrote different entries"
                );
            }
            let (w, f) = (median(&mut weft), median(&mut floor));
            eprintln!("N={n:5}: weft sync {w:8.1} ms, ip -batch floor {f:8.1} ms (medians of 3, in {ns_name})");
            program.push((n, w, f));
        }
        // One node changes its VTEP MAC at N = 5000.
        let mut peers: Vec<Peer> = (1..=5000).map(|k| synthetic_peer(k, 0)).collect();
        dp.sync(&peers).await?;
        let mut one = Vec::new();
        for round in 1..=7u8 {
            peers[2500] = synthetic_peer(2501, round);
            let t = Instant::now();
            let s = dp.sync(&peers).await?;
            one.push(ms(t.elapsed()));
            assert_eq!((s.added, s.updated, s.removed), (1, 1, 1));
        }
        let one_change_ms = median(&mut one);
        eprintln!("one change at N=5000: {one_change_ms:.2} ms (median of 7)");
        let refs: Vec<&Peer> = peers.iter().collect();
        dp.sync_kind(&refs, SyncKind::Full).await?;
        let mut one = Vec::new();
        for round in 8..=14u8 {
            peers[2500] = synthetic_peer(2501, round);
            let refs: Vec<&Peer> = peers.iter().collect();
            let t = Instant::now();
            let s = dp.sync_kind(&refs, SyncKind::Incremental).await?;
            one.push(ms(t.elapsed()));
            assert!(!s.full, "an incremental sync dumped");
            assert_eq!((s.added, s.updated, s.removed), (1, 1, 1));
        }
        let one_change_incremental_ms = median(&mut one);
        eprintln!(
            "one change at N=5000, incremental: {one_change_incremental_ms:.2} ms (median of 7)"
        );
        dp.sync(&[]).await?;
        Ok(Convergence {
            program_ms: program,
            one_change_ms,
            one_change_incremental_ms,
        })
    })?;
    drop(nss);
    Ok(out)
}

/// Two node namespaces joined by a veth (the underlay), one pod each.
fn two_nodes(nss: &mut Namespaces, tag: &str) -> Result<(String, String)> {
    let a = nss.add(format!("{tag}-a"))?;
    let b = nss.add(format!("{tag}-b"))?;
    ip(
        &a,
        &format!("link add eth0 type veth peer name eth0 netns {b}"),
    )?;
    ip(&a, "addr add 192.168.90.1/24 dev eth0")?;
    ip(&b, "addr add 192.168.90.2/24 dev eth0")?;
    ip(&a, "link set eth0 up")?;
    ip(&b, "link set eth0 up")?;
    Ok((a, b))
}

fn add_pod(nss: &mut Namespaces, node: &str, n: u8) -> Result<String> {
    let pod = nss.add(format!("{node}-pod"))?;
    ip(
        node,
        &format!("link add vp type veth peer name eth0 netns {pod}"),
    )?;
    ip(node, &format!("link set vp mtu {MTU} master weft0 up"))?;
    ip(&pod, &format!("link set eth0 mtu {MTU} up"))?;
    ip(&pod, &format!("addr add 10.244.{n}.10/24 dev eth0"))?;
    ip(&pod, &format!("route add default via 10.244.{n}.1"))?;
    Ok(pod)
}

/// weft's datapath on nodes a and b (setup + sync with each other).
fn weft_pair(
    nss: &mut Namespaces,
    prefix: &str,
    dir: &Path,
    masquerade: bool,
) -> Result<(String, String)> {
    let (a, b) = two_nodes(nss, &format!("{prefix}-w"))?;
    let mut macs = Vec::new();
    for (ns, n) in [(&a, 1u8), (&b, 2u8)] {
        let mut cfg = config(
            ns,
            &format!("192.168.90.{n}"),
            &format!("10.244.{n}.0/24"),
            dir,
        )?;
        cfg.masquerade = masquerade;
        let mac = in_ns(ns, |h| async move {
            Ok(Datapath::setup(cfg, h).await?.vtep_mac())
        })?;
        macs.push(mac);
    }
    for (ns, n, other) in [(&a, 1u8, 2u8), (&b, 2, 1)] {
        let mut cfg = config(
            ns,
            &format!("192.168.90.{n}"),
            &format!("10.244.{n}.0/24"),
            dir,
        )?;
        cfg.masquerade = masquerade;
        let peer = Peer {
            name: format!("node-{other}"),
            pod_cidrs: vec![format!("10.244.{other}.0/24").parse()?],
            vtep: Some(Vtep {
                mac: macs[usize::from(other - 1)],
                public_ip: format!("192.168.90.{other}").parse()?,
            }),
            node_ip: None,
            ..Default::default()
        };
        in_ns(ns, |h| async move {
            let dp = Datapath::setup(cfg, h).await?;
            dp.sync(&[peer]).await?;
            Ok(())
        })?;
    }
    let pa = add_pod(nss, &a, 1)?;
    let pb = add_pod(nss, &b, 2)?;
    Ok((pa, pb))
}

/// What a hand-built node needs to masquerade pod traffic leaving the cluster as weft
/// does (forward accepts for the cluster CIDR, pod-to-pod never NATed), written by hand.
const HANDBUILT_RULESET: &str = "table inet hand {
  chain forward { type filter hook forward priority filter; policy accept;
    ip saddr 10.244.0.0/16 accept
    ip daddr 10.244.0.0/16 accept
  }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    meta mark & 0x4000 == 0x4000 return
    ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return
    ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
  }
}
";

/// The same topology by hand: VXLAN device, bridge, neighbour, FDB, route with `ip`;
/// with `ruleset`, [`HANDBUILT_RULESET`] loaded with `nft`. `tag` names the namespaces.
fn handbuilt_pair(
    nss: &mut Namespaces,
    prefix: &str,
    tag: &str,
    ruleset: bool,
) -> Result<(String, String)> {
    let (a, b) = two_nodes(nss, &format!("{prefix}-{tag}"))?;
    let mac = |n: u8| format!("02:00:00:00:99:0{n}");
    for (ns, n, o) in [(&a, 1u8, 2u8), (&b, 2, 1)] {
        ip(
            ns,
            &format!(
                "link add vx type vxlan id 1 dstport 8472 local 192.168.90.{n} dev eth0 nolearning"
            ),
        )?;
        ip(ns, &format!("link set vx address {} mtu {MTU} up", mac(n)))?;
        ip(ns, &format!("addr add 10.244.{n}.0/32 dev vx"))?;
        ip(ns, "link add weft0 type bridge")?;
        ip(ns, &format!("link set weft0 mtu {MTU} up"))?;
        ip(ns, &format!("addr add 10.244.{n}.1/24 dev weft0"))?;
        ip(
            ns,
            &format!(
                "neigh replace 10.244.{o}.0 lladdr {} dev vx nud permanent",
                mac(o)
            ),
        )?;
        sh(&[
            "bridge",
            "-n",
            ns,
            "fdb",
            "replace",
            &mac(o),
            "dev",
            "vx",
            "dst",
            &format!("192.168.90.{o}"),
            "self",
            "permanent",
        ])?;
        ip(
            ns,
            &format!("route replace 10.244.{o}.0/24 via 10.244.{o}.0 dev vx onlink"),
        )?;
        sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        if ruleset {
            let mut nft = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("run nft")?;
            use std::io::Write as _;
            nft.stdin
                .take()
                .context("nft stdin")?
                .write_all(HANDBUILT_RULESET.as_bytes())?;
            if !nft.wait()?.success() {
                bail!("nft -f of the hand-built ruleset failed in {ns}");
            }
        }
    }
    let pa = add_pod(nss, &a, 1)?;
    let pb = add_pod(nss, &b, 2)?;
    Ok((pa, pb))
}

/// One iperf3 run from `client_ns` to `server_ip` (server in `server_ns`); Gbit/s.
pub(crate) fn iperf(
    client_ns: &str,
    server_ns: &str,
    server_ip: &str,
    seconds: u32,
) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Command::new("ip")
        .args([
            "netns", "exec", client_ns, "ping", "-c", "1", "-W", "1", server_ip,
        ])
        .output()?
        .status
        .success()
    {
        if Instant::now() > deadline {
            bail!("{client_ns} cannot ping {server_ip}");
        }
    }
    let mut server = Command::new("ip")
        .args([
            "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server_ip,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    // Poll until the server listens, then run the client once.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ss = Command::new("ip")
            .args(["netns", "exec", server_ns, "ss", "-Hltn", "sport = :5201"])
            .output()?;
        if !ss.stdout.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("iperf3 server in {server_ns} did not listen within 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            client_ns,
            "iperf3",
            "-c",
            server_ip,
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .output()?;
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("iperf3 {client_ns} -> {server_ip} failed: {}", v["error"]))
}

struct Throughput {
    weft: f64,
    handbuilt: f64,
    /// Hand-built without any ruleset (only measured with masquerade on).
    bare: Option<f64>,
    /// Median of the per-pair ratios weft/hand-built: each pair ran back to back, so
    /// the other load on the machine cancels out better than in the ratio of medians.
    paired_ratio: f64,
    underlay: f64,
}

fn throughput(
    prefix: &str,
    dir: &Path,
    runs: usize,
    seconds: u32,
    masquerade: bool,
) -> Result<Throughput> {
    let mut nss = Namespaces(Vec::new());
    let (wa, wb) = weft_pair(&mut nss, prefix, dir, masquerade)?;
    let (ha, hb) = handbuilt_pair(&mut nss, prefix, "h", masquerade)?;
    let bare_pair = if masquerade {
        Some(handbuilt_pair(&mut nss, prefix, "x", false)?)
    } else {
        None
    };
    let (mut w, mut h, mut u, mut x) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut pairs = vec![(wa.as_str(), wb.as_str()), (ha.as_str(), hb.as_str())];
    if let Some((xa, xb)) = &bare_pair {
        pairs.push((xa.as_str(), xb.as_str()));
    }
    for i in 0..runs {
        // Each run starts with the next variant, so none always goes first.
        let mut got = vec![0.0; pairs.len()];
        for k in 0..pairs.len() {
            let v = (i + k) % pairs.len();
            got[v] = iperf(pairs[v].0, pairs[v].1, "10.244.2.10", seconds)?;
        }
        w.push(got[0]);
        h.push(got[1]);
        if let Some(b) = got.get(2) {
            x.push(*b);
        }
        eprintln!(
            "run {}: weft {:.2} Gbit/s, hand-built {:.2} Gbit/s{}",
            i + 1,
            w[i],
            h[i],
            x.get(i)
                .map(|b| format!(", hand-built without ruleset {b:.2} Gbit/s"))
                .unwrap_or_default()
        );
    }
    let (ua, ub) = (format!("{prefix}-w-a"), format!("{prefix}-w-b"));
    for _ in 0..runs.min(3) {
        u.push(iperf(&ua, &ub, "192.168.90.2", seconds)?);
    }
    let mut pairs: Vec<f64> = w.iter().zip(&h).map(|(w, h)| w / h).collect();
    Ok(Throughput {
        paired_ratio: median(&mut pairs),
        weft: median(&mut w),
        handbuilt: median(&mut h),
        bare: (!x.is_empty()).then(|| median(&mut x)),
        underlay: median(&mut u),
    })
}

/// Remote nodes in the RSS measurement.
const RSS_NODES: u32 = 5000;
/// Their pod CIDRs: /24s of this /10 (the fixtures' node IPs are in 10.0.0.0/8).
pub(crate) const RSS_CLUSTER_CIDR: &str = "100.64.0.0/10";

/// Node `k`'s pod CIDR: the k-th /24 of [`RSS_CLUSTER_CIDR`] (k = 0: the agent's node).
pub(crate) fn rss_pod_cidr(k: u32) -> String {
    let a = std::net::Ipv4Addr::from(0x6440_0000u32 + (k << 8));
    format!("{a}/24")
}

/// A kubelet-like Node with a pod CIDR; with `vtep`, weft's annotations as another agent
/// would have published them.
pub(crate) fn rss_node(name: &str, internal_ip: std::net::Ipv4Addr, k: u32, vtep: bool) -> Node {
    node_with_cidrs(name, internal_ip, &[rss_pod_cidr(k)], vtep.then_some(k))
}

/// A kubelet-like Node with `pod_cidrs`; with `vtep = Some(k)`, weft's annotations as
/// another agent would have published them (MAC numbered `k`).
pub(crate) fn node_with_cidrs(
    name: &str,
    internal_ip: std::net::Ipv4Addr,
    pod_cidrs: &[String],
    vtep: Option<u32>,
) -> Node {
    let mut node = kubelet_like_node(name, internal_ip);
    let spec = node.spec.get_or_insert_with(Default::default);
    spec.pod_cidr = pod_cidrs.first().cloned();
    spec.pod_cidrs = Some(pod_cidrs.to_vec());
    if let Some(k) = vtep {
        let mac = Mac([0x02, 0x57, 0, (k >> 16) as u8, (k >> 8) as u8, k as u8]);
        let ann = node
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        use weft_common::annotations as a;
        ann.insert(a::VTEP_MAC.into(), mac.to_string());
        ann.insert(a::PUBLIC_IP.into(), internal_ip.to_string());
        ann.insert(a::VNI.into(), "1".into());
    }
    node
}

/// Kills the agent (SIGKILL: the datapath dies with its netns) on drop.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn vm_status(pid: u32, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

/// The agent's resident memory (MB) once it programmed 5000 remote nodes.
async fn rss_5000(kubeconfig: Option<String>) -> Result<f64> {
    let topo = Topology::new("we", 83, 1)?;
    let node_ns = topo.nodes[0].netns.clone();
    let (_cp, kubeconfig) = match kubeconfig {
        Some(k) => (None, std::path::PathBuf::from(k)),
        None => {
            let cp = ControlPlane::start_with(Options {
                bind: IpAddr::V4(topo.host_ip),
                ..Default::default()
            })
            .await?;
            let k = cp.kubeconfig.clone();
            (Some(cp), k)
        }
    };
    let nodes: Api<Node> = Api::all(harness::client_from(&kubeconfig).await?);
    let started = Instant::now();
    let agent_node = "bench-agent";
    nodes
        .create(
            &PostParams::default(),
            &rss_node(agent_node, topo.nodes[0].ip, 0, false),
        )
        .await
        .context("create the agent's Node")?;
    futures::stream::iter(1..=RSS_NODES)
        .map(|k| {
            let nodes = nodes.clone();
            async move {
                let name = format!("bench-node-{k:05}");
                nodes
                    .create(
                        &PostParams::default(),
                        &rss_node(&name, node_ip(k), k, true),
                    )
                    .await
                    .with_context(|| format!("create {name}"))
            }
        })
        .buffer_unordered(32)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    eprintln!(
        "rss: {} Nodes created in {:.1} s",
        RSS_NODES + 1,
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let netconf = dir.path().join("net-conf.json");
    std::fs::write(
        &netconf,
        serde_json::json!({"clusterCIDRs": [RSS_CLUSTER_CIDR], "nodeSubnetSizeV4": 24}).to_string(),
    )?;
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let child = topo::in_netns(&node_ns, topo::workspace_bin("weft-agent")?)
        .arg(format!("--node-name={agent_node}"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--config={}", netconf.display()))
        .arg(format!(
            "--subnet-file={}",
            dir.path().join("subnet.env").display()
        ))
        .arg("--metrics-addr=127.0.0.1:9943")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawn weft-agent")?;
    // `ip netns exec` execs the agent: the child's pid is the agent's.
    let mut agent = KillOnDrop(child);
    let pid = agent.0.id();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(st) = agent.0.try_wait()? {
            bail!(
                "weft-agent exited with {st}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        let ready = nodes
            .get_status(agent_node)
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "NetworkUnavailable" && c.status == "False");
        let routes = if ready {
            ip(&node_ns, "route show dev weft.1")
                .map(|o| o.lines().count())
                .unwrap_or(0)
        } else {
            0
        };
        if ready && routes == RSS_NODES as usize {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "agent not ready with {RSS_NODES} routes (ready {ready}, {routes} routes): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss = vm_status(pid, "VmRSS:")?;
    eprintln!(
        "rss: agent ready with {RSS_NODES} peers in {:.1} s: VmRSS {rss:.1} MB, VmHWM {:.1} MB, threads {}",
        started.elapsed().as_secs_f64(),
        vm_status(pid, "VmHWM:")?,
        std::fs::read_to_string(format!("/proc/{pid}/status"))?
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap_or("?")
            .trim()
    );
    drop(agent);
    Ok(rss)
}

pub fn run(args: &[String]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench agent needs root (network namespaces)");
    }
    let mut runs = 9usize;
    let mut seconds = 3u32;
    let mut skip_throughput = false;
    let mut masquerade = true;
    let mut kubeconfig = None;
    let mut skip_rss = false;
    let mut skip_convergence = false;
    let mut skip_change_latency = false;
    let mut changes = 15u32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--seconds" => seconds = it.next().context("--seconds S")?.parse()?,
            "--skip-throughput" => skip_throughput = true,
            "--no-masquerade" => masquerade = false,
            "--skip-rss" => skip_rss = true,
            "--skip-convergence" => skip_convergence = true,
            "--skip-change-latency" => skip_change_latency = true,
            "--changes" => changes = it.next().context("--changes N")?.parse()?,
            "--kubeconfig" => kubeconfig = Some(it.next().context("--kubeconfig PATH")?.clone()),
            other => bail!("unknown option {other}"),
        }
    }
    let prefix = format!("we-{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let conv = if skip_convergence {
        Convergence {
            program_ms: Vec::new(),
            one_change_ms: f64::NAN,
            one_change_incremental_ms: f64::NAN,
        }
    } else {
        convergence(&prefix, dir.path())?
    };
    let change = if skip_change_latency {
        None
    } else {
        Some(super::agent_change::change_latency(
            &prefix,
            dir.path(),
            changes,
        )?)
    };
    let tp = if skip_throughput {
        None
    } else {
        Some(throughput(&prefix, dir.path(), runs, seconds, masquerade)?)
    };
    let rss = if skip_rss {
        None
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Some(rt.block_on(rss_5000(kubeconfig))?)
    };
    let fig = |n: u32| {
        conv.program_ms
            .iter()
            .find(|p| p.0 == n)
            .copied()
            .unwrap_or((n, f64::NAN, f64::NAN))
    };
    let (_, w100, f100) = fig(100);
    let (_, w1000, f1000) = fig(1000);
    let (_, w5000, f5000) = fig(5000);
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let json = serde_json::json!({
        "bench": "agent",
        "n100_program_ms": r2(w100), "n100_floor_ms": r2(f100),
        "n1000_program_ms": r2(w1000), "n1000_floor_ms": r2(f1000),
        "n5000_program_ms": r2(w5000), "n5000_floor_ms": r2(f5000),
        "n5000_vs_floor": r2(w5000 / f5000),
        "one_change_ms": r2(conv.one_change_ms),
        "one_change_incremental_ms": r2(conv.one_change_incremental_ms),
        "one_change_agent_add_ms": change.map(|c| r2(c.add_ms)),
        "one_change_agent_del_ms": change.map(|c| r2(c.del_ms)),
        "rss_mb_5000": rss.map(r2),
        "throughput_gbps": tp.as_ref().map(|t| r2(t.weft)),
        "handbuilt_gbps": tp.as_ref().map(|t| r2(t.handbuilt)),
        "throughput_ratio": tp.as_ref().map(|t| r2(t.weft / t.handbuilt)),
        "throughput_ratio_paired": tp.as_ref().map(|t| r2(t.paired_ratio)),
        "bare_gbps": tp.as_ref().and_then(|t| t.bare).map(r2),
        "throughput_ratio_vs_bare": tp.as_ref().and_then(|t| t.bare.map(|b| r2(t.weft / b))),
        "underlay_gbps": tp.as_ref().map(|t| r2(t.underlay)),
        "masquerade": masquerade,
    });
    println!("{json}");
    Ok(())
}
