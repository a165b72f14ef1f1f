//! weft in a chain with the reference `portmap` plugin, run by hand exactly as a runtime
//! does and through `cnitool` (libcni). The reference binaries come from
//! `scripts/build-k8s.sh` (/var/cache/weft); these tests fail, naming the missing file,
//! when they are absent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run, with_prev, Net, Ns, BIN};
use serde_json::{json, Value};
use weft_common::require_root;

const CACHE: &str = "/var/cache/weft";

fn reference(rel: &str) -> PathBuf {
    let cache = std::env::var("WEFT_CACHE").unwrap_or_else(|_| CACHE.into());
    let p = Path::new(&cache).join(rel);
    assert!(
        p.exists(),
        "{} is missing: build the reference CNI plugins and cnitool with scripts/build-k8s.sh",
        p.display()
    );
    p
}

fn portmap_conf(version: &str, name: &str, prev: Option<&Value>) -> Value {
    let mut c = json!({
        "cniVersion": version,
        "name": name,
        "type": "portmap",
        "backend": "nftables",
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
    });
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

fn run_portmap(command: &str, conf: &Value, env: &[(&str, &str)]) -> (i32, String, String) {
    let bin = reference("cni/portmap");
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", reference("cni"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ruleset() -> String {
    String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn portmap_after_weft_gets_a_correct_prev_result() {
    if !require_root("chain portmap") {
        return;
    }
    let net = Net::new(40, 24);
    let ns = Ns::new();
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let id = format!("chain-{}", version.replace('.', ""));
        let env = [
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", ns.path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        let weft = run("ADD", &net.conf(version), &env).ok();
        let ip = weft["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let (code, out, err) =
            run_portmap("ADD", &portmap_conf(version, &net.name, Some(&weft)), &env);
        assert_eq!(code, 0, "portmap ADD {version} failed: {out} {err}");
        let chained: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            chained["ips"], weft["ips"],
            "portmap passed a different result on"
        );
        assert_eq!(chained["interfaces"], weft["interfaces"]);
        assert!(ruleset().contains(&ip), "no portmap rule for {ip}");
        if version != "0.3.1" {
            let (code, out, err) = run_portmap(
                "CHECK",
                &portmap_conf(version, &net.name, Some(&chained)),
                &env,
            );
            assert_eq!(code, 0, "portmap CHECK {version}: {out} {err}");
            run("CHECK", &with_prev(net.conf(version), &chained), &env).ok_empty();
        }
        // DEL in reverse order.
        let (code, out, err) = run_portmap(
            "DEL",
            &portmap_conf(version, &net.name, Some(&chained)),
            &env,
        );
        assert_eq!(code, 0, "portmap DEL {version}: {out} {err}");
        run("DEL", &with_prev(net.conf(version), &chained), &env).ok_empty();
        assert!(!ruleset().contains(&ip), "portmap rule for {ip} left");
    }
    assert!(net.allocated().is_empty() && net.ports().is_empty());
}

#[test]
fn cnitool_runs_a_conflist_with_weft_and_portmap() {
    if !require_root("chain cnitool") {
        return;
    }
    let cnitool = reference("bin/cnitool");
    let net = Net::new(41, 24);
    let ns = Ns::new();
    // CNI_PATH with weft and the reference plugins; NETCONFPATH with the conflist.
    let bin_dir = net.dir.path().join("bin");
    let conf_dir = net.dir.path().join("net.d");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("weft")).unwrap();
    std::os::unix::fs::symlink(reference("cni/portmap"), bin_dir.join("portmap")).unwrap();
    let mut weft = net.conf("1.1.0");
    let weft = weft.as_object_mut().unwrap();
    weft.remove("cniVersion");
    weft.remove("name");
    weft.insert("capabilities".into(), json!({"ips": true}));
    let conflist = json!({
        "cniVersion": "1.1.0",
        "name": net.name,
        "plugins": [weft, {"type": "portmap", "backend": "nftables", "capabilities": {"portMappings": true}}],
    });
    std::fs::write(conf_dir.join("10-weft.conflist"), conflist.to_string()).unwrap();
    let b4 = net.cidr4.trim_end_matches(".0/24").to_owned();
    let cap_args = json!({"ips": [format!("{b4}.77/24")], "portMappings": [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]});
    let tool = |verb: &str| {
        let out = Command::new(&cnitool)
            .args([verb, &net.name, &ns.path])
            .env("NETCONFPATH", &conf_dir)
            .env("CNI_PATH", &bin_dir)
            .env("CAP_ARGS", cap_args.to_string())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = tool("status");
    assert!(ok, "cnitool status: {out} {err}");
    let (ok, out, err) = tool("add");
    assert!(ok, "cnitool add: {out} {err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        result["ips"][0]["address"],
        format!("{b4}.77/24"),
        "ips capability: {result}"
    );
    assert!(
        ruleset().contains(&format!("{b4}.77")),
        "portmap rule missing"
    );
    assert!(ns
        .exec(&["ping", "-c3", "-i0.2", "-W1", &net.gw4])
        .status
        .success());
    let (ok, out, err) = tool("check");
    assert!(ok, "cnitool check: {out} {err}");
    let (ok, out, err) = tool("del");
    assert!(ok, "cnitool del: {out} {err}");
    let (ok, out, err) = tool("del");
    assert!(ok, "second cnitool del: {out} {err}");
    assert!(net.allocated().is_empty() && net.ports().is_empty());
    assert!(
        !ruleset().contains(&format!("{b4}.77")),
        "portmap rule left"
    );
}
