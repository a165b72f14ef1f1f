//! ADD / CHECK / DEL / GC / STATUS in real network namespaces, as root.

mod common;

use common::{eventually, run, with_prev, Net, Ns};
use serde_json::json;
use weft_common::require_root;

fn ping(ns: &Ns, addr: &str) -> bool {
    ns.exec(&["ping", "-c3", "-i0.2", "-W1", addr])
        .status
        .success()
}

#[test]
fn two_pods_on_one_bridge_ping_each_other_and_the_gateway() {
    if !require_root("two_pods_ping") {
        return;
    }
    let net = Net::new(1, 24);
    let (a, b) = (Ns::new(), Ns::new());
    let ra = net.add("1.1.0", "pod-a", &a, "eth0");
    let rb = net.add("1.1.0", "pod-b", &b, "eth0");
    let ip_a = ra["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let ip_b = rb["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let ip6_b = rb["ips"][1]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(ip_a, ip_b);
    assert!(ping(&a, &net.gw4), "pod a -> gateway");
    assert!(ping(&a, &ip_b), "pod a -> pod b");
    assert!(ping(&b, &ip_a), "pod b -> pod a");
    assert!(
        eventually(5, || a
            .exec(&["ping", "-6", "-c1", "-W1", &ip6_b])
            .status
            .success()),
        "pod a -> pod b over IPv6"
    );

    // The result describes what was made.
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["interfaces"][0]["name"], net.bridge.as_str());
    let host = ra["interfaces"][1]["name"].as_str().unwrap();
    assert_eq!(ra["interfaces"][2]["sandbox"], a.path.as_str());
    assert_eq!(ra["ips"][0]["gateway"], net.gw4.as_str());
    assert_eq!(ra["ips"][0]["interface"], 2);
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(ra["routes"][1]["dst"], "::/0");
    let link = String::from_utf8(a.exec(&["ip", "-d", "link", "show", "eth0"]).stdout).unwrap();
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(
        link.contains(ra["interfaces"][2]["mac"].as_str().unwrap()),
        "{link}"
    );
    let hl = common::ip(&["-d", "link", "show", host]);
    assert!(
        hl.contains("hairpin on")
            && hl.contains("mtu 1400")
            && hl.contains(&format!("master {}", net.bridge)),
        "{hl}"
    );
    assert!(
        hl.contains(ra["interfaces"][1]["mac"].as_str().unwrap()),
        "{hl}"
    );
    // The host end is up, has one queue pair (no RCU wait at creation) and no IPv6
    // link-local address (a bridge port needs none).
    assert!(
        hl.contains("state UP")
            && hl.contains("addrgenmode none")
            && hl.contains("numtxqueues 1 numrxqueues 1"),
        "{hl}"
    );
    assert!(
        common::ip(&["-6", "addr", "show", "dev", host])
            .trim()
            .is_empty(),
        "the host veth has no IPv6 address"
    );
    let addrs = String::from_utf8(
        a.exec(&["ip", "-6", "addr", "show", "eth0", "scope", "global"])
            .stdout,
    )
    .unwrap();
    assert!(
        addrs.contains("nodad") && !addrs.contains("tentative"),
        "{addrs}"
    );
    let log = std::fs::read_to_string(net.dir.path().join("weft.log")).unwrap();
    assert!(log.contains("pod-a") && log.contains("added"), "{log}");
}

#[test]
fn check_passes_then_fails_after_the_route_is_broken() {
    if !require_root("check") {
        return;
    }
    let net = Net::new(2, 24);
    let ns = Ns::new();
    let env = [
        ("CNI_CONTAINERID", "chk"),
        ("CNI_NETNS", ns.path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let r = run("ADD", &net.conf("1.0.0"), &env).ok();
    let conf = with_prev(net.conf("1.0.0"), &r);
    run("CHECK", &conf, &env).ok_empty();
    // CHECK is not in 0.3.x.
    assert!(run("CHECK", &with_prev(net.conf("0.3.1"), &r), &env)
        .err(1)
        .contains("0.4.0"));
    assert!(ns.exec(&["ip", "route", "del", "default"]).status.success());
    let msg = run("CHECK", &conf, &env).err(104);
    assert!(msg.contains("route 0.0.0.0/0"), "{msg}");
    // A wrong MAC in prevResult is named too.
    let mut bad = r.clone();
    bad["interfaces"][2]["mac"] = json!("02:00:00:00:00:99");
    assert!(run("CHECK", &with_prev(net.conf("1.0.0"), &bad), &env)
        .err(104)
        .contains("MAC"));
    // The IP no longer recorded for the container.
    let ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    ns.exec(&["ip", "route", "add", "default", "via", &net.gw4]);
    run("CHECK", &conf, &env).ok_empty();
    std::fs::remove_file(net.ipam_dir().join(&ip)).unwrap();
    assert!(run("CHECK", &conf, &env).err(104).contains(&ip));
    run("DEL", &conf, &env).ok_empty();
}

#[test]
fn del_twice_and_after_the_netns_is_gone() {
    if !require_root("del") {
        return;
    }
    let net = Net::new(3, 24);
    let ns = Ns::new();
    let env = [
        ("CNI_CONTAINERID", "del1"),
        ("CNI_NETNS", ns.path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let r = run("ADD", &net.conf("0.4.0"), &env).ok();
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(net.allocated().len(), 2);
    run("DEL", &with_prev(net.conf("0.4.0"), &r), &env).ok_empty();
    assert!(net.allocated().is_empty() && net.ports().is_empty());
    run("DEL", &net.conf("0.4.0"), &env).ok_empty();

    // Second pod: its netns is deleted first, and DEL comes without CNI_NETNS.
    let ns2 = Ns::new();
    net.add("0.4.0", "del2", &ns2, "eth0");
    assert_eq!(net.ports().len(), 1);
    ns2.delete();
    let env2 = [("CNI_CONTAINERID", "del2"), ("CNI_IFNAME", "eth0")];
    run("DEL", &net.conf("0.4.0"), &env2).ok_empty();
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(net.ports().is_empty());
    // And with a CNI_NETNS that no longer exists.
    run(
        "DEL",
        &net.conf("0.4.0"),
        &[
            ("CNI_CONTAINERID", "del2"),
            ("CNI_NETNS", ns2.path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ],
    )
    .ok_empty();
    // DEL of something never added, with no data dir at all.
    let other = Net::new(4, 24);
    run("DEL", &other.conf("1.1.0"), &env2).ok_empty();
}

#[test]
fn gc_releases_everything_not_valid() {
    if !require_root("gc") {
        return;
    }
    let net = Net::new(5, 24);
    let pods: Vec<Ns> = (0..3).map(|_| Ns::new()).collect();
    for (i, ns) in pods.iter().enumerate() {
        net.add("1.1.0", &format!("gc{i}"), ns, "eth0");
    }
    assert_eq!(net.allocated().len(), 6);
    assert_eq!(net.ports().len(), 3);
    let mut conf = net.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
    run("GC", &conf, &[]).ok_empty();
    assert_eq!(net.allocated().len(), 2);
    assert_eq!(net.ports().len(), 1);
    let kept = net.ports()[0].clone();
    assert_eq!(kept, weft_cni::host_veth::name("gc1", "eth0"));
    // The 1.1.0 tag's key is accepted too; GC is 1.1.0 only.
    let mut conf = net.conf("1.1.0");
    conf["cni.dev/attachments"] = json!([]);
    assert_eq!(run("GC", &net.conf("1.0.0"), &[]).json()["code"], 1);
    run("GC", &conf, &[]).ok_empty();
    assert!(net.allocated().is_empty() && net.ports().is_empty());
}

#[test]
fn status_before_and_after_the_subnet_file_exists() {
    if !require_root("status") {
        return;
    }
    let net = Net::with_file(6, 30, false);
    let msg = run("STATUS", &net.conf("1.1.0"), &[]).err(50);
    assert!(msg.contains("agent has not set up this node"), "{msg}");
    // ADD before the agent ran: try again later.
    let ns = Ns::new();
    let env = [
        ("CNI_CONTAINERID", "st"),
        ("CNI_NETNS", ns.path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let msg = run("ADD", &net.conf("1.1.0"), &env).err(11);
    assert!(msg.contains("agent has not set up this node"), "{msg}");
    net.write_subnet_file();
    run("STATUS", &net.conf("1.1.0"), &[]).ok_empty();
    assert_eq!(run("STATUS", &net.conf("1.0.0"), &[]).json()["code"], 1);
    // A /30 has one address besides the gateway: once it is taken STATUS says so, and the
    // next ADD is told the pool is exhausted.
    net.add("1.1.0", "st", &ns, "eth0");
    assert!(run("STATUS", &net.conf("1.1.0"), &[])
        .err(50)
        .contains("no free address"));
    let ns2 = Ns::new();
    let msg = run(
        "ADD",
        &net.conf("1.1.0"),
        &[
            ("CNI_CONTAINERID", "st2"),
            ("CNI_NETNS", ns2.path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ],
    )
    .err(100);
    assert!(msg.contains("no free address"), "{msg}");
    std::fs::write(&net.subnet_file, "garbage\n").unwrap();
    assert!(run("STATUS", &net.conf("1.1.0"), &[])
        .err(50)
        .contains("line 1"));
}

#[test]
fn add_errors_roll_back_and_requested_ips_are_honoured() {
    if !require_root("add errors") {
        return;
    }
    let net = Net::new(7, 24);
    let ns = Ns::new();
    let b4 = net.cidr4.trim_end_matches(".0/24").to_owned();
    // CNI_ARGS IP=
    let env = [
        ("CNI_CONTAINERID", "req1"),
        ("CNI_NETNS", ns.path.as_str()),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            &format!("IgnoreUnknown=1;K8S_POD_NAME=x;IP={b4}.50"),
        ),
    ];
    let r = run("ADD", &net.conf("1.0.0"), &env).ok();
    assert_eq!(r["ips"][0]["address"], format!("{b4}.50/24"));
    // An interface that already exists is an error and takes nothing of the first pod's.
    let before = net.allocated();
    let again = run(
        "ADD",
        &net.conf("1.0.0"),
        &[
            ("CNI_CONTAINERID", "req2"),
            ("CNI_NETNS", ns.path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ],
    );
    assert!(again.err(102).contains("eth0 already exists"));
    assert_eq!(
        net.allocated(),
        before,
        "rollback released the new IPs only"
    );
    assert!(
        ns.exec(&["ping", "-c3", "-i0.2", "-W1", &net.gw4])
            .status
            .success(),
        "first pod untouched"
    );
    // runtimeConfig.ips, on a second interface; an address in use is refused.
    let mut conf = net.conf("1.0.0");
    conf["runtimeConfig"] = json!({"ips": [format!("{b4}.50/24")]});
    let env1 = [
        ("CNI_CONTAINERID", "req1"),
        ("CNI_NETNS", ns.path.as_str()),
        ("CNI_IFNAME", "eth1"),
    ];
    assert!(run("ADD", &conf, &env1).err(101).contains("in use"));
    conf["runtimeConfig"] = json!({"ips": [format!("{b4}.60/24")]});
    let r1 = run("ADD", &conf, &env1).ok();
    assert_eq!(r1["ips"][0]["address"], format!("{b4}.60/24"));
    conf["runtimeConfig"] = json!({"ips": ["192.0.2.1"]});
    let ns2 = Ns::new();
    let msg = run(
        "ADD",
        &conf,
        &[
            ("CNI_CONTAINERID", "req3"),
            ("CNI_NETNS", ns2.path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ],
    )
    .err(101);
    assert!(msg.contains("192.0.2.1"), "{msg}");
    assert_eq!(net.allocated().len(), 4);
    // A netns path that is not a netns.
    let file = net.dir.path().join("not-a-netns");
    std::fs::write(&file, "").unwrap();
    let msg = run(
        "ADD",
        &net.conf("1.0.0"),
        &[
            ("CNI_CONTAINERID", "req4"),
            ("CNI_NETNS", file.to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
        ],
    )
    .err(4);
    assert!(msg.contains("CNI_NETNS"), "{msg}");
    assert_eq!(net.allocated().len(), 4);
}

#[test]
fn every_version_gets_its_own_result_shape() {
    if !require_root("versions") {
        return;
    }
    let net = Net::new(8, 24);
    let mut dns_conf = net.conf("1.1.0");
    dns_conf["dns"] = json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]});
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let ns = Ns::new();
        let mut conf = dns_conf.clone();
        conf["cniVersion"] = json!(v);
        let id = format!("v{i}");
        let env = [
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", ns.path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        let r = run("ADD", &conf, &env).ok();
        assert_eq!(r["cniVersion"], *v);
        assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
        assert_eq!(
            r["ips"][0].get("version").is_some(),
            v.starts_with('0'),
            "{v}: {r}"
        );
        assert_eq!(
            r["interfaces"][2].get("mtu").is_some(),
            *v == "1.1.0",
            "{v}: {r}"
        );
        run("DEL", &with_prev(conf, &r), &env).ok_empty();
    }
    assert!(net.allocated().is_empty() && net.ports().is_empty());
}

#[test]
fn add_creates_or_repairs_the_bridge() {
    if !require_root("bridge") {
        return;
    }
    let net = Net::new(9, 24);
    // The bridge exists but is down, with the wrong MTU and no gateway address.
    common::ip(&["link", "add", &net.bridge, "type", "bridge"]);
    let ns = Ns::new();
    net.add("1.1.0", "br1", &ns, "eth0");
    let br = common::ip(&["-d", "addr", "show", &net.bridge]);
    assert!(
        br.contains("mtu 1400") && br.contains(&format!("{}/24", net.gw4)),
        "{br}"
    );
    assert!(br.contains("state UP") || br.contains(",UP"), "{br}");
    assert!(ns
        .exec(&["ping", "-c3", "-i0.2", "-W1", &net.gw4])
        .status
        .success());
    // Deleted by hand: the next ADD makes it again.
    common::ip(&["link", "del", &net.bridge]);
    let ns2 = Ns::new();
    net.add("1.1.0", "br2", &ns2, "eth0");
    assert!(ns2
        .exec(&["ping", "-c3", "-i0.2", "-W1", &net.gw4])
        .status
        .success());
}

#[test]
fn add_waits_while_network_policy_is_not_enforced() {
    use weft_common::policy_gate;
    if !require_root("policy gate") {
        return;
    }
    let net = Net::new(10, 24);
    let ns = Ns::new();
    let env = [
        ("CNI_CONTAINERID", "gated"),
        ("CNI_NETNS", ns.path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let lock = policy_gate::lock_path(&net.subnet_file);
    // Policy on (the lock file exists) and no agent holding it: try again later, with
    // nothing reserved.
    std::fs::write(&lock, "").unwrap();
    let msg = run("ADD", &net.conf("1.1.0"), &env).err(11);
    assert!(msg.contains("does not enforce it"), "{msg}");
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    // The agent holds it: the pod gets its network.
    let held = policy_gate::hold(&lock).unwrap();
    net.add("1.1.0", "gated", &ns, "eth0");
    // The agent gone: the next pod waits again; the first one's teardown does not.
    drop(held);
    let ns2 = Ns::new();
    let env2 = [
        ("CNI_CONTAINERID", "gated2"),
        ("CNI_NETNS", ns2.path.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    run("ADD", &net.conf("1.1.0"), &env2).err(11);
    run("DEL", &net.conf("1.1.0"), &env).ok_empty();
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
}
