//! The nodes' container runtime: which containerd runs, and its configuration.
//!
//! weft's conflist asks for CNI 1.1.0. containerd 1.6 and 1.7 carry libcni 1.1 and
//! reject such results ("unsupported CNI result version"); containerd 2.x carries libcni
//! 1.2+. So a containerd 2 built by scripts/build-k8s.sh (in $WEFT_CACHE/bin, with its
//! shim and ctr) is preferred; Debian's 1.6 is the fallback, with a warning.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use super::PAUSE_IMAGE;
use crate::harness::cache_dir;

#[derive(Clone, Debug)]
pub struct Containerd {
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    /// Directory of containerd-shim-runc-v2, put first on containerd's PATH.
    pub shim_dir: PathBuf,
    pub major: u32,
}

impl Containerd {
    pub fn find() -> Result<Self> {
        let built = cache_dir().join("bin");
        let (dir, ctr_dir) = if built.join("containerd").is_file()
            && built.join("containerd-shim-runc-v2").is_file()
        {
            (built.clone(), built)
        } else {
            (PathBuf::from("/usr/bin"), PathBuf::from("/usr/bin"))
        };
        let containerd = dir.join("containerd");
        let out = Command::new(&containerd)
            .arg("--version")
            .output()
            .with_context(|| format!("run {} --version", containerd.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major =
            parse_major(&text).with_context(|| format!("containerd version from {text:?}"))?;
        if major < 2 {
            tracing::warn!(
                version = %text.trim(),
                "containerd < 2 cannot read CNI 1.1.0 results: pods will not start; \
                 run scripts/build-k8s.sh to build containerd 2"
            );
        }
        Ok(Containerd {
            containerd,
            ctr: ctr_dir.join("ctr"),
            shim_dir: dir,
            major,
        })
    }

    /// PATH for containerd, so it starts the shim of its own version.
    pub fn path_env(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        format!("{}:{rest}", self.shim_dir.display())
    }

    /// The config file. Paths are those inside the node's mount namespace, hence the
    /// defaults. Without CAP_SYS_RESOURCE nobody may lower an oom_score_adj, and runc
    /// fails to start any container asking for a negative one (the kubelet asks -998 for
    /// node-critical pods): `restrict_oom_score_adj` makes containerd clamp it to its own.
    pub fn config(&self) -> String {
        let restrict = !has_cap_sys_resource();
        if self.major >= 2 {
            config_v3(restrict)
        } else {
            config_v2(restrict)
        }
    }
}

/// "containerd github.com/containerd/containerd/v2 v2.1.9 <commit>" -> 2.
fn parse_major(version: &str) -> Option<u32> {
    version.split_whitespace().find_map(|w| {
        let v = w.strip_prefix('v').unwrap_or(w);
        let (major, _) = v.split_once('.')?;
        major.parse().ok()
    })
}

/// Whether this process may hold CAP_SYS_RESOURCE (some sandboxes drop it from the
/// bounding set even for root).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

fn config_v3(restrict_oom_score_adj: bool) -> String {
    format!(
        r#"version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  disable_apparmor = true
  restrict_oom_score_adj = {restrict_oom_score_adj}
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
"#
    )
}

fn config_v2(restrict_oom_score_adj: bool) -> String {
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = {restrict_oom_score_adj}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_containerd_major_versions() {
        assert_eq!(
            parse_major("containerd github.com/containerd/containerd/v2 v2.1.9 abc\n"),
            Some(2)
        );
        assert_eq!(
            parse_major("containerd containerd.io 1.6.20~ds1 \n"),
            Some(1)
        );
    }
}
