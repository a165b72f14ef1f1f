//! The underlay: which interface and address carry the VXLAN traffic, and the pod MTU.
//!
//! By default the node's InternalIP is the underlay address and the interface holding it
//! is the underlay interface. On multi-NIC hosts `--iface` (name or address, repeatable),
//! `--iface-regex` (repeatable) and `--public-ip` choose instead. [`select`] and
//! [`pod_mtu`] are pure; [`list_interfaces`] reads the host through rtnetlink.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use regex::Regex;

/// VXLAN overhead over an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner
/// Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// Over an IPv6 underlay the outer IP header is 40 bytes.
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// The smallest MTU an IPv4 host must accept.
pub const MIN_MTU: u32 = 576;

/// A host interface with what the selection needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub loopback: bool,
    pub addrs: Vec<IpAddr>,
}

/// The user's choice (flags) and the Node's InternalIPs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selection<'a> {
    pub ifaces: &'a [String],
    pub iface_regexes: &'a [Regex],
    pub public_ip: Option<IpAddr>,
    pub node_ips: &'a [IpAddr],
}

/// The chosen underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    pub iface: String,
    pub ifindex: u32,
    pub mtu: u32,
    /// Source address of VXLAN packets (the device's `local`).
    pub local_ip: IpAddr,
    /// Address peers send to, before the public-ip-override annotation is applied.
    pub public_ip: IpAddr,
}

/// An address that can carry the overlay: not loopback, link-local, multicast or unset.
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_multicast() || a.is_unspecified())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_multicast()
                || a.is_unspecified()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn underlay(iface: &Interface, local_ip: IpAddr, public_ip: Option<IpAddr>) -> Underlay {
    Underlay {
        iface: iface.name.clone(),
        ifindex: iface.index,
        mtu: iface.mtu,
        local_ip,
        public_ip: public_ip.unwrap_or(local_ip),
    }
}

/// Picks the underlay interface and address. See the module docs for the rules.
pub fn select(ifaces: &[Interface], sel: &Selection<'_>) -> Result<Underlay, String> {
    let holding = |ip: &IpAddr| ifaces.iter().find(|i| i.addrs.contains(ip));
    if sel.ifaces.is_empty() && sel.iface_regexes.is_empty() {
        let wanted = sel
            .public_ip
            .or_else(|| sel.node_ips.first().copied())
            .ok_or("the Node has no InternalIP; choose the underlay with --iface, --iface-regex or --public-ip")?;
        let iface = holding(&wanted).ok_or_else(|| {
            format!("no interface on this host holds {wanted}; choose the underlay with --iface or --iface-regex")
        })?;
        return Ok(underlay(iface, wanted, None));
    }

    // An address on the chosen interface, preferring the one the user or the Node names.
    let pick = |iface: &Interface| -> Option<IpAddr> {
        let preferred = sel.public_ip.iter().chain(sel.node_ips);
        preferred
            .clone()
            .find(|ip| iface.addrs.contains(ip))
            .or_else(|| iface.addrs.iter().find(|ip| ip.is_ipv4() && usable(ip)))
            .or_else(|| iface.addrs.iter().find(|ip| usable(ip)))
            .copied()
    };
    let mut tried = Vec::new();
    for want in sel.ifaces {
        if let Ok(ip) = want.parse::<IpAddr>() {
            if let Some(iface) = holding(&ip) {
                return Ok(underlay(iface, ip, sel.public_ip));
            }
            tried.push(format!("{want} (no interface holds it)"));
        } else if let Some(iface) = ifaces.iter().find(|i| &i.name == want) {
            match pick(iface) {
                Some(ip) => return Ok(underlay(iface, ip, sel.public_ip)),
                None => tried.push(format!("{want} (no usable address)")),
            }
        } else {
            tried.push(format!("{want} (no such interface)"));
        }
    }
    for re in sel.iface_regexes {
        let mut matching: Vec<&Interface> =
            ifaces.iter().filter(|i| re.is_match(&i.name)).collect();
        matching.sort_by_key(|i| i.index);
        if matching.is_empty() {
            tried.push(format!("/{re}/ (no interface matches)"));
        }
        for iface in matching {
            match pick(iface) {
                Some(ip) => return Ok(underlay(iface, ip, sel.public_ip)),
                None => tried.push(format!(
                    "{} (matches /{re}/, no usable address)",
                    iface.name
                )),
            }
        }
    }
    Err(format!(
        "no underlay interface found; tried: {}",
        tried.join(", ")
    ))
}

/// The pod MTU: the configured one, else the underlay's minus the VXLAN overhead.
pub fn pod_mtu(underlay_mtu: u32, underlay_v6: bool, configured: u32) -> Result<u32, String> {
    if configured != 0 {
        return Ok(configured);
    }
    let overhead = if underlay_v6 {
        VXLAN_OVERHEAD_V6
    } else {
        VXLAN_OVERHEAD_V4
    };
    match underlay_mtu.checked_sub(overhead) {
        Some(mtu) if mtu >= MIN_MTU => Ok(mtu),
        _ => Err(format!(
            "underlay MTU {underlay_mtu} leaves less than {MIN_MTU} for pods after the VXLAN overhead of {overhead}"
        )),
    }
}

/// Reads the host's interfaces and their addresses.
pub async fn list_interfaces(
    handle: &rtnetlink::Handle,
) -> Result<Vec<Interface>, weft_common::Error> {
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| weft_common::Error::netlink("list links", e))?
    {
        let mut name = None;
        let mut mtu = 0;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Mtu(m) => mtu = *m,
                _ => {}
            }
        }
        links.push(Interface {
            name: name.unwrap_or_else(|| format!("if{}", msg.header.index)),
            index: msg.header.index,
            mtu,
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            addrs: Vec::new(),
        });
    }
    let mut addrs: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| weft_common::Error::netlink("list addresses", e))?
    {
        // IFA_LOCAL is the local address on point-to-point links, where IFA_ADDRESS is
        // the peer's; elsewhere they are equal.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(address) {
            addrs.entry(msg.header.index).or_default().push(ip);
        }
    }
    for link in &mut links {
        link.addrs = addrs.remove(&link.index).unwrap_or_default();
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifc(name: &str, index: u32, mtu: u32, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            index,
            mtu,
            loopback: name == "lo",
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn host() -> Vec<Interface> {
        vec![
            ifc("lo", 1, 65536, &["127.0.0.1", "::1"]),
            ifc("eth0", 2, 1500, &["192.168.0.11", "fe80::1"]),
            ifc("eth1", 3, 9000, &["fe80::2", "10.10.0.11", "fd10::11"]),
            ifc("ens7", 4, 1400, &["fe80::3", "fd20::11"]),
            ifc("ens8", 5, 1500, &[]),
        ]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_is_the_interface_holding_the_internal_ip() {
        let node_ips = [ip("10.10.0.11"), ip("fd10::11")];
        let u = select(
            &host(),
            &Selection {
                node_ips: &node_ips,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((u.iface.as_str(), u.ifindex, u.mtu), ("eth1", 3, 9000));
        assert_eq!(
            (u.local_ip, u.public_ip),
            (ip("10.10.0.11"), ip("10.10.0.11"))
        );
    }

    #[test]
    fn public_ip_flag_wins_over_the_internal_ip() {
        let node_ips = [ip("192.168.0.11")];
        let sel = Selection {
            node_ips: &node_ips,
            public_ip: Some(ip("fd20::11")),
            ..Default::default()
        };
        let u = select(&host(), &sel).unwrap();
        assert_eq!((u.iface.as_str(), u.local_ip), ("ens7", ip("fd20::11")));
    }

    #[test]
    fn missing_addresses_explain_themselves() {
        let e = select(&host(), &Selection::default()).unwrap_err();
        assert!(e.contains("no InternalIP"), "{e}");
        let node_ips = [ip("172.16.0.1")];
        let e = select(
            &host(),
            &Selection {
                node_ips: &node_ips,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("172.16.0.1") && e.contains("--iface"), "{e}");
    }

    #[test]
    fn iface_by_name_prefers_ipv4_and_skips_link_local() {
        let ifaces = ["nope".to_string(), "eth1".to_string()];
        let u = select(
            &host(),
            &Selection {
                ifaces: &ifaces,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((u.iface.as_str(), u.local_ip), ("eth1", ip("10.10.0.11")));
        let ifaces = ["ens7".to_string()];
        let u = select(
            &host(),
            &Selection {
                ifaces: &ifaces,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(u.local_ip, ip("fd20::11"));
    }

    #[test]
    fn iface_prefers_the_nodes_own_address_on_it() {
        let ifaces = ["eth1".to_string()];
        let node_ips = [ip("fd10::11")];
        let u = select(
            &host(),
            &Selection {
                ifaces: &ifaces,
                node_ips: &node_ips,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(u.local_ip, ip("fd10::11"));
    }

    #[test]
    fn iface_by_address_and_public_ip_behind_nat() {
        let ifaces = ["192.168.0.11".to_string()];
        let sel = Selection {
            ifaces: &ifaces,
            public_ip: Some(ip("203.0.113.5")),
            ..Default::default()
        };
        let u = select(&host(), &sel).unwrap();
        assert_eq!(u.iface, "eth0");
        assert_eq!(
            (u.local_ip, u.public_ip),
            (ip("192.168.0.11"), ip("203.0.113.5"))
        );
    }

    #[test]
    fn regex_tries_matching_interfaces_in_index_order() {
        let res = [Regex::new("^ens").unwrap()];
        let u = select(
            &host(),
            &Selection {
                iface_regexes: &res,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(u.iface, "ens7");
        // ens8 has no address and is skipped when it comes first.
        let mut h = host();
        h[4].index = 0;
        let u = select(
            &h,
            &Selection {
                iface_regexes: &res,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(u.iface, "ens7");
        let none = [Regex::new("^wl").unwrap()];
        let ifaces = ["ens8".to_string()];
        let e = select(
            &host(),
            &Selection {
                ifaces: &ifaces,
                iface_regexes: &none,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.contains("ens8 (no usable address)") && e.contains("/^wl/"),
            "{e}"
        );
    }

    #[test]
    fn mtu_subtracts_the_vxlan_overhead_unless_configured() {
        assert_eq!(pod_mtu(1500, false, 0), Ok(1450));
        assert_eq!(pod_mtu(1500, true, 0), Ok(1430));
        assert_eq!(pod_mtu(9000, false, 0), Ok(8950));
        assert_eq!(pod_mtu(1500, false, 1400), Ok(1400));
        assert!(pod_mtu(600, false, 0).is_err());
        assert!(pod_mtu(20, true, 0).is_err());
    }
}
