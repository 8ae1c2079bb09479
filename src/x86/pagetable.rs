//! 64-bit PV page tables: 512 eight-byte entries per 4 KiB page.
//!
//! On save every present entry's machine frame is replaced by the guest's
//! pseudo-physical frame (`normalise`, Xen's `normalise_pagetable`); on
//! restore the inverse (`localise`, Xen's `localise_page`). Flag bits are
//! never touched.

use super::X86Error;
use zerocopy::little_endian::U64;
use zerocopy::FromBytes;

pub const PAGE_SIZE: usize = 4096;
pub const ENTRIES: usize = 512;
pub const ENTRY_SIZE: usize = 8;

pub const PTE_PRESENT: u64 = 1;
pub const PTE_RW: u64 = 2;
/// Page-size bit: a superpage mapping in L2/L3 (PAT in L1, hence harmless there).
pub const PTE_PSE: u64 = 1 << 7;
/// Bits 12–51 hold the frame number.
pub const PTE_FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Largest frame number a PTE can hold (40 bits).
pub const MAX_FRAME: u64 = PTE_FRAME_MASK >> 12;

/// `__HYPERVISOR_VIRT_START` of the x86_64 public header.
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// Last byte of the Xen-reserved range as libxenguest's save code uses it.
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_87FF_FFFF_FFFF;
pub const L4_SHIFT: u32 = 39;

/// Xen-owned L4 slots of a 64-bit PV guest (256..272): zeroed on save.
pub const XEN_L4_SLOTS: std::ops::Range<usize> = ((HYPERVISOR_VIRT_START >> L4_SHIFT) as usize
    & (ENTRIES - 1))
    ..((HYPERVISOR_VIRT_END >> L4_SHIFT) as usize & (ENTRIES - 1)) + 1;

/// Entry `slot` of a page table.
///
/// # Panics
/// If `page` is shorter than `(slot + 1) * 8` bytes (callers pass whole pages).
pub fn entry(page: &[u8], slot: usize) -> u64 {
    let at = slot * ENTRY_SIZE;
    U64::ref_from_bytes(&page[at..at + ENTRY_SIZE])
        .expect("8 bytes, alignment 1")
        .get()
}

/// Overwrite entry `slot` of a page table.
///
/// # Panics
/// If `page` is shorter than `(slot + 1) * 8` bytes (callers pass whole pages).
pub fn set_entry(page: &mut [u8], slot: usize, v: u64) {
    let at = slot * ENTRY_SIZE;
    U64::mut_from_bytes(&mut page[at..at + ENTRY_SIZE])
        .expect("8 bytes, alignment 1")
        .set(v)
}

/// The frame number an entry points at.
pub fn frame(pte: u64) -> u64 {
    (pte & PTE_FRAME_MASK) >> 12
}

/// `pte` with its frame replaced and every flag bit kept. Frame bits beyond
/// the 40-bit field are dropped; `normalise`/`localise` refuse such frames.
pub fn with_frame(pte: u64, frame: u64) -> u64 {
    (pte & !PTE_FRAME_MASK) | ((frame << 12) & PTE_FRAME_MASK)
}

pub fn is_present(pte: u64) -> bool {
    pte & PTE_PRESENT != 0
}

/// `(slot, frame)` of every present entry, so a restore can populate all
/// missing frames of a table in one batch before calling [`localise`].
pub fn present_frames(page: &[u8]) -> impl Iterator<Item = (usize, u64)> + '_ {
    page.chunks_exact(ENTRY_SIZE)
        .take(ENTRIES)
        .enumerate()
        .filter_map(|(slot, raw)| {
            let mut b = [0u8; ENTRY_SIZE];
            b.copy_from_slice(raw);
            let pte = u64::from_le_bytes(b);
            is_present(pte).then_some((slot, frame(pte)))
        })
}

fn check(page: &[u8], level: u8) -> Result<(), X86Error> {
    if page.len() != PAGE_SIZE {
        return Err(X86Error::BadSize {
            what: "page table",
            len: page.len(),
        });
    }
    if !(1..=4).contains(&level) {
        return Err(X86Error::BadLevel(level));
    }
    Ok(())
}

fn read_all(page: &[u8]) -> [u64; ENTRIES] {
    let mut out = [0u64; ENTRIES];
    for (slot, v) in out.iter_mut().enumerate() {
        *v = entry(page, slot);
    }
    out
}

fn write_all(page: &mut [u8], entries: &[u64; ENTRIES]) {
    for (slot, v) in entries.iter().enumerate() {
        set_entry(page, slot, *v);
    }
}

/// Save side (normalise_pagetable): zero Xen slots (L4), then each present
/// entry's frame mfn→pfn.
///
/// `mfn_to_pfn` returns None for an mfn outside the guest (→
/// [`X86Error::UnknownFrame`]: the engine defers the page while the guest
/// runs, fails when paused). PSE in L2+ → [`X86Error::Superpage`].
/// Non-present entries are unchanged. On error `page` is left untouched.
pub fn normalise(
    page: &mut [u8],
    level: u8,
    mfn_to_pfn: impl Fn(u64) -> Option<u64>,
) -> Result<(), X86Error> {
    check(page, level)?;
    let mut entries = read_all(page);
    for (slot, pte) in entries.iter_mut().enumerate() {
        // Xen rebuilds its own mappings when the table is pinned on restore.
        if level == 4 && XEN_L4_SLOTS.contains(&slot) {
            *pte = 0;
        }
        if !is_present(*pte) {
            continue;
        }
        if level > 1 && *pte & PTE_PSE != 0 {
            return Err(X86Error::Superpage { slot });
        }
        let mfn = frame(*pte);
        let pfn = mfn_to_pfn(mfn).ok_or(X86Error::UnknownFrame { slot, frame: mfn })?;
        if pfn > MAX_FRAME {
            return Err(X86Error::FrameTooWide { slot, frame: pfn });
        }
        *pte = with_frame(*pte, pfn);
    }
    write_all(page, &entries);
    Ok(())
}

/// Restore side (localise_page): each present entry's frame pfn→mfn through
/// the closure (which may populate the pfn first).
///
/// An [`X86Error::UnknownFrame`] from the closure is reported with the
/// entry's slot and pfn filled in; other closure errors pass through. On
/// error `page` is left untouched (frames the closure populated stay).
pub fn localise(
    page: &mut [u8],
    level: u8,
    mut pfn_to_mfn: impl FnMut(u64) -> Result<u64, X86Error>,
) -> Result<(), X86Error> {
    check(page, level)?;
    let mut entries = read_all(page);
    for (slot, pte) in entries.iter_mut().enumerate() {
        if !is_present(*pte) {
            continue;
        }
        let pfn = frame(*pte);
        let mfn = pfn_to_mfn(pfn).map_err(|e| match e {
            X86Error::UnknownFrame { .. } => X86Error::UnknownFrame { slot, frame: pfn },
            other => other,
        })?;
        if mfn > MAX_FRAME {
            return Err(X86Error::FrameTooWide { slot, frame: mfn });
        }
        *pte = with_frame(*pte, mfn);
    }
    write_all(page, &entries);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn page_with(entries: &[(usize, u64)]) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE];
        for &(slot, v) in entries {
            set_entry(&mut p, slot, v);
        }
        p
    }

    #[test]
    fn xen_slots_match_hypervisor_range() {
        assert_eq!(XEN_L4_SLOTS, 256..272);
    }

    #[test]
    fn frame_and_flags_are_separate() {
        let pte = 0x8000_0000_0000_0067 | (0x12_3456_789a << 12);
        assert_eq!(frame(pte), 0x12_3456_789a);
        let moved = with_frame(pte, 0x42);
        assert_eq!(frame(moved), 0x42);
        assert_eq!(moved & !PTE_FRAME_MASK, pte & !PTE_FRAME_MASK);
    }

    #[test]
    fn l4_xen_slots_are_zeroed_and_not_translated() {
        let present = PTE_PRESENT | PTE_RW | (7 << 12);
        let mut p = page_with(&[(0, present), (256, present), (271, present), (272, present)]);
        // Only frame 7 is known: Xen slots must be zeroed before lookup.
        normalise(&mut p, 4, |m| (m == 7).then_some(3)).unwrap();
        assert_eq!(entry(&p, 0), PTE_PRESENT | PTE_RW | (3 << 12));
        assert_eq!(entry(&p, 256), 0);
        assert_eq!(entry(&p, 271), 0);
        assert_eq!(entry(&p, 272), PTE_PRESENT | PTE_RW | (3 << 12));
    }

    #[test]
    fn xen_slots_kept_below_l4() {
        let present = PTE_PRESENT | (7 << 12);
        for level in 1..=3 {
            let mut p = page_with(&[(260, present)]);
            normalise(&mut p, level, |_| Some(9)).unwrap();
            assert_eq!(entry(&p, 260), PTE_PRESENT | (9 << 12), "level {level}");
        }
    }

    #[test]
    fn superpage_refused_in_l2_and_up_but_pat_fine_in_l1() {
        let pse = PTE_PRESENT | PTE_PSE | (5 << 12);
        for level in 2..=4 {
            let mut p = page_with(&[(17, pse)]);
            let before = p.clone();
            match normalise(&mut p, level, |_| Some(1)) {
                Err(X86Error::Superpage { slot: 17 }) => {}
                other => panic!("level {level}: {other:?}"),
            }
            assert_eq!(p, before, "page must be untouched on error");
        }
        let mut p = page_with(&[(17, pse)]);
        normalise(&mut p, 1, |_| Some(1)).unwrap();
        assert_eq!(entry(&p, 17), PTE_PRESENT | PTE_PSE | (1 << 12));
        // A non-present PSE entry is just data.
        let mut p = page_with(&[(3, PTE_PSE | (5 << 12))]);
        normalise(&mut p, 2, |_| None).unwrap();
        assert_eq!(entry(&p, 3), PTE_PSE | (5 << 12));
    }

    #[test]
    fn unknown_frame_reports_slot_and_leaves_page() {
        let mut p = page_with(&[
            (1, PTE_PRESENT | (10 << 12)),
            (99, PTE_PRESENT | (11 << 12)),
        ]);
        let before = p.clone();
        match normalise(&mut p, 1, |m| (m == 10).then_some(0)) {
            Err(X86Error::UnknownFrame {
                slot: 99,
                frame: 11,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(p, before);
    }

    #[test]
    fn localise_fills_in_slot_of_closure_error() {
        let mut p = page_with(&[(40, PTE_PRESENT | (6 << 12))]);
        let r = localise(&mut p, 2, |_| {
            Err(X86Error::UnknownFrame { slot: 0, frame: 0 })
        });
        match r {
            Err(X86Error::UnknownFrame { slot: 40, frame: 6 }) => {}
            other => panic!("{other:?}"),
        }
        let r = localise(&mut p, 2, |_| Err(X86Error::NotSupported("x")));
        assert!(matches!(r, Err(X86Error::NotSupported("x"))));
    }

    #[test]
    fn too_wide_frames_refused() {
        let mut p = page_with(&[(2, PTE_PRESENT)]);
        assert!(matches!(
            normalise(&mut p, 1, |_| Some(MAX_FRAME + 1)),
            Err(X86Error::FrameTooWide { slot: 2, .. })
        ));
        assert!(matches!(
            localise(&mut p, 1, |_| Ok(1 << 41)),
            Err(X86Error::FrameTooWide { slot: 2, .. })
        ));
    }

    #[test]
    fn bad_size_and_level() {
        let mut short = vec![0u8; 4095];
        assert!(matches!(
            normalise(&mut short, 1, Some),
            Err(X86Error::BadSize { len: 4095, .. })
        ));
        assert!(matches!(
            localise(&mut short, 1, Ok),
            Err(X86Error::BadSize { .. })
        ));
        let mut p = vec![0u8; PAGE_SIZE];
        assert!(matches!(
            normalise(&mut p, 0, Some),
            Err(X86Error::BadLevel(0))
        ));
        assert!(matches!(
            localise(&mut p, 5, Ok),
            Err(X86Error::BadLevel(5))
        ));
    }

    #[test]
    fn present_frames_lists_present_entries() {
        let p = page_with(&[
            (0, PTE_PRESENT | (1 << 12)),
            (5, 2 << 12),
            (511, PTE_PRESENT | (3 << 12)),
        ]);
        let got: Vec<_> = present_frames(&p).collect();
        assert_eq!(got, vec![(0, 1), (511, 3)]);
    }

    /// A guest with `n` frames: pfn i lives at mfns[i] (distinct, arbitrary).
    fn guest() -> impl Strategy<Value = Vec<u64>> {
        (1usize..64).prop_flat_map(|n| {
            proptest::collection::hash_set(0u64..=MAX_FRAME, n)
                .prop_map(|s| s.into_iter().collect::<Vec<_>>())
        })
    }

    proptest! {
        #[test]
        fn normalise_then_localise_round_trips(
            mfns in guest(),
            level in 1u8..=4,
            raw in proptest::collection::vec((any::<bool>(), any::<u64>(), any::<usize>()), ENTRIES),
        ) {
            let m2p: HashMap<u64, u64> = mfns.iter().enumerate().map(|(p, &m)| (m, p as u64)).collect();
            let mut page = vec![0u8; PAGE_SIZE];
            for (slot, &(present, flags, pick)) in raw.iter().enumerate() {
                let mut pte = flags & !PTE_FRAME_MASK;
                if level > 1 { pte &= !PTE_PSE; }
                if level == 4 && XEN_L4_SLOTS.contains(&slot) {
                    pte = 0;
                } else if present {
                    pte = with_frame(pte | PTE_PRESENT, mfns[pick % mfns.len()]);
                } else {
                    // Non-present entries keep arbitrary bits, frame included.
                    pte = flags & !PTE_PRESENT;
                }
                set_entry(&mut page, slot, pte);
            }
            let original = page.clone();

            normalise(&mut page, level, |m| m2p.get(&m).copied()).unwrap();
            for slot in 0..ENTRIES {
                let (before, after) = (entry(&original, slot), entry(&page, slot));
                if is_present(before) {
                    prop_assert_eq!(frame(after), m2p[&frame(before)]);
                    prop_assert_eq!(after & !PTE_FRAME_MASK, before & !PTE_FRAME_MASK);
                } else {
                    prop_assert_eq!(after, before);
                }
            }

            let mut calls = 0usize;
            localise(&mut page, level, |p| {
                calls += 1;
                mfns.get(p as usize).copied().ok_or(X86Error::UnknownFrame { slot: 0, frame: p })
            }).unwrap();
            prop_assert_eq!(calls, present_frames(&original).count());
            prop_assert_eq!(page, original);
        }
    }
}
