//! The chart on the local cluster: install, upgrade under traffic, uninstall.

use super::*;

const E2E: &str = env!("CARGO_BIN_EXE_weft-e2e");
/// The paced stream the upgrade runs under; the agents' rollout must end inside it.
const STREAM_SECS: u64 = 40;

/// Runs `weft-e2e down` when dropped: after a failed step as well.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let ok = Command::new(E2E)
            .arg("down")
            .status()
            .is_ok_and(|s| s.success());
        eprintln!("weft-e2e down: {}", if ok { "ok" } else { "FAILED" });
        if !ok && !std::thread::panicking() {
            panic!("weft-e2e down failed");
        }
    }
}

fn e2e_step(args: &[&str]) {
    let t = std::time::Instant::now();
    let status = Command::new(E2E)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run weft-e2e {}: {e}", args.join(" ")));
    eprintln!(
        "weft-e2e {}: {status} in {:.1} s",
        args.join(" "),
        t.elapsed().as_secs_f64()
    );
    assert!(status.success(), "weft-e2e {} failed", args.join(" "));
}

/// kubectl against the local cluster; (success, stdout, stderr).
fn kubectl_on(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("kubectl").expect("kubectl is built"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl_on(kubeconfig, args);
    assert!(ok, "kubectl {args:?} failed:\n{stdout}{stderr}");
    stdout
}

/// Helm against the local cluster, which must succeed.
fn helm_on(layout: &weft_e2e::cluster::Layout, args: &[&str]) -> String {
    let out = weft_e2e::cluster::up::helm_command(layout)
        .expect("helm is built")
        .args(args)
        .output()
        .expect("run helm");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{stdout}{stderr}"
    );
    stdout.into_owned()
}

/// Polls `f` until it returns Ok, for at most `secs`; panics with its last error.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("{what}: not after {secs} s: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

fn cluster_prerequisites_or_skip() -> bool {
    let ready = weft_e2e::cluster::test_preflight().unwrap_or_else(|e| panic!("{e}"));
    if ready {
        helm_bin();
    }
    ready
}

/// `weft-e2e up --helm` and the suite on it; `helm upgrade` with a new MTU rolls the
/// agents under a live cross-node stream, which survives, and the suite passes again;
/// `helm uninstall` leaves no weft object. Several minutes; like tests/cluster.rs it
/// needs root, docker and the built components (WEFT_SKIP_CLUSTER=1 skips it). Its name
/// extends `local_cluster_up_test_down`, so scripts/test.sh's parallel step skips it:
/// run it alone, `cargo test -p weft-e2e --test helm -- local_cluster --nocapture`.
#[test]
fn local_cluster_up_test_down_helm() {
    if !cluster_prerequisites_or_skip() {
        return;
    }
    let _down = Down;
    e2e_step(&["up", "--helm"]);
    let layout = weft_e2e::cluster::Layout::new(weft_e2e::cluster::state_dir());
    let kc = layout.admin_kubeconfig();
    let kc_arg = kc.display().to_string();
    let release = weft_e2e::cluster::up::HELM_RELEASE;
    let release_ns = weft_e2e::cluster::up::HELM_NAMESPACE;
    let status = helm_on(&layout, &["status", release, "-n", release_ns]);
    assert!(status.contains("STATUS: deployed"), "{status}");
    e2e_step(&["test", "--no-disrupt", "--keep", "--kubeconfig", &kc_arg]);

    // helm upgrade with a new MTU, under a paced stream from probe-1 to probe-2 (the
    // suite's pods, kept): the ConfigMap's new hash rolls every agent.
    let ns = weft_e2e::suite::NAMESPACE;
    let ip = kubectl_ok(
        &kc,
        &[
            "-n",
            ns,
            "get",
            "pod",
            "probe-2",
            "-o",
            "jsonpath={.status.podIP}",
        ],
    );
    let to = std::net::SocketAddr::new(ip.trim().parse().expect("pod IP"), 7000);
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let probe = weft_e2e::suite::Kubectl::new(&kc).expect("kubectl");
    let secs = STREAM_SECS.to_string();
    let stream = rt.spawn(async move {
        let extra = ["--duration-secs", secs.as_str(), "--timeout-secs", "10"];
        let r = probe.connect("probe-1", to, &extra).await;
        (r, std::time::Instant::now())
    });
    // Let the stream carry data before the disturbance (the stream itself reports
    // whether it connected at all).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let t = std::time::Instant::now();
    let chart = chart();
    helm_on(
        &layout,
        &[
            "upgrade",
            release,
            &chart,
            "-n",
            release_ns,
            "--reuse-values",
            "--set",
            "netConf.mtu=1400",
            "--wait",
            "--timeout=120s",
        ],
    );
    let want = kubectl_ok(
        &kc,
        &[
            "-n",
            "weft-system",
            "get",
            "daemonset",
            "weft-agent",
            "-o",
            "jsonpath={.spec.template.metadata.annotations.weft\\.dev/config-sha256}",
        ],
    );
    let nodes = kubectl_ok(&kc, &["get", "nodes", "-o", "name"])
        .lines()
        .count();
    poll(120, "every agent pod runs the new config", || {
        let out = kubectl_ok(
            &kc,
            &[
                "-n",
                "weft-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/component=agent",
                "-o",
                "jsonpath={range .items[*]}{.metadata.annotations.weft\\.dev/config-sha256} \
                 {.status.containerStatuses[0].ready}{\"\\n\"}{end}",
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        let fresh = lines
            .iter()
            .filter(|l| **l == format!("{want} true"))
            .count();
        if lines.len() == nodes && fresh == nodes {
            Ok(())
        } else {
            Err(out.clone())
        }
    });
    let rolled = std::time::Instant::now();
    let rollout_secs = t.elapsed().as_secs_f64();
    let (r, stream_end) = rt.block_on(stream).expect("stream task");
    let seen = r.unwrap_or_else(|e| {
        panic!("the cross-node stream broke during helm upgrade ({rollout_secs:.1} s): {e:#}")
    });
    assert!(
        stream_end > rolled,
        "the rollout ({rollout_secs:.1} s) outlasted the {STREAM_SECS} s stream"
    );
    eprintln!("helm upgrade: agents rolled in {rollout_secs:.1} s under a stream to {to} (server saw {seen})");
    let objs = objects(
        &kubectl_ok(
            &kc,
            &[
                "-n",
                "weft-system",
                "get",
                "configmap",
                "weft-config",
                "-o",
                "yaml",
            ],
        ),
        "the ConfigMap",
    );
    let (_, conf) = net_conf(&objs, "weft-system");
    assert_eq!(conf.mtu, 1400);
    e2e_step(&["test", "--no-disrupt", "--kubeconfig", &kc_arg]);

    // helm uninstall: no weft object left, namespace included.
    helm_on(
        &layout,
        &[
            "uninstall",
            release,
            "-n",
            release_ns,
            "--wait",
            "--timeout=180s",
        ],
    );
    poll(180, "namespace weft-system gone", || {
        let (ok, out, err) = kubectl_on(&kc, &["get", "namespace", "weft-system"]);
        if !ok && err.contains("NotFound") {
            Ok(())
        } else {
            Err(format!("{out}{err}"))
        }
    });
    let left = kubectl_ok(
        &kc,
        &[
            "get",
            "clusterroles,clusterrolebindings,validatingadmissionpolicies,\
             validatingadmissionpolicybindings,namespaces,daemonsets,deployments,configmaps,\
             serviceaccounts,roles,rolebindings,poddisruptionbudgets",
            "-A",
            "-l",
            "app.kubernetes.io/name=weft",
            "-o",
            "name",
        ],
    );
    assert!(left.trim().is_empty(), "left after helm uninstall:\n{left}");
    let releases = helm_on(&layout, &["list", "-A", "-q"]);
    assert!(releases.trim().is_empty(), "releases left: {releases}");
}
