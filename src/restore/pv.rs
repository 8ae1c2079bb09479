//! PV-only restore state and the END-time fix-ups (docs/REFERENCE.md §9.4):
//! start_info, vCPU contexts, shared info, pinning, the guest's P2M.

use super::{RestoreError, RestoreParams, VcpuStash};
use crate::bitmap::Bitmap;
use crate::hv::{DomId, Hypervisor, PageType, PvVcpuState, INVALID_MFN};
use crate::stats::Timeline;
use crate::stream::PAGE_SIZE;
use crate::x86::{shared_info, start_info, vcpu};
use std::collections::{BTreeSet, HashMap};

/// P2M entries per frame for a 64-bit guest.
const FPP: u64 = (PAGE_SIZE / 8) as u64;

/// What a PV restore gathers until END. The record order (X86_PV_INFO once
/// and first, X86_PV_P2M_FRAMES after it with one frame per 512 pfns) is
/// checked by the stream reader's rules before a record gets here.
#[derive(Default)]
pub(crate) struct PvRestore {
    p2m: Vec<u64>,
    types: Vec<PageType>,
    frames: Option<Vec<u64>>,
    /// Index in `frames` of each P2M frame's pfn.
    frame_index: HashMap<u64, usize>,
    /// P2M frames (by index) whose contents in the guest are not the
    /// restored P2M yet: entries that changed, or the frame's page arrived
    /// since it was last written. Kept small while pages arrive (see
    /// [`PvRestore::write_p2m`]), so that END has little left to do.
    stale_frames: Bitmap,
    /// Pfns typed as pinned page tables, in pfn order (pinned at END).
    pinned: BTreeSet<u64>,
    pub(super) shared_info: Option<Vec<u8>>,
    vcpus: VcpuStash,
}

impl PvRestore {
    /// The guest's P2M frame list (`frames`: one pfn per 512 entries of
    /// pfns 0..=`end_pfn`, as the reader checked) and its size.
    pub(super) fn set_p2m_frames(
        &mut self,
        end_pfn: u64,
        max_pfn: u64,
        frames: Vec<u64>,
        at: &dyn Fn(String) -> RestoreError,
    ) -> Result<(), RestoreError> {
        // The stream allows more (Xen's restore grows its P2M); this
        // restore sizes the guest once.
        if self.frames.is_some() {
            return Err(at("second X86_PV_P2M_FRAMES record".into()));
        }
        if let Some(f) = frames.iter().find(|&&f| f > end_pfn) {
            return Err(at(format!("P2M frame pfn {f:#x} beyond the guest")));
        }
        let n = max_pfn as usize + 1;
        self.p2m = vec![INVALID_MFN; n];
        self.types = vec![PageType::XTAB; n];
        self.frame_index = frames.iter().enumerate().map(|(i, &f)| (f, i)).collect();
        self.stale_frames = Bitmap::full(frames.len() as u64);
        self.frames = Some(frames);
        Ok(())
    }

    pub(super) fn has_p2m(&self) -> bool {
        self.frames.is_some()
    }
    pub(super) fn mfn(&self, pfn: u64) -> u64 {
        self.p2m.get(pfn as usize).copied().unwrap_or(INVALID_MFN)
    }
    pub(super) fn set_mfn(&mut self, pfn: u64, mfn: u64) {
        if let Some(e) = self.p2m.get_mut(pfn as usize) {
            *e = mfn;
            self.stale_frames.set(pfn / FPP);
        }
    }
    pub(super) fn set_type(&mut self, pfn: u64, ty: PageType) {
        if let Some(e) = self.types.get_mut(pfn as usize) {
            let was = std::mem::replace(e, ty);
            // The set is touched only for page tables: a data page costs
            // no lookup.
            if ty.is_pinned() {
                self.pinned.insert(pfn);
            } else if was.is_pinned() {
                self.pinned.remove(&pfn);
            }
        }
    }
    /// Page data was written to `pfn`: if it is a P2M frame, its contents
    /// are the sender's again.
    pub(super) fn page_written(&mut self, pfn: u64) {
        if let Some(&i) = self.frame_index.get(&pfn) {
            self.stale_frames.set(i as u64);
        }
    }

    /// Write the restored P2M into the guest's stale P2M frames that have a
    /// frame (one mapping for all); a frame without one stays stale. Called
    /// as pages arrive and at END, where every frame must be fresh.
    pub(super) fn write_p2m(
        &mut self,
        hv: &dyn Hypervisor,
        dom: DomId,
    ) -> Result<(), RestoreError> {
        let Some(frames) = &self.frames else {
            return Ok(());
        };
        let todo: Vec<usize> = self
            .stale_frames
            .iter_ones()
            .map(|i| i as usize)
            .filter(|&i| self.mfn(frames[i]) != INVALID_MFN)
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let mfns: Vec<u64> = todo.iter().map(|&i| self.mfn(frames[i])).collect();
        let mut m = hv.map_pages(dom, &mfns, true)?;
        for (k, &i) in todo.iter().enumerate() {
            let mut page = m.page_mut(k);
            for j in 0..FPP {
                let pfn = i as u64 * FPP + j;
                page.write_u64(j as usize * 8, self.mfn(pfn));
            }
            self.stale_frames.clear(i as u64);
        }
        Ok(())
    }
    pub(super) fn vcpu(&mut self, id: u32) -> &mut PvVcpuState {
        self.vcpus.entry(id).or_default()
    }

    fn type_of(&self, pfn: u64) -> PageType {
        self.types
            .get(pfn as usize)
            .copied()
            .unwrap_or(PageType::XTAB)
    }

    /// A data frame the guest relies on: populated, plain (NOTAB).
    fn notab_mfn(&self, pfn: u64, what: &str) -> Result<u64, RestoreError> {
        let m = self.mfn(pfn);
        if m == INVALID_MFN || self.type_of(pfn) != PageType::NOTAB {
            return Err(RestoreError::Unsupported(format!(
                "{what} pfn {pfn:#x} was not restored as an ordinary page (type {})",
                self.type_of(pfn)
            )));
        }
        Ok(m)
    }

    /// Everything Xen's `x86_pv_stream_complete` does. Returns the xenstore
    /// and console mfns for restore_results.
    pub(super) fn complete(
        mut self,
        hv: &dyn Hypervisor,
        dom: DomId,
        max_pfn: u64,
        params: &RestoreParams,
        timeline: &mut Timeline,
    ) -> Result<(u64, u64), RestoreError> {
        let frames = self
            .frames
            .take()
            .ok_or_else(|| RestoreError::Missing("no X86_PV_P2M_FRAMES record".into()))?;
        if self.vcpus.get(&0).is_none_or(|v| v.basic.is_empty()) {
            return Err(RestoreError::Missing(
                "no X86_PV_VCPU_BASIC record for vCPU 0".into(),
            ));
        }
        let info = hv.domain_info(dom)?;
        let mut store_mfn = 0;
        let mut console_mfn = 0;

        let vcpus = std::mem::take(&mut self.vcpus);
        for (id, mut st) in vcpus {
            if id > info.max_vcpu_id {
                return Err(RestoreError::Unsupported(format!(
                    "vCPU {id} beyond the domain's max vCPU id {}",
                    info.max_vcpu_id
                )));
            }
            if st.basic.is_empty() {
                continue; // Errata 1: empty records are ignored.
            }
            if id == 0 {
                let ctx = vcpu::Context64::new(&st.basic).map_err(|error| RestoreError::X86 {
                    what: "vCPU 0 context".into(),
                    error,
                })?;
                let si_pfn = ctx.reg(vcpu::Reg::Rdx);
                let si_mfn = self.notab_mfn(si_pfn, "start_info")?;
                let mut m = hv.map_pages(dom, &[si_mfn], true)?;
                let mut copy = m.page(0).to_vec();
                let page = copy.as_mut_slice();
                // The guest left pfns in these fields when it suspended.
                let store_pfn = start_info::store_mfn(page);
                let console_pfn = start_info::console_mfn(page);
                store_mfn = self.mfn(store_pfn);
                console_mfn = self.mfn(console_pfn);
                if store_mfn == INVALID_MFN || console_mfn == INVALID_MFN {
                    return Err(RestoreError::Unsupported(format!(
                        "start_info names xenstore pfn {store_pfn:#x} / console pfn \
                         {console_pfn:#x}, not restored"
                    )));
                }
                start_info::rewrite(
                    page,
                    &start_info::Rewrite {
                        nr_pages: max_pfn + 1,
                        shared_info_maddr: hv.shared_info_frame(dom)? << 12,
                        store_mfn,
                        store_evtchn: params.store_evtchn,
                        console_mfn,
                        console_evtchn: params.console_evtchn,
                    },
                )
                .map_err(|error| RestoreError::X86 {
                    what: "start_info".into(),
                    error,
                })?;
                m.page_mut(0).copy_from(&copy);
            }
            // Page-table roots must have come as page tables.
            {
                let ctx = vcpu::Context64::new(&st.basic).map_err(|error| RestoreError::X86 {
                    what: format!("vCPU {id} context"),
                    error,
                })?;
                let cr3_pfn = ctx.cr3() >> 12;
                if self.type_of(cr3_pfn).pt_level() != 4 {
                    return Err(RestoreError::Unsupported(format!(
                        "vCPU {id}: cr3 pfn {cr3_pfn:#x} is not an L4 page table (type {})",
                        self.type_of(cr3_pfn)
                    )));
                }
            }
            let p2m = &self.p2m;
            vcpu::localise_basic(&mut st.basic, id, |pfn| {
                p2m.get(pfn as usize).copied().filter(|&m| m != INVALID_MFN)
            })
            .map_err(|error| RestoreError::X86 {
                what: format!("vCPU {id} context"),
                error,
            })?;
            hv.set_pv_vcpu(dom, id, &st)?;
        }
        timeline.mark("rx:vcpus");

        if let Some(saved) = self.shared_info.take() {
            let mut page = hv.shared_info(dom)?;
            shared_info::restore_into(&saved, &mut page).map_err(|error| RestoreError::X86 {
                what: "shared info".into(),
                error,
            })?;
            hv.set_shared_info(dom, &page)?;
        } else {
            return Err(RestoreError::Missing("no SHARED_INFO record".into()));
        }
        timeline.mark("rx:shared_info");

        // Pinned in pfn order, as Xen's restore does; the backend batches.
        let tables: Vec<(u64, u8)> = self
            .pinned
            .iter()
            .map(|&pfn| (self.p2m[pfn as usize], self.type_of(pfn).pt_level()))
            .collect();
        hv.pin_tables(dom, &tables)?;
        timeline.mark("rx:pin");

        // The guest's own P2M, rewritten with the new frames: what is still
        // stale of it (most was written as the pages arrived).
        for &fpfn in &frames {
            self.notab_mfn(fpfn, "P2M frame")?;
        }
        self.frames = Some(frames);
        self.write_p2m(hv, dom)?;
        if let Some(i) = self.stale_frames.iter_ones().next() {
            return Err(RestoreError::Unsupported(format!(
                "P2M frame #{i} has no frame to write the guest's P2M into"
            )));
        }
        timeline.mark("rx:p2m");
        Ok((store_mfn, console_mfn))
    }
}
