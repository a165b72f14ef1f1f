//! The on-disk IPAM store of one network: `<dataDir>/<network name>/`.
//!
//! * one file per allocated address, named by the address (`10.244.1.5`, `fd00::5`),
//!   holding `containerID\nifname`;
//! * `last_reserved`: the last address handed out per node CIDR, one per line, in the
//!   subnet file's order;
//! * `lock`: every operation holds an exclusive `flock` on it, so concurrent plugin
//!   processes never hand out the same address.
//!
//! Address records go to `.tmp` and are renamed into place (atomic; only the lock holder
//! writes `.tmp`, so a process killed mid-write leaves at most a stale `.tmp` the next
//! writer overwrites). `last_reserved` is only a round-robin hint, so it is rewritten in
//! place with one `pwrite` of fixed-width lines: renaming over an existing file makes
//! ext4 flush it first, which cost a fifth of a millisecond on every ADD. Files are not
//! fsynced: a power loss kills the pods too, and GC then releases whatever was recorded
//! for them.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use weft_common::fsutil::read_to_string_bounded;

use super::alloc::Pool;

const LOCK: &str = "lock";
const LAST: &str = "last_reserved";
const TMP: &str = ".tmp";

/// Size caps on what the store reads back: a record is `containerID\nifname` (an ID
/// has at most 1024 bytes), `last_reserved` one 48-byte line per pool. A bigger file
/// was not written by weft; reading it whole could exhaust memory.
const MAX_RECORD: u64 = 4096;
const MAX_LAST: u64 = 4096;

/// Who holds an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Owner {
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        }
    }

    fn render(&self) -> String {
        format!("{}\n{}", self.container_id, self.ifname)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let id = lines.next()?.trim();
        let ifname = lines.next().unwrap_or("eth0").trim();
        Some(Owner::new(id, ifname))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("IPAM store {}: {op}: {source}", dir.display())]
pub struct StoreError {
    pub dir: PathBuf,
    pub op: String,
    #[source]
    pub source: std::io::Error,
}

/// The store, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Creates the directory if needed and takes the lock (blocking).
    pub fn lock(dir: &Path) -> Result<Self, StoreError> {
        let err = |op: &str| {
            let op = op.to_owned();
            move |source| StoreError {
                dir: dir.to_owned(),
                op,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(err("create directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(err("open lock file"))?;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(err("flock")(e));
            }
        }
        Ok(Store {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    fn err(&self, op: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        let op = op.into();
        move |source| StoreError {
            dir: self.dir.clone(),
            op,
            source,
        }
    }

    /// The allocated addresses (file names only; cheap).
    pub fn used(&self) -> Result<HashSet<IpAddr>, StoreError> {
        used_in(&self.dir).map_err(self.err("list allocations"))
    }

    /// Every allocation with its owner.
    pub fn allocations(&self) -> Result<Vec<(IpAddr, Owner)>, StoreError> {
        let mut out = Vec::new();
        for ip in self.used()? {
            match read_to_string_bounded(&self.dir.join(ip.to_string()), MAX_RECORD) {
                Ok(text) => {
                    if let Some(o) = Owner::parse(&text) {
                        out.push((ip, o));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err(format!("read {ip}"))(e)),
            }
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    pub fn owner_of(&self, ip: IpAddr) -> Result<Option<Owner>, StoreError> {
        match read_to_string_bounded(&self.dir.join(ip.to_string()), MAX_RECORD) {
            Ok(text) => Ok(Owner::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(format!("read {ip}"))(e)),
        }
    }

    fn write_atomic(&self, name: &str, text: &str) -> Result<(), StoreError> {
        let tmp = self.dir.join(TMP);
        let result = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(name)));
        result.map_err(self.err(format!("write {name}")))
    }

    /// Records `ip` for `owner`. The caller checked it is free (under this lock).
    pub fn reserve(&self, ip: IpAddr, owner: &Owner) -> Result<(), StoreError> {
        self.write_atomic(&ip.to_string(), &owner.render())
    }

    /// The last address handed out per pool (by position), `None` where unknown. Only a
    /// hint: an unreadable or oversized file counts as empty (and is rewritten next).
    pub fn last_reserved(&self, n: usize) -> Vec<Option<IpAddr>> {
        let text = read_to_string_bounded(&self.dir.join(LAST), MAX_LAST).unwrap_or_default();
        let mut lines = text.lines();
        (0..n)
            .map(|_| lines.next().and_then(|l| l.trim().parse().ok()))
            .collect()
    }

    pub fn set_last_reserved(&self, last: &[Option<IpAddr>]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let text = render_last(last);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LAST))
            .and_then(|f| {
                f.write_all_at(text.as_bytes(), 0)?;
                // Only shrinks when the number of pools went down; one line is one width.
                if f.metadata()?.len() > text.len() as u64 {
                    f.set_len(text.len() as u64)?;
                }
                Ok(())
            })
            .map_err(self.err(format!("write {LAST}")))
    }

    /// Releases `ip` if `owner` holds it (rollback of one ADD).
    pub fn release_ip(&self, ip: IpAddr, owner: &Owner) -> Result<bool, StoreError> {
        if self.owner_of(ip)?.as_ref() != Some(owner) {
            return Ok(false);
        }
        self.remove(ip)?;
        Ok(true)
    }

    fn remove(&self, ip: IpAddr) -> Result<(), StoreError> {
        match std::fs::remove_file(self.dir.join(ip.to_string())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(self.err(format!("remove {ip}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// Releases every address `owner` holds; returns them.
    pub fn release_owner(&self, owner: &Owner) -> Result<Vec<IpAddr>, StoreError> {
        let mut out = Vec::new();
        for (ip, o) in self.allocations()? {
            if &o == owner {
                self.remove(ip)?;
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// Releases every address whose owner is not in `keep`; returns what it released.
    pub fn release_all_but(
        &self,
        keep: &HashSet<Owner>,
    ) -> Result<Vec<(IpAddr, Owner)>, StoreError> {
        let mut out = Vec::new();
        for (ip, o) in self.allocations()? {
            if !keep.contains(&o) {
                self.remove(ip)?;
                out.push((ip, o));
            }
        }
        Ok(out)
    }

    /// Allocates one address per pool for `owner`: the requested one where one was asked
    /// for in that pool, else the next free one round-robin. All or nothing.
    pub fn allocate(
        &self,
        pools: &[Pool],
        requested: &[IpAddr],
        owner: &Owner,
    ) -> Result<Vec<IpAddr>, AllocError> {
        let used = self.used()?;
        for r in requested {
            if !pools.iter().any(|p| p.contains(*r)) {
                return Err(AllocError::Requested(
                    *r,
                    super::alloc::Refusal::OutsidePool,
                ));
            }
        }
        let mut last = self.last_reserved(pools.len());
        let mut picked = Vec::with_capacity(pools.len());
        for (i, pool) in pools.iter().enumerate() {
            let ip = match requested.iter().find(|r| pool.contains(**r)) {
                Some(r) => {
                    pool.check_requested(*r, &used)
                        .map_err(|why| AllocError::Requested(*r, why))?;
                    *r
                }
                None => {
                    let ip = pool
                        .next_free(last[i], &used)
                        .ok_or(AllocError::Exhausted(pool.net))?;
                    last[i] = Some(ip);
                    ip
                }
            };
            picked.push(ip);
        }
        let mut done = Vec::new();
        for ip in &picked {
            if let Err(e) = self.reserve(*ip, owner) {
                for d in &done {
                    let _ = self.remove(*d);
                }
                return Err(e.into());
            }
            done.push(*ip);
        }
        self.set_last_reserved(&last)?;
        Ok(picked)
    }
}

/// Width of one `last_reserved` line, newline included: the longest IPv6 text is 39.
const LAST_WIDTH: usize = 48;

/// `last_reserved` as fixed-width lines (space padded), so an in-place rewrite never
/// leaves the tail of a longer old line behind.
fn render_last(last: &[Option<IpAddr>]) -> String {
    last.iter()
        .map(|ip| {
            let ip = ip.map(|i| i.to_string()).unwrap_or_default();
            format!("{ip:<width$}\n", width = LAST_WIDTH - 1)
        })
        .collect()
}

/// Addresses recorded in `dir` (no lock; for STATUS and leak checks).
pub fn used_in(dir: &Path) -> std::io::Result<HashSet<IpAddr>> {
    let mut out = HashSet::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        if let Some(ip) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<IpAddr>().ok())
        {
            out.insert(ip);
        }
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("no free address left in node CIDR {0}")]
    Exhausted(ipnet::IpNet),
    #[error("requested IP {0} {1}")]
    Requested(IpAddr, super::alloc::Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}
