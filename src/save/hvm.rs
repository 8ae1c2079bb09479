//! Save operations of an HVM (and PVH) guest: pfn == gfn, no page tables to
//! rewrite; holes (MMIO, unpopulated gfns) are XTAB as the hypervisor types
//! them; HVM context and params after the memory.

use super::ops::SaveOps;
use super::{SaveError, SAVED_HVM_PARAMS};
use crate::hv::{DomainInfo, Hypervisor};
use crate::stats::Timeline;
use crate::stream::{DomainType, Record};
use crate::x86::X86Error;

pub(crate) struct HvmOps {
    p2m_size: u64,
}

impl HvmOps {
    pub fn new(info: &DomainInfo) -> Self {
        HvmOps {
            p2m_size: info.p2m_size(),
        }
    }
}

impl SaveOps for HvmOps {
    fn domain_type(&self) -> DomainType {
        DomainType::X86Hvm
    }
    fn p2m_size(&self) -> u64 {
        self.p2m_size
    }
    fn static_data(&self) -> Vec<Record> {
        Vec::new()
    }
    fn start_of_stream(&self) -> Result<Vec<Record>, SaveError> {
        Ok(Vec::new())
    }
    fn pfn_to_gfn(&self, pfn: u64) -> u64 {
        pfn
    }
    fn normalise_page(&self, _level: u8, _page: &mut [u8]) -> Result<(), X86Error> {
        // An HVM guest's page tables hold guest-physical frames already.
        Ok(())
    }
    fn end_of_checkpoint(
        &self,
        hv: &dyn Hypervisor,
        info: &DomainInfo,
        timeline: &mut Timeline,
    ) -> Result<Vec<Record>, SaveError> {
        let dom = info.domid;
        let mut out = vec![Record::HvmContext(hv.hvm_context(dom)?)];
        timeline.mark("tx:hvm_context");
        let mut params = Vec::new();
        for &idx in SAVED_HVM_PARAMS {
            let v = hv.hvm_param(dom, idx)?;
            if v != 0 {
                params.push((idx as u64, v));
            }
        }
        if !params.is_empty() {
            out.push(Record::HvmParams(params));
        }
        timeline.mark("tx:hvm_params");
        Ok(out)
    }
}
