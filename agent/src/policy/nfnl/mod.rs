//! Set element changes written to the kernel over nfnetlink (`NETLINK_NETFILTER`), without
//! `nft`: one batch is one nftables transaction, all of it or nothing.
//!
//! Why not `nft -f`: before it applies anything, nft 1.0.6 fetches the elements of every
//! set in the table when a script adds or deletes elements. At the bench's scale (1000
//! policies, 22,000 elements) that is about 50 ms for a one-element change; the batch
//! written here costs well under a millisecond. Chains and rules stay with `nft`.
//!
//! The pure half turns the elements as [`super::render`] writes them (`10.0.0.1`,
//! `10.1.0.0-10.1.255.255`, `tcp . 80-90`, `10.0.0.1 . tcp . 8080`) into the kernel's
//! keys, laid out as nft lays them out, so what one writes the other reads and deletes:
//! * a plain address set: the address, network order;
//! * an interval address set (rbtree): a range is its start, and the address after its
//!   end flagged as an interval end (none when the range runs to the last address);
//! * concatenations: every field padded to 4 bytes; the port ranges of an interval
//!   concatenation (pipapo) carry their end as a second key.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::datapath::Error;

use super::render::{SetKind, FAMILY, TABLE};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// Elements per message: keeps each message far below netlink's 64 KiB attribute limit.
const ELEMENTS_PER_MESSAGE: usize = 256;
/// How long to wait for the kernel's answer before calling the batch failed.
const ANSWER_TIMEOUT_S: libc::time_t = 5;

/// Adding or deleting elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Add,
    Delete,
}

/// Elements of one set to add or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetChange {
    pub op: Op,
    pub set: String,
    pub kind: SetKind,
    pub elements: Vec<String>,
}

/// One kernel set element: a key, the end of a concatenated range, or the interval-end
/// marker of an rbtree range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelElement {
    pub key: Vec<u8>,
    pub key_end: Option<Vec<u8>>,
    pub interval_end: bool,
}

impl KernelElement {
    fn key(key: Vec<u8>) -> Self {
        KernelElement {
            key,
            key_end: None,
            interval_end: false,
        }
    }
}

/// `element` (as the renderer writes it for a set of `kind`) as kernel elements; an
/// error names what could not be read (a renderer bug, never user input).
pub fn encode(kind: SetKind, element: &str) -> Result<Vec<KernelElement>, String> {
    let bad = || format!("cannot encode set element {element:?} of a {kind:?} set");
    match kind {
        SetKind::Addr {
            v6,
            interval: false,
        } => Ok(vec![KernelElement::key(addr(element, v6).ok_or_else(bad)?)]),
        SetKind::Addr { v6, interval: true } => {
            let (lo, hi) = match element.split_once('-') {
                Some((lo, hi)) => (lo, hi),
                None => (element, element),
            };
            let lo = addr(lo, v6).ok_or_else(bad)?;
            let hi = addr(hi, v6).ok_or_else(bad)?;
            let mut out = vec![KernelElement::key(lo)];
            if let Some(after) = successor(&hi) {
                out.push(KernelElement {
                    key: after,
                    key_end: None,
                    interval_end: true,
                });
            }
            Ok(out)
        }
        SetKind::Ports => {
            let (proto, ports) = element.split_once(" . ").ok_or_else(bad)?;
            let proto = protocol(proto).ok_or_else(bad)?;
            let (lo, hi) = match ports.split_once('-') {
                Some((lo, hi)) => (lo, hi),
                None => (ports, ports),
            };
            let lo: u16 = lo.parse().map_err(|_| bad())?;
            let hi: u16 = hi.parse().map_err(|_| bad())?;
            let key = |port: u16| [field(&[proto]), field(&port.to_be_bytes())].concat();
            Ok(vec![KernelElement {
                key: key(lo),
                key_end: Some(key(hi)),
                interval_end: false,
            }])
        }
        SetKind::Named { v6 } => {
            let mut parts = element.split(" . ");
            let (Some(a), Some(p), Some(port), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let a = addr(a, v6).ok_or_else(bad)?;
            let p = protocol(p).ok_or_else(bad)?;
            let port: u16 = port.parse().map_err(|_| bad())?;
            let key = [a, field(&[p]), field(&port.to_be_bytes())].concat();
            Ok(vec![KernelElement::key(key)])
        }
    }
}

/// The address of family `v6`, network order.
fn addr(s: &str, v6: bool) -> Option<Vec<u8>> {
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if !v6 => Some(a.octets().to_vec()),
        IpAddr::V6(a) if v6 => Some(a.octets().to_vec()),
        _ => None,
    }
}

/// The next address (big-endian increment); `None` after the last one.
fn successor(a: &[u8]) -> Option<Vec<u8>> {
    let mut next = a.to_vec();
    for byte in next.iter_mut().rev() {
        let (v, carry) = byte.overflowing_add(1);
        *byte = v;
        if !carry {
            return Some(next);
        }
    }
    None
}

fn protocol(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(libc::IPPROTO_TCP as u8),
        "udp" => Some(libc::IPPROTO_UDP as u8),
        "sctp" => Some(libc::IPPROTO_SCTP as u8),
        _ => None,
    }
}

/// A concatenation field: its bytes padded to a 32-bit register.
fn field(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(align(bytes.len()), 0);
    v
}

/// The batch for `changes`, in order, sequence numbers from `seq` on; returns the
/// bytes and the number of element messages (each is acknowledged).
pub fn batch(changes: &[SetChange], seq: u32) -> Result<(Vec<u8>, u32), String> {
    let mut buf = Vec::new();
    let mut seq = seq;
    let mut messages = 0;
    let subsys = NFNL_SUBSYS_NFTABLES.to_be_bytes();
    message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        subsys,
        &[],
    );
    for change in changes {
        let mut encoded = Vec::with_capacity(change.elements.len());
        for e in &change.elements {
            encoded.extend(encode(change.kind, e)?);
        }
        let (msg, flags) = match change.op {
            Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
            Op::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        };
        for chunk in encoded.chunks(ELEMENTS_PER_MESSAGE) {
            let mut list = Vec::new();
            for e in chunk {
                let mut inner = attr(
                    NFTA_SET_ELEM_KEY | NLA_F_NESTED,
                    &attr(NFTA_DATA_VALUE, &e.key),
                );
                if let Some(end) = &e.key_end {
                    inner.extend(attr(
                        NFTA_SET_ELEM_KEY_END | NLA_F_NESTED,
                        &attr(NFTA_DATA_VALUE, end),
                    ));
                }
                if e.interval_end {
                    inner.extend(attr(
                        NFTA_SET_ELEM_FLAGS,
                        &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
                    ));
                }
                list.extend(attr(NFTA_LIST_ELEM | NLA_F_NESTED, &inner));
            }
            let mut attrs = attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(TABLE));
            attrs.extend(attr(NFTA_SET_ELEM_LIST_SET, &cstr(&change.set)));
            attrs.extend(attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &list));
            seq = seq.wrapping_add(1);
            let ty = (NFNL_SUBSYS_NFTABLES << 8) | msg;
            message(&mut buf, ty, flags, seq, NFPROTO_INET, [0, 0], &attrs);
            messages += 1;
        }
    }
    seq = seq.wrapping_add(1);
    message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        subsys,
        &[],
    );
    Ok((buf, messages))
}

/// Appends one netlink message with an nfgenmsg header (family, version 0, resource id).
fn message(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: [u8; 2],
    attrs: &[u8],
) {
    let len = 16 + 4 + attrs.len();
    buf.extend((len as u32).to_ne_bytes());
    buf.extend(ty.to_ne_bytes());
    buf.extend(flags.to_ne_bytes());
    buf.extend(seq.to_ne_bytes());
    buf.extend(0u32.to_ne_bytes());
    buf.extend([family, 0, res_id[0], res_id[1]]);
    buf.extend(attrs);
}

pub fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// `s` with its terminating NUL, as netlink strings are.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink attribute, padded to 4 bytes.
pub fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut v = Vec::with_capacity(align(len));
    v.extend((len as u16).to_ne_bytes());
    v.extend(kind.to_ne_bytes());
    v.extend(payload);
    v.resize(align(len), 0);
    v
}

/// The acknowledgements in one datagram: `(seq, errno)` of each NLMSG_ERROR (errno 0:
/// success). Malformed input ends the walk.
pub fn answers(mut data: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while data.len() >= 16 {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap_or_default());
        let seq = u32::from_ne_bytes(data[8..12].try_into().unwrap_or_default());
        if len < 16 || len > data.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= 20 {
            out.push((
                seq,
                -i32::from_ne_bytes(data[16..20].try_into().unwrap_or_default()),
            ));
        }
        data = &data[align(len).min(data.len())..];
    }
    out
}

/// Applies `changes` as one transaction in the calling thread's network namespace.
pub fn apply(changes: &[SetChange]) -> Result<(), Error> {
    let op = format!("update elements of {FAMILY} {TABLE}");
    let fail = |reason: String| Error::Firewall {
        op: op.clone(),
        reason,
    };
    let (bytes, expected) = batch(changes, 0).map_err(&fail)?;
    if expected == 0 {
        return Ok(());
    }
    let socket = Socket::open(bytes.len()).map_err(|e| fail(format!("netlink socket: {e}")))?;
    socket
        .send(&bytes)
        .map_err(|e| fail(format!("sending the batch: {e}")))?;
    let mut acked = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while acked < expected {
        let n = socket
            .recv(&mut buf)
            .map_err(|e| fail(format!("reading the kernel's answer: {e}")))?;
        for (_, errno) in answers(&buf[..n]) {
            if errno != 0 {
                return Err(fail(io::Error::from_raw_os_error(errno).to_string()));
            }
            acked += 1;
        }
    }
    Ok(())
}

/// A `NETLINK_NETFILTER` socket of the calling thread's network namespace, used for one
/// batch.
struct Socket(OwnedFd);

impl Socket {
    fn open(batch_len: usize) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let socket = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        // A batch is one datagram: the send buffer must hold it whole (the default
        // holds about 200 KiB). FORCE needs CAP_NET_ADMIN, which the agent has.
        let size = libc::c_int::try_from(batch_len.saturating_mul(2).max(1 << 20))
            .unwrap_or(libc::c_int::MAX);
        if socket.set(libc::SO_SNDBUFFORCE, &size).is_err() {
            socket.set(libc::SO_SNDBUF, &size)?;
        }
        let timeout = libc::timeval {
            tv_sec: ANSWER_TIMEOUT_S,
            tv_usec: 0,
        };
        socket.set(libc::SO_RCVTIMEO, &timeout)?;
        Ok(socket)
    }

    fn set<T>(&self, option: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: setsockopt with a value of the option's type and its size.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        match rc {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl is the kernel's address (pid 0, no groups).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != bytes.len() => Err(io::Error::other("short send")),
            _ => Ok(()),
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            n => Ok(n as usize),
        }
    }
}

#[cfg(test)]
mod tests;
