//! weft-agent as a library: the datapath can be driven without an API server (tests,
//! benchmarks) through [`peers::Peer`] sets; the binary wires it to the Node watch.

pub mod peers;
