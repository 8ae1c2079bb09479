//! `rxmigrate sim …`: manage simulated Xen hosts and their guests.

use crate::hv::sim::{self, GuestConfig, SimHost, TrackingMode, WorkloadParams};
use crate::hv::{DomId, GuestType, Hypervisor};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    Pv,
    Hvm,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Domain name (unique on the host).
    #[arg(long)]
    pub name: String,
    /// Guest flavour.
    #[arg(long = "type", value_enum, default_value = "pv")]
    pub guest_type: TypeArg,
    /// Memory in MiB.
    #[arg(long, default_value_t = 64)]
    pub mem: u64,
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// idle, uniform, hot-set, streaming, read-mostly, phase-change, or
    /// trace:FILE[@Nx] (a recorded trace at N times its recorded rate;
    /// --rate does not apply to it).
    #[arg(long, default_value = "hot-set")]
    pub workload: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Page writes per second (0 = as fast as possible).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Hot-set size in pages (0 = 1/64 of the data pages).
    #[arg(long, default_value_t = 0)]
    pub hot_pages: u64,
    /// Per mille of steps that hit the hot set (0 = 900).
    #[arg(long, default_value_t = 0)]
    pub hot_permille: u32,
    /// Per mille of steps that write, for read-mostly (0 = 20).
    #[arg(long, default_value_t = 0)]
    pub write_permille: u32,
    /// Steps per phase, for phase-change (0 = automatic).
    #[arg(long, default_value_t = 0)]
    pub phase_steps: u64,
    /// Force the dirty-tracking mode (uffd or soft).
    #[arg(long)]
    pub tracking: Option<String>,
    /// Create paused at step 0 (like `xl create -p`).
    #[arg(long, short = 'p')]
    pub paused: bool,
}

#[derive(Debug, Subcommand)]
pub enum SimCmd {
    /// Create and start a simulated guest; prints its domain id.
    Create(CreateArgs),
    /// List the host's domains.
    List,
    /// Destroy a domain (kills its guest process, frees its RAM).
    Destroy { domain: String },
    /// Show the host (and one domain's) state, including the tracking mode.
    Status { domain: Option<String> },
    /// Compare a domain's RAM with a fresh reference run to the same step.
    Check { domain: String },
    /// Pause a domain at a step boundary.
    Pause { domain: String },
    /// Unpause a domain (starts a restored domain's guest).
    Unpause { domain: String },
}

fn host_of(hv_spec: Option<&str>) -> Result<SimHost> {
    let env = std::env::var("RXMIGRATE_HV").ok().filter(|s| !s.is_empty());
    let spec = hv_spec.map(str::to_string).or(env);
    let dir = match spec.as_deref() {
        None | Some("sim") => sim::default_dir(),
        Some(s) => match s.strip_prefix("sim:") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => bail!("`rxmigrate sim` needs a simulated host (--hv sim:DIR), not {s:?}"),
        },
    };
    SimHost::open(&dir).with_context(|| format!("opening simulated host {}", dir.display()))
}

fn lookup(host: &SimHost, d: &str) -> Result<DomId> {
    Ok(host.lookup(d)?)
}

pub fn run(hv_spec: Option<&str>, cmd: SimCmd) -> Result<()> {
    let host = host_of(hv_spec)?;
    match cmd {
        SimCmd::Create(a) => {
            let tracking = a
                .tracking
                .as_deref()
                .map(str::parse::<TrackingMode>)
                .transpose()?;
            let (workload, trace) = sim::parse_workload(&a.workload)?;
            let cfg = GuestConfig {
                name: a.name,
                guest_type: match a.guest_type {
                    TypeArg::Pv => GuestType::Pv,
                    TypeArg::Hvm => GuestType::Hvm,
                },
                mem_mib: a.mem,
                vcpus: a.vcpus,
                workload,
                params: WorkloadParams {
                    hot_pages: a.hot_pages,
                    hot_permille: a.hot_permille,
                    write_permille: a.write_permille,
                    phase_steps: a.phase_steps,
                },
                seed: a.seed,
                rate: a.rate,
                tracking,
                paused: a.paused,
                trace,
            };
            let id = host.create_guest(&cfg)?;
            println!("{id}");
        }
        SimCmd::List => {
            println!(
                "{:<20} {:>4} {:>7} {:>5} {:<4} {:<10} {:>12} {:<8}",
                "Name", "ID", "Mem", "VCPUs", "Type", "State", "Step", "Tracking"
            );
            for i in host.list_domains()? {
                let mode = host
                    .tracking_mode(i.domid)?
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<20} {:>4} {:>7} {:>5} {:<4} {:<10} {:>12} {:<8}",
                    i.name,
                    i.domid,
                    host.meta(i.domid)?.pages() / 256,
                    i.online_vcpus.len(),
                    i.guest_type,
                    host.state_name(i.domid)?,
                    host.step(i.domid)?,
                    mode
                );
            }
        }
        SimCmd::Destroy { domain } => {
            let id = lookup(&host, &domain)?;
            host.destroy(id)?;
        }
        SimCmd::Status { domain } => {
            println!("host: {}", host.describe());
            println!("kernel write tracking: {}", sim::probe_tracking());
            if let Ok(f) = std::env::var("RXMIGRATE_SIM_TRACKING") {
                println!("forced by RXMIGRATE_SIM_TRACKING: {f}");
            }
            let ids: Vec<DomId> = match domain {
                Some(d) => vec![lookup(&host, &d)?],
                None => host.list_domains()?.iter().map(|i| i.domid).collect(),
            };
            for id in ids {
                let i = host.domain_info(id)?;
                let mode = host
                    .tracking_mode(id)?
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "domain {id} ({}): {}{}, {} MiB, state {}, step {}, tracking {mode}, \
                     log-dirty {}",
                    i.name,
                    i.guest_type,
                    if i.paused { " (paused)" } else { "" },
                    host.meta(id)?.pages() / 256,
                    host.state_name(id)?,
                    host.step(id)?,
                    if host.logdirty_enabled(id)? {
                        "on"
                    } else {
                        "off"
                    }
                );
                let msg = host.message(id)?;
                if !msg.is_empty() {
                    println!("  message: {msg}");
                }
                println!("  log: {}", host.log_path(id).display());
            }
        }
        SimCmd::Check { domain } => {
            let id = lookup(&host, &domain)?;
            let r = sim::check(&host, id)?;
            println!("{r}");
            if !r.ok() {
                bail!("domain {id} does not match its reference");
            }
        }
        SimCmd::Pause { domain } => host.pause(lookup(&host, &domain)?)?,
        SimCmd::Unpause { domain } => host.unpause(lookup(&host, &domain)?)?,
    }
    Ok(())
}

/// The hidden `sim-guest` entry point: detach and run one guest.
pub fn guest_main(dir: &std::path::Path, dom: DomId) -> Result<()> {
    sim::guest::daemonize_and_run(dir, dom)?;
    Ok(())
}
