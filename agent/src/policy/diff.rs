//! Two [`Ruleset`]s -> what turns the applied one into the desired one (pure): element
//! changes for the sets, and a rewrite only of the chains whose rules changed (a policy
//! appearing, going or changing on this node). The table, its counters and everything
//! unchanged stay as they are.
//!
//! Most changes (a pod's labels or IPs, a namespace's labels, a policy's peers) only move
//! set elements: [`Update::Elements`], one nfnetlink batch, atomic. When chains or sets
//! come or go, the rule changes need `nft`, whose element commands are slow (see
//! [`crate::policy::nfnl`]), so [`Update::Structural`] is three transactions in an order
//! that never allows more than both the old and the new table allow:
//! 1. `narrow` (nfnetlink): elements leaving the allow sets and the policies' target
//!    sets: the old table, allowing less;
//! 2. `script` (`nft`): new sets with their elements, additions to the sets that stay
//!    (declared with their elements, which nft writes without reading the table's
//!    elements), the changed chains; chains and sets no longer wanted are emptied of
//!    their references first and deleted last. Now the new table, except that pods
//!    leaving isolation are still isolated: it allows no more than the new one;
//! 3. `widen` (nfnetlink): pods leaving the isolation sets.
//!
//! Inside the script, sets and chains are declared before any rule refers to them, and
//! changed chains are flushed and refilled.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::nfnl::{Op, SetChange};
use super::render::{write_add_chain, write_add_set, write_rules, Ruleset, Set, FAMILY, TABLE};

/// What applying `desired` over `applied` takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// Nothing to do.
    None,
    /// Only elements change: deletions, then additions, one batch.
    Elements(Vec<SetChange>),
    /// Chains or sets change too.
    Structural(Structural),
    /// A set changed kind or a chain changed hook or comment (not done by
    /// [`Ruleset::build`], whose names fix both): the whole table is replaced.
    Replace(String),
}

/// The three steps of a structural update, applied in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Structural {
    pub narrow: Vec<SetChange>,
    pub script: String,
    pub widen: Vec<SetChange>,
}

/// Sets whose elements are the isolated pods: leaving them allows more.
fn isolation(set: &str) -> bool {
    set.starts_with("isolated.")
}

pub fn diff(applied: &Ruleset, desired: &Ruleset) -> Update {
    if applied == desired {
        return Update::None;
    }
    let kinds_differ = desired.sets.iter().any(|(name, set)| {
        applied
            .sets
            .get(name)
            .is_some_and(|old| old.kind != set.kind)
    });
    let chains_differ = desired.chains.iter().any(|(name, chain)| {
        applied.chains.get(name).is_some_and(|old| {
            (old.forward_priority, &old.comment) != (chain.forward_priority, &chain.comment)
        })
    });
    if kinds_differ || chains_differ {
        return Update::Replace(desired.script());
    }
    // Element changes of the sets in both.
    let mut deletions = Vec::new();
    let mut additions = Vec::new();
    for (name, set) in &desired.sets {
        let Some(old) = applied.sets.get(name) else {
            continue;
        };
        let change = |op, elements: std::collections::btree_set::Difference<'_, String>| {
            let elements: Vec<String> = elements.cloned().collect();
            (!elements.is_empty()).then(|| SetChange {
                op,
                set: name.clone(),
                kind: set.kind,
                elements,
            })
        };
        deletions.extend(change(Op::Delete, old.elements.difference(&set.elements)));
        additions.extend(change(Op::Add, set.elements.difference(&old.elements)));
    }
    let same_sets = applied.sets.keys().eq(desired.sets.keys());
    let same_chains = applied.chains == desired.chains;
    if same_sets && same_chains {
        deletions.extend(additions);
        return Update::Elements(deletions);
    }
    let (widen, narrow) = deletions.into_iter().partition(|c| isolation(&c.set));
    Update::Structural(Structural {
        narrow,
        script: script(applied, desired, &additions),
        widen,
    })
}

/// Step 2 of a structural update.
fn script(applied: &Ruleset, desired: &Ruleset, additions: &[SetChange]) -> String {
    let mut s = String::new();
    for (name, set) in &desired.sets {
        if !applied.sets.contains_key(name) {
            write_add_set(&mut s, name, set);
        }
    }
    for change in additions {
        let set = Set {
            kind: change.kind,
            elements: change.elements.iter().cloned().collect::<BTreeSet<_>>(),
        };
        write_add_set(&mut s, &change.set, &set);
    }
    for (name, chain) in &desired.chains {
        if !applied.chains.contains_key(name) {
            write_add_chain(&mut s, name, chain);
        }
    }
    for (name, chain) in &desired.chains {
        match applied.chains.get(name) {
            Some(old) if old.rules == chain.rules => {}
            Some(_) => {
                let _ = writeln!(s, "flush chain {FAMILY} {TABLE} {name}");
                write_rules(&mut s, name, &chain.rules);
            }
            None => write_rules(&mut s, name, &chain.rules),
        }
    }
    let gone_chains: Vec<&String> = applied
        .chains
        .keys()
        .filter(|n| !desired.chains.contains_key(*n))
        .collect();
    for name in &gone_chains {
        let _ = writeln!(s, "flush chain {FAMILY} {TABLE} {name}");
    }
    for name in &gone_chains {
        let _ = writeln!(s, "delete chain {FAMILY} {TABLE} {name}");
    }
    for name in applied.sets.keys() {
        if !desired.sets.contains_key(name) {
            let _ = writeln!(s, "delete set {FAMILY} {TABLE} {name}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::render::{Chain, Set, SetKind};
    use super::*;

    fn set(kind: SetKind, elements: &[&str]) -> Set {
        Set {
            kind,
            elements: elements.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn chain(rules: &[&str]) -> Chain {
        Chain {
            forward_priority: None,
            comment: Some("c".into()),
            rules: rules.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn change(op: Op, set: &str, kind: SetKind, elements: &[&str]) -> SetChange {
        SetChange {
            op,
            set: set.into(),
            kind,
            elements: elements.iter().map(|e| e.to_string()).collect(),
        }
    }

    const ADDR4: SetKind = SetKind::Addr {
        v6: false,
        interval: true,
    };
    const PLAIN4: SetKind = SetKind::Addr {
        v6: false,
        interval: false,
    };

    #[test]
    fn elements_are_deleted_before_added_and_chains_untouched() {
        let mut a = Ruleset::default();
        a.sets
            .insert("s".into(), set(ADDR4, &["10.0.0.1", "10.0.0.2-10.0.0.9"]));
        a.chains.insert("c".into(), chain(&["ip saddr @s accept"]));
        let mut b = a.clone();
        b.sets
            .insert("s".into(), set(ADDR4, &["10.0.0.1", "10.0.0.2-10.0.0.5"]));
        assert_eq!(diff(&a, &a), Update::None);
        assert_eq!(
            diff(&a, &b),
            Update::Elements(vec![
                change(Op::Delete, "s", ADDR4, &["10.0.0.2-10.0.0.9"]),
                change(Op::Add, "s", ADDR4, &["10.0.0.2-10.0.0.5"]),
            ])
        );
    }

    #[test]
    fn a_policy_going_away_is_unreferenced_before_deletion() {
        let mut a = Ruleset::default();
        a.sets.insert("p.t4".into(), set(PLAIN4, &["10.0.0.1"]));
        a.sets
            .insert("isolated.in4".into(), set(PLAIN4, &["10.0.0.1"]));
        a.chains
            .insert("in.p".into(), chain(&["ip saddr @p.t4 accept"]));
        a.chains
            .insert("ingress".into(), chain(&["ip daddr @p.t4 jump in.p"]));
        let mut b = Ruleset::default();
        b.sets.insert("isolated.in4".into(), set(PLAIN4, &[]));
        b.chains.insert("ingress".into(), chain(&[]));
        let Update::Structural(down) = diff(&a, &b) else {
            panic!("not structural");
        };
        assert!(down.narrow.is_empty());
        assert_eq!(
            down.script.lines().collect::<Vec<_>>(),
            [
                "flush chain inet weft-policy ingress",
                "flush chain inet weft-policy in.p",
                "delete chain inet weft-policy in.p",
                "delete set inet weft-policy p.t4",
            ]
        );
        // The pod leaves isolation only once its policy's rules are gone.
        assert_eq!(
            down.widen,
            [change(Op::Delete, "isolated.in4", PLAIN4, &["10.0.0.1"])]
        );
        // And back: declared first, elements with the set, rules after; the pod joins
        // isolation in the same transaction as the rules that allow its traffic.
        let Update::Structural(up) = diff(&b, &a) else {
            panic!("not structural");
        };
        assert!(up.narrow.is_empty() && up.widen.is_empty());
        assert_eq!(
            up.script.lines().collect::<Vec<_>>(),
            [
                "add set inet weft-policy p.t4 { type ipv4_addr; elements = { 10.0.0.1 } }",
                "add set inet weft-policy isolated.in4 { type ipv4_addr; elements = { 10.0.0.1 } }",
                "add chain inet weft-policy in.p { comment \"c\"; }",
                "add rule inet weft-policy in.p ip saddr @p.t4 accept",
                "flush chain inet weft-policy ingress",
                "add rule inet weft-policy ingress ip daddr @p.t4 jump in.p",
            ]
        );
    }

    /// With chains changing, elements leaving allow or target sets go before the
    /// script, isolation last: every step allows no more than old and new both do.
    #[test]
    fn narrowing_deletions_go_first_and_leaving_isolation_last() {
        let mut a = Ruleset::default();
        a.sets
            .insert("x.peers4".into(), set(ADDR4, &["10.0.0.1", "10.0.0.7"]));
        a.sets
            .insert("x.t4".into(), set(PLAIN4, &["10.0.0.2", "10.0.0.3"]));
        a.sets.insert(
            "isolated.in4".into(),
            set(PLAIN4, &["10.0.0.2", "10.0.0.3"]),
        );
        a.chains
            .insert("in.x".into(), chain(&["ip saddr @x.peers4 accept"]));
        let mut b = a.clone();
        b.sets
            .insert("x.peers4".into(), set(ADDR4, &["10.0.0.1-10.0.0.7"]));
        b.sets.insert("x.t4".into(), set(PLAIN4, &["10.0.0.2"]));
        b.sets
            .insert("isolated.in4".into(), set(PLAIN4, &["10.0.0.2"]));
        b.chains.insert("in.y".into(), chain(&["accept"]));
        let Update::Structural(u) = diff(&a, &b) else {
            panic!("not structural");
        };
        assert_eq!(
            u.narrow,
            [
                change(Op::Delete, "x.peers4", ADDR4, &["10.0.0.1", "10.0.0.7"]),
                change(Op::Delete, "x.t4", PLAIN4, &["10.0.0.3"]),
            ]
        );
        assert_eq!(
            u.script.lines().collect::<Vec<_>>(),
            [
                "add set inet weft-policy x.peers4 { type ipv4_addr; flags interval; elements = { 10.0.0.1-10.0.0.7 } }",
                "add chain inet weft-policy in.y { comment \"c\"; }",
                "add rule inet weft-policy in.y accept",
            ]
        );
        assert_eq!(
            u.widen,
            [change(Op::Delete, "isolated.in4", PLAIN4, &["10.0.0.3"])]
        );
    }

    #[test]
    fn a_changed_set_kind_replaces_the_table() {
        let mut a = Ruleset::default();
        a.sets.insert("s".into(), set(ADDR4, &[]));
        let mut b = Ruleset::default();
        b.sets.insert("s".into(), set(SetKind::Ports, &[]));
        match diff(&a, &b) {
            Update::Replace(s) => {
                assert!(s.starts_with("add table inet weft-policy\ndelete table"))
            }
            other => panic!("{other:?}"),
        }
    }
}
