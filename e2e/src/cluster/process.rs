//! Detached daemons of the local cluster: each runs in its own session, logs to
//! `logs/<name>.log` and is remembered in `pids/<name>.pid` as "<pid> <start time>", so
//! `down` (another process, maybe much later) stops exactly that process and never a
//! stranger that reused its pid.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Layout;

/// Starts `cmd` detached; returns its pid.
pub fn spawn(layout: &Layout, name: &str, mut cmd: Command) -> Result<u32> {
    std::fs::create_dir_all(layout.logs())?;
    std::fs::create_dir_all(layout.pids())?;
    let log_path = layout.logs().join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {name}: {cmd:?}"))?;
    let pid = child.id();
    // The child is reaped by init once we exit; until then a zombie is harmless.
    drop(child);
    let start = start_time(pid).unwrap_or(0);
    std::fs::write(
        layout.pids().join(format!("{name}.pid")),
        format!("{pid} {start}\n"),
    )?;
    Ok(pid)
}

/// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The pid recorded for `name` if that very process still runs.
pub fn running(layout: &Layout, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(layout.pids().join(format!("{name}.pid"))).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start: u64 = it.next()?.parse().ok()?;
    (start_time(pid)? == start && !is_zombie(pid)).then_some(pid)
}

/// True for a zombie or a process that is gone.
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

/// Error with the tail of the daemon's log if it is not running.
pub fn check_alive(layout: &Layout, name: &str) -> Result<()> {
    if running(layout, name).is_some() {
        return Ok(());
    }
    let log = layout.logs().join(format!("{name}.log"));
    bail!(
        "{name} is not running; last log lines of {}:\n{}",
        log.display(),
        tail(&log, 15)
    );
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGTERM, then SIGKILL after `grace`; Ok when it was not running.
pub fn stop(layout: &Layout, name: &str, grace: Duration) {
    let Some(pid) = running(layout, name) else {
        let _ = std::fs::remove_file(layout.pids().join(format!("{name}.pid")));
        return;
    };
    let p = Pid::from_raw(pid as i32);
    let _ = kill(p, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if running(layout, name).is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if running(layout, name).is_some() {
        let _ = kill(p, Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(layout.pids().join(format!("{name}.pid")));
}

/// A command run inside a node's network and mount namespaces (the control-plane node's
/// network namespace is the host's own).
pub fn in_node(node: &super::NodeSpec, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    if let Some(net) = node.netns_path() {
        c.arg(format!("--net={}", net.display()));
    }
    c.arg(format!("--mount={}", node.mntns_path().display()))
        .arg("--")
        .arg(prog);
    c
}
