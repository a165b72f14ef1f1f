//! [`RuleModel`] -> the `inet weft-policy` table (pure), apart from weft's `inet weft`.
//!
//! Where packets meet it: pods are veths on the bridge `weft0`; traffic between a local
//! pod and another node (VXLAN on `weft.1`, or direct routing) is routed, and traffic
//! between two local pods is bridged, which reaches the inet `forward` hook too when
//! br_netfilter is on (`net.bridge.bridge-nf-call-iptables`/`-ip6tables` = 1). So both
//! directions live on `forward`, in two base chains: `egress` (source a local isolated
//! pod) and `ingress` (destination a local isolated pod). An accept ends only its own
//! base chain, so a packet between two local pods must pass both. Traffic a pod sends to
//! its own node takes `input`, and the node's own traffic to its pods (kubelet probes)
//! takes `output`: neither is ever filtered here, as the API requires, with no rule for
//! it. An accept of forwarded packets by the node's addresses as source was left out on
//! purpose: no packet of the node's own crosses `forward` (the netns test shows the node
//! reaching a port every pod is denied, with no such rule), so it would only let a pod
//! that forges the gateway's address past every ingress policy.
//!
//! Each base chain accepts conntrack's established and related packets first (the
//! replies of allowed connections, and their ICMP errors) and IPv6 neighbour discovery
//! (bridged between pods, never tracked). Then one dispatch rule per policy and family,
//! `ip daddr @in.<policy>.targets4 jump in.<policy>` (`saddr` and `eg.` for egress);
//! the policy's chain accepts what one of its rules allows, and a packet none accepts
//! falls through to the drop for isolated pods, counted per direction.
//!
//! Denied packets are dropped, not rejected: a reject answers the very sources the
//! policy keeps out, telling them which pods exist, and makes the node send one packet
//! per denied packet under a flood; a drop costs nothing but the counter. Clients see a
//! timeout, as with Calico's and Cilium's defaults, and the counters
//! [`COUNTER_INGRESS`]/[`COUNTER_EGRESS`] say where packets go.
//!
//! Names are stable: `<dir>.<policy id>` for a policy's chain, `.targets4/6` for its
//! membership, `<dir>.<policy id>.<rule index>.{peers4,peers6,ports,named4,named6}` for
//! a rule's sets. Which chains and rules exist depends only on the policies' specs (and
//! on whether a policy selects a pod of this node at all), and which elements the sets
//! hold on the pods, so [`crate::policy::diff`] turns most pod changes into element
//! changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::model::Direction;
use super::ranges::AddrRanges;
use super::rules::{NamedElement, Peers, PolicyRules, Ports, RuleModel};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "weft-policy";
pub const CHAIN_INGRESS: &str = "ingress";
pub const CHAIN_EGRESS: &str = "egress";
/// After `inet weft`'s forward chain (priority 0), so its drops are counted there.
pub const PRIORITY_EGRESS: i32 = 10;
pub const PRIORITY_INGRESS: i32 = 11;
pub const COUNTER_INGRESS: &str = "ingress_dropped";
pub const COUNTER_EGRESS: &str = "egress_dropped";
/// Elements per line of a set's declaration, to keep a large script readable.
const ELEMENTS_PER_LINE: usize = 500;

/// What a set holds; its name determines it, so a set never changes kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// Addresses (`interval`: also ranges).
    Addr { v6: bool, interval: bool },
    /// `inet_proto . inet_service` ranges.
    Ports,
    /// `ipv4_addr|ipv6_addr . inet_proto . inet_service`.
    Named { v6: bool },
}

impl SetKind {
    fn declaration(self) -> &'static str {
        match self {
            SetKind::Addr {
                v6: false,
                interval: false,
            } => "type ipv4_addr;",
            SetKind::Addr {
                v6: true,
                interval: false,
            } => "type ipv6_addr;",
            SetKind::Addr {
                v6: false,
                interval: true,
            } => "type ipv4_addr; flags interval;",
            SetKind::Addr {
                v6: true,
                interval: true,
            } => "type ipv6_addr; flags interval;",
            SetKind::Ports => "type inet_proto . inet_service; flags interval;",
            SetKind::Named { v6: false } => "type ipv4_addr . inet_proto . inet_service;",
            SetKind::Named { v6: true } => "type ipv6_addr . inet_proto . inet_service;",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub kind: SetKind,
    /// The elements as nft writes them (`10.0.0.1`, `10.1.0.0-10.1.255.255`, `tcp . 80`).
    pub elements: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// `Some(priority)` for a base chain on the forward hook.
    pub forward_priority: Option<i32>,
    pub comment: Option<String>,
    /// The rules as nft writes them, in order.
    pub rules: Vec<String>,
}

/// The whole `inet weft-policy` table, as data: what [`Ruleset::script`] installs and
/// what [`crate::policy::diff`] compares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
}

/// The first rules of both base chains.
const ALWAYS_ACCEPTED: [&str; 2] = [
    "ct state established,related accept",
    "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept",
];

fn family(v6: bool) -> &'static str {
    if v6 {
        "ip6"
    } else {
        "ip"
    }
}

fn addrs<'a>(ips: impl IntoIterator<Item = &'a IpAddr>, v6: bool) -> BTreeSet<String> {
    ips.into_iter()
        .filter(|ip| ip.is_ipv6() == v6)
        .map(IpAddr::to_string)
        .collect()
}

fn ranges(r: &AddrRanges, v6: bool) -> BTreeSet<String> {
    fn one<T: std::fmt::Display + PartialEq>((lo, hi): &(T, T)) -> String {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    }
    if v6 {
        r.v6.iter().map(one).collect()
    } else {
        r.v4.iter().map(one).collect()
    }
}

fn named(elements: &BTreeSet<NamedElement>, v6: bool) -> BTreeSet<String> {
    elements
        .iter()
        .filter(|e| e.addr.is_ipv6() == v6)
        .map(|e| format!("{} . {} . {}", e.addr, e.protocol.nft(), e.port))
        .collect()
}

/// The non-empty parts, space-separated.
fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A comment nft can take whatever the names hold.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '/' | '-' | '_' | ' ' => c,
            _ => '?',
        })
        .take(128)
        .collect()
}

impl Ruleset {
    /// The table for `model`.
    pub fn build(model: &RuleModel) -> Ruleset {
        let mut rs = Ruleset::default();
        for direction in Direction::BOTH {
            rs.add_base_chain(model, direction);
        }
        for ((key, direction), policy) in &model.policies {
            if policy.rules.is_empty() {
                // Only isolation: the drop at the end of the base chain does it.
                continue;
            }
            let text = format!("{key} {direction}");
            rs.add_policy(*direction, policy, &text);
        }
        rs
    }

    fn add_set(&mut self, name: &str, kind: SetKind, elements: BTreeSet<String>) {
        self.sets.insert(name.into(), Set { kind, elements });
    }

    fn add_base_chain(&mut self, model: &RuleModel, direction: Direction) {
        let (name, priority, counter, field) = match direction {
            Direction::Ingress => (CHAIN_INGRESS, PRIORITY_INGRESS, COUNTER_INGRESS, "daddr"),
            Direction::Egress => (CHAIN_EGRESS, PRIORITY_EGRESS, COUNTER_EGRESS, "saddr"),
        };
        let mut rules: Vec<String> = ALWAYS_ACCEPTED.iter().map(|r| r.to_string()).collect();
        for ((_, d), policy) in &model.policies {
            if *d != direction || policy.rules.is_empty() {
                continue;
            }
            let chain = chain_name(direction, &policy.id);
            for v6 in [false, true] {
                let fam = family(v6);
                let suffix = if v6 { 6 } else { 4 };
                rules.push(format!(
                    "{fam} {field} @{chain}.targets{suffix} jump {chain}"
                ));
            }
        }
        for v6 in [false, true] {
            let set = isolated_set(direction, v6);
            let fam = family(v6);
            rules.push(format!("{fam} {field} @{set} counter name {counter} drop"));
            let elements = addrs(model.isolated(direction), v6);
            self.add_set(
                &set,
                SetKind::Addr {
                    v6,
                    interval: false,
                },
                elements,
            );
        }
        let chain = Chain {
            forward_priority: Some(priority),
            comment: None,
            rules,
        };
        self.chains.insert(name.into(), chain);
    }

    fn add_policy(&mut self, direction: Direction, policy: &PolicyRules, text: &str) {
        let chain = chain_name(direction, &policy.id);
        let (peer_field, named_needs_peers) = match direction {
            Direction::Ingress => ("saddr", true),
            // Egress named ports are resolved on the peers' pods already.
            Direction::Egress => ("daddr", false),
        };
        for v6 in [false, true] {
            let suffix = if v6 { 6 } else { 4 };
            let kind = SetKind::Addr {
                v6,
                interval: false,
            };
            let elements = addrs(&policy.targets, v6);
            self.add_set(&format!("{chain}.targets{suffix}"), kind, elements);
        }
        let mut rules = Vec::new();
        for rule in &policy.rules {
            let stem = format!("{chain}.{}", rule.index);
            // Per family, the match on the peers ("" for any peer).
            let mut peer_match = [String::new(), String::new()];
            if let Peers::Only(r) = &rule.peers {
                for v6 in [false, true] {
                    let set = format!("{stem}.peers{}", if v6 { 6 } else { 4 });
                    let kind = SetKind::Addr { v6, interval: true };
                    self.add_set(&set, kind, ranges(r, v6));
                    peer_match[v6 as usize] = format!("{} {peer_field} @{set}", family(v6));
                }
            }
            // `tail` after the peers' match, once per family unless any peer will do.
            let mut allow = |tail: &str| {
                let mut matches: Vec<&String> = peer_match.iter().collect();
                matches.dedup();
                for m in matches {
                    rules.push(join(&[m, tail, "accept"]));
                }
            };
            let Ports::Only {
                numeric,
                named: names,
            } = &rule.ports
            else {
                allow("");
                continue;
            };
            if !numeric.is_empty() {
                let set = format!("{stem}.ports");
                let elements = numeric
                    .iter()
                    .map(|p| match p.first == p.last {
                        true => format!("{} . {}", p.protocol.nft(), p.first),
                        false => format!("{} . {}-{}", p.protocol.nft(), p.first, p.last),
                    })
                    .collect();
                self.add_set(&set, SetKind::Ports, elements);
                allow(&format!("meta l4proto . th dport @{set}"));
            }
            if let Some(names) = names {
                for v6 in [false, true] {
                    let set = format!("{stem}.named{}", if v6 { 6 } else { 4 });
                    self.add_set(&set, SetKind::Named { v6 }, named(names, v6));
                    let fam = family(v6);
                    let lookup = format!("{fam} daddr . meta l4proto . th dport @{set}");
                    let peers = match named_needs_peers {
                        true => peer_match[v6 as usize].as_str(),
                        false => "",
                    };
                    rules.push(join(&[peers, &lookup, "accept"]));
                }
            }
        }
        let chain_def = Chain {
            forward_priority: None,
            comment: Some(comment(text)),
            rules,
        };
        self.chains.insert(chain, chain_def);
    }
}

pub(super) fn chain_name(direction: Direction, id: &str) -> String {
    format!("{}.{id}", direction.short())
}

pub(super) fn isolated_set(direction: Direction, v6: bool) -> String {
    format!("isolated.{}{}", direction.short(), if v6 { 6 } else { 4 })
}

mod script;

pub(super) use script::{write_add_chain, write_add_set, write_rules};

#[cfg(test)]
mod tests;
