//! What to change: the pure half of a sync.
//!
//! [`desired`] turns the peer set into the entries the kernel should hold (per remote
//! node: a permanent neighbour, an FDB entry and an onlink route, or one plain route with
//! direct routing). [`diff`] compares them with what a dump found and returns the
//! [`Plan`]: entries to delete, to add and to replace. Entries that are not weft's (routes
//! of another protocol or table, neighbours and FDB entries of other devices, neighbours
//! the kernel learnt itself) are left alone.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;
use weft_common::annotations::Mac;

use crate::peers::Peer;

/// weft's route protocol number (`proto 87` in `ip route`). Not reserved in
/// /etc/iproute2/rt_protos nor in the kernel's `RTPROT_*` list; ASCII 'W'.
pub const ROUTE_PROTOCOL: u8 = 87;
/// The kernel's main routing table, the only one weft uses.
pub const MAIN_TABLE: u32 = 254;

fn unspecified(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// A multiply-rotate hasher for the diff's small keys (IPs, MACs, CIDRs): several times
/// cheaper than SipHash, which matters at 15000 entries per sync. Keys come from Node
/// objects the cluster's own components write, so flooding resistance is not needed.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weakest; the table indexes by them.
        self.0.rotate_left(26)
    }
}

/// A hash map with [`KeyHasher`].
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;
type KeySet<K> = HashSet<K, BuildHasherDefault<KeyHasher>>;

fn key_map<K, V>(capacity: usize) -> KeyMap<K, V> {
    KeyMap::with_capacity_and_hasher(capacity, Default::default())
}

/// A permanent neighbour on the VXLAN device: remote VTEP IP -> remote VTEP MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neigh {
    pub ip: IpAddr,
    pub mac: Mac,
}

/// An FDB entry on the VXLAN device: remote VTEP MAC -> remote underlay IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    pub mac: Mac,
    pub dst: IpAddr,
}

/// A route to a remote pod CIDR in the main table with weft's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: IpAddr,
    pub oif: u32,
    pub onlink: bool,
    /// Metric; weft's own routes use 0. Kept so a stale one is deleted exactly.
    pub priority: u32,
}

/// A desired entry with the peer it is for, so errors can name the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForPeer<'a, T> {
    pub peer: &'a str,
    pub entry: T,
}

/// What the kernel should hold, keyed the way the kernel identifies each entry. Borrows
/// the peers' names: at 5000 peers a sync builds it without one allocation per entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired<'a> {
    pub neighs: KeyMap<IpAddr, ForPeer<'a, Mac>>,
    pub fdb: KeyMap<Mac, ForPeer<'a, IpAddr>>,
    pub routes: KeyMap<IpNet, ForPeer<'a, Route>>,
    /// Peers that got entries.
    pub peers: usize,
    /// Peers left out, with the reason (no pod CIDR, no VTEP, conflicts).
    pub skipped: Vec<(String, String)>,
}

/// The local facts [`desired`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// ifindex of the VXLAN device.
    pub device: u32,
    /// ifindex of the underlay interface.
    pub underlay: u32,
    /// The underlay address with its prefix: peers whose node IP lies inside get direct
    /// routes when `direct_routing` is on.
    pub underlay_net: Option<IpNet>,
    pub direct_routing: bool,
    /// This node's pod CIDRs: a peer claiming one of them is skipped.
    pub own_pod_cidrs: Vec<IpNet>,
}

/// The VTEP IP of a node: the network address of its pod CIDR (flannel's convention).
pub fn vtep_ip(pod_cidr: &IpNet) -> IpAddr {
    pod_cidr.network()
}

/// The metric weft's routes carry: 0 for IPv4; 1024 for IPv6, where the kernel stores a
/// route added without one at 1024 (asking for it keeps desired and dumped routes equal).
pub fn route_metric(dst: &IpNet) -> u32 {
    match dst {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => 1024,
    }
}

/// The entries for every peer, for each of its pod CIDRs (IPv4 and IPv6 alike ride the one
/// VXLAN device): per CIDR a neighbour for its VTEP IP and an onlink route, per peer one
/// FDB entry. A peer is programmed whole or not at all.
pub fn desired<'a>(peers: impl IntoIterator<Item = &'a Peer>, local: &Local) -> Desired<'a> {
    let peers = peers.into_iter();
    let n = peers.size_hint().0;
    let mut out = Desired {
        neighs: key_map(n),
        fdb: key_map(n),
        routes: key_map(n),
        ..Default::default()
    };
    for peer in peers {
        if let Some(reason) = conflict(peer, local, &out) {
            out.skipped.push((peer.name.clone(), reason));
            continue;
        }
        // Direct routing: a CIDR of the node IP's family, when that IP is on our subnet.
        let direct = |cidr: &IpNet| match (local.direct_routing, local.underlay_net, peer.node_ip) {
            (true, Some(net), Some(ip))
                if net.contains(&ip) && ip.is_ipv4() == matches!(cidr, IpNet::V4(_)) =>
            {
                Some(ip)
            }
            _ => None,
        };
        let tunnelled = peer.pod_cidrs.iter().any(|c| direct(c).is_none());
        let vtep = match peer.vtep {
            Some(v) if tunnelled => {
                if out.fdb.contains_key(&v.mac) {
                    out.skipped.push((
                        peer.name.clone(),
                        format!("VTEP MAC {} already used by another peer", v.mac),
                    ));
                    continue;
                }
                out.fdb.insert(v.mac, for_peer(peer, v.public_ip));
                Some(v)
            }
            None if tunnelled => {
                out.skipped
                    .push((peer.name.clone(), "no VTEP published yet".into()));
                continue;
            }
            _ => None,
        };
        for cidr in &peer.pod_cidrs {
            let route = match (direct(cidr), vtep) {
                (Some(node_ip), _) => Route {
                    dst: *cidr,
                    gateway: node_ip,
                    oif: local.underlay,
                    onlink: false,
                    priority: route_metric(cidr),
                },
                (None, Some(v)) => {
                    let ip = vtep_ip(cidr);
                    out.neighs.insert(ip, for_peer(peer, v.mac));
                    Route {
                        dst: *cidr,
                        gateway: ip,
                        oif: local.device,
                        onlink: true,
                        priority: route_metric(cidr),
                    }
                }
                (None, None) => continue, // not reached: `tunnelled` implies a VTEP
            };
            out.routes.insert(*cidr, for_peer(peer, route));
        }
        out.peers += 1;
    }
    out
}

/// Why `peer` cannot be programmed, if it cannot: no pod CIDR, or one that overlaps this
/// node's or is already another peer's.
fn conflict(peer: &Peer, local: &Local, so_far: &Desired) -> Option<String> {
    if peer.pod_cidrs.is_empty() {
        return Some("no pod CIDR".into());
    }
    peer.pod_cidrs.iter().find_map(|cidr| {
        if local
            .own_pod_cidrs
            .iter()
            .any(|own| own.contains(cidr) || cidr.contains(own))
        {
            Some(format!("pod CIDR {cidr} overlaps this node's"))
        } else if so_far.routes.contains_key(cidr) {
            Some(format!("pod CIDR {cidr} already claimed by another peer"))
        } else {
            None
        }
    })
}

fn for_peer<T>(peer: &Peer, entry: T) -> ForPeer<'_, T> {
    ForPeer {
        peer: &peer.name,
        entry,
    }
}

/// A neighbour as dumped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActualNeigh {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Option<Mac>,
    pub permanent: bool,
}

/// An FDB entry (AF_BRIDGE neighbour) as dumped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActualFdb {
    pub ifindex: u32,
    pub mac: Mac,
    /// The remote (`dst`); entries without one are not weft's.
    pub dst: Option<IpAddr>,
}

/// A route as dumped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActualRoute {
    pub table: u32,
    pub protocol: u8,
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub onlink: bool,
    pub priority: u32,
}

/// What a dump found.
#[derive(Clone, Debug, Default)]
pub struct Actual {
    pub neighs: Vec<ActualNeigh>,
    pub fdb: Vec<ActualFdb>,
    pub routes: Vec<ActualRoute>,
}

/// Whether an entry is new or replaces a different one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Add,
    Update,
}

/// An entry to write (`NLM_F_CREATE | NLM_F_REPLACE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set<T> {
    pub peer: String,
    pub entry: T,
    pub change: Change,
}

/// The changes, applied in this order: stale routes first, then stale neighbours and FDB
/// entries, then new neighbours and FDB entries, routes last, so a route never points at
/// a VTEP the kernel cannot resolve yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub del_routes: Vec<Route>,
    pub del_neighs: Vec<Neigh>,
    pub del_fdb: Vec<Fdb>,
    pub set_neighs: Vec<Set<Neigh>>,
    pub set_fdb: Vec<Set<Fdb>>,
    pub set_routes: Vec<Set<Route>>,
}

impl Plan {
    /// Puts every list in key order (deletions stay in dump order within a key).
    pub(super) fn sort(&mut self) {
        self.set_neighs.sort_by_key(|s| s.entry.ip);
        self.set_fdb.sort_by_key(|s| s.entry.mac);
        self.set_routes.sort_by_key(|s| s.entry.dst);
        self.del_neighs.sort_by_key(|n| n.ip);
        self.del_fdb.sort_by_key(|f| f.mac);
        self.del_routes.sort_by_key(|r| r.dst);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn len(&self) -> usize {
        self.del_routes.len()
            + self.del_neighs.len()
            + self.del_fdb.len()
            + self.set_neighs.len()
            + self.set_fdb.len()
            + self.set_routes.len()
    }
    pub fn removed(&self) -> usize {
        self.del_routes.len() + self.del_neighs.len() + self.del_fdb.len()
    }
    fn count(&self, change: Change) -> usize {
        self.set_neighs
            .iter()
            .filter(|s| s.change == change)
            .count()
            + self.set_fdb.iter().filter(|s| s.change == change).count()
            + self
                .set_routes
                .iter()
                .filter(|s| s.change == change)
                .count()
    }
    pub fn added(&self) -> usize {
        self.count(Change::Add)
    }
    pub fn updated(&self) -> usize {
        self.count(Change::Update)
    }
}

/// Desired vs actual for the VXLAN device `device`. Linear in the number of entries (one
/// hash lookup per dumped entry); the plan's lists come out sorted.
pub fn diff(desired: &Desired, actual: &Actual, device: u32) -> Plan {
    let mut plan = Plan::default();

    // Neighbours: ours are the permanent ones on our device. A kernel-made entry (ARP
    // state) for a desired IP is replaced; one for another IP is the kernel's business.
    // `seen`: desired IPs present, and whether exactly as wanted.
    let mut seen: KeyMap<IpAddr, bool> = key_map(desired.neighs.len());
    for n in actual.neighs.iter().filter(|n| n.ifindex == device) {
        match desired.neighs.get(&n.ip) {
            Some(want) => {
                let ok = n.permanent && n.mac == Some(want.entry);
                seen.insert(n.ip, ok);
            }
            None if n.permanent => {
                if let Some(mac) = n.mac {
                    plan.del_neighs.push(Neigh { ip: n.ip, mac });
                }
            }
            None => {}
        }
    }
    for (ip, want) in &desired.neighs {
        let change = match seen.get(ip) {
            Some(true) => continue,
            Some(false) => Change::Update,
            None => Change::Add,
        };
        plan.set_neighs.push(Set {
            peer: want.peer.to_owned(),
            entry: Neigh {
                ip: *ip,
                mac: want.entry,
            },
            change,
        });
    }

    // FDB: one remote per MAC. A MAC whose remotes do not include the desired one gets its
    // first remote replaced (the kernel's NLM_F_REPLACE semantics) and the others deleted.
    // `fdb_state`: per desired MAC present in the kernel, whether the desired remote is
    // among its remotes; `others`: every other remote of ours, in dump order.
    let mut fdb_state: KeyMap<Mac, bool> = key_map(desired.fdb.len());
    let mut others = Vec::new();
    for f in actual.fdb.iter().filter(|f| f.ifindex == device) {
        let Some(dst) = f.dst else { continue };
        match desired.fdb.get(&f.mac) {
            Some(want) if want.entry == dst => {
                fdb_state.insert(f.mac, true);
            }
            Some(_) => {
                fdb_state.entry(f.mac).or_insert(false);
                others.push(Fdb { mac: f.mac, dst });
            }
            None => plan.del_fdb.push(Fdb { mac: f.mac, dst }),
        }
    }
    // A desired MAC without its desired remote keeps its first other remote (replaced in
    // place); every further one goes.
    let mut kept: KeySet<Mac> = KeySet::default();
    for o in others {
        if fdb_state.get(&o.mac) == Some(&false) && kept.insert(o.mac) {
            continue;
        }
        plan.del_fdb.push(o);
    }
    for (mac, want) in &desired.fdb {
        let change = match fdb_state.get(mac) {
            Some(true) => continue,
            Some(false) => Change::Update,
            None => Change::Add,
        };
        plan.set_fdb.push(Set {
            peer: want.peer.to_owned(),
            entry: Fdb {
                mac: *mac,
                dst: want.entry,
            },
            change,
        });
    }

    // Routes: ours are those with weft's protocol in the main table. One route per pod
    // CIDR at its family's metric; any other of ours is deleted. `route_state`: desired
    // CIDRs with a route of ours at that metric, and whether it is exactly the desired one.
    let mut route_state: KeyMap<IpNet, bool> = key_map(desired.routes.len());
    for r in actual
        .routes
        .iter()
        .filter(|r| r.protocol == ROUTE_PROTOCOL && r.table == MAIN_TABLE)
    {
        let as_route = |gateway| Route {
            dst: r.dst,
            gateway,
            oif: r.oif.unwrap_or(0),
            onlink: r.onlink,
            priority: r.priority,
        };
        let want = desired.routes.get(&r.dst);
        if let (Some(want), Some(gw)) = (want, r.gateway) {
            if r.priority == want.entry.priority {
                let same = as_route(gw) == want.entry;
                *route_state.entry(r.dst).or_insert(false) |= same;
                continue;
            }
        }
        match r.gateway {
            Some(gw) => plan.del_routes.push(as_route(gw)),
            // Not a shape weft writes; delete by destination and metric only
            // (an unspecified gateway is left out of the delete request).
            None => plan.del_routes.push(as_route(unspecified(&r.dst))),
        }
    }
    for (dst, want) in &desired.routes {
        let change = match route_state.get(dst) {
            Some(true) => continue,
            Some(false) => Change::Update,
            None => Change::Add,
        };
        plan.set_routes.push(Set {
            peer: want.peer.to_owned(),
            entry: want.entry,
            change,
        });
    }
    plan.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_common::annotations::Vtep;

    const DEV: u32 = 10;
    const UL: u32 = 2;

    fn mac(last: u8) -> Mac {
        Mac([0x02, 0, 0, 0, 0, last])
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn peer(name: &str, cidr: &str, m: u8, node_ip: &str) -> Peer {
        Peer {
            name: name.into(),
            pod_cidrs: vec![net(cidr)],
            vtep: Some(Vtep {
                mac: mac(m),
                public_ip: ip(node_ip),
            }),
            node_ip: Some(ip(node_ip)),
            ..Default::default()
        }
    }
    fn local() -> Local {
        Local {
            device: DEV,
            underlay: UL,
            underlay_net: Some(net("192.168.77.1/24")),
            direct_routing: false,
            own_pod_cidrs: vec![net("10.244.1.0/24")],
        }
    }
    /// What the kernel holds once `desired` was applied.
    fn applied(d: &Desired) -> Actual {
        Actual {
            neighs: d
                .neighs
                .iter()
                .map(|(ip, m)| ActualNeigh {
                    ifindex: DEV,
                    ip: *ip,
                    mac: Some(m.entry),
                    permanent: true,
                })
                .collect(),
            fdb: d
                .fdb
                .iter()
                .map(|(mac, dst)| ActualFdb {
                    ifindex: DEV,
                    mac: *mac,
                    dst: Some(dst.entry),
                })
                .collect(),
            routes: d
                .routes
                .values()
                .map(|r| ActualRoute {
                    table: MAIN_TABLE,
                    protocol: ROUTE_PROTOCOL,
                    dst: r.entry.dst,
                    gateway: Some(r.entry.gateway),
                    oif: Some(r.entry.oif),
                    onlink: r.entry.onlink,
                    priority: r.entry.priority,
                })
                .collect(),
        }
    }
    /// A dual-stack peer: `10.244.<n>.0/24` and `fd00:10:244:<n>::/64`.
    fn dual(name: &str, n: u8) -> Peer {
        Peer {
            pod_cidrs: vec![
                net(&format!("10.244.{n}.0/24")),
                net(&format!("fd00:10:244:{n}::/64")),
            ],
            ..peer(
                name,
                &format!("10.244.{n}.0/24"),
                n,
                &format!("192.168.77.{n}"),
            )
        }
    }
    fn dual_local() -> Local {
        Local {
            own_pod_cidrs: vec![net("10.244.1.0/24"), net("fd00:10:244:1::/64")],
            ..local()
        }
    }
    fn two_peers() -> Vec<Peer> {
        vec![
            peer("n2", "10.244.2.0/24", 2, "192.168.77.2"),
            peer("n3", "10.244.3.0/24", 3, "192.168.77.3"),
        ]
    }

    #[test]
    fn desired_has_three_entries_per_peer_and_skips_incomplete_ones() {
        let mut peers = two_peers();
        peers.push(Peer {
            vtep: None,
            ..peer("n4", "10.244.4.0/24", 4, "192.168.77.4")
        });
        peers.push(Peer {
            pod_cidrs: vec![],
            ..peer("n5", "10.244.5.0/24", 5, "192.168.77.5")
        });
        peers.push(peer("self", "10.244.1.0/24", 1, "192.168.77.1"));
        let d = desired(&peers, &local());
        assert_eq!(d.peers, 2);
        assert_eq!(d.skipped.len(), 3, "{:?}", d.skipped);
        assert_eq!(d.neighs[&ip("10.244.2.0")].entry, mac(2));
        assert_eq!(d.fdb[&mac(3)].entry, ip("192.168.77.3"));
        let r = d.routes[&net("10.244.2.0/24")].entry;
        assert_eq!((r.gateway, r.oif, r.onlink), (ip("10.244.2.0"), DEV, true));
    }

    #[test]
    fn dual_stack_peers_get_both_families_on_the_one_device() {
        let peers = vec![dual("n2", 2), dual("n3", 3)];
        let d = desired(&peers, &dual_local());
        assert_eq!(
            (d.peers, d.neighs.len(), d.fdb.len(), d.routes.len()),
            (2, 4, 2, 4)
        );
        assert_eq!(d.neighs[&ip("fd00:10:244:2::")].entry, mac(2));
        let r6 = d.routes[&net("fd00:10:244:2::/64")].entry;
        assert_eq!(
            (r6.gateway, r6.oif, r6.onlink, r6.priority),
            (ip("fd00:10:244:2::"), DEV, true, 1024)
        );
        assert_eq!(d.routes[&net("10.244.2.0/24")].entry.priority, 0);
        // As the kernel dumps it (IPv6 at metric 1024): nothing to do.
        assert!(diff(&d, &applied(&d), DEV).is_empty());
        // An IPv6 route of ours at another metric is replaced by one at 1024.
        let mut actual = applied(&d);
        for r in actual.routes.iter_mut().filter(|r| r.dst.addr().is_ipv6()) {
            r.priority = 0;
        }
        let plan = diff(&d, &actual, DEV);
        assert_eq!((plan.del_routes.len(), plan.set_routes.len()), (2, 2));
        assert!(plan.set_routes.iter().all(|s| s.entry.priority == 1024));
        // A peer that drops its IPv6 CIDR loses only the IPv6 neighbour and route.
        let mut v4_only = peers.clone();
        v4_only[1].pod_cidrs.truncate(1);
        let plan = diff(&desired(&v4_only, &dual_local()), &applied(&d), DEV);
        assert_eq!(plan.del_neighs[0].ip, ip("fd00:10:244:3::"));
        assert_eq!(plan.del_routes[0].dst, net("fd00:10:244:3::/64"));
        assert_eq!(plan.len(), 2);
    }

    #[test]
    fn ipv6_only_peers_and_overlaps_in_either_family() {
        let v6 = Peer {
            pod_cidrs: vec![net("fd00:10:244:4::/64")],
            ..peer("v6", "10.244.4.0/24", 4, "192.168.77.4")
        };
        let clash = Peer {
            pod_cidrs: vec![net("10.244.5.0/24"), net("fd00:10:244:1::/64")],
            ..peer("clash", "10.244.5.0/24", 5, "192.168.77.5")
        };
        let peers = [v6, clash];
        let d = desired(&peers, &dual_local());
        assert_eq!(d.peers, 1);
        assert!(d.routes.contains_key(&net("fd00:10:244:4::/64")));
        assert_eq!(d.fdb[&mac(4)].entry, ip("192.168.77.4"));
        // The clashing peer is left out whole, its IPv4 CIDR too.
        assert!(!d.routes.contains_key(&net("10.244.5.0/24")));
        assert!(
            d.skipped[0].1.contains("fd00:10:244:1::/64"),
            "{:?}",
            d.skipped
        );
    }

    #[test]
    fn direct_routing_applies_to_the_node_ip_family_only() {
        let peers = [dual("n2", 2)];
        let d = desired(
            &peers,
            &Local {
                direct_routing: true,
                ..dual_local()
            },
        );
        let r4 = d.routes[&net("10.244.2.0/24")].entry;
        assert_eq!(
            (r4.gateway, r4.oif, r4.onlink),
            (ip("192.168.77.2"), UL, false)
        );
        // IPv6 still rides VXLAN: its neighbour and the FDB entry are there.
        let r6 = d.routes[&net("fd00:10:244:2::/64")].entry;
        assert_eq!((r6.oif, r6.onlink), (DEV, true));
        assert!(d.neighs.contains_key(&ip("fd00:10:244:2::")));
        assert!(!d.neighs.contains_key(&ip("10.244.2.0")));
        assert!(d.fdb.contains_key(&mac(2)));
    }

    #[test]
    fn direct_routing_uses_node_ip_on_the_same_subnet_only() {
        let mut peers = two_peers();
        peers.push(peer("far", "10.244.9.0/24", 9, "172.16.0.9"));
        let d = desired(
            &peers,
            &Local {
                direct_routing: true,
                ..local()
            },
        );
        let r = d.routes[&net("10.244.2.0/24")].entry;
        assert_eq!(
            (r.gateway, r.oif, r.onlink),
            (ip("192.168.77.2"), UL, false)
        );
        assert!(!d.neighs.contains_key(&ip("10.244.2.0")));
        assert!(!d.fdb.contains_key(&mac(2)));
        let far = d.routes[&net("10.244.9.0/24")].entry;
        assert_eq!((far.gateway, far.oif), (ip("10.244.9.0"), DEV));
        assert!(d.fdb.contains_key(&mac(9)));
    }

    #[test]
    fn from_nothing_everything_is_added_routes_included() {
        let two = two_peers();
        let d = desired(&two, &local());
        let plan = diff(&d, &Actual::default(), DEV);
        assert_eq!((plan.added(), plan.updated(), plan.removed()), (6, 0, 0));
        assert_eq!(plan.set_routes.len(), 2);
    }

    #[test]
    fn applied_state_is_a_no_op() {
        let two = two_peers();
        let d = desired(&two, &local());
        assert!(diff(&d, &applied(&d), DEV).is_empty());
    }

    #[test]
    fn stale_peer_is_deleted() {
        let two = two_peers();
        let before = desired(&two, &local());
        let after = desired(&two[..1], &local());
        let plan = diff(&after, &applied(&before), DEV);
        assert_eq!(
            plan.del_neighs,
            vec![Neigh {
                ip: ip("10.244.3.0"),
                mac: mac(3)
            }]
        );
        assert_eq!(
            plan.del_fdb,
            vec![Fdb {
                mac: mac(3),
                dst: ip("192.168.77.3")
            }]
        );
        assert_eq!(plan.del_routes.len(), 1);
        assert_eq!(plan.del_routes[0].dst, net("10.244.3.0/24"));
        assert_eq!(plan.len(), 3);
    }

    #[test]
    fn mac_change_replaces_neighbour_and_swaps_fdb() {
        let two = two_peers();
        let before = desired(&two, &local());
        let mut peers = two_peers();
        peers[0].vtep.as_mut().unwrap().mac = mac(0x22);
        let plan = diff(&desired(&peers, &local()), &applied(&before), DEV);
        assert_eq!(plan.set_neighs.len(), 1);
        assert_eq!(plan.set_neighs[0].change, Change::Update);
        assert_eq!(plan.set_neighs[0].entry.mac, mac(0x22));
        assert_eq!(
            plan.del_fdb,
            vec![Fdb {
                mac: mac(2),
                dst: ip("192.168.77.2")
            }]
        );
        assert_eq!(plan.set_fdb[0].change, Change::Add);
        assert!(plan.set_routes.is_empty() && plan.del_routes.is_empty());
    }

    #[test]
    fn underlay_ip_change_replaces_fdb_in_place() {
        let two = two_peers();
        let before = desired(&two, &local());
        let mut peers = two_peers();
        peers[1].vtep.as_mut().unwrap().public_ip = ip("192.168.77.33");
        let plan = diff(&desired(&peers, &local()), &applied(&before), DEV);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan.set_fdb[0].entry.dst, ip("192.168.77.33"));
        assert_eq!(plan.set_fdb[0].change, Change::Update);
        assert!(plan.del_fdb.is_empty());
    }

    #[test]
    fn pod_cidr_change_moves_all_three_entries() {
        let two = two_peers();
        let before = desired(&two, &local());
        let mut peers = two_peers();
        peers[1].pod_cidrs = vec![net("10.244.30.0/24")];
        let plan = diff(&desired(&peers, &local()), &applied(&before), DEV);
        assert_eq!(plan.del_routes.len(), 1);
        assert_eq!(plan.del_neighs.len(), 1);
        assert_eq!(plan.set_neighs[0].entry.ip, ip("10.244.30.0"));
        assert_eq!(plan.set_routes[0].entry.dst, net("10.244.30.0/24"));
        assert!(plan.set_fdb.is_empty() && plan.del_fdb.is_empty());
    }

    #[test]
    fn entries_not_ours_are_ignored() {
        let two = two_peers();
        let d = desired(&two, &local());
        let mut actual = applied(&d);
        // Another device's neighbour and FDB entry, a kernel-learnt neighbour on ours,
        // an FDB entry without a remote, a kernel route and another table's route.
        actual.neighs.push(ActualNeigh {
            ifindex: 3,
            ip: ip("10.0.0.1"),
            mac: Some(mac(7)),
            permanent: true,
        });
        actual.neighs.push(ActualNeigh {
            ifindex: DEV,
            ip: ip("10.244.7.0"),
            mac: None,
            permanent: false,
        });
        actual.fdb.push(ActualFdb {
            ifindex: 3,
            mac: mac(8),
            dst: Some(ip("1.2.3.4")),
        });
        actual.fdb.push(ActualFdb {
            ifindex: DEV,
            mac: mac(9),
            dst: None,
        });
        for (protocol, table) in [(2, MAIN_TABLE), (4, MAIN_TABLE), (ROUTE_PROTOCOL, 100)] {
            actual.routes.push(ActualRoute {
                table,
                protocol,
                dst: net("10.244.3.0/24"),
                gateway: Some(ip("192.168.77.9")),
                oif: Some(UL),
                onlink: false,
                priority: 0,
            });
        }
        assert!(diff(&d, &actual, DEV).is_empty());
    }

    #[test]
    fn hand_changes_are_repaired() {
        let two = two_peers();
        let d = desired(&two, &local());
        let mut actual = applied(&d);
        actual.neighs[0].permanent = false; // became a kernel entry
        actual.fdb.push(ActualFdb {
            ifindex: DEV,
            mac: mac(3),
            dst: Some(ip("192.168.77.99")),
        }); // appended remote
        actual.routes[0].gateway = Some(ip("10.244.99.0")); // wrong via
        actual.routes.push(ActualRoute {
            priority: 50,
            ..actual.routes[1]
        }); // extra metric
        let plan = diff(&d, &actual, DEV);
        assert_eq!(plan.set_neighs.len(), 1);
        assert_eq!(plan.set_neighs[0].change, Change::Update);
        assert_eq!(
            plan.del_fdb,
            vec![Fdb {
                mac: mac(3),
                dst: ip("192.168.77.99")
            }]
        );
        assert_eq!(plan.set_routes.len(), 1);
        assert_eq!(plan.set_routes[0].change, Change::Update);
        assert_eq!(plan.del_routes.len(), 1);
        assert_eq!(plan.del_routes[0].priority, 50);
    }

    #[test]
    fn duplicate_claims_are_skipped_first_wins() {
        let mut peers = two_peers();
        peers.push(peer("dup-cidr", "10.244.2.0/24", 0x42, "192.168.77.42"));
        peers.push(peer("dup-mac", "10.244.43.0/24", 2, "192.168.77.43"));
        let d = desired(&peers, &local());
        assert_eq!(d.peers, 2);
        assert_eq!(d.routes[&net("10.244.2.0/24")].peer, "n2");
        assert_eq!(d.skipped.len(), 2);
    }

    #[test]
    fn mac_with_only_foreign_remotes_keeps_its_first_and_drops_the_rest() {
        let two = two_peers();
        let d = desired(&two, &local());
        let mut actual = applied(&d);
        actual.fdb.retain(|f| f.mac != mac(3));
        for last in [7, 8, 9] {
            actual.fdb.push(ActualFdb {
                ifindex: DEV,
                mac: mac(3),
                dst: Some(ip(&format!("192.168.77.{last}"))),
            });
        }
        let plan = diff(&d, &actual, DEV);
        // The first remote (.7) is replaced in place; .8 and .9 go.
        assert_eq!(plan.set_fdb.len(), 1);
        assert_eq!(plan.set_fdb[0].change, Change::Update);
        assert_eq!(plan.set_fdb[0].entry.dst, ip("192.168.77.3"));
        let gone: Vec<IpAddr> = plan.del_fdb.iter().map(|f| f.dst).collect();
        assert_eq!(gone, vec![ip("192.168.77.8"), ip("192.168.77.9")]);
        assert_eq!(plan.len(), 3);
    }

    #[test]
    fn diff_at_5000_peers_is_linear_and_sorted() {
        let peers: Vec<Peer> = (0..5000u32)
            .map(|k| Peer {
                name: format!("n{k}"),
                pod_cidrs: vec![net(&format!("10.{}.{}.0/24", 100 + k / 256, k % 256))],
                vtep: Some(Vtep {
                    mac: Mac([2, 1, 0, 0, (k >> 8) as u8, k as u8]),
                    public_ip: IpAddr::V4(std::net::Ipv4Addr::from(0xac10_0000 + k)),
                }),
                node_ip: None,
                ..Default::default()
            })
            .collect();
        let d = desired(&peers, &local());
        assert_eq!(d.peers, 5000);
        assert!(diff(&d, &applied(&d), DEV).is_empty());
        let plan = diff(&d, &Actual::default(), DEV);
        assert_eq!(plan.added(), 15000);
        assert!(plan
            .set_routes
            .windows(2)
            .all(|w| w[0].entry.dst < w[1].entry.dst));
        assert!(plan
            .set_fdb
            .windows(2)
            .all(|w| w[0].entry.mac < w[1].entry.mac));
    }
}
