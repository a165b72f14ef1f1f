//! The binary's log stream: `kubectl logs` shows it verbatim, so no colour escapes when
//! stderr is not a terminal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A kubeconfig for an API server that is not there: the controller starts, logs, and
/// keeps retrying.
const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"#;

#[test]
fn logs_to_a_pipe_carry_no_ansi_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, KUBECONFIG).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-controller"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["--cluster-cidr=10.244.0.0/16", "--http-addr=127.0.0.1:0"])
        .args([
            "--leader-elect=false",
            "--config=/nonexistent/net-conf.json",
        ])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read on a thread so a silent child cannot hang the test past its deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("serving /healthz"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("serving /healthz")),
        "the controller did not get as far as serving: {lines:#?}"
    );
    let coloured: Vec<&String> = lines.iter().filter(|l| l.contains('\x1b')).collect();
    assert!(
        coloured.is_empty(),
        "ANSI escapes in piped logs: {coloured:#?}"
    );
}
