//! `weft-agent`: the node agent. See `weft-agent --help`.

use std::process::ExitCode;

use clap::Parser;
use weft_agent::config::{Cli, Command};
use weft_agent::run;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    run::init_logging(cli.opts.log_format);
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
