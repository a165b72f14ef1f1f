//! Images for the nodes, none pulled: pause and probe from scripts/build-node-images.sh,
//! the weft image from docker (built by scripts/build-image.sh when missing), each
//! saved as a tarball and imported into every node's containerd (namespace `k8s.io`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::runtime::Containerd;
use super::{node, Layout, NodeSpec};
use crate::topo::{run, workspace_bin};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// pause.tar, probe.tar and coredns.tar under `images/` (CoreDNS is built first by
/// scripts/build-coredns.sh, which does nothing when its binary is up to date).
pub fn build_node_images(layout: &Layout) -> Result<Vec<PathBuf>> {
    let out = layout.images();
    std::fs::create_dir_all(&out)?;
    let probe_bin = match std::env::current_exe() {
        Ok(p) if p.file_name().is_some_and(|n| n == "weft-e2e") => p,
        _ => workspace_bin("weft-e2e")?,
    };
    let coredns = run(&mut Command::new(
        workspace_root().join("scripts/build-coredns.sh"),
    ))
    .context("build CoreDNS")?;
    let coredns_bin = String::from_utf8_lossy(&coredns.stdout).trim().to_string();
    run(
        Command::new(workspace_root().join("scripts/build-node-images.sh"))
            .arg(&out)
            .arg(&probe_bin)
            .arg(&coredns_bin)
            .env("WEFT_COREDNS_IMAGE", super::COREDNS_IMAGE),
    )
    .context("build the pause, probe and CoreDNS images")?;
    Ok(vec![
        out.join("pause.tar"),
        out.join("probe.tar"),
        out.join("coredns.tar"),
    ])
}

/// The weft image as a tarball: `docker save` of `image`, built first with
/// scripts/build-image.sh when docker does not have it, when its `dev.weft.stamp` label
/// does not match the release binaries on disk, or when `rebuild` asks for it (binaries
/// older than the sources are rebuilt only then).
pub fn weft_image_tar(layout: &Layout, image: &str, rebuild: bool) -> Result<PathBuf> {
    let docker = if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    };
    run(&mut Command::new(
        workspace_root().join("scripts/start-docker.sh"),
    ))
    .context("start dockerd")?;
    // Stale when the image's stamp label differs from that of the release binaries now
    // on disk (or when either is missing): rebuild without being asked.
    let label = Command::new(docker)
        .args([
            "image",
            "inspect",
            "-f",
            "{{ index .Config.Labels \"dev.weft.stamp\" }}",
            image,
        ])
        .output()?;
    let have = label
        .status
        .success()
        .then(|| String::from_utf8_lossy(&label.stdout).trim().to_string());
    let want = Command::new(workspace_root().join("scripts/build-image.sh"))
        .arg("--stamp")
        .stderr(std::process::Stdio::null())
        .output()?;
    let want = want
        .status
        .success()
        .then(|| String::from_utf8_lossy(&want.stdout).trim().to_string());
    let fresh = have.is_some() && have == want;
    if rebuild || !fresh {
        tracing::info!(
            image,
            ?have,
            ?want,
            "building the weft image (scripts/build-image.sh)"
        );
        run(Command::new(workspace_root().join("scripts/build-image.sh")).env("WEFT_IMAGE", image))
            .context("build the weft image")?;
    }
    let tar = layout.images().join("weft.tar");
    std::fs::create_dir_all(layout.images())?;
    run(Command::new(docker)
        .args(["save", "-o"])
        .arg(&tar)
        .arg(image))
    .context("docker save the weft image")?;
    Ok(tar)
}

/// Imports the tarballs into one node's containerd.
pub fn import(
    layout: &Layout,
    node: &NodeSpec,
    runtime: &Containerd,
    tars: &[PathBuf],
) -> Result<()> {
    let sock = node::containerd_socket(layout, node);
    for tar in tars {
        run(Command::new(&runtime.ctr)
            .arg("-a")
            .arg(&sock)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tar))
        .with_context(|| format!("import {} into {}", tar.display(), node.name))?;
    }
    Ok(())
}

/// Imports the tarballs into every node's containerd, the nodes in parallel.
pub fn import_all(
    layout: &Layout,
    nodes: &[NodeSpec],
    runtime: &Containerd,
    tars: &[PathBuf],
) -> Result<()> {
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| s.spawn(move || import(layout, n, runtime, tars)))
            .collect();
        for h in handles {
            h.join().expect("import thread panicked")?;
        }
        Ok(())
    })
}
