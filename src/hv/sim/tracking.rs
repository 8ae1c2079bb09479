//! Log-dirty for simulated guests: which frames the guest wrote, from the
//! kernel's write tracking (userfaultfd write-protect + PAGEMAP_SCAN) or from
//! the guest's own software bitmap, as the guest process chose at boot.

use super::config::TrackingMode;
use super::ctl::state;
use super::dom::Dom;
use super::host::{shm_dir, SimHost};
use super::shm::Shm;
use super::uffd;
use crate::bitmap::Bitmap;
use crate::hv::{DomId, HvError, Result, INVALID_MFN};
use std::sync::atomic::Ordering;

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

impl SimHost {
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

    /// Frame index → pfn for the dirty log.
    pub(super) fn frame_pfn(d: &Dom, f: usize) -> Option<u64> {
        d.st.m2p()
            .ok()?
            .get(f)
            .map(|w| w.load(Ordering::Relaxed))
            .filter(|&p| p != INVALID_MFN && p <= d.meta.max_pfn)
    }

    pub(super) fn scan(
        &self,
        dom: DomId,
        out: &mut Bitmap,
        clear: bool,
        op: &'static str,
    ) -> Result<u64> {
        let d = self.dom(dom)?;
        if out.len() != d.meta.p2m_size() {
            return Err(HvError::Invalid {
                op,
                msg: format!(
                    "bitmap of {} bits for a p2m of {}",
                    out.len(),
                    d.meta.p2m_size()
                ),
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

    pub(super) fn collect_dirty(
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
}
