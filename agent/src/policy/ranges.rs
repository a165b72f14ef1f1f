//! Address and port ranges as nftables interval sets hold them: sorted, no two
//! overlapping (the kernel refuses overlaps). Adjacent ranges are deliberately not
//! merged: pod IPs are handed out in sequence, and merging neighbours would turn one pod
//! change into a rewrite of a range covering many others.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::model::Protocol;

/// An inclusive span of addresses of one family, as integers.
type Span = (u128, u128);

fn span(net: &IpNet) -> Span {
    match net {
        IpNet::V4(n) => (
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Sorts and merges overlapping (not merely adjacent) spans.
fn normalize(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for (lo, hi) in spans {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `spans` without `cut`.
fn subtract(spans: Vec<Span>, cut: Span) -> Vec<Span> {
    let mut out = Vec::with_capacity(spans.len() + 1);
    for (lo, hi) in spans {
        if hi < cut.0 || lo > cut.1 {
            out.push((lo, hi));
            continue;
        }
        if lo < cut.0 {
            out.push((lo, cut.0 - 1));
        }
        if hi > cut.1 {
            out.push((cut.1 + 1, hi));
        }
    }
    out
}

/// Addresses of both families as interval-set elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrRanges {
    pub v4: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub v6: Vec<(Ipv6Addr, Ipv6Addr)>,
}

impl AddrRanges {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
            let i = ranges.partition_point(|r| r.1 < x);
            ranges.get(i).is_some_and(|r| r.0 <= x)
        }
        match ip {
            IpAddr::V4(a) => find(&self.v4, a),
            IpAddr::V6(a) => find(&self.v6, a),
        }
    }
}

/// Collects addresses and CIDRs (with exceptions) into [`AddrRanges`].
#[derive(Clone, Debug, Default)]
pub struct AddrRangesBuilder {
    v4: Vec<Span>,
    v6: Vec<Span>,
}

impl AddrRangesBuilder {
    pub fn add_addr(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => self.v4.push((u32::from(a) as u128, u32::from(a) as u128)),
            IpAddr::V6(a) => self.v6.push((u128::from(a), u128::from(a))),
        }
    }

    /// Adds `net` less every network in `except`; the caller checks that they are of
    /// `net`'s family.
    pub fn add_net_except(&mut self, net: &IpNet, except: &[IpNet]) {
        let mut spans = vec![span(net)];
        for e in except {
            spans = subtract(spans, span(e));
        }
        match net {
            IpNet::V4(_) => self.v4.extend(spans),
            IpNet::V6(_) => self.v6.extend(spans),
        }
    }

    pub fn build(self) -> AddrRanges {
        AddrRanges {
            v4: normalize(self.v4)
                .into_iter()
                .map(|(lo, hi)| (Ipv4Addr::from(lo as u32), Ipv4Addr::from(hi as u32)))
                .collect(),
            v6: normalize(self.v6)
                .into_iter()
                .map(|(lo, hi)| (Ipv6Addr::from(lo), Ipv6Addr::from(hi)))
                .collect(),
        }
    }
}

/// A protocol and an inclusive destination port range (`first == last` for one port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

/// Sorts port ranges and merges overlapping ones of the same protocol.
pub fn normalize_ports(mut ports: Vec<PortRange>) -> Vec<PortRange> {
    ports.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ports.len());
    for p in ports {
        match out.last_mut() {
            Some(last) if last.protocol == p.protocol && p.first <= last.last => {
                last.last = last.last.max(p.last)
            }
            _ => out.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn v4(a: &str, b: &str) -> (Ipv4Addr, Ipv4Addr) {
        (a.parse().unwrap(), b.parse().unwrap())
    }

    #[test]
    fn except_cuts_holes_and_addresses_inside_are_absorbed() {
        let mut b = AddrRangesBuilder::default();
        b.add_net_except(
            &net("172.17.0.0/16"),
            &[net("172.17.1.0/24"), net("172.17.1.128/25")],
        );
        b.add_addr("172.17.1.5".parse().unwrap()); // in the hole: stays
        b.add_addr("172.17.9.9".parse().unwrap()); // covered: absorbed
        b.add_addr("10.0.0.2".parse().unwrap());
        b.add_addr("10.0.0.3".parse().unwrap()); // adjacent: kept apart
        let r = b.build();
        assert_eq!(
            r.v4,
            vec![
                v4("10.0.0.2", "10.0.0.2"),
                v4("10.0.0.3", "10.0.0.3"),
                v4("172.17.0.0", "172.17.0.255"),
                v4("172.17.1.5", "172.17.1.5"),
                v4("172.17.2.0", "172.17.255.255"),
            ]
        );
        assert!(r.contains("172.17.200.1".parse().unwrap()));
        assert!(r.contains("172.17.1.5".parse().unwrap()));
        assert!(!r.contains("172.17.1.6".parse().unwrap()));
        assert!(!r.contains("fd00::1".parse().unwrap()));
    }

    #[test]
    fn whole_families_and_except_at_the_edges() {
        let mut b = AddrRangesBuilder::default();
        b.add_net_except(&net("0.0.0.0/0"), &[net("0.0.0.0/8")]);
        b.add_net_except(&net("::/0"), &[net("ffff::/16")]);
        let r = b.build();
        assert_eq!(r.v4, vec![v4("1.0.0.0", "255.255.255.255")]);
        assert_eq!(
            r.v6,
            vec![(
                "::".parse().unwrap(),
                "fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()
            )]
        );
        let mut whole = AddrRangesBuilder::default();
        whole.add_net_except(&net("10.0.0.0/8"), &[net("10.0.0.0/8")]);
        assert!(whole.build().is_empty());
    }

    #[test]
    fn ports_merge_per_protocol() {
        let p = |protocol, first, last| PortRange {
            protocol,
            first,
            last,
        };
        let got = normalize_ports(vec![
            p(Protocol::Tcp, 80, 80),
            p(Protocol::Udp, 53, 53),
            p(Protocol::Tcp, 70, 90),
            p(Protocol::Tcp, 91, 91),
            p(Protocol::Udp, 53, 53),
        ]);
        assert_eq!(
            got,
            vec![
                p(Protocol::Tcp, 70, 90),
                p(Protocol::Tcp, 91, 91),
                p(Protocol::Udp, 53, 53)
            ]
        );
    }
}
