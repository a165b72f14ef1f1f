use std::collections::BTreeMap;

use super::*;
use crate::peers::{validate, Age, Reason};
use weft_common::annotations::Vtep;

fn rules() -> Rules {
    Rules {
        cluster_cidrs: vec![net("10.244.0.0/16")],
        subnet_size_v4: 24,
        subnet_size_v6: 64,
        underlay_net: Some(net("192.168.250.100/24")),
        underlay_ip: Some(ip("192.168.250.100")),
        own_pod_cidrs: vec![net("10.244.1.0/24")],
        own_mac: Some(Mac([2, 0, 0, 0, 0, 1])),
        vni: 1,
        ..Default::default()
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Pod CIDR 10.244.c.0/24, MAC 02:..:m, public IP 192.168.250.i, created at `age`.
fn peer(name: &str, c: u8, m: u8, i: u8, age: i64) -> Peer {
    Peer {
        name: name.into(),
        pod_cidrs: vec![net(&format!("10.244.{c}.0/24"))],
        vtep: Some(Vtep {
            mac: Mac([2, 0, 0, 0, 0, m]),
            public_ip: ip(&format!("192.168.250.{i}")),
        }),
        node_ip: Some(ip(&format!("192.168.250.{i}"))),
        age: Age {
            created: Some(age),
            uid: format!("uid-{name}"),
        },
        vni: Some("1".into()),
    }
}

fn names(peers: &[&Peer]) -> Vec<String> {
    let mut v: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
    v.sort();
    v
}

#[test]
fn an_isolated_change_is_checked_alone() {
    let a = peer("a", 2, 2, 2, 1);
    let b = peer("b", 3, 3, 3, 2);
    let (mut v, accepted, rejected) = Verdicts::new(&[&a], &rules());
    assert_eq!(names(&accepted), ["a"]);
    assert!(rejected.is_empty());
    // b arrives: nobody else claims its values.
    let add = [PeerChange {
        name: "b",
        old: None,
        new: Some(&b),
    }];
    let changed = v.update(&add, &rules()).expect("isolated");
    assert_eq!(changed.added, [&b]);
    assert!(changed.removed.is_empty());
    // b's MAC becomes multicast: b is rejected on its own.
    let mut bad = b.clone();
    bad.vtep.as_mut().unwrap().mac = Mac([0xff; 6]);
    let change = [PeerChange {
        name: "b",
        old: Some(&b),
        new: Some(&bad),
    }];
    let changed = v.update(&change, &rules()).expect("isolated");
    assert_eq!((changed.removed, changed.added), (vec![&b], vec![]));
    assert_eq!(v.rejected()[0].reason, Reason::InvalidVtepMac);
    // b goes: it was not accepted, so nothing is removed, and its rejection goes too.
    let gone = [PeerChange {
        name: "b",
        old: Some(&bad),
        new: None,
    }];
    assert_eq!(v.update(&gone, &rules()), Some(Changed::default()));
    assert!(v.rejected().is_empty());
    assert_eq!(v, Verdicts::new(&[&a], &rules()).0);
}

#[test]
fn this_nodes_claims_still_count_for_an_isolated_peer() {
    let a = peer("a", 2, 2, 2, 1);
    let (mut v, _, _) = Verdicts::new(&[&a], &rules());
    let own_mac = peer("b", 3, 1, 3, 2);
    let own_ip = peer("c", 4, 4, 100, 3);
    let changes = [
        PeerChange {
            name: "b",
            old: None,
            new: Some(&own_mac),
        },
        PeerChange {
            name: "c",
            old: None,
            new: Some(&own_ip),
        },
    ];
    let changed = v.update(&changes, &rules()).expect("isolated");
    assert!(changed.added.is_empty());
    let reasons: Vec<Reason> = v.rejected().iter().map(|r| r.reason).collect();
    assert_eq!(reasons, [Reason::InvalidVtepMac, Reason::InvalidPublicIp]);
}

#[test]
fn a_shared_value_or_other_rules_need_the_whole_set() {
    let victim = peer("victim", 2, 2, 2, 1);
    let (mut v, _, _) = Verdicts::new(&[&victim], &rules());
    let before = v.clone();
    // A newcomer copying the victim's MAC: the claim decides, so the whole set is checked.
    let thief = peer("thief", 3, 2, 3, 2);
    let steal = [PeerChange {
        name: "thief",
        old: None,
        new: Some(&thief),
    }];
    assert_eq!(v.update(&steal, &rules()), None);
    assert_eq!(v, before, "nothing taken in");
    let (mut v, accepted, rejected) = Verdicts::new(&[&thief, &victim], &rules());
    assert_eq!(names(&accepted), ["victim"]);
    assert_eq!(rejected[0].node, "thief");
    // The victim going releases the MAC to the thief: not isolated either.
    let leave = [PeerChange {
        name: "victim",
        old: Some(&victim),
        new: None,
    }];
    assert_eq!(v.update(&leave, &rules()), None);
    // Other rules (a foreign route appeared): every verdict may change.
    let (mut v, _, _) = Verdicts::new(&[&victim], &rules());
    let mut other = rules();
    other.foreign_routes.push(net("10.244.3.0/24"));
    let b = peer("b", 4, 4, 4, 2);
    let add = [PeerChange {
        name: "b",
        old: None,
        new: Some(&b),
    }];
    assert_eq!(v.update(&add, &other), None);
    // Two changed peers swapping their MACs in one sync: isolated at both ends.
    let (x, y) = (peer("x", 5, 5, 5, 3), peer("y", 6, 6, 6, 4));
    let (mut v, _, _) = Verdicts::new(&[&x, &y], &rules());
    let (x2, y2) = (peer("x", 5, 6, 5, 3), peer("y", 6, 5, 6, 4));
    let swap = [
        PeerChange {
            name: "x",
            old: Some(&x),
            new: Some(&x2),
        },
        PeerChange {
            name: "y",
            old: Some(&y),
            new: Some(&y2),
        },
    ];
    let changed = v.update(&swap, &rules()).expect("isolated");
    assert_eq!(names(&changed.added), ["x", "y"]);
    assert_eq!(v, Verdicts::new(&[&x2, &y2], &rules()).0);
}

/// A small deterministic generator (xorshift), so the test needs no crate and repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Thousands of random steps over a small pool of values (so claims collide often, and
/// some values are invalid): whenever [`Verdicts::update`] takes a change in, the result
/// is what validating the whole new set gives, and so is the kept state.
#[test]
fn updates_agree_with_validating_the_whole_set() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let r = rules();
    let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let mut set: BTreeMap<String, Peer> = BTreeMap::new();
    let (mut isolated, mut whole) = (0, 0);
    let refs = |set: &BTreeMap<String, Peer>| -> Vec<Peer> { set.values().cloned().collect() };
    let mut current = refs(&set);
    let (mut v, _, _) = Verdicts::new(&[], &r);
    for _ in 0..5000 {
        let before = set.clone();
        let mut touched: Vec<String> = Vec::new();
        for _ in 0..=rng.below(2) {
            let name = &names[rng.below(names.len() as u64) as usize];
            if touched.contains(name) {
                continue;
            }
            touched.push(name.clone());
            if rng.below(4) == 0 {
                set.remove(name);
            } else {
                // CIDR 0..=14 (0: outside the own /24's neighbourhood is fine; 1 is this
                // node's), MAC 1..=15 (1 is this node's), IP 95..=105 (100 is this node's).
                let mut p = peer(
                    name,
                    rng.below(15) as u8,
                    rng.below(15) as u8 + 1,
                    rng.below(11) as u8 + 95,
                    rng.below(5) as i64,
                );
                if rng.below(10) == 0 {
                    p.vtep.as_mut().unwrap().mac = Mac([0xff; 6]);
                }
                set.insert(name.clone(), p);
            }
        }
        let changes: Vec<PeerChange> = touched
            .iter()
            .map(|n| PeerChange {
                name: n,
                old: before.get(n),
                new: set.get(n),
            })
            .collect();
        let old_refs: Vec<&Peer> = current.iter().collect();
        let (_, old_accepted, _) = validate_all(&old_refs, &r);
        let new_peers = refs(&set);
        let new_refs: Vec<&Peer> = new_peers.iter().collect();
        let (fresh, new_accepted, new_rejected) = Verdicts::new(&new_refs, &r);
        match v.update(&changes, &r) {
            Some(changed) => {
                isolated += 1;
                // old accepted - removed + added = new accepted.
                let mut expect: BTreeMap<&str, &Peer> =
                    old_accepted.iter().map(|p| (p.name.as_str(), *p)).collect();
                for p in &changed.removed {
                    assert_eq!(expect.remove(p.name.as_str()), Some(*p));
                }
                for p in &changed.added {
                    assert!(expect.insert(&p.name, p).is_none());
                }
                let got: Vec<&Peer> = expect.into_values().collect();
                assert_eq!(got, new_accepted, "{changes:?}");
                assert_eq!(v.rejected(), new_rejected);
                assert_eq!(v, fresh);
            }
            None => {
                whole += 1;
                v = fresh;
            }
        }
        current = new_peers;
    }
    assert!(
        isolated > 500 && whole > 500,
        "{isolated} isolated, {whole} whole"
    );
}

fn validate_all<'a>(peers: &[&'a Peer], r: &Rules) -> (Verdicts, Vec<&'a Peer>, Vec<Rejection>) {
    let (accepted, rejected) = validate::validate(peers.iter().copied(), r);
    (Verdicts::default(), accepted, rejected)
}
