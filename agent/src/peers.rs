//! The desired peer set: what the datapath needs to know about each remote node.

use std::net::IpAddr;

use ipnet::IpNet;
use weft_common::annotations::Vtep;

/// A remote node as the datapath needs it. Built from a Node object (name, spec.podCIDRs,
/// weft annotations, InternalIP) or, in tests and benchmarks, by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// spec.podCIDRs, IPv4 first when dual-stack.
    pub pod_cidrs: Vec<IpNet>,
    /// VTEP of the node's VXLAN device (both pod address families), once published.
    pub vtep: Option<Vtep>,
    /// The node's InternalIP, used for direct routing on a shared L2 subnet.
    pub node_ip: Option<IpAddr>,
}
