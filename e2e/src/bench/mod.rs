//! Benchmarks. Each prints human-readable figures and ends with one JSON line.

mod agent;
mod agent_change;
mod cni;
mod controller;
mod flannel;
mod policy;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Name {
    Cni,
    Agent,
    Controller,
    Flannel,
    Policy,
}

pub fn run(name: Name, args: &[String]) -> anyhow::Result<()> {
    match name {
        Name::Cni => cni::run(args),
        Name::Agent => agent::run(args),
        Name::Controller => controller::run(args),
        Name::Flannel => flannel::run(args),
        Name::Policy => policy::run(args),
    }
}
