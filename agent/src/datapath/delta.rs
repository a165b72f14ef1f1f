//! The incremental half of a sync: the difference between the desired entries and the
//! ones the last sync left in the kernel, found without asking the kernel.
//!
//! A sync whose every request succeeded leaves the kernel holding exactly its desired
//! entries (weft's entries: others are never touched), so [`Applied`] keeps them, and the
//! next sync caused by a Node change diffs against that instead of a dump: at 5000 peers
//! the dump of 15000 entries was two thirds of a sync, and the diff of one changed peer
//! against memory is a few hash lookups per peer. What could make the kernel differ from
//! [`Applied`] is left to a full sync (dump and [`super::plan::diff`]), which rebuilds it:
//! a request the kernel refused, the device re-created, an entry changed by someone else
//! (the kernel watch asks for a full sync), anything missed (the periodic resync).

use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;
use weft_common::annotations::Mac;

use super::plan::{Change, Desired, Fdb, KeyMap, Neigh, Plan, Route, Set};

/// weft's entries as the kernel holds them after the last sync, keyed like [`Desired`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub neighs: KeyMap<IpAddr, Mac>,
    pub fdb: KeyMap<Mac, IpAddr>,
    pub routes: KeyMap<IpNet, Route>,
}

impl Applied {
    /// What the kernel holds once `desired` was applied without a failure.
    pub fn from_desired(d: &Desired) -> Applied {
        Applied {
            neighs: d.neighs.iter().map(|(ip, m)| (*ip, m.entry)).collect(),
            fdb: d.fdb.iter().map(|(mac, f)| (*mac, f.entry)).collect(),
            routes: d.routes.iter().map(|(dst, r)| (*dst, r.entry)).collect(),
        }
    }

    /// Takes in `plan`, applied without a failure: O(changes), where rebuilding from the
    /// desired state would be O(peers).
    pub fn record(&mut self, plan: &Plan) {
        for r in &plan.del_routes {
            if self.routes.get(&r.dst) == Some(r) {
                self.routes.remove(&r.dst);
            }
        }
        for n in &plan.del_neighs {
            if self.neighs.get(&n.ip) == Some(&n.mac) {
                self.neighs.remove(&n.ip);
            }
        }
        for f in &plan.del_fdb {
            if self.fdb.get(&f.mac) == Some(&f.dst) {
                self.fdb.remove(&f.mac);
            }
        }
        for s in &plan.set_neighs {
            self.neighs.insert(s.entry.ip, s.entry.mac);
        }
        for s in &plan.set_fdb {
            self.fdb.insert(s.entry.mac, s.entry.dst);
        }
        for s in &plan.set_routes {
            self.routes.insert(s.entry.dst, s.entry);
        }
    }

    /// Entries (neighbours, FDB entries, routes).
    pub fn len(&self) -> usize {
        self.neighs.len() + self.fdb.len() + self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn set<T>(peer: &str, entry: T, change: Change) -> Set<T> {
    Set {
        peer: peer.to_owned(),
        entry,
        change,
    }
}

/// Desired vs `applied`: the same [`Plan`] [`super::plan::diff`] returns against a dump of
/// a kernel holding exactly `applied` (the tests check that), in the same order.
pub fn diff(desired: &Desired, applied: &Applied) -> Plan {
    plan(desired, applied, None)
}

/// The plan for a change of some peers only: `removed` is the desired state of the peers
/// as they were (their entries, as applied, go unless `added` wants them), `added` that
/// of the peers as they are now. Equal to [`diff`] of the whole new desired state against
/// `applied` when `applied` holds exactly the old whole desired state and no other peer
/// shares a key (pod CIDR, VTEP IP, MAC) with these (the tests check that): O(changes),
/// where [`diff`] walks every peer's entries.
pub fn diff_peers(removed: &Desired, added: &Desired, applied: &Applied) -> Plan {
    plan(added, applied, Some(removed))
}

/// `want` over `applied`; entries of `applied` that `want` lacks are deleted: all of them,
/// or with `only`, those among `only`'s keys.
fn plan(want: &Desired, applied: &Applied, only: Option<&Desired>) -> Plan {
    let mut plan = Plan::default();

    for (ip, w) in &want.neighs {
        let change = match applied.neighs.get(ip) {
            Some(mac) if *mac == w.entry => continue,
            Some(_) => Change::Update,
            None => Change::Add,
        };
        let entry = Neigh {
            ip: *ip,
            mac: w.entry,
        };
        plan.set_neighs.push(set(w.peer, entry, change));
    }
    for (ip, mac) in stale(&applied.neighs, &want.neighs, only.map(|d| &d.neighs)) {
        plan.del_neighs.push(Neigh { ip: *ip, mac: *mac });
    }

    // One remote per MAC: a new remote replaces the old one in place.
    for (mac, w) in &want.fdb {
        let change = match applied.fdb.get(mac) {
            Some(dst) if *dst == w.entry => continue,
            Some(_) => Change::Update,
            None => Change::Add,
        };
        let entry = Fdb {
            mac: *mac,
            dst: w.entry,
        };
        plan.set_fdb.push(set(w.peer, entry, change));
    }
    for (mac, dst) in stale(&applied.fdb, &want.fdb, only.map(|d| &d.fdb)) {
        plan.del_fdb.push(Fdb {
            mac: *mac,
            dst: *dst,
        });
    }

    // A route at another metric is another route to the kernel: deleted, the new one
    // added. Otherwise a changed route is replaced (it is weft's own).
    for (dst, w) in &want.routes {
        let change = match applied.routes.get(dst) {
            Some(r) if *r == w.entry => continue,
            Some(r) if r.priority == w.entry.priority => Change::Update,
            Some(r) => {
                plan.del_routes.push(*r);
                Change::Add
            }
            None => Change::Add,
        };
        plan.set_routes.push(set(w.peer, w.entry, change));
    }
    for (_, r) in stale(&applied.routes, &want.routes, only.map(|d| &d.routes)) {
        plan.del_routes.push(*r);
    }
    plan.sort();
    plan
}

/// The entries of `applied` whose key `want` lacks: all of them, or (`only`) those
/// among `only`'s keys. The caller sorts.
fn stale<'m, K: Hash + Eq, V, W, X>(
    applied: &'m KeyMap<K, V>,
    want: &KeyMap<K, W>,
    only: Option<&KeyMap<K, X>>,
) -> Vec<(&'m K, &'m V)> {
    match only {
        None => applied
            .iter()
            .filter(|(k, _)| !want.contains_key(*k))
            .collect(),
        Some(keys) => keys
            .keys()
            .filter(|k| !want.contains_key(*k))
            .filter_map(|k| applied.get_key_value(k))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::plan::{
        self, desired, Actual, ActualFdb, ActualNeigh, ActualRoute, Local, MAIN_TABLE,
        ROUTE_PROTOCOL,
    };
    use crate::peers::Peer;
    use weft_common::annotations::Vtep;

    const DEV: u32 = 10;
    const UL: u32 = 2;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// Peer `k` of a generation: `gen` changes its MAC (every third peer), its underlay
    /// address (every fifth) and its pod CIDR (every seventh); peers divisible by 11 have
    /// an IPv6 CIDR too.
    fn peer(k: u32, gen: u32) -> Peer {
        let shift = |every: u32| if k.is_multiple_of(every) { gen } else { 0 };
        let third = (k + 100 * shift(7)) % 250 + 2;
        let second = (k + 100 * shift(7)) / 250;
        let mut pod_cidrs = vec![net(&format!("10.{}.{third}.0/24", 100 + second))];
        if k.is_multiple_of(11) {
            pod_cidrs.push(net(&format!("fd00:10:{second:x}:{third:x}::/64")));
        }
        let m = k + 7919 * shift(3);
        Peer {
            name: format!("n{k}"),
            pod_cidrs,
            vtep: Some(Vtep {
                mac: Mac([2, 1, (m >> 16) as u8, (m >> 8) as u8, m as u8, 0]),
                public_ip: IpAddr::V4(std::net::Ipv4Addr::from(0xac10_0000 + k + 1000 * shift(5))),
            }),
            node_ip: Some(IpAddr::V4(std::net::Ipv4Addr::from(0xac10_0000 + k))),
            ..Default::default()
        }
    }

    fn local(direct_routing: bool) -> Local {
        Local {
            device: DEV,
            underlay: UL,
            underlay_net: Some(net("172.16.0.1/20")),
            direct_routing,
            own_pod_cidrs: vec![net("10.99.1.0/24")],
        }
    }

    /// A dump of a kernel that holds exactly `a`.
    fn dumped(a: &Applied) -> Actual {
        Actual {
            neighs: a
                .neighs
                .iter()
                .map(|(ip, mac)| ActualNeigh {
                    ifindex: DEV,
                    ip: *ip,
                    mac: Some(*mac),
                    permanent: true,
                })
                .collect(),
            fdb: a
                .fdb
                .iter()
                .map(|(mac, dst)| ActualFdb {
                    ifindex: DEV,
                    mac: *mac,
                    dst: Some(*dst),
                })
                .collect(),
            routes: a
                .routes
                .values()
                .map(|r| ActualRoute {
                    table: MAIN_TABLE,
                    protocol: ROUTE_PROTOCOL,
                    dst: r.dst,
                    gateway: Some(r.gateway),
                    oif: Some(r.oif),
                    onlink: r.onlink,
                    priority: r.priority,
                })
                .collect(),
        }
    }

    /// Every step of a changing peer set: the delta equals the full diff against the
    /// kernel the applied state stands for, and recording it gives the new state.
    #[test]
    fn delta_is_the_full_diff_against_what_was_applied() {
        for direct in [false, true] {
            let l = local(direct);
            let mut applied = Applied::default();
            let steps: Vec<Vec<Peer>> = vec![
                (1..=300).map(|k| peer(k, 0)).collect(),
                (1..=300).map(|k| peer(k, 1)).collect(),
                (50..=400).map(|k| peer(k, 1)).collect(),
                (50..=400)
                    .filter(|k| k % 4 != 0)
                    .map(|k| peer(k, 2))
                    .collect(),
                vec![],
                (1..=10).map(|k| peer(k, 3)).collect(),
            ];
            for (i, peers) in steps.iter().enumerate() {
                let d = desired(peers, &l);
                let delta = diff(&d, &applied);
                let full = plan::diff(&d, &dumped(&applied), DEV);
                assert_eq!(delta, full, "step {i}, direct routing {direct}");
                assert!(i == 4 || !delta.is_empty(), "step {i} changes something");
                applied.record(&delta);
                assert_eq!(applied, Applied::from_desired(&d), "step {i}");
                assert!(diff(&d, &applied).is_empty());
            }
        }
    }

    /// Changing, adding and removing a few peers at a time (peers whose keys no other
    /// peer shares): the plan from those peers alone is the whole diff's.
    #[test]
    fn the_plan_of_the_changed_peers_is_the_whole_diff() {
        for direct in [false, true] {
            let l = local(direct);
            let mut peers: Vec<Peer> = (1..=400).map(|k| peer(k, 0)).collect();
            let mut applied = Applied::from_desired(&desired(&peers, &l));
            // (index into `peers`, new version or None to remove), then new peers.
            let list = [10usize, 3, 21, 43, 87, 99, 120, 131, 54];
            for (step, k) in list.into_iter().enumerate() {
                let old = peers[k].clone();
                let new = match step % 3 {
                    // A new MAC, and every other time a new public IP.
                    0 => {
                        let mut p = old.clone();
                        let v = p.vtep.as_mut().unwrap();
                        v.mac = Mac([2, 9, 0, 0, step as u8, 1]);
                        if step % 2 == 0 {
                            v.public_ip =
                                IpAddr::V4(std::net::Ipv4Addr::new(172, 31, 0, step as u8));
                        }
                        Some(p)
                    }
                    1 => None,
                    _ => Some(peer(1000 + k as u32, 0)),
                };
                let mut next = peers.clone();
                match &new {
                    Some(p) if p.name == old.name => next[k] = p.clone(),
                    Some(p) => {
                        next.remove(k);
                        next.push(p.clone());
                    }
                    None => {
                        next.remove(k);
                    }
                }
                let whole = diff(&desired(&next, &l), &applied);
                let part = diff_peers(&desired([&old], &l), &desired(new.iter(), &l), &applied);
                assert_eq!(part, whole, "step {step}, direct routing {direct}");
                // (A direct route does not depend on the VTEP.)
                assert!(direct || !part.is_empty(), "step {step}");
                applied.record(&part);
                assert_eq!(applied, Applied::from_desired(&desired(&next, &l)));
                peers = next;
            }
            // Nothing changed: nothing to do.
            let same = desired([&peers[0]], &l);
            assert!(diff_peers(&same, &same, &applied).is_empty());
        }
    }

    #[test]
    fn one_changed_peer_among_5000_is_three_entries() {
        let l = local(false);
        let mut peers: Vec<Peer> = (1..=5000).map(|k| peer(k, 0)).collect();
        let mut applied = Applied::from_desired(&desired(&peers, &l));
        assert_eq!(applied.len(), 3 * 5000 + 2 * 454);
        // A new MAC: the neighbour replaced, the old FDB entry out, the new one in.
        peers[2] = peer(3, 1);
        let plan = diff(&desired(&peers, &l), &applied);
        assert_eq!((plan.updated(), plan.added(), plan.removed()), (1, 1, 1));
        assert_eq!(plan.set_neighs[0].peer, "n3");
        applied.record(&plan);
        // A peer gone: its three entries go.
        peers.remove(3);
        let plan = diff(&desired(&peers, &l), &applied);
        assert_eq!(
            (
                plan.del_neighs.len(),
                plan.del_fdb.len(),
                plan.del_routes.len()
            ),
            (1, 1, 1)
        );
        assert_eq!(plan.len(), 3);
    }
}
