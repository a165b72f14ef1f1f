//! weft-agent as a library: the datapath can be driven without an API server (tests,
//! benchmarks) through [`peers::Peer`] sets; the binary wires it to the Node watch.

pub mod coalesce;
pub mod config;
pub mod datapath;
pub mod events;
pub mod firewall;
pub mod http;
pub mod install_cni;
pub mod iptables;
pub mod kernel_watch;
pub mod metrics;
pub mod nodes;
pub mod peers;
pub mod policy;
pub mod publish;
pub mod reconcile;
pub mod run;
pub mod underlay;
