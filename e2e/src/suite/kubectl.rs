//! Running the probe inside pods: `kubectl exec`, the plainest way to run a command in
//! a container (the binary built by scripts/build-k8s.sh, else `kubectl` on PATH).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::NAMESPACE;

#[derive(Clone, Debug)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Result<Self> {
        let bin = crate::harness::bin("kubectl").unwrap_or_else(|_| PathBuf::from("kubectl"));
        Ok(Kubectl {
            bin,
            kubeconfig: kubeconfig.to_owned(),
        })
    }

    /// `kubectl exec POD -- /weft-e2e probe ARGS..`: its stdout, or an error with stderr.
    /// Killed after `timeout`.
    pub async fn probe(&self, pod: &str, args: &[String], timeout: Duration) -> Result<String> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(["-n", NAMESPACE, "exec", pod, "-c", "probe", "--"])
            .args(["/weft-e2e", "probe"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .with_context(|| {
                format!(
                    "probe {} in {pod}: timed out after {timeout:?}",
                    args.join(" ")
                )
            })?
            .context("run kubectl")?;
        if !out.status.success() {
            bail!(
                "probe {} in {pod}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// TCP connect from `pod` to `to`, sending `extra` options; the address the server saw.
    pub async fn connect(&self, pod: &str, to: SocketAddr, extra: &[&str]) -> Result<SocketAddr> {
        let mut args = vec!["connect".to_string(), to.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        // The probe's own timeouts end it first; this one is a backstop.
        let limit = extra
            .iter()
            .zip(extra.iter().skip(1))
            .filter(|(k, _)| **k == "--duration-secs" || **k == "--timeout-secs")
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum::<u64>()
            + 30;
        let out = self.probe(pod, &args, Duration::from_secs(limit)).await?;
        out.parse()
            .with_context(|| format!("probe connect printed {out:?}"))
    }

    /// One UDP datagram from `pod` to `to`; the address the server saw.
    pub async fn udp(&self, pod: &str, to: SocketAddr) -> Result<SocketAddr> {
        let args = vec!["udp".to_string(), to.to_string(), "--timeout-secs=3".into()];
        let out = self.probe(pod, &args, Duration::from_secs(20)).await?;
        out.parse()
            .with_context(|| format!("probe udp printed {out:?}"))
    }

    /// Name resolution inside `pod` (its /etc/resolv.conf).
    pub async fn resolve(&self, pod: &str, name: &str) -> Result<Vec<IpAddr>> {
        let args = vec!["resolve".to_string(), name.to_string()];
        let out = self.probe(pod, &args, Duration::from_secs(20)).await?;
        out.lines()
            .map(|l| {
                l.trim()
                    .parse()
                    .with_context(|| format!("probe resolve printed {l:?}"))
            })
            .collect()
    }
}
