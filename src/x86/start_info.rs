//! `struct start_info` (public/xen.h), 64-bit guest layout, and
//! `process_start_info`'s rewrite on restore (docs/REFERENCE.md §9.4).
//!
//! In the stream the page's store/console frames are pfns; the engine
//! translates them and hands the machine values to [`rewrite`].

use super::le::{set_u32_at, set_u64_at, u32_at, u64_at};
use super::X86Error;

/// `char magic[32]`, e.g. "xen-3.0-x86_64".
pub const MAGIC: usize = 0;
pub const MAGIC_SIZE: usize = 32;
/// Magic prefix of a 64-bit PV guest's start info.
pub const MAGIC_X86_64: &[u8] = b"xen-3.0-x86_64";
pub const NR_PAGES: usize = 32;
/// Machine address (not frame) of the shared info page.
pub const SHARED_INFO: usize = 40;
/// u32, SIF_* flags.
pub const FLAGS: usize = 48;
pub const STORE_MFN: usize = 56;
/// u32.
pub const STORE_EVTCHN: usize = 64;
/// `console.domU.mfn`.
pub const CONSOLE_MFN: usize = 72;
/// u32, `console.domU.evtchn`.
pub const CONSOLE_EVTCHN: usize = 80;
pub const PT_BASE: usize = 88;
pub const NR_PT_FRAMES: usize = 96;
pub const MFN_LIST: usize = 104;
pub const MOD_START: usize = 112;
pub const MOD_LEN: usize = 120;
pub const CMD_LINE: usize = 128;
pub const MAX_GUEST_CMDLINE: usize = 1024;
pub const FIRST_P2M_PFN: usize = 1152;
pub const NR_P2M_FRAMES: usize = 1160;
/// `sizeof(struct start_info)` for a 64-bit guest.
pub const SIZE: usize = 1168;

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
    set_u64_at(page, STORE_MFN, r.store_mfn);
    set_u32_at(page, STORE_EVTCHN, r.store_evtchn);
    set_u64_at(page, CONSOLE_MFN, r.console_mfn);
    set_u32_at(page, CONSOLE_EVTCHN, r.console_evtchn);
    set_u64_at(page, NR_PAGES, r.nr_pages);
    set_u64_at(page, SHARED_INFO, r.shared_info_maddr);
    set_u32_at(page, FLAGS, 0);
    Ok(())
}

/// Whether the page carries a 64-bit PV magic ("xen-3.0-x86_64").
pub fn is_x86_64(page: &[u8]) -> bool {
    page.get(MAGIC..MAGIC + MAGIC_X86_64.len()) == Some(MAGIC_X86_64)
}

// Plain field accessors. They panic on a page shorter than `SIZE`
// (callers hand in whole 4096-byte pages).

pub fn store_mfn(page: &[u8]) -> u64 {
    u64_at(page, STORE_MFN)
}
pub fn console_mfn(page: &[u8]) -> u64 {
    u64_at(page, CONSOLE_MFN)
}
pub fn store_evtchn(page: &[u8]) -> u32 {
    u32_at(page, STORE_EVTCHN)
}
pub fn console_evtchn(page: &[u8]) -> u32 {
    u32_at(page, CONSOLE_EVTCHN)
}
pub fn nr_pages(page: &[u8]) -> u64 {
    u64_at(page, NR_PAGES)
}
pub fn shared_info_maddr(page: &[u8]) -> u64 {
    u64_at(page, SHARED_INFO)
}
pub fn flags(page: &[u8]) -> u32 {
    u32_at(page, FLAGS)
}
pub fn set_store_mfn(page: &mut [u8], v: u64) {
    set_u64_at(page, STORE_MFN, v)
}
pub fn set_console_mfn(page: &mut [u8], v: u64) {
    set_u64_at(page, CONSOLE_MFN, v)
}

/// Write the 64-bit magic (NUL-padded to 32 bytes), as a domain builder does.
pub fn set_magic_x86_64(page: &mut [u8]) {
    let field = &mut page[MAGIC..MAGIC + MAGIC_SIZE];
    field.fill(0);
    field[..MAGIC_X86_64.len()].copy_from_slice(MAGIC_X86_64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[repr(C)]
    struct DomU {
        mfn: u64,
        evtchn: u32,
    }

    #[repr(C)]
    struct StartInfo64 {
        magic: [u8; 32],
        nr_pages: u64,
        shared_info: u64,
        flags: u32,
        store_mfn: u64,
        store_evtchn: u32,
        console: DomU,
        pt_base: u64,
        nr_pt_frames: u64,
        mfn_list: u64,
        mod_start: u64,
        mod_len: u64,
        cmd_line: [i8; 1024],
        first_p2m_pfn: u64,
        nr_p2m_frames: u64,
    }

    #[test]
    fn layout_matches_public_header() {
        type S = StartInfo64;
        assert_eq!(size_of::<S>(), SIZE);
        let pairs = [
            (MAGIC, offset_of!(S, magic)),
            (NR_PAGES, offset_of!(S, nr_pages)),
            (SHARED_INFO, offset_of!(S, shared_info)),
            (FLAGS, offset_of!(S, flags)),
            (STORE_MFN, offset_of!(S, store_mfn)),
            (STORE_EVTCHN, offset_of!(S, store_evtchn)),
            (CONSOLE_MFN, offset_of!(S, console) + offset_of!(DomU, mfn)),
            (
                CONSOLE_EVTCHN,
                offset_of!(S, console) + offset_of!(DomU, evtchn),
            ),
            (PT_BASE, offset_of!(S, pt_base)),
            (NR_PT_FRAMES, offset_of!(S, nr_pt_frames)),
            (MFN_LIST, offset_of!(S, mfn_list)),
            (MOD_START, offset_of!(S, mod_start)),
            (MOD_LEN, offset_of!(S, mod_len)),
            (CMD_LINE, offset_of!(S, cmd_line)),
            (FIRST_P2M_PFN, offset_of!(S, first_p2m_pfn)),
            (NR_P2M_FRAMES, offset_of!(S, nr_p2m_frames)),
        ];
        for (i, (ours, header)) in pairs.iter().enumerate() {
            assert_eq!(ours, header, "field #{i}");
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
