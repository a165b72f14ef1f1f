use std::path::PathBuf;

/// Errors of the datapath and firewall; each says what failed and on what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid datapath config: {0}")]
    Config(String),
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("netlink: {what}: {source}")]
    Dump {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
    #[error("peer {peer}: {entry}: {source}")]
    Entry {
        peer: String,
        entry: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{failed} of {total} entries failed; first: {first}")]
    Entries {
        failed: usize,
        total: usize,
        first: Box<Error>,
    },
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("firewall: {op}: {reason}")]
    Firewall { op: String, reason: String },
    #[error(transparent)]
    Common(#[from] weft_common::Error),
}

impl Error {
    pub(crate) fn netlink(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn device(device: &str, reason: impl Into<String>) -> Self {
        Error::Device {
            device: device.into(),
            reason: reason.into(),
        }
    }
}

/// The kernel's errno in a netlink error answer.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}
