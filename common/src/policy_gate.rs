//! The NetworkPolicy gate between the agent and the CNI plugin: no pod gets a network
//! on a node whose agent is not enforcing NetworkPolicy, so a pod started while the agent
//! is down (or before its first policy table) is not left unisolated.
//!
//! With NetworkPolicy on, the agent creates `policy.lock` next to the subnet file and
//! holds an exclusive `flock` on it from its first complete policy table until it exits;
//! the kernel drops the lock when the process dies, however it dies. ADD probes it: a
//! lock file that exists but is not held means policy is on and nobody enforces it, and
//! the pod waits (the runtime retries). No lock file: policy is off (the agent removes
//! the file when it starts with `networkPolicy: false`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name, in the subnet file's directory.
pub const LOCK_NAME: &str = "policy.lock";

pub fn lock_path(subnet_file: &Path) -> PathBuf {
    subnet_file
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join(LOCK_NAME)
}

/// The agent's hold on the lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] File);

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor this function's caller owns; no memory involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes the lock (creating the file). Fails when another process holds it: a second
/// agent on the node.
pub fn hold(path: &Path) -> io::Result<Held> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    flock(&file, libc::LOCK_EX | libc::LOCK_NB)?;
    Ok(Held(file))
}

/// Removes the lock file (NetworkPolicy turned off); a missing file is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// What ADD finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// No lock file: NetworkPolicy is off.
    PolicyOff,
    /// An agent holds the lock: its policy table is current.
    Enforced,
    /// The lock file exists and nobody holds it: the agent is down or not ready.
    NotEnforced,
}

pub fn probe(path: &Path) -> io::Result<Gate> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Gate::PolicyOff),
        Err(e) => return Err(e),
    };
    match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        // Got it: nobody holds it exclusively. Dropping the file releases it.
        Ok(()) => Ok(Gate::NotEnforced),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(Gate::Enforced),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_follows_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir.path().join("subnet.env"));
        assert_eq!(path, dir.path().join(LOCK_NAME));
        assert_eq!(probe(&path).unwrap(), Gate::PolicyOff);
        let held = hold(&path).unwrap();
        assert_eq!(probe(&path).unwrap(), Gate::Enforced);
        // A second holder (another agent) is refused while the first holds it.
        assert_eq!(
            hold(&path).unwrap_err().raw_os_error(),
            Some(libc::EWOULDBLOCK)
        );
        drop(held);
        assert_eq!(probe(&path).unwrap(), Gate::NotEnforced);
        // Probing did not take the lock for good.
        let again = hold(&path).unwrap();
        drop(again);
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(probe(&path).unwrap(), Gate::PolicyOff);
    }
}
