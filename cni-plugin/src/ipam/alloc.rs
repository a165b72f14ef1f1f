//! The pure allocator: which address to hand out next from a node CIDR.
//!
//! Round-robin: the search starts just after the last address handed out, so a released
//! address is not reused at once. The network address, the gateway and the broadcast
//! (all-ones; also skipped for IPv6) are never handed out.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

/// Why a requested address cannot be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    OutsidePool,
    Reserved,
    InUse,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::OutsidePool => "is not in the node CIDR",
            Refusal::Reserved => "is the network, gateway or broadcast address",
            Refusal::InUse => "is already in use",
        })
    }
}

/// One node CIDR with its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub net: IpNet,
    pub gateway: IpAddr,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Pool {
    fn ip_at(&self, n: u128) -> IpAddr {
        match self.net {
            IpNet::V4(_) => IpAddr::V4((n as u32).into()),
            IpNet::V6(_) => IpAddr::V6(n.into()),
        }
    }

    /// First and last host address (network+1 ..= broadcast-1), or `None` if the CIDR
    /// has no host addresses.
    fn host_range(&self) -> Option<(u128, u128)> {
        let lo = to_u128(self.net.network()) + 1;
        let hi = to_u128(self.net.broadcast()).checked_sub(1)?;
        (lo <= hi).then_some((lo, hi))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(&ip)
    }

    /// Whether `ip` may be handed out at all (ignoring who holds it).
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        if !self.net.contains(&ip) {
            return Err(Refusal::OutsidePool);
        }
        let n = to_u128(ip);
        match self.host_range() {
            Some((lo, hi)) if (lo..=hi).contains(&n) && ip != self.gateway => Ok(()),
            _ => Err(Refusal::Reserved),
        }
    }

    /// Checks a specific request against the addresses in use.
    pub fn check_requested(&self, ip: IpAddr, used: &HashSet<IpAddr>) -> Result<(), Refusal> {
        self.check(ip)?;
        if used.contains(&ip) {
            return Err(Refusal::InUse);
        }
        Ok(())
    }

    /// The next free address after `last` (round-robin), or `None` when the pool is full.
    /// Looks at no more than `used.len() + 2` candidates, so it is cheap for an IPv6 /64.
    pub fn next_free(&self, last: Option<IpAddr>, used: &HashSet<IpAddr>) -> Option<IpAddr> {
        let (lo, hi) = self.host_range()?;
        let size = hi - lo + 1;
        let start = match last.map(to_u128) {
            Some(l) if (lo..=hi).contains(&l) => {
                if l == hi {
                    lo
                } else {
                    l + 1
                }
            }
            _ => lo,
        };
        let tries = size.min(used.len() as u128 + 2);
        let mut n = start;
        for _ in 0..tries {
            let ip = self.ip_at(n);
            if ip != self.gateway && !used.contains(&ip) {
                return Some(ip);
            }
            n = if n == hi { lo } else { n + 1 };
        }
        None
    }

    /// Whether at least one address is free.
    pub fn has_free(&self, used: &HashSet<IpAddr>) -> bool {
        self.next_free(None, used).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(net: &str) -> Pool {
        let net: IpNet = net.parse().unwrap();
        Pool {
            net,
            gateway: weft_common::subnet_file::gateway_for(&net),
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_gateway_broadcast_and_exhausts() {
        let p = pool("10.0.0.0/29"); // hosts .1-.6, .1 is the gateway
        let mut used = HashSet::new();
        let mut last = None;
        let mut got = Vec::new();
        while let Some(a) = p.next_free(last, &used) {
            used.insert(a);
            last = Some(a);
            got.push(a.to_string());
        }
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert!(!p.has_free(&used));
    }

    #[test]
    fn round_robin_does_not_reuse_a_released_address_at_once() {
        let p = pool("10.0.0.0/24");
        let mut used: HashSet<IpAddr> = [ip("10.0.0.2"), ip("10.0.0.3")].into();
        used.remove(&ip("10.0.0.2"));
        assert_eq!(
            p.next_free(Some(ip("10.0.0.3")), &used),
            Some(ip("10.0.0.4"))
        );
        // Wraps after the last host, skipping the gateway.
        assert_eq!(
            p.next_free(Some(ip("10.0.0.254")), &used),
            Some(ip("10.0.0.2"))
        );
        // A `last` outside the pool (CIDR changed) restarts at the bottom.
        assert_eq!(
            p.next_free(Some(ip("10.9.0.7")), &used),
            Some(ip("10.0.0.2"))
        );
    }

    #[test]
    fn ipv6_is_cheap_and_skips_all_ones() {
        let p = pool("fd00::/64");
        assert_eq!(p.next_free(None, &HashSet::new()), Some(ip("fd00::2")));
        assert_eq!(
            p.next_free(Some(ip("fd00::ffff:ffff:ffff:fffe")), &HashSet::new()),
            Some(ip("fd00::2"))
        );
        assert_eq!(
            p.check(ip("fd00::ffff:ffff:ffff:ffff")),
            Err(Refusal::Reserved)
        );
    }

    #[test]
    fn requested_addresses() {
        let p = pool("10.0.0.0/24");
        let used: HashSet<IpAddr> = [ip("10.0.0.7")].into();
        assert_eq!(p.check_requested(ip("10.0.0.8"), &used), Ok(()));
        assert_eq!(
            p.check_requested(ip("10.0.0.7"), &used),
            Err(Refusal::InUse)
        );
        assert_eq!(
            p.check_requested(ip("10.0.0.1"), &used),
            Err(Refusal::Reserved)
        );
        assert_eq!(
            p.check_requested(ip("10.0.0.0"), &used),
            Err(Refusal::Reserved)
        );
        assert_eq!(
            p.check_requested(ip("10.0.0.255"), &used),
            Err(Refusal::Reserved)
        );
        assert_eq!(
            p.check_requested(ip("10.0.1.5"), &used),
            Err(Refusal::OutsidePool)
        );
    }

    #[test]
    fn tiny_pools() {
        assert_eq!(
            pool("10.0.0.0/30").next_free(None, &HashSet::new()),
            Some(ip("10.0.0.2"))
        );
        let p32 = Pool {
            net: "10.0.0.5/32".parse().unwrap(),
            gateway: ip("10.0.0.5"),
        };
        assert_eq!(p32.next_free(None, &HashSet::new()), None);
    }
}
