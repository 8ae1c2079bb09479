//! The frame rewrites of a vCPU context: `write_one_vcpu_basic`'s
//! normalisation on save (machine frames to pfns) and `process_vcpu_basic`'s
//! localisation on restore (docs/REFERENCE.md §9.4).

use super::view::{check_size, Context64Mut, Reg};
use super::{FIRST_RESERVED_GDT_ENTRY, GDT_ENTRIES_PER_FRAME, VGCF_ONLINE};
use crate::x86::pagetable::MAX_FRAME;
use crate::x86::X86Error;

/// Number of GDT frames in use, after Xen's range check on `gdt_ents`.
fn gdt_frame_count(ctx: &Context64Mut<'_>, vcpu: u32) -> Result<usize, X86Error> {
    let ents = ctx.gdt_ents();
    if ents > FIRST_RESERVED_GDT_ENTRY {
        return Err(X86Error::GdtEntries {
            vcpu,
            ents,
            max: FIRST_RESERVED_GDT_ENTRY,
        });
    }
    // At most 14, so the cast and the later gdt_frame(i) are in range.
    Ok(ents.div_ceil(GDT_ENTRIES_PER_FRAME) as usize)
}

/// Translate one frame, refusing anything that cannot be stored back.
fn xlate(
    f: &impl Fn(u64) -> Option<u64>,
    vcpu: u32,
    what: &'static str,
    frame: u64,
) -> Result<u64, X86Error> {
    f(frame)
        .filter(|&t| t <= MAX_FRAME)
        .ok_or(X86Error::VcpuFrame { vcpu, what, frame })
}

/// Runs `rewrite` on a scratch copy and commits it only on success, so a
/// failed translation leaves the caller's blob as it was.
fn transactional(
    blob: &mut [u8],
    rewrite: impl FnOnce(&mut Context64Mut<'_>) -> Result<(), X86Error>,
) -> Result<(), X86Error> {
    check_size(blob.len())?;
    let mut work = blob.to_vec();
    rewrite(&mut Context64Mut::new(&mut work)?)?;
    blob.copy_from_slice(&work);
    Ok(())
}

/// write_one_vcpu_basic's normalisation: vCPU0's rdx (start_info mfn),
/// gdt_frames[0..ceil(gdt_ents/512)], cr3 (frame form), cr1 user page table
/// (64-bit: stored as (pfn<<12)|1 when non-zero).
///
/// Low bits of cr3/cr1 beyond the frame are dropped, as Xen does. On error
/// the blob is unchanged.
pub fn normalise_basic(
    blob: &mut [u8],
    vcpu_id: u32,
    mfn_to_pfn: impl Fn(u64) -> Option<u64>,
) -> Result<(), X86Error> {
    transactional(blob, |ctx| {
        if vcpu_id == 0 {
            let pfn = xlate(&mfn_to_pfn, vcpu_id, "start info", ctx.reg(Reg::Rdx))?;
            ctx.set_reg(Reg::Rdx, pfn);
        }
        for i in 0..gdt_frame_count(ctx, vcpu_id)? {
            let pfn = xlate(&mfn_to_pfn, vcpu_id, "GDT", ctx.gdt_frame(i))?;
            ctx.set_gdt_frame(i, pfn);
        }
        let pfn = xlate(&mfn_to_pfn, vcpu_id, "cr3", ctx.cr3_frame())?;
        ctx.set_cr3_frame(pfn);
        let cr1 = ctx.ctrlreg(1);
        if cr1 != 0 {
            let pfn = xlate(&mfn_to_pfn, vcpu_id, "cr1", cr1 >> 12)?;
            // Bit 0 tells the restorer the slot holds a valid frame.
            ctx.set_ctrlreg(1, (pfn << 12) | 1);
        }
        Ok(())
    })
}

/// The inverse for restore (process_vcpu_basic); also sets VGCF_ONLINE.
///
/// cr1 is translated only when bit 0 ("valid") is set and is stored back as
/// `mfn << 12`. Page-type checks (start info and GDT must be NOTAB, cr3/cr1
/// L4) are the engine's: it knows the types. On error the blob is unchanged.
pub fn localise_basic(
    blob: &mut [u8],
    vcpu_id: u32,
    pfn_to_mfn: impl Fn(u64) -> Option<u64>,
) -> Result<(), X86Error> {
    transactional(blob, |ctx| {
        if vcpu_id == 0 {
            let mfn = xlate(&pfn_to_mfn, vcpu_id, "start info", ctx.reg(Reg::Rdx))?;
            ctx.set_reg(Reg::Rdx, mfn);
        }
        let flags = ctx.flags();
        ctx.set_flags(flags | VGCF_ONLINE);
        for i in 0..gdt_frame_count(ctx, vcpu_id)? {
            let mfn = xlate(&pfn_to_mfn, vcpu_id, "GDT", ctx.gdt_frame(i))?;
            ctx.set_gdt_frame(i, mfn);
        }
        let mfn = xlate(&pfn_to_mfn, vcpu_id, "cr3", ctx.cr3_frame())?;
        ctx.set_cr3_frame(mfn);
        let cr1 = ctx.ctrlreg(1);
        if cr1 & 1 != 0 {
            let mfn = xlate(&pfn_to_mfn, vcpu_id, "cr1", cr1 >> 12)?;
            ctx.set_ctrlreg(1, mfn << 12);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::layout::{CONTEXT_SIZE_64, GDT_FRAMES_COUNT};
    use super::super::view::Context64;
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn thirty_two_bit_contexts_are_refused() {
        let mut b32 = vec![0u8; super::super::CONTEXT_SIZE_32];
        assert!(matches!(
            normalise_basic(&mut b32, 0, Some),
            Err(X86Error::NotSupported(_))
        ));
        assert!(matches!(
            localise_basic(&mut b32, 0, Some),
            Err(X86Error::NotSupported(_))
        ));
    }

    fn context(rdx: u64, gdt: &[u64], gdt_ents: u64, cr3: u64, cr1: u64) -> Vec<u8> {
        let mut blob = vec![0u8; CONTEXT_SIZE_64];
        let mut c = Context64Mut::new(&mut blob).unwrap();
        c.set_reg(Reg::Rdx, rdx);
        for (i, f) in gdt.iter().enumerate() {
            c.set_gdt_frame(i, *f);
        }
        c.set_gdt_ents(gdt_ents);
        c.set_ctrlreg(3, cr3);
        c.set_ctrlreg(1, cr1);
        blob
    }

    #[test]
    fn normalise_basic_rewrites_exactly_the_frames() {
        // mfn = pfn + 100
        let m2p = |m: u64| m.checked_sub(100);
        // 513 entries → two GDT frames; the third frame slot is not in use.
        let mut blob = context(105, &[110, 111, 999], 513, 120 << 12, 130 << 12);
        normalise_basic(&mut blob, 0, m2p).unwrap();
        let c = Context64::new(&blob).unwrap();
        assert_eq!(c.reg(Reg::Rdx), 5);
        assert_eq!(
            (c.gdt_frame(0), c.gdt_frame(1), c.gdt_frame(2)),
            (10, 11, 999)
        );
        assert_eq!(c.cr3(), 20 << 12);
        assert_eq!(c.ctrlreg(1), (30 << 12) | 1);
        assert_eq!(c.flags() & VGCF_ONLINE, 0);

        // Other vCPUs keep rdx; a zero cr1 stays zero.
        let mut blob = context(105, &[], 0, 120 << 12, 0);
        normalise_basic(&mut blob, 1, m2p).unwrap();
        let c = Context64::new(&blob).unwrap();
        assert_eq!(c.reg(Reg::Rdx), 105);
        assert_eq!(c.ctrlreg(1), 0);
        assert_eq!(c.cr3(), 20 << 12);
    }

    #[test]
    fn localise_basic_sets_online_and_honours_cr1_valid_bit() {
        let p2m = |p: u64| Some(p + 100);
        let mut blob = context(5, &[10], 1, 20 << 12, 30 << 12);
        localise_basic(&mut blob, 0, p2m).unwrap();
        let c = Context64::new(&blob).unwrap();
        assert_eq!(c.flags() & VGCF_ONLINE, VGCF_ONLINE);
        assert_eq!(c.reg(Reg::Rdx), 105);
        assert_eq!(c.gdt_frame(0), 110);
        assert_eq!(c.cr3(), 120 << 12);
        // Bit 0 clear: not a frame, left alone.
        assert_eq!(c.ctrlreg(1), 30 << 12);
    }

    #[test]
    fn errors_name_the_frame_and_leave_blob() {
        let mut blob = context(105, &[110], 1, 120 << 12, 0);
        let before = blob.clone();
        let r = normalise_basic(&mut blob, 0, |m| (m != 120).then_some(m - 100));
        match r {
            Err(X86Error::VcpuFrame {
                vcpu: 0,
                what: "cr3",
                frame: 120,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(blob, before);

        let mut blob = context(0, &[], FIRST_RESERVED_GDT_ENTRY + 1, 0, 0);
        assert!(matches!(
            normalise_basic(&mut blob, 3, Some),
            Err(X86Error::GdtEntries { vcpu: 3, .. })
        ));
        assert!(matches!(
            localise_basic(&mut blob, 3, Some),
            Err(X86Error::GdtEntries { vcpu: 3, .. })
        ));
        let mut blob = context(0, &[], 0, 0, 0);
        assert!(matches!(
            localise_basic(&mut blob, 0, |p| (p != 0).then_some(p)),
            Err(X86Error::VcpuFrame {
                what: "start info",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn basic_round_trip(
            pfns in proptest::collection::vec(0u64..1 << 20, 19),
            offset in 1u64..1 << 30,
            gdt_ents in 0u64..=FIRST_RESERVED_GDT_ENTRY,
            vcpu in 0u32..4,
            has_cr1 in any::<bool>(),
            regs in proptest::collection::vec(any::<u64>(), 18),
        ) {
            // A bijection mfn = pfn ^ offset-scrambled: pfn + offset.
            let p2m: HashMap<u64, u64> = pfns.iter().map(|&p| (p, p + offset)).collect();
            let m2p: HashMap<u64, u64> = p2m.iter().map(|(&p, &m)| (m, p)).collect();
            let mut blob = vec![0u8; CONTEXT_SIZE_64];
            let mut c = Context64Mut::new(&mut blob).unwrap();
            for (r, v) in Reg::ALL.iter().zip(&regs) {
                c.set_reg(*r, *v);
            }
            if vcpu == 0 {
                c.set_reg(Reg::Rdx, pfns[0] + offset);
            }
            c.set_gdt_ents(gdt_ents);
            for i in 0..GDT_FRAMES_COUNT {
                c.set_gdt_frame(i, pfns[1 + i] + offset);
            }
            c.set_cr3_frame(pfns[17] + offset);
            c.set_ctrlreg(1, if has_cr1 { (pfns[18] + offset) << 12 } else { 0 });
            let original = blob.clone();

            normalise_basic(&mut blob, vcpu, |m| m2p.get(&m).copied()).unwrap();
            let c = Context64::new(&blob).unwrap();
            let used = gdt_ents.div_ceil(512) as usize;
            for i in 0..GDT_FRAMES_COUNT {
                let want = if i < used { pfns[1 + i] } else { pfns[1 + i] + offset };
                prop_assert_eq!(c.gdt_frame(i), want);
            }
            prop_assert_eq!(c.cr3_frame(), pfns[17]);

            localise_basic(&mut blob, vcpu, |p| p2m.get(&p).copied()).unwrap();
            let mut expect = original;
            Context64Mut::new(&mut expect).unwrap().set_flags(VGCF_ONLINE);
            prop_assert_eq!(blob, expect);
        }
    }
}
