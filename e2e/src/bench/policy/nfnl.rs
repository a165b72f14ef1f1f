//! The kernel's own answer to "is this address in that nftables set?", by one nfnetlink
//! request (NFT_MSG_GETSETELEM with one key), without `nft`: a poll costs two syscalls
//! instead of a process and a whole cache fetch, so polling every millisecond neither
//! blurs the timing nor takes CPU from the agent being measured. For an interval set the
//! kernel answers with the range holding the key, as `nft get element` does.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use rtnetlink::sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use weft_agent::policy::nfnl::{align, attr, cstr};
use weft_common::netns::Netns;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETSETELEM: u16 = 13;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_INET: u8 = 1;
/// NFTA_TABLE_NAME, NFTA_SET_ELEM_LIST_TABLE, NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY and
/// NFTA_DATA_VALUE are all attribute 1 of their nest.
const ATTR_1: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;

/// A netfilter netlink socket of one network namespace.
pub struct Nft {
    socket: Socket,
    table: String,
    seq: u32,
}

impl Nft {
    /// A socket in netns `ns` (it stays there whichever thread uses it) for `inet table`.
    pub fn open(ns: &str, table: &str) -> Result<Nft> {
        let netns = Netns::open(format!("/var/run/netns/{ns}").as_ref())?;
        let socket = std::thread::scope(|s| {
            s.spawn(|| -> Result<Socket> {
                netns.enter()?;
                Ok(Socket::new(NETLINK_NETFILTER)?)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("netlink thread in {ns} panicked"))?
        })?;
        Ok(Nft {
            socket,
            table: table.into(),
            seq: 0,
        })
    }

    /// Whether the table exists.
    pub fn has_table(&mut self) -> Result<bool> {
        let attrs = attr(ATTR_1, &cstr(&self.table));
        self.get(NFT_MSG_GETTABLE, &attrs)
    }

    /// Whether `addr` is in set `set` (false when the set or the table is missing).
    pub fn contains(&mut self, set: &str, addr: IpAddr) -> Result<bool> {
        let key = match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let value = attr(ATTR_1, &key);
        let elem = attr(ATTR_1 | NLA_F_NESTED, &attr(ATTR_1 | NLA_F_NESTED, &value));
        let mut attrs = attr(ATTR_1, &cstr(&self.table));
        attrs.extend(attr(NFTA_SET_ELEM_LIST_SET, &cstr(set)));
        attrs.extend(attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &elem));
        self.get(NFT_MSG_GETSETELEM, &attrs)
    }

    /// Sends one get request: true when the kernel answers with the object, false when
    /// it answers ENOENT.
    fn get(&mut self, msg: u16, attrs: &[u8]) -> Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let mut buf = Vec::with_capacity(20 + attrs.len());
        let len = (16 + 4 + attrs.len()) as u32;
        buf.extend(len.to_ne_bytes());
        buf.extend(((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        buf.extend((NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend(self.seq.to_ne_bytes());
        buf.extend(0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, resource id 0.
        buf.extend([NFPROTO_INET, 0, 0, 0]);
        buf.extend(attrs);
        self.socket
            .send_to(&buf, &SocketAddr::new(0, 0), 0)
            .context("send an nfnetlink request")?;
        let mut found = false;
        loop {
            let (reply, _) = self.socket.recv_from_full()?;
            match read_reply(&reply, self.seq, &mut found)? {
                Some(0) => return Ok(found),
                Some(errno) if errno == -libc::ENOENT => return Ok(false),
                Some(errno) => bail!(
                    "nfnetlink get: {}",
                    std::io::Error::from_raw_os_error(-errno)
                ),
                None => {}
            }
        }
    }
}

/// Walks the messages of one datagram: sets `found` on an answer to request `seq`,
/// returns the errno of its acknowledgement once there.
fn read_reply(mut data: &[u8], seq: u32, found: &mut bool) -> Result<Option<i32>> {
    while data.len() >= 16 {
        let len = u32::from_ne_bytes(data[0..4].try_into()?) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into()?);
        let msg_seq = u32::from_ne_bytes(data[8..12].try_into()?);
        if len < 16 || len > data.len() {
            bail!("malformed netlink message");
        }
        if msg_seq == seq {
            if kind == NLMSG_ERROR {
                return Ok(Some(i32::from_ne_bytes(data[16..20].try_into()?)));
            }
            *found = true;
        }
        data = &data[align(len).min(data.len())..];
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Against `nft` in a throwaway netns: a plain set, an interval set holding a range
    /// and a single address, a missing set, a missing table.
    #[test]
    fn answers_as_nft_get_element_does() {
        if !weft_common::require_root("nfnl answers_as_nft_get_element_does") {
            return;
        }
        let ns = format!("wpnfnl{}", std::process::id());
        let run = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "{args:?}");
        };
        run(&["netns", "add", &ns]);
        let script = "add table inet t; \
            add set inet t plain { type ipv4_addr; }; add element inet t plain { 10.0.0.1 }; \
            add set inet t ranges { type ipv4_addr; flags interval; }; \
            add element inet t ranges { 10.1.0.5-10.1.0.9, 10.2.0.1 }; \
            add set inet t six { type ipv6_addr; }; add element inet t six { fd00::1 }";
        run(&["netns", "exec", &ns, "nft", script]);
        let result = std::panic::catch_unwind(|| {
            let mut nft = Nft::open(&ns, "t").unwrap();
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();
            assert!(nft.has_table().unwrap());
            assert!(nft.contains("plain", ip("10.0.0.1")).unwrap());
            assert!(!nft.contains("plain", ip("10.0.0.2")).unwrap());
            for inside in ["10.1.0.5", "10.1.0.7", "10.1.0.9", "10.2.0.1"] {
                assert!(nft.contains("ranges", ip(inside)).unwrap(), "{inside}");
            }
            for outside in ["10.1.0.4", "10.1.0.10", "10.2.0.2"] {
                assert!(!nft.contains("ranges", ip(outside)).unwrap(), "{outside}");
            }
            assert!(nft.contains("six", ip("fd00::1")).unwrap());
            assert!(!nft.contains("missing", ip("10.0.0.1")).unwrap());
            assert!(!Nft::open(&ns, "none").unwrap().has_table().unwrap());
        });
        run(&["netns", "del", &ns]);
        result.unwrap();
    }
}
