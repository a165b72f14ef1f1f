//! `weft-e2e bench cni`: ADD and DEL latency of the weft CNI plugin against the reference
//! `bridge` + `host-local` pair, run the way a runtime runs them (one process per call,
//! env + stdin), in fresh network namespaces made before the clock starts.
//!
//! Needs root, the weft binary (`cargo build --release -p weft-cni`; found next to this
//! executable, or at `$WEFT_BIN`) and the reference plugins (`scripts/build-k8s.sh`, in
//! `/var/cache/weft/cni` or `$WEFT_CNI_REF`).
//!
//! Options: `--pods N` (200), `--parallel P` (32), `--no-ref` (weft only).
//! Phases: N pods one at a time (weft and the reference interleaved pod by pod, so load
//! from elsewhere hits both alike), then N pods with P in flight, for each plugin. Every
//! pod is deleted again; afterwards the IPAM directories and bridges are checked for
//! leaked addresses and veths. Ends with one JSON line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

struct Opts {
    pods: usize,
    parallel: usize,
    reference: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        pods: 200,
        parallel: 32,
        reference: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pods" => o.pods = it.next().context("--pods needs a number")?.parse()?,
            "--parallel" => o.parallel = it.next().context("--parallel needs a number")?.parse()?,
            "--no-ref" => o.reference = false,
            other => bail!("unknown option {other}; known: --pods N, --parallel P, --no-ref"),
        }
    }
    if o.pods == 0 || o.pods > 500 || o.parallel == 0 {
        bail!("--pods must be 1..=500 and --parallel at least 1");
    }
    Ok(o)
}

/// One plugin under test: how to call it and where it keeps its state.
struct Plugin {
    label: &'static str,
    bin: PathBuf,
    cni_path: PathBuf,
    conf: Value,
    bridge: String,
    /// The IPAM directory holding one file per allocated address.
    ipam_dir: PathBuf,
}

impl Plugin {
    /// Runs one call; returns its wall time (spawn to exit). Fails on a non-zero exit.
    fn call(&self, command: &str, id: &str, netns: &str) -> Result<Duration> {
        let body = self.conf.to_string();
        let start = Instant::now();
        let mut child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(body.as_bytes())?;
        let out = child.wait_with_output()?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "{} {command} {id} failed: {} {}",
                self.label,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }

    fn leaked_ips(&self) -> usize {
        std::fs::read_dir(&self.ipam_dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    fn leaked_veths(&self) -> usize {
        Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    }
}

/// Network namespaces made for one phase, deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn new(prefix: &str, n: usize) -> Result<Self> {
        let mut out = Namespaces(Vec::with_capacity(n));
        for i in 0..n {
            let name = format!("we-{}-{prefix}{i}", std::process::id());
            let st = Command::new("ip").args(["netns", "add", &name]).status()?;
            if !st.success() {
                bail!("ip netns add {name} failed");
            }
            out.0.push(name);
        }
        Ok(out)
    }

    fn path(&self, i: usize) -> String {
        format!("/var/run/netns/{}", self.0[i])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[derive(Default, Clone)]
pub(crate) struct Stats(pub(crate) Vec<f64>);

impl Stats {
    pub(crate) fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }
    /// Nearest-rank percentile in milliseconds.
    pub(crate) fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank - 1]
    }
}

/// The plugin to measure: `$WEFT_BIN`, else the static build that ships in the image
/// (`scripts/build-cni.sh`: `<target>/<host triple>/release/weft`), else the dynamic
/// one next to this executable, with a warning (it starts slower).
fn locate_weft() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("WEFT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let release = exe.parent().context("exe dir")?;
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let shipped = release
        .parent()
        .map(|t| t.join(&triple).join("release/weft"));
    if let Some(p) = shipped.filter(|p| p.exists()) {
        return Ok(p);
    }
    let p = release.join("weft");
    if !p.exists() {
        bail!(
            "{} not found: run scripts/build-cni.sh first, or set WEFT_BIN",
            p.display()
        );
    }
    eprintln!(
        "warning: measuring the dynamically linked {}; the image ships the static build \
         (scripts/build-cni.sh), which starts faster",
        p.display()
    );
    Ok(p)
}

fn write_subnet_file(path: &Path, cidr: &str, bridge: &str) -> Result<()> {
    std::fs::write(
        path,
        format!("WEFT_NODE_CIDRS={cidr}\nWEFT_CLUSTER_CIDRS=10.0.0.0/8\nWEFT_MTU=1450\nWEFT_BRIDGE={bridge}\n"),
    )?;
    Ok(())
}

/// Sequential phase: pod by pod, every plugin in turn (ADD all, then DEL all).
fn sequential(plugins: &[Plugin], pods: usize) -> Result<Vec<(Stats, Stats)>> {
    let spaces: Vec<Namespaces> = plugins
        .iter()
        .enumerate()
        .map(|(i, _)| Namespaces::new(&format!("s{i}-"), pods))
        .collect::<Result<_>>()?;
    let mut stats = vec![(Stats::default(), Stats::default()); plugins.len()];
    for i in 0..pods {
        for (k, p) in plugins.iter().enumerate() {
            stats[k]
                .0
                .push(p.call("ADD", &format!("seq{i}"), &spaces[k].path(i))?);
        }
    }
    for i in 0..pods {
        for (k, p) in plugins.iter().enumerate() {
            stats[k]
                .1
                .push(p.call("DEL", &format!("seq{i}"), &spaces[k].path(i))?);
        }
    }
    Ok(stats)
}

/// Parallel phase for one plugin: `pods` ADDs with `parallel` in flight, then the DELs.
fn parallel(p: &Plugin, pods: usize, parallel: usize, tag: &str) -> Result<(Stats, Stats)> {
    let spaces = Namespaces::new(&format!("p{tag}-"), pods)?;
    let mut out = (Stats::default(), Stats::default());
    for (phase, command) in ["ADD", "DEL"].iter().enumerate() {
        let next = AtomicUsize::new(0);
        let times = Mutex::new(Stats::default());
        let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..parallel.min(pods) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pods {
                        break;
                    }
                    match p.call(command, &format!("par{i}"), &spaces.path(i)) {
                        Ok(d) => times.lock().unwrap().push(d),
                        Err(e) => {
                            failure.lock().unwrap().get_or_insert(e);
                        }
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap() {
            return Err(e);
        }
        let t = times.into_inner().unwrap();
        if phase == 0 {
            out.0 = t;
        } else {
            out.1 = t;
        }
    }
    Ok(out)
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("bench cni needs root (it creates network namespaces, bridges and veths)");
    }
    let weft_bin = locate_weft()?;
    let weft_static = weft_e2e::elf::is_static(&weft_bin);
    eprintln!(
        "weft plugin: {} ({})",
        weft_bin.display(),
        if weft_static { "static" } else { "dynamic" }
    );
    let ref_dir = PathBuf::from(
        std::env::var("WEFT_CNI_REF").unwrap_or_else(|_| "/var/cache/weft/cni".into()),
    );
    if opts.reference {
        for b in ["bridge", "host-local"] {
            if !ref_dir.join(b).exists() {
                bail!(
                    "{} missing: run scripts/build-k8s.sh (or pass --no-ref)",
                    ref_dir.join(b).display()
                );
            }
        }
    }
    let tmp = tempfile::tempdir()?;
    let pid = std::process::id();
    let weft_bridge = format!("wbw{}", pid % 100_000);
    let ref_bridge = format!("wbr{}", pid % 100_000);
    let subnet_file = tmp.path().join("subnet.env");
    write_subnet_file(&subnet_file, "10.252.0.0/22", &weft_bridge)?;
    let weft = Plugin {
        label: "weft",
        bin: weft_bin.clone(),
        cni_path: weft_bin.parent().unwrap_or(Path::new("/")).to_owned(),
        conf: json!({
            "cniVersion": "1.1.0", "name": "weftbench", "type": "weft",
            "subnetFile": subnet_file, "dataDir": tmp.path().join("weft-ipam"),
        }),
        bridge: weft_bridge.clone(),
        ipam_dir: tmp.path().join("weft-ipam/weftbench"),
    };
    let reference = Plugin {
        label: "bridge+host-local",
        bin: ref_dir.join("bridge"),
        cni_path: ref_dir.clone(),
        conf: json!({
            "cniVersion": "1.1.0", "name": "refbench", "type": "bridge",
            "bridge": ref_bridge, "isGateway": true, "hairpinMode": true, "mtu": 1450,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.253.0.0/22", "gateway": "10.253.0.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": tmp.path().join("ref-ipam"),
            },
        }),
        bridge: ref_bridge.clone(),
        ipam_dir: tmp.path().join("ref-ipam/refbench"),
    };
    let mut plugins = vec![weft];
    if opts.reference {
        plugins.push(reference);
    }
    let result = measure(&plugins, &opts);
    for p in &plugins {
        let _ = Command::new("ip").args(["link", "del", &p.bridge]).status();
    }
    let (seq, par, leaks) = result?;

    println!(
        "cni bench: {} pods sequential, {} pods with {} in flight",
        opts.pods, opts.pods, opts.parallel
    );
    println!(
        "{:<20} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "plugin", "phase", "ADD p50 ms", "ADD p99 ms", "DEL p50 ms", "DEL p99 ms"
    );
    for (k, p) in plugins.iter().enumerate() {
        for (phase, (a, d)) in [("sequential", &seq[k]), ("parallel", &par[k])] {
            println!(
                "{:<20} {:>10} {:>12.2} {:>12.2} {:>12.2} {:>12.2}",
                p.label,
                phase,
                a.pct(50.0),
                a.pct(99.0),
                d.pct(50.0),
                d.pct(99.0)
            );
        }
    }
    for (p, (ips, veths)) in plugins.iter().zip(&leaks) {
        println!("{:<20} leaked IPs {ips}, leaked veths {veths}", p.label);
    }
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    let (ws, wp) = (&seq[0], &par[0]);
    let mut out = json!({
        "bench": "cni",
        "pods": opts.pods,
        "weft_static": weft_static,
        "parallel": opts.parallel,
        "weft_add_p50_ms": r(ws.0.pct(50.0)),
        "weft_add_p99_ms": r(ws.0.pct(99.0)),
        "weft_del_p50_ms": r(ws.1.pct(50.0)),
        "weft_del_p99_ms": r(ws.1.pct(99.0)),
        "parallel_weft_add_p50_ms": r(wp.0.pct(50.0)),
        "parallel_weft_add_p99_ms": r(wp.0.pct(99.0)),
        "parallel_weft_del_p99_ms": r(wp.1.pct(99.0)),
        "leaked_ips": leaks[0].0,
        "leaked_veths": leaks[0].1,
    });
    if opts.reference {
        let (rs, rp) = (&seq[1], &par[1]);
        let extra = json!({
            "ref_add_p50_ms": r(rs.0.pct(50.0)),
            "ref_add_p99_ms": r(rs.0.pct(99.0)),
            "ref_del_p50_ms": r(rs.1.pct(50.0)),
            "parallel_ref_add_p99_ms": r(rp.0.pct(99.0)),
            "speedup_add_p50": r(rs.0.pct(50.0) / ws.0.pct(50.0)),
            "speedup_del_p50": r(rs.1.pct(50.0) / ws.1.pct(50.0)),
            "ref_leaked_ips": leaks[1].0,
            "ref_leaked_veths": leaks[1].1,
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            out[k] = v.clone();
        }
    }
    println!("{out}");
    Ok(())
}

type Measured = (
    Vec<(Stats, Stats)>,
    Vec<(Stats, Stats)>,
    Vec<(usize, usize)>,
);

fn measure(plugins: &[Plugin], opts: &Opts) -> Result<Measured> {
    // Warm-up (not measured): the first ADD creates the bridge.
    let warm = Namespaces::new("w", plugins.len())?;
    for (k, p) in plugins.iter().enumerate() {
        p.call("ADD", "warmup", &warm.path(k))?;
        p.call("DEL", "warmup", &warm.path(k))?;
    }
    drop(warm);
    let seq = sequential(plugins, opts.pods)?;
    let mut par = Vec::new();
    for (k, p) in plugins.iter().enumerate() {
        par.push(parallel(p, opts.pods, opts.parallel, &k.to_string())?);
    }
    let leaks = plugins
        .iter()
        .map(|p| (p.leaked_ips(), p.leaked_veths()))
        .collect();
    Ok((seq, par, leaks))
}
