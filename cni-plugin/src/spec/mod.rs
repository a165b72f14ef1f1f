//! The CNI protocol: environment, network config and result per version, error codes.

pub mod config;
pub mod env;
pub mod error;
pub mod result;

pub use config::{NetConf, Version};
pub use env::{Command, Env};
