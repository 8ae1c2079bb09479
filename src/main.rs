use clap::{Parser, Subcommand};
use rxmigrate::cli;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "rxmigrate",
    version,
    about = "Xen save / restore / live migration"
)]
struct Cli {
    /// Hypervisor: sim:DIR (simulated host in DIR) or xen. Default: env
    /// RXMIGRATE_HV, else the simulated host in ~/.local/state/rxmigrate/sim.
    #[arg(long, global = true)]
    hv: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage simulated Xen hosts and guests.
    #[command(subcommand)]
    Sim(cli::sim::SimCmd),
    /// Run one simulated guest (started by the simulated host).
    #[command(hide = true)]
    SimGuest {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        dom: u32,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("RXMIGRATE_LOG", "warn")).init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Sim(c) => cli::sim::run(cli.hv.as_deref(), c),
        Cmd::SimGuest { dir, dom } => cli::sim::guest_main(&dir, dom),
    }
}
