//! `struct shared_info` (public/xen.h), 64-bit guest layout, and
//! `handle_shared_info`'s restore (docs/REFERENCE.md §5.6).

use super::le::{set_u64_at, u64_at};
use super::X86Error;

pub const SIZE: usize = 4096;

/// `XEN_LEGACY_MAX_VCPUS` entries of `struct vcpu_info`, 64 bytes each.
pub const VCPU_INFO: usize = 0;
pub const VCPU_INFO_SIZE: usize = 64;
pub const LEGACY_MAX_VCPUS: usize = 32;
/// Offsets within one `vcpu_info`.
pub const VI_EVTCHN_UPCALL_PENDING: usize = 0;
pub const VI_EVTCHN_UPCALL_MASK: usize = 1;
pub const VI_EVTCHN_PENDING_SEL: usize = 8;
pub const VI_ARCH_CR2: usize = 16;
pub const VI_TIME: usize = 32;
/// `evtchn_pending[64]` and `evtchn_mask[64]`, xen_ulong_t each.
pub const EVTCHN_PENDING: usize = 2048;
pub const EVTCHN_MASK: usize = 2560;
pub const EVTCHN_WORDS: usize = 64;
pub const WC_VERSION: usize = 3072;
pub const WC_SEC: usize = 3076;
pub const WC_NSEC: usize = 3080;
pub const WC_SEC_HI: usize = 3084;
/// `struct arch_shared_info`.
pub const ARCH: usize = 3088;
pub const ARCH_SIZE: usize = 48;
pub const MAX_PFN: usize = 3088;
pub const PFN_TO_MFN_FRAME_LIST_LIST: usize = 3096;
pub const NMI_REASON: usize = 3104;
pub const P2M_CR3: usize = 3112;
pub const P2M_VADDR: usize = 3120;
pub const P2M_GENERATION: usize = 3128;
/// End of the structure; the rest of the page is unused.
pub const STRUCT_SIZE: usize = 3136;

fn check(what: &'static str, page: &[u8]) -> Result<(), X86Error> {
    if page.len() != SIZE {
        return Err(X86Error::BadSize {
            what,
            len: page.len(),
        });
    }
    Ok(())
}

/// handle_shared_info: copy vcpu_info[] and arch from the saved page into the
/// new domain's page, zero pfn_to_mfn_frame_list_list, clear every
/// evtchn_pending bit and every vcpu_info evtchn_pending_sel, set every
/// evtchn_mask bit. The wallclock fields of `dest` are kept.
pub fn restore_into(saved: &[u8], dest: &mut [u8]) -> Result<(), X86Error> {
    check("saved shared_info", saved)?;
    check("shared_info", dest)?;
    let vcpus = VCPU_INFO..VCPU_INFO + LEGACY_MAX_VCPUS * VCPU_INFO_SIZE;
    dest[vcpus.clone()].copy_from_slice(&saved[vcpus]);
    let arch = ARCH..ARCH + ARCH_SIZE;
    dest[arch.clone()].copy_from_slice(&saved[arch]);
    // The old frame list names the source host's mfns; the guest rebuilds it.
    set_u64_at(dest, PFN_TO_MFN_FRAME_LIST_LIST, 0);
    dest[EVTCHN_PENDING..EVTCHN_PENDING + EVTCHN_WORDS * 8].fill(0);
    for v in 0..LEGACY_MAX_VCPUS {
        set_u64_at(
            dest,
            VCPU_INFO + v * VCPU_INFO_SIZE + VI_EVTCHN_PENDING_SEL,
            0,
        );
    }
    // Every channel masked: the guest's resume path rebinds and unmasks.
    dest[EVTCHN_MASK..EVTCHN_MASK + EVTCHN_WORDS * 8].fill(0xff);
    Ok(())
}

// Plain field accessors. They panic on a page shorter than `STRUCT_SIZE`
// (callers hand in whole pages).

pub fn max_pfn(page: &[u8]) -> u64 {
    u64_at(page, MAX_PFN)
}
pub fn set_max_pfn(page: &mut [u8], v: u64) {
    set_u64_at(page, MAX_PFN, v)
}
pub fn frame_list_list(page: &[u8]) -> u64 {
    u64_at(page, PFN_TO_MFN_FRAME_LIST_LIST)
}
pub fn set_frame_list_list(page: &mut [u8], v: u64) {
    set_u64_at(page, PFN_TO_MFN_FRAME_LIST_LIST, v)
}
pub fn p2m_cr3(page: &[u8]) -> u64 {
    u64_at(page, P2M_CR3)
}
pub fn set_p2m_cr3(page: &mut [u8], v: u64) {
    set_u64_at(page, P2M_CR3, v)
}
pub fn p2m_vaddr(page: &[u8]) -> u64 {
    u64_at(page, P2M_VADDR)
}
pub fn set_p2m_vaddr(page: &mut [u8], v: u64) {
    set_u64_at(page, P2M_VADDR, v)
}
pub fn p2m_generation(page: &[u8]) -> u64 {
    u64_at(page, P2M_GENERATION)
}
pub fn set_p2m_generation(page: &mut [u8], v: u64) {
    set_u64_at(page, P2M_GENERATION, v)
}
/// `vcpu_info[vcpu].evtchn_pending_sel`; `vcpu` must be below 32.
pub fn evtchn_pending_sel(page: &[u8], vcpu: usize) -> u64 {
    assert!(vcpu < LEGACY_MAX_VCPUS, "vcpu_info index {vcpu}");
    u64_at(
        page,
        VCPU_INFO + vcpu * VCPU_INFO_SIZE + VI_EVTCHN_PENDING_SEL,
    )
}
/// Bit `port` of `evtchn_pending` (ports 0..4096).
pub fn evtchn_pending(page: &[u8], port: usize) -> bool {
    bit(page, EVTCHN_PENDING, port)
}
/// Bit `port` of `evtchn_mask` (ports 0..4096).
pub fn evtchn_masked(page: &[u8], port: usize) -> bool {
    bit(page, EVTCHN_MASK, port)
}

fn bit(page: &[u8], base: usize, port: usize) -> bool {
    assert!(port < EVTCHN_WORDS * 64, "event channel port {port}");
    u64_at(page, base + (port / 64) * 8) & (1 << (port % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::mem::{offset_of, size_of};

    #[repr(C)]
    struct VcpuTimeInfo {
        version: u32,
        pad0: u32,
        tsc_timestamp: u64,
        system_time: u64,
        tsc_to_system_mul: u32,
        tsc_shift: i8,
        flags: u8,
        pad1: [u8; 2],
    }

    #[repr(C)]
    struct VcpuInfo {
        evtchn_upcall_pending: u8,
        evtchn_upcall_mask: u8,
        evtchn_pending_sel: u64,
        cr2: u64,
        pad: u64,
        time: VcpuTimeInfo,
    }

    #[repr(C)]
    struct ArchSharedInfo {
        max_pfn: u64,
        pfn_to_mfn_frame_list_list: u64,
        nmi_reason: u64,
        p2m_cr3: u64,
        p2m_vaddr: u64,
        p2m_generation: u64,
    }

    #[repr(C)]
    struct SharedInfo64 {
        vcpu_info: [VcpuInfo; 32],
        evtchn_pending: [u64; 64],
        evtchn_mask: [u64; 64],
        wc_version: u32,
        wc_sec: u32,
        wc_nsec: u32,
        wc_sec_hi: u32,
        arch: ArchSharedInfo,
    }

    #[test]
    fn layout_matches_public_header() {
        type S = SharedInfo64;
        type V = VcpuInfo;
        type A = ArchSharedInfo;
        assert_eq!(size_of::<VcpuTimeInfo>(), 32);
        assert_eq!(size_of::<V>(), VCPU_INFO_SIZE);
        assert_eq!(size_of::<A>(), ARCH_SIZE);
        assert_eq!(size_of::<S>(), STRUCT_SIZE);
        let pairs = [
            (
                VI_EVTCHN_UPCALL_PENDING,
                offset_of!(V, evtchn_upcall_pending),
            ),
            (VI_EVTCHN_UPCALL_MASK, offset_of!(V, evtchn_upcall_mask)),
            (VI_EVTCHN_PENDING_SEL, offset_of!(V, evtchn_pending_sel)),
            (VI_ARCH_CR2, offset_of!(V, cr2)),
            (VI_TIME, offset_of!(V, time)),
            (VCPU_INFO, offset_of!(S, vcpu_info)),
            (EVTCHN_PENDING, offset_of!(S, evtchn_pending)),
            (EVTCHN_MASK, offset_of!(S, evtchn_mask)),
            (WC_VERSION, offset_of!(S, wc_version)),
            (WC_SEC, offset_of!(S, wc_sec)),
            (WC_NSEC, offset_of!(S, wc_nsec)),
            (WC_SEC_HI, offset_of!(S, wc_sec_hi)),
            (ARCH, offset_of!(S, arch)),
            (MAX_PFN, ARCH + offset_of!(A, max_pfn)),
            (
                PFN_TO_MFN_FRAME_LIST_LIST,
                ARCH + offset_of!(A, pfn_to_mfn_frame_list_list),
            ),
            (NMI_REASON, ARCH + offset_of!(A, nmi_reason)),
            (P2M_CR3, ARCH + offset_of!(A, p2m_cr3)),
            (P2M_VADDR, ARCH + offset_of!(A, p2m_vaddr)),
            (P2M_GENERATION, ARCH + offset_of!(A, p2m_generation)),
        ];
        for (i, (ours, header)) in pairs.iter().enumerate() {
            assert_eq!(ours, header, "field #{i}");
        }
    }

    #[test]
    fn wrong_sizes_refused() {
        let mut dest = vec![0u8; SIZE];
        assert!(matches!(
            restore_into(&[0u8; 100], &mut dest),
            Err(X86Error::BadSize { len: 100, .. })
        ));
        assert!(matches!(
            restore_into(&[0u8; SIZE], &mut [0u8; SIZE + 1]),
            Err(X86Error::BadSize { .. })
        ));
    }

    #[test]
    fn accessors() {
        let mut p = vec![0u8; SIZE];
        set_max_pfn(&mut p, 0x3ffff);
        set_p2m_vaddr(&mut p, 0xffff_c900_0000_0000);
        assert_eq!(max_pfn(&p), 0x3ffff);
        assert_eq!(u64_at(&p, 3088), 0x3ffff);
        assert_eq!(p2m_vaddr(&p), 0xffff_c900_0000_0000);
        p[EVTCHN_MASK + 8] = 0b10;
        assert!(evtchn_masked(&p, 65));
        assert!(!evtchn_masked(&p, 64));
        assert!(!evtchn_pending(&p, 65));
    }

    proptest! {
        #[test]
        fn restore_into_copies_masks_and_clears_exactly(
            saved in proptest::collection::vec(any::<u8>(), SIZE),
            dest0 in proptest::collection::vec(any::<u8>(), SIZE),
        ) {
            let mut dest = dest0.clone();
            restore_into(&saved, &mut dest).unwrap();
            for i in 0..SIZE {
                let in_vcpu = i < LEGACY_MAX_VCPUS * VCPU_INFO_SIZE;
                let sel = in_vcpu && (VI_EVTCHN_PENDING_SEL..VI_EVTCHN_PENDING_SEL + 8).contains(&(i % VCPU_INFO_SIZE));
                let want = if sel {
                    0
                } else if in_vcpu {
                    saved[i]
                } else if (EVTCHN_PENDING..EVTCHN_MASK).contains(&i) {
                    0
                } else if (EVTCHN_MASK..WC_VERSION).contains(&i) {
                    0xff
                } else if (PFN_TO_MFN_FRAME_LIST_LIST..PFN_TO_MFN_FRAME_LIST_LIST + 8).contains(&i) {
                    0
                } else if (ARCH..ARCH + ARCH_SIZE).contains(&i) {
                    saved[i]
                } else {
                    dest0[i]
                };
                prop_assert_eq!(dest[i], want, "byte {}", i);
            }
            for v in 0..LEGACY_MAX_VCPUS {
                prop_assert_eq!(evtchn_pending_sel(&dest, v), 0);
            }
            for port in 0..EVTCHN_WORDS * 64 {
                prop_assert!(!evtchn_pending(&dest, port));
                prop_assert!(evtchn_masked(&dest, port));
            }
            prop_assert_eq!(frame_list_list(&dest), 0);
            prop_assert_eq!(max_pfn(&dest), max_pfn(&saved));
        }
    }
}
