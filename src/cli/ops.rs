//! `rxmigrate save | restore | migrate | receive`.

use crate::hv::Hypervisor;
use crate::migrate::{self, RestoreImageOptions, SendOptions};
use crate::precopy::{self, HotPage, HotPageParams, Policy, Xen33, Xen33Params, Xen4, Xen4Params};
use crate::restore::{parse_size, Limits, NoHooks};
use crate::save::{SaveHooks, SaveOptions};
use crate::stats::{RoundStats, StatsWriter, Summary};
use crate::transport::{parse_bandwidth, RateLimited};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const DEFAULT_PORT: u16 = 8002;

/// Pre-copy policy and its parameters.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Pre-copy policy: xen33 (Xen 3.3, the paper's baseline), xen4 (stock
    /// Xen), hotpage (hot pages only in the final round).
    #[arg(long, default_value = "hotpage", value_parser = clap::builder::PossibleValuesParser::new(precopy::POLICY_NAMES))]
    pub policy: String,
    /// Live rounds at most (default: 29 for xen33, 5 otherwise).
    #[arg(long)]
    pub max_rounds: Option<u32>,
    /// Stop when fewer pages than this are dirty (xen33: sent+skipped).
    #[arg(long, default_value_t = 50)]
    pub target_dirty: u64,
    /// Never send more than this many times guest memory (xen33, hotpage).
    #[arg(long, default_value_t = 3)]
    pub max_factor: u64,
    /// hotpage: consecutive dirty observations that make a page hot.
    #[arg(long, default_value_t = 2)]
    pub hot_threshold: u8,
    /// hotpage: keep hot pages held even when they cool down (the paper's rule).
    #[arg(long)]
    pub no_release: bool,
    /// hotpage: downtime target in ms for the final round's pages at the
    /// measured bandwidth: switch over as soon as they fit it, and send the
    /// coldest hot pages live before the switchover when the held ones
    /// alone would not. 0 turns the rule off.
    #[arg(long, default_value_t = precopy::HotPageParams::default().downtime_target_ms)]
    pub downtime_target_ms: u64,
}

impl PolicyArgs {
    pub fn build(&self) -> Result<Box<dyn Policy>> {
        Ok(match self.policy.as_str() {
            "xen33" => Box::new(Xen33::new(Xen33Params {
                max_rounds: self.max_rounds.unwrap_or(29),
                min_progress: self.target_dirty,
                max_factor: self.max_factor,
            })),
            "xen4" => Box::new(Xen4::new(Xen4Params {
                max_rounds: self.max_rounds.unwrap_or(5),
                target_dirty: self.target_dirty,
            })),
            "hotpage" => Box::new(HotPage::new(HotPageParams {
                hot_threshold: self.hot_threshold,
                max_rounds: self.max_rounds.unwrap_or(5),
                target_dirty: self.target_dirty,
                max_factor: self.max_factor,
                release_cooled: !self.no_release,
                downtime_target_ms: self.downtime_target_ms,
            })?),
            other => return Err(precopy::PolicyError::Unknown(other.into()).into()),
        })
    }
}

/// Statistics and progress for the engines.
struct CliHooks {
    stats: Option<StatsWriter>,
    bar: Option<ProgressBar>,
}

impl CliHooks {
    fn new(stats: Option<&PathBuf>) -> Result<Self> {
        let stats = match stats {
            Some(p) => Some(StatsWriter::new(Box::new(
                File::create(p).with_context(|| format!("creating stats file {}", p.display()))?,
            ))),
            None => None,
        };
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        });
        Ok(CliHooks { stats, bar })
    }
    fn summary(&mut self, s: &Summary) -> Result<()> {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some(w) = &mut self.stats {
            w.summary(s).context("writing stats")?;
        }
        eprintln!("{s}");
        Ok(())
    }
}

impl SaveHooks for CliHooks {
    fn round_done(&mut self, r: &RoundStats) {
        if let Some(w) = &mut self.stats {
            if let Err(e) = w.round(r) {
                log::warn!("writing stats: {e}");
            }
        }
        let line = format!(
            "round {}{}: {} pages sent, {} skipped, {} hot, {:.1} MiB/s",
            r.round,
            if r.last { " (final)" } else { "" },
            r.pages_sent,
            r.pages_skipped,
            r.hot_pages,
            r.bandwidth / 1048576.0
        );
        match &self.bar {
            Some(b) => b.set_message(line),
            None => log::info!("{line}"),
        }
    }
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Domain id or name.
    pub domain: String,
    /// Output file (`-` for stdout).
    pub file: PathBuf,
    /// Pre-copy while the guest runs instead of suspending it first.
    #[arg(long)]
    pub live: bool,
    /// Leave the domain running after the save (xl save -c).
    #[arg(short = 'c', long)]
    pub checkpoint: bool,
    /// Write a bare libxc stream instead of an xl save image.
    #[arg(long)]
    pub raw: bool,
    /// Write per-round statistics and a summary as JSON lines.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn save(hv: &dyn Hypervisor, a: &SaveArgs) -> Result<()> {
    let dom = hv.lookup(&a.domain)?;
    let mut policy = a.policy.build()?;
    let mut hooks = CliHooks::new(a.stats.as_ref())?;
    let out: Box<dyn Write> = if a.file.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&a.file).with_context(|| format!("creating {}", a.file.display()))?)
    };
    let (outcome, _) = migrate::save_image(
        hv,
        dom,
        BufWriter::with_capacity(1 << 20, out),
        policy.as_mut(),
        SaveOptions { live: a.live },
        &mut hooks,
        a.raw,
    )
    .inspect_err(|_| {
        if a.file.as_os_str() != "-" {
            let _ = std::fs::remove_file(&a.file);
        }
    })?;
    hooks.summary(&outcome.summary)?;
    if a.checkpoint {
        hv.resume(dom, true)?;
    } else {
        hv.destroy(dom)?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Save image (`-` for stdin).
    pub file: PathBuf,
    /// Read a bare libxc stream instead of an xl save image.
    #[arg(long)]
    pub raw: bool,
    /// Leave the restored domain paused.
    #[arg(short = 'p', long)]
    pub paused: bool,
    /// Name of the new domain (default: the name in the image).
    #[arg(long)]
    pub name: Option<String>,
    /// Guest memory in MiB, for raw HVM streams (they carry no config).
    #[arg(long)]
    pub memory: Option<u64>,
    /// Largest guest to restore (e.g. 4G, 512M; a bare number is MiB).
    /// Default: the host's free memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
}

/// The host's receiver limits, with `--max-memory` if given.
fn limits(hv: &dyn Hypervisor, max_memory: Option<u64>) -> Limits {
    match max_memory {
        Some(m) => Limits::new(m),
        None => Limits::for_host(hv),
    }
}

pub fn restore(hv: &dyn Hypervisor, a: &RestoreArgs) -> Result<()> {
    let input: Box<dyn std::io::Read> = if a.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?)
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let max_pfn = match a.memory {
        Some(mib) => match mib.checked_mul(256) {
            Some(pages) if pages > 0 => Some(pages - 1),
            _ => bail!("--memory {mib}: expected a guest size in MiB, at least 1"),
        },
        None => None,
    };
    let out = migrate::restore_image(
        hv,
        &mut input,
        &RestoreImageOptions {
            raw: a.raw,
            name: a.name.clone(),
            max_pfn,
            limits: Some(limits(hv, a.max_memory)),
        },
        &mut NoHooks,
    )
    .with_context(|| format!("restoring {}", a.file.display()))?;
    if !a.paused {
        if let Err(e) = hv.unpause(out.domid) {
            // A guest that cannot start is not left behind.
            if let Err(de) = hv.destroy(out.domid) {
                log::error!(
                    "destroying domain {} after it failed to start: {de}",
                    out.domid
                );
            }
            return Err(anyhow::Error::new(e).context(format!(
                "starting the restored domain {} (destroyed)",
                out.domid
            )));
        }
    }
    println!("{}", out.domid);
    eprintln!("restored domain {} ({} pages)", out.domid, out.pages);
    Ok(())
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Domain id or name.
    pub domain: String,
    /// Destination: HOST[:PORT] of an `rxmigrate receive --listen`, or with
    /// `-s` the argument handed to the command.
    pub host: String,
    /// Run `CMD HOST rxmigrate receive` and talk to it over its stdin/stdout,
    /// as `xl migrate -s` does (e.g. -s ssh). With -s "" the HOST string itself
    /// is the receiver command.
    #[arg(short = 's', long = "ssh-command")]
    pub command: Option<String>,
    /// The receiver's `--hv` with -s (default: the sender's).
    #[arg(long)]
    pub remote_hv: Option<String>,
    /// Limit the sender to this rate (e.g. 1G = 1 Gbit/s, 100M, 50MB).
    #[arg(long)]
    pub bandwidth: Option<String>,
    /// Write per-round statistics and a summary as JSON lines.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn migrate(hv: &dyn Hypervisor, hv_spec: &str, a: &MigrateArgs) -> Result<()> {
    let dom = hv.lookup(&a.domain)?;
    let rate = match &a.bandwidth {
        Some(b) => parse_bandwidth(b).map_err(anyhow::Error::msg)?,
        None => 0,
    };
    let mut policy = a.policy.build()?;
    let mut hooks = CliHooks::new(a.stats.as_ref())?;
    let outcome = match &a.command {
        None => {
            let addr = if a.host.contains(':') {
                a.host.clone()
            } else {
                format!("{}:{DEFAULT_PORT}", a.host)
            };
            let sock =
                TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
            sock.set_nodelay(true).ok();
            let acks = BufReader::new(sock.try_clone()?);
            let data = BufWriter::with_capacity(1 << 20, RateLimited::new(sock, rate));
            migrate::send(
                hv,
                dom,
                acks,
                data,
                SendOptions {
                    policy: policy.as_mut(),
                    hooks: &mut hooks,
                },
            )?
        }
        Some(cmd) => {
            let rune = if cmd.is_empty() {
                a.host.clone()
            } else {
                let exe = std::env::current_exe().context("locating rxmigrate")?;
                format!(
                    "{cmd} {} {} --hv {} receive",
                    a.host,
                    exe.display(),
                    a.remote_hv.as_deref().unwrap_or(hv_spec)
                )
            };
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(&rune)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting the receiver: {rune}"))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("receiver command has no pipes");
            };
            let data = BufWriter::with_capacity(1 << 20, RateLimited::new(stdin, rate));
            let r = migrate::send(
                hv,
                dom,
                BufReader::new(stdout),
                data,
                SendOptions {
                    policy: policy.as_mut(),
                    hooks: &mut hooks,
                },
            );
            let status = child.wait()?;
            let out = r?;
            if !status.success() {
                log::warn!("receiver command exited with {status}");
            }
            out
        }
    };
    hooks.summary(&outcome.summary)?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Listen on ADDR[:PORT] for one migration instead of using stdin/stdout.
    #[arg(long)]
    pub listen: Option<String>,
    /// Leave the received domain paused.
    #[arg(short = 'p', long)]
    pub paused: bool,
    /// Largest guest to receive (e.g. 4G, 512M; a bare number is MiB).
    /// Default: the host's free memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
}

pub fn receive(hv: &dyn Hypervisor, a: &ReceiveArgs) -> Result<()> {
    let limits = limits(hv, a.max_memory);
    let out = match &a.listen {
        Some(l) => {
            let addr = if l.contains(':') {
                l.clone()
            } else {
                format!("{l}:{DEFAULT_PORT}")
            };
            let listener =
                TcpListener::bind(&addr).with_context(|| format!("listening on {addr}"))?;
            eprintln!(
                "rxmigrate: waiting for a migration on {}",
                listener.local_addr()?
            );
            let (sock, peer) = listener.accept()?;
            eprintln!("rxmigrate: receiving from {peer}");
            let data = BufReader::with_capacity(1 << 20, sock.try_clone()?);
            migrate::receive_limited(hv, data, sock, a.paused, &limits)?
        }
        None => {
            let data = BufReader::with_capacity(1 << 20, std::io::stdin().lock());
            migrate::receive_limited(hv, data, std::io::stdout().lock(), a.paused, &limits)?
        }
    };
    eprintln!(
        "rxmigrate: received domain {} ({} pages)",
        out.domid, out.pages
    );
    Ok(())
}
