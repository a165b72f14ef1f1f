use super::*;
use proptest::prelude::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn v4(cluster: &str, len: u8) -> Allocator {
    Allocator::from_config(&[(net(cluster), len)])
}

#[test]
fn allocates_in_order_and_counts() {
    let mut a = v4("10.244.0.0/16", 24);
    assert_eq!(a.allocate("n1").unwrap(), vec![net("10.244.0.0/24")]);
    assert_eq!(a.allocate("n2").unwrap(), vec![net("10.244.1.0/24")]);
    assert_eq!(
        a.stats(),
        vec![(
            Family::V4,
            PoolStats {
                total: 256,
                used: 2
            }
        )]
    );
    assert_eq!(a.stats()[0].1.free(), 254);
}

#[test]
fn allocating_twice_for_a_node_returns_the_same_subnet() {
    let mut a = v4("10.244.0.0/16", 24);
    let first = a.allocate("n1").unwrap();
    assert_eq!(a.allocate("n1").unwrap(), first);
    assert_eq!(a.stats()[0].1.used, 1);
}

#[test]
fn freed_subnet_is_not_handed_out_again_at_once() {
    let mut a = v4("10.244.0.0/16", 24);
    a.allocate("n1").unwrap();
    a.allocate("n2").unwrap();
    assert_eq!(a.release("n1"), vec![net("10.244.0.0/24")]);
    assert_eq!(a.allocate("n3").unwrap(), vec![net("10.244.2.0/24")]);
    assert_eq!(a.stats()[0].1.used, 2);
}

#[test]
fn round_robin_wraps_to_freed_subnets() {
    let mut a = v4("10.0.0.0/30", 32); // 4 subnets
    for n in ["a", "b", "c", "d"] {
        a.allocate(n).unwrap();
    }
    assert_eq!(a.allocate("e"), Err(Exhausted(Family::V4)));
    a.release("b");
    assert_eq!(a.allocate("e").unwrap(), vec![net("10.0.0.1/32")]);
    a.release("a");
    a.release("d");
    // The cursor is after .1: .3 comes before .0.
    assert_eq!(a.allocate("f").unwrap(), vec![net("10.0.0.3/32")]);
    assert_eq!(a.allocate("g").unwrap(), vec![net("10.0.0.0/32")]);
}

#[test]
fn exhaustion_then_release_allows_allocation() {
    let mut a = v4("10.244.0.0/23", 24);
    a.allocate("a").unwrap();
    a.allocate("b").unwrap();
    assert_eq!(a.allocate("c"), Err(Exhausted(Family::V4)));
    assert!(a.owned("c").is_none());
    a.release("a");
    assert_eq!(a.allocate("c").unwrap(), vec![net("10.244.0.0/24")]);
}

#[test]
fn adopt_records_in_cluster_and_blocks_allocation() {
    let mut a = v4("10.244.0.0/16", 24);
    assert!(a.adopt("old", &[net("10.244.0.0/24")]).is_empty());
    assert!(a.adopt("old2", &[net("10.244.1.0/24")]).is_empty());
    assert_eq!(a.allocate("new").unwrap(), vec![net("10.244.2.0/24")]);
    // Re-adopting the same thing is fine.
    assert!(a.adopt("old", &[net("10.244.0.0/24")]).is_empty());
    assert_eq!(a.stats()[0].1.used, 3);
}

#[test]
fn adopt_outside_cluster_is_reported_and_not_recorded() {
    let mut a = v4("10.244.0.0/16", 24);
    assert_eq!(
        a.adopt("x", &[net("192.168.0.0/24")]),
        vec![AdoptError::OutsideCluster(net("192.168.0.0/24"))]
    );
    assert!(a.owned("x").is_none());
    // An IPv6 podCIDR in a v4-only cluster is outside too.
    assert_eq!(
        a.adopt("y", &[net("fd00::/64")]),
        vec![AdoptError::OutsideCluster(net("fd00::/64"))]
    );
    assert_eq!(a.stats()[0].1.used, 0);
}

#[test]
fn adopt_overlap_is_a_conflict_naming_the_owner() {
    let mut a = v4("10.244.0.0/16", 24);
    a.allocate("n1").unwrap();
    assert_eq!(
        a.adopt("n2", &[net("10.244.0.0/24")]),
        vec![AdoptError::Conflict {
            cidr: net("10.244.0.0/24"),
            with: "n1".into()
        }]
    );
    // A wider or narrower prefix over n1's subnet is refused for its size first.
    assert!(matches!(
        a.adopt("n3", &[net("10.244.0.0/23")])[..],
        [AdoptError::WrongSize { want: 24, .. }]
    ));
    assert!(matches!(
        a.adopt("n4", &[net("10.244.0.128/25")])[..],
        [AdoptError::WrongSize { want: 24, .. }]
    ));
    assert_eq!(a.owned("n1"), Some(&[net("10.244.0.0/24")][..]));
    assert_eq!(a.stats()[0].1.used, 1);
}

#[test]
fn a_wrong_size_pod_cidr_is_refused_and_blocks_nothing() {
    // The report: a /17 on one Node of a /16 cut into /24s took 128 of 256 subnets.
    let mut a = v4("10.244.0.0/16", 24);
    assert_eq!(
        a.adopt("greedy", &[net("10.244.0.0/17")]),
        vec![AdoptError::WrongSize {
            cidr: net("10.244.0.0/17"),
            want: 24
        }]
    );
    assert!(a.owned("greedy").is_none());
    assert_eq!(a.stats()[0].1.used, 0);
    // Narrower than a node subnet: refused as well, nothing blocked.
    assert!(matches!(
        a.adopt("narrow", &[net("10.244.9.128/25")])[..],
        [AdoptError::WrongSize { .. }]
    ));
    assert_eq!(a.stats()[0].1.used, 0);
    // Every subnet, inside the /17 too, still goes to well-behaved nodes, once each.
    let mut seen = std::collections::HashSet::new();
    for i in 0..256 {
        let got = a.allocate(&format!("n{i}")).unwrap();
        assert!(seen.insert(got[0]), "{} handed out twice", got[0]);
    }
    assert_eq!(a.allocate("one-more"), Err(Exhausted(Family::V4)));
}

#[test]
fn in_a_dual_stack_node_only_the_wrong_size_cidr_is_refused() {
    let mut a = Allocator::from_config(&[(net("10.244.0.0/16"), 24), (net("fd00::/56"), 64)]);
    let errors = a.adopt("n", &[net("10.244.3.0/24"), net("fd00::/60")]);
    assert_eq!(
        errors,
        vec![AdoptError::WrongSize {
            cidr: net("fd00::/60"),
            want: 64
        }]
    );
    assert_eq!(a.owned("n"), Some(&[net("10.244.3.0/24")][..]));
    assert_eq!(a.stats()[1].1.used, 0);
}

#[test]
fn a_duplicate_of_the_right_size_marks_nothing_more_and_waits_for_the_holder() {
    let mut a = v4("10.244.0.0/16", 24);
    assert!(a.adopt("old", &[net("10.244.5.0/24")]).is_empty());
    let dup = a.adopt("new", &[net("10.244.5.0/24")]);
    assert_eq!(
        dup,
        vec![AdoptError::Conflict {
            cidr: net("10.244.5.0/24"),
            with: "old".into()
        }]
    );
    assert!(a.owned("new").is_none());
    assert_eq!(a.stats()[0].1.used, 1);
    // The holder leaves: the duplicate's claim is recorded on the retry.
    a.release("old");
    assert!(a.adopt("new", &[net("10.244.5.0/24")]).is_empty());
    assert_eq!(a.owned("new"), Some(&[net("10.244.5.0/24")][..]));
    assert_eq!(a.stats()[0].1.used, 1);
}

#[test]
fn ipv6_56_has_256_slash64_subnets() {
    let mut a = Allocator::from_config(&[(net("fd00:10:244::/56"), 64)]);
    assert_eq!(a.stats()[0].1.total, 256);
    assert_eq!(a.allocate("a").unwrap(), vec![net("fd00:10:244::/64")]);
    assert_eq!(a.allocate("b").unwrap(), vec![net("fd00:10:244:1::/64")]);
    for i in 2..256 {
        a.allocate(&format!("n{i}")).unwrap();
    }
    assert_eq!(a.allocate("z"), Err(Exhausted(Family::V6)));
}

#[test]
fn huge_ipv6_pools_are_sparse() {
    let mut a = Allocator::from_config(&[(net("fd00::/32"), 64)]);
    assert_eq!(a.stats()[0].1.total, 1u128 << 32);
    assert!(a.adopt("x", &[net("fd00:0:ffff:ffff::/64")]).is_empty());
    assert_eq!(a.allocate("a").unwrap(), vec![net("fd00::/64")]);
    let mut b = Allocator::from_config(&[(net("fd00::/8"), 126)]);
    assert_eq!(b.stats()[0].1.total, 1u128 << 118);
    assert_eq!(b.allocate("a").unwrap(), vec![net("fd00::/126")]);
    assert_eq!(b.allocate("b").unwrap(), vec![net("fd00::4/126")]);
}

#[test]
fn dual_stack_gives_one_per_family_or_nothing() {
    let mut a = Allocator::from_config(&[(net("10.244.0.0/16"), 24), (net("fd00::/120"), 121)]);
    assert_eq!(
        a.allocate("a").unwrap(),
        vec![net("10.244.0.0/24"), net("fd00::/121")]
    );
    assert_eq!(
        a.allocate("b").unwrap(),
        vec![net("10.244.1.0/24"), net("fd00::80/121")]
    );
    // IPv6 is exhausted: c gets nothing, and no IPv4 subnet leaks.
    assert_eq!(a.allocate("c"), Err(Exhausted(Family::V6)));
    assert_eq!(a.stats()[0].1.used, 2);
    assert!(a.owned("c").is_none());
    a.release("a");
    assert_eq!(
        a.allocate("c").unwrap(),
        vec![net("10.244.2.0/24"), net("fd00::/121")]
    );
}

#[test]
fn adopt_replaces_what_the_table_held_for_the_node() {
    let mut a = v4("10.244.0.0/16", 24);
    a.allocate("n").unwrap();
    // The API server says the node got something else (another controller won).
    assert!(a.adopt("n", &[net("10.244.7.0/24")]).is_empty());
    assert_eq!(a.owned("n"), Some(&[net("10.244.7.0/24")][..]));
    assert_eq!(a.stats()[0].1.used, 1);
}

#[test]
fn emptied_keeps_the_cursor() {
    let mut a = v4("10.244.0.0/16", 24);
    a.allocate("a").unwrap();
    a.allocate("b").unwrap();
    let mut b = a.emptied();
    assert_eq!(b.stats()[0].1.used, 0);
    assert_eq!(b.allocate("c").unwrap(), vec![net("10.244.2.0/24")]);
}

#[derive(Clone, Debug)]
enum Op {
    Join,
    Delete(usize),
    Restart,
    HandSet(u8),
    /// A hand-set podCIDR of the wrong size (a /29 or a /31 where /30 is the rule).
    HandSetWrongSize(u8, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Join),
        2 => (0usize..64).prop_map(Op::Delete),
        1 => Just(Op::Restart),
        1 => (0u8..40).prop_map(Op::HandSet),
        1 => (0u8..40, any::<bool>()).prop_map(|(k, wide)| Op::HandSetWrongSize(k, wide)),
    ]
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

proptest! {
    /// Joins, deletions, hand-set podCIDRs and restarts (rebuild from what the nodes
    /// have) never give two nodes overlapping subnets.
    #[test]
    fn never_two_nodes_with_overlapping_subnets(ops in proptest::collection::vec(op(), 1..200)) {
        let config = [(net("10.0.0.0/27"), 30), (net("fd00::/124"), 126)];
        let mut alloc = Allocator::from_config(&config);
        // The "API server": node -> podCIDRs (set once).
        let mut nodes: Vec<(String, Vec<IpNet>)> = Vec::new();
        let mut next = 0;
        for op in ops {
            match op {
                Op::Join => {
                    let name = format!("n{next}");
                    next += 1;
                    let cidrs = alloc.allocate(&name).unwrap_or_default();
                    nodes.push((name, cidrs));
                }
                Op::Delete(i) if !nodes.is_empty() => {
                    let (name, _) = nodes.remove(i % nodes.len());
                    alloc.release(&name);
                }
                Op::Delete(_) => {}
                Op::Restart => {
                    alloc = Allocator::from_config(&config);
                    for (name, cidrs) in &nodes {
                        if !cidrs.is_empty() {
                            alloc.adopt(name, cidrs);
                        }
                    }
                    // Nodes left without a subnet get one now.
                    for (name, cidrs) in nodes.iter_mut() {
                        if cidrs.is_empty() {
                            *cidrs = alloc.allocate(name).unwrap_or_default();
                        }
                    }
                }
                Op::HandSet(k) => {
                    // Someone sets a podCIDR by hand; the controller adopts or refuses it.
                    let name = format!("h{next}");
                    next += 1;
                    let hand = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, k & !3)), 30).unwrap();
                    if alloc.adopt(&name, &[hand]).is_empty() {
                        nodes.push((name, vec![hand]));
                    }
                }
                Op::HandSetWrongSize(k, wide) => {
                    let name = format!("w{next}");
                    next += 1;
                    let (mask, len) = if wide { (!7, 29) } else { (!1, 31) };
                    let hand = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, k & mask)), len).unwrap();
                    let used_before = alloc.stats();
                    prop_assert!(!alloc.adopt(&name, &[hand]).is_empty(), "{hand} was adopted");
                    prop_assert_eq!(alloc.stats(), used_before);
                }
            }
            let recorded: Vec<(&String, &IpNet)> = nodes
                .iter()
                .flat_map(|(n, c)| c.iter().map(move |c| (n, c)))
                .collect();
            for (i, (n1, c1)) in recorded.iter().enumerate() {
                for (n2, c2) in &recorded[i + 1..] {
                    prop_assert!(n1 == n2 || !overlaps(c1, c2), "{n1} {c1} overlaps {n2} {c2}");
                }
            }
            let used: u128 = alloc.stats().iter().map(|(_, s)| s.used).sum();
            // Only node subnets of the right size are ever recorded.
            prop_assert_eq!(used as usize, recorded.len());
        }
    }
}

#[test]
fn a_node_registered_again_gets_its_old_subnets_back_when_free() {
    let mut a = Allocator::from_config(&[(net("10.0.0.0/16"), 24)]);
    let first = a.allocate("n1").unwrap();
    a.allocate("n2").unwrap();
    assert_eq!(a.release("n1"), first);
    // Round-robin: another node does not get n1's subnet at once...
    let other = a.allocate("n3").unwrap();
    assert_ne!(other, first);
    // ...but n1, registered again, does.
    assert_eq!(a.allocate("n1").unwrap(), first);
}

#[test]
fn a_returning_node_gets_a_fresh_subnet_when_its_old_one_was_taken() {
    let mut a = Allocator::from_config(&[(net("10.0.0.0/16"), 24)]);
    let first = a.allocate("n1").unwrap();
    a.release("n1");
    // Someone adopts n1's old subnet by hand.
    assert!(a.adopt("intruder", &first).is_empty());
    let again = a.allocate("n1").unwrap();
    assert_ne!(again, first);
    assert_eq!(a.owned("intruder"), Some(first.as_slice()));
}
