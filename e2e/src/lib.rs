//! weft-e2e as a library: the control-plane harness and realistic fixtures, shared by the
//! `weft-e2e` binary (benchmarks, local cluster) and the tests under `e2e/tests`.

pub mod cluster;
pub mod conformance;
pub mod elf;
pub mod fixtures;
pub mod harness;
pub mod overlay;
pub mod probe;
pub mod suite;
pub mod topo;
