//! `rxmigrate bench --throughput`: how fast the engine moves memory when
//! nothing slows it down.
//!
//! An idle guest migrates unthrottled between two simulated hosts over
//! loopback TCP (127.0.0.1, one connection, 1 MiB buffers on both ends as
//! `rxmigrate migrate` / `receive` use). In the same run, the same number
//! of bytes goes through a plain loopback TCP copy (a writer thread and a
//! reader thread, 1 MiB buffers): the baseline the engine is measured
//! against. CPU time is taken per thread (`getrusage(RUSAGE_THREAD)`) around
//! the saving and the restoring side.
//!
//! Two guests per size: `filled`, an idle guest whose data pages the bench
//! fills with non-zero bytes before it starts (every page travels with its
//! contents: the engine's copy path), and `fresh`, an idle guest as built
//! (its data pages are zero: they travel as XALLOC entries without data).

use super::contents::{fill, Contents};
use super::BenchError;
use crate::hv::sim::{GuestConfig, SimHost, WorkloadKind};
use crate::hv::{DomId, GuestType, Hypervisor};
use crate::migrate::{self, SendOptions};
use crate::save::DirectHooks;
use serde::Serialize;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Steps per second of the idle guest (as the policy suite's idle case).
const IDLE_STEPS_PER_S: u64 = 1000;
/// Buffer size on every socket end.
const BUF: usize = 1 << 20;

/// What the throughput suite runs.
#[derive(Debug, Clone)]
pub struct ThroughputConfig {
    pub sizes_mib: Vec<u64>,
    pub guest_type: GuestType,
    pub repeats: u32,
    pub seed: u64,
    pub work_dir: PathBuf,
}

/// One migration and its baseline copy.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRun {
    pub size_mib: u64,
    pub contents: Contents,
    pub repeat: u32,
    /// Bytes of the migration stream (xl, libxl and libxc layers).
    pub stream_bytes: u64,
    /// Start of `send` to the receiver's report.
    pub migrate_s: f64,
    /// The plain loopback copy of `stream_bytes`.
    pub copy_s: f64,
    /// The same copy with the reader putting the bytes into new memory (as
    /// the simulated host allocates a domain's RAM): the floor of any
    /// receiver on this host, which must write into memory it allocates.
    #[serde(default)]
    pub copy_new_s: f64,
    /// CPU seconds (user + system) of the saving and the restoring thread.
    pub save_cpu_s: f64,
    pub restore_cpu_s: f64,
    /// CPU seconds of the plain copy's writer and reader threads together:
    /// what moving `stream_bytes` costs with no engine at all.
    pub copy_cpu_s: f64,
    pub rounds: u32,
}

impl ThroughputRun {
    pub fn migrate_mib_s(&self) -> f64 {
        self.stream_bytes as f64 / 1048576.0 / self.migrate_s.max(1e-9)
    }
    pub fn copy_mib_s(&self) -> f64 {
        self.stream_bytes as f64 / 1048576.0 / self.copy_s.max(1e-9)
    }
    /// Guest memory moved per second.
    pub fn guest_mib_s(&self) -> f64 {
        self.size_mib as f64 / self.migrate_s.max(1e-9)
    }
    pub fn ratio(&self) -> f64 {
        self.migrate_mib_s() / self.copy_mib_s().max(1e-9)
    }
    pub fn copy_new_mib_s(&self) -> f64 {
        self.stream_bytes as f64 / 1048576.0 / self.copy_new_s.max(1e-9)
    }
    /// The migration's MiB/s over the copy into new memory's.
    pub fn ratio_new(&self) -> f64 {
        self.migrate_mib_s() / self.copy_new_mib_s().max(1e-9)
    }
    fn gib(&self) -> f64 {
        self.size_mib as f64 / 1024.0
    }
    pub fn save_cpu_s_per_gib(&self) -> f64 {
        self.save_cpu_s / self.gib()
    }
    pub fn restore_cpu_s_per_gib(&self) -> f64 {
        self.restore_cpu_s / self.gib()
    }
    /// The plain copy's CPU seconds over the engine's (sender and receiver)
    /// for the same bytes: 1.0 means the engine costs no more CPU than the
    /// bare socket copy. Unlike the MiB/s ratio it does not depend on how
    /// the scheduler shares a busy machine between the two runs.
    pub fn cpu_ratio(&self) -> f64 {
        self.copy_cpu_s / (self.save_cpu_s + self.restore_cpu_s).max(1e-9)
    }
}

/// All runs of the suite.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResults {
    pub guest_type: String,
    pub link: &'static str,
    pub load_before: String,
    pub runs: Vec<ThroughputRun>,
    pub failures: Vec<String>,
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes a `rusage` into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer; it cannot fail on Linux.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What the plain copy took: wall seconds, and the CPU seconds of its
/// writer and reader threads together.
struct Copied {
    secs: f64,
    cpu: Duration,
}

/// Where the plain copy's reader puts what it reads.
enum Sink {
    /// One buffer, overwritten by every read: the socket alone.
    Buffer,
    /// New memory of the host in this directory, allocated a buffer's worth
    /// at a time ahead of the copy, as the simulated host's populate does.
    NewMemory(PathBuf),
}

/// `bytes` through a plain loopback TCP connection.
fn plain_copy(bytes: u64, sink: Sink) -> Result<Copied, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = thread::spawn(move || -> Result<(u64, Duration), String> {
        let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let cpu0 = thread_cpu();
        let mem = match &sink {
            Sink::Buffer => None,
            Sink::NewMemory(dir) => {
                Some(crate::hv::sim::new_memory(dir, bytes as usize).map_err(|e| e.to_string())?)
            }
        };
        let mut buf = vec![0u8; BUF];
        let mut got = 0u64;
        let mut allocated = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok((got, thread_cpu() - cpu0)),
                Ok(n) => {
                    if let Some(m) = &mem {
                        let off = got as usize;
                        if off + n > m.len() {
                            return Err(format!("plain copy: more than the {bytes} bytes sent"));
                        }
                        while allocated < off + n {
                            let len = BUF.min(m.len() - allocated);
                            m.allocate(allocated, len).map_err(|e| e.to_string())?;
                            allocated += len;
                        }
                        m.write(off, &buf[..n]).map_err(|e| e.to_string())?;
                    }
                    got += n as u64
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    });
    let started = Instant::now();
    let cpu0 = thread_cpu();
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let buf = vec![0x5au8; BUF];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        s.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?;
        left -= n as u64;
    }
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let writer_cpu = thread_cpu() - cpu0;
    let (got, reader_cpu) = reader
        .join()
        .map_err(|_| "the copy's reader panicked".to_string())??;
    let secs = started.elapsed().as_secs_f64();
    if got != bytes {
        return Err(format!("plain copy: {got} bytes arrived of {bytes}"));
    }
    Ok(Copied {
        secs,
        cpu: writer_cpu + reader_cpu,
    })
}

struct Migrated {
    stream_bytes: u64,
    secs: f64,
    save_cpu: Duration,
    restore_cpu: Duration,
    rounds: u32,
    dst_dom: DomId,
}

fn migrate_once(src: &SimHost, dom: DomId, dst_dir: &Path) -> Result<Migrated, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let dst_dir = dst_dir.to_path_buf();
    let receiver = thread::spawn(move || -> Result<(DomId, Duration), String> {
        let host = SimHost::open(&dst_dir).map_err(|e| e.to_string())?;
        let (s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let data = s.try_clone().map_err(|e| format!("socket: {e}"))?;
        let cpu0 = thread_cpu();
        let out = migrate::receive(
            &host,
            BufReader::with_capacity(BUF, data),
            s,
            &migrate::ReceiveOptions::default(),
        )
        .map_err(|e| format!("receiver: {e}"))?;
        Ok((out.domid, thread_cpu() - cpu0))
    });
    let sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let data = BufWriter::with_capacity(BUF, sock.try_clone().map_err(|e| e.to_string())?);
    let mut policy = crate::precopy::by_name("hotpage").map_err(|e| e.to_string())?;
    let opts = SendOptions {
        policy: policy.as_mut(),
        hooks: &mut DirectHooks,
        waits: Default::default(),
    };
    let cpu0 = thread_cpu();
    let started = Instant::now();
    let sent = migrate::send(src, dom, sock, data, opts);
    let secs = started.elapsed().as_secs_f64();
    let save_cpu = thread_cpu() - cpu0;
    let got = receiver
        .join()
        .map_err(|_| "the receiver thread panicked".to_string())?;
    match (sent, got) {
        (Ok(out), Ok((dst_dom, restore_cpu))) => Ok(Migrated {
            stream_bytes: out.summary.total_bytes,
            secs,
            save_cpu,
            restore_cpu,
            rounds: out.summary.rounds,
            dst_dom,
        }),
        (Err(e), Err(r)) => Err(format!("sender: {e}; {r}")),
        (Err(e), Ok(_)) => Err(format!("sender: {e}")),
        (Ok(_), Err(r)) => Err(r),
    }
}

fn run_one(
    src: &SimHost,
    dst_dir: &Path,
    cfg: &ThroughputConfig,
    size_mib: u64,
    contents: Contents,
    repeat: u32,
) -> Result<ThroughputRun, String> {
    let mut g = GuestConfig::new("throughput", cfg.guest_type, size_mib, WorkloadKind::Idle);
    g.seed = cfg.seed;
    g.rate = IDLE_STEPS_PER_S;
    g.paused = contents == Contents::Filled;
    let dom = src.create_guest(&g).map_err(|e| e.to_string())?;
    let moved = (|| {
        if contents == Contents::Filled {
            fill(src, dom, cfg.guest_type, g.pages()).map_err(|e| e.to_string())?;
            src.unpause(dom).map_err(|e| e.to_string())?;
        }
        migrate_once(src, dom, dst_dir)
    })();
    let dst = SimHost::open(dst_dir).map_err(|e| e.to_string())?;
    let m = match moved {
        Ok(m) => m,
        Err(e) => {
            for h in [src, &dst] {
                for d in h.list_domains().unwrap_or_default() {
                    if let Err(e) = h.destroy(d.domid) {
                        log::warn!("bench: destroying leftover domain {}: {e}", d.domid);
                    }
                }
            }
            return Err(e);
        }
    };
    dst.destroy(m.dst_dom).map_err(|e| e.to_string())?;
    let copy = plain_copy(m.stream_bytes, Sink::Buffer)?;
    let copy_new = plain_copy(m.stream_bytes, Sink::NewMemory(dst_dir.to_path_buf()))?;
    Ok(ThroughputRun {
        size_mib,
        contents,
        repeat,
        stream_bytes: m.stream_bytes,
        migrate_s: m.secs,
        copy_s: copy.secs,
        copy_new_s: copy_new.secs,
        save_cpu_s: m.save_cpu.as_secs_f64(),
        restore_cpu_s: m.restore_cpu.as_secs_f64(),
        copy_cpu_s: copy.cpu.as_secs_f64(),
        rounds: m.rounds,
    })
}

/// Run the suite: for each size, each guest, each repeat a migration and its
/// baseline copy. A failed run is recorded and the suite goes on.
pub fn run_throughput(
    cfg: &ThroughputConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<ThroughputResults, BenchError> {
    let dir = cfg
        .work_dir
        .join(format!("rxmigrate-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Config {
        what: "work directory",
        msg: format!("creating {}: {e}", dir.display()),
    })?;
    let work = super::WorkDir(dir);
    let src = SimHost::open(&work.0.join("src"))?;
    let dst_dir = work.0.join("dst");
    SimHost::open(&dst_dir)?;
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for &size in &cfg.sizes_mib {
        for repeat in 0..cfg.repeats {
            for contents in [Contents::Filled, Contents::Fresh] {
                let label = format!("{size} MiB {} #{}", contents.name(), repeat + 1);
                match run_one(&src, &dst_dir, cfg, size, contents, repeat) {
                    Ok(r) => {
                        progress(&format!(
                            "{label}: {:.1} MiB in {:.2} s ({:.0} MiB/s), plain copy {:.0} MiB/s, into new memory {:.0} MiB/s",
                            r.stream_bytes as f64 / 1048576.0,
                            r.migrate_s,
                            r.migrate_mib_s(),
                            r.copy_mib_s(),
                            r.copy_new_mib_s()
                        ));
                        runs.push(r);
                    }
                    Err(e) => {
                        progress(&format!("{label}: FAILED: {e}"));
                        failures.push(format!("{label}: {e}"));
                    }
                }
            }
        }
    }
    drop(src);
    drop(work);
    Ok(ThroughputResults {
        guest_type: cfg.guest_type.to_string(),
        link: "loopback TCP (127.0.0.1), unthrottled",
        load_before,
        runs,
        failures,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The medians per (size, guest) as a markdown table.
pub fn table_md(r: &ThroughputResults) -> String {
    let mut s = format!(
        "Throughput, {} guests, {}; load average before: {}\n\n\
         | size | guest | runs | stream MiB | migrate MiB/s | plain copy MiB/s | ratio | into new memory MiB/s | ratio to it | guest MiB/s | save CPU-s/GiB | restore CPU-s/GiB | copy CPU-s/GiB | CPU ratio |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.guest_type, r.link, r.load_before
    );
    let mut keys: Vec<(u64, Contents)> = Vec::new();
    for run in &r.runs {
        if !keys.contains(&(run.size_mib, run.contents)) {
            keys.push((run.size_mib, run.contents));
        }
    }
    for (size, contents) in keys {
        let rs: Vec<&ThroughputRun> = r
            .runs
            .iter()
            .filter(|x| x.size_mib == size && x.contents == contents)
            .collect();
        let m = |f: fn(&ThroughputRun) -> f64| median(rs.iter().map(|x| f(x)).collect());
        s.push_str(&format!(
            "| {size} MiB | {} | {} | {:.1} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            contents.name(),
            rs.len(),
            m(|x| x.stream_bytes as f64 / 1048576.0),
            m(ThroughputRun::migrate_mib_s),
            m(ThroughputRun::copy_mib_s),
            m(ThroughputRun::ratio),
            m(ThroughputRun::copy_new_mib_s),
            m(ThroughputRun::ratio_new),
            m(ThroughputRun::guest_mib_s),
            m(ThroughputRun::save_cpu_s_per_gib),
            m(ThroughputRun::restore_cpu_s_per_gib),
            m(|x| x.copy_cpu_s / x.gib()),
            m(ThroughputRun::cpu_ratio),
        ));
    }
    for f in &r.failures {
        s.push_str(&format!("\nFAILED: {f}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_copy_moves_every_byte() {
        // Not a timing test: the copy must report the bytes it was given.
        let c = plain_copy(3 * BUF as u64 + 17, Sink::Buffer).unwrap();
        assert!(c.secs > 0.0);
        let dir = tempfile::tempdir().unwrap();
        let c = plain_copy(3 * BUF as u64 + 17, Sink::NewMemory(dir.path().into())).unwrap();
        assert!(c.secs > 0.0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
