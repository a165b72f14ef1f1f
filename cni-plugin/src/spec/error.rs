//! The CNI error type and every error code the plugin answers with, in one place.
//!
//! Spec codes (CNI 1.1.0):
//!
//! | code | meaning |
//! |------|---------|
//! | 1 | incompatible CNI version (unknown `cniVersion`, or a verb the version lacks) |
//! | 2 | unsupported field in the network config |
//! | 3 | container unknown or does not exist |
//! | 4 | invalid environment variable (the message names it) |
//! | 5 | I/O failure (IPAM store, log file, stdin) |
//! | 6 | failed to decode content (stdin is not JSON, or is over 1 MiB) |
//! | 7 | invalid network config (the message names the field) |
//! | 11 | try again later (the node subnet file is missing: the agent has not set up the node) |
//! | 50 | plugin not available (STATUS) |
//! | 51 | plugin not available, existing containers may be damaged (STATUS; unused) |
//!
//! Plugin-specific codes:
//!
//! | code | meaning |
//! |------|---------|
//! | 100 | the node's IP pool is exhausted |
//! | 101 | the requested IP cannot be given (outside the node CIDR, reserved, or in use) |
//! | 102 | the interface already exists (in the pod netns, or the host veth) |
//! | 103 | a kernel (netlink) operation failed |
//! | 104 | CHECK found a mismatch (the message says which) |
//! | 105 | the node subnet file exists but is invalid (also: over the size cap, not UTF-8) |
//! | 106 | internal error (a bug: the plugin caught a panic) |
//! | 107 | the host veth name is taken by a link that is not this container's (a name collision) |

use serde_json::json;

pub const INCOMPATIBLE_VERSION: u32 = 1;
#[allow(dead_code)] // a spec code weft never answers with; listed for completeness
pub const UNSUPPORTED_FIELD: u32 = 2;
#[allow(dead_code)] // a spec code weft never answers with; listed for completeness
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENV: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN_LATER: u32 = 11;
pub const NOT_AVAILABLE: u32 = 50;
#[allow(dead_code)] // a spec code weft never answers with; listed for completeness
pub const NOT_AVAILABLE_DAMAGED: u32 = 51;

pub const POOL_EXHAUSTED: u32 = 100;
pub const IP_UNAVAILABLE: u32 = 101;
pub const INTERFACE_EXISTS: u32 = 102;
pub const NETLINK: u32 = 103;
pub const CHECK_MISMATCH: u32 = 104;
pub const SUBNET_FILE_INVALID: u32 = 105;
pub const INTERNAL: u32 = 106;
pub const HOST_VETH_TAKEN: u32 = 107;

/// An error answered to the runtime as `{cniVersion, code, msg, details}` on stdout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn invalid_env(var: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            INVALID_ENV,
            format!("invalid environment variable {var}: {reason}"),
        )
    }

    pub fn invalid_config(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            INVALID_CONFIG,
            format!("invalid network config: field `{field}`: {reason}"),
        )
    }

    pub fn io(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        Self::new(IO_FAILURE, format!("{what}: {err}"))
    }

    pub fn netlink(err: impl std::fmt::Display) -> Self {
        Self::new(NETLINK, err.to_string())
    }

    pub fn mismatch(what: impl Into<String>) -> Self {
        Self::new(CHECK_MISMATCH, what)
    }

    /// The JSON printed on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

/// Maps the shared crate's errors to CNI codes.
impl From<weft_common::Error> for CniError {
    fn from(e: weft_common::Error) -> Self {
        use weft_common::Error as E;
        match &e {
            E::SubnetFileIo { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                CniError::new(
                    TRY_AGAIN_LATER,
                    format!(
                        "node subnet file {} does not exist: the weft agent has not set up this node yet",
                        path.display()
                    ),
                )
            }
            // Over the size cap or not text: the file is there but is not a subnet file.
            E::SubnetFileIo { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::FileTooLarge | std::io::ErrorKind::InvalidData
                ) =>
            {
                CniError::new(SUBNET_FILE_INVALID, e.to_string())
            }
            E::SubnetFileIo { .. } => CniError::new(IO_FAILURE, e.to_string()),
            E::SubnetFileSyntax { .. } => CniError::new(SUBNET_FILE_INVALID, e.to_string()),
            E::Netns { .. } => CniError::invalid_env("CNI_NETNS", &e),
            E::InvalidConfig { field, reason } => CniError::invalid_config(field, reason),
            E::ConfigSyntax(_) => CniError::new(DECODE, e.to_string()),
            E::ConfigIo { .. } => CniError::new(IO_FAILURE, e.to_string()),
            E::Netlink { .. } | E::NetlinkConnection(_) | E::Interface { .. } => CniError::netlink(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::invalid_env("CNI_IFNAME", "is empty").with_details("x");
        let v = e.to_json("1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["msg"].as_str().unwrap().contains("CNI_IFNAME"));
        assert_eq!(v["details"], "x");
    }

    #[test]
    fn missing_subnet_file_is_try_again() {
        let e = weft_common::Error::SubnetFileIo {
            path: "/run/weft/subnet.env".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let c = CniError::from(e);
        assert_eq!(c.code, TRY_AGAIN_LATER);
        assert!(
            c.msg.contains("agent has not set up this node"),
            "{}",
            c.msg
        );
    }
}
