//! The `rxmigrate` command line's definition (clap), shared by the binary
//! and the generator of its man pages and completions (`rxmigrate-docgen`).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "rxmigrate",
    version = crate::version::LONG.as_str(),
    about = "Xen save / restore / live migration, byte-compatible with Xen's stream"
)]
pub struct Cli {
    /// Hypervisor: sim:DIR (simulated host in DIR) or xen. Default: env
    /// RXMIGRATE_HV, else xen where /dev/xen/privcmd exists, else the
    /// simulated host in ~/.local/state/rxmigrate/sim.
    #[arg(long, global = true)]
    pub hv: Option<String>,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Save a domain to an xl save image (non-live unless --live), as `xl save`.
    Save(super::ops::SaveArgs),
    /// Restore a domain from an xl save image (or a bare libxc stream).
    Restore(super::ops::RestoreArgs),
    /// Live-migrate a domain to `rxmigrate receive` (xl's handshake).
    Migrate(super::ops::MigrateArgs),
    /// Receive one migration (TCP with --listen, else stdin/stdout).
    Receive(super::ops::ReceiveArgs),
    /// Create this host's key for encrypted, authenticated migrations over
    /// TCP (key 0600, key.pub), and print the public key.
    Keygen(super::keys::KeygenArgs),
    /// Print the layers and records of a save file or stream, and a summary.
    Inspect {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// xl save file, libxl stream or bare libxc stream; `-` for stdin.
        file: String,
    },
    /// Check a save file or stream structurally, as Xen's verify-stream-v2
    /// does: exit 0 on a good stream, 1 with the first error otherwise.
    Verify {
        /// Print a JSON verdict instead of text.
        #[arg(long)]
        json: bool,
        /// xl save file, libxl stream or bare libxc stream; `-` for stdin.
        file: String,
    },
    /// Benchmark the pre-copy policies side by side: live migrations between
    /// two simulated hosts over a rate-limited link; writes a table, CSV,
    /// JSON and SVG plots.
    Bench(super::bench::BenchArgs),
    /// Check whether this host is ready for rxmigrate and its xl plugin: one
    /// line per check, with the fix for each that fails; exit 0 when ready.
    Doctor(super::doctor::DoctorArgs),
    /// Manage simulated Xen hosts and guests.
    #[command(subcommand)]
    Sim(super::sim::SimCmd),
    /// Run one simulated guest (started by the simulated host).
    #[command(hide = true)]
    SimGuest {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        dom: u32,
    },
}
