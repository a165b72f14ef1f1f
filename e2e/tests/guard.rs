//! The local cluster's host guard (`weft-e2e up` installs it on the host): traffic for
//! the pod network or the Service range never leaves by the default route. Checked in a
//! throwaway "host" netns whose default route leads to a "gateway" netns that counts
//! what reaches it. Needs root; WEFT_SKIP_PRIVILEGED=1 skips it on purpose.

use std::process::Command;

use weft_e2e::cluster::node::{add_guard, GUARD_TABLE};
use weft_e2e::topo::ip;

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

fn sh_in(ns: &str, script: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()
        .expect("ip netns exec")
}

/// Sends one UDP datagram from `ns` to `addr`; the error text when the kernel refuses.
fn send_udp(ns: &str, addr: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c"])
        .arg(format!(
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{addr}', 9))"
        ))
        .output()
        .expect("python3");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn rx_packets(ns: &str) -> u64 {
    let out = sh_in(ns, "cat /sys/class/net/gw0/statistics/rx_packets");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("rx_packets")
}

#[test]
fn pod_and_service_traffic_never_take_the_default_route() {
    if std::env::var("WEFT_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("WEFT_SKIP_PRIVILEGED=1: skipping");
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces); set WEFT_SKIP_PRIVILEGED=1 to skip it"
    );
    let id = std::process::id() % 100_000;
    let (host, gw) = (format!("wg{id}h"), format!("wg{id}g"));
    let _ns = Netns(vec![host.clone(), gw.clone()]);
    for n in [&host, &gw] {
        ip(&["netns", "add", n]).unwrap();
        sh_in(
            n,
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        );
    }
    ip(&[
        "-n", &host, "link", "add", "eth0", "type", "veth", "peer", "name", "gw0", "netns", &gw,
    ])
    .unwrap();
    ip(&["-n", &host, "addr", "add", "192.0.2.2/24", "dev", "eth0"]).unwrap();
    ip(&["-n", &gw, "addr", "add", "192.0.2.1/24", "dev", "gw0"]).unwrap();
    ip(&["-n", &host, "link", "set", "eth0", "up"]).unwrap();
    ip(&["-n", &gw, "link", "set", "gw0", "up"]).unwrap();
    ip(&["-n", &host, "route", "add", "default", "via", "192.0.2.1"]).unwrap();
    // Both MACs are known up front: no ARP traffic in the counts (the gateway answers
    // each datagram with an ICMP error, for which it would otherwise ask).
    let mac = |ns: &str, dev: &str| {
        let out = sh_in(ns, &format!("cat /sys/class/net/{dev}/address"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let host_mac = mac(&host, "eth0");
    ip(&[
        "-n",
        &gw,
        "neigh",
        "add",
        "192.0.2.2",
        "lladdr",
        &host_mac,
        "dev",
        "gw0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let mac = mac(&gw, "gw0");
    ip(&[
        "-n",
        &host,
        "neigh",
        "add",
        "192.0.2.1",
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])
    .unwrap();

    // Without the guard both would go out (the measurement can see a leak).
    let before = rx_packets(&gw);
    send_udp(&host, "10.96.255.254").unwrap();
    send_udp(&host, "10.244.254.1").unwrap();
    assert_eq!(
        rx_packets(&gw),
        before + 2,
        "unguarded traffic reaches the gateway"
    );

    add_guard(Some(&host)).unwrap();
    let before = rx_packets(&gw);
    let pod = send_udp(&host, "10.244.254.1");
    assert!(
        pod.as_ref().is_err_and(|e| e.contains("No route to host")),
        "a pod address in no node's CIDR is unreachable: {pod:?}"
    );
    // Dropped after NAT: the socket sees EPERM; the datagram goes nowhere.
    let svc = send_udp(&host, "10.96.255.254");
    assert!(svc.is_err(), "untranslated Service traffic is dropped");
    send_udp(&host, "198.51.100.7").unwrap();
    assert_eq!(
        rx_packets(&gw),
        before + 1,
        "only the non-cluster datagram reached the gateway"
    );
    let table = sh_in(&host, &format!("nft list table inet {GUARD_TABLE}"));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("counter packets 1 "), "{table}");
}
