//! The node bridge (`weft0`): pods' veths attach to it and its addresses are the pods'
//! gateways. The agent creates it; the plugin makes sure of it too, so a pod can start
//! even if the bridge was deleted by hand.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use crate::Error;

const EEXIST: i32 = libc::EEXIST;

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

/// Addresses currently on an interface.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, Error> {
    let mut out = Vec::new();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| Error::netlink(format!("list addresses of ifindex {index}"), e))?
    {
        if msg.header.index != index {
            continue;
        }
        for attr in &msg.attributes {
            if let AddressAttribute::Address(ip) = attr {
                out.push((*ip, msg.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Adds an address unless it is already there.
pub async fn ensure_address(
    handle: &Handle,
    index: u32,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), Error> {
    match handle.address().add(index, ip, prefix).execute().await {
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
/// CIDR's prefix length. Returns the bridge's ifindex. Idempotent and safe to race with
/// another process doing the same (EEXIST is success).
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
            match handle.link().add(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.code.map(|c| -c.get()) == Some(EEXIST) => {}
                Err(e) => return Err(Error::netlink(format!("create bridge {name}"), e)),
            }
            link_by_name(handle, name)
                .await?
                .ok_or_else(|| Error::Interface {
                    name: name.into(),
                    reason: "bridge vanished right after it was created".into(),
                })?
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
