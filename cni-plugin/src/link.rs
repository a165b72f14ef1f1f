//! The kernel side: the bridge, the veth pair, in-pod addresses and routes. Every call is
//! one netlink round-trip; nothing here spawns `ip`.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortKind,
    InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{
    Handle, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use weft_common::bridge::{
    addresses, ensure_bridge, link_alias, link_by_name, link_kind, link_mac, link_mtu,
};
use weft_common::netns::Netns;
use weft_common::subnet_file::NodeSubnet;

use weft_cni::host_veth;

use crate::spec::error::{CniError, HOST_VETH_TAKEN, INTERFACE_EXISTS};

pub fn fmt_mac(m: [u8; 6]) -> String {
    weft_common::annotations::Mac(m).to_string()
}

/// A random locally administered unicast MAC (so the host end's MAC is known without
/// asking the kernel back).
pub fn random_mac() -> [u8; 6] {
    let mut m = [0u8; 6];
    // SAFETY: getrandom writes at most `m.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(m.as_mut_ptr().cast(), m.len(), 0) };
    if n != m.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ std::process::id() as u128;
        m.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    m[0] = (m[0] & 0xfe) | 0x02;
    m
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn nl_err(op: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> CniError {
    move |e| CniError::netlink(format!("{op}: {e}"))
}

/// A netlink handle whose socket lives in `ns`: the calling thread enters `ns` just long
/// enough to open the socket, then goes back. Call from inside the runtime.
pub fn connect_in(ns: &Netns) -> Result<Handle, CniError> {
    let here =
        File::open("/proc/thread-self/ns/net").map_err(|e| CniError::io("open own netns", e))?;
    ns.enter()?;
    let conn = rtnetlink::new_connection();
    nix::sched::setns(here.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| CniError::netlink(format!("return to the host netns: {e}")))?;
    let (conn, handle, _) = conn
        .map_err(|e| CniError::netlink(format!("netlink socket in {}: {e}", ns.path.display())))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// A netlink handle in the current netns, with strict checking on where the kernel has
/// it (so dumps filtered by interface are filtered by the kernel). Call from inside the
/// runtime.
pub fn connect() -> Result<Handle, CniError> {
    let (mut conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| CniError::netlink(format!("netlink socket: {e}")))?;
    // Older kernels lack the option; the dump is then filtered here instead.
    let _ =
        rtnetlink::sys::AsyncSocket::socket_ref(conn.socket_mut()).set_netlink_get_strict_chk(true);
    tokio::spawn(conn);
    Ok(handle)
}

/// The bridge's index and MAC, creating or fixing it only when needed (one lookup and
/// one address dump of the bridge alone when it is already right).
pub async fn bridge(host: &Handle, subnet: &NodeSubnet) -> Result<(u32, [u8; 6]), CniError> {
    let gateways: Vec<(IpAddr, IpNet)> = subnet
        .gateways
        .iter()
        .copied()
        .zip(subnet.node_cidrs.iter().copied())
        .collect();
    if let Some(link) = link_by_name(host, &subnet.bridge).await? {
        let ok = link_kind(&link) == Some(&InfoKind::Bridge)
            && link.header.flags.contains(LinkFlags::Up)
            && link_mtu(&link) == Some(subnet.mtu);
        let index = link.header.index;
        // Only the bridge's own addresses: with strict checking the kernel filters, so
        // the cost does not grow with the number of pods on the node.
        if ok {
            let have = addresses(host, index).await?;
            if gateways
                .iter()
                .all(|(gw, net)| have.contains(&(*gw, net.prefix_len())))
            {
                return Ok((index, link_mac(&link).unwrap_or_default()));
            }
        }
    }
    let index = ensure_bridge(host, &subnet.bridge, subnet.mtu, &gateways).await?;
    let mac = link_by_name(host, &subnet.bridge)
        .await?
        .and_then(|l| link_mac(&l))
        .unwrap_or_default();
    Ok((index, mac))
}

pub struct VethSpec<'a> {
    pub host_name: &'a str,
    /// The host end's alias: [`host_veth::ownership_mark`] of the container.
    pub mark: &'a str,
    pub host_mac: [u8; 6],
    pub pod_ifname: &'a str,
    pub mtu: u32,
    pub bridge_index: u32,
    pub netns: &'a Netns,
}

/// Creates the pair: the host end attached to the bridge, the peer created directly
/// inside the pod netns, named `pod_ifname`. A second message sets hairpin on the host
/// end, its ownership mark (alias), and brings it up without IPv6 address generation: a
/// bridge port needs no link-local address, and skipping it saves the kernel an address,
/// a route and DAD per pod (and keeps host address dumps small). The second message
/// goes only once the first succeeded, at the cost of a round trip: it names the link,
/// and when the name is already taken that link is not ours to touch. Sets `created`
/// once the pair exists (so the caller knows what to roll back).
pub async fn create_veth(
    host: &Handle,
    pod: &Handle,
    s: &VethSpec<'_>,
    created: &mut bool,
) -> Result<(), CniError> {
    // The peer cannot be brought up in this message: the kernel opens it before the pair
    // is joined (ENOTCONN). `pod_up` does it.
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(s.pod_ifname)
        .mtu(s.mtu)
        .setns_by_fd(s.netns.fd.as_raw_fd())
        .build();
    peer.attributes.extend(one_queue());
    // IFLA_AF_SPEC is refused on create (EAFNOSUPPORT), and IFLA_IFALIAS is ignored
    // there: hence the second message.
    let mut msg = LinkVeth::new(s.host_name, s.pod_ifname)
        .mtu(s.mtu)
        .address(s.host_mac.to_vec())
        .controller(s.bridge_index)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    msg.attributes.extend(one_queue());
    if let Err(e) = host.link().add(msg).execute().await {
        if errno(&e) == Some(libc::EEXIST) {
            return Err(name_taken(host, pod, s).await);
        }
        return Err(nl_err(format!(
            "create veth {} / {}",
            s.host_name, s.pod_ifname
        ))(e));
    }
    *created = true;
    host.link()
        .set_port(port_message(s))
        .execute()
        .await
        .map_err(nl_err(format!("hairpin, alias and up on {}", s.host_name)))
}

/// Hairpin, the ownership mark, up, and no IPv6 address generation, for the host end.
fn port_message(s: &VethSpec<'_>) -> LinkMessage {
    let mut port = LinkMessageBuilder::<LinkBridgePort>::default()
        .name(s.host_name)
        .set_port_kind(InfoPortKind::Bridge)
        .append_info_data(InfoBridgePort::HairpinMode(true))
        .up()
        .build();
    port.attributes
        .push(LinkAttribute::IfAlias(s.mark.to_owned()));
    if weft_common::kernel_has_ipv6() {
        port.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
    }
    port
}

/// The error for a create that found a name taken: the pod interface already there
/// (102), a host end of this same container left by an earlier ADD (102), or a host end
/// that is someone else's (107, a name collision). Only looks; changes nothing.
async fn name_taken(host: &Handle, pod: &Handle, s: &VethSpec<'_>) -> CniError {
    match link_by_name(pod, s.pod_ifname).await {
        Ok(Some(_)) => {
            return CniError::new(
                INTERFACE_EXISTS,
                format!(
                    "interface {} already exists in netns {}",
                    s.pod_ifname,
                    s.netns.path.display()
                ),
            )
        }
        Ok(None) => {}
        Err(e) => return e.into(),
    }
    let alias = match link_by_name(host, s.host_name).await {
        Ok(link) => link.as_ref().and_then(link_alias).map(str::to_owned),
        Err(e) => return e.into(),
    };
    if alias.as_deref() == Some(s.mark) {
        return CniError::new(
            INTERFACE_EXISTS,
            format!(
                "host veth {} already exists (an earlier ADD of this container was not deleted)",
                s.host_name
            ),
        );
    }
    CniError::new(
        HOST_VETH_TAKEN,
        format!(
            "host veth name {} is taken by a link that is not this container's (alias {}): \
             a name collision; that link was left alone",
            s.host_name,
            alias.as_deref().map_or("none".into(), |a| format!("{a:?}")),
        ),
    )
}

/// Who holds the host veth name of a container.
#[derive(Debug, PartialEq, Eq)]
pub enum HostVeth {
    /// No link has the name.
    Absent,
    /// The container's own host end (it carries the container's mark): its index.
    Mine(u32),
    /// A link with no mark at all (an ADD cut short before it set the mark, or a link
    /// that is not weft's): its index. Deleted only with other proof of ownership.
    Unmarked(u32),
    /// Some other link, marked by someone else: its alias.
    Other(Option<String>),
}

/// Looks up `name` and judges it against the container's `mark`.
pub async fn host_veth(host: &Handle, name: &str, mark: &str) -> Result<HostVeth, CniError> {
    let Some(link) = link_by_name(host, name).await? else {
        return Ok(HostVeth::Absent);
    };
    Ok(match link_alias(&link) {
        Some(a) if a == mark => HostVeth::Mine(link.header.index),
        None => HostVeth::Unmarked(link.header.index),
        other => HostVeth::Other(other.map(str::to_owned)),
    })
}

/// One TX and one RX queue, said explicitly. Without them a veth end gets one queue per
/// CPU and the kernel then cuts the active count down to one, which waits for an
/// expedited RCU grace period: twice per pair, and on a busy node that wait was the
/// largest single part of an ADD. One queue is what a veth uses anyway.
fn one_queue() -> [LinkAttribute; 2] {
    [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)]
}

/// Looks up the pod interface: (index, MAC).
pub async fn pod_link(
    pod: &Handle,
    ifname: &str,
) -> Result<Option<(u32, [u8; 6], LinkMessage)>, CniError> {
    Ok(link_by_name(pod, ifname)
        .await?
        .map(|l| (l.header.index, link_mac(&l).unwrap_or_default(), l)))
}

/// Brings the pod interface up.
pub async fn pod_up(pod: &Handle, index: u32) -> Result<(), CniError> {
    pod.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl_err("set the pod interface up"))
}

/// Adds an address to the pod interface; IPv6 without DAD.
pub async fn add_address(pod: &Handle, index: u32, addr: IpNet) -> Result<(), CniError> {
    let mut req = pod.address().add(index, addr.addr(), addr.prefix_len());
    if addr.addr().is_ipv6() {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute()
        .await
        .map_err(nl_err(format!("add address {addr} in the pod")))
}

/// The pod's default route via `gw` on interface `index`. `Ok(false)` when the pod
/// already has a default route (a second interface): that one is left alone.
pub async fn add_default_route(pod: &Handle, index: u32, gw: IpAddr) -> Result<bool, CniError> {
    let msg = default_route_msg(index, gw);
    match pod.route().add(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl_err(format!("add default route via {gw} in the pod"))(e)),
    }
}

fn default_route_msg(index: u32, gw: IpAddr) -> RouteMessage {
    match gw {
        IpAddr::V4(g) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .gateway(g)
            .output_interface(index)
            .build(),
        IpAddr::V6(g) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .gateway(g)
            .output_interface(index)
            .build(),
    }
}

/// Deletes a link by name; `Ok(false)` when it was not there.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool, CniError> {
    let msg = LinkUnspec::new_with_name(name).build();
    match handle.link().del_with_message(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl_err(format!("delete link {name}"))(e)),
    }
}

/// Deletes the link with `index` (the one just looked up and judged, not whatever holds
/// its name by now); `Ok(false)` when it was not there.
pub async fn delete_link_index(handle: &Handle, index: u32, name: &str) -> Result<bool, CniError> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl_err(format!("delete link {name} (index {index})"))(e)),
    }
}

/// Host veths this plugin made that hang off bridge `bridge_index`: (name).
pub async fn weft_veths_on(host: &Handle, bridge_index: u32) -> Result<Vec<String>, CniError> {
    let mut out = Vec::new();
    let mut links = host.link().get().execute();
    while let Some(l) = links.try_next().await.map_err(nl_err("list links"))? {
        let name = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let on_bridge = l
            .attributes
            .contains(&LinkAttribute::Controller(bridge_index));
        if let Some(name) = name.filter(|n| host_veth::is_name(n)) {
            if on_bridge && link_kind(&l) == Some(&InfoKind::Veth) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// Routes in the pod's main table: (destination, gateway, output ifindex).
pub async fn pod_routes(
    pod: &Handle,
) -> Result<Vec<(IpNet, Option<IpAddr>, Option<u32>)>, CniError> {
    let mut out = Vec::new();
    for msg in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let v6 = matches!(
            msg.header.address_family,
            netlink_packet_route::AddressFamily::Inet6
        );
        let mut routes = pod.route().get(msg).execute();
        while let Some(r) = routes
            .try_next()
            .await
            .map_err(nl_err("list routes in the pod"))?
        {
            if r.header.table
                != RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .build()
                    .header
                    .table
            {
                continue;
            }
            let mut dst: IpAddr = if v6 {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            let (mut gw, mut oif) = (None, None);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = route_ip(d).unwrap_or(dst),
                    RouteAttribute::Gateway(g) => gw = route_ip(g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let Ok(net) = IpNet::new(dst, r.header.destination_prefix_length) {
                out.push((net, gw, oif));
            }
        }
    }
    Ok(out)
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some((*v).into()),
        RouteAddress::Inet6(v) => Some((*v).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_local_unicast() {
        for _ in 0..32 {
            let m = random_mac();
            assert_eq!(m[0] & 0x03, 0x02);
        }
    }
}
