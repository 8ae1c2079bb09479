//! Pages out of a domain into PAGE_DATA records (`send_batch`).
//!
//! One batch: the frames' types, one mapping of the frames with data, page
//! tables written through the guest type's [`SaveOps`], and one vectored
//! write of the record straight from the mapping. Every buffer lives across
//! batches.
//!
//! Zero pages: a NOTAB page sent for the first time whose contents are all
//! zero goes as an XALLOC entry without data. The receiver (ours and Xen's
//! `xc_domain_restore`) populates an XALLOC pfn without writing it, and a
//! freshly populated frame is zero. A pfn sent before carries its data
//! whatever it holds: the receiver's frame has the old contents.
//!
//! Holes of an HVM guest: a pfn the hypervisor types XTAB that this stream
//! has never populated goes nowhere. Xen's saver lists every pfn of round 0,
//! holes included (a 512 MiB HVM guest's P2M spans 1 044 480 pfns, 913 000
//! of them holes below 4 GiB); Xen's restore (`xg_sr_restore.c`) neither
//! populates nor records an XTAB pfn of an HVM stream (its HVM
//! `set_page_type` and `set_gfn` do nothing), so leaving it out changes
//! nothing on the receiver. A pfn sent before still travels as XTAB when
//! it becomes a hole. PV streams keep every entry (the receiver records PV
//! types).

use super::ops::SaveOps;
use super::rounds::Pager;
use super::{SaveError, SaveHooks};
use crate::bitmap::Bitmap;
use crate::hv::{DomId, Hypervisor, PageType, INVALID_MFN};
use crate::stats::{timed, RoundStats, SendTimes};
use crate::stream::{LibxcWriter, PfnEntry, PAGE_SIZE};
use crate::x86::X86Error;
use std::io::Write;

/// Per-batch work space, kept across batches.
#[derive(Default)]
struct Scratch {
    gfns: Vec<u64>,
    types: Vec<PageType>,
    /// Indices into the batch of the pfns with a frame (for page_types).
    framed: Vec<usize>,
    framed_gfns: Vec<u64>,
    framed_types: Vec<PageType>,
    data_gfns: Vec<u64>,
    entries: Vec<PfnEntry>,
    /// Offsets in `copies` of the record's page bodies, in entry order.
    bodies: Vec<usize>,
    /// Private copies of the batch's data pages (normalised where they are
    /// PV page tables): the guest may write its frames while they are
    /// mapped, so the writer never reads guest memory itself.
    copies: Vec<u8>,
    /// The page slices of the record; empty between batches (its
    /// allocation is what is kept, see [`recycle`]).
    pages: Vec<&'static [u8]>,
}

/// An empty vector of another lifetime on the same allocation (an in-place
/// collect of an empty iterator keeps the buffer).
fn recycle<'a, 'b>(mut v: Vec<&'a [u8]>) -> Vec<&'b [u8]> {
    v.clear();
    v.into_iter().map(|_| -> &'b [u8] { &[] }).collect()
}

pub(crate) struct HvPager<'a, W: Write> {
    hv: &'a dyn Hypervisor,
    dom: DomId,
    ops: &'a dyn SaveOps,
    w: LibxcWriter<W>,
    hooks: &'a mut dyn SaveHooks,
    deferred: Bitmap,
    /// Pfns the receiver has populated from this stream (sent with data or
    /// as XALLOC): their later sends carry data.
    sent: Bitmap,
    zero_pages: u64,
    /// XTAB pfns never sent are left out of the stream (HVM, see above).
    skip_unsent_holes: bool,
    suspended: bool,
    logdirty_on: bool,
    times: SendTimes,
    s: Scratch,
}

impl<'a, W: Write> HvPager<'a, W> {
    pub fn new(
        hv: &'a dyn Hypervisor,
        dom: DomId,
        ops: &'a dyn SaveOps,
        w: LibxcWriter<W>,
        hooks: &'a mut dyn SaveHooks,
    ) -> Self {
        let n = ops.p2m_size();
        HvPager {
            hv,
            dom,
            ops,
            w,
            hooks,
            deferred: Bitmap::new(n),
            sent: Bitmap::new(n),
            zero_pages: 0,
            skip_unsent_holes: ops.domain_type() == crate::stream::DomainType::X86Hvm,
            suspended: false,
            logdirty_on: false,
            times: SendTimes::default(),
            s: Scratch::default(),
        }
    }

    pub fn hooks(&mut self) -> &mut dyn SaveHooks {
        self.hooks
    }
    pub fn logdirty_enable(&mut self) -> Result<(), SaveError> {
        // As Xen: if enabling fails (already on, e.g. for VRAM tracking),
        // switch it off and try once more.
        if self.hv.logdirty_enable(self.dom).is_err() {
            self.hv.logdirty_disable(self.dom)?;
            self.hv.logdirty_enable(self.dom)?;
        }
        self.logdirty_on = true;
        Ok(())
    }
    pub fn logdirty_disable(&mut self) -> Result<(), SaveError> {
        if std::mem::take(&mut self.logdirty_on) {
            self.hv.logdirty_disable(self.dom)?;
        }
        Ok(())
    }
    /// Whether Xen's log-dirty mode is on (switched on by
    /// [`Self::logdirty_enable`] and not off since).
    pub fn logdirty_is_on(&self) -> bool {
        self.logdirty_on
    }
    /// Pages sent as zero pages over the whole save.
    pub fn zero_pages_total(&self) -> u64 {
        self.zero_pages
    }
    pub fn finish(self) -> LibxcWriter<W> {
        self.w
    }

    /// Types of the batch's frames into `s.types` (XTAB for pfns without one).
    fn fetch_types(&mut self, pfns: &[u64]) -> Result<(), SaveError> {
        let s = &mut self.s;
        let n = pfns.len();
        s.types.clear();
        s.types.resize(n, PageType::XTAB);
        s.framed.clear();
        s.framed
            .extend((0..n).filter(|&i| s.gfns[i] != INVALID_MFN));
        let (hv, dom, t) = (self.hv, self.dom, &mut self.times.types_ms);
        if s.framed.len() == n {
            timed(t, || hv.page_types(dom, &s.gfns, &mut s.types))?;
        } else if !s.framed.is_empty() {
            // Ballooned-out PV pfns have no frame: they travel as XTAB.
            s.framed_gfns.clear();
            s.framed_gfns.extend(s.framed.iter().map(|&i| s.gfns[i]));
            s.framed_types.clear();
            s.framed_types.resize(s.framed.len(), PageType::XTAB);
            timed(t, || {
                hv.page_types(dom, &s.framed_gfns, &mut s.framed_types)
            })?;
            for (&i, &t) in s.framed.iter().zip(&s.framed_types) {
                s.types[i] = t;
            }
        }
        if let Some((pfn, ty)) = pfns.iter().zip(&s.types).find(|(_, t)| !t.is_known()) {
            return Err(SaveError::Unsupported(format!(
                "pfn {pfn:#x}: hypervisor reported unknown page type {:#x}",
                ty.0
            )));
        }
        Ok(())
    }
}

impl<W: Write> Pager for HvPager<'_, W> {
    fn send_batch(&mut self, pfns: &[u64]) -> Result<u64, SaveError> {
        let ops = self.ops;
        self.s.gfns.clear();
        self.s.gfns.extend(pfns.iter().map(|&p| ops.pfn_to_gfn(p)));
        self.fetch_types(pfns)?;
        let s = &mut self.s;
        s.data_gfns.clear();
        s.data_gfns.extend(
            s.gfns
                .iter()
                .zip(&s.types)
                .filter(|(_, t)| t.has_data())
                .map(|(&g, _)| g),
        );
        let map = if s.data_gfns.is_empty() {
            None
        } else {
            let (hv, dom) = (self.hv, self.dom);
            Some(timed(&mut self.times.map_ms, || {
                hv.map_pages(dom, &s.data_gfns, false)
            })?)
        };
        let copying = std::time::Instant::now();

        // One pass over the batch: each entry's type and body.
        s.entries.clear();
        s.bodies.clear();
        // `copies` keeps its length from batch to batch (bytes written
        // before are overwritten, never zeroed again): `used` is this
        // batch's end.
        let mut used = 0;
        let mut k = 0;
        let mut zero = 0;
        for (&pfn, &ty) in pfns.iter().zip(&s.types) {
            let mut ty = ty;
            if let (true, Some(m)) = (ty.has_data(), &map) {
                let page = m.page(k);
                k += 1;
                // A zero page sent for the first time goes without data:
                // checked in the frame itself (a data page stops at its
                // first non-zero word), copied only if it has data. A write
                // racing the check dirties the page, which goes again.
                if ty == PageType::NOTAB && !self.sent.get(pfn) && page.is_zero() {
                    ty = PageType::XALLOC;
                    zero += 1;
                    self.sent.set(pfn);
                    s.entries.push(PfnEntry { pfn, ty });
                    continue;
                }
                let start = used;
                if s.copies.len() < start + PAGE_SIZE {
                    s.copies.resize(start + PAGE_SIZE, 0);
                }
                let copy = &mut s.copies[start..start + PAGE_SIZE];
                page.copy_to(copy);
                let level = ty.pt_level();
                let keep = if level != 0 {
                    match ops.normalise_page(level, copy) {
                        Ok(()) => true,
                        Err(X86Error::UnknownFrame { .. }) if !self.suspended => {
                            // The guest is changing this table under us: send
                            // it in the final round instead (Xen's "deferred").
                            self.deferred.set(pfn);
                            ty = PageType::XTAB;
                            false
                        }
                        Err(source) => return Err(SaveError::PageTable { pfn, source }),
                    }
                } else {
                    true
                };
                if keep {
                    s.bodies.push(start);
                    used += PAGE_SIZE;
                }
            }
            if ty.populates() {
                self.sent.set(pfn);
            } else if ty == PageType::XTAB && self.skip_unsent_holes && !self.sent.get(pfn) {
                continue;
            }
            s.entries.push(PfnEntry { pfn, ty });
        }
        drop(map);
        self.times.copy_ms += copying.elapsed().as_secs_f64() * 1e3;
        if s.entries.is_empty() {
            // A batch of holes only: no record (Xen's restore refuses an
            // empty PAGE_DATA).
            return Ok(0);
        }

        let mut pages = recycle(std::mem::take(&mut s.pages));
        pages.extend(s.bodies.iter().map(|&o| &s.copies[o..o + PAGE_SIZE]));
        let w = &mut self.w;
        let written = timed(&mut self.times.write_ms, || {
            w.write_page_batch(&s.entries, &pages)
        });
        s.pages = recycle(pages);
        written?;
        self.zero_pages += zero;
        Ok(s.bodies.len() as u64 + zero)
    }

    fn zero_pages(&self) -> u64 {
        self.zero_pages
    }

    fn times(&self) -> SendTimes {
        self.times
    }

    fn peek(&mut self, out: &mut Bitmap) -> Result<(), SaveError> {
        let (hv, dom) = (self.hv, self.dom);
        timed(&mut self.times.peek_ms, || hv.logdirty_peek(dom, out))?;
        Ok(())
    }

    fn clean(&mut self, out: &mut Bitmap, final_round: bool) -> Result<(), SaveError> {
        let (hv, dom) = (self.hv, self.dom);
        timed(&mut self.times.clean_ms, || {
            hv.logdirty_clean(dom, out, final_round)
        })?;
        Ok(())
    }

    fn suspend(&mut self) -> Result<(), SaveError> {
        self.hooks.suspend(self.hv, self.dom)?;
        let info = self.hv.domain_info(self.dom)?;
        if info.shutdown != Some(crate::hv::ShutdownReason::Suspend) {
            return Err(SaveError::Suspend(format!(
                "domain {} reports {:?} after the suspend request, not suspended",
                self.dom, info.shutdown
            )));
        }
        self.suspended = true;
        Ok(())
    }

    fn take_deferred(&mut self, into: &mut Bitmap) {
        into.or_with(&self.deferred);
        self.deferred.clear_all();
    }

    fn bytes_written(&self) -> u64 {
        self.w.bytes_written()
    }

    fn progress(&mut self, done: u64, total: u64) {
        self.hooks.progress(done, total);
    }

    fn round_done(&mut self, stats: &RoundStats) {
        self.hooks.round_done(stats);
    }
}

#[cfg(test)]
#[path = "pager_tests.rs"]
mod tests;
