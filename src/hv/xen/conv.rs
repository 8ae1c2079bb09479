//! Conversions between Xen's raw formats and the engine's types.

use crate::bitmap::Bitmap;
use crate::hv::{PageType, ShutdownReason};

/// A getpageframeinfo3 result (`XEN_DOMCTL_PFINFO_*`, type in bits 28–31)
/// as the PAGE_DATA type nibble.
pub fn page_type(pfinfo: u64) -> PageType {
    PageType(((pfinfo >> 28) & 0xF) as u8)
}

/// The `SHUTDOWN_*` code Xen reports in getdomaininfo's flags.
pub fn shutdown_reason(code: u32) -> Option<ShutdownReason> {
    Some(match code {
        0 => ShutdownReason::Poweroff,
        1 => ShutdownReason::Reboot,
        2 => ShutdownReason::Suspend,
        3 => ShutdownReason::Crash,
        4 => ShutdownReason::Watchdog,
        5 => ShutdownReason::SoftReset,
        _ => return None,
    })
}

/// Copies a dirty bitmap as Xen wrote it (bit p of native words = pfn p)
/// into `out`, dropping bits past `out.len()`. Returns the dirty count.
pub fn bitmap_from_xen(words: &[u64], out: &mut Bitmap) -> u64 {
    let dst = out.words_mut();
    let n = dst.len().min(words.len());
    dst[..n].copy_from_slice(&words[..n]);
    dst[n..].fill(0);
    out.trim();
    out.count()
}

/// Bytes of hypercall buffer for a dirty bitmap of `pages` bits: whole
/// 64-bit words, whole 4 KiB pages (Xen writes whole words).
pub fn bitmap_buffer_pages(pages: u64) -> usize {
    (pages.div_ceil(64) * 8).div_ceil(4096).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_types_come_from_the_top_nibble() {
        assert_eq!(page_type(0), PageType::NOTAB);
        assert_eq!(page_type(0x1000_0000), PageType::L1TAB);
        assert_eq!(page_type(0x4000_0000), PageType::L4TAB);
        // L1 pinned = LPINTAB | L1TAB.
        let p = page_type(0x9000_0000);
        assert!(p.is_pinned() && p.pt_level() == 1);
        assert_eq!(page_type(0xF000_0000), PageType::XTAB);
        assert_eq!(page_type(0xE000_0000), PageType::XALLOC);
        assert_eq!(page_type(0xD000_0000), PageType::BROKEN);
        // Xen never sets the low bits, but they must not leak into the type.
        assert_eq!(page_type(0x1000_0fff), PageType::L1TAB);
    }

    #[test]
    fn shutdown_codes() {
        assert_eq!(shutdown_reason(2), Some(ShutdownReason::Suspend));
        assert_eq!(shutdown_reason(3), Some(ShutdownReason::Crash));
        assert_eq!(shutdown_reason(200), None);
    }

    #[test]
    fn bitmap_bits_map_to_pfns_and_the_tail_is_dropped() {
        // 100 pfns: bits 0, 63, 64, 99 and garbage at 100..127 that Xen may
        // leave in the last word.
        let words = [1u64 | 1 << 63, 1 | 1 << 35 | 0xFFFF_FFF0u64 << 32];
        let mut out = Bitmap::new(100);
        out.set(5); // stale content is overwritten
        let n = bitmap_from_xen(&words, &mut out);
        assert_eq!(out.iter_ones().collect::<Vec<_>>(), vec![0, 63, 64, 99]);
        assert_eq!(n, 4);
    }

    #[test]
    fn short_xen_bitmaps_leave_the_rest_clean() {
        let mut out = Bitmap::full(200);
        assert_eq!(bitmap_from_xen(&[0b1010], &mut out), 2);
        assert_eq!(out.iter_ones().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn buffer_sizes_round_to_pages() {
        assert_eq!(bitmap_buffer_pages(1), 1);
        assert_eq!(bitmap_buffer_pages(32768), 1); // 128 MiB guest: 4 KiB of bits
        assert_eq!(bitmap_buffer_pages(32769), 2);
        assert_eq!(bitmap_buffer_pages(0), 1);
    }
}
