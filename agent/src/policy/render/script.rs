//! [`Ruleset`] as `nft -f` commands: the full replacement, and the pieces
//! [`crate::policy::diff`] assembles its transactions from.

use std::fmt::Write;

use crate::firewall::NamedCounter;

use super::{
    Chain, Ruleset, Set, COUNTER_EGRESS, COUNTER_INGRESS, ELEMENTS_PER_LINE, FAMILY, TABLE,
};

impl Ruleset {
    /// The script that replaces the table with this one in one transaction.
    pub fn script(&self) -> String {
        self.script_keeping(&[])
    }

    /// [`Ruleset::script`] with the drop counters starting from `counters` (as read
    /// from the table being replaced), so a replacement does not reset them.
    pub fn script_keeping(&self, counters: &[NamedCounter]) -> String {
        let mut s = String::new();
        for verb in ["add", "delete", "add"] {
            let _ = writeln!(s, "{verb} table {FAMILY} {TABLE}");
        }
        for counter in [COUNTER_INGRESS, COUNTER_EGRESS] {
            let _ = write!(s, "add counter {FAMILY} {TABLE} {counter}");
            match counters.iter().find(|c| c.name == counter) {
                Some(c) => {
                    let _ = writeln!(s, " {{ packets {} bytes {} }}", c.packets, c.bytes);
                }
                None => s.push('\n'),
            }
        }
        for (name, set) in &self.sets {
            write_add_set(&mut s, name, set);
        }
        for (name, chain) in &self.chains {
            write_add_chain(&mut s, name, chain);
        }
        for (name, chain) in &self.chains {
            write_rules(&mut s, name, &chain.rules);
        }
        s
    }
}

/// `add set` with the set's elements in its declaration: nft writes those without
/// fetching the elements of every set in the table first, which `add element` costs
/// (about 50 ms with 1000 policies). On an existing set of the same kind it adds them.
pub(in crate::policy) fn write_add_set(s: &mut String, name: &str, set: &Set) {
    let decl = set.kind.declaration();
    let _ = write!(s, "add set {FAMILY} {TABLE} {name} {{ {decl}");
    if !set.elements.is_empty() {
        s.push_str(" elements = {");
        let elements: Vec<&str> = set.elements.iter().map(String::as_str).collect();
        for (i, line) in elements.chunks(ELEMENTS_PER_LINE).enumerate() {
            s.push_str(if i == 0 { " " } else { ",\n\t" });
            s.push_str(&line.join(", "));
        }
        s.push_str(" }");
    }
    s.push_str(" }\n");
}

pub(in crate::policy) fn write_add_chain(s: &mut String, name: &str, chain: &Chain) {
    let body = match (chain.forward_priority, &chain.comment) {
        (Some(p), _) => format!(" {{ type filter hook forward priority {p}; policy accept; }}"),
        (None, Some(c)) => format!(" {{ comment \"{c}\"; }}"),
        (None, None) => String::new(),
    };
    let _ = writeln!(s, "add chain {FAMILY} {TABLE} {name}{body}");
}

pub(in crate::policy) fn write_rules(s: &mut String, chain: &str, rules: &[String]) {
    for r in rules {
        let _ = writeln!(s, "add rule {FAMILY} {TABLE} {chain} {r}");
    }
}
