//! `struct shared_info` (public/xen.h), 64-bit guest layout, and
//! `handle_shared_info`'s restore (docs/REFERENCE.md §5.6).

use super::X86Error;
use std::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `struct vcpu_time_info`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VcpuTimeInfo {
    pub version: U32,
    pub pad0: U32,
    pub tsc_timestamp: U64,
    pub system_time: U64,
    pub tsc_to_system_mul: U32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub pad1: [u8; 2],
}

/// `struct vcpu_info`, 64-bit guest (`arch_vcpu_info` inlined: cr2, pad).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VcpuInfo {
    pub evtchn_upcall_pending: u8,
    pub evtchn_upcall_mask: u8,
    pub _pad: [u8; 6],
    pub evtchn_pending_sel: U64,
    pub cr2: U64,
    pub arch_pad: U64,
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info`, 64-bit guest.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ArchSharedInfo {
    pub max_pfn: U64,
    pub pfn_to_mfn_frame_list_list: U64,
    pub nmi_reason: U64,
    pub p2m_cr3: U64,
    pub p2m_vaddr: U64,
    pub p2m_generation: U64,
}

/// `struct shared_info`, 64-bit guest: the start of the shared info page.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SharedInfo64 {
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    pub evtchn_pending: [U64; EVTCHN_WORDS],
    pub evtchn_mask: [U64; EVTCHN_WORDS],
    pub wc_version: U32,
    pub wc_sec: U32,
    pub wc_nsec: U32,
    pub wc_sec_hi: U32,
    pub arch: ArchSharedInfo,
}

type S = SharedInfo64;
type V = VcpuInfo;
type A = ArchSharedInfo;

pub const SIZE: usize = 4096;

/// `XEN_LEGACY_MAX_VCPUS` entries of `struct vcpu_info`.
pub const VCPU_INFO: usize = offset_of!(S, vcpu_info);
pub const VCPU_INFO_SIZE: usize = size_of::<V>();
pub const LEGACY_MAX_VCPUS: usize = 32;
/// Offsets within one `vcpu_info`.
pub const VI_EVTCHN_UPCALL_PENDING: usize = offset_of!(V, evtchn_upcall_pending);
pub const VI_EVTCHN_UPCALL_MASK: usize = offset_of!(V, evtchn_upcall_mask);
pub const VI_EVTCHN_PENDING_SEL: usize = offset_of!(V, evtchn_pending_sel);
pub const VI_ARCH_CR2: usize = offset_of!(V, cr2);
pub const VI_TIME: usize = offset_of!(V, time);
/// `evtchn_pending[64]` and `evtchn_mask[64]`, xen_ulong_t each.
pub const EVTCHN_PENDING: usize = offset_of!(S, evtchn_pending);
pub const EVTCHN_MASK: usize = offset_of!(S, evtchn_mask);
pub const EVTCHN_WORDS: usize = 64;
pub const WC_VERSION: usize = offset_of!(S, wc_version);
pub const WC_SEC: usize = offset_of!(S, wc_sec);
pub const WC_NSEC: usize = offset_of!(S, wc_nsec);
pub const WC_SEC_HI: usize = offset_of!(S, wc_sec_hi);
/// `struct arch_shared_info`.
pub const ARCH: usize = offset_of!(S, arch);
pub const ARCH_SIZE: usize = size_of::<A>();
pub const MAX_PFN: usize = ARCH + offset_of!(A, max_pfn);
pub const PFN_TO_MFN_FRAME_LIST_LIST: usize = ARCH + offset_of!(A, pfn_to_mfn_frame_list_list);
pub const NMI_REASON: usize = ARCH + offset_of!(A, nmi_reason);
pub const P2M_CR3: usize = ARCH + offset_of!(A, p2m_cr3);
pub const P2M_VADDR: usize = ARCH + offset_of!(A, p2m_vaddr);
pub const P2M_GENERATION: usize = ARCH + offset_of!(A, p2m_generation);
/// End of the structure; the rest of the page is unused.
pub const STRUCT_SIZE: usize = size_of::<S>();

/// The structure at the start of `page`. Panics on a page shorter than
/// [`STRUCT_SIZE`] (callers hand in whole pages).
fn at(page: &[u8]) -> &SharedInfo64 {
    SharedInfo64::ref_from_prefix(page)
        .expect("a shared info page holds struct shared_info")
        .0
}

fn at_mut(page: &mut [u8]) -> &mut SharedInfo64 {
    SharedInfo64::mut_from_prefix(page)
        .expect("a shared info page holds struct shared_info")
        .0
}

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
    let saved = at(saved);
    let d = at_mut(dest);
    d.vcpu_info = saved.vcpu_info;
    d.arch = saved.arch;
    // The old frame list names the source host's mfns; the guest rebuilds it.
    d.arch.pfn_to_mfn_frame_list_list.set(0);
    d.evtchn_pending = [U64::ZERO; EVTCHN_WORDS];
    for v in &mut d.vcpu_info {
        v.evtchn_pending_sel.set(0);
    }
    // Every channel masked: the guest's resume path rebinds and unmasks.
    d.evtchn_mask = [U64::MAX_VALUE; EVTCHN_WORDS];
    Ok(())
}

// Plain field accessors. They panic on a page shorter than `STRUCT_SIZE`
// (callers hand in whole pages).

pub fn max_pfn(page: &[u8]) -> u64 {
    at(page).arch.max_pfn.get()
}
pub fn set_max_pfn(page: &mut [u8], v: u64) {
    at_mut(page).arch.max_pfn.set(v)
}
pub fn frame_list_list(page: &[u8]) -> u64 {
    at(page).arch.pfn_to_mfn_frame_list_list.get()
}
pub fn set_frame_list_list(page: &mut [u8], v: u64) {
    at_mut(page).arch.pfn_to_mfn_frame_list_list.set(v)
}
pub fn p2m_cr3(page: &[u8]) -> u64 {
    at(page).arch.p2m_cr3.get()
}
pub fn set_p2m_cr3(page: &mut [u8], v: u64) {
    at_mut(page).arch.p2m_cr3.set(v)
}
pub fn p2m_vaddr(page: &[u8]) -> u64 {
    at(page).arch.p2m_vaddr.get()
}
pub fn set_p2m_vaddr(page: &mut [u8], v: u64) {
    at_mut(page).arch.p2m_vaddr.set(v)
}
pub fn p2m_generation(page: &[u8]) -> u64 {
    at(page).arch.p2m_generation.get()
}
pub fn set_p2m_generation(page: &mut [u8], v: u64) {
    at_mut(page).arch.p2m_generation.set(v)
}
/// `vcpu_info[vcpu].evtchn_pending_sel`; `vcpu` must be below 32.
pub fn evtchn_pending_sel(page: &[u8], vcpu: usize) -> u64 {
    at(page).vcpu_info[vcpu].evtchn_pending_sel.get()
}
/// Bit `port` of `evtchn_pending` (ports 0..4096).
pub fn evtchn_pending(page: &[u8], port: usize) -> bool {
    bit(&at(page).evtchn_pending, port)
}
/// Bit `port` of `evtchn_mask` (ports 0..4096).
pub fn evtchn_masked(page: &[u8], port: usize) -> bool {
    bit(&at(page).evtchn_mask, port)
}

fn bit(words: &[U64; EVTCHN_WORDS], port: usize) -> bool {
    words[port / 64].get() & (1 << (port % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xen_sys::{
        arch_shared_info_x86_64, shared_info_x86_64, vcpu_info_x86_64, vcpu_time_info_x86_64,
    };

    macro_rules! same_offsets {
        ($ours:ty, $theirs:ty: $($f:ident $(. $g:ident)? $(= $h:ident $(. $k:ident)?)?),+ $(,)?) => {
            $(assert_eq!(
                offset_of!($ours, $f $(. $g)?),
                same_offsets!(@theirs $theirs, $f $(. $g)? $(= $h $(. $k)?)?),
                stringify!($f $(. $g)?)
            );)+
        };
        (@theirs $theirs:ty, $f:ident $(. $g:ident)?) => { offset_of!($theirs, $f $(. $g)?) };
        (@theirs $theirs:ty, $f:ident $(. $g:ident)? = $h:ident $(. $k:ident)?) => {
            offset_of!($theirs, $h $(. $k)?)
        };
    }

    #[test]
    fn layout_is_xens() {
        assert_eq!(
            size_of::<VcpuTimeInfo>(),
            size_of::<vcpu_time_info_x86_64>()
        );
        assert_eq!(size_of::<V>(), size_of::<vcpu_info_x86_64>());
        assert_eq!(size_of::<A>(), size_of::<arch_shared_info_x86_64>());
        assert_eq!(STRUCT_SIZE, size_of::<shared_info_x86_64>());
        assert_eq!(STRUCT_SIZE, 3136);
        same_offsets!(VcpuTimeInfo, vcpu_time_info_x86_64:
            version, pad0, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, flags, pad1);
        same_offsets!(V, vcpu_info_x86_64:
            evtchn_upcall_pending, evtchn_upcall_mask, evtchn_pending_sel,
            cr2 = arch.cr2, arch_pad = arch.pad, time);
        same_offsets!(A, arch_shared_info_x86_64:
            max_pfn, pfn_to_mfn_frame_list_list, nmi_reason, p2m_cr3, p2m_vaddr, p2m_generation);
        same_offsets!(S, shared_info_x86_64:
            vcpu_info, evtchn_pending, evtchn_mask, wc_version, wc_sec, wc_nsec, wc_sec_hi, arch);
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
        assert_eq!(&p[3088..3096], &0x3ffffu64.to_le_bytes());
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
