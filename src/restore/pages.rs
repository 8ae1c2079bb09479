//! PAGE_DATA on restore: populate, localise PV page tables, copy (or compare
//! after a VERIFY record).

use super::{RestoreError, Restorer};
use crate::hv::{GuestType, INVALID_MFN};
use crate::stream::{PageData, PAGE_SIZE};
use crate::x86::{pagetable, X86Error};

impl Restorer<'_> {
    /// Populate the pfns not yet populated (`populate_pfns`).
    pub(super) fn ensure_populated(&mut self, pfns: &[u64]) -> Result<(), RestoreError> {
        let Some(dom) = self.dom else {
            return Err(RestoreError::Missing("no domain to populate".into()));
        };
        let mut todo: Vec<u64> = Vec::new();
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
        let gfns = self.hv.populate(dom, &todo)?;
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
        pd: &PageData,
        at: &dyn Fn(String) -> RestoreError,
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
        let to_populate: Vec<u64> = pd
            .entries
            .iter()
            .filter(|e| e.ty.populates())
            .map(|e| e.pfn)
            .collect();
        self.ensure_populated(&to_populate)?;
        if let Some(pv) = &mut self.pv {
            for e in &pd.entries {
                pv.set_type(e.pfn, e.ty);
            }
        }

        let data: Vec<(u64, u8, usize)> = pd
            .entries
            .iter()
            .filter(|e| e.ty.has_data())
            .enumerate()
            .map(|(k, e)| (e.pfn, e.ty.pt_level(), k))
            .collect();
        if data.is_empty() {
            return Ok(());
        }
        let gfns: Vec<u64> = data.iter().map(|&(p, _, _)| self.gfn_of(p)).collect();
        if let Some(i) = gfns.iter().position(|&g| g == INVALID_MFN) {
            return Err(at(format!(
                "pfn {:#x} has no frame after populate",
                data[i].0
            )));
        }

        // Localise page tables before they touch guest memory; localising may
        // populate frames they point at (a table can arrive before its pages).
        let mut local: Vec<Option<Vec<u8>>> = vec![None; data.len()];
        if self.guest_type == GuestType::Pv {
            for (i, &(pfn, level, k)) in data.iter().enumerate() {
                if level == 0 {
                    continue;
                }
                let mut page = pd.data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE].to_vec();
                let max = self.max_pfn;
                let mut need = Vec::new();
                {
                    // First pass: learn which pfns must exist.
                    let mut probe = page.clone();
                    let _ = pagetable::localise(&mut probe, level, |p| {
                        if p > max {
                            return Err(X86Error::UnknownFrame { slot: 0, frame: p });
                        }
                        need.push(p);
                        Ok(p)
                    });
                }
                self.ensure_populated(&need)
                    .map_err(|e| at(format!("page table pfn {pfn:#x}: {e}")))?;
                let pv = self.pv.as_ref().ok_or_else(|| at("no PV state".into()))?;
                pagetable::localise(&mut page, level, |p| {
                    let m = pv.mfn(p);
                    if m == INVALID_MFN {
                        Err(X86Error::UnknownFrame { slot: 0, frame: p })
                    } else {
                        Ok(m)
                    }
                })
                .map_err(|error| RestoreError::X86 {
                    what: format!("localising page table pfn {pfn:#x}"),
                    error,
                })?;
                local[i] = Some(page);
            }
        }

        let mut map = self.hv.map_pages(dom, &gfns, !self.verify_mode)?;
        for (i, &(pfn, _, k)) in data.iter().enumerate() {
            let src: &[u8] = match &local[i] {
                Some(p) => p,
                None => &pd.data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE],
            };
            if self.verify_mode {
                if !map.page(i).matches(src) {
                    log::warn!("verify: pfn {pfn:#x} differs from the page in guest memory");
                }
            } else {
                map.page_mut(i).copy_from(src);
            }
        }
        self.pages += data.len() as u64;
        Ok(())
    }
}
