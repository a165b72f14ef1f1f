//! The incremental sync against the real kernel: one peer's route, neighbour and FDB
//! entry programmed, changed and removed without a dump, and a full resync afterwards
//! finding nothing to change; a hand-made change is left to the full sync.

mod datapath_support;

use datapath_support::*;
use weft_agent::datapath::{Datapath, SyncKind, SyncStats};
use weft_agent::peers::{Peer, PeerChange};
use weft_common::annotations::Mac;

/// (full, added, removed, updated) of a sync.
fn counts(s: &SyncStats) -> (bool, usize, usize, usize) {
    (s.full, s.added, s.removed, s.updated)
}

fn fdb(ns: &str) -> String {
    must(&["bridge", "-n", ns, "fdb", "show", "dev", "weft.1"])
}

#[test]
fn incremental_syncs_program_and_remove_one_peer_and_a_full_resync_agrees() {
    if !weft_common::require_root(
        "incremental_syncs_program_and_remove_one_peer_and_a_full_resync_agrees",
    ) {
        return;
    }
    let c = Cluster::new("incr", 3, 1);
    c.sync_all();
    let n1 = &c.nodes[0];
    // Node 1's datapath runs on this test's own thread, to call sync_kind.
    n1.agent.drop_datapath();
    let cfg = n1.config();
    let ns = n1.ns.clone();
    let (p2, p3) = (c.nodes[1].peer(), c.nodes[2].peer());
    let mac3 = c.nodes[2].mac.unwrap();
    let (pod1, pod3) = (n1.pods[0].ns.clone(), c.nodes[2].pods[0].ip);
    let scenario = in_netns_with_netlink(&n1.ns, move |handle| async move {
        let dp = Datapath::setup(cfg, handle).await.unwrap();
        let sync = |peers: Vec<Peer>, kind| {
            let dp = &dp;
            async move {
                let refs: Vec<&Peer> = peers.iter().collect();
                dp.sync_kind(&refs, kind).await.unwrap()
            }
        };
        use SyncKind::{Full, Incremental};

        // A new Datapath knows nothing: its first sync dumps, whatever was asked.
        let s = sync(vec![p2.clone()], Incremental).await;
        assert_eq!(counts(&s), (true, 0, 3, 0), "node 3's entries were there");
        assert!(!show(&ns, "route show proto 87").contains("10.244.3.0/24"));

        // Node 3 appears: three entries, no dump.
        let s = sync(vec![p2.clone(), p3.clone()], Incremental).await;
        assert_eq!(counts(&s), (false, 3, 0, 0));
        let routes = show(&ns, "route show proto 87");
        assert!(
            routes.contains("10.244.3.0/24 via 10.244.3.0 dev weft.1 onlink"),
            "{routes}"
        );
        let neigh = show(&ns, "neigh show dev weft.1 nud permanent");
        assert!(
            neigh.contains(&format!("10.244.3.0 lladdr {mac3}")),
            "{neigh}"
        );
        let f = fdb(&ns);
        assert!(
            f.contains(&format!("{mac3} dst 192.168.77.3 self permanent")),
            "{f}"
        );
        assert!(ping_ok(&pod1, pod3), "pod on node 1 cannot reach node 3's");
        // What the dump finds agrees with what the incremental sync kept.
        let s = sync(vec![p2.clone(), p3.clone()], Full).await;
        assert_eq!(counts(&s), (true, 0, 0, 0));

        // Node 3's VTEP MAC changes: neighbour replaced, FDB entry swapped.
        let mut moved = p3.clone();
        let new_mac: Mac = "02:42:00:00:03:33".parse().unwrap();
        moved.vtep.as_mut().unwrap().mac = new_mac;
        let s = sync(vec![p2.clone(), moved.clone()], Incremental).await;
        assert_eq!(counts(&s), (false, 1, 1, 1));
        let neigh = show(&ns, "neigh show dev weft.1 nud permanent");
        assert!(
            neigh.contains(&format!("10.244.3.0 lladdr {new_mac}")),
            "{neigh}"
        );
        let f = fdb(&ns);
        assert!(f.contains(&format!("{new_mac} dst 192.168.77.3")), "{f}");
        assert!(!f.contains(&mac3.to_string()), "{f}");
        let s = sync(vec![p2.clone(), moved.clone()], Full).await;
        assert_eq!(counts(&s), (true, 0, 0, 0));

        // Node 3 goes: its three entries go, node 2's stay.
        let s = sync(vec![p2.clone()], Incremental).await;
        assert_eq!(counts(&s), (false, 0, 3, 0));
        let routes = show(&ns, "route show proto 87");
        assert!(!routes.contains("10.244.3.0/24"), "{routes}");
        assert!(routes.contains("10.244.2.0/24"), "{routes}");
        let neigh = show(&ns, "neigh show dev weft.1");
        assert!(!neigh.contains("10.244.3.0 "), "{neigh}");
        assert!(!fdb(&ns).contains(&new_mac.to_string()));
        let s = sync(vec![p2.clone()], Full).await;
        assert_eq!(counts(&s), (true, 0, 0, 0));

        // A route deleted by hand: an incremental sync does not look at the kernel
        // (the kernel watch asks for a full one), a full sync puts it back.
        ip(&ns, "route del 10.244.2.0/24");
        let s = sync(vec![p2.clone()], Incremental).await;
        assert_eq!(counts(&s), (false, 0, 0, 0));
        assert!(!show(&ns, "route show proto 87").contains("10.244.2.0/24"));
        let s = sync(vec![p2.clone()], Full).await;
        assert_eq!(counts(&s), (true, 1, 0, 0));
        assert!(show(&ns, "route show proto 87").contains("10.244.2.0/24"));
    });
    scenario.join().expect("scenario");
}

#[test]
fn a_refused_entry_makes_the_next_sync_a_full_one() {
    if !weft_common::require_root("a_refused_entry_makes_the_next_sync_a_full_one") {
        return;
    }
    let c = Cluster::new("irefuse", 2, 0);
    let n1 = &c.nodes[0];
    n1.agent.drop_datapath();
    let cfg = n1.config();
    let ns = n1.ns.clone();
    let p2 = c.nodes[1].peer();
    let scenario = in_netns_with_netlink(&n1.ns, move |handle| async move {
        let dp = Datapath::setup(cfg, handle).await.unwrap();
        let s = dp.sync_kind(&[], SyncKind::Full).await.unwrap();
        assert!(s.full);
        // A route weft did not write sits where node 2's would go, added after the
        // last dump (so validation cannot know it): the kernel refuses weft's.
        ip(&ns, "route add 10.244.2.0/24 dev eth0");
        let s = dp.sync_kind(&[&p2], SyncKind::Incremental).await.unwrap();
        assert_eq!((s.full, s.failed), (false, 1), "{s:?}");
        // Nothing is known after a failure: the next sync dumps, sees the foreign
        // route and rejects the peer instead.
        let s = dp.sync_kind(&[&p2], SyncKind::Incremental).await.unwrap();
        assert!(s.full, "{s:?}");
        assert_eq!(s.failed, 0, "{s:?}");
        assert_eq!(s.rejected.len(), 1, "{s:?}");
        assert!(show(&ns, "route show 10.244.2.0/24").contains("dev eth0"));
    });
    scenario.join().expect("scenario");
}

#[test]
fn the_kernel_watch_ignores_the_echo_of_weft_s_own_fdb_writes_only() {
    if !weft_common::require_root("the_kernel_watch_ignores_the_echo_of_weft_s_own_fdb_writes_only")
    {
        return;
    }
    let c = Cluster::new("iecho", 2, 0);
    let n1 = &c.nodes[0];
    n1.agent.drop_datapath();
    let cfg = n1.config();
    let ns = n1.ns.clone();
    let p2 = c.nodes[1].peer();
    let scenario = in_netns(&n1.ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut conn, handle, _) = rtnetlink::new_connection().unwrap();
            let own_port = rtnetlink::sys::AsyncSocket::socket_mut(conn.socket_mut())
                .bind_auto()
                .unwrap()
                .port_number();
            tokio::spawn(conn);
            let dp = Datapath::setup(cfg, handle).await.unwrap();
            let filter = weft_agent::kernel_watch::Filter {
                device: "weft.1".into(),
                ifindex: dp.ifindex(),
                own_port: Some(own_port),
            };
            let (tx, mut kicks) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(
                weft_agent::kernel_watch::subscribe_with_intent(filter, dp.fdb_intent(), tx)
                    .unwrap(),
            );
            // weft's own writes: the FDB entry removed, added, and swapped for another.
            dp.sync_kind(&[], SyncKind::Full).await.unwrap();
            let s = dp.sync_kind(&[&p2], SyncKind::Incremental).await.unwrap();
            assert_eq!((s.full, s.added), (false, 3));
            let mut moved = p2.clone();
            let new_mac: Mac = "02:42:00:00:02:22".parse().unwrap();
            moved.vtep.as_mut().unwrap().mac = new_mac;
            let s = dp
                .sync_kind(&[&moved], SyncKind::Incremental)
                .await
                .unwrap();
            assert_eq!((s.added, s.removed, s.updated), (1, 1, 1));
            // Then someone deletes the FDB entry: the first notification the watch
            // passes on is that one, none of the echoes before it.
            must(&[
                "bridge",
                "-n",
                &ns,
                "fdb",
                "del",
                &new_mac.to_string(),
                "dev",
                "weft.1",
                "dst",
                "192.168.77.2",
            ]);
            let first = tokio::time::timeout(std::time::Duration::from_secs(10), kicks.recv())
                .await
                .expect("no notification of the hand-made deletion")
                .unwrap();
            assert_eq!(first, "neighbour/FDB entry deleted");
            let s = dp.sync_kind(&[&moved], SyncKind::Full).await.unwrap();
            assert_eq!((s.full, s.added), (true, 1));
        });
    });
    scenario.join().expect("scenario");
}

/// The nft element listing of the VXLAN source set (IPv4).
fn peer_set(ns: &str) -> String {
    must(&[
        "ip",
        "netns",
        "exec",
        ns,
        "nft",
        "list",
        "set",
        "inet",
        "weft",
        "vxlan_peers_v4",
    ])
}

#[test]
fn syncs_told_the_changed_nodes_check_and_plan_those_alone_and_agree_with_a_full_sync() {
    if !weft_common::require_root(
        "syncs_told_the_changed_nodes_check_and_plan_those_alone_and_agree_with_a_full_sync",
    ) {
        return;
    }
    let c = Cluster::new("ichg", 3, 1);
    c.sync_all();
    let n1 = &c.nodes[0];
    n1.agent.drop_datapath();
    let cfg = n1.config();
    let ns = n1.ns.clone();
    let (p2, p3) = (c.nodes[1].peer(), c.nodes[2].peer());
    let (pod1, pod3) = (n1.pods[0].ns.clone(), c.nodes[2].pods[0].ip);
    let scenario = in_netns_with_netlink(&n1.ns, move |handle| async move {
        let dp = Datapath::setup(cfg, handle).await.unwrap();
        use SyncKind::{Full, Incremental};
        let change =
            |name: &'static str, old: Option<&'static Peer>, new| PeerChange { name, old, new };
        // Leaked: the changes borrow them for the whole scenario.
        let p2: &'static Peer = Box::leak(Box::new(p2));
        let p3: &'static Peer = Box::leak(Box::new(p3));
        let n3: &'static str = &p3.name;
        let s = dp.sync_changes(&[p2], None, Full).await.unwrap();
        assert_eq!(counts(&s), (true, 0, 3, 0), "node 3's entries were there");

        // Node 3 appears, told as a change: its entries and its source address.
        let s = dp
            .sync_changes(&[p2, p3], Some(&[change(n3, None, Some(p3))]), Incremental)
            .await
            .unwrap();
        assert_eq!(counts(&s), (false, 3, 0, 0));
        assert_eq!((s.whole, s.peers), (false, 2), "node 3 alone was checked");
        assert!(show(&ns, "route show proto 87").contains("10.244.3.0/24"));
        // The filter's update runs on after the sync: settled, it has node 3.
        let outcome = dp.settle_filter().await.expect("an update ran").unwrap();
        assert_eq!((outcome.allowed, outcome.forgotten), (1, 0));
        assert!(peer_set(&ns).contains("192.168.77.3"), "{}", peer_set(&ns));
        assert!(ping_ok(&pod1, pod3), "pod on node 1 cannot reach node 3's");
        let s = dp.sync_changes(&[p2, p3], None, Full).await.unwrap();
        assert_eq!(counts(&s), (true, 0, 0, 0), "the full sync agrees");

        // A newcomer copying node 3's VTEP MAC: a shared claim, so the whole set is
        // checked: the newcomer is rejected, node 3 keeps its entries.
        let mut thief = c_peer("n9", "10.244.9.0/24", "192.168.77.9");
        thief.vtep.as_mut().unwrap().mac = p3.vtep.unwrap().mac;
        // Younger: neither has a creation time, and its UID sorts after node 3's.
        thief.age.uid = "z".into();
        let thief: &'static Peer = Box::leak(Box::new(thief));
        let s = dp
            .sync_changes(
                &[p2, p3, thief],
                Some(&[change("n9", None, Some(thief))]),
                Incremental,
            )
            .await
            .unwrap();
        assert_eq!(counts(&s), (false, 0, 0, 0), "{s:?}");
        assert!(s.whole, "a shared claim: every candidate was checked");
        assert_eq!(s.rejected.len(), 1, "{s:?}");
        assert_eq!(s.rejected[0].node, "n9");
        // Node 3 goes: the MAC is free, the newcomer gets entries (whole set again).
        let s = dp
            .sync_changes(
                &[p2, thief],
                Some(&[change(n3, Some(p3), None)]),
                Incremental,
            )
            .await
            .unwrap();
        assert_eq!(
            (s.full, s.added, s.removed, s.updated),
            (false, 2, 2, 1),
            "{s:?}"
        );
        assert!(s.whole);
        assert!(s.rejected.is_empty(), "{s:?}");
        let routes = show(&ns, "route show proto 87");
        assert!(!routes.contains("10.244.3.0/24"), "{routes}");
        assert!(routes.contains("10.244.9.0/24"), "{routes}");
        dp.settle_filter().await.expect("an update ran").unwrap();
        let set = peer_set(&ns);
        assert!(
            !set.contains("192.168.77.3") && set.contains("192.168.77.9"),
            "{set}"
        );
        let s = dp.sync_changes(&[p2, thief], None, Full).await.unwrap();
        assert_eq!(counts(&s), (true, 0, 0, 0), "the full sync agrees");
    });
    scenario.join().expect("scenario");
}

/// A peer that is no node of the cluster: pod CIDR `cidr`, underlay address `ip`.
fn c_peer(name: &str, cidr: &str, ip: &str) -> Peer {
    Peer {
        name: name.into(),
        pod_cidrs: vec![cidr.parse().unwrap()],
        vtep: Some(weft_common::annotations::Vtep {
            mac: "02:42:00:00:09:09".parse().unwrap(),
            public_ip: ip.parse().unwrap(),
        }),
        node_ip: Some(ip.parse().unwrap()),
        ..Default::default()
    }
}
