//! Running code inside a network namespace.
//!
//! A netlink socket belongs to the netns of the thread that opened it, and `setns` changes
//! only the calling thread. So work inside a netns runs on a fresh OS thread that enters
//! the namespace, opens its own netlink connection on a current-thread runtime, and exits
//! when done: no tokio worker ever changes namespace.

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::Error;

/// An open handle to a network namespace (a file under /var/run/netns or /proc/PID/ns/net).
pub struct Netns {
    pub path: PathBuf,
    pub fd: OwnedFd,
}

impl Netns {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(|e| Error::Netns {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let fd = OwnedFd::from(file);
        // A path that opens but is not a netns (a plain file) would fail setns later with a
        // confusing error; check the filesystem magic now.
        let st = nix::sys::statfs::fstatfs(fd.as_fd()).map_err(|e| Error::Netns {
            path: path.to_owned(),
            reason: format!("statfs: {e}"),
        })?;
        let nsfs = nix::sys::statfs::NSFS_MAGIC;
        let proc = nix::sys::statfs::PROC_SUPER_MAGIC;
        if st.filesystem_type() != nsfs && st.filesystem_type() != proc {
            return Err(Error::Netns {
                path: path.to_owned(),
                reason: "not a network namespace file".into(),
            });
        }
        Ok(Netns {
            path: path.to_owned(),
            fd,
        })
    }

    /// Enters this namespace on the calling thread. Only for threads made for that purpose.
    pub fn enter(&self) -> Result<(), Error> {
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
            path: self.path.clone(),
            reason: format!("setns: {e}"),
        })
    }
}

/// Runs `f` with a netlink handle opened inside `netns` (or the caller's netns when
/// `None`), on a dedicated thread with its own current-thread runtime.
pub fn with_netlink<T, F, Fut>(netns: Option<&Netns>, f: F) -> Result<T, Error>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, Error>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                if let Some(ns) = netns {
                    ns.enter()?;
                }
                block_on_netlink(f)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Interface {
                    name: "netns thread".into(),
                    reason: "panicked".into(),
                })
            })
    })
}

/// Runs `f` with a netlink handle in the current thread's netns, on a current-thread
/// runtime built here. For binaries that do all their work in one netns.
pub fn block_on_netlink<T, F, Fut>(f: F) -> Result<T, Error>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Error::NetlinkConnection)?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::NetlinkConnection)?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        out
    })
}
