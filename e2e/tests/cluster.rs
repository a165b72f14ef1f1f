//! The real thing: `weft-e2e up` (a 3-node cluster on this machine, weft applied),
//! `weft-e2e test` (the connectivity suite) and `weft-e2e down`, which runs whatever
//! happened before it.
//!
//! Needs root, docker (scripts/start-docker.sh), the Kubernetes components and containerd
//! 2 (scripts/build-k8s.sh, scripts/build-containerd.sh) and Go (CoreDNS is built on
//! first use). `up` rebuilds the weft image when it is older than the release binaries.
//! Takes a few minutes warm. Fails loudly when a prerequisite is missing, unless
//! WEFT_SKIP_CLUSTER=1 is set explicitly.

use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_weft-e2e");

fn prerequisites_or_skip() -> bool {
    weft_e2e::cluster::test_preflight().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `weft-e2e down` when dropped: after a failed `up` or `test` as well.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let t = Instant::now();
        let ok = Command::new(BIN)
            .arg("down")
            .status()
            .is_ok_and(|s| s.success());
        eprintln!(
            "weft-e2e down: {} in {:.1} s",
            if ok { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if !ok && !std::thread::panicking() {
            panic!("weft-e2e down failed");
        }
    }
}

fn step(args: &[&str]) -> f64 {
    let t = Instant::now();
    let status = Command::new(BIN)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run weft-e2e {}: {e}", args.join(" ")));
    let secs = t.elapsed().as_secs_f64();
    eprintln!("weft-e2e {}: {status} in {secs:.1} s", args.join(" "));
    assert!(status.success(), "weft-e2e {} failed", args.join(" "));
    secs
}

#[test]
fn local_cluster_up_test_down() {
    if !prerequisites_or_skip() {
        return;
    }
    let _down = Down;
    let up = step(&["up"]);
    let kubeconfig =
        weft_e2e::cluster::Layout::new(weft_e2e::cluster::state_dir()).admin_kubeconfig();
    let test = step(&["test", "--kubeconfig", &kubeconfig.display().to_string()]);
    eprintln!("up {up:.1} s, test {test:.1} s");
}
