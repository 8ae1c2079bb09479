//! PAGE_DATA on restore: populate, localise PV page tables, copy (or compare
//! after a VERIFY record).
//!
//! Entries without data that populate (XALLOC, e.g. a sender's zero pages)
//! are populated and not written: a freshly populated frame is zero on every
//! backend. Page tables are localised in place in the record's buffer; the
//! one copy of a page is the copy into the guest.

use super::{RestoreError, Restorer};
use crate::hv::{GuestType, INVALID_MFN};
use crate::stats::timed;
use crate::stream::{PageData, PAGE_SIZE};
use crate::x86::{pagetable, X86Error};

/// Per-record work space, kept across records.
#[derive(Default)]
pub(super) struct Scratch {
    todo: Vec<u64>,
    pfns: Vec<u64>,
    /// (pfn, page-table level, index of the page body) of each data entry.
    data: Vec<(u64, u8, usize)>,
    gfns: Vec<u64>,
    /// The last PAGE_DATA's data, on its way back to the reader.
    page_buffer: Option<Vec<u8>>,
}

impl Scratch {
    pub(super) fn keep_page_buffer(&mut self, buf: Vec<u8>) {
        self.page_buffer = Some(buf);
    }
    pub(super) fn take_page_buffer(&mut self) -> Option<Vec<u8>> {
        self.page_buffer.take()
    }
}

impl Restorer<'_> {
    /// Populate the pfns not yet populated (`populate_pfns`).
    pub(super) fn ensure_populated(&mut self, pfns: &[u64]) -> Result<(), RestoreError> {
        let Some(dom) = self.dom else {
            return Err(RestoreError::Missing("no domain to populate".into()));
        };
        let mut todo = std::mem::take(&mut self.scratch.todo);
        todo.clear();
        let result = self.populate_into(dom, pfns, &mut todo);
        self.scratch.todo = todo;
        result
    }

    fn populate_into(
        &mut self,
        dom: crate::hv::DomId,
        pfns: &[u64],
        todo: &mut Vec<u64>,
    ) -> Result<(), RestoreError> {
        for &p in pfns {
            if p > self.max_pfn {
                return Err(RestoreError::Unsupported(format!(
                    "pfn {p:#x} is beyond the domain's max pfn {:#x}",
                    self.max_pfn
                )));
            }
            // Marked now, so that a pfn named twice is populated once (a
            // failed populate fails the whole restore).
            if !self.populated.get(p) {
                self.populated.set(p);
                todo.push(p);
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let gfns = timed(&mut self.stats.times.populate_ms, || {
            self.hv.populate(dom, todo)
        })?;
        self.stats.populated += todo.len() as u64;
        if gfns.len() != todo.len() {
            return Err(RestoreError::Unsupported(format!(
                "populate of {} pfns returned {} frames",
                todo.len(),
                gfns.len()
            )));
        }
        if let Some(pv) = &mut self.pv {
            for (&p, &g) in todo.iter().zip(&gfns) {
                pv.set_mfn(p, g);
            }
        }
        Ok(())
    }

    fn gfn_of(&self, pfn: u64) -> u64 {
        match (&self.pv, self.guest_type) {
            (Some(pv), GuestType::Pv) => pv.mfn(pfn),
            _ => pfn,
        }
    }

    pub(super) fn page_data(
        &mut self,
        pd: &mut PageData,
        at: &dyn Fn(String) -> RestoreError,
    ) -> Result<(), RestoreError> {
        let mut s = std::mem::take(&mut self.scratch);
        let result = self.page_data_with(pd, at, &mut s);
        // `ensure_populated` used the placeholder's list meanwhile.
        s.todo = std::mem::take(&mut self.scratch.todo);
        self.scratch = s;
        result
    }

    fn page_data_with(
        &mut self,
        pd: &mut PageData,
        at: &dyn Fn(String) -> RestoreError,
        s: &mut Scratch,
    ) -> Result<(), RestoreError> {
        let dom = self.domain(at)?;
        if self.guest_type == GuestType::Pv && self.pv.as_ref().is_none_or(|p| !p.has_p2m()) {
            return Err(at("PV page data before X86_PV_P2M_FRAMES".into()));
        }
        if let Some(top) = pd.entries.iter().map(|e| e.pfn).max() {
            self.fit_hvm("PAGE_DATA pfn", top)
                .map_err(|e| at(e.to_string()))?;
        }
        for e in &pd.entries {
            if e.pfn > self.max_pfn {
                return Err(at(format!(
                    "pfn {:#x} is beyond the guest's max pfn {:#x}",
                    e.pfn, self.max_pfn
                )));
            }
        }
        s.pfns.clear();
        s.pfns.extend(
            pd.entries
                .iter()
                .filter(|e| e.ty.populates())
                .map(|e| e.pfn),
        );
        self.ensure_populated(&s.pfns)?;
        if let Some(pv) = &mut self.pv {
            for e in &pd.entries {
                pv.set_type(e.pfn, e.ty);
            }
        }

        s.data.clear();
        s.data.extend(
            pd.entries
                .iter()
                .filter(|e| e.ty.has_data())
                .enumerate()
                .map(|(k, e)| (e.pfn, e.ty.pt_level(), k)),
        );
        if s.data.is_empty() {
            return self.p2m_follows(dom, &[]);
        }
        if pd.data.len() < s.data.len() * PAGE_SIZE {
            return Err(at(format!(
                "{} bytes of page data for {} pages",
                pd.data.len(),
                s.data.len()
            )));
        }
        s.gfns.clear();
        s.gfns
            .extend(s.data.iter().map(|&(p, _, _)| self.gfn_of(p)));
        if let Some(i) = s.gfns.iter().position(|&g| g == INVALID_MFN) {
            return Err(at(format!(
                "pfn {:#x} has no frame after populate",
                s.data[i].0
            )));
        }

        // Localise page tables in the record's buffer before they touch
        // guest memory; localising may populate frames they point at (a
        // table can arrive before its pages).
        if self.guest_type == GuestType::Pv {
            for &(pfn, level, k) in &s.data {
                if level == 0 {
                    continue;
                }
                let page = &mut pd.data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE];
                let localising = |error| RestoreError::X86 {
                    what: format!("localising page table pfn {pfn:#x}"),
                    error,
                };
                // First pass, identity: which pfns must exist (the page is
                // written back unchanged).
                let max = self.max_pfn;
                s.pfns.clear();
                timed(&mut self.stats.times.localise_ms, || {
                    pagetable::localise(page, level, |p| {
                        if p > max {
                            return Err(X86Error::UnknownFrame { slot: 0, frame: p });
                        }
                        s.pfns.push(p);
                        Ok(p)
                    })
                })
                .map_err(localising)?;
                self.ensure_populated(&s.pfns)
                    .map_err(|e| at(format!("page table pfn {pfn:#x}: {e}")))?;
                let pv = self.pv.as_ref().ok_or_else(|| at("no PV state".into()))?;
                timed(&mut self.stats.times.localise_ms, || {
                    pagetable::localise(page, level, |p| {
                        let m = pv.mfn(p);
                        if m == INVALID_MFN {
                            Err(X86Error::UnknownFrame { slot: 0, frame: p })
                        } else {
                            Ok(m)
                        }
                    })
                })
                .map_err(localising)?;
            }
        }

        let hv = self.hv;
        let mut map = timed(&mut self.stats.times.map_ms, || {
            hv.map_pages(dom, &s.gfns, !self.verify_mode)
        })?;
        let verify = self.verify_mode;
        timed(&mut self.stats.times.copy_ms, || {
            for (i, &(pfn, _, k)) in s.data.iter().enumerate() {
                let src = &pd.data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE];
                if verify {
                    if !map.page(i).matches(src) {
                        log::warn!("verify: pfn {pfn:#x} differs from the page in guest memory");
                    }
                } else {
                    map.page_mut(i).copy_from(src);
                }
            }
        });
        timed(&mut self.stats.times.map_ms, || drop(map));
        self.pages += s.data.len() as u64;
        self.p2m_follows(dom, &s.data)
    }

    /// After a record: the guest's P2M frames follow the pfns populated and
    /// the pages written (`data`) as they arrive, so that END rewrites only
    /// what the last records changed. Not in verify mode, which compares
    /// the frames as they came.
    fn p2m_follows(
        &mut self,
        dom: crate::hv::DomId,
        data: &[(u64, u8, usize)],
    ) -> Result<(), RestoreError> {
        if let (Some(pv), false) = (&mut self.pv, self.verify_mode) {
            let hv = self.hv;
            timed(&mut self.stats.times.p2m_ms, || {
                for &(pfn, _, _) in data {
                    pv.page_written(pfn);
                }
                pv.write_p2m(hv, dom)
            })?;
        }
        Ok(())
    }
}
