//! The dump half of a sync: the main table's routes (weft's, and the others, which peer
//! validation must not shadow), the VXLAN device's neighbours and its FDB entries, read over a plain `NETLINK_ROUTE` socket and parsed in place.
//!
//! At 5000 peers a sync reads 15000 entries; the generic netlink message types allocate
//! per attribute and per message, so this module reads the few fields [`plan::diff`]
//! needs straight from the kernel's bytes into small `Copy` structs. With strict checking
//! (Linux >= 4.20) the kernel filters the dumps itself: routes by table,
//! neighbours and FDB entries by device. Without it the kernel sends everything and the
//! diff's own filters (which always run) do the same job.
//!
//! [`plan::diff`]: super::plan::diff

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ipnet::IpNet;
use weft_common::annotations::Mac;

use super::plan::{Actual, ActualFdb, ActualNeigh, ActualRoute, MAIN_TABLE};
use super::Error;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTNH_F_ONLINK: u32 = 4;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_IFINDEX: u16 = 8;
const NUD_PERMANENT: u16 = 0x80;
/// The kernel fills at most ~32 KiB per dump message batch.
const RECV_BUF: usize = 64 * 1024;
/// A dump the kernel marks interrupted (the table changed meanwhile) is read again.
const ATTEMPTS: usize = 3;

/// A `NETLINK_ROUTE` socket for dumps. It belongs to the network namespace of the thread
/// that opened it, whichever thread uses it later.
pub struct DumpSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    /// Whether the kernel accepted `NETLINK_GET_STRICT_CHK` (and so filters dumps).
    strict: bool,
}

fn io_err(what: &str, source: io::Error) -> Error {
    Error::Dump {
        what: what.into(),
        source,
    }
}

impl DumpSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, Error> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io_err("open netlink socket", io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option value of the right size.
        let strict = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_GET_STRICT_CHK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        Ok(DumpSocket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
            strict,
        })
    }

    /// Whether the kernel filters the dumps (strict checking is on).
    pub fn kernel_filters(&self) -> bool {
        self.strict
    }

    /// weft's routes (main table, weft's protocol), the neighbours and the FDB entries of
    /// `device` (0: of every device), one after the other; IPv4 and IPv6. Blocking; the
    /// kernel answers at once.
    pub fn dump(&mut self, device: u32) -> Result<Actual, Error> {
        Ok(Actual {
            routes: self.routes()?,
            neighs: self.neighbours(device)?,
            fdb: self.fdb(device)?,
        })
    }

    /// The main table's routes of both families, of every protocol (the kernel may send
    /// more; the diff keeps to weft's protocol). An empty IPv6 dump costs one round trip.
    pub fn routes(&mut self) -> Result<Vec<ActualRoute>, Error> {
        self.both_families("dump routes", route_request, RTM_NEWROUTE, parse_route)
    }

    /// The IPv4 and IPv6 neighbours of `device` (0: of every device).
    pub fn neighbours(&mut self, device: u32) -> Result<Vec<ActualNeigh>, Error> {
        let request = |family| neigh_request(family, device);
        self.both_families("dump neighbours", request, RTM_NEWNEIGH, parse_neigh)
    }

    /// One dump per address family (IPv6 only where the kernel has it), concatenated.
    fn both_families<T>(
        &mut self,
        what: &str,
        request: impl Fn(u8) -> Request,
        ty: u16,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, Error> {
        let mut out = self.collect(what, &request(libc::AF_INET as u8), ty, parse)?;
        if weft_common::kernel_has_ipv6() {
            out.extend(self.collect(what, &request(libc::AF_INET6 as u8), ty, parse)?);
        }
        Ok(out)
    }

    /// The FDB entries of `device` (0: of every device).
    pub fn fdb(&mut self, device: u32) -> Result<Vec<ActualFdb>, Error> {
        self.collect(
            "dump FDB",
            &neigh_request(libc::AF_BRIDGE as u8, device),
            RTM_NEWNEIGH,
            parse_fdb,
        )
    }

    /// Sends one dump request and parses every answer of type `ty`; reads an interrupted
    /// dump again, so the result is always one complete dump.
    fn collect<T>(
        &mut self,
        what: &str,
        req: &Request,
        ty: u16,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        for _ in 0..ATTEMPTS {
            out.clear();
            self.seq = self.seq.wrapping_add(1);
            let interrupted = self
                .send(req)
                .and_then(|()| {
                    self.receive(|t, body| {
                        if t == ty {
                            out.extend(parse(body));
                        }
                    })
                })
                .map_err(|e| io_err(what, e))?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(io_err(
            what,
            io::Error::other(format!("interrupted {ATTEMPTS} times in a row")),
        ))
    }

    fn send(&mut self, req: &Request) -> io::Result<()> {
        let mut msg = req.bytes.clone();
        msg[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // SAFETY: sockaddr_nl zeroed is the kernel's address (pid 0, no groups).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and addr outlive the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads answers to the current sequence number until NLMSG_DONE, handing each
    /// message's type and body (the bytes after the netlink header) to `each`; returns
    /// whether the kernel flagged the dump as interrupted.
    fn receive(&mut self, mut each: impl FnMut(u16, &[u8])) -> io::Result<bool> {
        let mut interrupted = false;
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut data = &self.buf[..n as usize];
            while data.len() >= NLMSG_HDRLEN {
                let len = u32_at(data, 0) as usize;
                if len < NLMSG_HDRLEN || len > data.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let ty = u16_at(data, 4);
                let flags = u16_at(data, 6);
                let seq = u32_at(data, 8);
                let body = &data[NLMSG_HDRLEN..len];
                data = &data[align(len).min(data.len())..];
                if seq != self.seq {
                    continue; // a late answer to an earlier request
                }
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                match ty {
                    NLMSG_DONE => return Ok(interrupted),
                    NLMSG_ERROR => {
                        let code = if body.len() >= 4 { i32_at(body, 0) } else { 0 };
                        if code == 0 {
                            continue;
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => each(ty, body),
                }
            }
        }
    }
}

/// A prepared request (header sequence number filled in at send time).
struct Request {
    bytes: Vec<u8>,
}

fn header(ty: u16, body_len: usize) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body_len;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // seq
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid
    b
}

/// `rtmsg` for `family` with table main, any protocol: the kernel's filter.
fn route_request(family: u8) -> Request {
    let mut b = header(RTM_GETROUTE, 12);
    // family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
    b.extend_from_slice(&[family, 0, 0, 0, MAIN_TABLE as u8, 0, 0, 0]);
    b.extend_from_slice(&0u32.to_ne_bytes());
    Request { bytes: b }
}

/// `ndmsg` of `family`, filtered by device. Neighbours take the device as NDA_IFINDEX
/// (strict checking wants ndm_ifindex 0); the FDB dump takes it in ndm_ifindex (read as
/// the bridge port, and as ifi_index by kernels without strict checking).
fn neigh_request(family: u8, device: u32) -> Request {
    let fdb = family == libc::AF_BRIDGE as u8;
    let attr = if fdb || device == 0 { 0 } else { 8 };
    let mut b = header(RTM_GETNEIGH, 12 + attr);
    b.extend_from_slice(&[family, 0, 0, 0]);
    let hdr_ifindex = if fdb { device } else { 0 };
    b.extend_from_slice(&hdr_ifindex.to_ne_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]); // state u16, flags, type
    if attr != 0 {
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&NDA_IFINDEX.to_ne_bytes());
        b.extend_from_slice(&device.to_ne_bytes());
    }
    Request { bytes: b }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    u32_at(b, at) as i32
}

/// The attributes after a fixed header of `fixed` bytes, as (type, payload).
fn attrs(body: &[u8], fixed: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = body.get(fixed..).unwrap_or_default();
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16_at(rest, 0));
        if len < 4 || len > rest.len() {
            return None;
        }
        // Strip NLA_F_NESTED / NLA_F_NET_BYTEORDER.
        let ty = u16_at(rest, 2) & 0x3fff;
        let payload = &rest[4..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((ty, payload))
    })
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(|a| IpAddr::V4(a.into())),
        16 => <[u8; 16]>::try_from(b).ok().map(|a| IpAddr::V6(a.into())),
        _ => None,
    }
}

fn u32_of(b: &[u8]) -> Option<u32> {
    (b.len() >= 4).then(|| u32_at(b, 0))
}

fn mac_of(b: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(b).ok().map(Mac)
}

/// An `RTM_NEWROUTE` body: rtmsg (12 bytes) + attributes.
fn parse_route(body: &[u8]) -> Option<ActualRoute> {
    if body.len() < 12 {
        return None;
    }
    let family = body[0];
    let dst_len = body[1];
    let mut table = u32::from(body[4]);
    let protocol = body[5];
    let flags = u32_at(body, 8);
    let (mut dst, mut gateway, mut oif, mut priority) = (None, None, None, 0);
    for (ty, p) in attrs(body, 12) {
        match ty {
            RTA_DST => dst = ip_of(p),
            RTA_GATEWAY => gateway = ip_of(p),
            RTA_OIF => oif = u32_of(p),
            RTA_PRIORITY => priority = u32_of(p).unwrap_or(0),
            RTA_TABLE => table = u32_of(p).unwrap_or(table),
            _ => {}
        }
    }
    let dst = dst.unwrap_or(if family == libc::AF_INET6 as u8 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    Some(ActualRoute {
        table,
        protocol,
        dst: IpNet::new(dst, dst_len).ok()?,
        gateway,
        oif,
        onlink: flags & RTNH_F_ONLINK != 0,
        priority,
    })
}

/// The (ifindex, state, destination, lladdr) of an `RTM_NEWNEIGH` body: ndmsg (12 bytes)
/// + attributes.
fn neigh_fields(body: &[u8]) -> Option<(u32, u16, Option<IpAddr>, Option<Mac>)> {
    if body.len() < 12 {
        return None;
    }
    let ifindex = u32_at(body, 4);
    let state = u16_at(body, 8);
    let (mut dst, mut mac) = (None, None);
    for (ty, p) in attrs(body, 12) {
        match ty {
            NDA_DST => dst = ip_of(p),
            NDA_LLADDR => mac = mac_of(p),
            _ => {}
        }
    }
    Some((ifindex, state, dst, mac))
}

fn parse_neigh(body: &[u8]) -> Option<ActualNeigh> {
    let (ifindex, state, ip, mac) = neigh_fields(body)?;
    Some(ActualNeigh {
        ifindex,
        ip: ip?,
        mac,
        permanent: state == NUD_PERMANENT,
    })
}

fn parse_fdb(body: &[u8]) -> Option<ActualFdb> {
    let (ifindex, _, dst, mac) = neigh_fields(body)?;
    Some(ActualFdb {
        ifindex,
        mac: mac?,
        dst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(payload);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn parses_an_onlink_route_with_table_attribute() {
        let mut body = vec![2, 24, 0, 0, 254, 87, 0, 1];
        body.extend_from_slice(&RTNH_F_ONLINK.to_ne_bytes());
        body.extend(attr(RTA_TABLE, &254u32.to_ne_bytes()));
        body.extend(attr(RTA_DST, &[10, 244, 2, 0]));
        body.extend(attr(RTA_GATEWAY, &[10, 244, 2, 0]));
        body.extend(attr(RTA_OIF, &7u32.to_ne_bytes()));
        let r = parse_route(&body).unwrap();
        assert_eq!(
            r,
            ActualRoute {
                table: 254,
                protocol: 87,
                dst: "10.244.2.0/24".parse().unwrap(),
                gateway: Some("10.244.2.0".parse().unwrap()),
                oif: Some(7),
                onlink: true,
                priority: 0,
            }
        );
    }

    #[test]
    fn parses_neighbours_and_fdb_entries() {
        let mut body = vec![2, 0, 0, 0];
        body.extend_from_slice(&9u32.to_ne_bytes());
        body.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
        body.extend_from_slice(&[0, 1]);
        body.extend(attr(NDA_DST, &[10, 244, 3, 0]));
        body.extend(attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 3]));
        let n = parse_neigh(&body).unwrap();
        assert_eq!(
            (n.ifindex, n.ip, n.mac, n.permanent),
            (
                9,
                "10.244.3.0".parse().unwrap(),
                Some(Mac([2, 0, 0, 0, 0, 3])),
                true
            )
        );
        let f = parse_fdb(&body).unwrap();
        assert_eq!(f.dst, Some("10.244.3.0".parse().unwrap()));
        // Truncated bodies and attributes are ignored, not trusted.
        assert!(parse_neigh(&body[..8]).is_none());
        assert!(parse_route(&[2, 24]).is_none());
    }

    #[test]
    fn requests_carry_the_kernel_filters() {
        let r = route_request(libc::AF_INET as u8).bytes;
        assert_eq!(u32_at(&r, 0) as usize, r.len());
        // Main table, every protocol: peer validation needs the routes weft did not write.
        assert_eq!((r[16], r[20], r[21]), (libc::AF_INET as u8, 254, 0));
        let n = neigh_request(libc::AF_INET as u8, 5).bytes;
        assert_eq!(u32_at(&n, 20), 0, "strict checking wants ndm_ifindex 0");
        assert_eq!((u16_at(&n, 30), u32_at(&n, 32)), (NDA_IFINDEX, 5));
        let f = neigh_request(libc::AF_BRIDGE as u8, 5).bytes;
        assert_eq!((f.len(), u32_at(&f, 20)), (28, 5));
    }
}
