//! Hostile streams, byte by byte: a saved image cut into its layers and
//! records (without the library's reader, so that any byte can be changed),
//! put back together, and fed to the `rxmigrate` binary as a child process
//! against a fresh simulated host, with its time, peak RSS and leftovers.
#![allow(dead_code)]

pub mod gen;

use crate::sim_util::TestHost;
use rxmigrate::hv::sim::{SimHost, WorkloadKind};
use rxmigrate::hv::{DomId, GuestType, Hypervisor};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const PAGE: usize = 4096;

/// libxc record types the generator touches.
pub mod rt {
    pub const END: u32 = 0x00;
    pub const PAGE_DATA: u32 = 0x01;
    pub const X86_PV_P2M_FRAMES: u32 = 0x03;
    pub const X86_PV_VCPU_BASIC: u32 = 0x04;
    pub const X86_PV_VCPU_XSAVE: u32 = 0x06;
    pub const HVM_CONTEXT: u32 = 0x09;
    pub const HVM_PARAMS: u32 = 0x0A;
}

/// libxl record types.
pub mod lt {
    pub const END: u32 = 0;
    pub const EMULATOR_XENSTORE_DATA: u32 = 2;
    pub const EMULATOR_CONTEXT: u32 = 3;
}

/// Page types.
pub const NOTAB: u8 = 0x0;
pub const XALLOC: u8 = 0xE;

/// One record: type and body (padding is added when written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub rtype: u32,
    pub body: Vec<u8>,
}

impl Rec {
    pub fn new(rtype: u32, body: Vec<u8>) -> Rec {
        Rec { rtype, body }
    }
}

/// An xl save image in pieces.
#[derive(Debug, Clone)]
pub struct Image {
    /// The JSON config text (no trailing NUL).
    pub config: Vec<u8>,
    /// The libxc image and domain headers (40 bytes).
    pub libxc_head: Vec<u8>,
    /// The libxc records, END included.
    pub records: Vec<Rec>,
    /// The libxl records after the libxc stream, END included.
    pub tail: Vec<Rec>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn read_records(b: &[u8], at: &mut usize) -> Vec<Rec> {
    let mut out = Vec::new();
    loop {
        let rtype = u32_at(b, *at);
        let len = u32_at(b, *at + 4) as usize;
        let body = b[*at + 8..*at + 8 + len].to_vec();
        *at += 8 + len + (8 - len % 8) % 8;
        out.push(Rec { rtype, body });
        if rtype == 0 {
            return out;
        }
    }
}

fn write_record(out: &mut Vec<u8>, r: &Rec) {
    out.extend_from_slice(&r.rtype.to_le_bytes());
    out.extend_from_slice(&(r.body.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.body);
    out.resize(out.len() + (8 - r.body.len() % 8) % 8, 0);
}

impl Image {
    /// Cuts a well-formed xl image (as `save_image` writes it) into pieces.
    pub fn parse(b: &[u8]) -> Image {
        assert_eq!(&b[..32], b"Xen saved domain, xl format\n \0 \r");
        let opt_len = u32_at(b, 44) as usize;
        let config_len = u32_at(b, 48) as usize;
        assert!(config_len >= 1 && config_len + 4 <= opt_len);
        let config = b[52..52 + config_len - 1].to_vec();
        let mut at = 48 + opt_len;
        assert_eq!(&b[at..at + 8], b"LibxlFmt");
        at += 16;
        assert_eq!(u32_at(b, at), 1, "LIBXC_CONTEXT first");
        at += 8;
        let libxc_head = b[at..at + 40].to_vec();
        at += 40;
        let records = read_records(b, &mut at);
        let tail = read_records(b, &mut at);
        assert_eq!(at, b.len(), "nothing after libxl's END");
        Image {
            config,
            libxc_head,
            records,
            tail,
        }
    }

    /// The xl image again.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes_and_headers().0
    }

    /// The xl image and where its length fields are: for each record
    /// header (libxl and libxc), its offset (the length is 4 bytes in), and
    /// for the xl header, the offset 4 bytes before its optional data
    /// length, with the layer's name.
    pub fn bytes_and_headers(&self) -> (Vec<u8>, Vec<(usize, &'static str)>) {
        let mut heads = vec![(40, "xl")];
        let mut b = Vec::with_capacity(self.len_hint());
        b.extend_from_slice(b"Xen saved domain, xl format\n \0 \r");
        let config_len = self.config.len() as u32 + 1;
        for v in [0x0102_0304u32, 3, 0, config_len + 4, config_len] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.config);
        b.push(0);
        b.extend_from_slice(b"LibxlFmt");
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        heads.push((b.len(), "libxl"));
        write_record(&mut b, &Rec::new(1, Vec::new()));
        b.extend_from_slice(&self.libxc_head);
        for r in &self.records {
            heads.push((b.len(), "libxc"));
            write_record(&mut b, r);
        }
        for r in &self.tail {
            heads.push((b.len(), "libxl"));
            write_record(&mut b, r);
        }
        (b, heads)
    }

    fn len_hint(&self) -> usize {
        let recs: usize = self
            .records
            .iter()
            .chain(&self.tail)
            .map(|r| r.body.len() + 16)
            .sum();
        recs + self.config.len() + 256
    }

    pub fn config_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.config).expect("config is JSON")
    }
    pub fn set_config_json(&mut self, v: &serde_json::Value) {
        self.config = serde_json::to_vec(v).expect("JSON");
    }

    /// Index of the first libxc record of this type.
    pub fn find(&self, rtype: u32) -> Option<usize> {
        self.records.iter().position(|r| r.rtype == rtype)
    }
    /// Index of the libxc END record.
    pub fn end_index(&self) -> usize {
        self.records.len() - 1
    }
    /// Inserts records just before the libxc END.
    pub fn insert_before_end(&mut self, recs: impl IntoIterator<Item = Rec>) {
        let end = self.end_index();
        let tail = self.records.split_off(end);
        self.records.extend(recs);
        self.records.extend(tail);
    }
    /// The guest's pages: (pfn, type, index of the record, byte offset of
    /// its data in the body when it carries data).
    pub fn pages(&self) -> Vec<PageRef> {
        let mut out = Vec::new();
        for (ri, r) in self.records.iter().enumerate() {
            if r.rtype != rt::PAGE_DATA {
                continue;
            }
            let count = u32_at(&r.body, 0) as usize;
            let mut data = 8 + 8 * count;
            for i in 0..count {
                let raw = u64::from_le_bytes(r.body[8 + 8 * i..16 + 8 * i].try_into().unwrap());
                let ty = (raw >> 60) as u8;
                let has_data = matches!(ty, 0..=4 | 9..=12);
                out.push(PageRef {
                    pfn: raw & 0x000f_ffff_ffff_ffff,
                    ty,
                    record: ri,
                    data_at: has_data.then_some(data),
                });
                if has_data {
                    data += PAGE;
                }
            }
        }
        out
    }
    /// P2M frame pfns of a PV image.
    pub fn p2m_frames(&self) -> Vec<u64> {
        self.find(rt::X86_PV_P2M_FRAMES)
            .map(|i| {
                self.records[i].body[8..]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The HVM params of an HVM image.
    pub fn hvm_params(&self) -> Vec<(u64, u64)> {
        self.find(rt::HVM_PARAMS)
            .map(|i| {
                self.records[i].body[8..]
                    .chunks_exact(16)
                    .map(|c| {
                        (
                            u64::from_le_bytes(c[..8].try_into().unwrap()),
                            u64::from_le_bytes(c[8..].try_into().unwrap()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Where a page sits in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRef {
    pub pfn: u64,
    pub ty: u8,
    pub record: usize,
    pub data_at: Option<usize>,
}

/// A PAGE_DATA body of pages without data.
pub fn page_data_nodata(entries: impl IntoIterator<Item = (u64, u8)>) -> Vec<u8> {
    let entries: Vec<(u64, u8)> = entries.into_iter().collect();
    let mut b = Vec::with_capacity(8 + 8 * entries.len());
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for (pfn, ty) in entries {
        b.extend_from_slice(&((u64::from(ty) << 60) | pfn).to_le_bytes());
    }
    b
}

/// An HVM_PARAMS body.
pub fn hvm_params_body(params: &[(u64, u64)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(params.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for &(i, v) in params {
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// A vCPU record body (id, reserved, blob).
pub fn vcpu_body(id: u32, blob: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + blob.len());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(blob);
    b
}

/// An emulator record body (id 2 = qemu-xen, index 0, data).
pub fn emulator_body(data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + data.len());
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// A guest of `mib` MiB saved (not live) from a fresh simulated host, as
/// an xl image.
pub fn saved_image(t: GuestType, mib: u64, seed: u64) -> Vec<u8> {
    let mut a = TestHost::new();
    let mut c =
        rxmigrate::hv::sim::GuestConfig::new(&format!("g{seed}"), t, mib, WorkloadKind::Uniform);
    c.seed = seed;
    c.paused = true;
    let dom = a.create(&c);
    a.host.run_until(dom, 200).expect("run the guest a little");
    a.save_image(dom)
}

/// How a stream is fed to the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `rxmigrate restore FILE`.
    Restore,
    /// `rxmigrate receive` with the stream (and permission to go) on stdin.
    Receive,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Restore => "restore",
            Via::Receive => "receive",
        }
    }
}

/// What a child run did.
#[derive(Debug)]
pub struct Run {
    /// Exit code, or None when killed (by us at the deadline, or a signal).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// Peak resident set of the child, bytes (getrusage's ru_maxrss).
    pub max_rss: u64,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// Ended by itself with exit status 1 and a message, no panic.
    pub fn clear_error(&self) -> bool {
        self.code == Some(1)
            && self.stderr.contains("rxmigrate:")
            && !self.stderr.contains("panicked")
    }
}

/// A fresh simulated host for one child: its state directory and a private
/// shared-memory directory, so that leftovers are easy to see.
pub struct SimDir {
    pub dir: tempfile::TempDir,
    pub shm: PathBuf,
}

impl SimDir {
    pub fn new() -> SimDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let shm = tempfile::Builder::new()
            .prefix("rxmigrate-hostile-")
            .tempdir_in(base)
            .expect("shm dir")
            .keep();
        SimDir { dir, shm }
    }

    /// The host, opened in this process (domains keep the shared-memory
    /// paths they were created with).
    pub fn host(&self) -> SimHost {
        SimHost::open(self.dir.path()).expect("open host")
    }

    /// Domains on the host.
    pub fn domains(&self) -> Vec<DomId> {
        let h = self.host();
        h.list_domains()
            .expect("list")
            .into_iter()
            .map(|d| d.domid)
            .collect()
    }
    /// Files in the host's shared-memory directory.
    pub fn shm_files(&self) -> Vec<String> {
        std::fs::read_dir(&self.shm)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Domains ever created on this host (its next domain id - 1).
    pub fn domains_created(&self) -> u64 {
        let text = std::fs::read_to_string(self.dir.path().join("host.json")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["next_domid"].as_u64())
            .map_or(0, |n| n.saturating_sub(1))
    }
    /// Destroys every domain (after a successful restore).
    pub fn destroy_all(&self) {
        let h = self.host();
        for d in self.domains() {
            h.destroy(d).expect("destroy");
        }
    }
}

impl Drop for SimDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.shm);
    }
}

/// Runs `rxmigrate --hv sim:DIR <args>` on the stream in `file` (as the
/// file argument for restore, on stdin for receive), killing it at
/// `deadline`. Measures its peak RSS with wait4.
///
/// The child is started by a shell that forks it and exits, and is then
/// reaped here (this process becomes a subreaper): Linux carries a
/// process's peak RSS across exec, and one started straight from this
/// (large, multi-threaded) test process by vfork would report this
/// process's peak as its own.
pub fn run_child(sim: &SimDir, via: Via, file: &Path, extra: &[&str], deadline: Duration) -> Run {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    // SAFETY: prctl with integer arguments; makes orphaned descendants ours.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        r,
        0,
        "PR_SET_CHILD_SUBREAPER: {}",
        std::io::Error::last_os_error()
    );
    let stdin: &Path = match via {
        Via::Restore => Path::new("/dev/null"),
        Via::Receive => file,
    };
    // The forked child waits on a FIFO until the shell has exited (so that
    // the shell cannot reap it first), then becomes rxmigrate.
    let go = out_dir.path().join("go");
    let c_go = std::ffi::CString::new(go.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo on a NUL-terminated path in our own temporary directory.
    let r = unsafe { libc::mkfifo(c_go.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"g=$1 i=$2 o=$3 e=$4; shift 4; { read x <"$g"; exec "$@" <"$i" >"$o" 2>"$e"; } </dev/null >/dev/null 2>&1 & echo $!"#)
        .arg("sh")
        .arg(&go)
        .arg(stdin)
        .arg(&stdout_path)
        .arg(&stderr_path)
        .arg(env!("CARGO_BIN_EXE_rxmigrate"))
        .arg("--hv")
        .arg(format!("sim:{}", sim.dir.path().display()))
        .env("RXMIGRATE_SIM_SHM", &sim.shm)
        .env("RXMIGRATE_SIM_OWNER_PID", std::process::id().to_string())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    match via {
        Via::Restore => cmd.arg("restore").args(extra).arg(file),
        Via::Receive => cmd.arg("receive").args(extra),
    };
    let start = Instant::now();
    let sh = cmd.output().expect("run sh");
    assert!(sh.status.success(), "sh: {sh:?}");
    let pid: libc::pid_t = String::from_utf8_lossy(&sh.stdout)
        .trim()
        .parse()
        .expect("the child's pid");
    // The shell is gone: the child is ours to reap. Let it go.
    std::fs::write(&go, b"\n").expect("release the child");
    let mut status = 0;
    // SAFETY: rusage is plain data, zero-initialised and filled by wait4.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    loop {
        // SAFETY: wait4 on our (adopted) child's pid with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > deadline && !timed_out {
            timed_out = true;
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, Some(libc::WTERMSIG(status)))
    };
    Run {
        code,
        signal,
        timed_out,
        elapsed,
        max_rss: ru.ru_maxrss as u64 * 1024,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

/// Writes `bytes` (plus permission to go, for receive) to a file in `dir`.
pub fn stream_file(dir: &Path, bytes: &[u8], via: Via) -> PathBuf {
    let p = dir.join("stream");
    let mut b = bytes.to_vec();
    if via == Via::Receive {
        b.extend_from_slice(rxmigrate::stream::handshake::PERMISSION_TO_GO);
    }
    std::fs::write(&p, b).expect("write stream");
    p
}

/// A restore or receive of `bytes` that must fail: within `deadline`, with
/// a clear error, and leaving no domain and no shared memory behind.
/// Returns the run (stderr holds the error).
pub fn must_fail(bytes: &[u8], via: Via, args: &[&str], deadline: Duration) -> (Run, SimDir) {
    let sim = SimDir::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = run_child(
        &sim,
        via,
        &stream_file(tmp.path(), bytes, via),
        args,
        deadline,
    );
    eprintln!(
        "{} of {} bytes: {:?}, peak RSS {} MiB: {}",
        via.name(),
        bytes.len(),
        run.elapsed,
        run.max_rss >> 20,
        run.stderr.trim()
    );
    assert!(
        !run.timed_out,
        "{}: still running after {deadline:?}",
        via.name()
    );
    assert!(
        run.clear_error(),
        "{}: expected a clear error, got {run:?}",
        via.name()
    );
    assert_eq!(
        sim.domains(),
        Vec::<DomId>::new(),
        "{}: domain left behind after: {}",
        via.name(),
        run.stderr
    );
    assert_eq!(
        sim.shm_files(),
        Vec::<String>::new(),
        "{}: shared memory left behind after: {}",
        via.name(),
        run.stderr
    );
    (run, sim)
}

/// Peak RSS within what a restore of a `guest`-byte guest may take.
pub fn assert_rss(run: &Run, guest: u64) {
    let bound = guest + (256 << 20);
    assert!(
        run.max_rss <= bound,
        "peak RSS {} MiB, more than the guest's {} MiB + 256 MiB",
        run.max_rss >> 20,
        guest >> 20
    );
}

/// The guest's page `pfn` on the host (HVM gfn = pfn; PV: the frame the
/// host's M2P gives it, as a guest that has not run yet has published no
/// P2M of its own). `None` if the pfn has no frame.
pub fn guest_page(host: &SimHost, dom: DomId, pfn: u64) -> Option<Vec<u8>> {
    let info = host.domain_info(dom).expect("info");
    let gfn = match info.guest_type {
        GuestType::Hvm => pfn,
        GuestType::Pv => {
            let d = host.dom(dom).expect("domain");
            let m2p = d.st.m2p().expect("M2P");
            let f = m2p
                .iter()
                .position(|p| p.load(std::sync::atomic::Ordering::Acquire) == pfn)?;
            d.meta.mfn_base + f as u64
        }
    };
    let m = host.map_pages(dom, &[gfn], false).ok()?;
    Some(m.page(0).to_vec())
}
