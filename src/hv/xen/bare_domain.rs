//! The creation parameters of a bare domain made for a standalone restore:
//! what libxl sizes for a guest without devices. Its xenstore entries are
//! `hv::toolstack::xenstore`'s. Pure data, tested without Xen.

use crate::hv::GuestType;

/// Parameters of the domain to create (xen_domctl_createdomain and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateParams {
    pub hvm: bool,
    pub max_vcpus: u32,
    pub max_kb: u64,
    /// Paging pool for HVM (MiB), as libxl sizes it.
    pub shadow_mb: u32,
}

/// libxl's slack above guest RAM for the domain's memory limit.
const MAXMEM_SLACK_KB: u64 = 1024;

pub fn create_params(guest_type: GuestType, max_pfn: u64, max_vcpu_id: u32) -> CreateParams {
    let vcpus = max_vcpu_id + 1;
    let ram_kb = (max_pfn + 1) * 4;
    // libxl_get_required_shadow_memory: 4 KiB per (256 per vCPU + 2 per MiB).
    let shadow_kb = 4 * (256 * vcpus as u64 + 2 * ram_kb.div_ceil(1024));
    // HVM guests also hold video RAM (libxl adds video_memkb, 8 MiB by
    // default; room for 16).
    let video_kb = if guest_type == GuestType::Hvm {
        16384
    } else {
        0
    };
    CreateParams {
        hvm: guest_type == GuestType::Hvm,
        max_vcpus: vcpus,
        max_kb: ram_kb + video_kb + MAXMEM_SLACK_KB,
        shadow_mb: shadow_kb.div_ceil(1024) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_libxl() {
        // 128 MiB, 2 vCPUs: 16 MiB video, 1 MiB slack; shadow
        // 4*(512+256) KiB = 3 MiB.
        let p = create_params(GuestType::Hvm, 32767, 1);
        assert_eq!(
            p,
            CreateParams {
                hvm: true,
                max_vcpus: 2,
                max_kb: 131072 + 16384 + 1024,
                shadow_mb: 3
            }
        );
        let pv = create_params(GuestType::Pv, 32767, 0);
        assert!(!pv.hvm);
        assert_eq!(pv.max_kb, 131072 + 1024);
    }
}
