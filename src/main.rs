//! The rxmigrate command line (this branch: `inspect` and `verify` only).

use clap::{Parser, Subcommand};
use rxmigrate::inspect::{self, InspectError};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rxmigrate",
    version,
    about = "Xen save / restore / live migration"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
}

fn open(path: &str) -> io::Result<Box<dyn Read>> {
    if path == "-" {
        Ok(Box::new(io::stdin().lock()))
    } else {
        Ok(Box::new(File::open(path)?))
    }
}

/// `inspect::inspect` or `inspect::verify`.
type Command = fn(&mut dyn Read, bool, &mut dyn Write) -> Result<inspect::Summary, InspectError>;

fn main() -> ExitCode {
    env_logger::init();
    let cli = Cli::parse();
    let (file, json, run): (&String, bool, Command) = match &cli.cmd {
        Cmd::Inspect { json, file } => (file, *json, inspect::inspect),
        Cmd::Verify { json, file } => (file, *json, inspect::verify),
    };
    let input = match open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rxmigrate: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    // One large buffer: records are read in small pieces.
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut out = BufWriter::new(io::stdout().lock());
    match run(&mut input, json, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        // The report (with the error) is already on stdout.
        Err(InspectError::Output(e)) => {
            eprintln!("rxmigrate: writing output: {e}");
            ExitCode::from(2)
        }
        Err(_) => ExitCode::from(1),
    }
}
