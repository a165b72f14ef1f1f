//! The VXLAN device (`weft.1`): kept when it matches, adjusted in place for MTU, MAC and
//! up state, recreated when a property the kernel cannot change (VNI, port, local
//! address, underlay device, learning) differs.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};
use weft_common::annotations::Mac;
use weft_common::bridge::{
    ensure_address, link_alias, link_by_name, link_kind, link_mac, link_mtu, mark_owned,
    OWNER_ALIAS,
};

use super::Error;

/// The properties fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    pub underlay_ifindex: u32,
}

fn vxlan_info(link: &LinkMessage) -> Option<&[InfoVxlan]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.as_slice()),
            _ => None,
        }),
        _ => None,
    })
}

/// Why an existing VXLAN device cannot be kept, or `None` when it matches `want`.
pub fn mismatch(info: &[InfoVxlan], want: &VxlanSpec) -> Option<String> {
    let mut vni = None;
    let mut port = None;
    let mut local = None;
    let mut link = None;
    let mut learning = None;
    for i in info {
        match i {
            InfoVxlan::Id(v) => vni = Some(*v),
            InfoVxlan::Port(p) => port = Some(*p),
            InfoVxlan::Local(a) => local = Some(IpAddr::V4(*a)),
            InfoVxlan::Local6(a) => local = Some(IpAddr::V6(*a)),
            InfoVxlan::Link(l) => link = Some(*l),
            InfoVxlan::Learning(l) => learning = Some(*l),
            _ => {}
        }
    }
    if vni != Some(want.vni) {
        return Some(format!("VNI is {vni:?}, want {}", want.vni));
    }
    if port != Some(want.port) {
        return Some(format!("UDP port is {port:?}, want {}", want.port));
    }
    if local != Some(want.local) {
        return Some(format!("local address is {local:?}, want {}", want.local));
    }
    if link != Some(want.underlay_ifindex) {
        return Some(format!(
            "underlay ifindex is {link:?}, want {}",
            want.underlay_ifindex
        ));
    }
    if learning != Some(false) {
        return Some("learning is on".into());
    }
    None
}

/// Whether weft may manage (reconfigure, recreate, delete) the existing link `link` as
/// its VXLAN device: it carries weft's alias, or (made before the alias existed) it is a
/// VXLAN device on weft's VNI and port. `Err` says why not: `vxlanDevice: eth0` must
/// never delete eth0.
pub fn ownership(link: &LinkMessage, vni: u32, port: u16) -> Result<(), String> {
    if link_alias(link) == Some(OWNER_ALIAS) {
        return Ok(());
    }
    if let Some(alias) = link_alias(link) {
        return Err(format!("carries the alias {alias:?}, not weft's"));
    }
    if link_kind(link) != Some(&InfoKind::Vxlan) {
        return Err(format!(
            "is a {:?} device weft did not create",
            link_kind(link)
        ));
    }
    let info = vxlan_info(link).unwrap_or_default();
    let id = info.iter().find_map(|i| match i {
        InfoVxlan::Id(v) => Some(*v),
        _ => None,
    });
    let p = info.iter().find_map(|i| match i {
        InfoVxlan::Port(p) => Some(*p),
        _ => None,
    });
    if id != Some(vni) || p != Some(port) {
        return Err(format!(
            "is a VXLAN device with VNI {id:?} and port {p:?}, not weft's (VNI {vni}, port {port})"
        ));
    }
    Ok(())
}

/// Makes sure the device exists as specified, with `mtu`, `mac` (when given) and up.
/// Returns its ifindex and MAC.
pub async fn ensure(
    handle: &Handle,
    name: &str,
    spec: &VxlanSpec,
    mtu: u32,
    mac: Option<Mac>,
) -> Result<(u32, Mac), Error> {
    let mut link = link_by_name(handle, name).await?;
    if let Some(existing) = &link {
        if let Err(why) = ownership(existing, spec.vni, spec.port) {
            return Err(Error::Config(format!(
                "vxlanDevice {name:?}: an existing interface that {why}; refusing to touch it \
                 (choose another name in net-conf.json)"
            )));
        }
        let reason = if link_kind(existing) != Some(&InfoKind::Vxlan) {
            Some("not a VXLAN device".to_string())
        } else {
            vxlan_info(existing).and_then(|info| mismatch(info, spec))
        };
        if let Some(reason) = reason {
            tracing::info!(device = name, %reason, "recreating VXLAN device");
            handle
                .link()
                .del(existing.header.index)
                .execute()
                .await
                .map_err(|e| Error::netlink(format!("delete device {name}"), e))?;
            link = None;
        }
    }
    let link = match link {
        Some(link) => link,
        None => {
            let mut b = LinkVxlan::new(name, spec.vni)
                .dev(spec.underlay_ifindex)
                .port(spec.port)
                .learning(false)
                .mtu(mtu)
                .up();
            b = match spec.local {
                IpAddr::V4(a) => b.local(a),
                IpAddr::V6(a) => b.local6(a),
            };
            if let Some(m) = mac {
                b = b.address(m.0.to_vec());
            }
            handle.link().add(b.build()).execute().await.map_err(|e| {
                Error::netlink(format!("create VXLAN device {name} (VNI {})", spec.vni), e)
            })?;
            tracing::info!(device = name, vni = spec.vni, "created VXLAN device");
            link_by_name(handle, name)
                .await?
                .ok_or_else(|| Error::device(name, "vanished right after it was created"))?
        }
    };
    if link_alias(&link) != Some(OWNER_ALIAS) {
        mark_owned(handle, link.header.index, name).await?;
    }
    let index = link.header.index;
    let current_mac = link_mac(&link).map(Mac);
    let mut set = LinkUnspec::new_with_index(index);
    let mut change = false;
    if let Some(m) = mac {
        if current_mac != Some(m) {
            set = set.address(m.0.to_vec());
            change = true;
        }
    }
    if link_mtu(&link) != Some(mtu) {
        set = set.mtu(mtu);
        change = true;
    }
    if !link.header.flags.contains(LinkFlags::Up) {
        change = true;
    }
    if change {
        handle
            .link()
            .set(set.up().build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("set {name} mac/mtu {mtu}/up"), e))?;
    }
    let mac = match mac.or(current_mac) {
        Some(m) => m,
        None => return Err(Error::device(name, "has no MAC address")),
    };
    Ok((index, mac))
}

/// Makes `addrs` (the VTEP addresses: /32 for IPv4, /128 for IPv6) the device's only
/// global addresses; kernel-managed IPv6 link-local addresses stay. A VTEP address of an
/// old pod CIDR is removed.
pub async fn ensure_only_addresses(
    handle: &Handle,
    name: &str,
    index: u32,
    addrs: &[IpNet],
) -> Result<(), Error> {
    let keep: Vec<(IpAddr, u8)> = addrs.iter().map(|a| (a.addr(), a.prefix_len())).collect();
    weft_common::bridge::remove_addresses_except(handle, name, index, &keep).await?;
    for a in addrs {
        ensure_address(handle, index, a.addr(), a.prefix_len()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VxlanSpec {
        VxlanSpec {
            vni: 1,
            port: 8472,
            local: "192.168.77.1".parse().unwrap(),
            underlay_ifindex: 2,
        }
    }
    fn info(vni: u32, learning: bool) -> Vec<InfoVxlan> {
        vec![
            InfoVxlan::Id(vni),
            InfoVxlan::Port(8472),
            InfoVxlan::Local("192.168.77.1".parse().unwrap()),
            InfoVxlan::Link(2),
            InfoVxlan::Learning(learning),
            InfoVxlan::Ttl(0),
        ]
    }

    fn link(kind: InfoKind, alias: Option<&str>, info: Vec<InfoVxlan>) -> LinkMessage {
        let mut m = LinkMessage::default();
        let mut infos = vec![LinkInfo::Kind(kind)];
        if !info.is_empty() {
            infos.push(LinkInfo::Data(InfoData::Vxlan(info)));
        }
        m.attributes.push(LinkAttribute::LinkInfo(infos));
        if let Some(a) = alias {
            m.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        m
    }

    #[test]
    fn only_weft_vxlan_devices_are_managed() {
        // Marked: ours whatever it is now (it may need recreating).
        let marked = link(InfoKind::Vxlan, Some(OWNER_ALIAS), info(9, true));
        assert_eq!(ownership(&marked, 1, 8472), Ok(()));
        // Made before the alias: adopted only on weft's VNI and port.
        assert_eq!(
            ownership(&link(InfoKind::Vxlan, None, info(1, false)), 1, 8472),
            Ok(())
        );
        let other_vni = ownership(&link(InfoKind::Vxlan, None, info(2, false)), 1, 8472);
        assert!(other_vni.unwrap_err().contains("VNI Some(2)"));
        let other_port = ownership(&link(InfoKind::Vxlan, None, info(1, false)), 1, 4789);
        assert!(other_port.unwrap_err().contains("port"));
        // `vxlanDevice: eth0`.
        let eth = ownership(&link(InfoKind::Veth, None, vec![]), 1, 8472);
        assert!(eth.unwrap_err().contains("did not create"));
        let aliased = ownership(
            &link(InfoKind::Vxlan, Some("flannel"), info(1, false)),
            1,
            8472,
        );
        assert!(aliased.unwrap_err().contains("flannel"));
    }

    #[test]
    fn matching_device_is_kept() {
        assert_eq!(mismatch(&info(1, false), &spec()), None);
    }

    #[test]
    fn vni_learning_and_underlay_differences_need_a_new_device() {
        assert!(mismatch(&info(2, false), &spec()).unwrap().contains("VNI"));
        assert!(mismatch(&info(1, true), &spec())
            .unwrap()
            .contains("learning"));
        let moved = VxlanSpec {
            underlay_ifindex: 3,
            ..spec()
        };
        assert!(mismatch(&info(1, false), &moved)
            .unwrap()
            .contains("underlay"));
        let other_ip = VxlanSpec {
            local: "10.0.0.1".parse().unwrap(),
            ..spec()
        };
        assert!(mismatch(&info(1, false), &other_ip)
            .unwrap()
            .contains("local"));
    }
}
