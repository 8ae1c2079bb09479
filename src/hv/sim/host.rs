//! `SimHost`: the simulated Xen host and its `Hypervisor` implementation.

use super::build::{self, param, Scramble};
use super::config::{GuestConfig, TrackingMode, MAX_VCPUS};
use super::cpu;
use super::ctl::{self, cmd, futex_wait, futex_wake, state, DomState, NO_LIMIT};
use super::hvmctx;
use super::layout::MIN_PAGES;
use super::machine::{Frames, M2p, RamView};
use super::meta::{to_hex, DomainMeta, HostDir, HostState};
use super::shm::Shm;
use super::uffd;
use crate::bitmap::Bitmap;
use crate::hv::{
    CpuPolicy, DomId, DomainInfo, DomainSpec, GuestPage, GuestPageMut, GuestType, HvError,
    Hypervisor, PageMapping, PageType, PvP2m, PvVcpuState, Result, ShutdownReason, TscInfo,
    INVALID_MFN,
};
use crate::x86::pagetable::{self, PTE_PSE, PTE_RW};
use crate::x86::{shared_info, start_info, vcpu};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A domain's mappings, opened once per SimHost handle.
pub struct Dom {
    pub meta: DomainMeta,
    pub ram: Shm,
    pub st: DomState,
    pub view: RamView,
}

impl Dom {
    pub fn frames(&self) -> Frames<'_> {
        Frames {
            ram: &self.view,
            base: self.meta.mfn_base,
            // The M2P is a fixed-size region of a live mapping.
            m2p: M2p::Shared(self.st.m2p().unwrap_or(&[])),
        }
    }
    pub fn pages(&self) -> u64 {
        self.meta.pages()
    }
    /// Frame index of a gfn (PV: mfn) that is this domain's and populated.
    pub fn frame_of_gfn(&self, gfn: u64) -> Option<usize> {
        self.frames().frame_of(gfn)
    }
}

/// The simulated Xen host: a state directory (see `meta`), shared by every
/// process that opens it.
/// A host's tag, 1..=0xfff: PV machine frames start at `tag << 28`, and
/// must fit the 40-bit frame field of a page-table entry.
fn host_tag(seed: u64) -> u32 {
    (super::workload::mix(seed) % 0xfff) as u32 + 1
}

pub struct SimHost {
    dir: HostDir,
    tag: u32,
    doms: Mutex<HashMap<DomId, Arc<Dom>>>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimHost({})", self.dir.dir.display())
    }
}

fn timeout() -> Duration {
    std::env::var("RXMIGRATE_SIM_TIMEOUT_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

fn shm_dir(fallback: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("RXMIGRATE_SIM_SHM") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        fallback.to_path_buf()
    }
}

/// (state char, start time) of a process from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let st = f.first()?.chars().next()?;
    let start = f.get(19)?.parse().ok()?;
    Some((st, start))
}

/// Start time of the calling process (so a later kill can check the pid).
pub fn own_start_time() -> u64 {
    proc_stat(std::process::id()).map(|(_, t)| t).unwrap_or(0)
}

/// Which tracking the kernel offers: probes uffd-wp async on a shmem mapping.
pub fn probe_tracking() -> TrackingMode {
    let path = std::env::temp_dir().join(format!("rxmigrate-probe-{}", std::process::id()));
    let dir = shm_dir(&std::env::temp_dir());
    let path = dir.join(path.file_name().unwrap_or_default());
    let r = (|| -> Option<()> {
        let shm = Shm::create(&path, 4 * 4096).ok()?;
        let _ = std::fs::remove_file(&path);
        uffd::WriteTracker::register(shm.as_ptr() as u64, shm.len() as u64).ok()?;
        Some(())
    })();
    let _ = std::fs::remove_file(&path);
    if r.is_some() {
        TrackingMode::Uffd
    } else {
        TrackingMode::Soft
    }
}

/// The default host directory: $XDG_STATE_HOME/rxmigrate/sim or
/// ~/.local/state/rxmigrate/sim.
pub fn default_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("rxmigrate/sim");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/rxmigrate/sim")
}

fn guest_exe() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("RXMIGRATE_EXE") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().map_err(|e| HvError::io("find the rxmigrate executable", e))
}

impl SimHost {
    /// Open (creating if needed) the host in `dir`.
    pub fn open(dir: &Path) -> Result<SimHost> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HvError::io(format!("create {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| HvError::io(format!("resolve {}", dir.display()), e))?;
        let hd = HostDir { dir };
        let host = {
            let _l = hd.lock()?;
            match hd.read_host() {
                Ok(h) => h,
                Err(_) if !hd.host_json().exists() => {
                    let seed = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0)
                        ^ ((std::process::id() as u64) << 32);
                    let h = HostState {
                        tag: host_tag(seed),
                        next_domid: 1,
                    };
                    hd.write_host(&h)?;
                    h
                }
                Err(e) => return Err(e),
            }
        };
        Ok(SimHost {
            dir: hd,
            tag: host.tag,
            doms: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir.dir
    }
    pub fn tag(&self) -> u32 {
        self.tag
    }
    pub fn log_path(&self, dom: DomId) -> PathBuf {
        self.dir.log_path(dom)
    }

    /// The mapped domain (cached; dropped from the cache once destroyed).
    pub fn dom(&self, dom: DomId) -> Result<Arc<Dom>> {
        let exists = self.dir.meta_path(dom).exists();
        let mut cache = self.doms.lock().unwrap_or_else(|e| e.into_inner());
        if !exists {
            cache.remove(&dom);
            return Err(HvError::NoSuchDomain(dom.to_string()));
        }
        if let Some(d) = cache.get(&dom) {
            return Ok(d.clone());
        }
        let meta = self.dir.read_meta(dom)?;
        let ram = Shm::open(&meta.ram_path)?;
        let frames = meta.pages() as usize;
        if ram.len() != frames * 4096 {
            return Err(HvError::op(
                dom,
                "open",
                format!(
                    "RAM file is {} bytes, expected {}",
                    ram.len(),
                    frames * 4096
                ),
            ));
        }
        let st = DomState::open(&meta.state_path, meta.vcpus() as usize, frames)?;
        // SAFETY: `ram` maps frames*4096 bytes and lives in the same Dom as
        // the view, which never outlives it.
        let view = unsafe { RamView::new(ram.as_ptr(), frames) };
        let d = Arc::new(Dom {
            meta,
            ram,
            st,
            view,
        });
        cache.insert(dom, d.clone());
        Ok(d)
    }

    fn fresh_meta(
        &self,
        domid: DomId,
        name: &str,
        gt: GuestType,
        pages: u64,
        vcpus: u32,
    ) -> Result<DomainMeta> {
        let shm = shm_dir(self.dir());
        // Unique among live hosts: two hosts of one process differ in their
        // directory's inode even when their random tags agree.
        let ino = std::fs::metadata(self.dir())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
        let stem = format!(
            "rxmigrate-sim-{:03x}-{}-{ino:x}-{domid}",
            self.tag,
            std::process::id()
        );
        let (base, salt) = match gt {
            // Per-host, per-domain machine frame ranges, far above any pfn.
            GuestType::Pv => (
                ((self.tag as u64) << 28) | ((domid as u64 & 0xff) << 20),
                ((self.tag as u64) << 32) | domid as u64,
            ),
            GuestType::Hvm => (0, 0),
        };
        Ok(DomainMeta {
            domid,
            name: name.to_string(),
            guest_type: gt,
            max_pfn: pages - 1,
            max_vcpu_id: vcpus - 1,
            mfn_base: base,
            salt,
            ram_path: shm.join(format!("{stem}.ram")),
            state_path: shm.join(format!("{stem}.xen")),
            config: None,
            tracking: None,
            tsc: cpu::default_tsc(),
            cpuid_hex: to_hex(&cpu::default_policy().cpuid),
            msrs_hex: to_hex(&cpu::default_policy().msrs),
            guest_width: 8,
        })
    }

    /// Allocate an id, check the name, create the files. Returns the mapped domain.
    fn new_domain(
        &self,
        name: &str,
        gt: GuestType,
        pages: u64,
        vcpus: u32,
        config: Option<serde_json::Value>,
        tracking: Option<TrackingMode>,
    ) -> Result<Arc<Dom>> {
        if pages < MIN_PAGES {
            return Err(HvError::Invalid {
                op: "create",
                msg: format!("{pages} pages is below the minimum of {MIN_PAGES}"),
            });
        }
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(HvError::Invalid {
                op: "create",
                msg: format!("{vcpus} vCPUs (1..={MAX_VCPUS})"),
            });
        }
        let _l = self.dir.lock()?;
        for id in self.dir.domids()? {
            if self
                .dir
                .read_meta(id)
                .map(|m| m.name == name)
                .unwrap_or(false)
            {
                return Err(HvError::Invalid {
                    op: "create",
                    msg: format!("a domain named {name:?} already exists (id {id})"),
                });
            }
        }
        let mut host = self.dir.read_host()?;
        let domid = host.next_domid;
        host.next_domid += 1;
        self.dir.write_host(&host)?;
        let mut meta = self.fresh_meta(domid, name, gt, pages, vcpus)?;
        meta.config = config;
        meta.tracking = tracking;
        std::fs::create_dir_all(self.dir.dom_dir(domid))
            .map_err(|e| HvError::io("create domain dir", e))?;
        // Files under this name can only be left by a dead process that had
        // our pid and a host directory with our inode (a killed test run):
        // no live domain uses them.
        for stale in [&meta.ram_path, &meta.state_path] {
            if std::fs::remove_file(stale).is_ok() {
                log::warn!("removed a stale {} of a dead process", stale.display());
            }
        }
        let ram = Shm::create(&meta.ram_path, pages as usize * 4096)?;
        drop(ram);
        let st = DomState::create(&meta.state_path, vcpus as usize, pages as usize)?;
        for (i, w) in st.params()?.iter().enumerate() {
            let _ = i;
            w.store(0, Ordering::Relaxed);
        }
        drop(st);
        self.dir.write_meta(&meta)?;
        self.dom(domid)
    }

    /// Build and start a running guest.
    pub fn create_guest(&self, cfg: &GuestConfig) -> Result<DomId> {
        cfg.validate()?;
        let config = serde_json::to_value(cfg).ok();
        let d = self.new_domain(
            &cfg.name,
            cfg.guest_type,
            cfg.pages(),
            cfg.vcpus,
            config,
            cfg.tracking,
        )?;
        let domid = d.meta.domid;
        let r = (|| {
            let img = build::build(
                cfg,
                &d.view,
                d.meta.mfn_base,
                Scramble::new(d.pages(), d.meta.salt),
            )?;
            for (f, &p) in img.m2p.iter().enumerate() {
                d.st.m2p()?[f].store(p, Ordering::Relaxed);
            }
            for (f, &t) in img.types.iter().enumerate() {
                if t != 0 {
                    d.st.set_page_type(f, t)?;
                }
            }
            if cfg.guest_type == GuestType::Hvm {
                // Xen-heap pages in the physmap are not RAM of the guest.
                let lay = super::layout::HvmLayout { pages: d.pages() };
                for pfn in 0..d.pages() {
                    if lay.is_xtab(pfn) {
                        d.st.m2p()?[pfn as usize].store(INVALID_MFN, Ordering::Relaxed);
                    }
                }
            }
            for (v, b) in img.vcpus.iter().enumerate() {
                d.st.set_vcpu_blobs(v as u32, [&b[0], &b[1], &b[2], &b[3]])?;
            }
            if !img.hvm_ctx.is_empty() {
                d.st.set_hvm_context(&img.hvm_ctx)?;
            }
            for (i, v) in &img.params {
                d.st.params()?[*i as usize].store(*v, Ordering::Relaxed);
            }
            d.st.set_shared_info(&img.shared_info)?;
            let c = if cfg.paused { cmd::PAUSE } else { cmd::RUN };
            d.st.cmd()?.store(c, Ordering::Release);
            self.start_guest(&d)
        })();
        if let Err(e) = r {
            let _ = self.destroy(domid);
            return Err(e);
        }
        Ok(domid)
    }

    fn start_guest(&self, d: &Dom) -> Result<()> {
        let domid = d.meta.domid;
        let log_path = self.dir.log_path(domid);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| HvError::io(format!("open {}", log_path.display()), e))?;
        let log2 = log.try_clone().map_err(|e| HvError::io("dup log", e))?;
        d.st.state()?.store(state::STARTING, Ordering::Release);
        let exe = guest_exe()?;
        let status = std::process::Command::new(&exe)
            .arg("sim-guest")
            .arg("--dir")
            .arg(self.dir())
            .arg("--dom")
            .arg(domid.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|e| HvError::io(format!("start {} sim-guest", exe.display()), e))?;
        if !status.success() {
            d.st.state()?.store(state::CRASHED, Ordering::Release);
            return Err(HvError::op(
                domid,
                "start",
                format!("sim-guest exited with {status}; see {}", log_path.display()),
            ));
        }
        self.wait_state(d, "start", "boot", |s| s != state::STARTING)?;
        match d.st.state()?.load(Ordering::Acquire) {
            state::CRASHED => Err(HvError::op(
                domid,
                "start",
                format!("guest crashed at boot: {}", d.st.message()?),
            )),
            _ => Ok(()),
        }
    }

    /// Is the domain's guest process alive (and the one we started)?
    fn alive(&self, d: &Dom) -> Result<bool> {
        let pid = d.st.pid()?.load(Ordering::Acquire);
        if pid == 0 {
            return Ok(false);
        }
        Ok(match proc_stat(pid) {
            Some((st, start)) => {
                // The guest publishes its pid, then its start time: a zero
                // start time means it is between the two stores, not dead.
                let want = d.st.pid_start()?.load(Ordering::Acquire);
                st != 'Z' && st != 'X' && (want == 0 || start == want)
            }
            None => false,
        })
    }

    /// The guest's state, noticing a process that died behind our back.
    fn guest_state(&self, d: &Dom) -> Result<u32> {
        let s = d.st.state()?.load(Ordering::Acquire);
        if matches!(
            s,
            state::RUNNING | state::PAUSED | state::SUSPENDED | state::STARTING
        ) && d.st.pid()?.load(Ordering::Acquire) != 0
            && !self.alive(d)?
        {
            // Re-check: the guest may have exited cleanly in between.
            let s2 = d.st.state()?.load(Ordering::Acquire);
            if s2 == s {
                if d.st.message()?.is_empty() {
                    d.st.set_message("guest process died")?;
                }
                d.st.state()?.store(state::CRASHED, Ordering::Release);
                return Ok(state::CRASHED);
            }
            return Ok(s2);
        }
        Ok(s)
    }

    fn wait_state(
        &self,
        d: &Dom,
        op: &'static str,
        what: &str,
        done: impl Fn(u32) -> bool,
    ) -> Result<u32> {
        let deadline = Instant::now() + timeout();
        loop {
            let s = self.guest_state(d)?;
            if done(s) {
                return Ok(s);
            }
            if s == state::CRASHED || s == state::STOPPED {
                return Err(HvError::op(
                    d.meta.domid,
                    op,
                    format!(
                        "domain {} ({}) is {} while waiting for it to {what}: {}",
                        d.meta.domid,
                        d.meta.name,
                        state::name(s),
                        d.st.message()?
                    ),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HvError::op(d.meta.domid, op, format!("timed out after {:?} waiting for domain {} ({}) to {what} (it is {}; log {})", timeout(), d.meta.domid, d.meta.name, state::name(s), self.dir.log_path(d.meta.domid).display())));
            }
            futex_wait(
                d.st.state()?,
                s,
                (deadline - now).min(Duration::from_millis(100)),
            );
        }
    }

    fn set_cmd(&self, d: &Dom, c: u32) -> Result<()> {
        let w = d.st.cmd()?;
        w.store(c, Ordering::Release);
        futex_wake(w);
        Ok(())
    }

    /// Let the guest run until it has completed `step` steps, then pause it
    /// there (at a step boundary). Returns when it has paused.
    pub fn run_until(&self, dom: DomId, step: u64) -> Result<()> {
        let d = self.dom(dom)?;
        let s = self.guest_state(&d)?;
        if s == state::SUSPENDED {
            return Err(HvError::op(dom, "run_until", "domain is suspended"));
        }
        let cur = d.st.step()?.load(Ordering::Acquire);
        if s == state::PAUSED && cur > step {
            return Err(HvError::op(
                dom,
                "run_until",
                format!("already at step {cur}, past {step}"),
            ));
        }
        d.st.run_until()?.store(step, Ordering::Release);
        if s == state::NEW || s == state::PAUSED {
            self.unpause(dom)?;
        }
        let deadline_ok = self.wait_state(&d, "run_until", &format!("reach step {step}"), |s| {
            s == state::PAUSED
        });
        // Waiting may have seen an unrelated pause; insist on the step.
        deadline_ok?;
        d.st.run_until()?.store(NO_LIMIT, Ordering::Release);
        let got = d.st.step()?.load(Ordering::Acquire);
        if got != step {
            return Err(HvError::op(
                dom,
                "run_until",
                format!("guest paused at step {got}, not {step} (paused by someone else?)"),
            ));
        }
        Ok(())
    }

    /// Steps the guest has completed (as it last published them).
    pub fn step(&self, dom: DomId) -> Result<u64> {
        Ok(self.dom(dom)?.st.step()?.load(Ordering::Acquire))
    }

    /// The write-tracking mode of a running guest (None before it starts).
    /// Whether log-dirty mode is on (`sim status`, tests: a failed save
    /// must leave it off).
    pub fn logdirty_enabled(&self, dom: DomId) -> Result<bool> {
        Ok(self.dom(dom)?.st.logdirty()?.load(Ordering::Acquire) != 0)
    }

    pub fn tracking_mode(&self, dom: DomId) -> Result<Option<TrackingMode>> {
        Ok(TrackingMode::from_code(
            self.dom(dom)?.st.tracking()?.load(Ordering::Acquire),
        ))
    }

    /// Guest state name ("running", "paused", …) for status displays.
    pub fn state_name(&self, dom: DomId) -> Result<&'static str> {
        let d = self.dom(dom)?;
        Ok(state::name(self.guest_state(&d)?))
    }

    /// The crash / status message the guest left, if any.
    pub fn message(&self, dom: DomId) -> Result<String> {
        self.dom(dom)?.st.message()
    }

    pub fn meta(&self, dom: DomId) -> Result<DomainMeta> {
        self.dir.read_meta(dom)
    }

    fn update_meta(&self, dom: DomId, f: impl FnOnce(&mut DomainMeta) -> Result<()>) -> Result<()> {
        let _l = self.dir.lock()?;
        let mut m = self.dir.read_meta(dom)?;
        f(&mut m)?;
        self.dir.write_meta(&m)
    }

    fn require(&self, d: &Dom, gt: GuestType, op: &'static str) -> Result<()> {
        if d.meta.guest_type != gt {
            return Err(HvError::Unsupported {
                dom: d.meta.domid,
                op,
                what: format!("{} guests", d.meta.guest_type),
            });
        }
        Ok(())
    }

    /// Frame index → pfn for the dirty log.
    fn frame_pfn(d: &Dom, f: usize) -> Option<u64> {
        d.st.m2p()
            .ok()?
            .get(f)
            .map(|w| w.load(Ordering::Relaxed))
            .filter(|&p| p != INVALID_MFN && p <= d.meta.max_pfn)
    }

    fn scan(&self, dom: DomId, out: &mut Bitmap, clear: bool, op: &'static str) -> Result<u64> {
        let d = self.dom(dom)?;
        if out.len() != d.pages() {
            return Err(HvError::Invalid {
                op,
                msg: format!("bitmap of {} bits for a p2m of {}", out.len(), d.pages()),
            });
        }
        if d.st.logdirty()?.load(Ordering::Acquire) == 0 {
            return Err(HvError::op(dom, op, "log-dirty mode is not enabled"));
        }
        out.clear_all();
        self.collect_dirty(&d, clear, op, &mut |f| {
            if let Some(p) = Self::frame_pfn(&d, f) {
                out.set(p);
            }
        })?;
        Ok(out.count())
    }

    fn collect_dirty(
        &self,
        d: &Dom,
        clear: bool,
        op: &'static str,
        mark: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let dom = d.meta.domid;
        let s = self.guest_state(d)?;
        if s == state::NEW {
            return Ok(()); // never ran: nothing written
        }
        match TrackingMode::from_code(d.st.tracking()?.load(Ordering::Acquire)) {
            Some(TrackingMode::Soft) => {
                for (i, w) in d.st.dirty()?.iter().enumerate() {
                    let mut bits = if clear {
                        w.swap(0, Ordering::AcqRel)
                    } else {
                        w.load(Ordering::Acquire)
                    };
                    while bits != 0 {
                        let b = bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        mark(i * 64 + b);
                    }
                }
                Ok(())
            }
            Some(TrackingMode::Uffd) => {
                if !self.alive(d)? {
                    return Err(HvError::op(
                        dom,
                        op,
                        format!("guest process is gone ({})", state::name(s)),
                    ));
                }
                let pid = d.st.pid()?.load(Ordering::Acquire);
                let va = d.st.ram_va()?.load(Ordering::Acquire);
                let len = d.st.ram_len()?.load(Ordering::Acquire);
                let pm = std::fs::File::open(format!("/proc/{pid}/pagemap"))
                    .map_err(|e| HvError::io(format!("open /proc/{pid}/pagemap"), e))?;
                uffd::scan_written(&pm, va, len, clear, |first, n| {
                    for f in first..first + n {
                        mark(f as usize);
                    }
                })
                .map_err(|e| HvError::op(dom, op, format!("PAGEMAP_SCAN: {e}")))
            }
            None => Err(HvError::op(
                dom,
                op,
                "guest has not chosen a tracking mode (not started?)",
            )),
        }
    }

    /// Type a page table and everything below it (Xen's validation when a
    /// table is pinned or loaded into cr3). Refuses frames outside the
    /// domain, superpages, type conflicts, and writable mappings of tables.
    fn validate_table(&self, d: &Dom, root: usize, level: u8, op: &'static str) -> Result<()> {
        let dom = d.meta.domid;
        let fr = d.frames();
        let mut newtypes: HashMap<usize, u8> = HashMap::new();
        let mut stack = vec![(root, level)];
        let mut leaves: Vec<(usize, usize, u64)> = Vec::new();
        while let Some((f, lvl)) = stack.pop() {
            let cur = d.st.page_type(f)? & 0x7;
            let had = newtypes.get(&f).copied();
            if (cur != 0 && cur != lvl) || had.is_some_and(|h| h != lvl) {
                return Err(HvError::op(
                    dom,
                    op,
                    format!(
                        "frame {:#x} is already an L{} table, cannot be L{lvl}",
                        d.meta.mfn_base + f as u64,
                        had.unwrap_or(cur)
                    ),
                ));
            }
            if had.is_some() {
                continue;
            }
            newtypes.insert(f, lvl);
            for slot in 0..512usize {
                if lvl == 4 && pagetable::XEN_L4_SLOTS.contains(&slot) {
                    continue;
                }
                let pte = d.view.read_u64(f, slot).unwrap_or(0);
                if pte & 1 == 0 {
                    continue;
                }
                if lvl > 1 && pte & PTE_PSE != 0 {
                    return Err(HvError::op(
                        dom,
                        op,
                        format!(
                            "L{lvl} table {:#x} slot {slot}: superpage",
                            d.meta.mfn_base + f as u64
                        ),
                    ));
                }
                let mfn = pagetable::frame(pte);
                let t = fr.frame_of(mfn).ok_or_else(|| HvError::op(dom, op, format!("L{lvl} table {:#x} slot {slot} maps mfn {mfn:#x}, which is not this domain's", d.meta.mfn_base + f as u64)))?;
                if lvl > 1 {
                    stack.push((t, lvl - 1));
                } else {
                    leaves.push((f, slot, pte));
                }
            }
        }
        for (f, slot, pte) in leaves {
            let t = fr.frame_of(pagetable::frame(pte)).unwrap_or(usize::MAX);
            let is_table =
                newtypes.contains_key(&t) || d.st.page_type(t).map(|x| x & 7 != 0).unwrap_or(false);
            if pte & PTE_RW != 0 && is_table {
                return Err(HvError::op(
                    dom,
                    op,
                    format!(
                        "L1 table {:#x} slot {slot} maps page table {:#x} writable",
                        d.meta.mfn_base + f as u64,
                        d.meta.mfn_base + t as u64
                    ),
                ));
            }
        }
        for (f, lvl) in newtypes {
            let pinned = d.st.page_type(f)? & PageType::PINNED;
            d.st.set_page_type(f, lvl | pinned)?;
        }
        Ok(())
    }
}

/// A batch of guest frames mapped into this process.
struct SimMapping {
    dom: Arc<Dom>,
    frames: Vec<usize>,
    writable: bool,
}

impl PageMapping for SimMapping {
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn page(&self, i: usize) -> GuestPage<'_> {
        let f = self.frames[i];
        // SAFETY: frame indices were checked against the RAM size when the
        // mapping was made, the RAM is page aligned and stays mapped while
        // `dom` is held (as long as `self`). The guest may write the page
        // concurrently, as on Xen: GuestPage only copies, volatile.
        unsafe { GuestPage::new(self.dom.ram.as_ptr().add(f * 4096)) }
    }
    fn page_mut(&mut self, i: usize) -> GuestPageMut<'_> {
        assert!(self.writable, "page_mut on a read-only mapping");
        let f = self.frames[i];
        // SAFETY: as in `page`; the RAM is mapped read-write.
        unsafe { GuestPageMut::new(self.dom.ram.as_ptr().add(f * 4096)) }
    }
}

impl Hypervisor for SimHost {
    fn describe(&self) -> String {
        format!("sim:{}", self.dir().display())
    }
    fn xen_version(&self) -> (u32, u32) {
        (4, 17)
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let mut out = Vec::new();
        for id in self.dir.domids()? {
            match self.domain_info(id) {
                Ok(i) => out.push(i),
                Err(HvError::NoSuchDomain(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn domain_info(&self, dom: DomId) -> Result<DomainInfo> {
        let d = self.dom(dom)?;
        let name = self.dir.read_meta(dom)?.name;
        let s = self.guest_state(&d)?;
        let c = d.st.cmd()?.load(Ordering::Acquire);
        let online_vcpus = match d.meta.guest_type {
            GuestType::Hvm => (0..d.meta.vcpus()).collect(),
            GuestType::Pv => (0..d.meta.vcpus())
                .filter(|&v| {
                    d.st.vcpu_blobs(v)
                        .ok()
                        .and_then(|b| {
                            vcpu::Context64::new(&b[0])
                                .ok()
                                .map(|c| c.flags() & vcpu::VGCF_ONLINE != 0)
                        })
                        .unwrap_or(false)
                })
                .collect(),
        };
        let shutdown = match s {
            state::SUSPENDED => Some(ShutdownReason::Suspend),
            state::CRASHED => Some(ShutdownReason::Crash),
            state::STOPPED => Some(ShutdownReason::Poweroff),
            _ => None,
        };
        Ok(DomainInfo {
            domid: dom,
            name,
            guest_type: d.meta.guest_type,
            max_pfn: d.meta.max_pfn,
            max_vcpu_id: d.meta.max_vcpu_id,
            online_vcpus,
            paused: s == state::NEW
                || s == state::PAUSED
                || (c == cmd::PAUSE && s != state::SUSPENDED),
            shutdown,
        })
    }

    fn rename(&self, dom: DomId, name: &str) -> Result<()> {
        let _l = self.dir.lock()?;
        for id in self.dir.domids()? {
            if id != dom
                && self
                    .dir
                    .read_meta(id)
                    .map(|m| m.name == name)
                    .unwrap_or(false)
            {
                return Err(HvError::Invalid {
                    op: "rename",
                    msg: format!("a domain named {name:?} already exists (id {id})"),
                });
            }
        }
        let mut m = self.dir.read_meta(dom)?;
        m.name = name.to_string();
        self.dir.write_meta(&m)
    }

    fn pause(&self, dom: DomId) -> Result<()> {
        let d = self.dom(dom)?;
        match self.guest_state(&d)? {
            state::NEW | state::PAUSED => return Ok(()),
            state::SUSPENDED => return Ok(()), // already stopped, nothing to do
            state::CRASHED | state::STOPPED => {
                return Err(HvError::op(
                    dom,
                    "pause",
                    format!("domain is {}", state::name(self.guest_state(&d)?)),
                ))
            }
            _ => {}
        }
        self.set_cmd(&d, cmd::PAUSE)?;
        self.wait_state(&d, "pause", "pause", |s| {
            s == state::PAUSED || s == state::SUSPENDED
        })?;
        Ok(())
    }

    fn unpause(&self, dom: DomId) -> Result<()> {
        let d = self.dom(dom)?;
        match self.guest_state(&d)? {
            state::NEW => {
                d.st.cmd()?.store(cmd::RUN, Ordering::Release);
                self.start_guest(&d)
            }
            state::PAUSED => {
                self.set_cmd(&d, cmd::RUN)?;
                let b = d.st.boots()?.load(Ordering::Acquire);
                // Wait for the guest to take the context back (it re-reads it).
                self.wait_state(&d, "unpause", "resume running", |s| {
                    s != state::PAUSED
                        || d.st
                            .cmd()
                            .map(|c| c.load(Ordering::Acquire) != cmd::RUN)
                            .unwrap_or(true)
                })?;
                let _ = b;
                Ok(())
            }
            state::RUNNING | state::STARTING => Ok(()),
            s => Err(HvError::op(
                dom,
                "unpause",
                format!("domain is {}", state::name(s)),
            )),
        }
    }

    fn suspend(&self, dom: DomId) -> Result<()> {
        let d = self.dom(dom)?;
        match self.guest_state(&d)? {
            state::SUSPENDED => return Ok(()),
            state::RUNNING | state::PAUSED => {}
            s => {
                return Err(HvError::op(
                    dom,
                    "suspend",
                    format!("domain is {}", state::name(s)),
                ))
            }
        }
        self.set_cmd(&d, cmd::SUSPEND)?;
        self.wait_state(&d, "suspend", "suspend", |s| s == state::SUSPENDED)?;
        Ok(())
    }

    fn resume(&self, dom: DomId, cancel: bool) -> Result<()> {
        let d = self.dom(dom)?;
        match self.guest_state(&d)? {
            state::SUSPENDED => {}
            state::RUNNING | state::PAUSED => return Ok(()),
            s => {
                return Err(HvError::op(
                    dom,
                    "resume",
                    format!("domain is {}", state::name(s)),
                ))
            }
        }
        // The suspend hypercall's return value: 1 = cancelled (continue in
        // place), 0 = resumed in a new domain (xc_domain_resume semantics).
        let rax = u64::from(cancel);
        match d.meta.guest_type {
            GuestType::Pv => {
                let [mut basic, ..] = d.st.vcpu_blobs(0)?;
                let mut c = vcpu::Context64Mut::new(&mut basic)
                    .map_err(|e| HvError::op(dom, "resume", e))?;
                c.set_reg(vcpu::Reg::Rax, rax);
                d.st.set_vcpu_basic(0, &basic)?;
                if !cancel {
                    // The non-cooperative path rewrites start_info's frames,
                    // which the guest canonicalised to pfns at suspend.
                    self.relocalise_start_info(&d)?;
                }
            }
            GuestType::Hvm => {
                let mut blob = d.st.hvm_context()?;
                let r = hvmctx::cpu_record(&blob, 0)?;
                hvmctx::set(&mut blob[r], hvmctx::cpu::RAX, rax);
                d.st.set_hvm_context(&blob)?;
            }
        }
        self.set_cmd(&d, cmd::RUN)?;
        self.wait_state(&d, "resume", "resume", |s| s != state::SUSPENDED)?;
        Ok(())
    }

    fn destroy(&self, dom: DomId) -> Result<()> {
        let d = self.dom(dom)?;
        self.set_cmd(&d, cmd::STOP)?;
        let pid = d.st.pid()?.load(Ordering::Acquire);
        if self.alive(&d)? {
            // SAFETY: kill(2) on a pid whose start time we verified is the
            // guest process this host started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let deadline = Instant::now() + timeout();
            while self.alive(&d)? && Instant::now() < deadline {
                // Reap it if it happens to be our child; else init does.
                // SAFETY: waitpid with WNOHANG on a specific pid.
                unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        d.st.state()?.store(state::STOPPED, Ordering::Release);
        let _l = self.dir.lock()?;
        let _ = std::fs::remove_file(&d.meta.ram_path);
        let _ = std::fs::remove_file(&d.meta.state_path);
        let _ = std::fs::remove_dir_all(self.dir.dom_dir(dom));
        self.doms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dom);
        Ok(())
    }

    fn logdirty_enable(&self, dom: DomId) -> Result<()> {
        let d = self.dom(dom)?;
        let w = d.st.logdirty()?;
        if w.load(Ordering::Acquire) != 0 {
            return Err(HvError::op(
                dom,
                "logdirty_enable",
                "log-dirty mode is already enabled",
            ));
        }
        // Start from an empty log, as Xen does by write-protecting everything.
        self.collect_dirty(&d, true, "logdirty_enable", &mut |_| {})?;
        w.store(1, Ordering::Release);
        Ok(())
    }

    fn logdirty_disable(&self, dom: DomId) -> Result<()> {
        let d = self.dom(dom)?;
        d.st.logdirty()?.store(0, Ordering::Release);
        Ok(())
    }

    fn logdirty_clean(&self, dom: DomId, out: &mut Bitmap, _final_round: bool) -> Result<u64> {
        self.scan(dom, out, true, "logdirty_clean")
    }

    fn logdirty_peek(&self, dom: DomId, out: &mut Bitmap) -> Result<u64> {
        self.scan(dom, out, false, "logdirty_peek")
    }

    fn page_types(&self, dom: DomId, gfns: &[u64], out: &mut [PageType]) -> Result<()> {
        if gfns.len() > 1024 || out.len() != gfns.len() {
            return Err(HvError::Invalid {
                op: "page_types",
                msg: format!("{} gfns (max 1024) into {} slots", gfns.len(), out.len()),
            });
        }
        let d = self.dom(dom)?;
        for (g, o) in gfns.iter().zip(out.iter_mut()) {
            *o = match d.frame_of_gfn(*g) {
                None => PageType::XTAB,
                Some(f) => match d.meta.guest_type {
                    GuestType::Hvm => PageType::NOTAB,
                    GuestType::Pv => PageType(d.st.page_type(f)? & 0xF),
                },
            };
        }
        Ok(())
    }

    fn map_pages<'a>(
        &'a self,
        dom: DomId,
        gfns: &[u64],
        writable: bool,
    ) -> Result<Box<dyn PageMapping + 'a>> {
        let d = self.dom(dom)?;
        let mut frames = Vec::with_capacity(gfns.len());
        for g in gfns {
            let f = d.frame_of_gfn(*g).ok_or_else(|| {
                HvError::op(
                    dom,
                    "map_pages",
                    format!("gfn {g:#x} is not a populated frame of this domain"),
                )
            })?;
            frames.push(f);
        }
        Ok(Box::new(SimMapping {
            dom: d,
            frames,
            writable,
        }))
    }

    fn guest_width(&self, dom: DomId) -> Result<u32> {
        Ok(self.dom(dom)?.meta.guest_width)
    }

    fn set_guest_width(&self, dom: DomId, width: u32) -> Result<()> {
        let d = self.dom(dom)?;
        match width {
            8 => Ok(()),
            4 => Err(HvError::Unsupported {
                dom,
                op: "set_guest_width",
                what: "32-bit PV guests".into(),
            }),
            w => Err(HvError::Invalid {
                op: "set_guest_width",
                msg: format!("width {w} for domain {}", d.meta.domid),
            }),
        }
    }

    fn pv_p2m(&self, dom: DomId) -> Result<PvP2m> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Pv, "pv_p2m")?;
        let si = d.st.shared_info()?;
        let cr3 = shared_info::p2m_cr3(&si);
        let vaddr = shared_info::p2m_vaddr(&si);
        let size = shared_info::max_pfn(&si);
        if cr3 == 0 {
            return Err(HvError::op(
                dom,
                "pv_p2m",
                "the guest has not published a linear P2M (shared_info.arch.p2m_cr3 = 0)",
            ));
        }
        if size == 0 || size > d.pages() {
            return Err(HvError::op(
                dom,
                "pv_p2m",
                format!("shared_info.arch.max_pfn {size} out of range"),
            ));
        }
        let fr = d.frames();
        let m2p = d.st.m2p()?;
        let mut p2m = Vec::with_capacity(size as usize);
        let mut frames = Vec::new();
        let mut leaf = 0usize;
        for pfn in 0..size {
            if pfn % 512 == 0 {
                leaf = fr
                    .walk(cr3 >> 12, vaddr + pfn * 8)
                    .map_err(|e| HvError::op(dom, "pv_p2m", e))?
                    .0;
                let lp = m2p[leaf].load(Ordering::Relaxed);
                frames.push(lp);
            }
            p2m.push(
                d.view
                    .read_u64(leaf, (pfn % 512) as usize)
                    .unwrap_or(INVALID_MFN),
            );
        }
        Ok(PvP2m { p2m, frames })
    }

    fn pv_vcpu(&self, dom: DomId, vcpu: u32) -> Result<PvVcpuState> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Pv, "pv_vcpu")?;
        let [basic, extended, xsave, msrs] = d.st.vcpu_blobs(vcpu)?;
        Ok(PvVcpuState {
            basic,
            extended,
            xsave,
            msrs,
        })
    }

    fn set_pv_vcpu(&self, dom: DomId, vcpu: u32, s: &PvVcpuState) -> Result<()> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Pv, "set_pv_vcpu")?;
        if !s.basic.is_empty() {
            let c =
                vcpu::Context64::new(&s.basic).map_err(|e| HvError::op(dom, "set_pv_vcpu", e))?;
            // Xen takes a type reference on cr3 as a root page table,
            // validating the whole tree if it is not yet typed.
            let cr3 = c.cr3_frame();
            let f = d.frame_of_gfn(cr3).ok_or_else(|| {
                HvError::op(
                    dom,
                    "set_pv_vcpu",
                    format!("vcpu {vcpu}: cr3 mfn {cr3:#x} is not this domain's"),
                )
            })?;
            self.validate_table(&d, f, 4, "set_pv_vcpu")?;
        }
        let [ob, oe, ox, om] = d.st.vcpu_blobs(vcpu)?;
        let pick = |new: &Vec<u8>, old: Vec<u8>| if new.is_empty() { old } else { new.clone() };
        let (b, e, x, m) = (
            pick(&s.basic, ob),
            pick(&s.extended, oe),
            pick(&s.xsave, ox),
            pick(&s.msrs, om),
        );
        if m.len() % 16 != 0 {
            return Err(HvError::Invalid {
                op: "set_pv_vcpu",
                msg: format!("MSRS blob of {} bytes", m.len()),
            });
        }
        d.st.set_vcpu_blobs(vcpu, [&b, &e, &x, &m])
    }

    fn shared_info(&self, dom: DomId) -> Result<Vec<u8>> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Pv, "shared_info")?;
        d.st.shared_info()
    }

    /// A Xen-heap frame just below the domain's machine frames, as the
    /// guest's builder put in start_info (the page itself lives in the
    /// domain's hypervisor state, not in its RAM).
    fn shared_info_frame(&self, dom: DomId) -> Result<u64> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Pv, "shared_info_frame")?;
        Ok(build::shared_info_maddr(d.meta.mfn_base) >> 12)
    }

    fn set_shared_info(&self, dom: DomId, page: &[u8]) -> Result<()> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Pv, "set_shared_info")?;
        if page.len() != ctl::PAGE {
            return Err(HvError::Invalid {
                op: "set_shared_info",
                msg: format!("page of {} bytes", page.len()),
            });
        }
        d.st.set_shared_info(page)
    }

    fn pin_table(&self, dom: DomId, mfn: u64, level: u8) -> Result<()> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Pv, "pin_table")?;
        if !(1..=4).contains(&level) {
            return Err(HvError::Invalid {
                op: "pin_table",
                msg: format!("level {level}"),
            });
        }
        let f = d.frame_of_gfn(mfn).ok_or_else(|| {
            HvError::op(
                dom,
                "pin_table",
                format!("mfn {mfn:#x} is not this domain's"),
            )
        })?;
        if d.st.page_type(f)? & PageType::PINNED != 0 {
            return Err(HvError::op(
                dom,
                "pin_table",
                format!("mfn {mfn:#x} is already pinned"),
            ));
        }
        self.validate_table(&d, f, level, "pin_table")?;
        let t = d.st.page_type(f)?;
        d.st.set_page_type(f, t | PageType::PINNED)
    }

    fn hvm_context(&self, dom: DomId) -> Result<Vec<u8>> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Hvm, "hvm_context")?;
        d.st.hvm_context()
    }

    fn set_hvm_context(&self, dom: DomId, blob: &[u8]) -> Result<()> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Hvm, "set_hvm_context")?;
        for e in hvmctx::parse(blob)? {
            if e.typecode == hvmctx::TYPE_CPU && e.instance as u32 > d.meta.max_vcpu_id {
                return Err(HvError::op(
                    dom,
                    "set_hvm_context",
                    format!(
                        "CPU entry for vcpu {} beyond max_vcpu_id {}",
                        e.instance, d.meta.max_vcpu_id
                    ),
                ));
            }
        }
        d.st.set_hvm_context(blob)
    }

    fn hvm_param(&self, dom: DomId, index: u32) -> Result<u64> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Hvm, "hvm_param")?;
        if index >= param::NR {
            return Err(HvError::Invalid {
                op: "hvm_param",
                msg: format!("index {index} >= HVM_NR_PARAMS"),
            });
        }
        Ok(d.st.params()?[index as usize].load(Ordering::Acquire))
    }

    fn set_hvm_param(&self, dom: DomId, index: u32, value: u64) -> Result<()> {
        let d = self.dom(dom)?;
        self.require(&d, GuestType::Hvm, "set_hvm_param")?;
        if index >= param::NR {
            return Err(HvError::Invalid {
                op: "set_hvm_param",
                msg: format!("index {index} >= HVM_NR_PARAMS"),
            });
        }
        d.st.params()?[index as usize].store(value, Ordering::Release);
        Ok(())
    }

    fn tsc_info(&self, dom: DomId) -> Result<TscInfo> {
        Ok(self.dir.read_meta(dom)?.tsc)
    }

    fn set_tsc_info(&self, dom: DomId, info: &TscInfo) -> Result<()> {
        if info.mode > 3 {
            return Err(HvError::Invalid {
                op: "set_tsc_info",
                msg: format!("TSC mode {}", info.mode),
            });
        }
        let info = *info;
        self.update_meta(dom, |m| {
            m.tsc = info;
            Ok(())
        })
    }

    fn cpu_policy(&self, dom: DomId) -> Result<CpuPolicy> {
        self.dir.read_meta(dom)?.cpu_policy()
    }

    fn set_cpu_policy(&self, dom: DomId, policy: &CpuPolicy) -> Result<()> {
        cpu::check_policy(policy)?;
        self.update_meta(dom, |m| {
            m.set_cpu_policy(policy);
            Ok(())
        })
    }

    fn create_domain(&self, spec: &DomainSpec) -> Result<DomId> {
        if spec.max_pfn >= super::config::MAX_MEM_MIB * 256 {
            return Err(HvError::Invalid {
                op: "create_domain",
                msg: format!("max_pfn {:#x} too large", spec.max_pfn),
            });
        }
        let tracking = spec
            .config
            .as_ref()
            .and_then(|c| serde_json::from_value::<GuestConfig>(c.clone()).ok())
            .and_then(|c| c.tracking);
        let d = self.new_domain(
            &spec.name,
            spec.guest_type,
            spec.max_pfn + 1,
            spec.max_vcpu_id + 1,
            spec.config.clone(),
            tracking,
        )?;
        if spec.guest_type == GuestType::Pv {
            let mut si = vec![0u8; ctl::PAGE];
            // A new domain's event channels all start masked.
            si[shared_info::EVTCHN_MASK..shared_info::EVTCHN_MASK + 8 * shared_info::EVTCHN_WORDS]
                .fill(0xff);
            d.st.set_shared_info(&si)?;
        }
        Ok(d.meta.domid)
    }

    fn populate(&self, dom: DomId, pfns: &[u64]) -> Result<Vec<u64>> {
        let d = self.dom(dom)?;
        let sc = Scramble::new(d.pages(), d.meta.salt);
        let m2p = d.st.m2p()?;
        let mut out = Vec::with_capacity(pfns.len());
        for &pfn in pfns {
            if pfn > d.meta.max_pfn {
                return Err(HvError::op(
                    dom,
                    "populate",
                    format!("pfn {pfn:#x} beyond max_pfn {:#x}", d.meta.max_pfn),
                ));
            }
            let f = match d.meta.guest_type {
                GuestType::Pv => sc.frame(pfn) as usize,
                GuestType::Hvm => pfn as usize,
            };
            let cur = m2p[f].load(Ordering::Acquire);
            if cur != INVALID_MFN && cur != pfn {
                return Err(HvError::op(
                    dom,
                    "populate",
                    format!("frame for pfn {pfn:#x} already holds pfn {cur:#x}"),
                ));
            }
            m2p[f].store(pfn, Ordering::Release);
            out.push(d.meta.mfn_base + f as u64);
        }
        Ok(out)
    }

    fn domain_config(&self, dom: DomId) -> Result<Option<serde_json::Value>> {
        Ok(self.dir.read_meta(dom)?.config)
    }

    /// A simulated guest's RAM is this machine's memory: what the kernel
    /// reports available.
    fn host_free_memory(&self) -> Result<Option<u64>> {
        let text = std::fs::read_to_string("/proc/meminfo")
            .map_err(|e| HvError::io("read /proc/meminfo", e))?;
        Ok(mem_available(&text))
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut f = line.split_whitespace().skip(1);
    let kib: u64 = f.next()?.parse().ok()?;
    match f.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

impl SimHost {
    /// Put mfns back into start_info's store/console fields after a suspend
    /// that canonicalised them to pfns (the non-cooperative resume path).
    fn relocalise_start_info(&self, d: &Dom) -> Result<()> {
        let dom = d.meta.domid;
        let [basic, ..] = d.st.vcpu_blobs(0)?;
        let c = vcpu::Context64::new(&basic).map_err(|e| HvError::op(dom, "resume", e))?;
        let si_mfn = c.reg(vcpu::Reg::Rdx);
        let p2m = self.pv_p2m(dom)?;
        let mut m = self.map_pages(dom, &[si_mfn], true)?;
        let mut copy = m.page(0).to_vec();
        let page = copy.as_mut_slice();
        for (get, set) in [
            (
                start_info::store_mfn as fn(&[u8]) -> u64,
                start_info::set_store_mfn as fn(&mut [u8], u64),
            ),
            (start_info::console_mfn, start_info::set_console_mfn),
        ] {
            let pfn = get(page);
            if let Some(&mfn) = p2m.p2m.get(pfn as usize) {
                set(page, mfn);
            }
        }
        m.page_mut(0).copy_from(&copy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{host_tag, mem_available};

    #[test]
    fn mem_available_is_read_in_bytes() {
        let m = "MemTotal:       24684000 kB\nMemFree:  100 kB\nMemAvailable:   23515000 kB\n";
        assert_eq!(mem_available(m), Some(23_515_000 * 1024));
        assert_eq!(mem_available("MemFree: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: x kB\n"), None);
    }

    #[test]
    fn every_host_tag_keeps_pv_frames_inside_a_pte() {
        for seed in (0..200_000u64).chain([u64::MAX, u64::MAX - 1]) {
            let tag = host_tag(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!((1..=0xfff).contains(&tag), "tag {tag:#x}");
            // Highest PV frame of the highest domain slot on this host.
            let top = ((tag as u64) << 28) | (0xff << 20) | 0xf_ffff;
            assert!(top < 1 << 40, "mfn {top:#x} does not fit a PTE");
        }
    }
}
