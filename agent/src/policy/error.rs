//! What can be wrong with a NetworkPolicy, and where: reported, never fatal to others.

use std::fmt;

use super::model::{Direction, PolicyKey};
use super::selector::SelectorError;

/// Why (part of) a policy could not be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy has no namespace or no name")]
    NoIdentity,
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("unknown policyType {0:?}")]
    UnknownPolicyType(String),
    #[error("a peer needs exactly one of ipBlock or podSelector/namespaceSelector")]
    InvalidPeer,
    #[error("ipBlock cidr {cidr:?} is not a CIDR")]
    InvalidCidr { cidr: String },
    #[error("ipBlock except {except:?} is not a CIDR strictly inside {cidr}")]
    InvalidExcept { cidr: String, except: String },
    #[error("unknown protocol {0:?}")]
    UnknownProtocol(String),
    #[error("port {0} is outside 1-65535")]
    InvalidPort(i32),
    #[error("endPort {end} is below port {port}")]
    EndPortBelowPort { port: i32, end: i32 },
    #[error("endPort needs a numeric port")]
    EndPortWithoutNumericPort,
    #[error("{0:?} is not a port name")]
    InvalidPortName(String),
    #[error("its nftables names collide with those of {0}")]
    NameCollision(PolicyKey),
}

/// What became of the part of the policy that had the error. Every effect fails closed:
/// nothing is allowed that a correct reading of the policy would deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The policy selects no pod and allows nothing.
    PolicyIgnored,
    /// The pods stay isolated by the policy, which allows nothing.
    RulesIgnored,
    /// The rule allows nothing; the policy's other rules stand.
    RuleIgnored,
    /// The selector matches nothing; the rest of the rule stands.
    MatchesNothing,
    /// The value is ignored; the rest of the policy stands.
    ValueIgnored,
}

/// An error with its place in the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub policy: PolicyKey,
    pub direction: Option<Direction>,
    /// The index of the rule in the direction's list.
    pub rule: Option<usize>,
    pub error: PolicyError,
    pub effect: Effect,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkPolicy {}", self.policy)?;
        match (self.direction, self.rule) {
            (Some(d), Some(i)) => write!(f, " {d} rule {i}")?,
            (Some(d), None) => write!(f, " {d}")?,
            _ => {}
        }
        write!(f, ": {} ({:?})", self.error, self.effect)
    }
}
