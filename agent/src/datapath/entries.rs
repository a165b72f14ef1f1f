//! The writing half of a sync: apply a [`Plan`] with many netlink requests in flight at a
//! time on one socket (the dump is [`super::dump`]'s).

use std::net::IpAddr;

use futures::stream::{FuturesUnordered, StreamExt};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::Handle;

use super::error::errno;
use super::plan::{Change, Fdb, Neigh, Plan, Route, MAIN_TABLE, ROUTE_PROTOCOL};
use super::Error;

/// Requests in flight at once. The answers (acks of ~36 bytes) stay far below the
/// socket's receive buffer.
const IN_FLIGHT: usize = 256;

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// `ip neigh replace <ip> lladdr <mac> dev <device> nud permanent` (or `del` without mac).
fn neigh_msg(device: u32, n: &Neigh, with_mac: bool) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(&n.ip);
    m.header.ifindex = device;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(n.ip)));
    if with_mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(n.mac.0.to_vec()));
    }
    m
}

/// `bridge fdb replace <mac> dev <device> dst <ip> self permanent`.
fn fdb_msg(device: u32, f: &Fdb) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = device;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(f.dst)));
    m
}

/// A route in the main table with weft's protocol.
fn route_msg(r: &Route, for_delete: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: family(&r.dst.addr()),
        destination_prefix_length: r.dst.prefix_len(),
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::from(ROUTE_PROTOCOL),
        // A delete matches any scope; weft's routes all have a gateway (universe).
        scope: if for_delete {
            RouteScope::NoWhere
        } else {
            RouteScope::Universe
        },
        kind: RouteType::Unicast,
        ..Default::default()
    };
    if r.onlink {
        m.header.flags.insert(RouteFlags::Onlink);
    }
    m.attributes
        .push(RouteAttribute::Destination(r.dst.network().into()));
    if !r.gateway.is_unspecified() {
        m.attributes.push(RouteAttribute::Gateway(r.gateway.into()));
    }
    if r.oif != 0 {
        m.attributes.push(RouteAttribute::Oif(r.oif));
    }
    if r.priority != 0 {
        m.attributes.push(RouteAttribute::Priority(r.priority));
    }
    debug_assert_eq!(MAIN_TABLE, u32::from(RouteHeader::RT_TABLE_MAIN));
    m
}

/// How a request writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Delete,
    /// Create or overwrite: neighbours and FDB entries live on weft's own device, and a
    /// route is replaced only where the dump found weft's own route for that key.
    Replace,
    /// Create only (`NLM_F_EXCL`): a new route never overwrites one weft did not write
    /// (the kernel's connected route, an operator's); the kernel answers EEXIST instead.
    Exclusive,
}

/// One request and its label for errors.
struct Request {
    msg: RouteNetlinkMessage,
    mode: Mode,
    peer: String,
    entry: String,
}

fn route_mode(change: Change) -> Mode {
    match change {
        Change::Add => Mode::Exclusive,
        Change::Update => Mode::Replace,
    }
}

/// Sends `req` at once (requests reach the kernel in the order of these calls) and
/// returns the future of its answer.
fn send(
    handle: &mut Handle,
    req: Request,
) -> Result<impl std::future::Future<Output = Result<(), Error>>, Error> {
    let Request {
        msg: req,
        mode,
        peer,
        entry,
    } = req;
    let mut msg = NetlinkMessage::from(req);
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    match mode {
        Mode::Delete => {}
        Mode::Replace => msg.header.flags |= NLM_F_CREATE | NLM_F_REPLACE,
        Mode::Exclusive => msg.header.flags |= NLM_F_CREATE | NLM_F_EXCL,
    }
    let fail = move |source| Error::Entry {
        peer,
        entry,
        source,
    };
    let mut answers = match handle.request(msg) {
        Ok(answers) => answers,
        Err(e) => return Err(fail(e)),
    };
    Ok(async move {
        while let Some(answer) = answers.next().await {
            if let NetlinkPayload::Error(e) = answer.payload {
                let err = rtnetlink::Error::NetlinkError(e);
                // Deleting what is already gone is success: the goal is its absence.
                if mode == Mode::Delete
                    && matches!(errno(&err), Some(libc::ENOENT) | Some(libc::ESRCH))
                {
                    return Ok(());
                }
                return Err(fail(err));
            }
        }
        Ok(())
    })
}

/// Sends `reqs` in their order, with at most `IN_FLIGHT` unanswered, and collects the
/// failures.
async fn run_all(handle: &Handle, reqs: Vec<Request>, failures: &mut Vec<Error>) {
    let mut handle = handle.clone();
    let mut in_flight = FuturesUnordered::new();
    for req in reqs {
        while in_flight.len() >= IN_FLIGHT {
            if let Some(Err(e)) = in_flight.next().await {
                failures.push(e);
            }
        }
        match send(&mut handle, req) {
            Ok(answer) => in_flight.push(answer),
            Err(e) => failures.push(e),
        }
    }
    while let Some(result) = in_flight.next().await {
        if let Err(e) = result {
            failures.push(e);
        }
    }
}

const STALE: &str = "(stale)";

/// Applies `plan` to the VXLAN device `device` in the order [`Plan`] documents.
/// Every request is tried; the error reports how many failed and the first failure.
///
/// The requests go out in that order on one socket without waiting for answers between
/// the kinds of entry: the kernel carries out a socket's requests one after the other,
/// each within the send that carries it, so a route still never exists before its
/// neighbour and FDB entry, and no kind of entry waits for the slowest answer of the
/// kind before. (rtnetlink's connection still writes one request per poll, so a new
/// peer's three requests are three trips through the runtime: measured, this saved
/// little at one change.)
pub async fn apply(handle: &Handle, device: u32, plan: &Plan) -> Result<(), Error> {
    let mut reqs: Vec<Request> = Vec::with_capacity(plan.len());
    reqs.extend(plan.del_routes.iter().map(|r| Request {
        msg: RouteNetlinkMessage::DelRoute(route_msg(r, true)),
        mode: Mode::Delete,
        peer: STALE.into(),
        entry: format!("delete route {} via {}", r.dst, r.gateway),
    }));
    reqs.extend(plan.del_neighs.iter().map(|n| Request {
        msg: RouteNetlinkMessage::DelNeighbour(neigh_msg(device, n, false)),
        mode: Mode::Delete,
        peer: STALE.into(),
        entry: format!("delete neighbour {}", n.ip),
    }));
    reqs.extend(plan.del_fdb.iter().map(|f| Request {
        msg: RouteNetlinkMessage::DelNeighbour(fdb_msg(device, f)),
        mode: Mode::Delete,
        peer: STALE.into(),
        entry: format!("delete FDB {} dst {}", f.mac, f.dst),
    }));
    reqs.extend(plan.set_neighs.iter().map(|s| Request {
        msg: RouteNetlinkMessage::NewNeighbour(neigh_msg(device, &s.entry, true)),
        mode: Mode::Replace,
        peer: s.peer.clone(),
        entry: format!("neighbour {} lladdr {}", s.entry.ip, s.entry.mac),
    }));
    reqs.extend(plan.set_fdb.iter().map(|s| Request {
        msg: RouteNetlinkMessage::NewNeighbour(fdb_msg(device, &s.entry)),
        mode: Mode::Replace,
        peer: s.peer.clone(),
        entry: format!("FDB {} dst {}", s.entry.mac, s.entry.dst),
    }));
    reqs.extend(plan.set_routes.iter().map(|s| Request {
        msg: RouteNetlinkMessage::NewRoute(route_msg(&s.entry, false)),
        mode: route_mode(s.change),
        peer: s.peer.clone(),
        entry: format!("route {} via {}", s.entry.dst, s.entry.gateway),
    }));
    let mut failures = Vec::new();
    run_all(handle, reqs, &mut failures).await;

    let failed = failures.len();
    match failures.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(Error::Entries {
            failed,
            total: plan.len(),
            first: Box::new(first),
        }),
    }
}
