//! NetworkPolicy (`networking.k8s.io/v1`) for this node's pods, enforced by nftables.
//!
//! The pure core, in the order data flows through it:
//! * [`model`]: the slim inputs (pods, namespaces) and shared words;
//!   [`selector`]: label selectors.
//! * [`compile`]: policies + pods + namespaces -> [`rules::RuleModel`], the desired state
//!   of this node (isolation, per-policy membership, per-rule element sets).
//! * rendering to nftables follows.

pub mod compile;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod model;
pub mod ranges;
pub mod rules;
pub mod selector;

pub use compile::compile;
pub use error::{Effect, PolicyError, Problem};
pub use model::{Direction, NamedPort, NamespaceInfo, PodInfo, PolicyKey, Protocol};
pub use rules::RuleModel;
