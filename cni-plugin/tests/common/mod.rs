//! Helpers for running the built `weft` binary exactly as a runtime does: `CNI_*` in a
//! clean environment, the network config on stdin, the answer on stdout.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_weft");

static SEQ: AtomicU32 = AtomicU32::new(0);

fn seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Runs `ip` and panics with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace `wc-<pid>-<n>`, deleted on drop.
pub struct Ns {
    pub name: String,
    pub path: String,
}

impl Ns {
    pub fn new() -> Self {
        let name = format!("wc-{}-{}", std::process::id(), seq());
        ip(&["netns", "add", &name]);
        Ns {
            path: format!("/var/run/netns/{name}"),
            name,
        }
    }

    pub fn exec(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Deletes it now (the guard's drop then does nothing).
    pub fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if Path::new(&self.path).exists() {
            self.delete();
        }
    }
}

/// One test's network: its own bridge, subnet file, data dir (in a tempdir) and IPv4
/// (and IPv6) node CIDR, so tests run in parallel. Deletes the bridge on drop.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub name: String,
    pub cidr4: String,
    pub gw4: String,
    pub cidr6: String,
    pub gw6: String,
    pub subnet_file: PathBuf,
}

impl Net {
    /// `idx` (0..100) distinguishes tests in one binary; the pid distinguishes binaries.
    /// `prefix4` is the IPv4 node CIDR's length (24 normally, 29 for a tiny pool).
    pub fn new(idx: u8, prefix4: u8) -> Self {
        Self::with_file(idx, prefix4, true)
    }

    pub fn with_file(idx: u8, prefix4: u8, write: bool) -> Self {
        let pid = std::process::id();
        let b = (pid % 250) as u8;
        let dir = tempfile::tempdir().unwrap();
        let net = Net {
            bridge: format!("wcb{}x{idx}", pid % 100_000),
            name: format!("wt{idx}"),
            cidr4: format!("10.{}.{b}.0/{prefix4}", 100 + idx),
            gw4: format!("10.{}.{b}.1", 100 + idx),
            cidr6: format!("fd00:{}:{:x}::/64", 100 + idx as u32, pid & 0xffff),
            gw6: format!("fd00:{}:{:x}::1", 100 + idx as u32, pid & 0xffff),
            subnet_file: dir.path().join("subnet.env"),
            dir,
        };
        if write {
            net.write_subnet_file();
        }
        allow_forward(&net.bridge);
        net
    }

    pub fn write_subnet_file(&self) {
        std::fs::write(
            &self.subnet_file,
            format!(
                "WEFT_NODE_CIDRS={},{}\nWEFT_CLUSTER_CIDRS=10.0.0.0/8,fd00::/16\nWEFT_MTU=1400\nWEFT_BRIDGE={}\n",
                self.cidr4, self.cidr6, self.bridge
            ),
        )
        .unwrap();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The network's IPAM directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.data_dir().join(&self.name)
    }

    pub fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": self.name,
            "type": "weft",
            "subnetFile": self.subnet_file,
            "dataDir": self.data_dir(),
            "logFile": self.dir.path().join("weft.log"),
        })
    }

    /// Allocated addresses (files named by an IP in the IPAM directory).
    pub fn allocated(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.ipam_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Names of links attached to this network's bridge.
    pub fn ports(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }

    pub fn add(&self, version: &str, id: &str, ns: &Ns, ifname: &str) -> Value {
        let r = run(
            "ADD",
            &self.conf(version),
            &[
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &ns.path),
                ("CNI_IFNAME", ifname),
            ],
        );
        r.ok()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        remove_forward_rule(&self.bridge);
    }
}

const USER_CHAIN: [&str; 3] = ["ip", "filter", "DOCKER-USER"];

/// This VM runs Docker, whose FORWARD policy is drop, and br_netfilter sends bridged
/// traffic through it. In a cluster the weft agent accepts pod traffic; here the test
/// accepts traffic within its own bridge in Docker's user chain, and removes the rule on
/// drop. Nothing is done when there is no such chain.
fn allow_forward(bridge: &str) {
    let mut args = vec!["list", "chain"];
    args.extend(USER_CHAIN);
    let exists = Command::new("nft")
        .args(&args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        return;
    }
    let comment = format!("\"weft-cni-test-{bridge}\"");
    let mut args = vec!["insert", "rule"];
    args.extend(USER_CHAIN);
    args.extend([
        "iifname", bridge, "oifname", bridge, "accept", "comment", &comment,
    ]);
    let out = Command::new("nft").args(&args).output().expect("nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn remove_forward_rule(bridge: &str) {
    let mut args = vec!["-a", "list", "chain"];
    args.extend(USER_CHAIN);
    let Ok(out) = Command::new("nft").args(&args).output() else {
        return;
    };
    let tag = format!("weft-cni-test-{bridge}\"");
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&tag))
    {
        if let Some(handle) = line.rsplit("# handle ").next().map(str::trim) {
            let mut args = vec!["delete", "rule"];
            args.extend(USER_CHAIN);
            args.extend(["handle", handle]);
            let _ = Command::new("nft").args(&args).output();
        }
    }
}

pub struct Answer {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Asserts success and returns the JSON result.
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "plugin failed: {} / {}",
            self.stdout, self.stderr
        );
        self.json()
    }

    /// Asserts success with nothing on stdout.
    pub fn ok_empty(&self) {
        assert_eq!(
            self.code, 0,
            "plugin failed: {} / {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout.trim().is_empty(),
            "unexpected stdout {}",
            self.stdout
        );
    }

    /// Asserts a CNI error with `code` and returns its message.
    pub fn err(&self, code: u64) -> String {
        assert_ne!(
            self.code, 0,
            "expected error {code}, got success: {}",
            self.stdout
        );
        let v = self.json();
        assert_eq!(
            v["code"].as_u64(),
            Some(code),
            "wrong code: {v} / {}",
            self.stderr
        );
        assert!(v["cniVersion"].is_string(), "{v}");
        v["msg"].as_str().unwrap_or_default().to_owned()
    }
}

/// Runs the plugin with `CNI_COMMAND=command`, the given variables and `conf` on stdin.
pub fn run(command: &str, conf: &Value, env: &[(&str, &str)]) -> Answer {
    run_raw(Some(command), conf.to_string().as_bytes(), env)
}

pub fn run_raw(command: Option<&str>, stdin: &[u8], env: &[(&str, &str)]) -> Answer {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(c) = command {
        cmd.env("CNI_COMMAND", c);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn weft");
    let mut stdin_pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Write on a thread: the plugin may answer (and close stdin) before reading it all.
    let writer = std::thread::spawn(move || {
        let _ = stdin_pipe.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait weft");
    let _ = writer.join();
    Answer {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `conf` with `prevResult` set, as a runtime sends it for CHECK, DEL and chained plugins.
pub fn with_prev(mut conf: Value, prev: &Value) -> Value {
    conf["prevResult"] = prev.clone();
    conf
}

/// Polls `f` until it is true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
