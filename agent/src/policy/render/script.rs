//! [`Ruleset`] as `nft -f` commands: the full replacement, and the pieces
//! [`crate::policy::diff`] assembles its transactions from.

use std::fmt::Write;

use crate::firewall::NamedCounter;

use super::{
    Chain, Ruleset, Set, COUNTER_EGRESS, COUNTER_INGRESS, ELEMENTS_PER_COMMAND, FAMILY, TABLE,
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

pub(in crate::policy) fn write_elements<'a>(
    s: &mut String,
    verb: &str,
    set: &str,
    elements: impl IntoIterator<Item = &'a String>,
) {
    let elements: Vec<&String> = elements.into_iter().collect();
    for chunk in elements.chunks(ELEMENTS_PER_COMMAND) {
        let list = chunk
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "{verb} element {FAMILY} {TABLE} {set} {{ {list} }}");
    }
}

pub(in crate::policy) fn write_add_set(s: &mut String, name: &str, set: &Set) {
    let decl = set.kind.declaration();
    let _ = writeln!(s, "add set {FAMILY} {TABLE} {name} {{ {decl} }}");
    write_elements(s, "add", name, &set.elements);
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
