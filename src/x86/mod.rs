//! x86 PV guest structures: page tables and the public-header layouts the
//! save/restore engines rewrite (docs/REFERENCE.md §5.5, §5.6, §9, §5.2).
//!
//! Everything here is pure byte manipulation on buffers the caller owns; the
//! frame translations (mfn↔pfn) come in as closures so this layer knows
//! nothing about the P2M or the hypervisor. Only 64-bit PV guests with
//! 4-level page tables are supported; 32-bit layouts are refused with
//! [`X86Error::NotSupported`] wherever they would differ.
//!
//! The public-header structures are zerocopy structs with little-endian,
//! byte-aligned fields (the C padding spelled out), read and written in
//! place; their sizes and offsets are checked in tests against xen-sys's
//! bindgen output of Xen's headers.

pub mod pagetable;
pub mod shared_info;
pub mod start_info;
pub mod vcpu;

/// Errors of the x86 structure layer.
#[derive(Debug, thiserror::Error)]
pub enum X86Error {
    /// A present entry maps a frame the translation does not know (save: an
    /// mfn outside the guest's pseudophysmap; restore: a pfn with no mfn).
    #[error("page table slot {slot}: frame {frame:#x} is not part of the guest")]
    UnknownFrame { slot: usize, frame: u64 },
    /// PSE set in an L2+ entry: PV guests cannot migrate superpages.
    #[error("page table slot {slot}: superpage mappings cannot be migrated")]
    Superpage { slot: usize },
    /// A translated frame does not fit in a PTE's 40-bit frame field.
    #[error("page table slot {slot}: frame {frame:#x} does not fit in a PTE")]
    FrameTooWide { slot: usize, frame: u64 },
    #[error("invalid page table level {0} (expected 1..=4)")]
    BadLevel(u8),
    #[error("{what}: wrong size {len}")]
    BadSize { what: &'static str, len: usize },
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// A frame referenced from a vCPU context (start info, GDT, cr3, cr1)
    /// could not be translated.
    #[error("vcpu{vcpu}: {what} frame {frame:#x} is not part of the guest")]
    VcpuFrame {
        vcpu: u32,
        what: &'static str,
        frame: u64,
    },
    /// `gdt_ents` above Xen's `FIRST_RESERVED_GDT_ENTRY`.
    #[error("vcpu{vcpu}: GDT entry count {ents} out of range (max {max})")]
    GdtEntries { vcpu: u32, ents: u64, max: u64 },
}
