//! `weft-e2e`: bring a local cluster up and down, run the connectivity suite, and run
//! the benchmarks. Every benchmark prints its figures and ends with one JSON line.

use clap::{Parser, Subcommand};

mod bench;

#[derive(Parser)]
#[command(name = "weft-e2e", version, about = "weft end-to-end tooling and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one benchmark: cni, agent or controller.
    Bench {
        #[arg(value_enum)]
        name: bench::Name,
        /// Extra arguments for the benchmark.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { name, args } => bench::run(name, &args),
    }
}
