//! Contracts between weft's processes and the kernel helpers more than one binary needs.
//!
//! * [`netconf`]: the cluster network config (the ConfigMap's `net-conf.json`), read by
//!   the controller and the agent.
//! * [`subnet_file`]: the node subnet file the agent writes and the CNI plugin reads.
//! * [`annotations`]: the Node annotation keys the agent publishes and peers read.
//! * [`netns`]: run code inside a network namespace on a dedicated OS thread.
//! * [`bridge`]: make sure the node bridge exists with its gateway and MTU.
//! * [`fsutil`]: read a small file with a size cap (`read_to_string_bounded`).
//! * [`policy_gate`]: the lock by which the agent tells the CNI plugin that it enforces
//!   NetworkPolicy.
//! * `http_serve` (feature `http`): the slowloris-proof HTTP server of the agent and the
//!   controller.

pub mod annotations;
pub mod bridge;
pub mod error;
pub mod fsutil;
#[cfg(feature = "http")]
pub mod http_serve;
pub mod netconf;
pub mod netns;
pub mod policy_gate;
pub mod subnet_file;

pub use error::Error;

/// Whether the kernel has IPv6 at all (a kernel booted with `ipv6.disable=1` has no
/// `/proc/sys/net/ipv6`, refuses IPv6 link attributes, and answers an IPv6 dump request
/// with its all-families handler). Checked once per process.
pub fn kernel_has_ipv6() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::path::Path::new("/proc/sys/net/ipv6").exists())
}

/// For privileged tests: true when running as root. When not root, returns false if
/// `WEFT_SKIP_PRIVILEGED=1` is set (the caller then skips, saying so), and panics
/// otherwise, so a privileged test never passes silently by not running.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("WEFT_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root (WEFT_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!("{test} needs root; run as root or set WEFT_SKIP_PRIVILEGED=1 to skip it explicitly");
}
