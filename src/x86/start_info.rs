//! `struct start_info` (public/xen.h), 64-bit guest layout, and
//! `process_start_info`'s rewrite on restore (docs/REFERENCE.md §9.4).
//!
//! In the stream the page's store/console frames are pfns; the engine
//! translates them and hands the machine values to [`rewrite`].

use super::X86Error;
use std::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `console.domU` of `struct start_info`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ConsoleDomU {
    pub mfn: U64,
    pub evtchn: U32,
    pub _pad: [u8; 4],
}

/// `struct start_info`, 64-bit guest.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StartInfo64 {
    /// e.g. "xen-3.0-x86_64", NUL-padded.
    pub magic: [u8; MAGIC_SIZE],
    pub nr_pages: U64,
    /// Machine address (not frame) of the shared info page.
    pub shared_info: U64,
    /// SIF_* flags.
    pub flags: U32,
    pub _pad0: [u8; 4],
    pub store_mfn: U64,
    pub store_evtchn: U32,
    pub _pad1: [u8; 4],
    pub console: ConsoleDomU,
    pub pt_base: U64,
    pub nr_pt_frames: U64,
    pub mfn_list: U64,
    pub mod_start: U64,
    pub mod_len: U64,
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    pub first_p2m_pfn: U64,
    pub nr_p2m_frames: U64,
}

type S = StartInfo64;

pub const MAGIC: usize = offset_of!(S, magic);
pub const MAGIC_SIZE: usize = 32;
/// Magic prefix of a 64-bit PV guest's start info.
pub const MAGIC_X86_64: &[u8] = b"xen-3.0-x86_64";
pub const NR_PAGES: usize = offset_of!(S, nr_pages);
/// Machine address (not frame) of the shared info page.
pub const SHARED_INFO: usize = offset_of!(S, shared_info);
/// u32, SIF_* flags.
pub const FLAGS: usize = offset_of!(S, flags);
pub const STORE_MFN: usize = offset_of!(S, store_mfn);
/// u32.
pub const STORE_EVTCHN: usize = offset_of!(S, store_evtchn);
/// `console.domU.mfn`.
pub const CONSOLE_MFN: usize = offset_of!(S, console.mfn);
/// u32, `console.domU.evtchn`.
pub const CONSOLE_EVTCHN: usize = offset_of!(S, console.evtchn);
pub const PT_BASE: usize = offset_of!(S, pt_base);
pub const NR_PT_FRAMES: usize = offset_of!(S, nr_pt_frames);
pub const MFN_LIST: usize = offset_of!(S, mfn_list);
pub const MOD_START: usize = offset_of!(S, mod_start);
pub const MOD_LEN: usize = offset_of!(S, mod_len);
pub const CMD_LINE: usize = offset_of!(S, cmd_line);
pub const MAX_GUEST_CMDLINE: usize = 1024;
pub const FIRST_P2M_PFN: usize = offset_of!(S, first_p2m_pfn);
pub const NR_P2M_FRAMES: usize = offset_of!(S, nr_p2m_frames);
/// `sizeof(struct start_info)` for a 64-bit guest.
pub const SIZE: usize = size_of::<S>();

/// The structure at the start of `page`. Panics on a page shorter than
/// [`SIZE`] (callers hand in whole 4096-byte pages).
fn at(page: &[u8]) -> &StartInfo64 {
    StartInfo64::ref_from_prefix(page)
        .expect("a start info page holds struct start_info")
        .0
}

fn at_mut(page: &mut [u8]) -> &mut StartInfo64 {
    StartInfo64::mut_from_prefix(page)
        .expect("a start info page holds struct start_info")
        .0
}

/// The values `process_start_info` writes into the restored guest's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// max_pfn + 1.
    pub nr_pages: u64,
    /// shared_info_frame << 12.
    pub shared_info_maddr: u64,
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub console_mfn: u64,
    pub console_evtchn: u32,
}

fn check(page: &[u8]) -> Result<(), X86Error> {
    if page.len() < SIZE {
        return Err(X86Error::BadSize {
            what: "start_info",
            len: page.len(),
        });
    }
    Ok(())
}

/// process_start_info's rewrite (flags = 0 too). Everything else (magic,
/// boot-time fields, command line) is left as the guest had it.
pub fn rewrite(page: &mut [u8], r: &Rewrite) -> Result<(), X86Error> {
    check(page)?;
    let s = at_mut(page);
    s.store_mfn.set(r.store_mfn);
    s.store_evtchn.set(r.store_evtchn);
    s.console.mfn.set(r.console_mfn);
    s.console.evtchn.set(r.console_evtchn);
    s.nr_pages.set(r.nr_pages);
    s.shared_info.set(r.shared_info_maddr);
    s.flags.set(0);
    Ok(())
}

/// Whether the page carries a 64-bit PV magic ("xen-3.0-x86_64").
pub fn is_x86_64(page: &[u8]) -> bool {
    page.get(MAGIC..MAGIC + MAGIC_X86_64.len()) == Some(MAGIC_X86_64)
}

// Plain field accessors. They panic on a page shorter than `SIZE`
// (callers hand in whole 4096-byte pages).

pub fn store_mfn(page: &[u8]) -> u64 {
    at(page).store_mfn.get()
}
pub fn console_mfn(page: &[u8]) -> u64 {
    at(page).console.mfn.get()
}
pub fn store_evtchn(page: &[u8]) -> u32 {
    at(page).store_evtchn.get()
}
pub fn console_evtchn(page: &[u8]) -> u32 {
    at(page).console.evtchn.get()
}
pub fn nr_pages(page: &[u8]) -> u64 {
    at(page).nr_pages.get()
}
pub fn shared_info_maddr(page: &[u8]) -> u64 {
    at(page).shared_info.get()
}
pub fn flags(page: &[u8]) -> u32 {
    at(page).flags.get()
}
pub fn set_store_mfn(page: &mut [u8], v: u64) {
    at_mut(page).store_mfn.set(v)
}
pub fn set_console_mfn(page: &mut [u8], v: u64) {
    at_mut(page).console.mfn.set(v)
}

/// Write the 64-bit magic (NUL-padded to 32 bytes), as a domain builder does.
pub fn set_magic_x86_64(page: &mut [u8]) {
    let field = &mut at_mut(page).magic;
    field.fill(0);
    field[..MAGIC_X86_64.len()].copy_from_slice(MAGIC_X86_64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_sys::{start_info_x86_64, start_info_x86_64__bindgen_ty_1__bindgen_ty_1 as DomU};

    #[test]
    fn layout_is_xens() {
        type X = start_info_x86_64;
        assert_eq!(SIZE, size_of::<X>());
        assert_eq!(SIZE, 1168);
        assert_eq!(size_of::<ConsoleDomU>(), size_of::<DomU>());
        let pairs = [
            (MAGIC, offset_of!(X, magic), "magic"),
            (NR_PAGES, offset_of!(X, nr_pages), "nr_pages"),
            (SHARED_INFO, offset_of!(X, shared_info), "shared_info"),
            (FLAGS, offset_of!(X, flags), "flags"),
            (STORE_MFN, offset_of!(X, store_mfn), "store_mfn"),
            (STORE_EVTCHN, offset_of!(X, store_evtchn), "store_evtchn"),
            (
                CONSOLE_MFN,
                offset_of!(X, console) + offset_of!(DomU, mfn),
                "console.domU.mfn",
            ),
            (
                CONSOLE_EVTCHN,
                offset_of!(X, console) + offset_of!(DomU, evtchn),
                "console.domU.evtchn",
            ),
            (PT_BASE, offset_of!(X, pt_base), "pt_base"),
            (NR_PT_FRAMES, offset_of!(X, nr_pt_frames), "nr_pt_frames"),
            (MFN_LIST, offset_of!(X, mfn_list), "mfn_list"),
            (MOD_START, offset_of!(X, mod_start), "mod_start"),
            (MOD_LEN, offset_of!(X, mod_len), "mod_len"),
            (CMD_LINE, offset_of!(X, cmd_line), "cmd_line"),
            (FIRST_P2M_PFN, offset_of!(X, first_p2m_pfn), "first_p2m_pfn"),
            (NR_P2M_FRAMES, offset_of!(X, nr_p2m_frames), "nr_p2m_frames"),
        ];
        for (ours, xens, name) in pairs {
            assert_eq!(ours, xens, "{name}");
        }
    }

    #[test]
    fn rewrite_touches_only_its_fields() {
        let mut page: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        set_magic_x86_64(&mut page);
        let before = page.clone();
        let r = Rewrite {
            nr_pages: 0x4_0001,
            shared_info_maddr: 0x1234_5000,
            store_mfn: 0xabcde,
            store_evtchn: 1,
            console_mfn: 0xbcdef,
            console_evtchn: 2,
        };
        rewrite(&mut page, &r).unwrap();
        assert_eq!(nr_pages(&page), r.nr_pages);
        assert_eq!(shared_info_maddr(&page), r.shared_info_maddr);
        assert_eq!(store_mfn(&page), r.store_mfn);
        assert_eq!(store_evtchn(&page), 1);
        assert_eq!(console_mfn(&page), r.console_mfn);
        assert_eq!(console_evtchn(&page), 2);
        assert_eq!(flags(&page), 0);
        assert!(is_x86_64(&page));
        let written = [
            (NR_PAGES, 8),
            (SHARED_INFO, 8),
            (FLAGS, 4),
            (STORE_MFN, 8),
            (STORE_EVTCHN, 4),
            (CONSOLE_MFN, 8),
            (CONSOLE_EVTCHN, 4),
        ];
        for i in 0..page.len() {
            if !written.iter().any(|&(o, n)| (o..o + n).contains(&i)) {
                assert_eq!(page[i], before[i], "byte {i} changed");
            }
        }
    }

    #[test]
    fn short_page_refused() {
        let r = Rewrite {
            nr_pages: 0,
            shared_info_maddr: 0,
            store_mfn: 0,
            store_evtchn: 0,
            console_mfn: 0,
            console_evtchn: 0,
        };
        assert!(matches!(
            rewrite(&mut [0u8; SIZE - 1], &r),
            Err(X86Error::BadSize { .. })
        ));
        assert!(!is_x86_64(&[0u8; 4]));
    }
}
