use super::*;
use crate::peers::Age;
use weft_common::annotations::Vtep;

fn rules() -> Rules {
    Rules {
        cluster_cidrs: vec![net("10.244.0.0/16"), net("fd00:10:244::/56")],
        subnet_size_v4: 24,
        subnet_size_v6: 64,
        service_cidrs: vec![net("10.96.0.0/16")],
        underlay_net: Some(net("192.168.250.11/24")),
        underlay_ip: Some(ip("192.168.250.11")),
        own_pod_cidrs: vec![net("10.244.1.0/24")],
        own_mac: Some(Mac([2, 0, 0, 0, 0, 1])),
        vni: 1,
        foreign_routes: vec![
            net("0.0.0.0/0"),
            net("192.168.250.0/24"),
            net("172.17.0.0/16"),
        ],
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Node `n`: pod CIDR 10.244.n.0/24, MAC 02:..:n, public IP 192.168.250.n, created at n.
fn peer(name: &str, n: u8) -> Peer {
    Peer {
        name: name.into(),
        pod_cidrs: vec![net(&format!("10.244.{n}.0/24"))],
        vtep: Some(Vtep {
            mac: Mac([2, 0, 0, 0, 0, n]),
            public_ip: ip(&format!("192.168.250.{n}")),
        }),
        node_ip: Some(ip(&format!("192.168.250.{n}"))),
        age: Age {
            created: Some(1_700_000_000 + i64::from(n)),
            uid: format!("uid-{n}"),
        },
        vni: Some("1".into()),
    }
}

fn verdict(p: Peer) -> Result<(), (Reason, String)> {
    let input = [p];
    let (ok, mut rejected) = validate(&input, &rules());
    match rejected.pop() {
        None => {
            assert_eq!(ok.len(), 1);
            Ok(())
        }
        Some(r) => Err((r.reason, r.detail)),
    }
}

fn rejected_for(p: Peer, reason: Reason, needle: &str) {
    let name = p.name.clone();
    match verdict(p) {
        Err((r, detail)) => {
            assert_eq!(r, reason, "{name}: {detail}");
            assert!(
                detail.contains(needle),
                "{name}: {detail:?} lacks {needle:?}"
            );
        }
        Ok(()) => panic!("{name} was accepted"),
    }
}

fn with_cidr(cidr: &str) -> Peer {
    Peer {
        pod_cidrs: vec![net(cidr)],
        ..peer("p", 2)
    }
}

#[test]
fn an_honest_peer_passes() {
    assert_eq!(verdict(peer("a", 2)), Ok(()));
    let dual = Peer {
        pod_cidrs: vec![net("10.244.2.0/24"), net("fd00:10:244:2::/64")],
        ..peer("a", 2)
    };
    assert_eq!(verdict(dual), Ok(()));
    // Hand-made peers (tests, benchmarks) carry no VNI or age.
    let bare = Peer {
        vni: None,
        age: Age::default(),
        ..peer("a", 2)
    };
    assert_eq!(verdict(bare), Ok(()));
}

#[test]
fn pod_cidrs_must_be_a_normalised_node_subnet_of_the_cluster() {
    use Reason::*;
    // The findings: the underlay subnet, half of IPv4, the API server's and Service ranges.
    rejected_for(
        with_cidr("192.168.250.0/24"),
        InvalidPodCidr,
        "outside the cluster",
    );
    rejected_for(
        with_cidr("128.0.0.0/1"),
        InvalidPodCidr,
        "outside the cluster",
    );
    rejected_for(
        with_cidr("10.96.0.0/24"),
        InvalidPodCidr,
        "outside the cluster",
    );
    rejected_for(
        with_cidr("224.0.0.0/24"),
        InvalidPodCidr,
        "outside the cluster",
    );
    rejected_for(with_cidr("10.244.2.7/24"), InvalidPodCidr, "host bits");
    rejected_for(with_cidr("10.244.0.0/17"), InvalidPodCidr, "not a /24");
    rejected_for(with_cidr("10.244.2.0/25"), InvalidPodCidr, "not a /24");
    rejected_for(with_cidr("fd00:10:244:2::/80"), InvalidPodCidr, "not a /64");
    rejected_for(
        with_cidr("fd00:99::/64"),
        InvalidPodCidr,
        "outside the cluster",
    );
    rejected_for(
        with_cidr("10.244.1.0/24"),
        OverlappingPodCidr,
        "this node's",
    );
    let two_v4 = Peer {
        pod_cidrs: vec![net("10.244.2.0/24"), net("10.244.3.0/24")],
        ..peer("p", 2)
    };
    rejected_for(two_v4, InvalidPodCidr, "one per address family");
    let none = Peer {
        pod_cidrs: vec![],
        ..peer("p", 2)
    };
    rejected_for(none, InvalidPodCidr, "no pod CIDR");
}

#[test]
fn pod_cidrs_must_not_touch_the_underlay_services_or_foreign_routes() {
    // A cluster CIDR that (wrongly) covers the underlay, the Services and a local route.
    let mut r = rules();
    r.cluster_cidrs = vec![net("10.0.0.0/8")];
    r.underlay_net = Some(net("10.1.0.5/24"));
    r.service_cidrs = vec![net("10.96.0.0/12")];
    r.foreign_routes = vec![net("0.0.0.0/0"), net("10.50.0.0/16"), net("10.60.7.0/28")];
    let check_with = |r: &Rules, cidr: &str| {
        let (_, rej) = validate(&[with_cidr(cidr)], r);
        rej.first().map(|x| (x.reason, x.detail.clone()))
    };
    let check = |cidr: &str| check_with(&r, cidr);
    let underlay = check("10.1.0.0/24").unwrap();
    assert!(
        underlay.1.contains("underlay network 10.1.0.0/24"),
        "{underlay:?}"
    );
    assert!(check("10.97.0.0/24").unwrap().1.contains("Service CIDR"));
    let inside_route = check("10.50.3.0/24").unwrap();
    assert_eq!(inside_route.0, Reason::OverlappingPodCidr);
    assert!(inside_route.1.contains("10.50.0.0/16"), "{inside_route:?}");
    assert!(check("10.60.7.0/24").unwrap().1.contains("10.60.7.0/28"));
    assert_eq!(
        check("10.70.0.0/24"),
        None,
        "the default route does not count"
    );
    // A guard route covering the whole cluster CIDR does not count either.
    let mut guarded = r.clone();
    guarded.foreign_routes.push(net("10.0.0.0/8"));
    assert_eq!(check_with(&guarded, "10.70.0.0/24"), None);
}

#[test]
fn vtep_values_must_be_usable() {
    use Reason::*;
    let with_mac = |m: [u8; 6]| {
        let mut p = peer("p", 2);
        p.vtep.as_mut().unwrap().mac = Mac(m);
        p
    };
    rejected_for(with_mac([0; 6]), InvalidVtepMac, "all zero");
    rejected_for(
        with_mac([0xff; 6]),
        InvalidVtepMac,
        "multicast or broadcast",
    );
    rejected_for(with_mac([1, 0, 0x5e, 0, 0, 1]), InvalidVtepMac, "multicast");
    let with_ip = |s: &str| {
        let mut p = peer("p", 2);
        p.vtep.as_mut().unwrap().public_ip = ip(s);
        p
    };
    for bad in [
        "0.0.0.0",
        "127.0.0.1",
        "239.1.1.1",
        "255.255.255.255",
        "::ffff:192.168.250.2",
        "fd01::2",
    ] {
        rejected_for(with_ip(bad), InvalidPublicIp, bad);
    }
    rejected_for(with_ip("192.168.250.11"), InvalidPublicIp, "older node's");
    let mut own_ip = peer("p", 2);
    own_ip.node_ip = Some(ip("192.168.250.11"));
    rejected_for(own_ip, InvalidPublicIp, "InternalIP");
    let mut own_mac = peer("p", 2);
    own_mac.vtep.as_mut().unwrap().mac = Mac([2, 0, 0, 0, 0, 1]);
    rejected_for(own_mac, InvalidVtepMac, "older node's");
}

#[test]
fn another_vni_is_rejected() {
    for v in ["2", "x", ""] {
        let p = Peer {
            vni: Some(v.into()),
            ..peer("p", 2)
        };
        rejected_for(p, Reason::VniMismatch, "this node uses 1");
    }
}

#[test]
fn duplicates_go_to_the_older_node_whatever_the_names() {
    let victim = peer("zz-victim", 5);
    // Named to sort first, created later, claiming the victim's CIDR.
    let mut thief = peer("aa-thief", 6);
    thief.pod_cidrs = victim.pod_cidrs.clone();
    // Copies the victim's MAC.
    let mut mac_thief = peer("ab-thief", 7);
    mac_thief.vtep.as_mut().unwrap().mac = victim.vtep.unwrap().mac;
    // Claims the victim's public IP.
    let mut ip_thief = peer("ac-thief", 8);
    ip_thief.vtep.as_mut().unwrap().public_ip = victim.vtep.unwrap().public_ip;
    let input = [thief, mac_thief, ip_thief, victim.clone()];
    let (ok, rej) = validate(&input, &rules());
    assert_eq!(ok, vec![&victim]);
    let got: Vec<(&str, Reason)> = rej.iter().map(|r| (r.node.as_str(), r.reason)).collect();
    assert_eq!(
        got,
        [
            ("aa-thief", Reason::DuplicatePodCidr),
            ("ab-thief", Reason::InvalidVtepMac),
            ("ac-thief", Reason::InvalidPublicIp),
        ]
    );
    // Same creation second: the UID decides, then the name; never the input order.
    let mut a = peer("b", 2);
    let mut b = peer("a", 3);
    b.pod_cidrs = a.pod_cidrs.clone();
    a.age.created = Some(10);
    b.age.created = Some(10);
    a.age.uid = "1".into();
    b.age.uid = "2".into();
    for input in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
        let (ok, rej) = validate(&input, &rules());
        assert_eq!(ok[0].name, "b");
        assert_eq!(rej[0].node, "a");
    }
}

#[test]
fn one_bad_peer_leaves_the_others_alone() {
    let mut bad = peer("bad", 3);
    bad.vtep.as_mut().unwrap().mac = Mac([0xff; 6]);
    let input = [peer("c", 4), bad, peer("a", 2)];
    let (ok, rej) = validate(&input, &rules());
    let names: Vec<&str> = ok.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "c"], "accepted peers come out sorted by name");
    assert_eq!(rej.len(), 1);
}

#[test]
fn own_pod_cidrs_get_the_same_checks() {
    let mut r = rules();
    r.own_pod_cidrs.clear();
    assert_eq!(check_own_pod_cidrs(&[net("10.244.1.0/24")], &r), Ok(()));
    let err = check_own_pod_cidrs(&[net("192.168.250.0/24")], &r).unwrap_err();
    assert!(err.contains("outside the cluster"), "{err}");
    r.cluster_cidrs = vec![net("192.168.0.0/16")];
    let err = check_own_pod_cidrs(&[net("192.168.250.0/24")], &r).unwrap_err();
    assert!(err.contains("underlay network"), "{err}");
}
