//! Save operations of a 64-bit PV guest: its P2M names the frames, page
//! tables go out with machine frames rewritten as pfns, and the shared info
//! and vCPU records follow the memory.

use super::ops::SaveOps;
use super::SaveError;
use crate::hv::{DomId, DomainInfo, HvError, Hypervisor, INVALID_MFN};
use crate::stats::Timeline;
use crate::stream::{DomainType, Record, VcpuRecord, PAGE_SIZE};
use crate::x86::{pagetable, X86Error};
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;

/// mfn → pfn for a PV guest, from its P2M (what Xen's M2P answers for the
/// guest's own frames; frames not in the P2M are not the guest's).
pub(crate) fn invert_p2m(p2m: &[u64]) -> HashMap<u64, u64> {
    p2m.iter()
        .enumerate()
        .filter(|(_, &m)| m != INVALID_MFN)
        .map(|(pfn, &mfn)| (mfn, pfn as u64))
        .collect()
}

pub(crate) struct PvOps {
    p2m: Vec<u64>,
    m2p: HashMap<u64, u64>,
    /// Pfns of the frames holding the P2M (X86_PV_P2M_FRAMES).
    frames: Vec<u64>,
}

impl PvOps {
    pub fn new(hv: &dyn Hypervisor, dom: DomId, info: &DomainInfo) -> Result<Self, SaveError> {
        let width = hv.guest_width(dom)?;
        if width != 8 {
            return Err(SaveError::Unsupported(format!(
                "domain {dom} is a {}-bit PV guest; only 64-bit PV guests are supported",
                width * 8
            )));
        }
        let p = hv.pv_p2m(dom)?;
        // Shorter is fine: a missing tail is cut off as Xen does (the save
        // then covers the P2M's pfns only).
        if p.p2m.is_empty() || p.p2m.len() as u64 > info.p2m_size() {
            return Err(SaveError::Unsupported(format!(
                "domain {dom}: P2M has {} entries, domain reports {}",
                p.p2m.len(),
                info.p2m_size()
            )));
        }
        if u32::try_from(p.p2m.len() - 1).is_err() {
            return Err(SaveError::Unsupported(format!(
                "domain {dom}: max_pfn {:#x} exceeds 32 bits",
                p.p2m.len() - 1
            )));
        }
        Ok(PvOps {
            m2p: invert_p2m(&p.p2m),
            p2m: p.p2m,
            frames: p.frames,
        })
    }

    /// The guest's P2M entry of `pfn` now, read from the leaf frame that
    /// held it when the save began. INVALID_MFN where it had none.
    fn entry_now(&self, hv: &dyn Hypervisor, dom: DomId, pfn: u64) -> crate::hv::Result<u64> {
        const PER_LEAF: u64 = (PAGE_SIZE / 8) as u64;
        let leaf_mfn = self
            .frames
            .get((pfn / PER_LEAF) as usize)
            .and_then(|&leaf_pfn| self.p2m.get(leaf_pfn as usize));
        let Some(&leaf_mfn) = leaf_mfn else {
            return Ok(INVALID_MFN);
        };
        let map = hv.map_pages(dom, &[leaf_mfn], false)?;
        Ok(map.page(0).read_u64(((pfn % PER_LEAF) * 8) as usize))
    }
}

impl SaveOps for PvOps {
    fn domain_type(&self) -> DomainType {
        DomainType::X86Pv
    }
    fn p2m_size(&self) -> u64 {
        self.p2m.len() as u64
    }
    fn static_data(&self) -> Vec<Record> {
        vec![Record::X86PvInfo {
            guest_width: 8,
            pt_levels: 4,
        }]
    }
    fn start_of_stream(&self) -> Result<Vec<Record>, SaveError> {
        // Checked to fit in `new`.
        let end_pfn = u32::try_from(self.p2m.len() - 1).map_err(|_| {
            SaveError::Unsupported(format!("max_pfn {:#x} exceeds 32 bits", self.p2m.len() - 1))
        })?;
        Ok(vec![Record::X86PvP2mFrames {
            start_pfn: 0,
            end_pfn,
            frames: self.frames.clone(),
        }])
    }
    fn pfn_to_gfn(&self, pfn: u64) -> u64 {
        self.p2m.get(pfn as usize).copied().unwrap_or(INVALID_MFN)
    }
    fn normalise_page(&self, level: u8, page: &mut [u8]) -> Result<(), X86Error> {
        pagetable::normalise(&mut page[..PAGE_SIZE], level, |mfn| {
            self.m2p.get(&mfn).copied()
        })
    }
    fn end_of_checkpoint(
        &self,
        hv: &dyn Hypervisor,
        info: &DomainInfo,
        timeline: &mut Timeline,
    ) -> Result<Vec<Record>, SaveError> {
        let dom = info.domid;
        let mut out = vec![Record::SharedInfo(hv.shared_info(dom)?)];
        timeline.mark("tx:shared_info");
        // The few frames a vCPU names are looked up in the M2P built before
        // the rounds and checked against the guest's P2M entry as it is now,
        // read from the P2M leaf that held it then (as Xen's saver reads its
        // live mapping of the P2M): no O(guest) work in the pause. A frame
        // that moved since (a guest that ballooned) is searched for in the
        // whole P2M, read then.
        let failed: RefCell<Option<HvError>> = RefCell::new(None);
        let whole: OnceCell<Option<Vec<u64>>> = OnceCell::new();
        let m2p = |mfn: u64| {
            if mfn == INVALID_MFN {
                return None;
            }
            if let Some(&pfn) = self.m2p.get(&mfn) {
                match self.entry_now(hv, dom, pfn) {
                    Ok(now) if now == mfn => return Some(pfn),
                    Ok(_) => {}
                    Err(e) => {
                        failed.borrow_mut().get_or_insert(e);
                        return None;
                    }
                }
            }
            let p2m = whole.get_or_init(|| match hv.pv_p2m(dom) {
                Ok(p) => Some(p.p2m),
                Err(e) => {
                    failed.borrow_mut().get_or_insert(e);
                    None
                }
            });
            p2m.as_ref()?
                .iter()
                .position(|&m| m == mfn)
                .map(|p| p as u64)
        };
        for &v in &info.online_vcpus {
            let st = hv.pv_vcpu(dom, v)?;
            let mut basic = st.basic;
            let normalised = crate::x86::vcpu::normalise_basic(&mut basic, v, m2p);
            // a hypervisor call that failed on the way is the cause to report
            if let Some(e) = failed.borrow_mut().take() {
                return Err(e.into());
            }
            normalised.map_err(|source| SaveError::Vcpu { vcpu: v, source })?;
            out.push(Record::X86PvVcpuBasic(VcpuRecord {
                vcpu_id: v,
                blob: basic,
            }));
            for (blob, rec) in [
                (
                    st.extended,
                    Record::X86PvVcpuExtended as fn(VcpuRecord) -> Record,
                ),
                (st.xsave, Record::X86PvVcpuXsave),
                (st.msrs, Record::X86PvVcpuMsrs),
            ] {
                if !blob.is_empty() {
                    out.push(rec(VcpuRecord { vcpu_id: v, blob }));
                }
            }
        }
        timeline.mark("tx:vcpus");
        Ok(out)
    }
}
