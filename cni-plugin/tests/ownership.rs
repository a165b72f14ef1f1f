//! Host veth ownership, as root: a link that holds a container's host veth name but is
//! not that container's (a hash collision, staged here by renaming) is never touched by
//! that container's ADD or DEL; a container's own host end carries its mark and goes
//! with its DEL, with or without the netns.

mod common;

use common::{ip, run, Net, Ns};
use weft_cni::host_veth;
use weft_common::require_root;

const HOST_VETH_TAKEN: u64 = 107;

/// (ifindex, state) of `name`, or `None` when there is no such link. The state is what
/// ADD or DEL could change: flags, MTU, controller, MAC, alias, hairpin.
fn link(name: &str) -> Option<(String, String)> {
    let show = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .args(["link", "show", "dev", name])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let line = show(&["-o"])?;
    let hairpin = show(&["-d"])?.contains("hairpin on");
    let index = line.split(':').next().unwrap_or_default().trim().to_owned();
    Some((index, format!("{line} hairpin={hairpin}")))
}

fn ping(ns: &Ns, addr: &str) -> bool {
    ns.exec(&["ping", "-c2", "-i0.2", "-W1", addr])
        .status
        .success()
}

fn env<'a>(id: &'a str, ns: Option<&'a Ns>) -> Vec<(&'a str, &'a str)> {
    let mut e = vec![("CNI_CONTAINERID", id), ("CNI_IFNAME", "eth0")];
    if let Some(ns) = ns {
        e.push(("CNI_NETNS", ns.path.as_str()));
    }
    e
}

#[test]
fn another_pods_veth_under_this_containers_name_is_left_alone_by_add_and_del() {
    if !require_root("host veth collision") {
        return;
    }
    let net = Net::new(50, 24);
    let (ns_a, ns_x) = (Ns::new(), Ns::new());
    let a = net.add("1.1.0", "coll-a", &ns_a, "eth0");
    let a_veth = a["interfaces"][1]["name"].as_str().unwrap().to_owned();
    // Stage the collision: pod A's host end takes the name X's host end would get.
    let x_name = host_veth::name("coll-x", "eth0");
    ip(&["link", "set", &a_veth, "down"]);
    ip(&["link", "set", &a_veth, "name", &x_name]);
    ip(&["link", "set", &x_name, "up"]);
    assert!(ping(&ns_a, &net.gw4), "pod A works under its new host name");
    let (index, before) = link(&x_name).unwrap();
    let allocated = net.allocated();

    // ADD of X: a clear error, nothing of A's changed, no address kept.
    let msg = run("ADD", &net.conf("1.1.0"), &env("coll-x", Some(&ns_x))).err(HOST_VETH_TAKEN);
    assert!(
        msg.contains(&x_name) && msg.contains("weft:eth0/coll-a"),
        "{msg}"
    );
    assert_eq!(net.allocated(), allocated, "X's address was released");
    assert_eq!(link(&x_name), Some((index.clone(), before.clone())));
    assert!(
        ns_x.exec(&["ip", "link", "show", "eth0"]).status.code() != Some(0),
        "no interface left in X's netns"
    );

    // The runtime's cleanup DEL of X, with the netns and without: success, A untouched.
    run("DEL", &net.conf("1.1.0"), &env("coll-x", Some(&ns_x))).ok_empty();
    run("DEL", &net.conf("1.1.0"), &env("coll-x", None)).ok_empty();
    assert_eq!(
        link(&x_name),
        Some((index, before)),
        "A's host end untouched"
    );
    assert_eq!(net.allocated(), allocated, "A's addresses still recorded");
    assert!(ping(&ns_a, &net.gw4), "pod A still connected");

    // A's own DEL finds its pair through its netns, whatever the host end is called.
    run("DEL", &net.conf("1.1.0"), &env("coll-a", Some(&ns_a))).ok_empty();
    assert!(link(&x_name).is_none() && net.allocated().is_empty());
}

#[test]
fn a_foreign_link_under_the_name_is_left_alone() {
    if !require_root("foreign link") {
        return;
    }
    let net = Net::new(51, 24);
    let ns = Ns::new();
    // Not weft's at all: a veth pair off any bridge, down, with its own alias.
    let name = host_veth::name("fgn-x", "eth0");
    let peer = format!("wcf{}", std::process::id() % 100_000);
    ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", &name, "alias", "someone else's"]);
    let guard = LinkGuard(peer.clone());
    let before = link(&name).unwrap();

    let msg = run("ADD", &net.conf("1.0.0"), &env("fgn-x", Some(&ns))).err(HOST_VETH_TAKEN);
    assert!(msg.contains("someone else's"), "{msg}");
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    let after = link(&name).unwrap();
    assert_eq!(
        after, before,
        "not brought up, not hairpinned, not re-aliased"
    );
    run("DEL", &net.conf("1.0.0"), &env("fgn-x", Some(&ns))).ok_empty();
    run("DEL", &net.conf("1.0.0"), &env("fgn-x", None)).ok_empty();
    assert_eq!(link(&name), Some(before));
    drop(guard);
}

/// Deletes the test's own link on drop (its peer goes with it).
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

#[test]
fn two_containers_get_marked_15_byte_host_veths_and_del_removes_each() {
    if !require_root("marked host veths") {
        return;
    }
    let net = Net::new(52, 24);
    let (ns_a, ns_b) = (Ns::new(), Ns::new());
    let ra = net.add("1.1.0", "own-a", &ns_a, "eth0");
    let rb = net.add("1.1.0", "own-b", &ns_b, "eth0");
    let (va, vb) = (
        ra["interfaces"][1]["name"].as_str().unwrap().to_owned(),
        rb["interfaces"][1]["name"].as_str().unwrap().to_owned(),
    );
    for (id, v) in [("own-a", &va), ("own-b", &vb)] {
        assert_eq!(*v, host_veth::name(id, "eth0"));
        assert!(v.len() == 15 && v.starts_with("weft"), "{v}");
        let (_, text) = link(v).unwrap();
        assert!(
            text.contains(&format!("alias weft:eth0/{id}")),
            "{v} carries {id}'s mark: {text}"
        );
    }
    assert_eq!(net.ports().len(), 2);
    assert_eq!(net.allocated().len(), 4);

    // With the netns: only A's pair goes.
    run("DEL", &net.conf("1.1.0"), &env("own-a", Some(&ns_a))).ok_empty();
    assert!(link(&va).is_none());
    assert_eq!(net.ports(), vec![vb.clone()]);
    assert_eq!(net.allocated().len(), 2);
    assert!(ping(&ns_b, &net.gw4), "B unaffected");
    // Without the netns (which still exists): the mark says the host end is B's.
    run("DEL", &net.conf("1.1.0"), &env("own-b", None)).ok_empty();
    assert!(link(&vb).is_none());
    assert!(net.ports().is_empty() && net.allocated().is_empty());
    // Idempotent.
    run("DEL", &net.conf("1.1.0"), &env("own-b", Some(&ns_b))).ok_empty();
}
