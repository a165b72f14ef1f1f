//! `weft`: the CNI plugin. One process per call: reads `CNI_*` and the network config,
//! does the work on one current-thread runtime, answers on stdout (a result or a JSON
//! error) and logs on stderr (and the config's `logFile`). Never panics outward: a panic
//! becomes error code 106.

use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod add;
mod check;
mod del;
mod gc;
mod ipam;
mod link;
mod spec;
mod status;
mod version;

use spec::config::peek_version;
use spec::error::{CniError, DECODE, INTERNAL, IO_FAILURE};
use spec::{Command, Env, NetConf, Version};

/// Largest network config accepted on stdin.
const MAX_STDIN: u64 = 1 << 20;

fn main() {
    let outcome = std::panic::catch_unwind(run);
    let (out, ok) = match outcome {
        Ok(Ok(Some(v))) => (Some(v), true),
        Ok(Ok(None)) => (None, true),
        Ok(Err((e, version))) => {
            tracing::error!(code = e.code, msg = %e.msg, "failed");
            (Some(e.to_json(version.as_str())), false)
        }
        Err(_) => {
            let e = CniError::new(INTERNAL, "internal error: the plugin panicked (see stderr)");
            (Some(e.to_json(Version::LATEST.as_str())), false)
        }
    };
    if let Some(v) = out {
        let mut stdout = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut stdout, &v);
        let _ = stdout.write_all(b"\n");
        let _ = stdout.flush();
    }
    std::process::exit(if ok { 0 } else { 1 });
}

type Outcome = Result<Option<serde_json::Value>, (CniError, Version)>;

fn run() -> Outcome {
    let latest = Version::LATEST;
    let command = match std::env::var("CNI_COMMAND") {
        Ok(c) => Command::parse(&c).map_err(|e| (e, latest))?,
        Err(_) => {
            init_logging(None);
            return Err((CniError::invalid_env("CNI_COMMAND", "is not set"), latest));
        }
    };
    if command == Command::Version {
        return Ok(Some(version::run()));
    }
    let stdin = read_stdin().map_err(|e| {
        init_logging(None);
        (e, latest)
    })?;
    let label = peek_version(&stdin).unwrap_or(latest);
    let conf = match NetConf::parse(&stdin) {
        Ok(c) => c,
        Err(e) => {
            init_logging(None);
            return Err((e, label));
        }
    };
    let version = conf.version;
    init_logging(conf.log_file.as_deref());
    let env = Env::from_process().map_err(|e| (e, version))?;
    let span = tracing::info_span!(
        "cni",
        command = ?env.command,
        network = %conf.name,
        container_id = %env.container_id,
        ifname = %env.ifname,
    );
    let _enter = span.enter();
    version.supports(env.command).map_err(|e| (e, version))?;
    let out = match env.command {
        Command::Add => add::run(&env, &conf).map(Some),
        Command::Del => del::run(&env, &conf).map(|()| None),
        Command::Check => check::run(&env, &conf).map(|()| None),
        Command::Status => status::run(&conf).map(|()| None),
        Command::Gc => gc::run(&conf).map(|()| None),
        Command::Version => Ok(Some(version::run())),
    };
    out.map_err(|e| (e, version))
}

fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::with_capacity(4096);
    std::io::stdin()
        .lock()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            CniError::new(
                IO_FAILURE,
                format!("cannot read the network config from stdin: {e}"),
            )
        })?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(CniError::new(
            DECODE,
            format!("network config on stdin is larger than {MAX_STDIN} bytes"),
        ));
    }
    Ok(buf)
}

/// Logs to stderr, and to `log_file` when the config names one. Level from `WEFT_LOG`
/// (error, warn, info, debug, trace; default info).
fn init_logging(log_file: Option<&Path>) {
    let level = std::env::var("WEFT_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let file = log_file.and_then(|p| {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(f))
                    .with_ansi(false),
            ),
            Err(e) => {
                eprintln!("weft: cannot open log file {}: {e}", p.display());
                None
            }
        }
    });
    let _ = tracing_subscriber::registry()
        .with(level)
        .with(stderr)
        .with(file)
        .try_init();
}

/// Runs `f` on a current-thread runtime (netlink only needs IO).
pub fn runtime<T, F, Fut>(f: F) -> Result<T, CniError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, CniError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| CniError::io("tokio runtime", e))?;
    rt.block_on(f())
}
