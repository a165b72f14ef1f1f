//! The validation result kept between syncs, so that a change of one Node is checked on
//! its own instead of with all the others (pure).
//!
//! [`validate`] decides in age order, and a peer's verdict depends on the others only
//! through the values it shares with them (pod CIDRs, VTEP MAC, public IP: the claims,
//! of which the oldest holder wins). So when no other candidate shares a value with a
//! changed peer, before or after the change, no other verdict can change and the changed
//! peer's own verdict is its checks alone ([`validate::check_alone`]). [`Verdicts`]
//! counts, for every claimed value, the candidates claiming it, which is what tells such
//! an isolated change apart. Any other change (a duplicate claim is involved, the rules
//! changed) returns `None` and the caller validates the whole set again: rare, and no
//! slower than before. At 5000 peers the whole set costs milliseconds, one change a few
//! hash lookups.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use weft_common::annotations::Mac;

use super::validate::{self, Rejection, Rules};
use super::Peer;
use crate::datapath::plan::KeyMap;

/// A value only one Node may hold (see [`validate`]'s claims).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Claim {
    PodCidr(IpNet),
    Mac(Mac),
    PublicIp(IpAddr),
}

fn claims(peer: &Peer) -> impl Iterator<Item = Claim> + '_ {
    let cidrs = peer.pod_cidrs.iter().map(|c| Claim::PodCidr(*c));
    let vtep = peer
        .vtep
        .iter()
        .flat_map(|v| [Claim::Mac(v.mac), Claim::PublicIp(v.public_ip)]);
    cidrs.chain(vtep)
}

/// One node's candidate peer as the last sync saw it (`old`) and as it is now (`new`);
/// `None`: no candidate (absent, incomplete, malformed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerChange<'a> {
    pub name: &'a str,
    pub old: Option<&'a Peer>,
    pub new: Option<&'a Peer>,
}

/// What an isolated change did to the accepted set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed<'a> {
    /// Peers accepted before the change and gone or changed now (their old version).
    pub removed: Vec<&'a Peer>,
    /// Peers accepted now that are new or changed (their new version).
    pub added: Vec<&'a Peer>,
}

/// The verdicts of the last validation of a candidate set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    rules: Rules,
    /// How many candidates (accepted or not) claim each value.
    claimed: KeyMap<Claim, u32>,
    /// The rejected candidates, by node name; every other candidate is accepted.
    rejected: BTreeMap<String, Rejection>,
}

impl Verdicts {
    /// Validates the whole candidate set ([`validate::validate`]) and keeps the verdicts.
    pub fn new<'a>(
        candidates: &[&'a Peer],
        rules: &Rules,
    ) -> (Verdicts, Vec<&'a Peer>, Vec<Rejection>) {
        let (accepted, rejected) = validate::validate(candidates.iter().copied(), rules);
        (
            Verdicts::of(candidates, rules, &rejected),
            accepted,
            rejected,
        )
    }

    /// The verdicts of `candidates` that [`validate::validate`] rejected as `rejected`
    /// under `rules` (a sync keeps them only once its entries are written: counting the
    /// claims of 5000 peers should not delay a repair).
    pub fn of(candidates: &[&Peer], rules: &Rules, rejected: &[Rejection]) -> Verdicts {
        let mut claimed =
            KeyMap::with_capacity_and_hasher(3 * candidates.len(), Default::default());
        for claim in candidates.iter().flat_map(|p| claims(p)) {
            *claimed.entry(claim).or_insert(0) += 1;
        }
        Verdicts {
            rules: rules.clone(),
            claimed,
            rejected: rejected
                .iter()
                .map(|r| (r.node.clone(), r.clone()))
                .collect(),
        }
    }

    /// Takes in `changes` (each name at most once) when they are isolated: every value a
    /// changed peer claimed before, or claims now, is no other candidate's. Returns what
    /// changed in the accepted set, the same as validating the new candidate set whole
    /// would. `None`, with nothing taken in, when they are not isolated or `rules` differ
    /// from the last validation's: the caller validates the whole set then.
    pub fn update<'a>(&mut self, changes: &[PeerChange<'a>], rules: &Rules) -> Option<Changed<'a>> {
        if *rules != self.rules {
            return None;
        }
        // The counts after the change, for every value a change touches.
        let mut after: KeyMap<Claim, u32> = KeyMap::default();
        for c in changes {
            for claim in c.old.into_iter().flat_map(claims) {
                let n = self.claimed.get(&claim).copied().unwrap_or(0);
                if n != 1 {
                    return None; // another candidate shared it: its verdict may change
                }
                let count = after.entry(claim).or_insert(n);
                *count = count.checked_sub(1)?;
            }
        }
        for c in changes {
            for claim in c.new.into_iter().flat_map(claims) {
                let count = after
                    .entry(claim)
                    .or_insert_with(|| self.claimed.get(&claim).copied().unwrap_or(0));
                *count += 1;
                if *count != 1 {
                    return None; // shared with another candidate, or twice by this one
                }
            }
        }
        for (claim, count) in after {
            if count == 0 {
                self.claimed.remove(&claim);
            } else {
                self.claimed.insert(claim, count);
            }
        }
        let mut out = Changed::default();
        for c in changes {
            let was_rejected = self.rejected.remove(c.name).is_some();
            if let Some(old) = c.old.filter(|_| !was_rejected) {
                out.removed.push(old);
            }
            if let Some(new) = c.new {
                match validate::check_alone(new, rules) {
                    Ok(()) => out.added.push(new),
                    Err((reason, detail)) => {
                        let r = Rejection {
                            node: new.name.clone(),
                            reason,
                            detail,
                        };
                        self.rejected.insert(new.name.clone(), r);
                    }
                }
            }
        }
        Some(out)
    }

    /// The rejected candidates, sorted as [`validate::validate`] sorts them.
    pub fn rejected(&self) -> Vec<Rejection> {
        let mut v: Vec<Rejection> = self.rejected.values().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests;
