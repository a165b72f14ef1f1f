//! The compiler's output: what this node must enforce, in the shape the nftables table
//! takes, so that a change in the cluster changes few parts of it.
//!
//! * Isolation: the local pod IPs isolated per direction (a pod is isolated in a
//!   direction once any policy of that direction selects it).
//! * Per (policy, direction) that selects a local pod: the selected local pod IPs (the
//!   membership) and the accepted rules, each keeping its index in the policy, so
//!   `(policy, direction, index)` names the same rule across changes. A rule's peers and
//!   ports are its own element sets; a pod changing labels moves a few addresses in and
//!   out of them and of the memberships, and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::error::Problem;
use super::model::{Direction, PolicyKey, Protocol};
use super::ranges::{AddrRanges, PortRange};

/// The desired policy state of this node's pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleModel {
    pub ingress_isolated: BTreeSet<IpAddr>,
    pub egress_isolated: BTreeSet<IpAddr>,
    pub policies: BTreeMap<(PolicyKey, Direction), PolicyRules>,
    pub problems: Vec<Problem>,
}

impl RuleModel {
    pub fn isolated(&self, direction: Direction) -> &BTreeSet<IpAddr> {
        match direction {
            Direction::Ingress => &self.ingress_isolated,
            Direction::Egress => &self.egress_isolated,
        }
    }
}

/// One policy in one direction, as it applies to this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRules {
    /// The stem of its nftables names, stable for the policy (see [`policy_id`]).
    pub id: String,
    /// The local pod IPs it selects.
    pub targets: BTreeSet<IpAddr>,
    /// The accepted rules in policy order; rejected ones are missing (and reported).
    pub rules: Vec<Rule>,
}

/// One ingress or egress rule: traffic from (ingress) or to (egress) `peers` on `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its index in the policy's list of rules of this direction.
    pub index: usize,
    pub peers: Peers,
    pub ports: Ports,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peers {
    /// No `from`/`to`: every source or destination.
    Any,
    /// The union of the peers' addresses (may be empty: nothing matches).
    Only(AddrRanges),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    /// No `ports`: every port and protocol (ICMP too).
    Any,
    Only {
        /// Numeric ports and ranges (`port`/`endPort`, or a protocol alone).
        numeric: Vec<PortRange>,
        /// `Some` when the rule names ports: those names resolved to (pod IP, protocol,
        /// port): per selected local pod for ingress, per destination pod for egress
        /// (then already limited to the rule's peers).
        named: Option<BTreeSet<NamedElement>>,
    },
}

/// A named port resolved on one pod address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedElement {
    pub addr: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// Longest `namespace.name` kept readable in nftables names (they may hold 255 bytes,
/// and a rule's set adds a suffix).
const MAX_READABLE_ID: usize = 200;

/// The stem of a policy's nftables names: `namespace.name` when that is short and made
/// of DNS characters (namespaces hold no dot, so the split is unambiguous), else `h`
/// and a 64-bit FNV-1a hash of `namespace/name` (no dot, so it never meets a readable
/// one). The compiler checks hashed stems for collisions.
pub fn policy_id(key: &PolicyKey) -> String {
    let dns = |s: &str, dot: bool| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dot && b == b'.')
            })
    };
    if dns(&key.namespace, false)
        && dns(&key.name, true)
        && key.namespace.len() + key.name.len() < MAX_READABLE_ID
    {
        return format!("{}.{}", key.namespace, key.name);
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("h{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> PolicyKey {
        PolicyKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn ids_are_readable_when_they_can_be_and_stable() {
        assert_eq!(
            policy_id(&key("default", "test-network-policy")),
            "default.test-network-policy"
        );
        assert_eq!(policy_id(&key("a", "b.c")), "a.b.c");
        let long = "x".repeat(250);
        let h = policy_id(&key("default", &long));
        assert_eq!(h.len(), 17);
        assert!(h.starts_with('h') && !h.contains('.'));
        assert_eq!(h, policy_id(&key("default", &long)));
        assert_ne!(h, policy_id(&key("other", &long)));
        assert!(policy_id(&key("Bad", "x")).starts_with('h'));
        assert!(policy_id(&key("a.b", "x")).starts_with('h'));
    }
}
