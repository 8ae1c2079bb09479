//! The sim guest process (`rxmigrate sim-guest --dir DIR --dom ID`): maps its
//! RAM, registers it for write tracking, boots its workload from its vCPU
//! context, and runs steps until told to pause, suspend or stop.
//!
//! A boot reports the domain running as soon as its context is loaded (what
//! Xen's unpause does); the checks whose cost grows with the guest (a PV
//! guest's P2M against the M2P, its data pages through the page tables) run
//! after that and before the first step, as a resumed kernel's own work
//! does: the guest's time, not the toolstack's downtime. A failed check
//! crashes the guest as before, only a moment later.

use super::config::TrackingMode;
use super::ctl::{cmd, futex_wait, futex_wake, state, NO_SHUTDOWN};
use super::dom::Dom;
use super::host::SimHost;
use super::hvmctx;
use super::machine::{boot_hvm, finish_pv, load_pv, state_to_hvm, state_to_pv, Kernel, PvRest};
use super::process::own_start_time;
use super::uffd::WriteTracker;
use crate::hv::{DomId, GuestType, HvError, Result, ShutdownReason};
use crate::x86::{shared_info, start_info, vcpu};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Detach (new session, fork; the parent returns to exit at once) and run
/// the guest in the child. Returns in the parent only.
pub fn daemonize_and_run(dir: &Path, dom: DomId) -> Result<()> {
    // SAFETY: called from a single-threaded process (the CLI entry point
    // before any thread is spawned), so fork duplicates only this thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HvError::io("fork", std::io::Error::last_os_error()));
    }
    if pid > 0 {
        return Ok(());
    }
    // SAFETY: setsid in the fresh child; detaches from the terminal/session.
    unsafe { libc::setsid() };
    let code = match run(dir, dom) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sim-guest {dom}: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn choose_tracking(forced: Option<TrackingMode>) -> Result<Option<TrackingMode>> {
    if forced.is_some() {
        return Ok(forced);
    }
    match std::env::var("RXMIGRATE_SIM_TRACKING") {
        Ok(s) if !s.is_empty() => Ok(Some(s.parse()?)),
        _ => Ok(None),
    }
}

/// The process whose exit ends this guest, from RXMIGRATE_SIM_OWNER_PID:
/// tests set it so that a killed test run leaves no guest spinning. Guests
/// of a real simulated host outlive the command that started them.
struct Owner {
    pid: Option<libc::pid_t>,
    checked: Instant,
}

impl Owner {
    fn from_env() -> Owner {
        let pid = std::env::var("RXMIGRATE_SIM_OWNER_PID")
            .ok()
            .and_then(|v| v.parse().ok());
        Owner {
            pid,
            checked: Instant::now(),
        }
    }

    /// At most once a second: is the owner gone?
    fn gone(&mut self) -> bool {
        let Some(pid) = self.pid else {
            return false;
        };
        if self.checked.elapsed() < Duration::from_secs(1) {
            return false;
        }
        self.checked = Instant::now();
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// The scheduler cap as the simulated guest obeys it: the guest gets
/// `share` = cap / (100 × vCPUs) of its CPU time (1 without a cap). A
/// workload with a step rate is taken to need its whole vCPU for it, so it
/// runs at `rate × share`; one without (as fast as it can) idles
/// `busy × (1/share − 1)` after each `busy` stretch of steps, in sleeps of
/// at least [`Pace::MIN_IDLE`].
struct Pace {
    share: f64,
    owed: Duration,
}

impl Pace {
    const MIN_IDLE: Duration = Duration::from_millis(1);

    fn new(cap: u32, vcpus: u32) -> Pace {
        let share = if cap == 0 {
            1.0
        } else {
            (f64::from(cap) / (100.0 * f64::from(vcpus.max(1)))).clamp(0.01, 1.0)
        };
        Pace {
            share,
            owed: Duration::ZERO,
        }
    }

    /// After a step that ran for `busy`: how long to idle now, if at all.
    fn after_step(&mut self, busy: Duration) -> Option<Duration> {
        if self.share >= 1.0 {
            return None;
        }
        self.owed += busy.mul_f64(1.0 / self.share - 1.0);
        (self.owed >= Self::MIN_IDLE).then(|| std::mem::take(&mut self.owed))
    }
}

struct Guest {
    owner: Owner,
    dom: std::sync::Arc<Dom>,
    mode: TrackingMode,
    _tracker: Option<WriteTracker>,
    kernel: Kernel,
    /// The context as this process last wrote it: if unchanged on unpause,
    /// the translation cache stays valid.
    last_ctx: Vec<u8>,
}

fn crash(d: &Dom, msg: &str) -> HvError {
    let _ = d.st.set_message(msg);
    if let Ok(s) = d.st.state() {
        s.store(state::CRASHED, Ordering::Release);
        futex_wake(s);
    }
    HvError::op(d.meta.domid, "guest", msg)
}

/// Run the guest in this process until stopped.
pub fn run(dir: &Path, domid: DomId) -> Result<()> {
    let host = SimHost::open(dir)?;
    let d = host.dom(domid)?;
    d.st.pid()?.store(std::process::id(), Ordering::Release);
    d.st.pid_start()?.store(own_start_time(), Ordering::Release);
    let ptr = d.ram.as_ptr();
    let len = d.ram.len();
    // SAFETY: advice on our own RAM mapping; keeps tracking at 4 KiB pages.
    unsafe { libc::madvise(ptr as *mut libc::c_void, len, libc::MADV_NOHUGEPAGE) };

    let forced = choose_tracking(d.meta.tracking)?;
    let (mode, tracker) = match forced {
        Some(TrackingMode::Soft) => (TrackingMode::Soft, None),
        want => match WriteTracker::register(ptr as u64, len as u64) {
            Ok(t) => (TrackingMode::Uffd, Some(t)),
            Err(e) if want == Some(TrackingMode::Uffd) => {
                return Err(crash(
                    &d,
                    &format!("uffd tracking forced but unavailable: {e}"),
                ));
            }
            Err(e) => {
                log::info!("dom {domid}: userfaultfd write-protect unavailable ({e}); using the software dirty bitmap");
                (TrackingMode::Soft, None)
            }
        },
    };
    d.st.ram_va()?.store(ptr as u64, Ordering::Release);
    d.st.ram_len()?.store(len as u64, Ordering::Release);
    d.st.tracking()?.store(mode.code(), Ordering::Release);

    let (kernel, ctx, rest) = boot(&d).map_err(|m| crash(&d, &m))?;
    let mut g = Guest {
        owner: Owner::from_env(),
        dom: d.clone(),
        mode,
        _tracker: tracker,
        kernel,
        last_ctx: ctx,
    };
    g.publish_p2m()?;
    d.st.step()?.store(g.kernel.state.step, Ordering::Release);
    d.st.boots()?.fetch_add(1, Ordering::AcqRel);
    d.st.shutdown()?.store(NO_SHUTDOWN, Ordering::Release);
    // Created paused: go straight to the parked state (the main loop parks),
    // never showing "running" in between.
    if d.st.cmd()?.load(Ordering::Acquire) == cmd::RUN {
        set_state(&d, state::RUNNING)?;
    }
    g.finish_boot(rest)?;
    eprintln!(
        "sim-guest {domid}: running {} from step {} ({} tracking)",
        g.kernel.desc.kind, g.kernel.state.step, mode
    );
    g.main_loop()
}

fn set_state(d: &Dom, s: u32) -> Result<()> {
    let w = d.st.state()?;
    w.store(s, Ordering::Release);
    futex_wake(w);
    Ok(())
}

/// Boot from the current vCPU context; returns the kernel, the context
/// bytes and, for PV, what [`Guest::finish_boot`] still has to check.
fn boot(d: &Dom) -> std::result::Result<(Kernel, Vec<u8>, Option<PvRest>), String> {
    match d.meta.guest_type {
        GuestType::Pv => {
            let [basic, ..] = d.st.vcpu_blobs(0).map_err(|e| e.to_string())?;
            let (k, rest) = load_pv(d.frames(), &basic)?;
            Ok((k, basic, Some(rest)))
        }
        GuestType::Hvm => {
            let blob = d.st.hvm_context().map_err(|e| e.to_string())?;
            Ok((boot_hvm(&d.view, &blob)?, blob, None))
        }
    }
}

impl Guest {
    fn d(&self) -> &Dom {
        &self.dom
    }

    /// The rest of a boot, after the domain shows running: crashes the
    /// guest when a check fails.
    fn finish_boot(&mut self, rest: Option<PvRest>) -> Result<()> {
        if let Some(r) = rest {
            let d = self.dom.clone();
            finish_pv(d.frames(), &mut self.kernel, &r).map_err(|m| crash(&d, &m))?;
        }
        Ok(())
    }

    /// Publish the linear P2M in shared info, as a PV kernel does at boot
    /// and after every resume.
    fn publish_p2m(&self) -> Result<()> {
        let d = self.d();
        if d.meta.guest_type != GuestType::Pv {
            return Ok(());
        }
        let [basic, ..] = d.st.vcpu_blobs(0)?;
        let c = vcpu::Context64::new(&basic).map_err(|e| HvError::op(d.meta.domid, "guest", e))?;
        let si_frame = self.kernel.start_info.unwrap_or(0);
        let mut si_page = vec![0u8; 4096];
        d.view.read_page(si_frame, &mut si_page);
        let mut page = d.st.shared_info()?;
        shared_info::set_max_pfn(&mut page, d.pages());
        shared_info::set_p2m_cr3(&mut page, c.cr3());
        shared_info::set_p2m_vaddr(
            &mut page,
            u64::from_le_bytes(
                si_page[start_info::MFN_LIST..start_info::MFN_LIST + 8]
                    .try_into()
                    .unwrap_or([0; 8]),
            ),
        );
        let gen = shared_info::p2m_generation(&page);
        shared_info::set_p2m_generation(&mut page, gen.wrapping_add(1));
        d.st.set_shared_info(&page)
    }

    fn dirty(&self) -> Option<&[std::sync::atomic::AtomicU64]> {
        match self.mode {
            TrackingMode::Soft => self.dom.st.dirty().ok(),
            TrackingMode::Uffd => None,
        }
    }

    /// The owner died without destroying us: stop as a destroyed guest.
    fn orphaned(&self) -> ! {
        eprintln!(
            "sim-guest {}: owner process gone, stopping",
            self.dom.meta.domid
        );
        if let Ok(s) = self.dom.st.state() {
            s.store(state::STOPPED, Ordering::Release);
        }
        std::process::exit(0);
    }

    fn main_loop(&mut self) -> Result<()> {
        let d = self.dom.clone();
        let cmd_w = d.st.cmd()?;
        let until = d.st.run_until()?;
        let step_w = d.st.step()?;
        let rate = self.kernel.desc.rate;
        let cap_w = d.st.cpu_cap()?;
        let mut cap = cap_w.load(Ordering::Acquire);
        let mut pace = Pace::new(cap, d.meta.vcpus());
        let mut t0 = Instant::now();
        let mut s0 = self.kernel.state.step;
        loop {
            if self.owner.gone() {
                self.orphaned();
            }
            let c = cmd_w.load(Ordering::Acquire);
            if c != cmd::RUN {
                self.park(c)?;
                t0 = Instant::now();
                s0 = self.kernel.state.step;
                continue;
            }
            // A new cap (auto-converge's throttle): pace from here on.
            let now_cap = cap_w.load(Ordering::Acquire);
            if now_cap != cap {
                cap = now_cap;
                pace = Pace::new(cap, d.meta.vcpus());
                t0 = Instant::now();
                s0 = self.kernel.state.step;
            }
            if self.kernel.state.step >= until.load(Ordering::Acquire) {
                let _ = cmd_w.compare_exchange(
                    cmd::RUN,
                    cmd::PAUSE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                continue;
            }
            let dirty = match self.mode {
                TrackingMode::Soft => d.st.dirty().ok(),
                TrackingMode::Uffd => None,
            };
            let busy = Instant::now();
            self.kernel.step(&d.view, dirty);
            step_w.store(self.kernel.state.step, Ordering::Release);
            if rate > 0 {
                let steps = (self.kernel.state.step - s0) as f64;
                let due = t0 + Duration::from_secs_f64(steps / (rate as f64 * pace.share));
                let now = Instant::now();
                if due > now {
                    // Sleep on the command word so a pause wakes us at once.
                    futex_wait(cmd_w, cmd::RUN, due - now);
                }
            } else if let Some(idle) = pace.after_step(busy.elapsed()) {
                futex_wait(cmd_w, cmd::RUN, idle);
            }
        }
    }

    /// Write the workload registers into the vCPU context Xen holds.
    fn save_context(&mut self, rax: u64) -> Result<()> {
        let d = self.dom.clone();
        match d.meta.guest_type {
            GuestType::Pv => {
                let [mut basic, ..] = d.st.vcpu_blobs(0)?;
                let mut c =
                    vcpu::Context64Mut::new(&mut basic).map_err(|e| crash(&d, &e.to_string()))?;
                state_to_pv(&mut c, &self.kernel.state);
                c.set_reg(vcpu::Reg::Rax, rax);
                d.st.set_vcpu_basic(0, &basic)?;
                self.last_ctx = basic;
            }
            GuestType::Hvm => {
                let mut blob = d.st.hvm_context()?;
                let r = hvmctx::cpu_record(&blob, 0).map_err(|e| crash(&d, &e.to_string()))?;
                state_to_hvm(&mut blob[r.clone()], &self.kernel.state);
                hvmctx::set(&mut blob[r], hvmctx::cpu::RAX, rax);
                d.st.set_hvm_context(&blob)?;
                self.last_ctx = blob;
            }
        }
        Ok(())
    }

    /// A guest write outside the workload (start_info at suspend), tracked
    /// like any other.
    fn kernel_write(&self, frame: usize, word: usize, v: u64) {
        self.dom.view.write_u64s(frame, word, &[v]);
        if let Some(dirty) = self.dirty() {
            if let Some(w) = dirty.get(frame / 64) {
                w.fetch_or(1 << (frame % 64), Ordering::Release);
            }
        }
    }

    /// PV suspend: canonicalise start_info's store/console mfns to pfns
    /// (Linux's xen_pre_suspend), so the restorer can localise them.
    fn pre_suspend(&self) -> Result<()> {
        let d = self.d();
        let Some(si) = self.kernel.start_info else {
            return Ok(());
        };
        let fr = d.frames();
        for off in [start_info::STORE_MFN, start_info::CONSOLE_MFN] {
            let mfn = d.view.read_u64(si, off / 8).unwrap_or(0);
            let pfn = fr
                .frame_of(mfn)
                .and_then(|f| fr.m2p.pfn_of(f))
                .ok_or_else(|| {
                    crash(
                        d,
                        &format!("start_info field at {off} holds mfn {mfn:#x}, not ours"),
                    )
                })?;
            self.kernel_write(si, off / 8, pfn);
        }
        Ok(())
    }

    /// Cancelled suspend: turn start_info's pfns back into mfns (post_suspend).
    fn post_suspend_cancelled(&self) -> Result<()> {
        let d = self.d();
        let Some(si) = self.kernel.start_info else {
            return Ok(());
        };
        let [basic, ..] = d.st.vcpu_blobs(0)?;
        let c = vcpu::Context64::new(&basic).map_err(|e| crash(d, &e.to_string()))?;
        let mut page = vec![0u8; 4096];
        d.view.read_page(si, &mut page);
        let mfn_list = u64::from_le_bytes(
            page[start_info::MFN_LIST..start_info::MFN_LIST + 8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        for off in [start_info::STORE_MFN, start_info::CONSOLE_MFN] {
            let pfn = d.view.read_u64(si, off / 8).unwrap_or(0);
            let (leaf, _) = d
                .frames()
                .walk(c.cr3_frame(), mfn_list + pfn * 8)
                .map_err(|e| crash(d, &e))?;
            let mfn = d.view.read_u64(leaf, (pfn % 512) as usize).unwrap_or(0);
            self.kernel_write(si, off / 8, mfn);
        }
        Ok(())
    }

    fn park(&mut self, c: u32) -> Result<()> {
        let d = self.dom.clone();
        let cmd_w = d.st.cmd()?;
        match c {
            cmd::STOP => {
                self.save_context(0)?;
                set_state(&d, state::STOPPED)?;
                std::process::exit(0);
            }
            cmd::PAUSE => {
                self.save_context(self.current_rax()?)?;
                set_state(&d, state::PAUSED)?;
            }
            cmd::SUSPEND => {
                if d.meta.guest_type == GuestType::Pv {
                    self.pre_suspend()?;
                }
                // rax is the suspend hypercall's return, set by whoever resumes us.
                self.save_context(0)?;
                d.st.shutdown()?
                    .store(ShutdownReason::Suspend as u32, Ordering::Release);
                set_state(&d, state::SUSPENDED)?;
            }
            other => {
                return Err(crash(&d, &format!("unknown command {other}")));
            }
        }
        loop {
            let now = cmd_w.load(Ordering::Acquire);
            if now != c {
                break;
            }
            if self.owner.gone() {
                self.orphaned();
            }
            futex_wait(cmd_w, c, Duration::from_secs(1));
        }
        if cmd_w.load(Ordering::Acquire) == cmd::STOP {
            set_state(&d, state::STOPPED)?;
            std::process::exit(0);
        }
        // Back to running: take the context as Xen now holds it.
        if c == cmd::SUSPEND && d.meta.guest_type == GuestType::Pv && self.current_rax()? == 1 {
            self.post_suspend_cancelled()?;
        }
        let ctx = match d.meta.guest_type {
            GuestType::Pv => d.st.vcpu_blobs(0)?[0].clone(),
            GuestType::Hvm => d.st.hvm_context()?,
        };
        let mut rest = None;
        if c == cmd::SUSPEND || ctx != self.last_ctx {
            let (k, ctx, r) = boot(&d).map_err(|m| crash(&d, &m))?;
            self.kernel = k;
            self.last_ctx = ctx;
            rest = r;
            self.publish_p2m()?;
            d.st.boots()?.fetch_add(1, Ordering::AcqRel);
        }
        d.st.step()?
            .store(self.kernel.state.step, Ordering::Release);
        d.st.shutdown()?.store(NO_SHUTDOWN, Ordering::Release);
        set_state(&d, state::RUNNING)?;
        self.finish_boot(rest)
    }

    fn current_rax(&self) -> Result<u64> {
        let d = self.d();
        Ok(match d.meta.guest_type {
            GuestType::Pv => {
                let [basic, ..] = d.st.vcpu_blobs(0)?;
                vcpu::Context64::new(&basic)
                    .map(|c| c.reg(vcpu::Reg::Rax))
                    .unwrap_or(0)
            }
            GuestType::Hvm => {
                let blob = d.st.hvm_context()?;
                hvmctx::cpu_record(&blob, 0)
                    .map(|r| hvmctx::get(&blob[r], hvmctx::cpu::RAX))
                    .unwrap_or(0)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;
    use std::time::Duration;

    #[test]
    fn the_cap_is_a_share_of_the_guests_vcpus() {
        assert_eq!(Pace::new(0, 2).share, 1.0);
        assert_eq!(Pace::new(50, 1).share, 0.5);
        assert_eq!(Pace::new(50, 2).share, 0.25);
        assert_eq!(Pace::new(400, 2).share, 1.0);
    }

    #[test]
    fn an_unpaced_guest_idles_for_what_the_cap_takes() {
        let mut p = Pace::new(0, 1);
        assert_eq!(p.after_step(Duration::from_millis(5)), None);
        // A quarter of the CPU: 3 ms idle per ms busy, paid once ≥ 1 ms.
        let mut p = Pace::new(25, 1);
        assert_eq!(p.after_step(Duration::from_micros(100)), None);
        let idle = p.after_step(Duration::from_micros(300)).expect("idle");
        let want = Duration::from_micros(1200);
        assert!(idle.abs_diff(want) < Duration::from_micros(2), "{idle:?}");
        assert_eq!(p.after_step(Duration::from_micros(100)), None);
    }
}
