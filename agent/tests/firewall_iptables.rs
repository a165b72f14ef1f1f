//! weft's accepts in the iptables FORWARD chain against the real kernel: a "node" netns
//! routes between two "pod" netns; a FORWARD policy DROP (as Docker sets) stops pod
//! traffic until weft's accepts are in; applying twice changes nothing; cleanup removes
//! them. Needs root and the iptables binaries.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use weft_agent::iptables;
use weft_common::netns::Netns;

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(ns: &str, args: &str) {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    must(&v);
}

fn exec(ns: &str, args: &[&str]) -> Output {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

fn has(binary: &str) -> bool {
    Command::new(binary).arg("--version").output().is_ok()
}

/// Namespaces removed on drop.
struct Netnses(Vec<String>);

impl Netnses {
    fn add(&mut self, tag: &str) -> String {
        let name = format!("wa-{tag}-{}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        ip(&name, "link set lo up");
        self.0.push(name.clone());
        name
    }
}

impl Drop for Netnses {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

/// node routes 10.244.1.0/24 (pod a) <-> 10.244.2.0/24 (pod b).
fn topology(nses: &mut Netnses, tag: &str) -> (String, String, String) {
    let node = nses.add(&format!("{tag}n"));
    let a = nses.add(&format!("{tag}a"));
    let b = nses.add(&format!("{tag}b"));
    for (pod, third, host) in [(&a, 1, "va"), (&b, 2, "vb")] {
        ip(
            &node,
            &format!("link add {host} type veth peer name eth0 netns {pod}"),
        );
        ip(&node, &format!("addr add 10.244.{third}.1/24 dev {host}"));
        ip(&node, &format!("link set {host} up"));
        ip(pod, &format!("addr add 10.244.{third}.2/24 dev eth0"));
        ip(pod, "link set eth0 up");
        ip(pod, &format!("route add default via 10.244.{third}.1"));
    }
    must(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    (node, a, b)
}

fn ping(from: &str, to: &str) -> bool {
    exec(from, &["ping", "-c1", "-W1", to]).status.success()
}

/// Polls for a working forward path (the first packets may wait for ARP).
fn eventually_pings(from: &str, to: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if ping(from, to) {
            return true;
        }
    }
    false
}

/// Runs `f` on a thread inside `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = std::path::PathBuf::from(format!("/var/run/netns/{ns}"));
    std::thread::spawn(move || {
        Netns::open(&path).unwrap().enter().unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn cluster() -> Vec<IpNet> {
    vec!["10.244.0.0/16".parse().unwrap()]
}

fn forward(ns: &str, binary: &str) -> Vec<String> {
    let out = exec(ns, &[binary, "-w", "-S", "FORWARD"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn forward_drop_policy_is_overridden_idempotently_and_cleaned_up() {
    if !weft_common::require_root("forward_drop_policy_is_overridden_idempotently_and_cleaned_up") {
        return;
    }
    assert!(
        has("iptables"),
        "the iptables binary is needed (apt-get install iptables)"
    );
    let mut nses = Netnses(Vec::new());
    let (node, a, b) = topology(&mut nses, "fw");
    assert!(eventually_pings(&a, "10.244.2.2"), "the routed path works");

    // Docker's policy, through the same binary Docker uses here.
    must(&[
        "ip", "netns", "exec", &node, "iptables", "-w", "-P", "FORWARD", "DROP",
    ]);
    must(&[
        "ip",
        "netns",
        "exec",
        &node,
        "iptables",
        "-w",
        "-N",
        "DOCKER-USER",
    ]);
    must(&[
        "ip",
        "netns",
        "exec",
        &node,
        "iptables",
        "-w",
        "-A",
        "FORWARD",
        "-j",
        "DOCKER-USER",
    ]);
    assert!(!ping(&a, "10.244.2.2"), "dropped by the FORWARD policy");

    let outcome = in_netns(&node, || iptables::ensure(&cluster()).unwrap());
    assert_eq!(outcome.changes, 2, "{outcome:?}");
    let rules = forward(&node, "iptables");
    assert_eq!(
        rules[..4],
        [
            "-P FORWARD DROP",
            "-A FORWARD -s 10.244.0.0/16 -m comment --comment weft -j ACCEPT",
            "-A FORWARD -d 10.244.0.0/16 -m comment --comment weft -j ACCEPT",
            "-A FORWARD -j DOCKER-USER",
        ],
        "{rules:#?}"
    );
    assert!(
        eventually_pings(&a, "10.244.2.2"),
        "weft's accepts let pods through"
    );
    assert!(eventually_pings(&b, "10.244.1.2"));

    let again = in_netns(&node, || iptables::ensure(&cluster()).unwrap());
    assert_eq!(again.changes, 0, "applying twice adds nothing");
    assert_eq!(forward(&node, "iptables"), rules);

    // A new cluster CIDR replaces the old accepts.
    let moved = in_netns(&node, || {
        iptables::ensure(&["10.245.0.0/16".parse().unwrap()]).unwrap()
    });
    assert_eq!(moved.changes, 4);
    let rules = forward(&node, "iptables");
    assert!(
        rules.iter().all(|r| !r.contains("10.244.0.0/16")),
        "{rules:#?}"
    );

    let removed = in_netns(&node, || iptables::remove().unwrap());
    assert_eq!(removed, 2);
    assert_eq!(
        forward(&node, "iptables"),
        ["-P FORWARD DROP", "-A FORWARD -j DOCKER-USER"]
    );
    assert!(!ping(&a, "10.244.2.2"), "dropped again after cleanup");
}

#[test]
fn legacy_backend_is_handled_and_untouched_backends_stay_untouched() {
    if !weft_common::require_root("legacy_backend_is_handled_and_untouched_backends_stay_untouched")
    {
        return;
    }
    if !has("iptables-legacy") || !has("iptables-nft") {
        eprintln!("SKIP: iptables-legacy and iptables-nft are both needed");
        return;
    }
    let mut nses = Netnses(Vec::new());
    let (node, a, _b) = topology(&mut nses, "fwl");
    must(&[
        "ip",
        "netns",
        "exec",
        &node,
        "iptables-legacy",
        "-w",
        "-P",
        "FORWARD",
        "DROP",
    ]);
    assert!(
        !ping(&a, "10.244.2.2"),
        "dropped by the legacy FORWARD policy"
    );

    let outcome = in_netns(&node, || iptables::ensure(&cluster()).unwrap());
    assert_eq!(outcome.changes, 2, "{outcome:?}");
    let rules = forward(&node, "iptables-legacy");
    assert_eq!(
        rules[1],
        "-A FORWARD -s 10.244.0.0/16 -m comment --comment weft -j ACCEPT"
    );
    assert!(eventually_pings(&a, "10.244.2.2"));
    // The nft backend had no FORWARD chain: nothing was created there.
    let tables = must(&["ip", "netns", "exec", &node, "nft", "list", "tables"]);
    assert!(!tables.contains("ip filter"), "{tables}");
    assert_eq!(
        in_netns(&node, || iptables::ensure(&cluster()).unwrap()).changes,
        0
    );
    assert_eq!(in_netns(&node, || iptables::remove().unwrap()), 2);
    assert_eq!(forward(&node, "iptables-legacy"), ["-P FORWARD DROP"]);
}
