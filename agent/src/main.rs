//! `weft-agent`: the node agent. See `weft-agent --help`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use weft_agent::config::{Cli, Command, LogFormat};
use weft_agent::run;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.opts.log_format);
    match weft_common::http_serve::raise_nofile_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let result = match cli.command {
        Some(Command::Cleanup) => run::cleanup(&cli.opts).await,
        Some(Command::InstallCni(args)) => args.run().map_err(anyhow::Error::from),
        None => run::run(cli.opts).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Already logged, with both CIDR sets, where it was detected.
        Err(e) if e.is::<weft_agent::reconcile::PodCidrsChanged>() => {
            ExitCode::from(run::EXIT_POD_CIDRS_CHANGED)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "weft-agent failed");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; the level filter comes from RUST_LOG (default: info). Colours only
/// when stderr is a terminal: `kubectl logs` and journald show escapes verbatim.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
