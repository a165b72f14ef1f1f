//! The container image built on this machine (scripts/build-image.sh, no registry):
//! every binary the manifests name is there and runs, as the manifests run it.
//!
//! Needs dockerd (Debian's docker.io; scripts/start-docker.sh starts it). Fails loudly
//! without it unless WEFT_SKIP_DOCKER=1 is set explicitly.

use std::path::Path;
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn docker_available() -> bool {
    if std::env::var("WEFT_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("WEFT_SKIP_DOCKER=1: skipping the image test");
        return false;
    }
    let status = Command::new(root().join("scripts/start-docker.sh"))
        .status()
        .expect("run scripts/start-docker.sh");
    assert!(
        status.success(),
        "dockerd is not available (apt-get install -y docker.io; scripts/start-docker.sh); \
         set WEFT_SKIP_DOCKER=1 to skip this test on purpose"
    );
    true
}

fn docker() -> Command {
    let debian = Path::new("/usr/bin/docker");
    Command::new(if debian.exists() {
        debian
    } else {
        Path::new("docker")
    })
}

/// `docker run --rm <extra..> <image> <cmd..>`: (success, stdout + stderr).
fn run(image: &str, extra: &[&str], cmd: &[&str]) -> (bool, String) {
    let out = docker()
        .args(["run", "--rm", "--network", "none"])
        .args(extra)
        .arg(image)
        .args(cmd)
        .output()
        .expect("run docker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn image_built_locally_runs_every_binary_the_manifests_use() {
    if !docker_available() {
        return;
    }
    let out = Command::new(root().join("scripts/build-image.sh"))
        .output()
        .expect("run scripts/build-image.sh");
    assert!(
        out.status.success(),
        "scripts/build-image.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        image,
        format!("weft.dev/weft:{VERSION}"),
        "the tag the manifests use"
    );

    // The controller runs as nobody (65534) in its Deployment.
    for (user, binary) in [("0:0", "weft-agent"), ("65534:65534", "weft-controller")] {
        let (ok, text) = run(&image, &["--user", user], &[binary, "--version"]);
        assert!(
            ok && text.contains(VERSION),
            "{binary} --version as {user}: {text}"
        );
    }

    let (ok, text) = run(&image, &["-e", "CNI_COMMAND=VERSION"], &["/weft"]);
    assert!(ok, "CNI VERSION: {text}");
    let answer: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("CNI VERSION answer is not JSON ({e}): {text}"));
    let supported = answer["supportedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        supported.iter().any(|v| v == "1.1.0"),
        "plugin must support the conflist's cniVersion 1.1.0: {answer}"
    );

    // The agent programs nftables with `nft`.
    let (ok, text) = run(&image, &[], &["nft", "--version"]);
    assert!(ok && text.contains("nftables"), "nft in the image: {text}");

    // The init container's job, exactly as the DaemonSet runs it, into host directories.
    let host = tempfile::tempdir().unwrap();
    let (bin_dir, conf_dir) = (host.path().join("bin"), host.path().join("net.d"));
    std::fs::create_dir_all(host.path().join("config")).unwrap();
    std::fs::write(
        host.path().join("config/10-weft.conflist"),
        r#"{"cniVersion":"1.1.0"}"#,
    )
    .unwrap();
    let mount = |src: &Path, dst: &str, ro: bool| {
        format!("{}:{dst}{}", src.display(), if ro { ":ro" } else { "" })
    };
    let (m_bin, m_conf, m_cfg) = (
        mount(&bin_dir, "/opt/cni/bin", false),
        mount(&conf_dir, "/etc/cni/net.d", false),
        mount(&host.path().join("config"), "/etc/weft", true),
    );
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&conf_dir).unwrap();
    let (ok, text) = run(
        &image,
        &[
            "--read-only",
            "--cap-drop",
            "ALL",
            "-v",
            &m_bin,
            "-v",
            &m_conf,
            "-v",
            &m_cfg,
        ],
        &[
            "weft-agent",
            "install-cni",
            "--bin-src=/weft",
            "--bin-dir=/opt/cni/bin",
            "--conf-src=/etc/weft/10-weft.conflist",
            "--conf-dir=/etc/cni/net.d",
        ],
    );
    assert!(ok, "weft-agent install-cni: {text}");
    let plugin = bin_dir.join("weft");
    assert!(plugin.is_file(), "plugin installed");
    // The plugin runs in the node's own userland, not the image's: it must be static,
    // and it must run here, outside the image.
    assert!(
        weft_e2e::elf::is_static(&plugin),
        "the installed plugin is dynamically linked (scripts/build-cni.sh builds it static)"
    );
    let version = Command::new(&plugin)
        .env("CNI_COMMAND", "VERSION")
        .output()
        .expect("run the installed plugin on the host");
    assert!(
        version.status.success() && String::from_utf8_lossy(&version.stdout).contains("1.1.0"),
        "installed plugin VERSION on the host: {version:?}"
    );
    assert!(
        conf_dir.join("10-weft.conflist").is_file(),
        "conflist installed"
    );
}
