//! Contracts between weft's processes and the kernel helpers more than one binary needs.
//!
//! * [`netconf`]: the cluster network config (the ConfigMap's `net-conf.json`), read by
//!   the controller and the agent.
//! * [`subnet_file`]: the node subnet file the agent writes and the CNI plugin reads.
//! * [`annotations`]: the Node annotation keys the agent publishes and peers read.
//! * [`netns`]: run code inside a network namespace on a dedicated OS thread.
//! * [`bridge`]: make sure the node bridge exists with its gateway and MTU.

pub mod annotations;
pub mod bridge;
pub mod error;
pub mod netconf;
pub mod netns;
pub mod subnet_file;

pub use error::Error;
