//! The node bridge (`weft0`): pods' veths attach to it and its addresses are the pods'
//! gateways. The agent creates it; the plugin makes sure of it too, so a pod can start
//! even if the bridge was deleted by hand.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use crate::Error;

const EEXIST: i32 = libc::EEXIST;

/// The interface alias (`ip link show` prints it as `alias weft`) of every device weft
/// creates: weft reconfigures, recreates and deletes only devices that carry it (or, for
/// devices made by versions before the alias, that match weft's shape exactly).
pub const OWNER_ALIAS: &str = "weft";

/// The link's alias (IFLA_IFALIAS), if any.
pub fn link_alias(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) => Some(s.as_str()),
        _ => None,
    })
}

/// Marks the link as weft's (see [`OWNER_ALIAS`]). The kernel ignores IFLA_IFALIAS when
/// a link is created, so it is set afterwards.
pub async fn mark_owned(handle: &Handle, index: u32, name: &str) -> Result<(), Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).alias(OWNER_ALIAS).build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("set alias of {name}"), e))
}

/// Whether weft may manage an existing bridge `link` with global addresses `addrs`: it
/// carries weft's alias, or (made before the alias existed) it is a bridge whose every
/// global address lies in a cluster CIDR. `Err` says why not: e.g. `docker0`, or a `br0`
/// holding the node's address, must never lose their addresses to weft.
pub fn bridge_ownership(
    link: &LinkMessage,
    addrs: &[(IpAddr, u8)],
    cluster_cidrs: &[IpNet],
) -> Result<(), String> {
    if link_kind(link) != Some(&InfoKind::Bridge) {
        return Err(format!(
            "is a {:?} device, not a bridge weft made",
            link_kind(link)
        ));
    }
    if link_alias(link) == Some(OWNER_ALIAS) {
        return Ok(());
    }
    if let Some(alias) = link_alias(link) {
        return Err(format!("carries the alias {alias:?}, not weft's"));
    }
    let link_local =
        |ip: &IpAddr| matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    match addrs
        .iter()
        .filter(|(ip, _)| !link_local(ip))
        .find(|(ip, _)| !cluster_cidrs.iter().any(|c| c.contains(ip)))
    {
        Some((ip, len)) => Err(format!(
            "holds {ip}/{len}, outside the cluster CIDRs: not a bridge weft made"
        )),
        None => Ok(()),
    }
}

/// Looks a link up by name; `Ok(None)` when there is none.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, Error> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| -c.get()) == Some(libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::netlink(format!("get link {name}"), e)),
    }
}

pub fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

pub fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

pub fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) if m.len() == 6 => {
            let mut out = [0u8; 6];
            out.copy_from_slice(m);
            Some(out)
        }
        _ => None,
    })
}

/// The address messages of interface `index`. The index also goes into the request's
/// header: on a socket with strict checking the kernel then dumps that interface alone
/// (rtnetlink's own filter only drops the others after they were sent); elsewhere the
/// other interfaces' entries are dropped here. `name` labels errors.
async fn address_messages(
    handle: &Handle,
    name: &str,
    index: u32,
) -> Result<Vec<AddressMessage>, Error> {
    let mut out = Vec::new();
    let mut req = handle.address().get().set_link_index_filter(index);
    req.message_mut().header.index = index;
    let mut stream = req.execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| Error::netlink(format!("list addresses of {name}"), e))?
    {
        if msg.header.index == index {
            out.push(msg);
        }
    }
    Ok(out)
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })
}

/// Addresses currently on an interface.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, Error> {
    let msgs = address_messages(handle, &format!("ifindex {index}"), index).await?;
    Ok(msgs
        .iter()
        .filter_map(|m| address_of(m).map(|ip| (ip, m.header.prefix_len)))
        .collect())
}

/// Addresses of interface `index` still held tentative by duplicate address detection
/// (IPv6; unusable, e.g. as the source of neighbour solicitations, until it ends).
pub async fn tentative_addresses(handle: &Handle, index: u32) -> Result<Vec<IpAddr>, Error> {
    let msgs = address_messages(handle, &format!("ifindex {index}"), index).await?;
    Ok(msgs
        .iter()
        .filter(|m| {
            m.attributes.iter().any(
                |a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Tentative)),
            )
        })
        .filter_map(address_of)
        .collect())
}

/// Adds an address unless it is already there.
pub async fn ensure_address(
    handle: &Handle,
    index: u32,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), Error> {
    let mut req = handle.address().add(index, ip, prefix);
    if ip.is_ipv6() {
        // Gateways and VTEP addresses are weft's to hand out: duplicate detection would
        // only hold them tentative (unusable) for a second.
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.code.map(|c| -c.get()) == Some(EEXIST) => {
            Ok(())
        }
        Err(e) => Err(Error::netlink(
            format!("add address {ip}/{prefix} to ifindex {index}"),
            e,
        )),
    }
}

/// Makes sure the bridge exists, is up, has `mtu` and carries each gateway with its node
/// CIDR's prefix length; other addresses are left alone (the CNI plugin's view of the
/// subnet may be a moment old: only the agent prunes, see [`ensure_bridge_exact`]).
/// Returns the bridge's ifindex. Idempotent and safe to race with another process doing
/// the same (EEXIST is success).
pub async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    mtu: u32,
    gateways: &[(IpAddr, IpNet)],
) -> Result<u32, Error> {
    let link = match link_by_name(handle, name).await? {
        Some(link) => link,
        None => {
            let msg = LinkBridge::new(name).mtu(mtu).build();
            let created = match handle.link().add(msg).execute().await {
                Ok(()) => true,
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.code.map(|c| -c.get()) == Some(EEXIST) =>
                {
                    false
                }
                Err(e) => return Err(Error::netlink(format!("create bridge {name}"), e)),
            };
            let link = link_by_name(handle, name)
                .await?
                .ok_or_else(|| Error::Interface {
                    name: name.into(),
                    reason: "bridge vanished right after it was created".into(),
                })?;
            if created {
                mark_owned(handle, link.header.index, name).await?;
            }
            link
        }
    };
    if link_kind(&link) != Some(&InfoKind::Bridge) {
        return Err(Error::Interface {
            name: name.into(),
            reason: "exists but is not a bridge".into(),
        });
    }
    let index = link.header.index;
    let is_up = link.header.flags.contains(LinkFlags::Up);
    if link_mtu(&link) != Some(mtu) || !is_up {
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("set {name} mtu {mtu} up"), e))?;
    }
    if !gateways.is_empty() {
        let have = addresses(handle, index).await?;
        for (gw, net) in gateways {
            if !have.contains(&(*gw, net.prefix_len())) {
                ensure_address(handle, index, *gw, net.prefix_len()).await?;
            }
        }
    }
    Ok(index)
}

/// [`ensure_bridge`], and no global-scope address but the gateways: for the agent, which
/// owns the bridge's addresses. A gateway of an old pod CIDR is removed with its
/// connected route; IPv6 link-local addresses stay. An existing link of that name that is
/// not weft's ([`bridge_ownership`] against `cluster_cidrs`) is refused untouched.
pub async fn ensure_bridge_exact(
    handle: &Handle,
    name: &str,
    mtu: u32,
    gateways: &[(IpAddr, IpNet)],
    cluster_cidrs: &[IpNet],
) -> Result<u32, Error> {
    if let Some(link) = link_by_name(handle, name).await? {
        let addrs = addresses(handle, link.header.index).await?;
        if let Err(reason) = bridge_ownership(&link, &addrs, cluster_cidrs) {
            return Err(Error::Interface {
                name: name.into(),
                reason: format!(
                    "{reason}; refusing to take it over (net-conf.json field `bridge`)"
                ),
            });
        }
        if link_alias(&link) != Some(OWNER_ALIAS) {
            mark_owned(handle, link.header.index, name).await?;
        }
    }
    let index = ensure_bridge(handle, name, mtu, &[]).await?;
    let want: Vec<(IpAddr, u8)> = gateways
        .iter()
        .map(|(gw, net)| (*gw, net.prefix_len()))
        .collect();
    // Prune first: deleting a primary IPv4 address can take its secondaries along.
    remove_addresses_except(handle, name, index, &want).await?;
    for (gw, len) in want {
        ensure_address(handle, index, gw, len).await?;
    }
    Ok(index)
}

/// True for IPv6 link-local addresses (fe80::/10), which the kernel manages.
fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80)
}

/// Deletes every global-scope address of interface `index` that is not in `keep`
/// (address, prefix length); IPv6 link-local addresses always stay. A stale gateway of
/// an old pod CIDR would otherwise leave its connected route (e.g. `10.244.2.0/24 dev
/// weft0`), blackholing traffic to the node that gets that subnet next. Returns how many
/// were deleted; one already gone counts as deleted.
pub async fn remove_addresses_except(
    handle: &Handle,
    name: &str,
    index: u32,
    keep: &[(IpAddr, u8)],
) -> Result<usize, Error> {
    let mut stale = Vec::new();
    for msg in address_messages(handle, name, index).await? {
        if msg.header.scope != AddressScope::Universe {
            continue;
        }
        let Some(ip) = address_of(&msg) else {
            continue;
        };
        if !is_ipv6_link_local(&ip) && !keep.contains(&(ip, msg.header.prefix_len)) {
            stale.push((ip, msg));
        }
    }
    let removed = stale.len();
    for (ip, msg) in stale {
        let prefix = msg.header.prefix_len;
        match handle.address().del(msg).execute().await {
            Ok(()) => {
                tracing::info!(interface = name, address = %format!("{ip}/{prefix}"), "removed a stale address")
            }
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| -c.get()) == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => {
                return Err(Error::netlink(
                    format!("delete address {ip}/{prefix} of {name}"),
                    e,
                ))
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(kind: InfoKind, alias: Option<&str>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        if let Some(a) = alias {
            m.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        m
    }

    #[test]
    fn only_weft_bridges_are_taken_over() {
        let cluster: Vec<IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ours = link(InfoKind::Bridge, Some(OWNER_ALIAS));
        assert_eq!(
            bridge_ownership(&ours, &[(ip("192.168.1.1"), 24)], &cluster),
            Ok(())
        );
        // Made before the alias: only gateways in the cluster (and link-local) on it.
        let legacy = link(InfoKind::Bridge, None);
        let gw = [(ip("10.244.1.1"), 24), (ip("fe80::1"), 64)];
        assert_eq!(bridge_ownership(&legacy, &gw, &cluster), Ok(()));
        assert_eq!(bridge_ownership(&legacy, &[], &cluster), Ok(()));
        // docker0, or br0 with the node's address.
        let docker = bridge_ownership(&legacy, &[(ip("172.17.0.1"), 16)], &cluster);
        assert!(docker.unwrap_err().contains("172.17.0.1/16"));
        let other = link(InfoKind::Bridge, Some("lan"));
        assert!(bridge_ownership(&other, &[], &cluster)
            .unwrap_err()
            .contains("lan"));
        let eth = link(InfoKind::Veth, None);
        assert!(bridge_ownership(&eth, &[], &cluster)
            .unwrap_err()
            .contains("not a bridge"));
    }
}
