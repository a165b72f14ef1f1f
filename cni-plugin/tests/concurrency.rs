//! Many plugin processes at once, and plugin processes killed at random points.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run, Net, Ns, BIN};
use rand::Rng;
use serde_json::json;
use weft_common::require_root;

#[test]
fn thirty_two_parallel_adds_get_distinct_ips() {
    if !require_root("parallel adds") {
        return;
    }
    let net = Net::new(20, 24);
    let pods: Vec<Ns> = (0..32).map(|_| Ns::new()).collect();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let net = &net;
                s.spawn(move || net.add("1.1.0", &format!("par{i}"), ns, "eth0"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let v4: HashSet<String> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap().to_owned())
        .collect();
    let v6: HashSet<String> = results
        .iter()
        .map(|r| r["ips"][1]["address"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(v4.len(), 32, "duplicate IPv4 addresses: {v4:?}");
    assert_eq!(v6.len(), 32);
    assert_eq!(net.allocated().len(), 64);
    assert_eq!(net.ports().len(), 32);
    std::thread::scope(|s| {
        for (i, ns) in pods.iter().enumerate() {
            let net = &net;
            s.spawn(move || {
                let id = format!("par{i}");
                run(
                    "DEL",
                    &net.conf("1.1.0"),
                    &[
                        ("CNI_CONTAINERID", &id),
                        ("CNI_NETNS", &ns.path),
                        ("CNI_IFNAME", "eth0"),
                    ],
                )
                .ok_empty();
            });
        }
    });
    assert!(net.allocated().is_empty() && net.ports().is_empty());
}

/// Starts an ADD and SIGKILLs it after `delay`.
fn add_and_kill(net: &Net, id: &str, ns: &Ns, delay: Duration) {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", &ns.path)
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(net.conf("1.1.0").to_string().as_bytes());
    }
    std::thread::sleep(delay);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
}

#[test]
fn adds_killed_at_random_points_leave_nothing_after_del_or_gc() {
    if !require_root("sigkill") {
        return;
    }
    let net = Net::new(21, 24);
    let mut rng = rand::rng();
    // Calibrate: how long does one ADD take here (debug build)?
    let probe = Ns::new();
    let t = std::time::Instant::now();
    net.add("1.1.0", "probe", &probe, "eth0");
    let full = t.elapsed().as_micros() as u64 + 500;
    run(
        "DEL",
        &net.conf("1.1.0"),
        &[("CNI_CONTAINERID", "probe"), ("CNI_IFNAME", "eth0")],
    )
    .ok_empty();

    // Round 1: each killed ADD is followed by DEL (what a runtime does after a failed ADD).
    let mut left_state = 0;
    for i in 0..25 {
        let ns = Ns::new();
        let id = format!("kill{i}");
        add_and_kill(
            &net,
            &id,
            &ns,
            Duration::from_micros(rng.random_range(0..full)),
        );
        if !net.allocated().is_empty() || !net.ports().is_empty() {
            left_state += 1;
        }
        if i % 2 == 0 {
            ns.delete(); // sometimes the netns is gone before the DEL
        }
        run(
            "DEL",
            &net.conf("1.1.0"),
            &[
                ("CNI_CONTAINERID", &id),
                ("CNI_NETNS", &ns.path),
                ("CNI_IFNAME", "eth0"),
            ],
        )
        .ok_empty();
        assert!(
            net.allocated().is_empty(),
            "after DEL {i}: {:?}",
            net.allocated()
        );
        assert!(net.ports().is_empty(), "after DEL {i}: {:?}", net.ports());
    }

    eprintln!("{left_state} of 25 killed ADDs left an allocation or a veth for DEL to clean up");

    // Round 2: several killed ADDs, one kept pod, then one GC.
    let keep = Ns::new();
    net.add("1.1.0", "keep", &keep, "eth0");
    let namespaces: Vec<Ns> = (0..15).map(|_| Ns::new()).collect();
    for (i, ns) in namespaces.iter().enumerate() {
        add_and_kill(
            &net,
            &format!("gckill{i}"),
            ns,
            Duration::from_micros(rng.random_range(0..full)),
        );
    }
    let mut conf = net.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    run("GC", &conf, &[]).ok_empty();
    assert_eq!(net.allocated().len(), 2, "{:?}", net.allocated());
    assert_eq!(net.ports().len(), 1, "{:?}", net.ports());
    // The kept pod still works.
    assert!(keep
        .exec(&["ping", "-c3", "-i0.2", "-W1", &net.gw4])
        .status
        .success());
    for ns in &namespaces {
        let out = ns.exec(&["ip", "-o", "link", "show", "eth0"]);
        assert!(!out.status.success(), "eth0 left in {}", ns.name);
    }
}
