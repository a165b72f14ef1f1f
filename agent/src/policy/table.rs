//! The `inet weft-policy` table in the kernel (I/O): loading scripts, reading the drop
//! counters, removing it, all through `nft`; and the br_netfilter sysctls that put
//! bridged traffic in front of it. All in the calling thread's network namespace.

use crate::datapath::Error;
use crate::firewall::{list_counters, run_nft, NamedCounter};

use super::render::{COUNTER_EGRESS, COUNTER_INGRESS, FAMILY, TABLE};

/// Loads an `nft -f` script: one transaction, all of it or nothing.
pub fn load(script: &str, op: &str) -> Result<(), Error> {
    run_nft(&["-f", "-"], Some(script.as_bytes()), op).map(|_| ())
}

/// The table's named counters; `None` when there is no table (or it cannot be read).
pub fn counters() -> Option<Vec<NamedCounter>> {
    list_counters(FAMILY, TABLE).ok()
}

/// (ingress, egress) packets dropped, from [`counters`].
pub fn drops(counters: &[NamedCounter]) -> (u64, u64) {
    let get = |name: &str| {
        counters
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.packets)
    };
    (get(COUNTER_INGRESS), get(COUNTER_EGRESS))
}

/// Removes the table; no table is success (adding it first makes the delete valid).
pub fn remove() -> Result<(), Error> {
    let script = format!("add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n");
    load(&script, "delete table inet weft-policy")
}

/// Turns on br_netfilter's hooks in this netns, so traffic bridged between two pods of
/// the node passes the forward hook (and the policy table) like routed traffic. An
/// error when the module is not loaded: the caller reports it.
pub fn bridge_netfilter_on() -> Result<(), Error> {
    crate::datapath::sysctl_on("bridge/bridge-nf-call-iptables")?;
    crate::datapath::sysctl_on("bridge/bridge-nf-call-ip6tables")
}
