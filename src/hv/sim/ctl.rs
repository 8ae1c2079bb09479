//! The per-domain "hypervisor" state shared by the guest process and the
//! toolstack: a control page of atomics (run / pause / suspend / stop and the
//! guest's acknowledgements), HVM params, shared info, the HVM context, vCPU
//! contexts, the M2P, page types, and the software dirty bitmap.
//!
//! Handshakes use futexes on the shared words (FUTEX_WAIT/WAKE without the
//! private flag work across processes on a shared file mapping).

use super::shm::Shm;
use crate::hv::{HvError, Result};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

pub const PAGE: usize = 4096;
pub const CTL_MAGIC: u64 = u64::from_le_bytes(*b"RXSIMCT1");

// Control page fields.
const MAGIC: usize = 0;
const CMD: usize = 8;
const STATE: usize = 12;
const RUN_UNTIL: usize = 16;
const STEP: usize = 24;
const PID: usize = 32;
const TRACKING: usize = 36;
const RAM_VA: usize = 40;
const RAM_LEN: usize = 48;
const LOGDIRTY: usize = 56;
const HVM_CTX_LEN: usize = 60;
const PID_START: usize = 64;
const SHUTDOWN: usize = 72;
const MSG_LEN: usize = 76;
const BOOTS: usize = 80;
/// The scheduler cap (percent of one CPU, 0: none) the guest paces itself to.
const CPU_CAP: usize = 84;
const MSG: usize = 2048;
const MSG_MAX: usize = PAGE - MSG;

/// What the toolstack asks of the guest.
pub mod cmd {
    pub const RUN: u32 = 0;
    pub const PAUSE: u32 = 1;
    pub const SUSPEND: u32 = 2;
    pub const STOP: u32 = 3;
}

/// What the guest reports.
pub mod state {
    /// Built or restored, no process yet (created paused).
    pub const NEW: u32 = 0;
    pub const STARTING: u32 = 1;
    pub const RUNNING: u32 = 2;
    pub const PAUSED: u32 = 3;
    pub const SUSPENDED: u32 = 4;
    pub const STOPPED: u32 = 5;
    pub const CRASHED: u32 = 6;

    pub fn name(s: u32) -> &'static str {
        match s {
            NEW => "new",
            STARTING => "starting",
            RUNNING => "running",
            PAUSED => "paused",
            SUSPENDED => "suspended",
            STOPPED => "stopped",
            CRASHED => "crashed",
            _ => "invalid",
        }
    }
}

/// Run-until value meaning "no limit".
pub const NO_LIMIT: u64 = u64::MAX;
/// Shutdown word value meaning "not shut down".
pub const NO_SHUTDOWN: u32 = u32::MAX;

/// Per-vCPU slot: four u32 lengths, then BASIC, EXTENDED, XSAVE, MSRS.
pub const VCPU_SLOT: usize = 2 * PAGE;
pub const VCPU_BASIC_OFF: usize = 16;
pub const VCPU_BASIC_MAX: usize = crate::x86::vcpu::CONTEXT_SIZE_64;
pub const VCPU_EXT_OFF: usize = VCPU_BASIC_OFF + VCPU_BASIC_MAX;
pub const VCPU_EXT_MAX: usize = 128;
pub const VCPU_XSAVE_OFF: usize = VCPU_EXT_OFF + VCPU_EXT_MAX;
pub const VCPU_XSAVE_MAX: usize = 1024;
pub const VCPU_MSRS_OFF: usize = VCPU_XSAVE_OFF + VCPU_XSAVE_MAX;
pub const VCPU_MSRS_MAX: usize = VCPU_SLOT - VCPU_MSRS_OFF;

/// HVM params slots (HVM_NR_PARAMS is 39 in Xen 4.17; room to spare).
pub const PARAM_SLOTS: usize = 64;

fn round_page(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Offsets inside the domain state file, from its vCPU and frame counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomLayout {
    pub vcpus: usize,
    pub frames: usize,
    pub params: usize,
    pub shared_info: usize,
    pub hvm_ctx: usize,
    pub hvm_ctx_max: usize,
    pub vcpu: usize,
    pub m2p: usize,
    pub types: usize,
    pub dirty: usize,
    pub dirty_words: usize,
    pub size: usize,
}

impl DomLayout {
    pub fn new(vcpus: usize, frames: usize) -> Self {
        let params = PAGE;
        let shared_info = params + PAGE;
        let hvm_ctx = shared_info + PAGE;
        let hvm_ctx_max = round_page(1024 + vcpus * 2048);
        let vcpu = hvm_ctx + hvm_ctx_max;
        let m2p = vcpu + vcpus * VCPU_SLOT;
        let types = m2p + round_page(frames * 8);
        let dirty = types + round_page(frames);
        let dirty_words = frames.div_ceil(64);
        let size = dirty + round_page(dirty_words * 8);
        DomLayout {
            vcpus,
            frames,
            params,
            shared_info,
            hvm_ctx,
            hvm_ctx_max,
            vcpu,
            m2p,
            types,
            dirty,
            dirty_words,
            size,
        }
    }
}

/// The domain state file, mapped.
#[derive(Debug)]
pub struct DomState {
    pub shm: Shm,
    pub lay: DomLayout,
}

fn futex(word: &AtomicU32, op: i32, val: u32, timeout: Option<Duration>) -> i64 {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT/FUTEX_WAKE on a valid, aligned u32 inside a live
    // shared mapping; the timeout pointer is null or points at `ts`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            tsp,
            std::ptr::null::<u32>(),
            0u32,
        )
    }
}

/// Sleep until `word != val` or the timeout passes (spurious wakeups allowed).
pub fn futex_wait(word: &AtomicU32, val: u32, timeout: Duration) {
    futex(word, libc::FUTEX_WAIT, val, Some(timeout));
}

pub fn futex_wake(word: &AtomicU32) {
    futex(word, libc::FUTEX_WAKE, i32::MAX as u32, None);
}

impl DomState {
    pub fn create(path: &std::path::Path, vcpus: usize, frames: usize) -> Result<DomState> {
        let lay = DomLayout::new(vcpus, frames);
        let shm = Shm::create(path, lay.size)?;
        let d = DomState { shm, lay };
        d.u64(MAGIC)?.store(CTL_MAGIC, Ordering::Relaxed);
        d.u64(RUN_UNTIL)?.store(NO_LIMIT, Ordering::Relaxed);
        d.u32(SHUTDOWN)?.store(NO_SHUTDOWN, Ordering::Relaxed);
        d.u32(CMD)?.store(cmd::PAUSE, Ordering::Relaxed);
        // M2P starts all-invalid: no frame belongs to a pfn yet.
        for w in d.m2p()? {
            w.store(crate::hv::INVALID_MFN, Ordering::Relaxed);
        }
        Ok(d)
    }

    pub fn open(path: &std::path::Path, vcpus: usize, frames: usize) -> Result<DomState> {
        let lay = DomLayout::new(vcpus, frames);
        let shm = Shm::open(path)?;
        if shm.len() != lay.size {
            return Err(HvError::Invalid {
                op: "open domain state",
                msg: format!(
                    "{} is {} bytes, expected {}",
                    path.display(),
                    shm.len(),
                    lay.size
                ),
            });
        }
        let d = DomState { shm, lay };
        if d.u64(MAGIC)?.load(Ordering::Relaxed) != CTL_MAGIC {
            return Err(HvError::Invalid {
                op: "open domain state",
                msg: format!("{} has a bad magic", path.display()),
            });
        }
        Ok(d)
    }

    fn u32(&self, off: usize) -> Result<&AtomicU32> {
        self.shm.atomic_u32(off)
    }
    fn u64(&self, off: usize) -> Result<&AtomicU64> {
        self.shm.atomic_u64(off)
    }

    // The control words. Offsets are constants inside the first page, so
    // these cannot fail once the file is open; errors are still propagated.
    pub fn cmd(&self) -> Result<&AtomicU32> {
        self.u32(CMD)
    }
    pub fn state(&self) -> Result<&AtomicU32> {
        self.u32(STATE)
    }
    pub fn run_until(&self) -> Result<&AtomicU64> {
        self.u64(RUN_UNTIL)
    }
    pub fn step(&self) -> Result<&AtomicU64> {
        self.u64(STEP)
    }
    pub fn pid(&self) -> Result<&AtomicU32> {
        self.u32(PID)
    }
    pub fn pid_start(&self) -> Result<&AtomicU64> {
        self.u64(PID_START)
    }
    pub fn tracking(&self) -> Result<&AtomicU32> {
        self.u32(TRACKING)
    }
    pub fn ram_va(&self) -> Result<&AtomicU64> {
        self.u64(RAM_VA)
    }
    pub fn ram_len(&self) -> Result<&AtomicU64> {
        self.u64(RAM_LEN)
    }
    pub fn logdirty(&self) -> Result<&AtomicU32> {
        self.u32(LOGDIRTY)
    }
    pub fn hvm_ctx_len(&self) -> Result<&AtomicU32> {
        self.u32(HVM_CTX_LEN)
    }
    pub fn shutdown(&self) -> Result<&AtomicU32> {
        self.u32(SHUTDOWN)
    }
    /// Times a guest process has (re)loaded its context.
    pub fn boots(&self) -> Result<&AtomicU32> {
        self.u32(BOOTS)
    }
    /// The CPU cap, percent of one physical CPU (0: none): the guest
    /// process runs its steps at `cap / (100 × vCPUs)` of its speed.
    pub fn cpu_cap(&self) -> Result<&AtomicU32> {
        self.u32(CPU_CAP)
    }

    pub fn set_message(&self, msg: &str) -> Result<()> {
        let b = msg.as_bytes();
        let n = b.len().min(MSG_MAX);
        self.shm.write(MSG, &b[..n])?;
        self.u32(MSG_LEN)?.store(n as u32, Ordering::Release);
        Ok(())
    }

    pub fn message(&self) -> Result<String> {
        let n = (self.u32(MSG_LEN)?.load(Ordering::Acquire) as usize).min(MSG_MAX);
        Ok(String::from_utf8_lossy(&self.shm.read_vec(MSG, n)?).into_owned())
    }

    pub fn params(&self) -> Result<&[AtomicU64]> {
        self.shm.atomic_u64s(self.lay.params, PARAM_SLOTS)
    }

    pub fn m2p(&self) -> Result<&[AtomicU64]> {
        self.shm.atomic_u64s(self.lay.m2p, self.lay.frames)
    }

    pub fn dirty(&self) -> Result<&[AtomicU64]> {
        self.shm.atomic_u64s(self.lay.dirty, self.lay.dirty_words)
    }

    pub fn page_type(&self, frame: usize) -> Result<u8> {
        let mut b = [0u8];
        self.shm.read(self.lay.types + frame, &mut b)?;
        Ok(b[0])
    }
    pub fn set_page_type(&self, frame: usize, t: u8) -> Result<()> {
        self.shm.write(self.lay.types + frame, &[t])
    }

    pub fn shared_info(&self) -> Result<Vec<u8>> {
        self.shm.read_vec(self.lay.shared_info, PAGE)
    }
    pub fn set_shared_info(&self, page: &[u8]) -> Result<()> {
        self.shm.write(self.lay.shared_info, page)
    }

    pub fn hvm_context(&self) -> Result<Vec<u8>> {
        let n = (self.hvm_ctx_len()?.load(Ordering::Acquire) as usize).min(self.lay.hvm_ctx_max);
        self.shm.read_vec(self.lay.hvm_ctx, n)
    }
    pub fn set_hvm_context(&self, blob: &[u8]) -> Result<()> {
        if blob.len() > self.lay.hvm_ctx_max {
            return Err(HvError::Invalid {
                op: "set_hvm_context",
                msg: format!(
                    "context of {} bytes exceeds {} for {} vCPUs",
                    blob.len(),
                    self.lay.hvm_ctx_max,
                    self.lay.vcpus
                ),
            });
        }
        self.shm.write(self.lay.hvm_ctx, blob)?;
        self.hvm_ctx_len()?
            .store(blob.len() as u32, Ordering::Release);
        Ok(())
    }

    fn vcpu_off(&self, vcpu: u32) -> Result<usize> {
        if vcpu as usize >= self.lay.vcpus {
            return Err(HvError::Invalid {
                op: "vcpu context",
                msg: format!("vcpu {vcpu} beyond max_vcpu_id {}", self.lay.vcpus - 1),
            });
        }
        Ok(self.lay.vcpu + vcpu as usize * VCPU_SLOT)
    }

    /// The four PV vCPU blobs: BASIC, EXTENDED, XSAVE, MSRS.
    pub fn vcpu_blobs(&self, vcpu: u32) -> Result<[Vec<u8>; 4]> {
        let base = self.vcpu_off(vcpu)?;
        let hdr = self.shm.read_vec(base, 16)?;
        let len = |i: usize| {
            u32::from_le_bytes([hdr[4 * i], hdr[4 * i + 1], hdr[4 * i + 2], hdr[4 * i + 3]])
                as usize
        };
        let part =
            |i: usize, off: usize, max: usize| self.shm.read_vec(base + off, len(i).min(max));
        Ok([
            part(0, VCPU_BASIC_OFF, VCPU_BASIC_MAX)?,
            part(1, VCPU_EXT_OFF, VCPU_EXT_MAX)?,
            part(2, VCPU_XSAVE_OFF, VCPU_XSAVE_MAX)?,
            part(3, VCPU_MSRS_OFF, VCPU_MSRS_MAX)?,
        ])
    }

    pub fn set_vcpu_blobs(&self, vcpu: u32, blobs: [&[u8]; 4]) -> Result<()> {
        let base = self.vcpu_off(vcpu)?;
        let limits = [
            ("BASIC", VCPU_BASIC_OFF, VCPU_BASIC_MAX),
            ("EXTENDED", VCPU_EXT_OFF, VCPU_EXT_MAX),
            ("XSAVE", VCPU_XSAVE_OFF, VCPU_XSAVE_MAX),
            ("MSRS", VCPU_MSRS_OFF, VCPU_MSRS_MAX),
        ];
        for (blob, (what, _, max)) in blobs.iter().zip(limits) {
            if blob.len() > max {
                return Err(HvError::Invalid {
                    op: "set_pv_vcpu",
                    msg: format!(
                        "vcpu {vcpu}: {what} blob of {} bytes (max {max})",
                        blob.len()
                    ),
                });
            }
        }
        let mut hdr = [0u8; 16];
        for (i, (blob, (_, off, _))) in blobs.iter().zip(limits).enumerate() {
            self.shm.write(base + off, blob)?;
            hdr[4 * i..4 * i + 4].copy_from_slice(&(blob.len() as u32).to_le_bytes());
        }
        self.shm.write(base, &hdr)
    }

    /// Rewrite just the BASIC blob of a vCPU (keeping the others).
    pub fn set_vcpu_basic(&self, vcpu: u32, basic: &[u8]) -> Result<()> {
        let [_, e, x, m] = self.vcpu_blobs(vcpu)?;
        self.set_vcpu_blobs(vcpu, [basic, &e, &x, &m])
    }
}
