//! Kernel change notifications that call for a datapath sync before the periodic resync:
//! someone deleted or changed one of weft's entries by hand.
//!
//! The agent subscribes to rtnetlink's link, neighbour and IPv4 route groups in its own
//! network namespace and asks the reconcile loop for a (debounced) sync when
//! [`Filter::classify`] finds a message about weft's state:
//! * the VXLAN device deleted, or set down (its routes then vanish without notification);
//! * a permanent neighbour or FDB entry on the VXLAN device deleted or changed;
//! * a route with weft's protocol ([`ROUTE_PROTOCOL`]), or a non-kernel route in the main
//!   table through the VXLAN device, deleted or changed;
//! * a notification overrun (something may have been missed).
//!
//! No feedback loop: messages caused by the agent's own netlink socket carry its port id
//! in the header and are ignored (the kernel sets it for routes, neighbours and links).
//! The VXLAN driver sends its FDB notifications with port id 0, whoever wrote the entry:
//! those that agree with the datapath's [`FdbIntent`] (an entry weft meant to write is
//! there, one it meant to remove is gone) are the echo of its own writes and are ignored
//! too ([`fdb_echo`]); any other calls for a sync.

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc;

use std::net::IpAddr;

use crate::datapath::{FdbIntent, ROUTE_PROTOCOL};

/// The main routing table.
const MAIN_TABLE: u8 = 254;
/// Receive buffer asked for the notification socket: room for a burst (a big sync).
const RX_BUFFER: usize = 4 << 20;

/// Decides which notifications concern weft's datapath.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The VXLAN device's name ("weft.1").
    pub device: String,
    /// Its current ifindex (followed across re-creations through link messages).
    pub ifindex: u32,
    /// The port id of the agent's own netlink socket; its messages are ignored.
    pub own_port: Option<u32>,
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// weft's neighbours and FDB entries are permanent (FDB entries: NOARP|PERMANENT, a
/// combination the state enum does not name).
fn permanent(n: &NeighbourMessage) -> bool {
    const NUD_PERMANENT: u16 = 0x80;
    u16::from(n.header.state) & NUD_PERMANENT != 0
}

impl Filter {
    /// Why `msg` (sent with netlink port id `port`) calls for a sync, or `None`.
    pub fn classify(
        &mut self,
        port: u32,
        msg: &NetlinkPayload<RouteNetlinkMessage>,
    ) -> Option<&'static str> {
        let inner = match msg {
            NetlinkPayload::Overrun(_) => return Some("notifications overrun"),
            NetlinkPayload::InnerMessage(m) => m,
            _ => return None,
        };
        if port != 0 && Some(port) == self.own_port {
            return None;
        }
        use RouteNetlinkMessage as M;
        match inner {
            M::NewLink(l) | M::DelLink(l) if link_name(l) == Some(self.device.as_str()) => {
                if matches!(inner, M::DelLink(_)) {
                    return Some("VXLAN device deleted");
                }
                self.ifindex = l.header.index;
                (!l.header.flags.contains(LinkFlags::Up)).then_some("VXLAN device down")
            }
            M::NewNeighbour(n) if n.header.ifindex == self.ifindex && permanent(n) => {
                Some("neighbour/FDB entry changed")
            }
            // The kernel reports an `ip neigh del` as state FAILED: any state counts.
            M::DelNeighbour(n) if n.header.ifindex == self.ifindex => {
                Some("neighbour/FDB entry deleted")
            }
            M::NewRoute(r) if self.weft_route(r) => Some("route changed"),
            M::DelRoute(r) if self.weft_route(r) => Some("route deleted"),
            _ => None,
        }
    }

    fn weft_route(&self, r: &RouteMessage) -> bool {
        if u8::from(r.header.protocol) == ROUTE_PROTOCOL {
            return true;
        }
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        let via_device = r
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == self.ifindex));
        via_device && table == u32::from(MAIN_TABLE) && r.header.protocol != RouteProtocol::Kernel
    }
}

/// Whether `msg` is the VXLAN driver's report of an FDB write that agrees with `intent`
/// (the echo of weft's own write: no reason for a sync).
pub fn fdb_echo(msg: &NetlinkPayload<RouteNetlinkMessage>, intent: &FdbIntent) -> bool {
    use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
    use netlink_packet_route::AddressFamily;
    let (n, present) = match msg {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => (n, true),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => (n, false),
        _ => return false,
    };
    if n.header.family != AddressFamily::Bridge {
        return false;
    }
    let mut mac = None;
    let mut dst = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => {
                mac = <[u8; 6]>::try_from(l.as_slice())
                    .ok()
                    .map(weft_common::annotations::Mac)
            }
            // The parser types the address by the message's family: an FDB entry's
            // (AF_BRIDGE) remote comes as raw bytes.
            NeighbourAttribute::Destination(a) => {
                dst = match a {
                    NeighbourAddress::Inet(ip) => Some((*ip).into()),
                    NeighbourAddress::Inet6(ip) => Some((*ip).into()),
                    NeighbourAddress::Other(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => {}
        }
    }
    match (mac, dst) {
        (Some(mac), Some(dst)) => intent.agrees(mac, dst, present),
        _ => false,
    }
}

/// Subscribes to the notifications in the calling thread's network namespace; must be
/// called there (the socket is bound at creation) within a tokio runtime. The returned
/// future forwards the reason of each relevant notification to `kick` until the socket or
/// the receiver is gone. Every FDB notification counts (see [`subscribe_with_intent`]).
pub fn subscribe(
    filter: Filter,
    kick: mpsc::UnboundedSender<&'static str>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    subscribe_with_intent(filter, FdbIntent::default(), kick)
}

/// [`subscribe`], ignoring FDB notifications that agree with `intent` ([`fdb_echo`]).
pub fn subscribe_with_intent(
    mut filter: Filter,
    intent: FdbIntent,
    kick: mpsc::UnboundedSender<&'static str>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    let (mut conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])?;
    if let Err(e) =
        rtnetlink::sys::AsyncSocket::socket_mut(conn.socket_mut()).set_rx_buf_sz(RX_BUFFER)
    {
        tracing::debug!(error = %e, "cannot enlarge the notification socket's buffer");
    }
    let conn = tokio::spawn(conn);
    Ok(async move {
        use futures::StreamExt;
        while let Some((msg, _)) = messages.next().await {
            let msg: NetlinkMessage<RouteNetlinkMessage> = msg;
            let reason = filter.classify(msg.header.port_number, &msg.payload);
            if let Some(reason) = reason.filter(|_| !fdb_echo(&msg.payload, &intent)) {
                tracing::debug!(reason, "kernel change to weft's datapath; sync requested");
                if kick.send(reason).is_err() {
                    break;
                }
            }
        }
        conn.abort();
        tracing::warn!("kernel notifications ended; hand-made changes are repaired at the periodic resync only");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::{NeighbourHeader, NeighbourState};
    use netlink_packet_route::route::RouteHeader;
    use netlink_packet_route::AddressFamily;

    fn filter() -> Filter {
        Filter {
            device: "weft.1".into(),
            ifindex: 7,
            own_port: Some(4242),
        }
    }

    fn inner(m: RouteNetlinkMessage) -> NetlinkPayload<RouteNetlinkMessage> {
        NetlinkPayload::InnerMessage(m)
    }

    fn neigh(ifindex: u32, state: NeighbourState, family: AddressFamily) -> NeighbourMessage {
        let mut n = NeighbourMessage::default();
        n.header = NeighbourHeader {
            family,
            ifindex,
            state,
            ..Default::default()
        };
        n
    }

    fn route(protocol: RouteProtocol, oif: u32, table: u8) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header = RouteHeader {
            protocol,
            table,
            ..Default::default()
        };
        r.attributes.push(RouteAttribute::Oif(oif));
        r
    }

    fn link(name: &str, index: u32, up: bool) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        if up {
            l.header.flags = LinkFlags::Up;
        }
        l.attributes.push(LinkAttribute::IfName(name.into()));
        l
    }

    #[test]
    fn deleted_or_changed_weft_entries_call_for_a_sync() {
        let mut f = filter();
        let m = RouteNetlinkMessage::DelNeighbour(neigh(
            7,
            NeighbourState::Failed,
            AddressFamily::Inet,
        ));
        assert!(
            f.classify(0, &inner(m)).is_some(),
            "ip neigh del says FAILED"
        );
        let m = RouteNetlinkMessage::DelNeighbour(neigh(
            7,
            NeighbourState::Permanent,
            AddressFamily::Bridge,
        ));
        assert!(f.classify(0, &inner(m)).is_some());
        // An FDB entry is NOARP|PERMANENT.
        let fdb = NeighbourState::Other(0xc0);
        let m = RouteNetlinkMessage::NewNeighbour(neigh(7, fdb, AddressFamily::Bridge));
        assert!(f.classify(0, &inner(m)).is_some());
        let m = RouteNetlinkMessage::NewNeighbour(neigh(
            7,
            NeighbourState::Permanent,
            AddressFamily::Inet,
        ));
        assert!(f.classify(999, &inner(m)).is_some());
        let m = RouteNetlinkMessage::DelRoute(route(RouteProtocol::Other(87), 7, 254));
        assert!(f.classify(999, &inner(m)).is_some());
        let m = RouteNetlinkMessage::NewRoute(route(RouteProtocol::Boot, 7, 254));
        assert!(
            f.classify(999, &inner(m)).is_some(),
            "our route replaced by a foreign one"
        );
        assert!(f.classify(0, &NetlinkPayload::Overrun(vec![])).is_some());
    }

    #[test]
    fn own_messages_and_unrelated_ones_are_ignored() {
        let mut f = filter();
        let m = RouteNetlinkMessage::DelRoute(route(RouteProtocol::Other(87), 7, 254));
        assert_eq!(f.classify(4242, &inner(m)), None, "our own socket");
        let m = RouteNetlinkMessage::DelNeighbour(neigh(
            8,
            NeighbourState::Permanent,
            AddressFamily::Inet,
        ));
        assert_eq!(f.classify(0, &inner(m)), None, "another device");
        let m =
            RouteNetlinkMessage::NewNeighbour(neigh(7, NeighbourState::Stale, AddressFamily::Inet));
        assert_eq!(
            f.classify(0, &inner(m)),
            None,
            "not one of ours (not permanent)"
        );
        let m = RouteNetlinkMessage::DelRoute(route(RouteProtocol::Kernel, 7, 255));
        assert_eq!(f.classify(0, &inner(m)), None, "the kernel's local route");
        let m = RouteNetlinkMessage::DelRoute(route(RouteProtocol::Boot, 3, 254));
        assert_eq!(f.classify(0, &inner(m)), None, "someone else's route");
        let m = RouteNetlinkMessage::NewLink(link("eth0", 3, false));
        assert_eq!(f.classify(0, &inner(m)), None);
        let m = RouteNetlinkMessage::NewLink(link("weft.1", 7, true));
        assert_eq!(f.classify(0, &inner(m)), None, "device up");
    }

    /// An FDB notification as the parser hands it over: emitted, then parsed back (the
    /// remote of an AF_BRIDGE message comes out as raw bytes).
    fn fdb_msg(new: bool, mac: [u8; 6], dst: [u8; 4]) -> NetlinkPayload<RouteNetlinkMessage> {
        use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
        use rtnetlink::packet_core::Emitable;
        let mut n = neigh(7, NeighbourState::Other(0xc0), AddressFamily::Bridge);
        n.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Other(
                dst.to_vec(),
            )));
        let m = if new {
            RouteNetlinkMessage::NewNeighbour(n)
        } else {
            RouteNetlinkMessage::DelNeighbour(n)
        };
        let mut msg = NetlinkMessage::from(m);
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).unwrap();
        if let NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n),
        ) = &parsed.payload
        {
            assert!(n.attributes.iter().any(|a| matches!(
                a,
                NeighbourAttribute::Destination(NeighbourAddress::Other(_))
            )));
        }
        parsed.payload
    }

    #[test]
    fn fdb_notifications_that_agree_with_the_intent_are_the_echo_of_weft_s_writes() {
        use weft_common::annotations::Mac;
        let (m2, m3, m9) = ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 9]);
        let intent: FdbIntent = [
            (Mac(m2), "192.168.0.2".parse().unwrap()),
            (Mac(m3), "192.168.0.3".parse().unwrap()),
        ]
        .into_iter()
        .collect();
        let mut f = filter();
        let kicks = |msg: NetlinkPayload<RouteNetlinkMessage>, f: &mut Filter| {
            f.classify(0, &msg).is_some() && !fdb_echo(&msg, &intent)
        };
        // weft wrote these: an entry it meant to have, one it meant to remove.
        assert!(!kicks(fdb_msg(true, m2, [192, 168, 0, 2]), &mut f));
        assert!(!kicks(fdb_msg(false, m9, [192, 168, 0, 9]), &mut f));
        assert!(
            !kicks(fdb_msg(false, m3, [192, 168, 0, 33]), &mut f),
            "old remote replaced"
        );
        // Someone else: an entry weft means to have deleted, or pointed elsewhere, or a
        // stranger added.
        assert!(kicks(fdb_msg(false, m2, [192, 168, 0, 2]), &mut f));
        assert!(kicks(fdb_msg(true, m3, [192, 168, 0, 99]), &mut f));
        assert!(kicks(fdb_msg(true, m9, [192, 168, 0, 9]), &mut f));
        // No intent known yet (before the first sync): everything counts.
        let unknown = FdbIntent::default();
        assert!(!fdb_echo(&fdb_msg(true, m2, [192, 168, 0, 2]), &unknown));
        // Only FDB entries: a neighbour on the device is never taken for an echo.
        let m = inner(RouteNetlinkMessage::DelNeighbour(neigh(
            7,
            NeighbourState::Permanent,
            AddressFamily::Inet,
        )));
        assert!(!fdb_echo(&m, &intent));
    }

    #[test]
    fn device_deleted_or_down_calls_for_a_sync_and_a_new_ifindex_is_followed() {
        let mut f = filter();
        let m = RouteNetlinkMessage::DelLink(link("weft.1", 7, true));
        assert!(f.classify(0, &inner(m)).is_some());
        let m = RouteNetlinkMessage::NewLink(link("weft.1", 9, false));
        assert!(f.classify(0, &inner(m)).is_some());
        assert_eq!(f.ifindex, 9);
        let m = RouteNetlinkMessage::DelNeighbour(neigh(
            9,
            NeighbourState::Permanent,
            AddressFamily::Inet,
        ));
        assert!(f.classify(0, &inner(m)).is_some());
    }
}
