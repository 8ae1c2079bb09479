//! What differs per guest type on the save side, as Xen's `xc_sr_save_ops`:
//! the static records, what goes before the first page, how a pfn names
//! its frame, how page tables are written, and the records after the memory.
//! [`pv::PvOps`] and [`hvm::HvmOps`] implement it; the engine around them
//! (`save`, the pager, the round loop) does not look at the guest type.

use super::{hvm, pv, SaveError};
use crate::hv::{DomId, DomainInfo, GuestType, Hypervisor};
use crate::stats::Timeline;
use crate::stream::{DomainType, Record};
use crate::x86::X86Error;

pub(crate) trait SaveOps {
    /// The domain header's type.
    fn domain_type(&self) -> DomainType;
    /// Pfns the save covers (0..p2m_size).
    fn p2m_size(&self) -> u64;
    /// Records of the static data that come before the CPU policy.
    fn static_data(&self) -> Vec<Record>;
    /// Records after STATIC_DATA_END, before the first PAGE_DATA.
    fn start_of_stream(&self) -> Result<Vec<Record>, SaveError>;
    /// The frame the hypervisor knows `pfn` by, or [`crate::hv::INVALID_MFN`]
    /// when it has none (the pfn travels as XTAB).
    fn pfn_to_gfn(&self, pfn: u64) -> u64;
    /// Turn page table `page` (level 1..=4, a private copy of 4096 bytes)
    /// into what the stream carries, in place; types whose tables need no
    /// translation leave it as it is.
    fn normalise_page(&self, level: u8, page: &mut [u8]) -> Result<(), X86Error>;
    /// Records after the memory and the TSC info, the guest suspended;
    /// each step marked on `timeline`.
    fn end_of_checkpoint(
        &self,
        hv: &dyn Hypervisor,
        info: &DomainInfo,
        timeline: &mut Timeline,
    ) -> Result<Vec<Record>, SaveError>;
}

/// The operations for domain `dom`'s guest type (checks what the type needs).
pub(crate) fn for_domain(
    hv: &dyn Hypervisor,
    dom: DomId,
    info: &DomainInfo,
) -> Result<Box<dyn SaveOps>, SaveError> {
    Ok(match info.guest_type {
        GuestType::Pv => Box::new(pv::PvOps::new(hv, dom, info)?),
        GuestType::Hvm => Box::new(hvm::HvmOps::new(info)),
    })
}
