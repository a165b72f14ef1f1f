//! The parts of the plugin other crates and the plugin's own integration tests need: how
//! a pod's host veth is named and marked as the pod's. The plugin itself is the `weft`
//! binary (`src/main.rs`).

pub mod host_veth;
