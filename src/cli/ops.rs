//! `rxmigrate save | restore | migrate | receive`.

use crate::hv::Host;
use crate::migrate::{self, ReceiveOptions, RestoreImageOptions, SendOptions};
use crate::precopy::{self, Policy, PolicySpec};
use crate::restore::{parse_size, Limits, NoHooks};
use crate::save::{SaveHooks, SaveOptions};
use crate::stats::{RestoreStats, RoundStats, StatsWriter, Summary, Timeline};
use crate::transport::keys::{KeyDir, Pin, PublicKey};
use crate::transport::tcp::{self, Listener, ReceiverAuth, SenderAuth};
use crate::transport::timed::{self, set_nonblocking, Timed, Timeouts, Waits};
use crate::transport::{parse_bandwidth, RateLimited, TransportError};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEFAULT_PORT: u16 = 8002;

/// Create `path` for guest memory or statistics, readable by us alone
/// (0600): a regular file there is replaced, not rewritten in place (a
/// reader that opened the old one sees nothing new); a device or FIFO
/// (`/dev/stdout`, a pipe) is written as it is.
fn create_private(path: &Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_file() => std::fs::remove_file(path)?,
        Ok(md) if !md.file_type().is_symlink() => {
            return OpenOptions::new().write(true).open(path);
        }
        // A symlink: followed, as the user named it; tightened below if it
        // leads to a regular file.
        Ok(_) => {
            let f = OpenOptions::new().write(true).truncate(true).open(path)?;
            let md = f.metadata()?;
            if md.is_file() && md.permissions().mode() & 0o077 != 0 {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            return Ok(f);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The limits of a migration's waits, in seconds.
#[derive(Args, Debug, Clone)]
pub struct TimeoutArgs {
    /// Stream inactivity (no byte moved for this long), and each message
    /// after the stream (permission to go, the report).
    #[arg(long, value_name = "SECS", default_value_t = timed::DEFAULT_IDLE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Connecting, the Noise handshake and the xl banner.
    #[arg(long, value_name = "SECS", default_value_t = timed::DEFAULT_HANDSHAKE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: u64,
}

impl TimeoutArgs {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            handshake: secs(self.handshake_timeout),
            idle: secs(self.timeout),
            ..Timeouts::default()
        }
    }
}

/// Where this host's key and trust files are.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Key directory: key, key.pub, authorized_peers, known_hosts
    /// [default: $RXMIGRATE_KEY_DIR, else /etc/rxmigrate].
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
}

impl KeyArgs {
    fn dir(&self) -> KeyDir {
        KeyDir::resolve(self.key_dir.as_deref())
    }
}

/// Pre-copy policy and its parameters.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Pre-copy policy: xen33 (Xen 3.3, the paper's baseline), xen4 (stock
    /// Xen), paper or hotpage (the paper's policy: hot pages only in the
    /// final round), hotpeek (its successor, docs/BENCHMARKS.md); NAME+ac
    /// adds --auto-converge (e.g. hotpage+ac).
    #[arg(long, default_value = "hotpage", value_parser = policy_name)]
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
    /// alone would not. 0 turns the rule off. Also --auto-converge's target.
    #[arg(long, default_value_t = precopy::HotPageParams::default().downtime_target_ms)]
    pub downtime_target_ms: u64,
    /// Throttle the guest (Xen: the scheduler's per-domain CPU cap) while
    /// the final round would not fit --downtime-target-ms otherwise; the old
    /// cap is put back when the rounds end. Works with every policy.
    #[arg(long)]
    pub auto_converge: bool,
}

/// A policy name as `--policy` takes it: one of the engine's names, with or
/// without the auto-converge suffix.
fn policy_name(s: &str) -> std::result::Result<String, String> {
    match precopy::parse_name(s) {
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

impl PolicyArgs {
    /// The policy these options name, as the engine takes it.
    pub fn spec(&self) -> PolicySpec {
        PolicySpec {
            policy: self.policy.clone(),
            max_rounds: self.max_rounds,
            target_dirty: self.target_dirty,
            max_factor: self.max_factor,
            hot_threshold: self.hot_threshold,
            release_cooled: !self.no_release,
            downtime_target_ms: self.downtime_target_ms,
            auto_converge: self.auto_converge,
        }
    }

    pub fn build(&self) -> Result<Box<dyn Policy>> {
        Ok(self.spec().build()?)
    }
}

/// Statistics and progress for the engines.
struct CliHooks {
    stats: Option<StatsWriter>,
    bar: Option<ProgressBar>,
}

/// The `--stats` file, created (0600) before the work starts.
fn stats_file(path: Option<&PathBuf>) -> Result<Option<StatsWriter>> {
    Ok(match path {
        Some(p) => Some(StatsWriter::new(Box::new(
            create_private(p).with_context(|| format!("creating stats file {}", p.display()))?,
        ))),
        None => None,
    })
}

/// A restore's page-data line in the `--stats` file; the restore stands if
/// the file cannot take it.
fn restore_stats(w: Option<StatsWriter>, s: &RestoreStats, marks: &Timeline) {
    if let Some(mut w) = w {
        if let Err(e) = w.restore(s, marks) {
            log::warn!("writing stats: {e}");
        }
    }
}

impl CliHooks {
    fn new(stats: Option<&PathBuf>) -> Result<Self> {
        let stats = stats_file(stats)?;
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

pub fn save(host: Host<'_>, a: &SaveArgs) -> Result<()> {
    let hv = host.hv;
    let dom = hv.lookup(&a.domain)?;
    let mut policy = a.policy.build()?;
    let mut hooks = CliHooks::new(a.stats.as_ref())?;
    let out: Box<dyn Write> = if a.file.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(create_private(&a.file).with_context(|| format!("creating {}", a.file.display()))?)
    };
    let (outcome, _) = migrate::save_image(
        host,
        dom,
        BufWriter::with_capacity(1 << 20, out),
        policy.as_mut(),
        SaveOptions { live: a.live },
        &mut hooks,
        a.raw,
    )
    .inspect_err(|_| {
        // Only a half-written image of ours, never a device we wrote to.
        let ours = std::fs::symlink_metadata(&a.file).is_ok_and(|m| m.is_file());
        if a.file.as_os_str() != "-" && ours {
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

/// `--name`: a domain name as a received one must be (trust::name).
fn domain_name(s: &str) -> std::result::Result<String, String> {
    crate::trust::check_domain_name(s)
        .map(|()| s.to_string())
        .map_err(|e| format!("the name {e}"))
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
    #[arg(long, value_parser = domain_name)]
    pub name: Option<String>,
    /// Guest memory in MiB, for raw HVM streams (they carry no config).
    #[arg(long)]
    pub memory: Option<u64>,
    /// Accept the image config's device-model program, QEMU arguments and
    /// paths outside Xen's directories (refused by default; docs/SECURITY.md).
    #[arg(long)]
    pub trust_config: bool,
    /// Largest guest to restore (e.g. 4G, 512M; a bare number is MiB).
    /// Default: the host's free memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Write where the page data's time went (a `restore` JSON line).
    #[arg(long)]
    pub stats: Option<PathBuf>,
}

/// The host's receiver limits, with `--max-memory` if given.
fn limits(host: Host<'_>, max_memory: Option<u64>) -> Limits {
    match max_memory {
        Some(m) => Limits::new(m),
        None => Limits::for_host(host.hv),
    }
}

pub fn restore(host: Host<'_>, a: &RestoreArgs) -> Result<()> {
    let hv = host.hv;
    let stats = stats_file(a.stats.as_ref())?;
    let input: Box<dyn std::io::Read> = if a.file.as_os_str() == "-" {
        // A pipe may go silent: poll it so a signal still ends the wait.
        let stdin = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .context("duplicating stdin")?;
        Box::new(Timed::new(stdin, timed::Timer::default(), "stdin"))
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
        host,
        &mut input,
        &RestoreImageOptions {
            raw: a.raw,
            name: a.name.clone(),
            max_pfn,
            trust_config: a.trust_config,
            limits: Some(limits(host, a.max_memory)),
        },
        &mut NoHooks,
    )
    .with_context(|| format!("restoring {}", a.file.display()))?;
    restore_stats(stats, &out.stats, &out.timeline);
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
    /// Plain TCP, no authentication, no encryption: only to a receiver on
    /// loopback that runs `receive --listen --insecure`.
    #[arg(long, conflicts_with_all = ["command", "peer_key"])]
    pub insecure: bool,
    /// The receiver's public key (its key.pub), instead of a known_hosts line.
    #[arg(long, value_name = "KEY", conflicts_with = "command")]
    pub peer_key: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// How long to wait for the receiver's READY after the stream (it
    /// restores the guest and starts its device model first).
    #[arg(long, value_name = "SECS", default_value_t = timed::DEFAULT_READY.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ready_timeout: u64,
    /// Limit the sender to this rate (e.g. 1G = 1 Gbit/s, 100M, 50MB).
    #[arg(long)]
    pub bandwidth: Option<String>,
    /// Write per-round statistics and a summary as JSON lines.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// The sender's keys and the receiver's pinned key.
fn sender_auth(a: &MigrateArgs, host: &str, port: u16) -> Result<SenderAuth, TransportError> {
    if a.insecure {
        return Ok(SenderAuth::Insecure);
    }
    let dir = a.keys.dir();
    let pin = match &a.peer_key {
        Some(k) => Pin {
            keys: vec![PublicKey::parse(k).map_err(|msg| TransportError::BadKey {
                what: "--peer-key".into(),
                msg,
            })?],
            source: "--peer-key".into(),
        },
        None => dir
            .load_known_hosts()?
            .pin(host, port)
            .ok_or_else(|| TransportError::NoPin {
                host: host.to_string(),
                known_hosts: dir.known_hosts_file(),
            })?,
    };
    Ok(SenderAuth::Keys {
        me: dir.load_key()?,
        pin,
    })
}

/// Wait for the receiver command to end once its pipes are closed (it
/// cleans up on EOF); kill it only if it does not within `limit`.
fn reap(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() >= end {
            log::warn!(
                "the receiver command did not exit within {} s of the end; killing it",
                limit.as_secs()
            );
            let _ = child.kill();
            return Ok(child.wait()?);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn migrate(here: Host<'_>, hv_spec: &str, a: &MigrateArgs) -> Result<()> {
    let hv = here.hv;
    let dom = hv.lookup(&a.domain)?;
    let rate = match &a.bandwidth {
        Some(b) => parse_bandwidth(b).map_err(anyhow::Error::msg)?,
        None => 0,
    };
    let mut policy = a.policy.build()?;
    let mut hooks = CliHooks::new(a.stats.as_ref())?;
    let waits = Waits::new(Timeouts {
        ready: secs(a.ready_timeout),
        ..a.timeouts.timeouts()
    });
    let outcome = match &a.command {
        None => {
            let (host, port) = tcp::split_host_port(&a.host, DEFAULT_PORT)?;
            let auth = sender_auth(a, &host, port)?;
            let conn = tcp::connect(&host, port, &auth, &waits)?;
            match conn.peer_key {
                Some(k) => log::info!("connected to {} (key {})", conn.peer, k.fingerprint()),
                None => log::info!("connected to {} (--insecure: plain TCP)", conn.peer),
            }
            let acks = BufReader::new(conn.reader);
            let data = BufWriter::with_capacity(1 << 20, RateLimited::new(conn.writer, rate));
            migrate::send(
                here,
                dom,
                acks,
                data,
                SendOptions {
                    policy: policy.as_mut(),
                    hooks: &mut hooks,
                    waits,
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
            set_nonblocking(stdin.as_fd()).context("receiver command's stdin")?;
            set_nonblocking(stdout.as_fd()).context("receiver command's stdout")?;
            let who = "the receiver command";
            let data = BufWriter::with_capacity(
                1 << 20,
                RateLimited::new(Timed::new(stdin, waits.timer.clone(), who), rate),
            );
            let acks = BufReader::new(Timed::new(stdout, waits.timer.clone(), who));
            // Both pipes are closed when send returns.
            let r = migrate::send(
                here,
                dom,
                acks,
                data,
                SendOptions {
                    policy: policy.as_mut(),
                    hooks: &mut hooks,
                    waits,
                },
            );
            let status = reap(&mut child, secs(a.timeouts.handshake_timeout))?;
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
    /// Encrypted and authenticated: needs this host's key and an
    /// authorized_peers file in the key directory.
    #[arg(long)]
    pub listen: Option<String>,
    /// With --listen: plain TCP, no authentication, no encryption; binds
    /// loopback addresses only.
    #[arg(long, requires = "listen")]
    pub insecure: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// With --listen: how long to wait for an authenticated sender; 0 waits
    /// for ever.
    #[arg(long, value_name = "SECS", default_value_t = timed::DEFAULT_ACCEPT.as_secs())]
    pub accept_timeout: u64,
    /// Leave the received domain paused.
    #[arg(short = 'p', long)]
    pub paused: bool,
    /// Accept the sender's device-model program, QEMU arguments and paths
    /// outside Xen's directories (refused by default; docs/SECURITY.md).
    #[arg(long)]
    pub trust_config: bool,
    /// Largest guest to receive (e.g. 4G, 512M; a bare number is MiB).
    /// Default: the host's free memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Write where the page data's time went (a `restore` JSON line).
    #[arg(long)]
    pub stats: Option<PathBuf>,
}

fn receiver_auth(a: &ReceiveArgs) -> Result<ReceiverAuth> {
    if a.insecure {
        return Ok(ReceiverAuth::Insecure);
    }
    let dir = a.keys.dir();
    let load = || -> Result<ReceiverAuth, TransportError> {
        Ok(ReceiverAuth::Keys {
            me: dir.load_key()?,
            authorized: dir.load_authorized()?,
        })
    };
    load().with_context(|| {
        format!(
            "receive --listen takes authenticated senders only and has no usable keys in {} \
             (docs/SECURITY.md; --insecure for plain TCP on loopback)",
            dir.path().display()
        )
    })
}

pub fn receive(host: Host<'_>, a: &ReceiveArgs) -> Result<()> {
    let stats = stats_file(a.stats.as_ref())?;
    let opts = ReceiveOptions {
        paused: a.paused,
        trust_config: a.trust_config,
        limits: Some(limits(host, a.max_memory)),
        waits: Waits::new(Timeouts {
            accept: (a.accept_timeout > 0).then(|| secs(a.accept_timeout)),
            ..a.timeouts.timeouts()
        }),
    };
    let out = match &a.listen {
        Some(l) => {
            let auth = receiver_auth(a)?;
            let listener = Listener::bind(l, DEFAULT_PORT, auth)?;
            let at = listener.local_addr();
            if listener.is_secure() {
                eprintln!("rxmigrate: waiting for a migration on {at} (encrypted, authenticated senders only)");
            } else {
                eprintln!(
                    "rxmigrate: WARNING: --insecure: plain TCP, no authentication, no encryption; \
                     listening on loopback {at} only"
                );
                eprintln!("rxmigrate: waiting for a migration on {at}");
            }
            let conn = listener.accept(&opts.waits)?;
            match conn.peer_key {
                Some(k) => eprintln!(
                    "rxmigrate: receiving from {} (key {})",
                    conn.peer,
                    k.fingerprint()
                ),
                None => eprintln!("rxmigrate: receiving from {}", conn.peer),
            }
            // One migration per run: later peers are told so until it ends.
            let _busy = listener.refuse_others();
            let data = BufReader::with_capacity(1 << 20, conn.reader);
            migrate::receive(host, data, conn.writer, &opts)?
        }
        None => {
            // Unbuffered copies of fds 0 and 1: the waits poll the
            // descriptor, so no buffer may sit between them and the reads.
            let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map(File::from);
            let stdin = dup(io::stdin().as_fd()).context("duplicating stdin")?;
            let stdout = dup(io::stdout().as_fd()).context("duplicating stdout")?;
            let data = BufReader::with_capacity(
                1 << 20,
                Timed::new(stdin, opts.waits.timer.clone(), "the sender (stdin)"),
            );
            let acks = Timed::new(stdout, opts.waits.timer.clone(), "the sender (stdout)");
            migrate::receive(host, data, acks, &opts)?
        }
    };
    restore_stats(stats, &out.stats, &out.timeline);
    eprintln!(
        "rxmigrate: received domain {} ({} pages)",
        out.domid, out.pages
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::policy_name;

    #[test]
    fn policy_takes_every_engine_name_with_or_without_auto_converge() {
        for name in [
            "xen33",
            "xen4",
            "paper",
            "hotpage",
            "hotpeek",
            "hotpage+ac",
            "xen4+ac",
        ] {
            assert_eq!(policy_name(name).as_deref(), Ok(name));
        }
        for bad in ["", "+ac", "xen5", "hotpage+ac+ac", "hotpage+"] {
            let e = policy_name(bad).unwrap_err();
            assert!(e.contains("known: xen33, xen4"), "{bad}: {e}");
        }
    }
}
