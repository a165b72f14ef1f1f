//! The allocation table: which node owns which slice of the cluster CIDR. Pure, no I/O.
//!
//! Per address family a [`Pool`] carves the cluster CIDR into node subnets of one size
//! and records who owns which. Ownership is kept as a sparse map of index ranges, so a
//! /32 IPv6 cluster cut into /64s (2^32 subnets) costs memory per node, not per subnet.
//!
//! What a Node's existing podCIDR may take: a Node object is written by its kubelet (or
//! anyone allowed to create Nodes), so its podCIDR is a claim, not a fact. The table
//! records one only when it is exactly one node subnet of the cluster CIDR that no other
//! node holds; a claim is never counted as covering more than one node subnet.
//! * Outside the cluster CIDR: nothing is recorded (there is nothing of ours to block).
//! * Inside but of the wrong size (a /17 or a /25 where /24 is the rule): nothing is
//!   recorded either. Recording what it overlaps would let one Node take any share of
//!   the pool (a /17 in a /16 of /24s: 128 of 256 subnets), and agents do not route a
//!   wrong-size pod CIDR, so it carries no traffic that another node's subnet inside it
//!   could collide with.
//! * The right size but already held by another node (a duplicate): refused, and the
//!   holder keeps it; the duplicate overlaps exactly that one subnet, so refusing it
//!   marks nothing more. It is recorded if the holder lets the subnet go.
//!
//! Refusals come back as [`AdoptError`]s; the reconcile loop turns them into Warning
//! Events and the `weft_controller_rejected_pod_cidrs` gauge.
//!
//! Allocation is round-robin: the search starts after the last subnet handed out, so a
//! subnet freed by a deleted node is not given to the next node at once.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// IP address family of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// Why a node's existing podCIDR could not be recorded as its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdoptError {
    /// Not inside the cluster CIDR of its family (or no pool for its family).
    OutsideCluster(IpNet),
    /// Inside the cluster CIDR but not one node subnet: its prefix length is not `want`.
    WrongSize { cidr: IpNet, want: u8 },
    /// Overlaps a subnet another node already owns.
    Conflict { cidr: IpNet, with: String },
}

impl std::fmt::Display for AdoptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdoptError::OutsideCluster(c) => write!(f, "podCIDR {c} lies outside the cluster CIDR"),
            AdoptError::WrongSize { cidr, want } => write!(
                f,
                "podCIDR {cidr} is not a node subnet: the cluster gives each node a /{want}"
            ),
            AdoptError::Conflict { cidr, with } => {
                write!(f, "podCIDR {cidr} overlaps the pod CIDR of node {with}")
            }
        }
    }
}

/// No free subnet left in a family's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted(pub Family);

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no free {} node subnet left", self.0.label())
    }
}

/// Subnet counts of one pool, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub total: u128,
    pub used: u128,
}

impl PoolStats {
    pub fn free(&self) -> u128 {
        self.total - self.used
    }
}

#[derive(Clone, Debug)]
struct Range {
    end: u128,
    owner: String,
}

/// One family's node subnets: `count` subnets of `/node_len` inside `cluster`.
#[derive(Clone, Debug)]
pub struct Pool {
    cluster: IpNet,
    node_len: u8,
    count: u128,
    /// Owned index ranges, `start -> (end exclusive, owner)`, never overlapping.
    used: BTreeMap<u128, Range>,
    used_count: u128,
    /// Where the next search starts: right after the last subnet handed out.
    cursor: u128,
}

impl Pool {
    /// `node_len` must lie between the cluster prefix length and the family's maximum
    /// (the config validation guarantees it); the subnet count then fits in a u128.
    pub fn new(cluster: IpNet, node_len: u8) -> Pool {
        let cluster = cluster.trunc();
        assert!(node_len >= cluster.prefix_len() && node_len <= cluster.max_prefix_len());
        let bits = u32::from(node_len - cluster.prefix_len());
        assert!(bits < 128, "pool of 2^{bits} subnets is too large");
        Pool {
            cluster,
            node_len,
            count: 1u128 << bits,
            used: BTreeMap::new(),
            used_count: 0,
            cursor: 0,
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.cluster)
    }

    pub fn cluster(&self) -> IpNet {
        self.cluster
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            total: self.count,
            used: self.used_count,
        }
    }

    fn shift(&self) -> u32 {
        u32::from(self.cluster.max_prefix_len() - self.node_len)
    }

    fn base(&self) -> u128 {
        addr_to_u128(self.cluster.network())
    }

    /// The node subnet with index `i`.
    pub fn subnet(&self, i: u128) -> IpNet {
        let addr = self.base() + (i << self.shift());
        make_net(self.family(), addr, self.node_len)
    }

    /// The index range `[start, end)` of node subnets that `net` overlaps, or `None`
    /// when it is not inside the cluster CIDR.
    fn range_of(&self, net: &IpNet) -> Option<(u128, u128)> {
        if Family::of(net) != self.family() || !self.cluster.contains(net) {
            return None;
        }
        let net = net.trunc();
        let offset = addr_to_u128(net.network()) - self.base();
        let start = offset >> self.shift();
        let end = if net.prefix_len() >= self.node_len {
            start + 1
        } else {
            start + (1u128 << (self.node_len - net.prefix_len()))
        };
        Some((start, end))
    }

    /// The owner of a range overlapping `[start, end)`, other than `me`.
    fn overlapping_owner(&self, start: u128, end: u128, me: &str) -> Option<&str> {
        if let Some((_, r)) = self.used.range(..start).next_back() {
            if r.end > start && r.owner != me {
                return Some(&r.owner);
            }
        }
        self.used
            .range(start..end)
            .find(|(_, r)| r.owner != me)
            .map(|(_, r)| r.owner.as_str())
    }

    /// Records `net` as owned by `node` when it is exactly one node subnet that no other
    /// node owns (see the module doc). Re-adopting what the node already owns is Ok.
    pub fn adopt(&mut self, node: &str, net: &IpNet) -> Result<(), AdoptError> {
        let Some((start, end)) = self.range_of(net) else {
            return Err(AdoptError::OutsideCluster(*net));
        };
        if net.prefix_len() != self.node_len {
            return Err(AdoptError::WrongSize {
                cidr: *net,
                want: self.node_len,
            });
        }
        if let Some(other) = self.overlapping_owner(start, end, node) {
            return Err(AdoptError::Conflict {
                cidr: *net,
                with: other.to_string(),
            });
        }
        // Anything overlapping is the node's own: replace it.
        self.remove_overlapping(start, end);
        self.insert(start, end, node);
        Ok(())
    }

    fn remove_overlapping(&mut self, start: u128, end: u128) {
        let mut doomed: Vec<u128> = self.used.range(start..end).map(|(s, _)| *s).collect();
        if let Some((s, r)) = self.used.range(..start).next_back() {
            if r.end > start {
                doomed.push(*s);
            }
        }
        for s in doomed {
            if let Some(r) = self.used.remove(&s) {
                self.used_count -= r.end - s;
            }
        }
    }

    fn insert(&mut self, start: u128, end: u128, node: &str) {
        self.used.insert(
            start,
            Range {
                end,
                owner: node.to_string(),
            },
        );
        self.used_count += end - start;
    }

    /// Hands out the first free subnet at or after the cursor (wrapping once).
    pub fn allocate(&mut self, node: &str) -> Result<IpNet, Exhausted> {
        let i = self
            .first_free(self.cursor, self.count)
            .or_else(|| self.first_free(0, self.cursor))
            .ok_or(Exhausted(self.family()))?;
        self.insert(i, i + 1, node);
        self.cursor = if i + 1 == self.count { 0 } else { i + 1 };
        Ok(self.subnet(i))
    }

    /// First index in `[from, to)` not covered by any range.
    fn first_free(&self, from: u128, to: u128) -> Option<u128> {
        let mut candidate = from;
        if let Some((_, r)) = self.used.range(..candidate).next_back() {
            candidate = candidate.max(r.end);
        }
        for (s, r) in self.used.range(candidate..) {
            if *s > candidate || candidate >= to {
                break;
            }
            candidate = r.end;
        }
        (candidate < to).then_some(candidate)
    }

    /// Frees `net` if `node` owns it; returns whether anything was freed.
    pub fn release(&mut self, node: &str, net: &IpNet) -> bool {
        let Some((start, end)) = self.range_of(net) else {
            return false;
        };
        let owned: Vec<u128> = self
            .used
            .range(..end)
            .rev()
            .take_while(|(_, r)| r.end > start)
            .filter(|(_, r)| r.owner == node)
            .map(|(s, _)| *s)
            .collect();
        for s in &owned {
            if let Some(r) = self.used.remove(s) {
                self.used_count -= r.end - s;
            }
        }
        !owned.is_empty()
    }
}

fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn make_net(family: Family, addr: u128, len: u8) -> IpNet {
    let ip = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(addr as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(addr)),
    };
    IpNet::new(ip, len).expect("prefix length checked at pool creation")
}

/// All families: a node gets one subnet per configured family, or nothing.
#[derive(Clone, Debug)]
pub struct Allocator {
    /// In the configured order (the first is the node's primary podCIDR).
    pools: Vec<Pool>,
    /// What each node owns, as recorded (allocated or adopted).
    nodes: HashMap<String, Vec<IpNet>>,
    /// What nodes owned when they were last released (deleted): a Node deleted and
    /// registered again under the same name gets its old subnets back when they are
    /// still free, so its running pods keep working. In memory only.
    released: HashMap<String, Vec<IpNet>>,
}

/// Bound on remembered releases; past it the memory starts over (only a preference).
const RELEASED_MAX: usize = 16_384;

impl Allocator {
    /// `pools` in the order of the cluster CIDRs; at most one per family.
    pub fn new(pools: Vec<Pool>) -> Allocator {
        Allocator {
            pools,
            nodes: HashMap::new(),
            released: HashMap::new(),
        }
    }

    /// From `(cluster CIDR, node prefix length)` pairs.
    pub fn from_config(cidrs: &[(IpNet, u8)]) -> Allocator {
        Allocator::new(cidrs.iter().map(|(c, l)| Pool::new(*c, *l)).collect())
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// What `node` owns in this table.
    pub fn owned(&self, node: &str) -> Option<&[IpNet]> {
        self.nodes.get(node).map(Vec::as_slice)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// One subnet per family for `node`, all or nothing. A node that already owns
    /// subnets gets them back unchanged.
    pub fn allocate(&mut self, node: &str) -> Result<Vec<IpNet>, Exhausted> {
        if let Some(have) = self.nodes.get(node) {
            return Ok(have.clone());
        }
        if let Some(previous) = self.reclaim(node) {
            return Ok(previous);
        }
        let mut got = Vec::with_capacity(self.pools.len());
        for i in 0..self.pools.len() {
            let cursor = self.pools[i].cursor;
            match self.pools[i].allocate(node) {
                Ok(net) => got.push((net, cursor)),
                Err(e) => {
                    // Roll back: nothing taken, round-robin where it was.
                    for (pool, (net, cursor)) in self.pools.iter_mut().zip(&got) {
                        pool.release(node, net);
                        pool.cursor = *cursor;
                    }
                    return Err(e);
                }
            }
        }
        let got: Vec<IpNet> = got.into_iter().map(|(net, _)| net).collect();
        self.nodes.insert(node.to_string(), got.clone());
        Ok(got)
    }

    /// The subnets `node` held before it was released, when every one is still free and
    /// they cover the configured families; recorded as the node's again.
    fn reclaim(&mut self, node: &str) -> Option<Vec<IpNet>> {
        let previous = self.released.remove(node)?;
        let covers = previous.len() == self.pools.len()
            && self
                .pools
                .iter()
                .all(|p| previous.iter().any(|n| Family::of(n) == p.family()));
        if !covers {
            return None;
        }
        let mut taken: Vec<IpNet> = Vec::with_capacity(previous.len());
        for net in &previous {
            let pool = self
                .pools
                .iter_mut()
                .find(|p| p.family() == Family::of(net))?;
            if pool.adopt(node, net).is_err() {
                // Someone else has it now: undo, and allocate afresh.
                for t in &taken {
                    if let Some(p) = self.pools.iter_mut().find(|p| p.family() == Family::of(t)) {
                        p.release(node, t);
                    }
                }
                return None;
            }
            taken.push(*net);
        }
        self.nodes.insert(node.to_string(), previous.clone());
        Some(previous)
    }

    /// Records what `node` has in its spec as its own, replacing what the table held for
    /// it. Returns one error per podCIDR that could not be recorded; the rest are kept.
    pub fn adopt(&mut self, node: &str, cidrs: &[IpNet]) -> Vec<AdoptError> {
        self.release(node);
        let mut errors = Vec::new();
        let mut kept = Vec::new();
        for net in cidrs {
            let Some(pool) = self
                .pools
                .iter_mut()
                .find(|p| p.family() == Family::of(net))
            else {
                errors.push(AdoptError::OutsideCluster(*net));
                continue;
            };
            match pool.adopt(node, net) {
                Ok(()) => kept.push(*net),
                Err(e) => errors.push(e),
            }
        }
        if !kept.is_empty() {
            self.nodes.insert(node.to_string(), kept);
        }
        errors
    }

    /// Frees everything `node` owns; returns what was freed.
    pub fn release(&mut self, node: &str) -> Vec<IpNet> {
        let Some(nets) = self.nodes.remove(node) else {
            return Vec::new();
        };
        if self.released.len() >= RELEASED_MAX {
            self.released.clear();
        }
        self.released.insert(node.to_string(), nets.clone());
        for net in &nets {
            if let Some(pool) = self
                .pools
                .iter_mut()
                .find(|p| p.family() == Family::of(net))
            {
                pool.release(node, net);
            }
        }
        nets
    }

    /// Per family: (family, cluster CIDR, counts).
    pub fn stats(&self) -> Vec<(Family, PoolStats)> {
        self.pools.iter().map(|p| (p.family(), p.stats())).collect()
    }

    /// A new table with the same pools and cursors but no owners: the start of a rebuild
    /// that keeps round-robin going where it was.
    pub fn emptied(&self) -> Allocator {
        let pools = self
            .pools
            .iter()
            .map(|p| Pool {
                used: BTreeMap::new(),
                used_count: 0,
                ..p.clone()
            })
            .collect();
        Allocator {
            released: self.released.clone(),
            ..Allocator::new(pools)
        }
    }
}

#[cfg(test)]
mod tests;
