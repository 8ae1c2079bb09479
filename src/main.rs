//! The rxmigrate command line.

use anyhow::Result;
use clap::Parser;
use rxmigrate::cli::args::{Cli, Cmd};
use rxmigrate::cli::{self, ops};
use rxmigrate::hv::open_hv;
use rxmigrate::inspect::{self, InspectError};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

fn open_input(path: &str) -> io::Result<Box<dyn Read>> {
    if path == "-" {
        Ok(Box::new(io::stdin().lock()))
    } else {
        Ok(Box::new(File::open(path)?))
    }
}

/// `inspect::inspect` or `inspect::verify`.
type StreamCommand =
    fn(&mut dyn Read, bool, &mut dyn Write) -> Result<inspect::Summary, InspectError>;

fn stream_command(file: &str, json: bool, run: StreamCommand) -> ExitCode {
    let input = match open_input(file) {
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

fn run(cli: Cli) -> Result<()> {
    let spec = cli.hv.as_deref();
    match cli.cmd {
        Cmd::Save(a) => ops::save(open_hv(spec)?.host(), &a),
        Cmd::Restore(a) => ops::restore(open_hv(spec)?.host(), &a),
        Cmd::Migrate(a) => {
            let backend = open_hv(spec)?;
            let spec = spec
                .map(str::to_string)
                .unwrap_or_else(|| backend.describe());
            ops::migrate(backend.host(), &spec, &a)
        }
        Cmd::Receive(a) => ops::receive(open_hv(spec)?.host(), &a),
        Cmd::Keygen(a) => cli::keys::run(&a),
        Cmd::Doctor(_) => unreachable!("handled in main"),
        Cmd::Bench(a) => cli::bench::run(spec, &a),
        Cmd::Sim(c) => cli::sim::run(spec, c),
        Cmd::SimGuest { dir, dom } => cli::sim::guest_main(&dir, dom),
        Cmd::Inspect { .. } | Cmd::Verify { .. } => unreachable!("handled in main"),
    }
}

/// The error and its causes, each said once: layers that show their cause
/// in their own message (`restore failed: {0}`) and also return it as
/// `source()` would otherwise repeat it for every layer of the chain.
fn chain_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("RUST_LOG", level)).init();
    match &cli.cmd {
        Cmd::Inspect { json, file } => return stream_command(file, *json, inspect::inspect),
        Cmd::Verify { json, file } => return stream_command(file, *json, inspect::verify),
        Cmd::Doctor(a) => return cli::doctor::run(cli.hv.as_deref(), a),
        // SIGINT/SIGTERM/SIGHUP stop these at a safe point, where their
        // failure path cleans up (source resumed, half-built domain gone).
        Cmd::Save(_) | Cmd::Restore(_) | Cmd::Migrate(_) | Cmd::Receive(_) => {
            if let Err(e) = rxmigrate::cancel::install() {
                eprintln!("rxmigrate: installing the signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        }
        _ => {}
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rxmigrate: {}", chain_once(&e));
            // Stopped by a signal: the shell's convention, 128 + signal.
            match rxmigrate::cancel::pending() {
                Some(sig) => ExitCode::from(128u8.saturating_add(sig as u8)),
                None => ExitCode::FAILURE,
            }
        }
    }
}
