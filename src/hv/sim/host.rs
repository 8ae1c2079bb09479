//! `SimHost`: the simulated Xen host, its open domains, and its
//! `Hypervisor` implementation. The rooms around it: `create` (new domains),
//! `toolstack` (the `Toolstack` implementation: xenstore, grants, device model),
//! `process` (the guest process and its states), `tracking` (log-dirty),
//! `pv` (P2M, vCPU contexts, page-table pins), `mapping` (`map_pages`), `dom`
//! (a domain's mappings and which frame holds a gfn).

use super::build::{self, param, Scramble};
use super::cpu;
use super::create::host_tag;
use super::ctl::{self, cmd, state, DomState};
use super::dom::Dom;
use super::hvmctx;
use super::machine::RamView;
use super::meta::{DomainMeta, HostDir, HostState};
use super::process::timeout;
use super::shm::Shm;
use crate::bitmap::Bitmap;
use crate::hv::{
    CpuPolicy, DomId, DomainInfo, GuestType, HvError, Hypervisor, PageMapping, PageType, PvP2m,
    PvVcpuState, Result, ShutdownReason, TscInfo, INVALID_MFN,
};
use crate::x86::vcpu;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct SimHost {
    pub(super) dir: HostDir,
    pub(super) tag: u32,
    pub(super) doms: Mutex<HashMap<DomId, Arc<Dom>>>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimHost({})", self.dir.dir.display())
    }
}

pub(super) fn shm_dir(fallback: &Path) -> PathBuf {
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

/// Anonymous memory of `bytes` (rounded up to pages) as this host gives a
/// domain its RAM: a file in the same tmpfs, unlinked at once, mapped here
/// and not yet allocated (see [`Shm::allocate`]). The benchmarks' floor for
/// "receive into new memory".
pub fn new_memory(host_dir: &Path, bytes: usize) -> Result<super::shm::Shm> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = shm_dir(host_dir).join(format!("rxmigrate-scratch-{}-{n}.ram", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let shm = super::shm::Shm::create(&path, bytes.div_ceil(4096).max(1) * 4096);
    let _ = std::fs::remove_file(&path);
    shm
}

/// `f(first, count)` for each run of consecutive frames in `sorted`.
fn for_runs(sorted: &[usize], mut f: impl FnMut(usize, usize) -> Result<()>) -> Result<()> {
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[j - 1] + 1 {
            j += 1;
        }
        f(sorted[i], j - i)?;
        i = j;
    }
    Ok(())
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
                        no_shadow: false,
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

    /// Makes this host model a hypervisor with or without shadow paging
    /// (kept in the host's state, so every process using it sees it).
    pub fn set_shadow_paging(&self, on: bool) -> Result<()> {
        let _l = self.dir.lock()?;
        let mut h = self.dir.read_host()?;
        h.no_shadow = !on;
        self.dir.write_host(&h)
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
        let frames = meta.frames() as usize;
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

    pub fn meta(&self, dom: DomId) -> Result<DomainMeta> {
        self.dir.read_meta(dom)
    }

    pub(super) fn update_meta(
        &self,
        dom: DomId,
        f: impl FnOnce(&mut DomainMeta) -> Result<()>,
    ) -> Result<()> {
        let _l = self.dir.lock()?;
        let mut m = self.dir.read_meta(dom)?;
        f(&mut m)?;
        self.dir.write_meta(&m)
    }

    pub(super) fn require(&self, d: &Dom, gt: GuestType, op: &'static str) -> Result<()> {
        if d.meta.guest_type != gt {
            return Err(HvError::Unsupported {
                dom: d.meta.domid,
                op,
                what: format!("{} guests", d.meta.guest_type),
            });
        }
        Ok(())
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
        self.dir.write_meta(&m)?;
        drop(_l);
        self.toolstack_rename(dom, name)
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

    fn shadow_paging(&self) -> Result<bool> {
        Ok(!self.dir.read_host()?.no_shadow)
    }

    fn logdirty_enable(&self, dom: DomId) -> Result<()> {
        // As Xen without shadow paging: PV log-dirty fails (EOPNOTSUPP),
        // which XenHost reports as this.
        if self.domain_info(dom)?.guest_type == GuestType::Pv && !self.shadow_paging()? {
            return Err(HvError::NoShadowPaging { dom });
        }
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
        Ok(Box::new(super::mapping::SimMapping {
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
        super::pv::pv_p2m(self, dom)
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
        super::pv::set_pv_vcpu(self, dom, vcpu, s)
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
        super::pv::pin_table(self, dom, mfn, level)
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

    fn populate(&self, dom: DomId, pfns: &[u64]) -> Result<Vec<u64>> {
        let d = self.dom(dom)?;
        let sc = Scramble::new(d.pages(), d.meta.salt);
        let m2p = d.st.m2p()?;
        let mut out = Vec::with_capacity(pfns.len());
        let mut frames = Vec::with_capacity(pfns.len());
        for &pfn in pfns {
            if pfn > d.meta.max_pfn {
                return Err(HvError::op(
                    dom,
                    "populate",
                    format!("pfn {pfn:#x} beyond max_pfn {:#x}", d.meta.max_pfn),
                ));
            }
            let f = d.frame_to_populate(&sc, pfn)?;
            let cur = m2p[f].load(Ordering::Acquire);
            if cur != INVALID_MFN && cur != pfn {
                return Err(HvError::op(
                    dom,
                    "populate",
                    format!("frame for pfn {pfn:#x} already holds pfn {cur:#x}"),
                ));
            }
            m2p[f].store(pfn, Ordering::Release);
            // As Xen: an HVM guest's populated gfn is the pfn asked for
            // (its frame is the sim's business, frame_of_gfn finds it); a
            // PV guest gets the machine frame.
            frames.push(f);
            out.push(match d.meta.guest_type {
                GuestType::Pv => d.meta.mfn_base + f as u64,
                GuestType::Hvm => pfn,
            });
        }
        // Xen allocates the frames now; so does the sim, in runs.
        frames.sort_unstable();
        for_runs(&frames, |first, n| d.ram.allocate(first * 4096, n * 4096))?;
        Ok(out)
    }

    /// A simulated guest holds its RAM and no more.
    fn domain_max_memory(&self, dom: DomId) -> Result<u64> {
        Ok(self.dom(dom)?.meta.pages().saturating_mul(4096))
    }

    fn cpu_cap(&self, dom: DomId) -> Result<u32> {
        Ok(self.dom(dom)?.st.cpu_cap()?.load(Ordering::Acquire))
    }

    /// As credit2: a cap above 100 × vCPUs is refused (EINVAL).
    fn set_cpu_cap(&self, dom: DomId, cap: u32) -> Result<()> {
        let d = self.dom(dom)?;
        let most = 100 * d.meta.vcpus();
        if cap > most {
            return Err(
                HvError::os(dom, "set_cpu_cap", crate::hv::Errno::EINVAL).reworded(|m| {
                    format!("{m}: cap {cap} % is above 100 % × {} vCPUs", d.meta.vcpus())
                }),
            );
        }
        d.st.cpu_cap()?.store(cap, Ordering::Release);
        Ok(())
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
