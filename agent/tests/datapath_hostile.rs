//! The datapath against hostile input, in real network namespaces: Node values that would
//! hijack the underlay or another node's pods, values the kernel refuses, and forged
//! VXLAN packets from a host on the underlay and from an unprivileged pod.

mod datapath_support;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use datapath_support::*;
use weft_agent::peers::{Age, Peer, Reason};
use weft_common::annotations::{Mac, Vtep};

fn hostile(name: &str, cidr: &str, mac_last: u8, ip_last: u8) -> Peer {
    Peer {
        name: name.into(),
        pod_cidrs: vec![cidr.parse().unwrap()],
        vtep: Some(Vtep {
            mac: Mac([0x02, 0xee, 0, 0, 0, mac_last]),
            public_ip: format!("192.168.77.{ip_last}").parse().unwrap(),
        }),
        node_ip: Some(format!("192.168.77.{ip_last}").parse().unwrap()),
        // Created after every honest node.
        age: Age {
            created: Some(2_000_000_000),
            uid: format!("hostile-{name}"),
        },
        vni: Some("1".into()),
    }
}

fn honest(c: &Cluster, i: usize) -> Peer {
    Peer {
        age: Age {
            created: Some(1_000_000_000 + i as i64),
            uid: format!("honest-{i}"),
        },
        ..c.nodes[i].peer()
    }
}

#[test]
fn hostile_peers_are_skipped_and_never_touch_the_underlay() {
    if !weft_common::require_root("hostile_peers_are_skipped_and_never_touch_the_underlay") {
        return;
    }
    let c = Cluster::new("hostile", 3, 1);
    let n1 = &c.nodes[0];
    let connected_before = show(&n1.ns, "route show 192.168.77.0/24");
    assert!(
        connected_before.contains("proto kernel"),
        "{connected_before}"
    );

    let mut peers = vec![honest(&c, 1), honest(&c, 2)];
    // The findings of the security review, each one a Node object.
    peers.push(hostile("underlay", "192.168.77.0/24", 10, 50));
    peers.push(hostile("half-of-ipv4", "128.0.0.0/1", 11, 51));
    peers.push(hostile("services", "10.96.0.0/16", 12, 52));
    peers.push(hostile("host-bits", "10.244.3.7/24", 13, 53));
    peers.push(hostile("wrong-size", "10.244.128.0/17", 14, 54));
    peers.push(hostile("multicast", "224.0.0.0/24", 15, 55));
    // Duplicates of node 3's CIDR and MAC, named to sort first.
    peers.push(hostile("aaa-dup-cidr", "10.244.3.0/24", 16, 56));
    let mut mac_copy = hostile("aab-dup-mac", "10.244.60.0/24", 17, 57);
    mac_copy.vtep.as_mut().unwrap().mac = c.nodes[2].mac.unwrap();
    peers.push(mac_copy);
    // Values the kernel would refuse, which used to fail every sync.
    let mut zero_mac = hostile("zero-mac", "10.244.61.0/24", 0, 58);
    zero_mac.vtep.as_mut().unwrap().mac = Mac([0; 6]);
    peers.push(zero_mac);
    let mut bcast_mac = hostile("bcast-mac", "10.244.62.0/24", 0, 59);
    bcast_mac.vtep.as_mut().unwrap().mac = Mac([0xff; 6]);
    peers.push(bcast_mac);
    let mut v6_ip = hostile("v6-ip", "10.244.63.0/24", 18, 60);
    v6_ip.vtep.as_mut().unwrap().public_ip = "fd00::1".parse().unwrap();
    peers.push(v6_ip);
    let mut mapped = hostile("mapped-ip", "10.244.64.0/24", 19, 61);
    mapped.vtep.as_mut().unwrap().public_ip = "::ffff:192.168.77.9".parse().unwrap();
    peers.push(mapped);
    let mut vni = hostile("other-vni", "10.244.65.0/24", 20, 62);
    vni.vni = Some("2".into());
    peers.push(vni);

    for i in [1, 2] {
        c.nodes[i].agent.sync(c.peers_of(i)).unwrap();
    }
    let stats = n1.agent.sync(peers.clone()).expect("the sync succeeds");
    assert_eq!(stats.peers, 2, "both honest peers programmed");
    assert_eq!(stats.failed, 0);
    let mut got: Vec<(String, Reason)> = stats
        .rejected
        .iter()
        .map(|r| (r.node.clone(), r.reason))
        .collect();
    got.sort();
    let want = [
        ("aaa-dup-cidr", Reason::DuplicatePodCidr),
        ("aab-dup-mac", Reason::InvalidVtepMac),
        ("bcast-mac", Reason::InvalidVtepMac),
        ("half-of-ipv4", Reason::InvalidPodCidr),
        ("host-bits", Reason::InvalidPodCidr),
        ("mapped-ip", Reason::InvalidPublicIp),
        ("multicast", Reason::InvalidPodCidr),
        ("other-vni", Reason::VniMismatch),
        ("services", Reason::InvalidPodCidr),
        ("underlay", Reason::InvalidPodCidr),
        ("v6-ip", Reason::InvalidPublicIp),
        ("wrong-size", Reason::InvalidPodCidr),
        ("zero-mac", Reason::InvalidVtepMac),
    ];
    let want: Vec<(String, Reason)> = want.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    assert_eq!(got, want);

    // The kernel's connected route is untouched, and only honest routes are weft's.
    assert_eq!(show(&n1.ns, "route show 192.168.77.0/24"), connected_before);
    let ours = show(&n1.ns, "route show proto 87");
    assert_eq!(ours.lines().count(), 2, "{ours}");
    assert!(
        ours.contains("10.244.2.0/24") && ours.contains("10.244.3.0/24"),
        "{ours}"
    );
    // Node 3's pods are reached at node 3, not at the thief.
    let fdb = show(&n1.ns, "-d link show weft.1");
    assert!(fdb.contains("alias weft"), "{fdb}");
    let fdb = must(&[
        "ip", "netns", "exec", &n1.ns, "bridge", "fdb", "show", "dev", "weft.1",
    ]);
    let mac3 = c.nodes[2].mac.unwrap().to_string();
    assert!(fdb.contains(&format!("{mac3} dst 192.168.77.3")), "{fdb}");
    assert!(!fdb.contains("192.168.77.56"), "{fdb}");
    assert!(ping_ok(&n1.pods[0].ns, c.nodes[2].pods[0].ip));
    // The underlay still works: node 1 reaches node 2 and the outside host.
    assert!(ping_ok(&n1.ns, c.nodes[1].ip));
    assert!(ping_ok(&n1.ns, OUTSIDE_IP.parse().unwrap()));

    // A second sync of the same set changes nothing and still succeeds.
    let again = n1.agent.sync(peers).unwrap();
    assert_eq!((again.added, again.removed, again.updated), (0, 0, 0));
}

#[test]
fn a_route_weft_did_not_write_is_never_replaced() {
    if !weft_common::require_root("a_route_weft_did_not_write_is_never_replaced") {
        return;
    }
    let c = Cluster::new("foreign", 2, 0);
    let n1 = &c.nodes[0];
    // An operator's route for node 2's pod CIDR, there before weft learns of node 2.
    ip(
        &n1.ns,
        "route add 10.244.2.0/24 via 192.168.77.100 proto static",
    );
    let stats = n1.agent.sync(vec![honest(&c, 1)]).unwrap();
    assert_eq!(stats.peers, 0);
    assert_eq!(stats.rejected.len(), 1);
    assert!(
        stats.rejected[0].detail.contains("did not write"),
        "{:?}",
        stats.rejected
    );
    let route = show(&n1.ns, "route show 10.244.2.0/24");
    assert!(
        route.contains("via 192.168.77.100") && route.contains("proto static"),
        "{route}"
    );
}

#[test]
fn own_pod_cidr_on_the_underlay_is_refused_before_setup() {
    if !weft_common::require_root("own_pod_cidr_on_the_underlay_is_refused_before_setup") {
        return;
    }
    let c = Cluster::new("ownbad", 1, 0);
    let n = &c.nodes[0];
    let mut cfg = n.config();
    // A cluster CIDR that covers the underlay, and the underlay /24 as this node's CIDR.
    cfg.cluster_cidrs = vec!["192.168.0.0/16".parse().unwrap()];
    cfg.pod_cidrs = vec!["192.168.77.0/24".parse().unwrap()];
    let err = n.agent.setup(cfg).unwrap_err();
    assert!(
        err.contains("spec.podCIDRs") && err.contains("underlay"),
        "{err}"
    );
    let addrs = show(&n.ns, "addr show dev weft0");
    assert!(!addrs.contains("192.168.77."), "{addrs}");
}

#[test]
fn foreign_devices_named_in_the_config_are_refused_untouched() {
    if !weft_common::require_root("foreign_devices_named_in_the_config_are_refused_untouched") {
        return;
    }
    let c = Cluster::new("devs", 1, 0);
    let n = &c.nodes[0];
    // `vxlanDevice: eth0` (the underlay) must not delete eth0.
    let mut cfg = n.config();
    cfg.vxlan_device = "eth0".into();
    let err = n.agent.setup(cfg).unwrap_err();
    assert!(err.contains("vxlanDevice") && err.contains("eth0"), "{err}");
    assert!(show(&n.ns, "addr show dev eth0").contains("192.168.77.1/24"));
    // A bridge holding an address outside the cluster (docker0, a br0 with the node IP).
    ip(&n.ns, "link add docker0 type bridge");
    ip(&n.ns, "addr add 172.17.0.1/16 dev docker0");
    let mut cfg = n.config();
    cfg.bridge = "docker0".into();
    let err = n.agent.setup(cfg).unwrap_err();
    assert!(err.contains("docker0") && err.contains("bridge"), "{err}");
    assert!(show(&n.ns, "addr show dev docker0").contains("172.17.0.1/16"));
    // Someone else's VXLAN device on another VNI under weft's name.
    ip(&n.ns, "link del weft.1");
    ip(
        &n.ns,
        "link add weft.1 type vxlan id 42 dstport 4789 dev eth0",
    );
    let err = n.agent.setup(n.config()).unwrap_err();
    assert!(err.contains("VNI Some(42)"), "{err}");
    assert!(show(&n.ns, "-d link show weft.1").contains("vxlan id 42"));
}

/// A VXLAN datagram (the part after the outer UDP header) carrying an IPv4/UDP packet
/// from `inner_src` to `inner_dst:port` in a frame addressed to `vtep_mac`.
fn vxlan_payload(
    vtep_mac: Mac,
    inner_src: Ipv4Addr,
    inner_dst: Ipv4Addr,
    port: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut out = vec![0x08, 0, 0, 0, 0, 0, 1, 0]; // flags: VNI valid; VNI 1
    let builder = etherparse::PacketBuilder::ethernet2([0x02, 0xba, 0xd0, 0, 0, 1], vtep_mac.0)
        .ipv4(inner_src.octets(), inner_dst.octets(), 64)
        .udp(40000, port);
    builder.write(&mut out, data).unwrap();
    out
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("IPv4 expected"),
    }
}

/// Sends `payload` to `dst:8472` from `ns` as user nobody without capabilities.
fn send_as_nobody(ns: &str, dst: IpAddr, payload: &[u8]) {
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let script = "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); \
                  s.sendto(bytes.fromhex(sys.argv[1]),(sys.argv[2],8472))";
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
        ])
        .args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .args(["/usr/bin/python3", "-c", script, &hex, &dst.to_string()])
        .output()
        .expect("run setpriv python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn send_as_root(ns: &str, dst: IpAddr, payload: Vec<u8>) {
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(&payload, (dst, 8472)).unwrap();
    })
    .join()
    .unwrap();
}

fn counter(ns: &str, name: &str) -> u64 {
    let out = must(&[
        "ip", "netns", "exec", ns, "nft", "-j", "list", "counter", "inet", "weft", name,
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["counter"]["packets"].as_u64())
        .unwrap()
}

#[test]
fn vxlan_is_accepted_only_from_peers() {
    if !weft_common::require_root("vxlan_is_accepted_only_from_peers") {
        return;
    }
    let mut c = Cluster::new("vxfilter", 3, 1);
    c.add_pod(1, 2);
    c.sync_all();
    let target = &c.nodes[1];
    let pod = &target.pods[0];
    let spoofed = v4(c.nodes[2].pods[0].ip);
    let vtep = target.mac.unwrap();
    let port = 7999;
    let (got_tx, got_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = in_netns(&pod.ns, move || {
        let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Ok(n) = s.recv(&mut buf) else { break };
            let msg = buf[..n].to_vec();
            let last = msg == b"control";
            got_tx.send(msg).unwrap();
            if last {
                break;
            }
        }
    });
    ready_rx.recv().unwrap();
    let foreign_before = counter(&target.ns, "vxlan_dropped");
    let pods_before = counter(&target.ns, "vxlan_from_pods_dropped");
    let remote_pods_before = counter(&c.nodes[0].ns, "vxlan_from_pods_dropped");

    // A host on the underlay that is no node.
    let p = vxlan_payload(vtep, spoofed, v4(pod.ip), port, b"from-outside");
    send_as_root(&c.outside, target.ip, p);
    // An unprivileged pod on another node, and a pod on the target node itself.
    let p = vxlan_payload(vtep, spoofed, v4(pod.ip), port, b"from-remote-pod");
    send_as_nobody(&c.nodes[0].pods[0].ns, target.ip, &p);
    let p = vxlan_payload(vtep, spoofed, v4(pod.ip), port, b"from-local-pod");
    send_as_nobody(&target.pods[1].ns, target.ip, &p);
    // Then the same frame from a real peer: it arrives, so the others had their chance.
    let p = vxlan_payload(vtep, spoofed, v4(pod.ip), port, b"control");
    send_as_root(&c.nodes[2].ns, target.ip, p);
    listener.join().unwrap();
    let got: Vec<Vec<u8>> = got_rx.try_iter().collect();
    assert_eq!(
        got,
        vec![b"control".to_vec()],
        "only the peer's frame is delivered"
    );
    assert!(counter(&target.ns, "vxlan_dropped") > foreign_before);
    assert!(counter(&target.ns, "vxlan_from_pods_dropped") > pods_before);
    assert!(counter(&c.nodes[0].ns, "vxlan_from_pods_dropped") > remote_pods_before);
}

#[test]
fn setup_again_accepts_the_kernel_routes_of_its_own_addresses() {
    if !weft_common::require_root("setup_again_accepts_the_kernel_routes_of_its_own_addresses") {
        return;
    }
    // IPv6 adds a prefix route for the VTEP's /128 and the bridge's /64: they are weft's
    // own, and a restarted agent must not mistake them for someone else's routes.
    let c = Cluster::dual_stack("resetup", 2, 0);
    c.sync_all();
    let n = &c.nodes[0];
    n.agent.drop_datapath();
    n.agent.setup(n.config()).expect("setup after a restart");
    let s = n.agent.sync(c.peers_of(0)).unwrap();
    assert_eq!((s.peers, s.added, s.removed), (1, 0, 0), "{:?}", s.rejected);
}
