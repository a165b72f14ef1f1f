//! The agent's HTTP server (/healthz, /readyz, /metrics on every node address, so
//! reachable from every pod) under a slowloris from 127.0.0.1: 20,000 connections that
//! each send part of a request line and then hang. kubelet's /healthz must keep being
//! answered within 1 s while they are held open, and the server must stay small.
//!
//! The server runs in this process, so this process's RSS is the server's. The attack
//! runs in child processes (this test binary again, running [`attacker_process`]), so
//! its sockets count against their open-files limits, not the server's: a process may
//! not be allowed more than 20,000 descriptors, and the server must cope with its own.

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_agent::http::{serve, HttpState};
use weft_agent::metrics::Metrics;

/// Connections the attack opens in all.
const ATTACK: usize = 20_000;
/// An attacker stops opening connections after this long, whatever the count.
const ATTACK_TIME: Duration = Duration::from_secs(15);
/// Attacking processes (connecting is the slow part; two cores or more share it).
const ATTACKERS: usize = 4;
/// What kubelet's probe may take (its default timeoutSeconds is 1).
const PROBE_BUDGET: Duration = Duration::from_secs(1);
/// The agent's memory target, as peak RSS of the whole (server) process.
const PEAK_RSS_LIMIT_KB: u64 = 64 * 1024;
/// The server's soft open-files limit (containerd's default for containers).
const SERVER_NOFILE: u64 = 1024;
/// Tells a child process of this test binary to attack: `<addr>,<connections>`.
const ATTACK_ENV: &str = "WEFT_SLOWLORIS_ATTACK";
/// What an attacker prints once its connections are open: `<marker> <held> <failed>`.
const HELD_MARKER: &str = "SLOWLORIS-HELD";

/// Raises the soft open-files limit to the hard one and returns it.
fn raise_nofile() -> usize {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0 as usize
}

/// Peak and current RSS of this process, in KiB, from a /proc/self/status opened before
/// the attack (opening it during one would need a free descriptor).
struct Rss(std::fs::File);

impl Rss {
    fn open() -> Rss {
        Rss(std::fs::File::open("/proc/self/status").unwrap())
    }

    /// (VmRSS, VmHWM).
    fn read(&mut self) -> (u64, u64) {
        let mut status = String::new();
        self.0.rewind().unwrap();
        self.0.read_to_string(&mut status).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in /proc/self/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// Not a test on its own: the body of an attacking child process (does nothing unless
/// [`ATTACK_ENV`] is set). Opens the connections, each with half a request line, says
/// how many, and holds them until its stdin closes (the parent is done or gone).
#[test]
fn attacker_process() {
    let Ok(spec) = std::env::var(ATTACK_ENV) else {
        return;
    };
    let (addr, n) = spec.split_once(',').unwrap();
    let (addr, n): (SocketAddr, usize) = (addr.parse().unwrap(), n.parse().unwrap());
    raise_nofile();
    let deadline = Instant::now() + ATTACK_TIME;
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    while held.len() < n && Instant::now() < deadline && failed < 1000 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut s) => {
                // The server may have closed it already; an attacker does not care.
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ag");
                held.push(s);
            }
            Err(_) => failed += 1,
        }
    }
    println!("{HELD_MARKER} {} {failed}", held.len());
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// An attacking child, killed if still running when dropped.
struct Attacker {
    child: Child,
    /// Its report: (connections held, connections that failed).
    report: std::sync::mpsc::Receiver<(usize, usize)>,
}

impl Attacker {
    fn spawn(addr: SocketAddr, n: usize) -> Attacker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "attacker_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ATTACK_ENV, format!("{addr},{n}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, report) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The harness may have printed "test attacker_process ... " before it.
                if let Some((_, rest)) = line.split_once(HELD_MARKER) {
                    let mut nums = rest.split_whitespace().map(|v| v.parse().unwrap());
                    let _ = tx.send((nums.next().unwrap(), nums.next().unwrap()));
                }
            }
        });
        Attacker { child, report }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One kubelet-like probe: a fresh connection, GET /healthz, the whole answer read.
async fn probe(addr: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let connected = start.elapsed();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if answer.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            let answer = String::from_utf8_lossy(&answer);
            Err(format!("answer {answer:?} (connected after {connected:?})"))
        }
    };
    match tokio::time::timeout(PROBE_BUDGET, exchange).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        // Two ways to be late: the SYN was dropped (the kernel's accept queue was full)
        // or the server did not answer; the kernel's counters tell which.
        Err(_) => Err(format!("no answer within {PROBE_BUDGET:?}")),
    }
}

fn slowest(results: &[Result<Duration, String>]) -> Option<Duration> {
    results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .max()
        .copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_within_1s_and_memory_stays_bounded_under_20000_half_open_connections() {
    // The attackers may open as many files as the system allows...
    let limit = raise_nofile();
    // ...but the server gets a container's usual soft limit: the agent found at 1,100
    // half-open connections had run out of descriptors at 1024.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, SERVER_NOFILE, hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(HttpState {
        metrics: Arc::new(Metrics::default()),
        subnet_file: dir.path().join("subnet.env"),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, state));
    probe(addr).await.expect("healthz before the attack");
    let mut rss = Rss::open();
    let (rss_before, _) = rss.read();

    // At least as many attackers as their open-files limit (the same as ours) needs.
    let per_child = limit.saturating_sub(256).min(ATTACK);
    let children = ATTACK.div_ceil(per_child).max(ATTACKERS);
    let started = Instant::now();
    let attackers: Vec<Attacker> = (0..children)
        .map(|i| {
            let n = ATTACK / children + usize::from(i < ATTACK % children);
            Attacker::spawn(addr, n)
        })
        .collect();
    // kubelet keeps probing while the attack is under way.
    let mut during = Vec::new();
    let mut reports = Vec::new();
    // An attacker's last connect may take 2 s more; the figures are printed either way.
    let deadline = started + ATTACK_TIME + Duration::from_secs(5);
    while reports.len() < children && Instant::now() < deadline {
        reports.extend(attackers.iter().filter_map(|a| a.report.try_recv().ok()));
        during.push(probe(addr).await);
        // Pacing between probes (kubelet's period is seconds), not a readiness wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attack_took = started.elapsed();
    let held: usize = reports.iter().map(|r| r.0).sum();
    let failed: usize = reports.iter().map(|r| r.1).sum();

    // Every connection is now open on the attackers' side: probe again.
    let mut after = Vec::new();
    for _ in 0..20 {
        after.push(probe(addr).await);
    }
    let (rss_held, peak) = rss.read();
    eprintln!(
        "slowloris: {held} connections held by {children} processes ({failed} failed to \
         connect) in {attack_took:.1?}; probes during: {} ok of {}, slowest {:?}; probes \
         after: {} ok of {}, slowest {:?}; server RSS before {rss_before} KiB, while held \
         {rss_held} KiB, peak {peak} KiB",
        during.iter().filter(|r| r.is_ok()).count(),
        during.len(),
        slowest(&during),
        after.iter().filter(|r| r.is_ok()).count(),
        after.len(),
        slowest(&after),
    );
    let failures: Vec<&String> = during
        .iter()
        .chain(&after)
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(
        failures.is_empty(),
        "/healthz failed during or after the attack: {failures:?}"
    );
    assert!(
        peak < PEAK_RSS_LIMIT_KB,
        "peak RSS {peak} KiB is over {PEAK_RSS_LIMIT_KB} KiB (before the attack: {rss_before} KiB)"
    );
    assert_eq!(reports.len(), children, "attackers did not report in time");
    assert!(
        held >= ATTACK * 9 / 10,
        "the attack itself fell short: {held} of {ATTACK} connections"
    );
    drop(attackers);
    server.abort();
}
