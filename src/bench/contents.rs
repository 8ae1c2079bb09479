//! What a bench guest's memory holds when its migration starts.
//!
//! A simulated guest is built with zero data pages, and the engine sends a
//! zero page the first time as an XALLOC entry without data (as a freshly
//! booted Xen guest's unused memory would go). A guest that has been running
//! for a while has its memory full of data; the paper's cases assume that.
//! So the policy suite fills the data pages before the guest starts (the
//! default), and `fresh` keeps them as built.

use super::BenchError;
use crate::hv::sim::layout::Layout;
use crate::hv::sim::SimHost;
use crate::hv::{DomId, GuestType, Hypervisor, INVALID_MFN};
use serde::{Deserialize, Serialize};

/// The guest's memory at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Contents {
    /// Data pages filled with non-zero bytes before the guest runs.
    Filled,
    /// As built: data pages zero until the workload writes them.
    Fresh,
}

impl Contents {
    pub fn name(self) -> &'static str {
        match self {
            Contents::Filled => "filled",
            Contents::Fresh => "fresh",
        }
    }

    /// Parse `filled` or `fresh`.
    pub fn parse(s: &str) -> Option<Contents> {
        match s {
            "filled" => Some(Contents::Filled),
            "fresh" => Some(Contents::Fresh),
            _ => None,
        }
    }
}

/// Fill the data pages of a (paused) sim guest with non-zero bytes, derived
/// from each frame's number so that no two pages are alike.
pub fn fill(
    host: &SimHost,
    dom: DomId,
    guest_type: GuestType,
    pages: u64,
) -> Result<(), BenchError> {
    let pfns = Layout::new(guest_type, pages).data_pfns();
    let p2m = match guest_type {
        GuestType::Pv => Some(host.pv_p2m(dom)?.p2m),
        GuestType::Hvm => None,
    };
    for chunk in pfns.chunks(1024) {
        let gfns: Vec<u64> = chunk
            .iter()
            .map(|&p| match &p2m {
                Some(m) => m.get(p as usize).copied().unwrap_or(INVALID_MFN),
                None => p,
            })
            .filter(|&g| g != INVALID_MFN)
            .collect();
        let mut map = host.map_pages(dom, &gfns, true)?;
        for (i, &g) in gfns.iter().enumerate() {
            let mut page = map.page_mut(i);
            for w in 0..512 {
                let v = crate::hv::sim::workload::mix(g.wrapping_mul(512) + w as u64) | 1;
                page.write_u64(w * 8, v);
            }
        }
    }
    Ok(())
}
