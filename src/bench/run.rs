//! One live migration between the two simulated hosts: a fresh guest on the
//! source, the receiver in a thread, the stream through the sender's rate
//! limiter over a socket pair, then the destination copy is destroyed.

use super::contents::{fill, Contents};
use super::netns::NetnsLink;
use super::results::RunResult;
use super::suite::Scenario;
use super::{BenchError, Observer};
use crate::hv::sim::{GuestConfig, SimHost};
use crate::hv::{DomId, GuestType, Hypervisor};
use crate::migrate::{self, SendOptions};
use crate::precopy;
use crate::save::SaveHooks;
use crate::stats::{RoundStats, Timeline};
use crate::transport::RateLimited;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Which run of the suite this is.
#[derive(Debug, Clone)]
pub struct RunSpec<'a> {
    pub size_mib: u64,
    pub scenario: &'a Scenario,
    pub policy: &'a str,
    pub repeat: u32,
    pub seed: u64,
    pub guest_type: GuestType,
    pub bandwidth: u64,
    pub warmup: Duration,
    pub contents: Contents,
    /// Over a tc-shaped veth pair instead of the sender's rate limiter.
    pub link: Option<&'a NetnsLink>,
}

impl RunSpec<'_> {
    pub fn label(&self) -> String {
        format!(
            "{} MiB {} {} #{}",
            self.size_mib,
            self.scenario.name,
            self.policy,
            self.repeat + 1
        )
    }

    fn guest(&self) -> GuestConfig {
        let mut g = GuestConfig::new("bench", self.guest_type, self.size_mib, self.scenario.kind);
        g.params = self.scenario.params_for(self.size_mib);
        g.seed = self.seed;
        g.rate = self.scenario.steps_per_s(self.bandwidth);
        g.trace = self.scenario.trace.as_ref().map(|t| t.spec.clone());
        // A filled guest starts paused: its pages are written before its
        // workload runs.
        g.paused = self.contents == Contents::Filled;
        g
    }
}

/// Forwards the engine's per-round statistics to the observer.
struct Hooks<'a> {
    obs: &'a mut dyn Observer,
}
impl SaveHooks for Hooks<'_> {
    fn round_done(&mut self, stats: &RoundStats) {
        self.obs.round_done(stats);
    }
}

/// Destroy every domain left on a host (after a failed run).
fn clear_host(host: &SimHost) {
    if let Ok(doms) = host.list_domains() {
        for d in doms {
            if let Err(e) = host.destroy(d.domid) {
                log::warn!("bench: destroying leftover domain {}: {e}", d.domid);
            }
        }
    }
}

/// Run one migration from `src` to the host in `dst_dir`.
pub fn run_one(
    src: &SimHost,
    dst_dir: &Path,
    spec: &RunSpec<'_>,
    obs: &mut dyn Observer,
) -> Result<RunResult, BenchError> {
    let fail = |msg: String| BenchError::Run {
        case: spec.label(),
        msg,
    };
    let dst = SimHost::open(dst_dir)?;
    let guest = spec.guest();
    let dom = src.create_guest(&guest)?;
    let result = start_guest(src, dom, spec, guest.pages())
        .and_then(|()| migrate_guest(src, dom, dst_dir, spec, obs));
    let (outcome, dst_dom, step0, elapsed) = match result {
        Ok(x) => x,
        Err(e) => {
            clear_host(src);
            clear_host(&dst);
            return Err(fail(e));
        }
    };
    // Steps the guest made from the start of the migration to now: whether
    // it kept to its rate while sharing the machine with the migration.
    let step1 = dst.step(dst_dom).unwrap_or(step0);
    let destroyed = dst.destroy(dst_dom);
    clear_host(src);
    destroyed?;
    Ok(RunResult::new(
        spec,
        guest.rate,
        &outcome,
        step1.saturating_sub(step0) as f64 / elapsed.as_secs_f64().max(1e-9),
    ))
}

/// Fill a paused guest's memory when the run asks for it, then let it run.
fn start_guest(src: &SimHost, dom: DomId, spec: &RunSpec<'_>, pages: u64) -> Result<(), String> {
    if spec.contents == Contents::Filled {
        fill(src, dom, spec.guest_type, pages).map_err(|e| format!("filling the guest: {e}"))?;
        src.unpause(dom).map_err(|e| e.to_string())?;
    }
    Ok(())
}

type Migrated = (migrate::MigrateOutcome, DomId, u64, Duration);

/// The receiving end: open the destination host, take the connection,
/// receive. Returns the new domain and the receiver's marks.
fn receive<S: Read + Write>(
    dst_dir: &Path,
    data: impl Read,
    acks: S,
) -> Result<(DomId, Timeline), String> {
    let host = SimHost::open(dst_dir).map_err(|e| e.to_string())?;
    let opts = migrate::ReceiveOptions::default();
    migrate::receive(&host, BufReader::with_capacity(1 << 20, data), acks, &opts)
        .map(|o| (o.domid, o.timeline))
        .map_err(|e| format!("receiver: {e}"))
}

/// The receiver inside the link's namespace: listen, tell the sender where,
/// accept one connection.
fn receive_netns(
    dst_dir: &Path,
    link: &NetnsLink,
    tx: mpsc::Sender<SocketAddr>,
) -> Result<(DomId, Timeline), String> {
    link.enter()?;
    let listener = link.listen()?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tx.send(addr)
        .map_err(|_| "the sender went away".to_string())?;
    // Poll with a deadline: a sender that fails to connect must not leave
    // this thread (and the scope waiting for it) blocked forever.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    s.set_nonblocking(false)
        .map_err(|e| format!("socket: {e}"))?;
    let data = s.try_clone().map_err(|e| format!("socket: {e}"))?;
    receive(dst_dir, data, s)
}

fn migrate_guest(
    src: &SimHost,
    dom: DomId,
    dst_dir: &Path,
    spec: &RunSpec<'_>,
    obs: &mut dyn Observer,
) -> Result<Migrated, String> {
    thread::sleep(spec.warmup);
    let step0 = src.step(dom).map_err(|e| e.to_string())?;
    let mut policy = precopy::by_name(spec.policy).map_err(|e| e.to_string())?;
    let opts = SendOptions {
        policy: policy.as_mut(),
        hooks: &mut Hooks { obs },
        waits: Default::default(),
    };
    // Scoped: the receiver borrows the link and the host directory.
    thread::scope(|scope| {
        let (sent, receiver, started) = match spec.link {
            None => {
                let (s1, s2) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
                let data2 = s2.try_clone().map_err(|e| format!("socket: {e}"))?;
                let receiver = scope.spawn(move || receive(dst_dir, data2, s2));
                let data = s1.try_clone().map_err(|e| format!("socket: {e}"))?;
                // Buffer above the limiter, as `rxmigrate migrate` does: the
                // limiter sees large writes and paces them.
                let data =
                    BufWriter::with_capacity(1 << 20, RateLimited::new(data, spec.bandwidth));
                let started = Instant::now();
                (migrate::send(src, dom, s1, data, opts), receiver, started)
            }
            Some(link) => {
                let (tx, rx) = mpsc::channel();
                let receiver = scope.spawn(move || receive_netns(dst_dir, link, tx));
                let addr = match rx.recv() {
                    Ok(a) => a,
                    Err(_) => {
                        return Err(receiver
                            .join()
                            .map_err(|_| "the receiver thread panicked".to_string())
                            .and_then(|r| r.map(|_| ()))
                            .err()
                            .unwrap_or_else(|| "the receiver did not listen".into()))
                    }
                };
                let sock =
                    TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
                let data = sock.try_clone().map_err(|e| format!("socket: {e}"))?;
                // tc shapes the link; no limiter here.
                let data = BufWriter::with_capacity(1 << 20, data);
                let started = Instant::now();
                (migrate::send(src, dom, sock, data, opts), receiver, started)
            }
        };
        let elapsed = started.elapsed();
        let got = receiver
            .join()
            .map_err(|_| "the receiver thread panicked".to_string())?;
        match (sent, got) {
            (Ok(mut out), Ok((dst_dom, rx))) => {
                // Both ends ran on this host: one clock for the downtime's parts.
                out.merge_receiver(&rx);
                Ok((out, dst_dom, step0, elapsed))
            }
            (Err(e), Err(r)) => Err(format!("sender: {e}; {r}")),
            (Err(e), Ok(_)) => Err(format!("sender: {e}")),
            (Ok(_), Err(r)) => Err(r),
        }
    })
}
