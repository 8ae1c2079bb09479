//! `struct vcpu_guest_context` (public/arch-x86/xen.h): the blob of an
//! X86_PV_VCPU_BASIC record (docs/REFERENCE.md §5.5), and the frame rewrites of
//! `write_one_vcpu_basic` / `process_vcpu_basic` (§9.4).
//!
//! Rooms: `layout` (the 64- and 32-bit structures, checked against Xen's
//! headers as bindgen compiled them), `view` (checked views and registers by
//! name), `frames` (normalise on save, localise on restore).

mod frames;
mod layout;
mod view;

pub use frames::{localise_basic, normalise_basic};
pub use layout::*;
pub use view::{Context64, Context64Mut, Reg, Seg};

pub const VGCF_I387_VALID: u64 = 1 << 0;
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// Flag set on restore before `setvcpucontext`.
pub const VGCF_ONLINE: u64 = 1 << 5;

/// `FIRST_RESERVED_GDT_ENTRY`: 14 pages of 512 descriptors belong to the guest.
pub const FIRST_RESERVED_GDT_ENTRY: u64 = 14 * 4096 / 8;
pub const GDT_ENTRIES_PER_FRAME: u64 = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_constants() {
        assert_eq!(FIRST_RESERVED_GDT_ENTRY, 7168);
        assert_eq!(VGCF_ONLINE, xen_sys::VGCF_online as u64);
    }
}
