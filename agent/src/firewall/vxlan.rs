//! The VXLAN source filter's address sets (pure): which underlay addresses may send VXLAN
//! to this node, and the `nft -j` commands that bring the kernel's sets there.
//!
//! The first update after start-up replaces the sets' contents in one transaction (flush
//! and add), so there is no moment with an empty set; later updates add and delete only
//! the difference, so a change of one peer is one small transaction.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::render::{FAMILY, SET_V4, SET_V6, TABLE};
use crate::peers::Peer;

/// The addresses VXLAN from `peers` comes from: each one's published (or overridden)
/// public IP and its InternalIP.
pub fn peer_addresses(peers: &[Peer]) -> BTreeSet<IpAddr> {
    peers
        .iter()
        .flat_map(|p| p.vtep.map(|v| v.public_ip).into_iter().chain(p.node_ip))
        .collect()
}

fn set_of(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => SET_V4,
        IpAddr::V6(_) => SET_V6,
    }
}

fn element_cmds<'a>(op: &str, ips: impl Iterator<Item = &'a IpAddr> + Clone) -> Vec<Value> {
    [SET_V4, SET_V6]
        .into_iter()
        .filter_map(|set| {
            let elems: Vec<String> = ips
                .clone()
                .filter(|ip| set_of(ip) == set)
                .map(|ip| ip.to_string())
                .collect();
            (!elems.is_empty()).then(|| {
                json!({op: {"element": {"family": FAMILY, "table": TABLE, "name": set, "elem": elems}}})
            })
        })
        .collect()
}

/// The document that takes the sets from `applied` (`None`: unknown, replace them whole)
/// to `desired`; `None` when they already match.
pub fn update(applied: Option<&BTreeSet<IpAddr>>, desired: &BTreeSet<IpAddr>) -> Option<Value> {
    let cmds = match applied {
        None => {
            let mut cmds: Vec<Value> = [SET_V4, SET_V6]
                .into_iter()
                .map(|set| json!({"flush": {"set": {"family": FAMILY, "table": TABLE, "name": set}}}))
                .collect();
            cmds.extend(element_cmds("add", desired.iter()));
            cmds
        }
        Some(applied) if applied == desired => return None,
        Some(applied) => {
            let mut cmds = element_cmds("delete", applied.difference(desired));
            cmds.extend(element_cmds("add", desired.difference(applied)));
            cmds
        }
    };
    Some(json!({ "nftables": cmds }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_common::annotations::{Mac, Vtep};

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn addresses_are_public_ips_and_internal_ips() {
        let p = |name: &str, public: &str, internal: Option<&str>| Peer {
            name: name.into(),
            vtep: Some(Vtep {
                mac: Mac([2, 0, 0, 0, 0, 1]),
                public_ip: public.parse().unwrap(),
            }),
            node_ip: internal.map(|s| s.parse().unwrap()),
            ..Default::default()
        };
        let peers = [
            p("a", "192.168.0.2", Some("192.168.0.2")),
            p("b", "203.0.113.3", Some("10.0.0.3")),
            p("c", "fd01::4", None),
        ];
        assert_eq!(
            peer_addresses(&peers),
            ips(&["192.168.0.2", "203.0.113.3", "10.0.0.3", "fd01::4"])
        );
    }

    #[test]
    fn first_update_replaces_whole_then_only_the_difference() {
        let want = ips(&["192.168.0.2", "192.168.0.3", "fd01::4"]);
        let full = update(None, &want).unwrap();
        let cmds = full["nftables"].as_array().unwrap();
        assert_eq!(cmds[0]["flush"]["set"]["name"], SET_V4);
        assert_eq!(cmds[1]["flush"]["set"]["name"], SET_V6);
        assert_eq!(
            cmds[2]["add"]["element"]["elem"],
            json!(["192.168.0.2", "192.168.0.3"])
        );
        assert_eq!(cmds[3]["add"]["element"]["elem"], json!(["fd01::4"]));
        // An empty desired set still flushes (a restart with every peer gone).
        assert_eq!(
            update(None, &BTreeSet::new()).unwrap()["nftables"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        assert_eq!(update(Some(&want), &want), None);
        let next = ips(&["192.168.0.3", "192.168.0.9", "fd01::4"]);
        let diff = update(Some(&want), &next).unwrap();
        assert_eq!(
            diff,
            json!({"nftables": [
                {"delete": {"element": {"family": "inet", "table": "weft", "name": SET_V4, "elem": ["192.168.0.2"]}}},
                {"add": {"element": {"family": "inet", "table": "weft", "name": SET_V4, "elem": ["192.168.0.9"]}}},
            ]})
        );
    }
}
