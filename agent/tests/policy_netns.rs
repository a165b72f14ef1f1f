//! NetworkPolicy in the real kernel: policies compiled and rendered by
//! `weft_agent::policy`, loaded with `nft -f` into a "node" network namespace, checked by
//! real TCP and UDP connections over IPv4 and IPv6.
//!
//! The node has the bridge `weft0` with two pods on it (bridged traffic, br_netfilter
//! on) and a third pod behind a routed link, standing for a pod on another node (as
//! after VXLAN decapsulation). Each pod serves TCP 80 and 81 and UDP 53, answering every
//! request, so an allowed probe also proves that its replies pass. After the full load,
//! two incremental updates (a pod relabelled out of a policy; a namespace relabelled out
//! of a peer) are applied as the enforcer applies a `diff` (element batches over
//! nfnetlink, chain changes with `nft`), and each is checked against the table a full
//! load of the same state gives.

mod datapath_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use datapath_support::{in_netns, ip, must, NetnsGuard};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};
use weft_agent::policy::diff::{diff, Update};
use weft_agent::policy::nfnl::{self, Op, SetChange};
use weft_agent::policy::render::{Set, SetKind};
use weft_agent::policy::{compile, NamedPort, NamespaceInfo, PodInfo, Protocol, Ruleset};

const NODE: &str = "n1";
/// How long a probe waits for its answer; denied probes take this long.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum L4 {
    Tcp,
    Udp,
}

const SERVICES: [(L4, u16); 3] = [(L4::Tcp, 80), (L4::Tcp, 81), (L4::Udp, 53)];

/// A pod (or the node) as a probe sees it.
#[derive(Clone, Debug)]
struct Endpoint {
    name: &'static str,
    netns: String,
    v4: IpAddr,
    v6: IpAddr,
}

struct Topology {
    _guard: NetnsGuard,
    node: Endpoint,
    pa: Endpoint,
    pb: Endpoint,
    rc: Endpoint,
    /// A spare namespace where full loads are compared with incremental ones.
    scratch: String,
}

fn sysctl(ns: &str, settings: &[&str]) {
    let mut args = vec!["ip", "netns", "exec", ns, "sysctl", "-qw"];
    args.extend(settings);
    must(&args);
}

fn endpoint(name: &'static str, netns: &str, v4: &str, v6: &str) -> Endpoint {
    Endpoint {
        name,
        netns: netns.into(),
        v4: v4.parse().unwrap(),
        v6: v6.parse().unwrap(),
    }
}

impl Topology {
    fn new() -> Topology {
        let id = std::process::id();
        let mut guard = NetnsGuard::default();
        let node = guard.add(format!("wp-node-{id}"));
        let pa = guard.add(format!("wp-pa-{id}"));
        let pb = guard.add(format!("wp-pb-{id}"));
        let rc = guard.add(format!("wp-rc-{id}"));
        let scratch = guard.add(format!("wp-chk-{id}"));
        sysctl(
            &node,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.bridge.bridge-nf-call-iptables=1",
                "net.bridge.bridge-nf-call-ip6tables=1",
            ],
        );
        ip(&node, "link add weft0 type bridge");
        ip(&node, "addr add 10.244.1.1/24 dev weft0");
        ip(&node, "addr add fd00:10:244:1::1/64 dev weft0 nodad");
        ip(&node, "link set weft0 up");
        for (pod, last) in [(&pa, 2), (&pb, 3)] {
            let host = format!("v{last}");
            ip(
                &node,
                &format!("link add {host} type veth peer name eth0 netns {pod}"),
            );
            ip(&node, &format!("link set {host} master weft0 up"));
            ip(pod, &format!("addr add 10.244.1.{last}/24 dev eth0"));
            ip(
                pod,
                &format!("addr add fd00:10:244:1::{last}/64 dev eth0 nodad"),
            );
            ip(pod, "link set eth0 up");
            ip(pod, "route add default via 10.244.1.1");
            ip(pod, "-6 route add default via fd00:10:244:1::1");
        }
        // The "remote" pod: routed through a transit link, its pod addresses on top.
        ip(
            &node,
            &format!("link add vr type veth peer name eth0 netns {rc}"),
        );
        ip(&node, "addr add 192.168.99.1/24 dev vr");
        ip(&node, "addr add fd99::1/64 dev vr nodad");
        ip(&node, "link set vr up");
        ip(&rc, "addr add 192.168.99.2/24 dev eth0");
        ip(&rc, "addr add fd99::2/64 dev eth0 nodad");
        ip(&rc, "addr add 10.244.2.10/32 dev eth0");
        ip(&rc, "addr add fd00:10:244:2::10/128 dev eth0 nodad");
        ip(&rc, "link set eth0 up");
        ip(&rc, "route add default via 192.168.99.1 src 10.244.2.10");
        ip(
            &rc,
            "-6 route add default via fd99::1 src fd00:10:244:2::10",
        );
        ip(&node, "route add 10.244.2.0/24 via 192.168.99.2");
        ip(&node, "-6 route add fd00:10:244:2::/64 via fd99::2");
        let t = Topology {
            node: endpoint("node", &node, "10.244.1.1", "fd00:10:244:1::1"),
            pa: endpoint("pa", &pa, "10.244.1.2", "fd00:10:244:1::2"),
            pb: endpoint("pb", &pb, "10.244.1.3", "fd00:10:244:1::3"),
            rc: endpoint("rc", &rc, "10.244.2.10", "fd00:10:244:2::10"),
            scratch,
            _guard: guard,
        };
        for pod in [&t.pa, &t.pb, &t.rc] {
            serve(&pod.netns);
        }
        t
    }
}

/// Answers every TCP connection on 80 and 81 and every UDP datagram on 53, both families,
/// for as long as the test process lives.
fn serve(netns: &str) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    in_netns(netns, move || {
        for port in [80, 81] {
            let l = TcpListener::bind(("::", port)).unwrap();
            std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    std::thread::spawn(move || {
                        let mut conn = conn;
                        conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                        let mut b = [0u8; 1];
                        if conn.read_exact(&mut b).is_ok() {
                            let _ = conn.write_all(b"y");
                        }
                    });
                }
            });
        }
        let u = UdpSocket::bind(("::", 53)).unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 16];
            while let Ok((_, from)) = u.recv_from(&mut b) {
                let _ = u.send_to(b"y", from);
            }
        });
        ready_tx.send(()).unwrap();
    });
    ready_rx.recv().unwrap();
}

/// One request from `netns` to `to`; true when the answer came back.
fn probe(netns: &str, to: SocketAddr, l4: L4) -> bool {
    in_netns(netns, move || match l4 {
        L4::Tcp => {
            let Ok(mut s) = TcpStream::connect_timeout(&to, PROBE_TIMEOUT) else {
                return false;
            };
            s.set_read_timeout(Some(PROBE_TIMEOUT)).unwrap();
            let mut b = [0u8; 1];
            s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok()
        }
        L4::Udp => {
            let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = UdpSocket::bind(any).unwrap();
            s.set_read_timeout(Some(PROBE_TIMEOUT)).unwrap();
            let mut b = [0u8; 16];
            s.send_to(b"x", to).is_ok() && s.recv_from(&mut b).is_ok()
        }
    })
    .join()
    .unwrap()
}

type Expect<'a> = &'a dyn Fn(&str, &str, L4, u16) -> bool;

/// Probes every client -> server pair on every service and family at once; panics with
/// the whole list of differences. An allowed probe that failed is tried twice more
/// (a first packet can wait for neighbour discovery); a denied one that passed is not.
fn check_matrix(t: &Topology, step: &str, expect: Expect<'_>) {
    let clients = [&t.pa, &t.pb, &t.rc, &t.node];
    let servers = [&t.pa, &t.pb, &t.rc];
    let mut probes = Vec::new();
    for c in clients {
        for s in servers {
            if c.name == s.name {
                continue;
            }
            for (l4, port) in SERVICES {
                for dst in [s.v4, s.v6] {
                    let want = expect(c.name, s.name, l4, port);
                    let netns = c.netns.clone();
                    let to = SocketAddr::new(dst, port);
                    let label = format!("{} -> {} {l4:?}/{port} {dst}", c.name, s.name);
                    let h = std::thread::spawn(move || {
                        let mut got = probe(&netns, to, l4);
                        for _ in 0..2 {
                            if got || !want {
                                break;
                            }
                            got = probe(&netns, to, l4);
                        }
                        got
                    });
                    probes.push((label, want, h));
                }
            }
        }
    }
    let wrong: Vec<String> = probes
        .into_iter()
        .filter_map(|(label, want, h)| {
            let got = h.join().unwrap();
            (got != want).then(|| format!("{label}: want {want}, got {got}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{step}:\n{}", wrong.join("\n"));
}

fn nft_load(netns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nfnl_apply(netns: &str, changes: Vec<SetChange>) {
    in_netns(netns, move || nfnl::apply(&changes))
        .join()
        .unwrap()
        .expect("nfnetlink element batch");
}

/// Applies the update from `applied` to `desired` the way the enforcer does (element
/// batches over nfnetlink, chain changes with `nft`); returns it.
fn apply_diff(netns: &str, applied: &Ruleset, desired: &Ruleset) -> Update {
    let update = diff(applied, desired);
    match update.clone() {
        Update::Elements(changes) => nfnl_apply(netns, changes),
        Update::Structural(up) => {
            nfnl_apply(netns, up.narrow);
            nft_load(netns, &up.script);
            nfnl_apply(netns, up.widen);
        }
        other => panic!("not an incremental update: {other:?}"),
    }
    update
}

/// The table as the kernel holds it, without handles and counter values: sets by name
/// with their elements (order-free), chains by name with their rules.
fn table_state(
    netns: &str,
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, Vec<String>>,
) {
    let out = must(&[
        "ip",
        "netns",
        "exec",
        netns,
        "nft",
        "-j",
        "list",
        "table",
        "inet",
        "weft-policy",
    ]);
    let doc: Value = serde_json::from_str(&out).unwrap();
    let mut sets = BTreeMap::new();
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in doc["nftables"].as_array().unwrap() {
        if let Some(set) = item.get("set") {
            let elements = set["elem"]
                .as_array()
                .map(|e| e.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            let mut head = set.clone();
            head.as_object_mut().unwrap().remove("elem");
            head.as_object_mut().unwrap().remove("handle");
            sets.insert(head.to_string(), elements);
        } else if let Some(chain) = item.get("chain") {
            chains.entry(chain["name"].to_string()).or_default();
        } else if let Some(rule) = item.get("rule") {
            let name = rule["chain"].to_string();
            chains
                .entry(name)
                .or_default()
                .push(rule["expr"].to_string());
        }
    }
    (sets, chains)
}

/// What a full load of `desired` gives must be what the incremental path gave.
fn assert_same_as_full_load(t: &Topology, desired: &Ruleset) {
    nft_load(&t.scratch, &desired.script());
    assert_eq!(table_state(&t.node.netns), table_state(&t.scratch));
}

fn counter(netns: &str, name: &str) -> u64 {
    let out = must(&[
        "ip",
        "netns",
        "exec",
        netns,
        "nft",
        "-j",
        "list",
        "counter",
        "inet",
        "weft-policy",
        name,
    ]);
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["counter"]["packets"].as_u64())
        .unwrap()
}

fn pod(ns: &str, name: &str, node: &str, app: &str, e: &Endpoint) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ips: vec![e.v4, e.v6],
        node: node.into(),
        host_network: false,
        named_ports: Vec::new(),
    }
}

fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// * alpha/a: pa takes TCP "web" (its port 80) and UDP 53 from namespaces labelled
///   team=beta only, and sends nothing (replies aside).
/// * beta/b: pb sends TCP 80-81 and UDP 53 to the pod network except the remote
///   node's subnet, both families.
fn policies() -> Vec<NetworkPolicy> {
    vec![
        policy(
            "alpha",
            "a",
            json!({
                "podSelector": {"matchLabels": {"app": "a"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"team": "beta"}}}],
                    "ports": [{"port": "web"}, {"protocol": "UDP", "port": 53}],
                }],
            }),
        ),
        policy(
            "beta",
            "b",
            json!({
                "podSelector": {"matchLabels": {"app": "b"}},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [
                        {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}},
                        {"ipBlock": {"cidr": "fd00:10:244::/48", "except": ["fd00:10:244:2::/64"]}},
                    ],
                    "ports": [{"port": 80, "endPort": 81}, {"protocol": "UDP", "port": 53}],
                }],
            }),
        ),
    ]
}

#[test]
fn policy_matrix_holds_in_the_kernel_and_incremental_updates_take_effect() {
    if !weft_common::require_root(
        "policy_matrix_holds_in_the_kernel_and_incremental_updates_take_effect",
    ) {
        return;
    }
    let t = Topology::new();
    check_matrix(&t, "no policy", &|_, _, _, _| true);

    let mut pa = pod("alpha", "pa", NODE, "a", &t.pa);
    pa.named_ports = vec![NamedPort {
        name: "web".into(),
        protocol: Protocol::Tcp,
        port: 80,
    }];
    let mut pods = vec![
        pa,
        pod("beta", "pb", NODE, "b", &t.pb),
        pod("remote", "rc", "n2", "r", &t.rc),
    ];
    let ns = |name: &str, labels: &[(&str, &str)]| NamespaceInfo {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let mut namespaces = vec![
        ns("alpha", &[]),
        ns("beta", &[("team", "beta")]),
        ns("remote", &[]),
    ];
    let policies = policies();
    let build = |pods: &[PodInfo], namespaces: &[NamespaceInfo]| {
        let model = compile(&policies, pods, namespaces, NODE);
        assert!(model.problems.is_empty(), "{:?}", model.problems);
        Ruleset::build(&model)
    };

    // Loaded over an existing table, the full script replaces it.
    nft_load(&t.node.netns, &Ruleset::default().script());
    let r1 = build(&pods, &namespaces);
    nft_load(&t.node.netns, &r1.script());
    // The node's own connections (kubelet probes) take the output path and never meet
    // these chains: the node reaches pa even on 81, which no pod may use.
    let first = |c: &str, s: &str, l4: L4, port: u16| match (c, s) {
        ("node", _) => true,
        ("pb", "pa") => l4 == L4::Udp || port == 80,
        ("pa", _) => false,
        ("pb", "rc") => false,
        (_, "pa") => false,
        _ => true,
    };
    check_matrix(&t, "policies a and b", &first);
    let (in_drops, eg_drops) = (
        counter(&t.node.netns, "ingress_dropped"),
        counter(&t.node.netns, "egress_dropped"),
    );
    assert!(
        in_drops > 0 && eg_drops > 0,
        "drops {in_drops} in, {eg_drops} out"
    );

    // pb relabelled out of policy b: b selects no pod here any more, pb sends freely.
    pods[1].labels.insert("app".into(), "c".into());
    let r2 = build(&pods, &namespaces);
    let Update::Structural(up) = apply_diff(&t.node.netns, &r1, &r2) else {
        panic!("policy b leaving the node is a chain change");
    };
    assert!(
        up.script
            .contains("delete chain inet weft-policy eg.beta.b"),
        "{up:?}"
    );
    assert_same_as_full_load(&t, &r2);
    let second = |c: &str, s: &str, l4: L4, port: u16| match (c, s) {
        ("pb", "rc") => true,
        _ => first(c, s, l4, port),
    };
    check_matrix(&t, "pb relabelled out of b", &second);

    // beta loses team=beta: pb is no longer a peer of a; element changes only.
    namespaces[1].labels.clear();
    let r3 = build(&pods, &namespaces);
    let update = apply_diff(&t.node.netns, &r2, &r3);
    assert!(
        matches!(update, Update::Elements(_)),
        "only element changes: {update:?}"
    );
    assert_same_as_full_load(&t, &r3);
    let third = |c: &str, s: &str, l4: L4, port: u16| match (c, s) {
        ("pb", "pa") => false,
        _ => second(c, s, l4, port),
    };
    check_matrix(&t, "namespace beta relabelled", &third);
}

/// What the renderer writes at the edges, loaded into a real kernel: whole address
/// families with exceptions at their ends, SCTP and protocol-only ports, named ports of
/// both families, a hashed policy id, sets of more than one command's worth of
/// elements; then half the peers gone, as one diff, equal to a full load.
#[test]
fn policy_edge_cases_load_and_diff() {
    if !weft_common::require_root("policy_edge_cases_load_and_diff") {
        return;
    }
    let id = std::process::id();
    let mut guard = NetnsGuard::default();
    let node = guard.add(format!("wp-edge-{id}"));
    let scratch = guard.add(format!("wp-edge-chk-{id}"));
    let web = NamedPort {
        name: "web".into(),
        protocol: Protocol::Tcp,
        port: 8080,
    };
    let mut pods: Vec<PodInfo> = (0..1200u32)
        .map(|i| {
            let v4 = format!("10.245.{}.{}", i / 250, i % 250 + 1);
            let v6 = format!("fd00:10:245::{:x}", i + 1);
            let mut p = PodInfo {
                namespace: "default".into(),
                name: format!("p{i}"),
                labels: [("app".to_string(), "peer".to_string())].into(),
                ips: vec![v4.parse().unwrap(), v6.parse().unwrap()],
                node: "n2".into(),
                host_network: false,
                named_ports: vec![web.clone()],
            };
            if i % 2 == 0 {
                p.named_ports.clear();
            }
            p
        })
        .collect();
    let mut local = PodInfo {
        namespace: "default".into(),
        name: "local".into(),
        labels: [("app".to_string(), "local".to_string())].into(),
        ips: vec![
            "10.244.1.2".parse().unwrap(),
            "fd00:10:244:1::2".parse().unwrap(),
        ],
        node: NODE.into(),
        host_network: false,
        named_ports: vec![web],
    };
    local.labels.insert("tier".into(), "x".into());
    pods.push(local);
    let policies = vec![
        policy(
            "default",
            "edges",
            json!({
                "podSelector": {"matchLabels": {"app": "local"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["0.0.0.0/8", "255.255.255.255/32"]}},
                            {"ipBlock": {"cidr": "::/0", "except": ["::/8", "ffff::/16"]}},
                        ],
                        "ports": [
                            {"protocol": "SCTP", "port": 5000, "endPort": 5010},
                            {"protocol": "UDP"},
                            {"port": "web"},
                        ],
                    },
                    {"from": [{"podSelector": {"matchLabels": {"app": "peer"}}}]},
                ],
                "egress": [
                    {"to": [{"podSelector": {}}], "ports": [{"port": "web"}, {"protocol": "SCTP"}]},
                    {},
                ],
            }),
        ),
        policy(
            "default",
            &"long-name-".repeat(25),
            json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, "ingress": [{"ports": [{"port": 1, "endPort": 65535}]}]}),
        ),
    ];
    let build = |pods: &[PodInfo]| {
        let model = compile(&policies, pods, &[], NODE);
        assert!(model.problems.is_empty(), "{:?}", model.problems);
        Ruleset::build(&model)
    };
    let full = build(&pods);
    assert!(
        full.chains.keys().any(|c| c.starts_with("in.h")),
        "a hashed id"
    );
    let peers = &full.sets["in.default.edges.1.peers4"].elements;
    assert!(peers.len() > 1000, "{} peers", peers.len());
    nft_load(&node, &full.script());
    pods.retain(|p| !p.name.ends_with('3'));
    let fewer = build(&pods);
    let update = apply_diff(&node, &full, &fewer);
    assert!(
        matches!(update, Update::Elements(_)),
        "only element changes: {update:?}"
    );
    nft_load(&scratch, &fewer.script());
    assert_eq!(table_state(&node), table_state(&scratch));
    // And back: the same elements added over nfnetlink, read back by nft as its own.
    let update = apply_diff(&node, &fewer, &full);
    let Update::Elements(changes) = &update else {
        panic!("only element changes: {update:?}");
    };
    let kinds: BTreeSet<String> = changes.iter().map(|c| format!("{:?}", c.kind)).collect();
    assert!(
        kinds.len() >= 3,
        "interval, plain and named sets: {kinds:?}"
    );
    nft_load(&scratch, &full.script());
    assert_eq!(table_state(&node), table_state(&scratch));
}

/// Every kind of set the renderer declares, changed by element batches over nfnetlink:
/// the kernel must then hold what a full `nft` load of the new state gives, so `nft`
/// reads (and later deletes) what the batches wrote. Ranges to the ends of both address
/// spaces, protocol-wide port ranges and single ports, named ports of both families.
#[test]
fn element_batches_of_every_set_kind_read_back_as_nft_writes_them() {
    if !weft_common::require_root("element_batches_of_every_set_kind_read_back_as_nft_writes_them")
    {
        return;
    }
    let id = std::process::id();
    let mut guard = NetnsGuard::default();
    let node = guard.add(format!("wp-kinds-{id}"));
    let scratch = guard.add(format!("wp-kinds-chk-{id}"));
    let ruleset = |sets: &[(&str, SetKind, &[&str])]| {
        let mut rs = Ruleset::default();
        for (name, kind, elements) in sets {
            let elements = elements.iter().map(|e| e.to_string()).collect();
            rs.sets.insert(
                name.to_string(),
                Set {
                    kind: *kind,
                    elements,
                },
            );
        }
        rs
    };
    let addr = |v6, interval| SetKind::Addr { v6, interval };
    let before = ruleset(&[
        ("a4", addr(false, false), &["10.0.0.1", "10.0.0.2"]),
        ("a6", addr(true, false), &["fd00::1"]),
        (
            "r4",
            addr(false, true),
            &[
                "0.0.0.0-9.255.255.255",
                "10.0.0.7",
                "11.0.0.0-255.255.255.254",
            ],
        ),
        (
            "r6",
            addr(true, true),
            &[
                "::-fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "fe00::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ],
        ),
        (
            "ports",
            SetKind::Ports,
            &["tcp . 80", "udp . 0-65535", "sctp . 5000-5010"],
        ),
        (
            "n4",
            SetKind::Named { v6: false },
            &["10.0.0.1 . tcp . 8080"],
        ),
        ("n6", SetKind::Named { v6: true }, &["fd00::1 . udp . 53"]),
    ]);
    let after = ruleset(&[
        ("a4", addr(false, false), &["10.0.0.2", "10.0.0.3"]),
        ("a6", addr(true, false), &["fd00::2"]),
        (
            "r4",
            addr(false, true),
            &[
                "0.0.0.0",
                "10.0.0.7-10.0.0.9",
                "10.0.0.10",
                "255.255.255.255",
            ],
        ),
        (
            "r6",
            addr(true, true),
            &["::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
        ),
        (
            "ports",
            SetKind::Ports,
            &["tcp . 80-81", "udp . 53", "sctp . 0-65535"],
        ),
        (
            "n4",
            SetKind::Named { v6: false },
            &["10.0.0.1 . tcp . 8081", "10.0.0.2 . sctp . 1"],
        ),
        ("n6", SetKind::Named { v6: true }, &[]),
    ]);
    nft_load(&node, &before.script());
    for (from, to) in [(&before, &after), (&after, &before)] {
        let update = apply_diff(&node, from, to);
        assert!(matches!(update, Update::Elements(_)), "{update:?}");
        nft_load(&scratch, &to.script());
        assert_eq!(table_state(&node), table_state(&scratch));
    }
    // A deletion the kernel does not hold fails the whole batch, changing nothing.
    let gone = vec![
        SetChange {
            op: Op::Add,
            set: "a4".into(),
            kind: addr(false, false),
            elements: vec!["10.9.9.9".into()],
        },
        SetChange {
            op: Op::Delete,
            set: "a4".into(),
            kind: addr(false, false),
            elements: vec!["10.0.0.99".into()],
        },
    ];
    let err = in_netns(&node, move || nfnl::apply(&gone)).join().unwrap();
    assert!(err.is_err(), "deleting a missing element must fail");
    assert_eq!(table_state(&node), table_state(&scratch));
}
