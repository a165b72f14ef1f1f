//! NetworkPolicy (`networking.k8s.io/v1`) for this node's pods, enforced by nftables.
//!
//! The pure core, in the order data flows through it:
//! * [`model`]: the slim inputs (pods, namespaces) and shared words;
//!   [`selector`]: label selectors.
//! * [`mod@compile`]: policies + pods + namespaces -> [`rules::RuleModel`], the desired state
//!   of this node (isolation, per-policy membership, per-rule element sets).
//! * [`render`]: the model -> [`render::Ruleset`], the `inet weft-policy` table as sets and
//!   chains, and the `nft -f` script that installs it; [`diff`]: two rulesets -> the
//!   element and chain changes between them.
//!
//! And the I/O around it: [`watch`] (the pod, namespace and policy watches, projected
//! by [`objects`] and gathered in [`inputs`]), [`enforce`] (the loop that keeps the
//! table in step), [`nfnl`] (set element batches over nfnetlink) and [`table`] (full
//! loads, chain changes and counters, through `nft`).

pub mod compile;
pub mod diff;
pub mod enforce;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod inputs;
pub mod model;
pub mod nfnl;
pub mod objects;
pub mod ranges;
pub mod render;
pub mod rules;
pub mod selector;
pub mod table;
pub mod watch;

pub use compile::compile;
pub use error::{Effect, PolicyError, Problem};
pub use model::{Direction, NamedPort, NamespaceInfo, PodInfo, PolicyKey, Protocol};
pub use render::Ruleset;
pub use rules::RuleModel;
