//! Which remote Nodes may become routes: the pure check between the Node watch and the
//! datapath plan.
//!
//! Every value on a Node object is input: a compromised node, or anyone able to write a
//! Node, chooses them. A peer is programmed only when all of its values are plausible for
//! this cluster: each pod CIDR normalised, inside a cluster CIDR, exactly the configured
//! node subnet size, and clear of this node's own CIDRs, the underlay network, the Service
//! CIDRs and every route weft did not write; a unicast VTEP MAC; a public IP of the
//! underlay's family that could be a host; the same VNI. Claims on a pod CIDR, a VTEP MAC
//! or a public IP that another Node already holds are honoured in age order (creation
//! time, then UID: the API server sets both), never by name, so a newcomer cannot take an
//! existing node's traffic. A rejected peer is left out whole; the others are unaffected.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use weft_common::annotations::Mac;

use super::Peer;

/// The local facts a peer is checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// net-conf's clusterCIDRs.
    pub cluster_cidrs: Vec<IpNet>,
    /// net-conf's node subnet sizes (prefix lengths).
    pub subnet_size_v4: u8,
    pub subnet_size_v6: u8,
    /// net-conf's serviceCIDRs (may be empty: unknown).
    pub service_cidrs: Vec<IpNet>,
    /// This node's underlay address with its prefix.
    pub underlay_net: Option<IpNet>,
    /// This node's underlay address (the VXLAN device's local address).
    pub underlay_ip: Option<IpAddr>,
    /// This node's pod CIDRs.
    pub own_pod_cidrs: Vec<IpNet>,
    /// This node's VTEP MAC.
    pub own_mac: Option<Mac>,
    /// The VNI in use.
    pub vni: u32,
    /// Destinations of the main table's routes that weft did not write (see
    /// [`foreign_route_conflicts`] for which of them count).
    pub foreign_routes: Vec<IpNet>,
}

/// Why a peer was left out: the `reason` label of the metric and the Event's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A pod CIDR that is malformed, has host bits, or the wrong size or place.
    InvalidPodCidr,
    /// A pod CIDR overlapping this node's, the underlay, the Service CIDR or a route.
    OverlappingPodCidr,
    /// A pod CIDR an older Node holds.
    DuplicatePodCidr,
    /// A multicast, broadcast or all-zero MAC, or one an older Node (or this one) uses.
    InvalidVtepMac,
    /// A public IP that is not a usable unicast host address of the underlay's family,
    /// or one an older Node (or this one) uses.
    InvalidPublicIp,
    /// Another VXLAN network.
    VniMismatch,
    /// An annotation or field that does not parse.
    Malformed,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::InvalidPodCidr,
        Reason::OverlappingPodCidr,
        Reason::DuplicatePodCidr,
        Reason::InvalidVtepMac,
        Reason::InvalidPublicIp,
        Reason::VniMismatch,
        Reason::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidPodCidr => "invalid_pod_cidr",
            Reason::OverlappingPodCidr => "overlapping_pod_cidr",
            Reason::DuplicatePodCidr => "duplicate_pod_cidr",
            Reason::InvalidVtepMac => "invalid_vtep_mac",
            Reason::InvalidPublicIp => "invalid_public_ip",
            Reason::VniMismatch => "vni_mismatch",
            Reason::Malformed => "malformed",
        }
    }

    /// CamelCase, as Kubernetes Event reasons are written.
    pub fn event_reason(self) -> &'static str {
        match self {
            Reason::InvalidPodCidr => "WeftInvalidPodCIDR",
            Reason::OverlappingPodCidr => "WeftOverlappingPodCIDR",
            Reason::DuplicatePodCidr => "WeftDuplicatePodCIDR",
            Reason::InvalidVtepMac => "WeftInvalidVtepMAC",
            Reason::InvalidPublicIp => "WeftInvalidPublicIP",
            Reason::VniMismatch => "WeftVNIMismatch",
            Reason::Malformed => "WeftMalformedNode",
        }
    }
}

/// A peer left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rejection {
    pub node: String,
    pub reason: Reason,
    pub detail: String,
}

/// Splits `candidates` into the peers that may be programmed (sorted by name) and the
/// rejected ones (sorted by node). Claims are honoured oldest Node first. Borrows the
/// peers: at 5000 Nodes a sync runs this on every change, and copying every peer (a few
/// strings each) cost more than the checks.
pub fn validate<'a>(
    candidates: impl IntoIterator<Item = &'a Peer>,
    rules: &Rules,
) -> (Vec<&'a Peer>, Vec<Rejection>) {
    let mut order: Vec<&Peer> = candidates.into_iter().collect();
    // Names are unique in a Node set, and the name is part of the key: the order is total.
    order.sort_unstable_by(|a, b| (a.age.key(), &a.name).cmp(&(b.age.key(), &b.name)));
    let mut claims = Claims::new(rules, order.len());
    let mut accepted = Vec::with_capacity(order.len());
    let mut rejected = Vec::new();
    for peer in order {
        match check(peer, rules).and_then(|()| claims.check(peer)) {
            Ok(()) => {
                claims.take(peer);
                accepted.push(peer);
            }
            Err((reason, detail)) => rejected.push(Rejection {
                node: peer.name.clone(),
                reason,
                detail,
            }),
        }
    }
    accepted.sort_by(|a, b| a.name.cmp(&b.name));
    rejected.sort();
    (accepted, rejected)
}

/// The checks the own Node's pod CIDRs get before anything is set up (`rules` has no own
/// CIDRs yet, and leaves out the routes through the own bridge): the same as a peer's, so
/// a podCIDR equal to the underlay subnet can never put the node's address on the bridge.
pub fn check_own_pod_cidrs(cidrs: &[IpNet], rules: &Rules) -> Result<(), String> {
    let rules = Rules {
        own_pod_cidrs: Vec::new(),
        ..rules.clone()
    };
    let me = Peer {
        pod_cidrs: cidrs.to_vec(),
        ..Peer::default()
    };
    check(&me, &rules).map_err(|(_, detail)| detail)
}

pub(super) type Verdict = Result<(), (Reason, String)>;

/// The verdict [`validate`] gives `peer` when no other candidate claims any of its pod
/// CIDRs, its VTEP MAC or its public IP: its own checks, and this node's claims.
pub(super) fn check_alone(peer: &Peer, rules: &Rules) -> Verdict {
    check(peer, rules).and_then(|()| Claims::new(rules, 0).check(peer))
}

fn fail(reason: Reason, detail: String) -> Verdict {
    Err((reason, detail))
}

/// The checks of one peer on its own.
fn check(peer: &Peer, rules: &Rules) -> Verdict {
    if let Some(vni) = &peer.vni {
        if vni.trim().parse::<u32>().ok() != Some(rules.vni) {
            return fail(
                Reason::VniMismatch,
                format!("weft.dev/vni is {vni:?}, this node uses {}", rules.vni),
            );
        }
    }
    if peer.pod_cidrs.is_empty() {
        return fail(Reason::InvalidPodCidr, "no pod CIDR".into());
    }
    let v4 = peer.pod_cidrs.iter().filter(|c| c.addr().is_ipv4()).count();
    if v4 > 1 || peer.pod_cidrs.len() - v4 > 1 {
        return fail(
            Reason::InvalidPodCidr,
            format!(
                "pod CIDRs {:?}: at most one per address family",
                peer.pod_cidrs
            ),
        );
    }
    for cidr in &peer.pod_cidrs {
        check_pod_cidr(cidr, rules)?;
    }
    if let Some(vtep) = &peer.vtep {
        check_mac(vtep.mac)?;
        check_public_ip(vtep.public_ip, rules)?;
    }
    if peer.node_ip.is_some() && peer.node_ip == rules.underlay_ip {
        return fail(
            Reason::InvalidPublicIp,
            format!(
                "InternalIP {} is this node's",
                rules.underlay_ip.expect("some")
            ),
        );
    }
    Ok(())
}

fn check_pod_cidr(cidr: &IpNet, rules: &Rules) -> Verdict {
    if cidr.trunc() != *cidr {
        return fail(
            Reason::InvalidPodCidr,
            format!("pod CIDR {cidr} has host bits set"),
        );
    }
    let Some(cluster) = rules
        .cluster_cidrs
        .iter()
        .find(|c| c.contains(cidr) && c.addr().is_ipv4() == cidr.addr().is_ipv4())
    else {
        return fail(
            Reason::InvalidPodCidr,
            format!(
                "pod CIDR {cidr} is outside the cluster CIDRs {:?}",
                rules.cluster_cidrs
            ),
        );
    };
    let size = if cidr.addr().is_ipv4() {
        rules.subnet_size_v4
    } else {
        rules.subnet_size_v6
    };
    if cidr.prefix_len() != size {
        return fail(
            Reason::InvalidPodCidr,
            format!("pod CIDR {cidr} is not a /{size}, the node subnet size"),
        );
    }
    let overlaps = |a: &IpNet, b: &IpNet| a.contains(b) || b.contains(a);
    if let Some(own) = rules.own_pod_cidrs.iter().find(|o| overlaps(o, cidr)) {
        return fail(
            Reason::OverlappingPodCidr,
            format!("pod CIDR {cidr} overlaps this node's {own}"),
        );
    }
    if let Some(net) = rules.underlay_net.filter(|n| overlaps(&n.trunc(), cidr)) {
        return fail(
            Reason::OverlappingPodCidr,
            format!(
                "pod CIDR {cidr} overlaps the underlay network {}",
                net.trunc()
            ),
        );
    }
    if let Some(svc) = rules.service_cidrs.iter().find(|s| overlaps(s, cidr)) {
        return fail(
            Reason::OverlappingPodCidr,
            format!("pod CIDR {cidr} overlaps the Service CIDR {svc}"),
        );
    }
    if let Some(route) = foreign_route_conflicts(cidr, cluster, &rules.foreign_routes) {
        return fail(
            Reason::OverlappingPodCidr,
            format!("pod CIDR {cidr} overlaps the route to {route}, which weft did not write"),
        );
    }
    Ok(())
}

/// A route weft did not write that a route for `cidr` would shadow or split. A route
/// that covers the whole cluster CIDR (the default route, an operator's guard route for
/// the pod network) is meant to be refined by the per-node routes and does not count.
pub fn foreign_route_conflicts<'a>(
    cidr: &IpNet,
    cluster: &IpNet,
    routes: &'a [IpNet],
) -> Option<&'a IpNet> {
    routes.iter().find(|r| {
        r.addr().is_ipv4() == cidr.addr().is_ipv4()
            && (r.contains(cidr) || cidr.contains(*r))
            && !r.contains(cluster)
    })
}

fn check_mac(mac: Mac) -> Verdict {
    if mac.0 == [0; 6] {
        return fail(Reason::InvalidVtepMac, "VTEP MAC is all zero".into());
    }
    if mac.0[0] & 1 == 1 {
        return fail(
            Reason::InvalidVtepMac,
            format!("VTEP MAC {mac} is multicast or broadcast"),
        );
    }
    Ok(())
}

/// Whether `ip` could be a host on the underlay: unicast, not loopback, unspecified,
/// link-local multicast or IPv4-mapped, of the same family as `underlay`.
fn check_public_ip(ip: IpAddr, rules: &Rules) -> Verdict {
    let bad = |why: &str| fail(Reason::InvalidPublicIp, format!("public IP {ip} {why}"));
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return bad("is not a unicast host address");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => return bad("is the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            return bad("is an IPv4-mapped IPv6 address")
        }
        _ => {}
    }
    if let Some(own) = rules.underlay_ip {
        if own.is_ipv4() != ip.is_ipv4() {
            return bad(&format!(
                "is not of the underlay's family (this node: {own})"
            ));
        }
    }
    Ok(())
}

/// What accepted peers (and this node) hold.
struct Claims {
    cidrs: HashSet<IpNet>,
    macs: HashSet<Mac>,
    ips: HashSet<IpAddr>,
}

impl Claims {
    fn new(rules: &Rules, peers: usize) -> Claims {
        let mut c = Claims {
            cidrs: HashSet::with_capacity(peers + rules.own_pod_cidrs.len()),
            macs: HashSet::with_capacity(peers + 1),
            ips: HashSet::with_capacity(peers + 1),
        };
        c.cidrs.extend(rules.own_pod_cidrs.iter().copied());
        c.macs.extend(rules.own_mac);
        c.ips.extend(rules.underlay_ip);
        c
    }

    fn check(&self, peer: &Peer) -> Verdict {
        if let Some(c) = peer.pod_cidrs.iter().find(|c| self.cidrs.contains(c)) {
            return fail(
                Reason::DuplicatePodCidr,
                format!("pod CIDR {c} is already an older node's"),
            );
        }
        if let Some(v) = &peer.vtep {
            if self.macs.contains(&v.mac) {
                return fail(
                    Reason::InvalidVtepMac,
                    format!("VTEP MAC {} is already an older node's", v.mac),
                );
            }
            if self.ips.contains(&v.public_ip) {
                return fail(
                    Reason::InvalidPublicIp,
                    format!("public IP {} is already an older node's", v.public_ip),
                );
            }
        }
        Ok(())
    }

    fn take(&mut self, peer: &Peer) {
        self.cidrs.extend(peer.pod_cidrs.iter().copied());
        if let Some(v) = &peer.vtep {
            self.macs.insert(v.mac);
            self.ips.insert(v.public_ip);
        }
    }
}

#[cfg(test)]
mod tests;
