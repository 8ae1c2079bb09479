//! `struct vcpu_guest_context` (public/arch-x86/xen.h), x86_64 layout: the
//! blob of an X86_PV_VCPU_BASIC record (docs/REFERENCE.md §5.5), and the frame
//! rewrites of `write_one_vcpu_basic` / `process_vcpu_basic` (§5.7).
//!
//! Offsets are those of the Xen 4.17 public headers as compiled for x86_64;
//! the tests check them against a `repr(C)` mirror of the C structures.

use super::le::{set_u16_at, set_u32_at, set_u64_at, u16_at, u32_at, u64_at};
use super::pagetable::MAX_FRAME;
use super::X86Error;

/// `sizeof(vcpu_guest_context)` for a 64-bit guest.
pub const CONTEXT_SIZE_64: usize = 5168;
/// `sizeof(vcpu_guest_context)` for a 32-bit guest (not supported here).
pub const CONTEXT_SIZE_32: usize = 2800;

pub const FPU_CTXT: usize = 0;
pub const FPU_CTXT_SIZE: usize = 512;
pub const FLAGS: usize = 512;

/// `struct cpu_user_regs` (public/arch-x86/xen-x86_64.h).
pub const USER_REGS: usize = 520;
pub const USER_REGS_SIZE: usize = 200;
pub const R15: usize = USER_REGS;
pub const R14: usize = USER_REGS + 8;
pub const R13: usize = USER_REGS + 16;
pub const R12: usize = USER_REGS + 24;
pub const RBP: usize = USER_REGS + 32;
pub const RBX: usize = USER_REGS + 40;
pub const R11: usize = USER_REGS + 48;
pub const R10: usize = USER_REGS + 56;
pub const R9: usize = USER_REGS + 64;
pub const R8: usize = USER_REGS + 72;
pub const RAX: usize = USER_REGS + 80;
pub const RCX: usize = USER_REGS + 88;
pub const RDX: usize = USER_REGS + 96;
pub const RSI: usize = USER_REGS + 104;
pub const RDI: usize = USER_REGS + 112;
/// u32, Xen-private.
pub const ERROR_CODE: usize = USER_REGS + 120;
/// u32, Xen-private.
pub const ENTRY_VECTOR: usize = USER_REGS + 124;
pub const RIP: usize = USER_REGS + 128;
/// u16 selectors; each padded to 8 bytes.
pub const CS: usize = USER_REGS + 136;
/// u8.
pub const SAVED_UPCALL_MASK: usize = USER_REGS + 140;
pub const RFLAGS: usize = USER_REGS + 144;
pub const RSP: usize = USER_REGS + 152;
pub const SS: usize = USER_REGS + 160;
pub const ES: usize = USER_REGS + 168;
pub const DS: usize = USER_REGS + 176;
pub const FS: usize = USER_REGS + 184;
pub const GS: usize = USER_REGS + 192;

/// `struct trap_info trap_ctxt[256]`, 16 bytes each.
pub const TRAP_CTXT: usize = 720;
pub const TRAP_INFO_SIZE: usize = 16;
pub const TRAP_CTXT_ENTRIES: usize = 256;
pub const LDT_BASE: usize = 4816;
pub const LDT_ENTS: usize = 4824;
/// `gdt_frames[16]`, machine frames (pfns in the stream).
pub const GDT_FRAMES: usize = 4832;
pub const GDT_FRAMES_COUNT: usize = 16;
pub const GDT_ENTS: usize = 4960;
pub const KERNEL_SS: usize = 4968;
pub const KERNEL_SP: usize = 4976;
/// `ctrlreg[8]`; ctrlreg[1] holds a 64-bit guest's user page table.
pub const CTRLREG: usize = 4984;
pub const DEBUGREG: usize = 5048;
pub const EVENT_CALLBACK_EIP: usize = 5112;
pub const FAILSAFE_CALLBACK_EIP: usize = 5120;
pub const SYSCALL_CALLBACK_EIP: usize = 5128;
pub const VM_ASSIST: usize = 5136;
pub const FS_BASE: usize = 5144;
pub const GS_BASE_KERNEL: usize = 5152;
pub const GS_BASE_USER: usize = 5160;

pub const VGCF_I387_VALID: u64 = 1 << 0;
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// Flag set on restore before `setvcpucontext`.
pub const VGCF_ONLINE: u64 = 1 << 5;

/// `FIRST_RESERVED_GDT_ENTRY`: 14 pages of 512 descriptors belong to the guest.
pub const FIRST_RESERVED_GDT_ENTRY: u64 = 14 * 4096 / 8;
pub const GDT_ENTRIES_PER_FRAME: u64 = 512;

/// General-purpose registers of `cpu_user_regs` (64-bit wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reg {
    Rax,
    Rbx,
    Rcx,
    Rdx,
    Rsi,
    Rdi,
    Rbp,
    Rsp,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
    Rip,
    Rflags,
}

impl Reg {
    pub const ALL: [Reg; 18] = [
        Reg::Rax,
        Reg::Rbx,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rsi,
        Reg::Rdi,
        Reg::Rbp,
        Reg::Rsp,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
        Reg::Rip,
        Reg::Rflags,
    ];

    /// Byte offset within the context blob.
    pub fn offset(self) -> usize {
        match self {
            Reg::Rax => RAX,
            Reg::Rbx => RBX,
            Reg::Rcx => RCX,
            Reg::Rdx => RDX,
            Reg::Rsi => RSI,
            Reg::Rdi => RDI,
            Reg::Rbp => RBP,
            Reg::Rsp => RSP,
            Reg::R8 => R8,
            Reg::R9 => R9,
            Reg::R10 => R10,
            Reg::R11 => R11,
            Reg::R12 => R12,
            Reg::R13 => R13,
            Reg::R14 => R14,
            Reg::R15 => R15,
            Reg::Rip => RIP,
            Reg::Rflags => RFLAGS,
        }
    }
}

/// Segment selectors of `cpu_user_regs` (16-bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seg {
    Cs,
    Ss,
    Es,
    Ds,
    Fs,
    Gs,
}

impl Seg {
    pub fn offset(self) -> usize {
        match self {
            Seg::Cs => CS,
            Seg::Ss => SS,
            Seg::Es => ES,
            Seg::Ds => DS,
            Seg::Fs => FS,
            Seg::Gs => GS,
        }
    }
}

fn check_size(len: usize) -> Result<(), X86Error> {
    match len {
        CONTEXT_SIZE_64 => Ok(()),
        CONTEXT_SIZE_32 => Err(X86Error::NotSupported("32-bit PV vCPU context")),
        _ => Err(X86Error::BadSize {
            what: "vcpu_guest_context",
            len,
        }),
    }
}

/// Read accessors shared by both views. Index arguments (`ctrlreg(i)`,
/// `gdt_frame(i)`, …) are the caller's constants: out of range panics.
macro_rules! getters {
    () => {
        pub fn reg(&self, r: Reg) -> u64 {
            u64_at(self.bytes(), r.offset())
        }
        pub fn seg(&self, s: Seg) -> u16 {
            u16_at(self.bytes(), s.offset())
        }
        pub fn saved_upcall_mask(&self) -> u8 {
            self.bytes()[SAVED_UPCALL_MASK]
        }
        pub fn error_code(&self) -> u32 {
            u32_at(self.bytes(), ERROR_CODE)
        }
        pub fn entry_vector(&self) -> u32 {
            u32_at(self.bytes(), ENTRY_VECTOR)
        }
        pub fn flags(&self) -> u64 {
            u64_at(self.bytes(), FLAGS)
        }
        pub fn fpu_ctxt(&self) -> &[u8] {
            &self.bytes()[FPU_CTXT..FPU_CTXT + FPU_CTXT_SIZE]
        }
        /// Raw `ctrlreg[3]` (frame << 12 for 64-bit guests).
        pub fn cr3(&self) -> u64 {
            self.ctrlreg(3)
        }
        /// The frame `ctrlreg[3]` points at.
        pub fn cr3_frame(&self) -> u64 {
            self.cr3() >> 12
        }
        pub fn ctrlreg(&self, i: usize) -> u64 {
            assert!(i < 8, "ctrlreg index {i}");
            u64_at(self.bytes(), CTRLREG + 8 * i)
        }
        pub fn debugreg(&self, i: usize) -> u64 {
            assert!(i < 8, "debugreg index {i}");
            u64_at(self.bytes(), DEBUGREG + 8 * i)
        }
        pub fn gdt_ents(&self) -> u64 {
            u64_at(self.bytes(), GDT_ENTS)
        }
        pub fn gdt_frame(&self, i: usize) -> u64 {
            assert!(i < GDT_FRAMES_COUNT, "gdt frame index {i}");
            u64_at(self.bytes(), GDT_FRAMES + 8 * i)
        }
        pub fn ldt_base(&self) -> u64 {
            u64_at(self.bytes(), LDT_BASE)
        }
        pub fn ldt_ents(&self) -> u64 {
            u64_at(self.bytes(), LDT_ENTS)
        }
        pub fn kernel_ss(&self) -> u64 {
            u64_at(self.bytes(), KERNEL_SS)
        }
        pub fn kernel_sp(&self) -> u64 {
            u64_at(self.bytes(), KERNEL_SP)
        }
        pub fn event_callback_eip(&self) -> u64 {
            u64_at(self.bytes(), EVENT_CALLBACK_EIP)
        }
        pub fn failsafe_callback_eip(&self) -> u64 {
            u64_at(self.bytes(), FAILSAFE_CALLBACK_EIP)
        }
        pub fn syscall_callback_eip(&self) -> u64 {
            u64_at(self.bytes(), SYSCALL_CALLBACK_EIP)
        }
        pub fn vm_assist(&self) -> u64 {
            u64_at(self.bytes(), VM_ASSIST)
        }
        pub fn fs_base(&self) -> u64 {
            u64_at(self.bytes(), FS_BASE)
        }
        pub fn gs_base_kernel(&self) -> u64 {
            u64_at(self.bytes(), GS_BASE_KERNEL)
        }
        pub fn gs_base_user(&self) -> u64 {
            u64_at(self.bytes(), GS_BASE_USER)
        }
    };
}

/// A checked read-only view over a 5168-byte x86_64 `vcpu_guest_context`.
#[derive(Debug, Clone, Copy)]
pub struct Context64<'a> {
    blob: &'a [u8],
}

impl<'a> Context64<'a> {
    /// Fails with `NotSupported` for a 32-bit (2800-byte) context and
    /// `BadSize` for any other length.
    pub fn new(blob: &'a [u8]) -> Result<Self, X86Error> {
        check_size(blob.len())?;
        Ok(Context64 { blob })
    }
    fn bytes(&self) -> &[u8] {
        self.blob
    }
    getters!();
}

/// A checked read-write view over a 5168-byte x86_64 `vcpu_guest_context`.
#[derive(Debug)]
pub struct Context64Mut<'a> {
    blob: &'a mut [u8],
}

impl<'a> Context64Mut<'a> {
    pub fn new(blob: &'a mut [u8]) -> Result<Self, X86Error> {
        check_size(blob.len())?;
        Ok(Context64Mut { blob })
    }
    fn bytes(&self) -> &[u8] {
        self.blob
    }
    getters!();

    pub fn as_view(&self) -> Context64<'_> {
        Context64 { blob: self.blob }
    }
    pub fn set_reg(&mut self, r: Reg, v: u64) {
        set_u64_at(self.blob, r.offset(), v)
    }
    pub fn set_seg(&mut self, s: Seg, v: u16) {
        set_u16_at(self.blob, s.offset(), v)
    }
    pub fn set_saved_upcall_mask(&mut self, v: u8) {
        self.blob[SAVED_UPCALL_MASK] = v;
    }
    pub fn set_error_code(&mut self, v: u32) {
        set_u32_at(self.blob, ERROR_CODE, v)
    }
    pub fn set_entry_vector(&mut self, v: u32) {
        set_u32_at(self.blob, ENTRY_VECTOR, v)
    }
    pub fn set_flags(&mut self, v: u64) {
        set_u64_at(self.blob, FLAGS, v)
    }
    pub fn fpu_ctxt_mut(&mut self) -> &mut [u8] {
        &mut self.blob[FPU_CTXT..FPU_CTXT + FPU_CTXT_SIZE]
    }
    pub fn set_cr3(&mut self, v: u64) {
        self.set_ctrlreg(3, v)
    }
    /// cr3 in the 64-bit encoding, `frame << 12`.
    pub fn set_cr3_frame(&mut self, frame: u64) {
        self.set_ctrlreg(3, frame << 12)
    }
    pub fn set_ctrlreg(&mut self, i: usize, v: u64) {
        assert!(i < 8, "ctrlreg index {i}");
        set_u64_at(self.blob, CTRLREG + 8 * i, v)
    }
    pub fn set_debugreg(&mut self, i: usize, v: u64) {
        assert!(i < 8, "debugreg index {i}");
        set_u64_at(self.blob, DEBUGREG + 8 * i, v)
    }
    pub fn set_gdt_ents(&mut self, v: u64) {
        set_u64_at(self.blob, GDT_ENTS, v)
    }
    pub fn set_gdt_frame(&mut self, i: usize, v: u64) {
        assert!(i < GDT_FRAMES_COUNT, "gdt frame index {i}");
        set_u64_at(self.blob, GDT_FRAMES + 8 * i, v)
    }
    pub fn set_ldt_base(&mut self, v: u64) {
        set_u64_at(self.blob, LDT_BASE, v)
    }
    pub fn set_ldt_ents(&mut self, v: u64) {
        set_u64_at(self.blob, LDT_ENTS, v)
    }
    pub fn set_kernel_ss(&mut self, v: u64) {
        set_u64_at(self.blob, KERNEL_SS, v)
    }
    pub fn set_kernel_sp(&mut self, v: u64) {
        set_u64_at(self.blob, KERNEL_SP, v)
    }
    pub fn set_event_callback_eip(&mut self, v: u64) {
        set_u64_at(self.blob, EVENT_CALLBACK_EIP, v)
    }
    pub fn set_failsafe_callback_eip(&mut self, v: u64) {
        set_u64_at(self.blob, FAILSAFE_CALLBACK_EIP, v)
    }
    pub fn set_syscall_callback_eip(&mut self, v: u64) {
        set_u64_at(self.blob, SYSCALL_CALLBACK_EIP, v)
    }
    pub fn set_vm_assist(&mut self, v: u64) {
        set_u64_at(self.blob, VM_ASSIST, v)
    }
    pub fn set_fs_base(&mut self, v: u64) {
        set_u64_at(self.blob, FS_BASE, v)
    }
    pub fn set_gs_base_kernel(&mut self, v: u64) {
        set_u64_at(self.blob, GS_BASE_KERNEL, v)
    }
    pub fn set_gs_base_user(&mut self, v: u64) {
        set_u64_at(self.blob, GS_BASE_USER, v)
    }
}

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
        ctx.set_flags(ctx.flags() | VGCF_ONLINE);
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
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::mem::{offset_of, size_of};

    /// repr(C) mirrors of the x86_64 public headers; the compiler lays them
    /// out as a C compiler would, which checks the hand-written offsets.
    #[repr(C)]
    struct CpuUserRegs64 {
        r15: u64,
        r14: u64,
        r13: u64,
        r12: u64,
        rbp: u64,
        rbx: u64,
        r11: u64,
        r10: u64,
        r9: u64,
        r8: u64,
        rax: u64,
        rcx: u64,
        rdx: u64,
        rsi: u64,
        rdi: u64,
        error_code: u32,
        entry_vector: u32,
        rip: u64,
        cs: u16,
        _pad0: [u16; 1],
        saved_upcall_mask: u8,
        _pad1: [u8; 3],
        rflags: u64,
        rsp: u64,
        ss: u16,
        _pad2: [u16; 3],
        es: u16,
        _pad3: [u16; 3],
        ds: u16,
        _pad4: [u16; 3],
        fs: u16,
        _pad5: [u16; 3],
        gs: u16,
        _pad6: [u16; 3],
    }

    #[repr(C)]
    struct TrapInfo64 {
        vector: u8,
        flags: u8,
        cs: u16,
        address: u64,
    }

    #[repr(C)]
    struct VcpuGuestContext64 {
        fpu_ctxt: [u8; 512],
        flags: u64,
        user_regs: CpuUserRegs64,
        trap_ctxt: [TrapInfo64; 256],
        ldt_base: u64,
        ldt_ents: u64,
        gdt_frames: [u64; 16],
        gdt_ents: u64,
        kernel_ss: u64,
        kernel_sp: u64,
        ctrlreg: [u64; 8],
        debugreg: [u64; 8],
        event_callback_eip: u64,
        failsafe_callback_eip: u64,
        syscall_callback_eip: u64,
        vm_assist: u64,
        fs_base: u64,
        gs_base_kernel: u64,
        gs_base_user: u64,
    }

    /// x86_32 layout: every `unsigned long` is 4 bytes.
    #[repr(C)]
    struct CpuUserRegs32 {
        ebx: u32,
        ecx: u32,
        edx: u32,
        esi: u32,
        edi: u32,
        ebp: u32,
        eax: u32,
        error_code: u16,
        entry_vector: u16,
        eip: u32,
        cs: u16,
        saved_upcall_mask: u8,
        _pad0: u8,
        eflags: u32,
        esp: u32,
        ss: u16,
        _pad1: u16,
        es: u16,
        _pad2: u16,
        ds: u16,
        _pad3: u16,
        fs: u16,
        _pad4: u16,
        gs: u16,
        _pad5: u16,
    }

    #[repr(C)]
    struct TrapInfo32 {
        vector: u8,
        flags: u8,
        cs: u16,
        address: u32,
    }

    #[repr(C)]
    struct VcpuGuestContext32 {
        fpu_ctxt: [u8; 512],
        flags: u32,
        user_regs: CpuUserRegs32,
        trap_ctxt: [TrapInfo32; 256],
        ldt_base: u32,
        ldt_ents: u32,
        gdt_frames: [u32; 16],
        gdt_ents: u32,
        kernel_ss: u32,
        kernel_sp: u32,
        ctrlreg: [u32; 8],
        debugreg: [u32; 8],
        event_callback_cs: u32,
        event_callback_eip: u32,
        failsafe_callback_cs: u32,
        failsafe_callback_eip: u32,
        vm_assist: u32,
    }

    #[test]
    fn sizes_match_public_headers() {
        assert_eq!(size_of::<VcpuGuestContext64>(), CONTEXT_SIZE_64);
        assert_eq!(CONTEXT_SIZE_64, 0x1430);
        assert_eq!(size_of::<CpuUserRegs64>(), USER_REGS_SIZE);
        assert_eq!(size_of::<TrapInfo64>(), TRAP_INFO_SIZE);
        assert_eq!(size_of::<VcpuGuestContext32>(), CONTEXT_SIZE_32);
        assert_eq!(CONTEXT_SIZE_32, 0xAF0);
    }

    #[test]
    fn offsets_match_public_headers() {
        type C = VcpuGuestContext64;
        type U = CpuUserRegs64;
        let ur = offset_of!(C, user_regs);
        let pairs: &[(usize, usize, &str)] = &[
            (FPU_CTXT, offset_of!(C, fpu_ctxt), "fpu_ctxt"),
            (FLAGS, offset_of!(C, flags), "flags"),
            (USER_REGS, ur, "user_regs"),
            (R15, ur + offset_of!(U, r15), "r15"),
            (R14, ur + offset_of!(U, r14), "r14"),
            (R13, ur + offset_of!(U, r13), "r13"),
            (R12, ur + offset_of!(U, r12), "r12"),
            (RBP, ur + offset_of!(U, rbp), "rbp"),
            (RBX, ur + offset_of!(U, rbx), "rbx"),
            (R11, ur + offset_of!(U, r11), "r11"),
            (R10, ur + offset_of!(U, r10), "r10"),
            (R9, ur + offset_of!(U, r9), "r9"),
            (R8, ur + offset_of!(U, r8), "r8"),
            (RAX, ur + offset_of!(U, rax), "rax"),
            (RCX, ur + offset_of!(U, rcx), "rcx"),
            (RDX, ur + offset_of!(U, rdx), "rdx"),
            (RSI, ur + offset_of!(U, rsi), "rsi"),
            (RDI, ur + offset_of!(U, rdi), "rdi"),
            (ERROR_CODE, ur + offset_of!(U, error_code), "error_code"),
            (
                ENTRY_VECTOR,
                ur + offset_of!(U, entry_vector),
                "entry_vector",
            ),
            (RIP, ur + offset_of!(U, rip), "rip"),
            (CS, ur + offset_of!(U, cs), "cs"),
            (
                SAVED_UPCALL_MASK,
                ur + offset_of!(U, saved_upcall_mask),
                "saved_upcall_mask",
            ),
            (RFLAGS, ur + offset_of!(U, rflags), "rflags"),
            (RSP, ur + offset_of!(U, rsp), "rsp"),
            (SS, ur + offset_of!(U, ss), "ss"),
            (ES, ur + offset_of!(U, es), "es"),
            (DS, ur + offset_of!(U, ds), "ds"),
            (FS, ur + offset_of!(U, fs), "fs"),
            (GS, ur + offset_of!(U, gs), "gs"),
            (TRAP_CTXT, offset_of!(C, trap_ctxt), "trap_ctxt"),
            (LDT_BASE, offset_of!(C, ldt_base), "ldt_base"),
            (LDT_ENTS, offset_of!(C, ldt_ents), "ldt_ents"),
            (GDT_FRAMES, offset_of!(C, gdt_frames), "gdt_frames"),
            (GDT_ENTS, offset_of!(C, gdt_ents), "gdt_ents"),
            (KERNEL_SS, offset_of!(C, kernel_ss), "kernel_ss"),
            (KERNEL_SP, offset_of!(C, kernel_sp), "kernel_sp"),
            (CTRLREG, offset_of!(C, ctrlreg), "ctrlreg"),
            (DEBUGREG, offset_of!(C, debugreg), "debugreg"),
            (
                EVENT_CALLBACK_EIP,
                offset_of!(C, event_callback_eip),
                "event_callback_eip",
            ),
            (
                FAILSAFE_CALLBACK_EIP,
                offset_of!(C, failsafe_callback_eip),
                "failsafe_callback_eip",
            ),
            (
                SYSCALL_CALLBACK_EIP,
                offset_of!(C, syscall_callback_eip),
                "syscall_callback_eip",
            ),
            (VM_ASSIST, offset_of!(C, vm_assist), "vm_assist"),
            (FS_BASE, offset_of!(C, fs_base), "fs_base"),
            (
                GS_BASE_KERNEL,
                offset_of!(C, gs_base_kernel),
                "gs_base_kernel",
            ),
            (GS_BASE_USER, offset_of!(C, gs_base_user), "gs_base_user"),
        ];
        for &(ours, header, name) in pairs {
            assert_eq!(ours, header, "{name}");
        }
        assert_eq!(FIRST_RESERVED_GDT_ENTRY, 7168);
    }

    #[test]
    fn views_refuse_wrong_sizes() {
        assert!(matches!(
            Context64::new(&[0u8; CONTEXT_SIZE_32]),
            Err(X86Error::NotSupported(_))
        ));
        assert!(matches!(
            Context64::new(&[0u8; 100]),
            Err(X86Error::BadSize { len: 100, .. })
        ));
        let mut b32 = vec![0u8; CONTEXT_SIZE_32];
        assert!(matches!(
            normalise_basic(&mut b32, 0, Some),
            Err(X86Error::NotSupported(_))
        ));
        assert!(matches!(
            localise_basic(&mut b32, 0, Some),
            Err(X86Error::NotSupported(_))
        ));
    }

    #[test]
    fn accessors_read_back_at_header_offsets() {
        let mut blob = vec![0u8; CONTEXT_SIZE_64];
        let mut c = Context64Mut::new(&mut blob).unwrap();
        for (i, r) in Reg::ALL.iter().enumerate() {
            c.set_reg(*r, 0x1000 + i as u64);
        }
        c.set_seg(Seg::Cs, 0xe033);
        c.set_seg(Seg::Gs, 0x2b);
        c.set_fs_base(0xdead_beef);
        c.set_ctrlreg(3, 0x1234_5000);
        c.set_gdt_frame(15, 77);
        c.set_saved_upcall_mask(1);
        assert_eq!(u64_at(&blob, RAX), 0x1000);
        assert_eq!(u64_at(&blob, RFLAGS), 0x1000 + 17);
        assert_eq!(u16_at(&blob, CS), 0xe033);
        assert_eq!(u16_at(&blob, GS), 0x2b);
        assert_eq!(u64_at(&blob, FS_BASE), 0xdead_beef);
        assert_eq!(u64_at(&blob, CTRLREG + 24), 0x1234_5000);
        assert_eq!(u64_at(&blob, GDT_FRAMES + 15 * 8), 77);
        assert_eq!(blob[SAVED_UPCALL_MASK], 1);
        let v = Context64::new(&blob).unwrap();
        assert_eq!(v.cr3_frame(), 0x12345);
        assert_eq!(v.reg(Reg::R15), 0x1000 + 15);
        // Each register has its own slot.
        let mut offs: Vec<_> = Reg::ALL.iter().map(|r| r.offset()).collect();
        offs.sort();
        offs.dedup();
        assert_eq!(offs.len(), Reg::ALL.len());
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
