use std::path::PathBuf;

/// Errors at the boundary of the shared crate; each names what failed and on what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid network config: field `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    // The cause is in the message, not in the error chain: it would print twice.
    #[error("network config {path}: {cause}")]
    ConfigIo {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot parse network config: {0}")]
    ConfigSyntax(#[from] serde_json::Error),
    #[error("node subnet file {path}: line {line}: {reason}")]
    SubnetFileSyntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("node subnet file {path}: {source}")]
    SubnetFileIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: {reason}")]
    Netns { path: PathBuf, reason: String },
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("netlink connection: {0}")]
    NetlinkConnection(#[source] std::io::Error),
    #[error("interface {name}: {reason}")]
    Interface { name: String, reason: String },
}

impl Error {
    pub fn netlink(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }

    /// The kernel's errno when this is a netlink error answered by the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => msg.code.map(|c| -c.get()),
            _ => None,
        }
    }
}
