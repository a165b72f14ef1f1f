//! Node pod CIDRs the allocation table refused, and why: the Event reasons and the
//! `weft_controller_rejected_pod_cidrs` gauge. Pure, no I/O.

use std::collections::HashMap;

use crate::allocator::AdoptError;
use crate::events;

/// Why a Node's pod CIDR is not recorded as its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a CIDR at all.
    Unparsable,
    /// Outside the cluster CIDRs (or of a family the cluster does not have).
    OutsideCluster,
    /// Inside the cluster CIDR but not one node subnet.
    WrongSize,
    /// A node subnet another Node holds.
    Overlap,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Unparsable,
        Reason::OutsideCluster,
        Reason::WrongSize,
        Reason::Overlap,
    ];

    /// The metric's `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Unparsable => "unparsable",
            Reason::OutsideCluster => "outside_cluster",
            Reason::WrongSize => "wrong_size",
            Reason::Overlap => "overlap",
        }
    }

    /// The reason of the Warning Event on the Node.
    pub fn event_reason(self) -> &'static str {
        match self {
            Reason::WrongSize => events::REASON_WRONG_SIZE,
            Reason::Unparsable | Reason::OutsideCluster | Reason::Overlap => {
                events::REASON_CONFLICT
            }
        }
    }
}

impl From<&AdoptError> for Reason {
    fn from(e: &AdoptError) -> Reason {
        match e {
            AdoptError::OutsideCluster(_) => Reason::OutsideCluster,
            AdoptError::WrongSize { .. } => Reason::WrongSize,
            AdoptError::Conflict { .. } => Reason::Overlap,
        }
    }
}

/// The refused pod CIDRs of every Node, by node name.
#[derive(Debug, Default)]
pub struct Rejected {
    by_node: HashMap<String, Vec<Reason>>,
}

impl Rejected {
    /// What is refused of `node` now (empty: nothing).
    pub fn set(&mut self, node: &str, reasons: Vec<Reason>) {
        if reasons.is_empty() {
            self.by_node.remove(node);
        } else {
            self.by_node.insert(node.to_string(), reasons);
        }
    }

    /// Like [`Self::set`] for a new verdict of the table alone: the node's unparsable
    /// strings, which never reach the table, stay counted.
    pub fn set_table_verdict(&mut self, node: &str, errors: &[AdoptError]) {
        let unparsable = self
            .by_node
            .get(node)
            .map(|r| r.iter().filter(|r| **r == Reason::Unparsable).count())
            .unwrap_or(0);
        let mut reasons = vec![Reason::Unparsable; unparsable];
        reasons.extend(errors.iter().map(Reason::from));
        self.set(node, reasons);
    }

    pub fn remove(&mut self, node: &str) {
        self.by_node.remove(node);
    }

    pub fn clear(&mut self) {
        self.by_node.clear();
    }

    /// Refused pod CIDRs per reason, every reason listed (zero included).
    pub fn counts(&self) -> Vec<(Reason, u64)> {
        Reason::ALL
            .iter()
            .map(|reason| {
                let n = self.by_node.values().flatten().filter(|r| *r == reason);
                (*reason, n.count() as u64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(r: &Rejected, reason: Reason) -> u64 {
        r.counts()
            .into_iter()
            .find(|(x, _)| *x == reason)
            .unwrap()
            .1
    }

    #[test]
    fn counts_follow_the_latest_verdict_per_node() {
        let mut r = Rejected::default();
        let wrong = AdoptError::WrongSize {
            cidr: "10.244.0.0/17".parse().unwrap(),
            want: 24,
        };
        let dup = AdoptError::Conflict {
            cidr: "10.244.1.0/24".parse().unwrap(),
            with: "a".into(),
        };
        r.set("greedy", vec![Reason::WrongSize]);
        r.set("dup", vec![Reason::Unparsable, (&dup).into()]);
        assert_eq!(
            r.counts(),
            vec![
                (Reason::Unparsable, 1),
                (Reason::OutsideCluster, 0),
                (Reason::WrongSize, 1),
                (Reason::Overlap, 1)
            ]
        );
        // The holder left and the table took the duplicate: its garbage stays counted.
        r.set_table_verdict("dup", &[]);
        assert_eq!(count(&r, Reason::Overlap), 0);
        assert_eq!(count(&r, Reason::Unparsable), 1);
        r.set_table_verdict("greedy", &[wrong]);
        assert_eq!(count(&r, Reason::WrongSize), 1);
        r.remove("greedy");
        assert_eq!(count(&r, Reason::WrongSize), 0);
        r.clear();
        assert!(r.counts().iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn wrong_size_has_its_own_event_reason() {
        assert_eq!(Reason::WrongSize.event_reason(), "CIDRWrongSize");
        assert_eq!(Reason::Overlap.event_reason(), "CIDRConflict");
        assert_eq!(Reason::OutsideCluster.event_reason(), "CIDRConflict");
    }
}
