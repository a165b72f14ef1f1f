//! The order in which a sync's entries reach the kernel: they are sent without waiting for
//! answers between the kinds of entry, and the kernel must still see every new peer's
//! neighbour and FDB entry before its route, and a gone peer's route deleted before its
//! neighbour and FDB entry. The kernel's notifications, sent as it carries out each
//! request, show the order.

mod datapath_support;

use std::net::IpAddr;
use std::time::Duration;

use datapath_support::*;
use futures::StreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::MulticastGroup;
use weft_agent::datapath::{Datapath, SyncKind};
use weft_agent::peers::Peer;
use weft_common::annotations::{Mac, Vtep};

/// What a notification was about, in the words of the test.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Neigh(bool, IpAddr),
    Fdb(bool, Mac),
    Route(bool, IpAddr),
}

fn seen(msg: RouteNetlinkMessage) -> Option<Seen> {
    let (new, n) = match msg {
        RouteNetlinkMessage::NewNeighbour(n) => (true, n),
        RouteNetlinkMessage::DelNeighbour(n) => (false, n),
        RouteNetlinkMessage::NewRoute(r) => return route(true, &r),
        RouteNetlinkMessage::DelRoute(r) => return route(false, &r),
        _ => return None,
    };
    if n.header.family == AddressFamily::Bridge {
        return n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                Some(Seen::Fdb(new, Mac(l[..6].try_into().unwrap())))
            }
            _ => None,
        });
    }
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
            Some(Seen::Neigh(new, IpAddr::V4(*ip)))
        }
        _ => None,
    })
}

fn route(new: bool, r: &RouteMessage) -> Option<Seen> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(Seen::Route(new, (*ip).into())),
        _ => None,
    })
}

/// Every notification until none came for half a second.
async fn drain<S, A>(notes: &mut S) -> Vec<Seen>
where
    S: futures::Stream<Item = (NetlinkMessage<RouteNetlinkMessage>, A)> + Unpin,
{
    let mut got = Vec::new();
    let quiet = Duration::from_millis(500);
    while let Ok(Some((msg, _))) = tokio::time::timeout(quiet, notes.next()).await {
        if let NetlinkPayload::InnerMessage(m) = msg.payload {
            got.extend(seen(m));
        }
    }
    got
}

/// Peer `i`: pod CIDR 10.244.(100+i).0/24, MAC 02:42:00:00:aa:i, underlay 192.168.77.(150+i).
fn peer(i: u8) -> Peer {
    let ip: IpAddr = format!("192.168.77.{}", 150 + u32::from(i))
        .parse()
        .unwrap();
    Peer {
        name: format!("p{i}"),
        pod_cidrs: vec![format!("10.244.{}.0/24", 100 + u32::from(i))
            .parse()
            .unwrap()],
        vtep: Some(Vtep {
            mac: Mac([2, 0x42, 0, 0, 0xaa, i]),
            public_ip: ip,
        }),
        node_ip: Some(ip),
        ..Default::default()
    }
}

#[test]
fn routes_reach_the_kernel_after_their_neighbours_and_fdb_entries_and_go_before_them() {
    if !weft_common::require_root(
        "routes_reach_the_kernel_after_their_neighbours_and_fdb_entries_and_go_before_them",
    ) {
        return;
    }
    let c = Cluster::new("order", 1, 0);
    let n1 = &c.nodes[0];
    n1.agent.drop_datapath();
    let cfg = n1.config();
    let scenario = in_netns_with_netlink(&n1.ns, move |handle| async move {
        let (conn, _, mut notes) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Route,
        ])
        .unwrap();
        tokio::spawn(conn);
        let dp = Datapath::setup(cfg, handle).await.unwrap();
        dp.sync_kind(&[], SyncKind::Full).await.unwrap();
        let peers: Vec<Peer> = (1..=40).map(peer).collect();
        let refs: Vec<&Peer> = peers.iter().collect();
        let position = |log: &[Seen], s: &Seen| {
            log.iter()
                .position(|x| x == s)
                .unwrap_or_else(|| panic!("no {s:?} in {log:?}"))
        };

        let s = dp.sync_kind(&refs, SyncKind::Incremental).await.unwrap();
        assert_eq!(s.added, 120);
        let log = drain(&mut notes).await;
        for p in &peers {
            let vtep = p.pod_cidrs[0].network();
            let route = position(&log, &Seen::Route(true, vtep));
            assert!(position(&log, &Seen::Neigh(true, vtep)) < route, "{p:?}");
            let mac = p.vtep.unwrap().mac;
            assert!(position(&log, &Seen::Fdb(true, mac)) < route, "{p:?}");
        }

        let s = dp.sync_kind(&[], SyncKind::Incremental).await.unwrap();
        assert_eq!(s.removed, 120);
        let log = drain(&mut notes).await;
        for p in &peers {
            let vtep = p.pod_cidrs[0].network();
            let route = position(&log, &Seen::Route(false, vtep));
            assert!(route < position(&log, &Seen::Neigh(false, vtep)), "{p:?}");
            let mac = p.vtep.unwrap().mac;
            assert!(route < position(&log, &Seen::Fdb(false, mac)), "{p:?}");
        }
    });
    scenario.join().expect("scenario");
}
