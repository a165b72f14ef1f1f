//! The desired peer set: what the datapath needs to know about each remote node, and
//! ([`validate`]) which remote Nodes may become kernel entries at all.

pub mod validate;
pub mod verdicts;

use std::net::IpAddr;

use ipnet::IpNet;
use weft_common::annotations::Vtep;

pub use validate::{validate, Reason, Rejection, Rules};
pub use verdicts::{PeerChange, Verdicts};

/// A remote node as the datapath needs it. Built from a Node object (name, spec.podCIDRs,
/// weft annotations, InternalIP) or, in tests and benchmarks, by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// spec.podCIDRs, IPv4 first when dual-stack.
    pub pod_cidrs: Vec<IpNet>,
    /// VTEP of the node's VXLAN device (both pod address families), once published.
    pub vtep: Option<Vtep>,
    /// The node's InternalIP, used for direct routing on a shared L2 subnet.
    pub node_ip: Option<IpAddr>,
    /// Who came first, when two Nodes claim the same pod CIDR, MAC or address: what a
    /// newcomer cannot forge (the API server sets both).
    pub age: Age,
    /// The `weft.dev/vni` annotation as published (absent on hand-made peers).
    pub vni: Option<String>,
}

/// The order in which claims are honoured: older Node first (metadata.creationTimestamp,
/// seconds), then the UID, then the name. Unknown creation times sort last.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Age {
    pub created: Option<i64>,
    pub uid: String,
}

impl Age {
    fn key(&self) -> (i64, &str) {
        (self.created.unwrap_or(i64::MAX), &self.uid)
    }
}
