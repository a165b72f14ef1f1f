//! IP address management: a pure allocator ([`alloc`]) and its on-disk store ([`store`]).

pub mod alloc;
pub mod store;

pub use alloc::Pool;
pub use store::{AllocError, Owner, Store};

use weft_common::subnet_file::NodeSubnet;

/// The node's pools, in the subnet file's order (IPv4 first when dual-stack).
pub fn pools(subnet: &NodeSubnet) -> Vec<Pool> {
    subnet
        .node_cidrs
        .iter()
        .zip(&subnet.gateways)
        .map(|(net, gw)| Pool {
            net: *net,
            gateway: *gw,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::IpAddr;

    fn pool(net: &str) -> Pool {
        let net: ipnet::IpNet = net.parse().unwrap();
        Pool {
            net,
            gateway: weft_common::subnet_file::gateway_for(&net),
        }
    }

    #[test]
    fn persists_and_round_robins_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let pools = [pool("10.1.0.0/29"), pool("fd00::/64")];
        let a = Owner::new("a", "eth0");
        let got = Store::lock(dir.path())
            .unwrap()
            .allocate(&pools, &[], &a)
            .unwrap();
        assert_eq!(
            got,
            vec![
                "10.1.0.2".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
        // Reopen (a new process): the allocation is still there and the next one moves on.
        let s = Store::lock(dir.path()).unwrap();
        assert_eq!(s.owner_of(got[0]).unwrap(), Some(a.clone()));
        let b = Owner::new("b", "eth0");
        let got_b = s.allocate(&pools, &[], &b).unwrap();
        assert_eq!(got_b[0].to_string(), "10.1.0.3");
        // Released .2 is not reused at once.
        assert_eq!(s.release_owner(&a).unwrap().len(), 2);
        let got_c = s.allocate(&pools, &[], &Owner::new("c", "eth0")).unwrap();
        assert_eq!(got_c[0].to_string(), "10.1.0.4");
        assert_eq!(got_c[1].to_string(), "fd00::4");
    }

    #[test]
    fn last_reserved_is_rewritten_in_place_without_stale_tails() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::lock(dir.path()).unwrap();
        let v6: IpAddr = "fd00:1234:5678:9abc:def0:1234:5678:9abc".parse().unwrap();
        let v4: IpAddr = "10.1.0.2".parse().unwrap();
        s.set_last_reserved(&[Some(v6), Some(v4)]).unwrap();
        assert_eq!(s.last_reserved(2), vec![Some(v6), Some(v4)]);
        // A shorter address over a longer one, and fewer pools than before.
        s.set_last_reserved(&[Some(v4)]).unwrap();
        assert_eq!(s.last_reserved(2), vec![Some(v4), None]);
        s.set_last_reserved(&[None, Some(v6)]).unwrap();
        assert_eq!(s.last_reserved(2), vec![None, Some(v6)]);
        // Garbage (a torn write from some other tool) is only a lost hint.
        std::fs::write(dir.path().join("last_reserved"), "not an address\n").unwrap();
        assert_eq!(s.last_reserved(1), vec![None]);
    }

    #[test]
    fn oversized_store_files_are_refused_or_ignored_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let pools = [pool("10.1.0.0/24")];
        let s = Store::lock(dir.path()).unwrap();
        let ip = s.allocate(&pools, &[], &Owner::new("a", "eth0")).unwrap()[0];
        // A record that weft did not write: a clear error naming it, not a huge read.
        let big = "x".repeat(1 << 20);
        std::fs::write(dir.path().join(ip.to_string()), &big).unwrap();
        let e = s.owner_of(ip).unwrap_err().to_string();
        assert!(
            e.contains(&ip.to_string()) && e.contains("4096 bytes"),
            "{e}"
        );
        assert!(s.release_owner(&Owner::new("a", "eth0")).is_err());
        // `last_reserved` is a hint: an oversized one is ignored, then rewritten.
        std::fs::write(dir.path().join("last_reserved"), &big).unwrap();
        assert_eq!(s.last_reserved(1), vec![None]);
        s.set_last_reserved(&[Some(ip)]).unwrap();
        assert_eq!(s.last_reserved(1), vec![Some(ip)]);
    }

    #[test]
    fn exhaustion_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pools = [pool("10.1.0.0/30")]; // one host address besides the gateway
        let s = Store::lock(dir.path()).unwrap();
        s.allocate(&pools, &[], &Owner::new("a", "eth0")).unwrap();
        let e = s
            .allocate(&pools, &[], &Owner::new("b", "eth0"))
            .unwrap_err();
        assert!(matches!(e, AllocError::Exhausted(_)), "{e}");
        assert!(e.to_string().contains("10.1.0.0/30"));
        assert_eq!(s.used().unwrap().len(), 1);
    }

    #[test]
    fn requested_ip() {
        let dir = tempfile::tempdir().unwrap();
        let pools = [pool("10.1.0.0/24"), pool("fd00::/64")];
        let s = Store::lock(dir.path()).unwrap();
        let want: IpAddr = "10.1.0.77".parse().unwrap();
        let got = s
            .allocate(&pools, &[want], &Owner::new("a", "eth0"))
            .unwrap();
        assert_eq!(got[0], want);
        assert_eq!(got[1].to_string(), "fd00::2");
        let e = s
            .allocate(&pools, &[want], &Owner::new("b", "eth0"))
            .unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        let e = s
            .allocate(
                &pools,
                &["10.9.0.1".parse().unwrap()],
                &Owner::new("b", "eth0"),
            )
            .unwrap_err();
        assert!(e.to_string().contains("not in the node CIDR"), "{e}");
        // A failed request reserved nothing.
        assert_eq!(s.used().unwrap().len(), 2);
    }

    #[test]
    fn gc_and_rollback_release_only_what_they_should() {
        let dir = tempfile::tempdir().unwrap();
        let pools = [pool("10.1.0.0/24")];
        let s = Store::lock(dir.path()).unwrap();
        let a = Owner::new("a", "eth0");
        let b = Owner::new("b", "eth0");
        let ip_a = s.allocate(&pools, &[], &a).unwrap()[0];
        let ip_b = s.allocate(&pools, &[], &b).unwrap()[0];
        assert!(!s.release_ip(ip_a, &b).unwrap(), "not b's address");
        let keep: HashSet<Owner> = [b.clone()].into();
        let released = s.release_all_but(&keep).unwrap();
        assert_eq!(released, vec![(ip_a, a)]);
        assert_eq!(s.used().unwrap(), [ip_b].into());
    }

    #[test]
    fn many_threads_allocating_at_once_get_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let pools = vec![pool("10.1.0.0/24")];
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let dir = dir.path().to_owned();
                let pools = pools.clone();
                std::thread::spawn(move || {
                    (0..15)
                        .map(|i| {
                            let s = Store::lock(&dir).unwrap();
                            s.allocate(&pools, &[], &Owner::new(&format!("c{t}-{i}"), "eth0"))
                                .unwrap()[0]
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<IpAddr> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let distinct: HashSet<_> = all.iter().copied().collect();
        assert_eq!(all.len(), 240);
        assert_eq!(distinct.len(), 240, "duplicates handed out");
        assert_eq!(Store::lock(dir.path()).unwrap().used().unwrap(), distinct);
    }
}
