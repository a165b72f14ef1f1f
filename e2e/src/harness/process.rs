//! Child processes of the harness: logs to a file, SIGKILL when the test process dies
//! (PR_SET_PDEATHSIG), SIGTERM then SIGKILL on drop.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct Child {
    name: String,
    log: std::path::PathBuf,
    inner: std::process::Child,
}

impl Child {
    pub fn spawn(name: &str, bin: &Path, args: &[String], log: &Path) -> Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let inner = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Child {
            name: name.into(),
            log: log.to_owned(),
            inner,
        })
    }

    /// An error with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.inner.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited with {status}; last log lines:\n{}",
                self.name,
                tail.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.inner.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.inner.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }
}
