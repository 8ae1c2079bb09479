//! What the host has: `xc_physinfo` (XEN_SYSCTL_physinfo), read for the
//! receiver's default memory limit and the host's capabilities.

use super::XenHost;
use crate::hv::{DomId, Result};
use xen_sys::*;

/// Bytes per Xen page (x86).
const PAGE_BYTES: u64 = 4096;

/// The host's memory and capabilities, as XEN_SYSCTL_physinfo reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysInfo {
    pub total_pages: u64,
    pub free_pages: u64,
    /// Freed pages Xen is still scrubbing: free once scrubbed.
    pub scrub_pages: u64,
    /// Pages other domains have claimed but not yet populated.
    pub outstanding_pages: u64,
    /// XEN_SYSCTL_PHYSCAP_* bits.
    pub capabilities: u32,
}

impl PhysInfo {
    pub fn from_raw(raw: &xc_physinfo_t) -> PhysInfo {
        PhysInfo {
            total_pages: raw.total_pages,
            free_pages: raw.free_pages,
            scrub_pages: raw.scrub_pages,
            outstanding_pages: raw.outstanding_pages,
            capabilities: raw.capabilities,
        }
    }

    /// Memory a new guest could still get, in bytes: free and scrubbing
    /// pages (libxl counts both as free) less what other domains have
    /// claimed.
    pub fn free_bytes(&self) -> u64 {
        self.free_pages
            .saturating_add(self.scrub_pages)
            .saturating_sub(self.outstanding_pages)
            .saturating_mul(PAGE_BYTES)
    }

    /// Shadow paging is built in (PV guests' log-dirty needs it).
    pub fn has_shadow(&self) -> bool {
        self.capabilities & XEN_SYSCTL_PHYSCAP_shadow != 0
    }

    /// Hardware-assisted paging is available.
    pub fn has_hap(&self) -> bool {
        self.capabilities & XEN_SYSCTL_PHYSCAP_hap != 0
    }
}

/// Bytes of memory a domain may hold (`max_pages`, what the toolstack
/// granted it with `xc_domain_setmaxmem`).
pub fn max_memory_bytes(raw: &xc_domaininfo_t) -> u64 {
    raw.max_pages.saturating_mul(PAGE_BYTES)
}

impl XenHost {
    /// `xc_physinfo`.
    pub fn physinfo(&self) -> Result<PhysInfo> {
        let mut raw = xc_physinfo_t::default();
        // SAFETY: raw is the out parameter, a valid xc_physinfo_t.
        self.h.call(0 as DomId, "physinfo", |x| unsafe {
            x.lib.xc_physinfo(x.xch, &mut raw) as i64
        })?;
        Ok(PhysInfo::from_raw(&raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_counts_scrubbing_pages_and_not_claimed_ones() {
        let raw = xc_physinfo_t {
            total_pages: 1 << 20,
            free_pages: 1000,
            scrub_pages: 24,
            outstanding_pages: 500,
            capabilities: XEN_SYSCTL_PHYSCAP_hap,
            ..Default::default()
        };
        let p = PhysInfo::from_raw(&raw);
        assert_eq!(p.free_bytes(), 524 * 4096);
        assert!(p.has_hap());
        assert!(!p.has_shadow());
        let claimed = PhysInfo {
            outstanding_pages: 5000,
            ..p
        };
        assert_eq!(claimed.free_bytes(), 0);
    }
}
