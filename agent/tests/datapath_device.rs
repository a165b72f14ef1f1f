//! The node-level pieces of setup on their own: the VXLAN device kept or recreated,
//! forwarding, the firewall table, the subnet file, and cleanup.

mod datapath_support;

use datapath_support::*;
use weft_agent::datapath::cleanup;
use weft_common::netns::{with_netlink, Netns};

fn vxlan_details(ns: &str) -> serde_json::Value {
    let out = ip(ns, "-d -j link show weft.1");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[test]
fn setup_twice_keeps_device_and_mac() {
    if !weft_common::require_root("setup_twice_keeps_device_and_mac") {
        return;
    }
    let c = Cluster::new("twice", 1, 0);
    let n = &c.nodes[0];
    let before = vxlan_details(&n.ns);
    let mac = n.agent.setup(n.config()).unwrap();
    let after = vxlan_details(&n.ns);
    assert_eq!(Some(mac), n.mac);
    assert_eq!(before["ifindex"], after["ifindex"]);
    assert_eq!(after["address"], mac.to_string());
    let info = &after["linkinfo"]["info_data"];
    assert_eq!(info["id"], 1);
    assert_eq!(info["port"], 8472);
    assert_eq!(info["local"], "192.168.77.1");
    assert_eq!(info["learning"], false);
    assert_eq!(after["mtu"], MTU);
    assert!(show(&n.ns, "addr show dev weft.1").contains("10.244.1.0/32"));
    assert!(show(&n.ns, "addr show dev weft0").contains("10.244.1.1/24"));
    let fwd = exec(&n.ns, "cat /proc/sys/net/ipv4/ip_forward");
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    assert!(n.subnet_file.exists());
}

#[test]
fn wrong_vni_device_is_recreated_and_published_mac_reused() {
    if !weft_common::require_root("wrong_vni_device_is_recreated_and_published_mac_reused") {
        return;
    }
    let c = Cluster::new("vni", 1, 0);
    let n = &c.nodes[0];
    ip(&n.ns, "link del weft.1");
    ip(
        &n.ns,
        "link add weft.1 type vxlan id 42 dstport 8472 local 192.168.77.1 dev eth0 nolearning",
    );
    // Marked as weft's (as a device weft made before the VNI changed in net-conf.json):
    // weft may recreate it. An unmarked one is refused (datapath_hostile.rs).
    ip(&n.ns, "link set weft.1 alias weft");
    let mut cfg = n.config();
    let published: weft_common::annotations::Mac = "02:42:00:00:00:07".parse().unwrap();
    cfg.mac = Some(published);
    let mac = n.agent.setup(cfg).unwrap();
    assert_eq!(mac, published);
    let d = vxlan_details(&n.ns);
    assert_eq!(d["linkinfo"]["info_data"]["id"], 1);
    assert_eq!(d["address"], published.to_string());
    assert!(d["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
}

#[test]
fn masquerade_off_means_no_nat_chain_and_cleanup_removes_everything() {
    if !weft_common::require_root(
        "masquerade_off_means_no_nat_chain_and_cleanup_removes_everything",
    ) {
        return;
    }
    let c = Cluster::new("clean", 2, 0);
    c.sync_all();
    let n = &c.nodes[0];
    assert!(exec(&n.ns, "nft list table inet weft").status.success());
    let mut cfg = n.config();
    cfg.masquerade = false;
    n.agent.setup(cfg).unwrap();
    // The VXLAN source filter stays; the nat chain goes.
    let table = exec(&n.ns, "nft list table inet weft");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.contains("chain input"),
        "{text}"
    );
    assert!(
        !text.contains("postrouting") && !text.contains("masquerade"),
        "{text}"
    );

    let netns = Netns::open(format!("/var/run/netns/{}", n.ns).as_ref()).unwrap();
    let file = n.subnet_file.clone();
    with_netlink(Some(&netns), |h| async move {
        cleanup(&h, &weft_common::netconf::NetConf::default(), &file)
            .await
            .map_err(|e| weft_common::Error::Interface {
                name: "cleanup".into(),
                reason: e.to_string(),
            })
    })
    .unwrap();
    assert!(!n.subnet_file.exists());
    assert_eq!(show(&n.ns, "route show proto 87"), "");
    assert!(!run(&["ip", "-n", &n.ns, "link", "show", "weft.1"])
        .status
        .success());
    assert!(!run(&["ip", "-n", &n.ns, "link", "show", "weft0"])
        .status
        .success());
    // Twice is fine.
    with_netlink(Some(&netns), |h| async move {
        cleanup(
            &h,
            &weft_common::netconf::NetConf::default(),
            &n.subnet_file,
        )
        .await
        .map_err(|e| weft_common::Error::Interface {
            name: "cleanup".into(),
            reason: e.to_string(),
        })
    })
    .unwrap();
}

/// Global-scope addresses of a device, as "address/prefix", sorted.
fn global_addrs(ns: &str, dev: &str) -> Vec<String> {
    let out = ip(ns, &format!("-j addr show dev {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut addrs: Vec<String> = v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    addrs.sort();
    addrs
}

#[test]
fn setup_with_a_new_pod_cidr_removes_the_old_addresses() {
    if !weft_common::require_root("setup_with_a_new_pod_cidr_removes_the_old_addresses") {
        return;
    }
    let c = Cluster::new("recidr", 1, 0);
    let n = &c.nodes[0];
    assert_eq!(global_addrs(&n.ns, "weft.1"), ["10.244.1.0/32"]);
    assert_eq!(global_addrs(&n.ns, "weft0"), ["10.244.1.1/24"]);
    // Leftovers of other kinds: an extra IPv4 address on the VXLAN device, a global IPv6
    // address on the bridge (both stale), and a link-local one there (the kernel's: kept).
    ip(&n.ns, "addr add 169.254.7.7/16 dev weft.1");
    ip(&n.ns, "addr add fd00:7::1/64 dev weft0 nodad");
    ip(&n.ns, "addr add fe80::77/64 dev weft0 nodad");

    // The Node was re-registered and got another subnet.
    let mut cfg = n.config();
    cfg.pod_cidrs = vec!["10.244.9.0/24".parse().unwrap()];
    n.agent.setup(cfg).unwrap();
    assert_eq!(global_addrs(&n.ns, "weft.1"), ["10.244.9.0/32"]);
    let v4_on_vxlan = ip(&n.ns, "-4 addr show dev weft.1");
    assert!(!v4_on_vxlan.contains("169.254.7.7"), "{v4_on_vxlan}");
    assert_eq!(global_addrs(&n.ns, "weft0"), ["10.244.9.1/24"]);
    assert!(ip(&n.ns, "addr show dev weft0").contains("fe80::77/64"));
    // The old subnet's connected route is gone with its gateway.
    let routes = ip(&n.ns, "route show");
    assert!(!routes.contains("10.244.1."), "{routes}");
    assert!(routes.contains("10.244.9.0/24 dev weft0"), "{routes}");
    let sf = weft_common::subnet_file::NodeSubnet::read(&n.subnet_file).unwrap();
    assert_eq!(
        sf.node_cidrs,
        vec!["10.244.9.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        sf.gateways,
        vec!["10.244.9.1".parse::<std::net::IpAddr>().unwrap()]
    );
}
