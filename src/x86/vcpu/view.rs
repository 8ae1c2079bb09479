//! Checked views of a 64-bit vCPU context blob, and the registers by name.

use super::layout::*;
use crate::x86::X86Error;
use std::ops::{Deref, DerefMut};
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, IntoBytes};

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

pub(super) fn check_size(len: usize) -> Result<(), X86Error> {
    match len {
        CONTEXT_SIZE_64 => Ok(()),
        CONTEXT_SIZE_32 => Err(X86Error::NotSupported("32-bit PV vCPU context")),
        _ => Err(X86Error::BadSize {
            what: "vcpu_guest_context",
            len,
        }),
    }
}

/// Named access on top of the fields. Index arguments (`ctrlreg(i)`,
/// `gdt_frame(i)`, …) are the caller's constants: out of range panics.
impl VcpuGuestContext64 {
    fn u64_at(&self, off: usize) -> &U64 {
        U64::ref_from_bytes(&self.as_bytes()[off..off + 8]).expect("8 bytes, alignment 1")
    }
    fn u64_at_mut(&mut self, off: usize) -> &mut U64 {
        U64::mut_from_bytes(&mut self.as_mut_bytes()[off..off + 8]).expect("8 bytes, alignment 1")
    }
    fn u16_at_mut(&mut self, off: usize) -> &mut U16 {
        U16::mut_from_bytes(&mut self.as_mut_bytes()[off..off + 2]).expect("2 bytes, alignment 1")
    }

    pub fn reg(&self, r: Reg) -> u64 {
        self.u64_at(r.offset()).get()
    }
    pub fn set_reg(&mut self, r: Reg, v: u64) {
        self.u64_at_mut(r.offset()).set(v)
    }
    pub fn seg(&self, s: Seg) -> u16 {
        U16::ref_from_bytes(&self.as_bytes()[s.offset()..s.offset() + 2])
            .expect("2 bytes, alignment 1")
            .get()
    }
    pub fn set_seg(&mut self, s: Seg, v: u16) {
        self.u16_at_mut(s.offset()).set(v)
    }
    pub fn saved_upcall_mask(&self) -> u8 {
        self.user_regs.saved_upcall_mask
    }
    pub fn set_saved_upcall_mask(&mut self, v: u8) {
        self.user_regs.saved_upcall_mask = v;
    }
    pub fn error_code(&self) -> u32 {
        self.user_regs.error_code.get()
    }
    pub fn set_error_code(&mut self, v: u32) {
        self.user_regs.error_code.set(v)
    }
    pub fn entry_vector(&self) -> u32 {
        self.user_regs.entry_vector.get()
    }
    pub fn set_entry_vector(&mut self, v: u32) {
        self.user_regs.entry_vector.set(v)
    }
    pub fn flags(&self) -> u64 {
        self.flags.get()
    }
    pub fn set_flags(&mut self, v: u64) {
        self.flags.set(v)
    }
    pub fn fpu_ctxt(&self) -> &[u8] {
        &self.fpu_ctxt
    }
    pub fn fpu_ctxt_mut(&mut self) -> &mut [u8] {
        &mut self.fpu_ctxt
    }
    /// Raw `ctrlreg[3]` (frame << 12 for 64-bit guests).
    pub fn cr3(&self) -> u64 {
        self.ctrlreg(3)
    }
    pub fn set_cr3(&mut self, v: u64) {
        self.set_ctrlreg(3, v)
    }
    /// The frame `ctrlreg[3]` points at.
    pub fn cr3_frame(&self) -> u64 {
        self.cr3() >> 12
    }
    /// cr3 in the 64-bit encoding, `frame << 12`.
    pub fn set_cr3_frame(&mut self, frame: u64) {
        self.set_ctrlreg(3, frame << 12)
    }
    pub fn ctrlreg(&self, i: usize) -> u64 {
        self.ctrlreg[i].get()
    }
    pub fn set_ctrlreg(&mut self, i: usize, v: u64) {
        self.ctrlreg[i].set(v)
    }
    pub fn debugreg(&self, i: usize) -> u64 {
        self.debugreg[i].get()
    }
    pub fn set_debugreg(&mut self, i: usize, v: u64) {
        self.debugreg[i].set(v)
    }
    pub fn gdt_ents(&self) -> u64 {
        self.gdt_ents.get()
    }
    pub fn set_gdt_ents(&mut self, v: u64) {
        self.gdt_ents.set(v)
    }
    pub fn gdt_frame(&self, i: usize) -> u64 {
        self.gdt_frames[i].get()
    }
    pub fn set_gdt_frame(&mut self, i: usize, v: u64) {
        self.gdt_frames[i].set(v)
    }
    pub fn ldt_base(&self) -> u64 {
        self.ldt_base.get()
    }
    pub fn set_ldt_base(&mut self, v: u64) {
        self.ldt_base.set(v)
    }
    pub fn ldt_ents(&self) -> u64 {
        self.ldt_ents.get()
    }
    pub fn set_ldt_ents(&mut self, v: u64) {
        self.ldt_ents.set(v)
    }
    pub fn kernel_ss(&self) -> u64 {
        self.kernel_ss.get()
    }
    pub fn set_kernel_ss(&mut self, v: u64) {
        self.kernel_ss.set(v)
    }
    pub fn kernel_sp(&self) -> u64 {
        self.kernel_sp.get()
    }
    pub fn set_kernel_sp(&mut self, v: u64) {
        self.kernel_sp.set(v)
    }
    pub fn event_callback_eip(&self) -> u64 {
        self.event_callback_eip.get()
    }
    pub fn set_event_callback_eip(&mut self, v: u64) {
        self.event_callback_eip.set(v)
    }
    pub fn failsafe_callback_eip(&self) -> u64 {
        self.failsafe_callback_eip.get()
    }
    pub fn set_failsafe_callback_eip(&mut self, v: u64) {
        self.failsafe_callback_eip.set(v)
    }
    pub fn syscall_callback_eip(&self) -> u64 {
        self.syscall_callback_eip.get()
    }
    pub fn set_syscall_callback_eip(&mut self, v: u64) {
        self.syscall_callback_eip.set(v)
    }
    pub fn vm_assist(&self) -> u64 {
        self.vm_assist.get()
    }
    pub fn set_vm_assist(&mut self, v: u64) {
        self.vm_assist.set(v)
    }
    pub fn fs_base(&self) -> u64 {
        self.fs_base.get()
    }
    pub fn set_fs_base(&mut self, v: u64) {
        self.fs_base.set(v)
    }
    pub fn gs_base_kernel(&self) -> u64 {
        self.gs_base_kernel.get()
    }
    pub fn set_gs_base_kernel(&mut self, v: u64) {
        self.gs_base_kernel.set(v)
    }
    pub fn gs_base_user(&self) -> u64 {
        self.gs_base_user.get()
    }
    pub fn set_gs_base_user(&mut self, v: u64) {
        self.gs_base_user.set(v)
    }
}

/// A checked read-only view over a 5168-byte x86_64 `vcpu_guest_context`.
#[derive(Debug, Clone, Copy)]
pub struct Context64<'a>(&'a VcpuGuestContext64);

impl<'a> Context64<'a> {
    /// Fails with `NotSupported` for a 32-bit (2800-byte) context and
    /// `BadSize` for any other length.
    pub fn new(blob: &'a [u8]) -> Result<Self, X86Error> {
        check_size(blob.len())?;
        let ctx = VcpuGuestContext64::ref_from_bytes(blob).map_err(|_| X86Error::BadSize {
            what: "vcpu_guest_context",
            len: blob.len(),
        })?;
        Ok(Context64(ctx))
    }
}

impl Deref for Context64<'_> {
    type Target = VcpuGuestContext64;
    fn deref(&self) -> &VcpuGuestContext64 {
        self.0
    }
}

/// A checked read-write view over a 5168-byte x86_64 `vcpu_guest_context`.
#[derive(Debug)]
pub struct Context64Mut<'a>(&'a mut VcpuGuestContext64);

impl<'a> Context64Mut<'a> {
    pub fn new(blob: &'a mut [u8]) -> Result<Self, X86Error> {
        check_size(blob.len())?;
        let len = blob.len();
        let ctx = VcpuGuestContext64::mut_from_bytes(blob).map_err(|_| X86Error::BadSize {
            what: "vcpu_guest_context",
            len,
        })?;
        Ok(Context64Mut(ctx))
    }
    pub fn as_view(&self) -> Context64<'_> {
        Context64(self.0)
    }
}

impl Deref for Context64Mut<'_> {
    type Target = VcpuGuestContext64;
    fn deref(&self) -> &VcpuGuestContext64 {
        self.0
    }
}

impl DerefMut for Context64Mut<'_> {
    fn deref_mut(&mut self) -> &mut VcpuGuestContext64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
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
        assert!(matches!(
            Context64Mut::new(&mut [0u8; CONTEXT_SIZE_64 + 1]),
            Err(X86Error::BadSize { .. })
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
        assert_eq!(c.as_view().seg(Seg::Gs), 0x2b);
        assert_eq!(u64_at(&blob, RAX), 0x1000);
        assert_eq!(u64_at(&blob, RFLAGS), 0x1000 + 17);
        assert_eq!(&blob[CS..CS + 2], &0xe033u16.to_le_bytes());
        assert_eq!(&blob[GS..GS + 2], &0x2bu16.to_le_bytes());
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
}
