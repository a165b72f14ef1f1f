//! Three nodes as network namespaces on one underlay, each with a Datapath and pods:
//! connectivity, source IPs, reconciliation, MTU, masquerade, encapsulation, restarts.

mod datapath_support;

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use datapath_support::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

#[test]
fn every_pod_reaches_every_remote_pod_with_its_own_source_ip() {
    if !weft_common::require_root("every_pod_reaches_every_remote_pod_with_its_own_source_ip") {
        return;
    }
    let c = Cluster::new("mesh", 3, 2);
    c.sync_all();
    let mut port = 7100;
    for (a, na) in c.nodes.iter().enumerate() {
        for (b, nb) in c.nodes.iter().enumerate() {
            if a == b {
                continue;
            }
            for pa in &na.pods {
                for pb in &nb.pods {
                    assert!(ping_ok(&pa.ns, pb.ip), "{} cannot ping {}", pa.ip, pb.ip);
                    port += 1;
                    let seen = seen_source(&pa.ns, &pb.ns, pb.ip, port);
                    assert_eq!(seen, pa.ip, "receiver {} saw {seen}, not the pod IP", pb.ip);
                }
            }
        }
    }
    // Subnet file written, entries in place with weft's protocol.
    let sf = weft_common::subnet_file::NodeSubnet::read(&c.nodes[0].subnet_file).unwrap();
    assert_eq!(sf.mtu, MTU);
    let routes = show(&c.nodes[0].ns, "route show proto 87");
    assert!(
        routes.contains("10.244.2.0/24 via 10.244.2.0 dev weft.1 onlink"),
        "{routes}"
    );
    // A second sync changes nothing.
    let s = c.nodes[0].agent.sync(c.peers_of(0)).unwrap();
    assert_eq!((s.peers, s.added, s.removed, s.updated), (2, 0, 0, 0));
}

#[test]
fn dual_stack_pods_reach_remote_pods_over_ipv6_on_the_same_device() {
    if !weft_common::require_root("dual_stack_pods_reach_remote_pods_over_ipv6_on_the_same_device")
    {
        return;
    }
    // IPv4-only underlay; IPv6 pod traffic rides the one weft.1 device.
    let c = Cluster::dual_stack("dual", 3, 1);
    c.sync_all();
    // Right after setup, the very first IPv6 packet to a remote pod is answered at once:
    // setup waited for the bridge's link-local address to pass DAD (without it, the
    // remote bridge sends no neighbour solicitation for two seconds).
    let first = exec(
        &c.nodes[0].pods[0].ns,
        &format!("ping -c 1 -W 1 {}", c.nodes[1].pods[0].ip6.unwrap()),
    );
    assert!(
        first.status.success(),
        "first IPv6 ping: {}",
        String::from_utf8_lossy(&first.stdout)
    );
    let n1 = &c.nodes[0];
    let addrs = show(&n1.ns, "-6 addr show dev weft.1 scope global");
    assert!(addrs.contains("fd00:10:244:1::/128"), "{addrs}");
    let routes = show(&n1.ns, "-6 route show proto 87");
    assert!(
        routes.contains("fd00:10:244:2::/64 via fd00:10:244:2:: dev weft.1"),
        "{routes}"
    );
    let neigh = show(&n1.ns, "-6 neigh show dev weft.1 nud permanent");
    assert!(
        neigh.contains(&format!(
            "fd00:10:244:3:: lladdr {}",
            c.nodes[2].mac.unwrap()
        )),
        "{neigh}"
    );
    // Still one FDB entry per peer.
    let fdb = must(&["bridge", "-n", &n1.ns, "fdb", "show", "dev", "weft.1"]);
    assert_eq!(
        fdb.lines().filter(|l| l.contains(" dst ")).count(),
        2,
        "{fdb}"
    );

    let mut port = 7600;
    for (a, na) in c.nodes.iter().enumerate() {
        for (b, nb) in c.nodes.iter().enumerate() {
            if a == b {
                continue;
            }
            let (pa, pb) = (&na.pods[0], &nb.pods[0]);
            let (src, dst) = (pa.ip6.unwrap(), pb.ip6.unwrap());
            assert!(ping_ok(&pa.ns, dst), "{src} cannot ping {dst}");
            port += 1;
            let seen = seen_source(&pa.ns, &pb.ns, dst, port);
            assert_eq!(seen, src, "receiver {dst} saw {seen}, not the pod IP");
            // IPv4 still works alongside.
            assert!(ping_ok(&pa.ns, pb.ip), "{} cannot ping {}", pa.ip, pb.ip);
        }
    }
    // The kernel keeps IPv6 routes at metric 1024: a second sync must find nothing to do.
    let s = n1.agent.sync(c.peers_of(0)).unwrap();
    assert_eq!((s.peers, s.added, s.removed, s.updated), (2, 0, 0, 0));
    // A hand-deleted IPv6 neighbour and route come back; the peer dropping its IPv6 CIDR
    // takes only its IPv6 entries away.
    ip(&n1.ns, "-6 neigh del fd00:10:244:2:: dev weft.1");
    ip(&n1.ns, "-6 route del fd00:10:244:3::/64");
    let s = n1.agent.sync(c.peers_of(0)).unwrap();
    assert_eq!((s.added, s.removed, s.updated), (2, 0, 0), "{s:?}");
    assert!(ping_ok(&n1.pods[0].ns, c.nodes[2].pods[0].ip6.unwrap()));
    let mut peers = c.peers_of(0);
    peers[1].pod_cidrs.truncate(1);
    let s = n1.agent.sync(peers).unwrap();
    assert_eq!((s.added, s.removed, s.updated), (0, 2, 0), "{s:?}");
    assert!(!show(&n1.ns, "-6 route show proto 87").contains("fd00:10:244:3::/64"));
    assert!(ping_ok(&n1.pods[0].ns, c.nodes[2].pods[0].ip));
}

#[test]
fn removed_peer_disappears_and_hand_deleted_entries_come_back() {
    if !weft_common::require_root("removed_peer_disappears_and_hand_deleted_entries_come_back") {
        return;
    }
    let c = Cluster::new("recon", 3, 1);
    c.sync_all();
    let n1 = &c.nodes[0];
    let mac3 = c.nodes[2].mac.unwrap().to_string();

    // Hand deletions come back.
    ip(&n1.ns, "neigh del 10.244.2.0 dev weft.1");
    must(&[
        "bridge",
        "-n",
        &n1.ns,
        "fdb",
        "del",
        &c.nodes[1].mac.unwrap().to_string(),
        "dev",
        "weft.1",
        "dst",
        "192.168.77.2",
        "self",
    ]);
    ip(&n1.ns, "route del 10.244.3.0/24");
    let s = n1.agent.sync(c.peers_of(0)).unwrap();
    assert_eq!((s.added, s.removed, s.updated), (3, 0, 0), "{s:?}");
    assert!(show(&n1.ns, "neigh show dev weft.1").contains("10.244.2.0 lladdr"));
    assert!(show(&n1.ns, "route show proto 87").contains("10.244.3.0/24"));
    assert!(ping_ok(&n1.pods[0].ns, c.nodes[1].pods[0].ip));
    assert!(ping_ok(&n1.pods[0].ns, c.nodes[2].pods[0].ip));

    // A wrong MAC set by hand is replaced.
    ip(
        &n1.ns,
        "neigh replace 10.244.3.0 lladdr 02:11:22:33:44:55 dev weft.1 nud permanent",
    );
    let s = n1.agent.sync(c.peers_of(0)).unwrap();
    assert_eq!((s.added, s.removed, s.updated), (0, 0, 1), "{s:?}");
    assert!(show(&n1.ns, "neigh show 10.244.3.0 dev weft.1").contains(&mac3));

    // Node 3 leaves: its three entries go, node 2's stay.
    let s = n1.agent.sync(vec![c.nodes[1].peer()]).unwrap();
    assert_eq!((s.peers, s.removed), (1, 3), "{s:?}");
    assert!(!show(&n1.ns, "route show proto 87").contains("10.244.3.0"));
    assert!(!show(&n1.ns, "neigh show dev weft.1").contains("10.244.3.0"));
    let fdb = must(&["bridge", "-n", &n1.ns, "fdb", "show", "dev", "weft.1"]);
    assert!(!fdb.contains(&mac3), "{fdb}");
    assert!(ping_ok(&n1.pods[0].ns, c.nodes[1].pods[0].ip));
    assert!(!exec(
        &n1.pods[0].ns,
        &format!("ping -c 1 -W 1 {}", c.nodes[2].pods[0].ip)
    )
    .status
    .success());
}

#[test]
fn pod_mtu_crosses_and_one_byte_more_does_not() {
    if !weft_common::require_root("pod_mtu_crosses_and_one_byte_more_does_not") {
        return;
    }
    let c = Cluster::new("mtu", 2, 1);
    c.sync_all();
    let (src, dst) = (&c.nodes[0].pods[0], c.nodes[1].pods[0].ip);
    assert!(ping_ok(&src.ns, dst));
    let payload = MTU - 28;
    let fits = exec(&src.ns, &format!("ping -M do -c 1 -W 2 -s {payload} {dst}"));
    assert!(
        fits.status.success(),
        "{}",
        String::from_utf8_lossy(&fits.stdout)
    );
    let too_big = exec(
        &src.ns,
        &format!("ping -M do -c 1 -W 2 -s {} {dst}", payload + 1),
    );
    assert!(!too_big.status.success());
    // A pod with a larger MTU than the overlay gets "frag needed" from its node.
    ip(&c.nodes[0].ns, "link set vp1 mtu 1500");
    ip(&src.ns, "link set eth0 mtu 1500");
    let out = exec(
        &src.ns,
        &format!("ping -M do -c 1 -W 2 -s {} {dst}", payload + 1),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        text.contains("Frag needed") && text.contains("mtu = 1450"),
        "{text}"
    );
}

#[test]
fn traffic_leaving_the_cluster_is_masqueraded_to_the_node_ip() {
    if !weft_common::require_root("traffic_leaving_the_cluster_is_masqueraded_to_the_node_ip") {
        return;
    }
    let c = Cluster::new("masq", 2, 1);
    c.sync_all();
    let outside: IpAddr = OUTSIDE_IP.parse().unwrap();
    let seen = seen_source(&c.nodes[0].pods[0].ns, &c.outside, outside, 7001);
    assert_eq!(seen, c.nodes[0].ip, "outside saw {seen}");
    // Pod-to-pod stays un-NATed even with the table in place.
    let seen = seen_source(
        &c.nodes[0].pods[0].ns,
        &c.nodes[1].pods[0].ns,
        c.nodes[1].pods[0].ip,
        7002,
    );
    assert_eq!(seen, c.nodes[0].pods[0].ip);
    let table = must(&[
        "ip",
        "netns",
        "exec",
        &c.nodes[0].ns,
        "nft",
        "list",
        "table",
        "inet",
        "weft",
    ]);
    assert!(table.contains("masquerade"), "{table}");
}

/// Opens an AF_PACKET socket on `ifname` inside `ns` and returns frames until `done`
/// says so or the deadline passes.
fn capture(
    ns: &str,
    ifname: &'static str,
    ready: mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    in_netns(ns, move || {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert!(index > 0, "no interface {ifname}");
        // SAFETY: zeroed sockaddr_ll is valid; we fill the fields bind needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: valid fd and a sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: valid fd, timeval option of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        ready.send(()).unwrap();
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline && frames.len() < 200 {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                frames.push(buf[..n as usize].to_vec());
                if frames.iter().filter(|f| vxlan_inner(f).is_some()).count() >= 2 {
                    break;
                }
            }
        }
        frames
    })
}

/// (UDP dst port, VNI, inner source, inner destination) of a VXLAN frame.
fn vxlan_inner(frame: &[u8]) -> Option<(u16, u32, IpAddr, IpAddr)> {
    let outer = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Udp(udp)) = outer.transport else {
        return None;
    };
    let payload = udp.payload();
    if payload.len() < 8 || payload[0] != 0x08 {
        return None;
    }
    let vni = u32::from_be_bytes([0, payload[4], payload[5], payload[6]]);
    let inner = SlicedPacket::from_ethernet(&payload[8..]).ok()?;
    let Some(NetSlice::Ipv4(v4)) = inner.net else {
        return None;
    };
    let h = v4.header();
    Some((
        udp.destination_port(),
        vni,
        IpAddr::V4(h.source_addr()),
        IpAddr::V4(h.destination_addr()),
    ))
}

#[test]
fn underlay_carries_vxlan_on_8472_with_vni_1_and_pod_ips_inside() {
    if !weft_common::require_root("underlay_carries_vxlan_on_8472_with_vni_1_and_pod_ips_inside") {
        return;
    }
    let c = Cluster::new("wire", 2, 1);
    c.sync_all();
    let (src, dst) = (&c.nodes[0].pods[0], &c.nodes[1].pods[0]);
    assert!(ping_ok(&src.ns, dst.ip));
    let (tx, rx) = mpsc::channel();
    // Node 1's port on the underlay bridge (the bridge device itself sees only floods).
    let cap = capture(&c.underlay, "n1", tx);
    rx.recv().unwrap();
    assert!(exec(&src.ns, &format!("ping -c 2 -i 0.05 -W 1 {}", dst.ip))
        .status
        .success());
    let frames = cap.join().unwrap();
    let seen: Vec<_> = frames.iter().filter_map(|f| vxlan_inner(f)).collect();
    assert!(
        seen.contains(&(8472, 1, src.ip, dst.ip)),
        "no VXLAN frame {} -> {} among {} frames: {seen:?}",
        src.ip,
        dst.ip,
        frames.len()
    );
}

#[test]
fn restarted_agent_loses_no_packet() {
    if !weft_common::require_root("restarted_agent_loses_no_packet") {
        return;
    }
    let c = Cluster::new("restart", 2, 1);
    c.sync_all();
    let (src, dst) = (&c.nodes[0].pods[0], c.nodes[1].pods[0].ip);
    assert!(ping_ok(&src.ns, dst));
    // The agent dies: nothing in the kernel changes.
    c.nodes[0].agent.drop_datapath();
    c.nodes[1].agent.drop_datapath();
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns", "exec", &src.ns, "ping", "-i", "0.01", "-c", "300", "-W", "1", "-q",
    ])
    .arg(dst.to_string());
    let ping = std::thread::spawn(move || cmd.output());
    // ...and comes back: setup with the published MAC, then a full sync.
    for (i, n) in c.nodes.iter().enumerate() {
        let mac = n.agent.setup(n.config()).unwrap();
        assert_eq!(Some(mac), n.mac);
        let s = n.agent.sync(c.peers_of(i)).unwrap();
        assert_eq!((s.added, s.removed, s.updated), (0, 0, 0));
    }
    let out = ping.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0% packet loss"), "{text}");
}
