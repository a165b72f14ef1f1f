//! Two [`Ruleset`]s -> the `nft -f` transaction that turns the applied one into the
//! desired one (pure): element changes for the sets, and a rewrite only of the chains
//! whose rules changed (a policy appearing, going or changing on this node). The table,
//! its counters and everything unchanged stay as they are; the kernel applies the whole
//! script atomically, so no packet sees half of it.
//!
//! Order inside the transaction: new sets (with their elements) and chains are declared
//! before any rule refers to them; a set loses elements before it gains any (an interval
//! set refuses overlaps, and a range may be replaced by one overlapping it); changed
//! chains are flushed and refilled; chains and sets no longer wanted are emptied of
//! their references first and deleted last.

use std::fmt::Write;

use super::render::{
    write_add_chain, write_add_set, write_elements, write_rules, Ruleset, FAMILY, TABLE,
};

/// What applying `desired` over `applied` takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// Nothing to do.
    None,
    /// The incremental transaction.
    Incremental(String),
    /// A set changed kind or a chain changed hook or comment (not done by
    /// [`Ruleset::build`], whose names fix both): the whole table is replaced.
    Replace(String),
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
    let mut s = String::new();
    for (name, set) in &desired.sets {
        if !applied.sets.contains_key(name) {
            write_add_set(&mut s, name, set);
        }
    }
    for (name, chain) in &desired.chains {
        if !applied.chains.contains_key(name) {
            write_add_chain(&mut s, name, chain);
        }
    }
    for (name, set) in &desired.sets {
        let Some(old) = applied.sets.get(name) else {
            continue;
        };
        write_elements(
            &mut s,
            "delete",
            name,
            old.elements.difference(&set.elements),
        );
        write_elements(&mut s, "add", name, set.elements.difference(&old.elements));
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
    Update::Incremental(s)
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

    fn lines(u: &Update) -> Vec<&str> {
        match u {
            Update::Incremental(s) => s.lines().collect(),
            other => panic!("not incremental: {other:?}"),
        }
    }

    const ADDR4: SetKind = SetKind::Addr {
        v6: false,
        interval: true,
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
            lines(&diff(&a, &b)),
            [
                "delete element inet weft-policy s { 10.0.0.2-10.0.0.9 }",
                "add element inet weft-policy s { 10.0.0.2-10.0.0.5 }",
            ]
        );
    }

    #[test]
    fn a_policy_going_away_is_unreferenced_before_deletion() {
        let mut a = Ruleset::default();
        a.sets.insert("p.t4".into(), set(ADDR4, &["10.0.0.1"]));
        a.chains
            .insert("in.p".into(), chain(&["ip saddr @p.t4 accept"]));
        a.chains
            .insert("ingress".into(), chain(&["ip daddr @p.t4 jump in.p"]));
        let mut b = Ruleset::default();
        b.chains.insert("ingress".into(), chain(&[]));
        assert_eq!(
            lines(&diff(&a, &b)),
            [
                "flush chain inet weft-policy ingress",
                "flush chain inet weft-policy in.p",
                "delete chain inet weft-policy in.p",
                "delete set inet weft-policy p.t4",
            ]
        );
        // And back: declared first, elements with the set, rules after.
        assert_eq!(
            lines(&diff(&b, &a)),
            [
                "add set inet weft-policy p.t4 { type ipv4_addr; flags interval; }",
                "add element inet weft-policy p.t4 { 10.0.0.1 }",
                "add chain inet weft-policy in.p { comment \"c\"; }",
                "add rule inet weft-policy in.p ip saddr @p.t4 accept",
                "flush chain inet weft-policy ingress",
                "add rule inet weft-policy ingress ip daddr @p.t4 jump in.p",
            ]
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
