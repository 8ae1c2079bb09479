//! `struct vcpu_guest_context` (public/arch-x86/xen.h) as compiled for a
//! 64-bit and a 32-bit PV guest, as little-endian byte-aligned structures:
//! a context blob is read in place, never copied field by field. The tests
//! check sizes and offsets against xen-sys's bindgen output of Xen 4.17's
//! headers; the C padding is spelled out as `_pad` fields.

use std::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `struct cpu_user_regs` (public/arch-x86/xen-x86_64.h).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CpuUserRegs64 {
    pub r15: U64,
    pub r14: U64,
    pub r13: U64,
    pub r12: U64,
    pub rbp: U64,
    pub rbx: U64,
    pub r11: U64,
    pub r10: U64,
    pub r9: U64,
    pub r8: U64,
    pub rax: U64,
    pub rcx: U64,
    pub rdx: U64,
    pub rsi: U64,
    pub rdi: U64,
    /// Xen-private.
    pub error_code: U32,
    /// Xen-private.
    pub entry_vector: U32,
    pub rip: U64,
    pub cs: U16,
    pub _pad0: [u8; 2],
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    pub rflags: U64,
    pub rsp: U64,
    pub ss: U16,
    pub _pad2: [u8; 6],
    pub es: U16,
    pub _pad3: [u8; 6],
    pub ds: U16,
    pub _pad4: [u8; 6],
    pub fs: U16,
    pub _pad5: [u8; 6],
    pub gs: U16,
    pub _pad6: [u8; 6],
}

/// `struct trap_info`, 64-bit guest.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct TrapInfo64 {
    pub vector: u8,
    pub flags: u8,
    pub cs: U16,
    pub _pad: [u8; 4],
    pub address: U64,
}

/// `struct vcpu_guest_context`, 64-bit guest: the X86_PV_VCPU_BASIC blob.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VcpuGuestContext64 {
    pub fpu_ctxt: [u8; 512],
    /// VGCF_* flags.
    pub flags: U64,
    pub user_regs: CpuUserRegs64,
    pub trap_ctxt: [TrapInfo64; 256],
    pub ldt_base: U64,
    pub ldt_ents: U64,
    /// Machine frames (pfns in the stream).
    pub gdt_frames: [U64; 16],
    pub gdt_ents: U64,
    pub kernel_ss: U64,
    pub kernel_sp: U64,
    /// ctrlreg[1] holds a 64-bit guest's user page table.
    pub ctrlreg: [U64; 8],
    pub debugreg: [U64; 8],
    pub event_callback_eip: U64,
    pub failsafe_callback_eip: U64,
    pub syscall_callback_eip: U64,
    pub vm_assist: U64,
    pub fs_base: U64,
    pub gs_base_kernel: U64,
    pub gs_base_user: U64,
}

/// `struct cpu_user_regs`, 32-bit guest (public/arch-x86/xen-x86_32.h).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CpuUserRegs32 {
    pub ebx: U32,
    pub ecx: U32,
    pub edx: U32,
    pub esi: U32,
    pub edi: U32,
    pub ebp: U32,
    pub eax: U32,
    pub error_code: U16,
    pub entry_vector: U16,
    pub eip: U32,
    pub cs: U16,
    pub saved_upcall_mask: u8,
    pub _pad0: u8,
    pub eflags: U32,
    pub esp: U32,
    pub ss: U16,
    pub _pad1: [u8; 2],
    pub es: U16,
    pub _pad2: [u8; 2],
    pub ds: U16,
    pub _pad3: [u8; 2],
    pub fs: U16,
    pub _pad4: [u8; 2],
    pub gs: U16,
    pub _pad5: [u8; 2],
}

/// `struct trap_info`, 32-bit guest.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct TrapInfo32 {
    pub vector: u8,
    pub flags: u8,
    pub cs: U16,
    pub address: U32,
}

/// `struct vcpu_guest_context`, 32-bit guest (its size tells a 32-bit
/// context apart; the engine refuses 32-bit guests).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VcpuGuestContext32 {
    pub fpu_ctxt: [u8; 512],
    pub flags: U32,
    pub user_regs: CpuUserRegs32,
    pub trap_ctxt: [TrapInfo32; 256],
    pub ldt_base: U32,
    pub ldt_ents: U32,
    pub gdt_frames: [U32; 16],
    pub gdt_ents: U32,
    pub kernel_ss: U32,
    pub kernel_sp: U32,
    pub ctrlreg: [U32; 8],
    pub debugreg: [U32; 8],
    pub event_callback_cs: U32,
    pub event_callback_eip: U32,
    pub failsafe_callback_cs: U32,
    pub failsafe_callback_eip: U32,
    pub vm_assist: U32,
}

type C64 = VcpuGuestContext64;
type R64 = CpuUserRegs64;

/// `sizeof(vcpu_guest_context)` for a 64-bit guest.
pub const CONTEXT_SIZE_64: usize = size_of::<C64>();
/// `sizeof(vcpu_guest_context)` for a 32-bit guest (not supported here).
pub const CONTEXT_SIZE_32: usize = size_of::<VcpuGuestContext32>();

// Byte offsets in the 64-bit blob, from the structure.
pub const FPU_CTXT: usize = offset_of!(C64, fpu_ctxt);
pub const FPU_CTXT_SIZE: usize = 512;
pub const FLAGS: usize = offset_of!(C64, flags);
pub const USER_REGS: usize = offset_of!(C64, user_regs);
pub const USER_REGS_SIZE: usize = size_of::<R64>();
pub const R15: usize = USER_REGS + offset_of!(R64, r15);
pub const R14: usize = USER_REGS + offset_of!(R64, r14);
pub const R13: usize = USER_REGS + offset_of!(R64, r13);
pub const R12: usize = USER_REGS + offset_of!(R64, r12);
pub const RBP: usize = USER_REGS + offset_of!(R64, rbp);
pub const RBX: usize = USER_REGS + offset_of!(R64, rbx);
pub const R11: usize = USER_REGS + offset_of!(R64, r11);
pub const R10: usize = USER_REGS + offset_of!(R64, r10);
pub const R9: usize = USER_REGS + offset_of!(R64, r9);
pub const R8: usize = USER_REGS + offset_of!(R64, r8);
pub const RAX: usize = USER_REGS + offset_of!(R64, rax);
pub const RCX: usize = USER_REGS + offset_of!(R64, rcx);
pub const RDX: usize = USER_REGS + offset_of!(R64, rdx);
pub const RSI: usize = USER_REGS + offset_of!(R64, rsi);
pub const RDI: usize = USER_REGS + offset_of!(R64, rdi);
pub const ERROR_CODE: usize = USER_REGS + offset_of!(R64, error_code);
pub const ENTRY_VECTOR: usize = USER_REGS + offset_of!(R64, entry_vector);
pub const RIP: usize = USER_REGS + offset_of!(R64, rip);
pub const CS: usize = USER_REGS + offset_of!(R64, cs);
pub const SAVED_UPCALL_MASK: usize = USER_REGS + offset_of!(R64, saved_upcall_mask);
pub const RFLAGS: usize = USER_REGS + offset_of!(R64, rflags);
pub const RSP: usize = USER_REGS + offset_of!(R64, rsp);
pub const SS: usize = USER_REGS + offset_of!(R64, ss);
pub const ES: usize = USER_REGS + offset_of!(R64, es);
pub const DS: usize = USER_REGS + offset_of!(R64, ds);
pub const FS: usize = USER_REGS + offset_of!(R64, fs);
pub const GS: usize = USER_REGS + offset_of!(R64, gs);
pub const TRAP_CTXT: usize = offset_of!(C64, trap_ctxt);
pub const TRAP_INFO_SIZE: usize = size_of::<TrapInfo64>();
pub const TRAP_CTXT_ENTRIES: usize = 256;
pub const LDT_BASE: usize = offset_of!(C64, ldt_base);
pub const LDT_ENTS: usize = offset_of!(C64, ldt_ents);
pub const GDT_FRAMES: usize = offset_of!(C64, gdt_frames);
pub const GDT_FRAMES_COUNT: usize = 16;
pub const GDT_ENTS: usize = offset_of!(C64, gdt_ents);
pub const KERNEL_SS: usize = offset_of!(C64, kernel_ss);
pub const KERNEL_SP: usize = offset_of!(C64, kernel_sp);
pub const CTRLREG: usize = offset_of!(C64, ctrlreg);
pub const DEBUGREG: usize = offset_of!(C64, debugreg);
pub const EVENT_CALLBACK_EIP: usize = offset_of!(C64, event_callback_eip);
pub const FAILSAFE_CALLBACK_EIP: usize = offset_of!(C64, failsafe_callback_eip);
pub const SYSCALL_CALLBACK_EIP: usize = offset_of!(C64, syscall_callback_eip);
pub const VM_ASSIST: usize = offset_of!(C64, vm_assist);
pub const FS_BASE: usize = offset_of!(C64, fs_base);
pub const GS_BASE_KERNEL: usize = offset_of!(C64, gs_base_kernel);
pub const GS_BASE_USER: usize = offset_of!(C64, gs_base_user);

#[cfg(test)]
mod tests {
    use super::*;
    use xen_sys::{
        cpu_user_regs_x86_32, cpu_user_regs_x86_64, trap_info_x86_32, trap_info_x86_64,
        vcpu_guest_context_x86_32, vcpu_guest_context_x86_64,
    };

    /// Asserts that each listed field of `$ours` sits where the same field
    /// of `$theirs` does.
    macro_rules! same_offsets {
        ($ours:ty, $theirs:ty: $($f:ident $(= $g:ident)?),+ $(,)?) => {
            $(same_offsets!(@one $ours, $theirs, $f $(, $g)?);)+
        };
        (@one $ours:ty, $theirs:ty, $f:ident) => {
            assert_eq!(offset_of!($ours, $f), offset_of!($theirs, $f), stringify!($f));
        };
        (@one $ours:ty, $theirs:ty, $f:ident, $g:ident) => {
            assert_eq!(offset_of!($ours, $f), offset_of!($theirs, $g), stringify!($f));
        };
    }

    #[test]
    fn the_64_bit_context_is_xens() {
        assert_eq!(CONTEXT_SIZE_64, size_of::<vcpu_guest_context_x86_64>());
        assert_eq!(CONTEXT_SIZE_64, 0x1430);
        assert_eq!(size_of::<R64>(), size_of::<cpu_user_regs_x86_64>());
        assert_eq!(size_of::<TrapInfo64>(), size_of::<trap_info_x86_64>());
        same_offsets!(TrapInfo64, trap_info_x86_64: vector, flags, cs, address);
        same_offsets!(C64, vcpu_guest_context_x86_64:
            fpu_ctxt, flags, user_regs, trap_ctxt, ldt_base, ldt_ents, gdt_frames, gdt_ents,
            kernel_ss, kernel_sp, ctrlreg, debugreg, event_callback_eip, failsafe_callback_eip,
            syscall_callback_eip, vm_assist, fs_base, gs_base_kernel, gs_base_user);
        // bindgen names the register unions (rax/eax, …) by position.
        same_offsets!(R64, cpu_user_regs_x86_64:
            r15 = __bindgen_anon_1, r14 = __bindgen_anon_2, r13 = __bindgen_anon_3,
            r12 = __bindgen_anon_4, rbp = __bindgen_anon_5, rbx = __bindgen_anon_6,
            r11 = __bindgen_anon_7, r10 = __bindgen_anon_8, r9 = __bindgen_anon_9,
            r8 = __bindgen_anon_10, rax = __bindgen_anon_11, rcx = __bindgen_anon_12,
            rdx = __bindgen_anon_13, rsi = __bindgen_anon_14, rdi = __bindgen_anon_15,
            error_code, entry_vector, rip = __bindgen_anon_16, cs, saved_upcall_mask,
            rflags = __bindgen_anon_17, rsp = __bindgen_anon_18, ss, es, ds, fs, gs);
    }

    #[test]
    fn the_32_bit_context_is_xens() {
        assert_eq!(CONTEXT_SIZE_32, size_of::<vcpu_guest_context_x86_32>());
        assert_eq!(CONTEXT_SIZE_32, 0xAF0);
        assert_eq!(
            size_of::<CpuUserRegs32>(),
            size_of::<cpu_user_regs_x86_32>()
        );
        assert_eq!(size_of::<TrapInfo32>(), size_of::<trap_info_x86_32>());
        same_offsets!(TrapInfo32, trap_info_x86_32: vector, flags, cs, address);
        same_offsets!(VcpuGuestContext32, vcpu_guest_context_x86_32:
            fpu_ctxt, flags, user_regs, trap_ctxt, ldt_base, ldt_ents, gdt_frames, gdt_ents,
            kernel_ss, kernel_sp, ctrlreg, debugreg, event_callback_cs, event_callback_eip,
            failsafe_callback_cs, failsafe_callback_eip, vm_assist);
        same_offsets!(CpuUserRegs32, cpu_user_regs_x86_32:
            ebx, ecx, edx, esi, edi, ebp, eax, error_code, entry_vector, eip, cs,
            saved_upcall_mask, eflags, esp, ss, es, ds, fs, gs);
    }
}
