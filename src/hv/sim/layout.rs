//! Where things live in a sim guest's pseudo-physical (pfn) space.
//!
//! PV (everything below `data_first` is "kernel"; the rest is workload data):
//! ```text
//! pfn 0            start_info (vCPU0 rdx points here)
//! pfn 1            workload descriptor
//! pfn 2, 3         xenstore ring, console ring (start_info store_mfn / console.mfn)
//! pfn 4 ..         P2M leaves, 512 eight-byte entries each
//! then             L4, L3, L2s, L1s: the direct map of all pfns at DIRECT_MAP_VA
//! data_first ..    workload data pages
//! ```
//! HVM (gfn == pfn):
//! ```text
//! pfn 0            workload descriptor (vCPU0 rdi holds its gfn)
//! 1 .. pages-8     workload data
//! pages-8 .. -4    Xen "special" frames mapped in the physmap: XTAB, never sent
//! pages-4 .. -1    xenstore, console, ioreq, bufioreq (HVM params)
//! ```

use crate::hv::GuestType;
use crate::x86::pagetable::ENTRIES;

pub const PAGE_SIZE: usize = 4096;
/// P2M entries per leaf frame (64-bit guests).
pub const P2M_PER_FRAME: u64 = 512;

/// Linux's direct map (PAGE_OFFSET, L4 slot 273), clear of Xen's slots 256..272.
pub const DIRECT_MAP_VA: u64 = 0xFFFF_8880_0000_0000;
pub const DIRECT_MAP_L4_SLOT: usize = ((DIRECT_MAP_VA >> 39) & 511) as usize;
/// Kernel-style page-table flags: present, RW, accessed, dirty (_KERNPG_TABLE).
pub const PT_FLAGS: u64 = 0x63;
/// Leaf flags for writable data and for read-only kernel frames (NX set).
pub const PTE_DATA_RW: u64 = (1 << 63) | 0x63;
pub const PTE_DATA_RO: u64 = (1 << 63) | 0x61;

/// The address vCPU0 parks at between workload steps.
pub const WORKLOAD_RIP: u64 = 0xFFFF_FFFF_8100_0000;
/// The idle loop of the other vCPUs.
pub const IDLE_RIP: u64 = 0xFFFF_FFFF_8100_1000;
/// Stack pointer of the workload loop (not otherwise used).
pub const WORKLOAD_RSP: u64 = 0xFFFF_C900_0000_8000;

/// Smallest guest: enough for the PV kernel frames plus some data.
pub const MIN_PAGES: u64 = 256;
/// HVM frames at the top of RAM that the workload never touches.
pub const HVM_TOP_RESERVED: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvLayout {
    pub pages: u64,
    pub p2m_first: u64,
    pub p2m_frames: u64,
    pub l4: u64,
    pub l3: u64,
    pub l2_first: u64,
    pub l2_count: u64,
    pub l1_first: u64,
    pub l1_count: u64,
    pub data_first: u64,
}

impl PvLayout {
    pub const START_INFO: u64 = 0;
    pub const DESCRIPTOR: u64 = 1;
    pub const STORE: u64 = 2;
    pub const CONSOLE: u64 = 3;

    pub fn new(pages: u64) -> Self {
        let p2m_first = 4;
        let p2m_frames = pages.div_ceil(P2M_PER_FRAME);
        let l4 = p2m_first + p2m_frames;
        let l3 = l4 + 1;
        let l2_first = l3 + 1;
        let l2_count = pages.div_ceil((ENTRIES * ENTRIES) as u64);
        let l1_first = l2_first + l2_count;
        let l1_count = pages.div_ceil(ENTRIES as u64);
        PvLayout {
            pages,
            p2m_first,
            p2m_frames,
            l4,
            l3,
            l2_first,
            l2_count,
            l1_first,
            l1_count,
            data_first: l1_first + l1_count,
        }
    }

    /// Page-table level of a pfn in the freshly built guest (0 = not a table).
    pub fn pt_level(&self, pfn: u64) -> u8 {
        if pfn == self.l4 {
            4
        } else if pfn == self.l3 {
            3
        } else if (self.l2_first..self.l1_first).contains(&pfn) {
            2
        } else if (self.l1_first..self.data_first).contains(&pfn) {
            1
        } else {
            0
        }
    }

    pub fn is_p2m(&self, pfn: u64) -> bool {
        (self.p2m_first..self.p2m_first + self.p2m_frames).contains(&pfn)
    }

    pub fn va(pfn: u64) -> u64 {
        DIRECT_MAP_VA + pfn * PAGE_SIZE as u64
    }

    /// Pfns the guest only reads (mapped without RW; page tables must be).
    pub fn read_only(&self, pfn: u64) -> bool {
        pfn == Self::START_INFO
            || pfn == Self::DESCRIPTOR
            || (self.l4..self.data_first).contains(&pfn)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvmLayout {
    pub pages: u64,
}

impl HvmLayout {
    pub const DESCRIPTOR: u64 = 0;
    pub const DATA_FIRST: u64 = 1;

    pub fn data_end(&self) -> u64 {
        self.pages - HVM_TOP_RESERVED
    }
    /// Frames Xen reports as XTAB (special pages in the physmap).
    pub fn is_xtab(&self, pfn: u64) -> bool {
        (self.pages - HVM_TOP_RESERVED..self.pages - 4).contains(&pfn)
    }
    pub fn store(&self) -> u64 {
        self.pages - 4
    }
    pub fn console(&self) -> u64 {
        self.pages - 3
    }
    pub fn ioreq(&self) -> u64 {
        self.pages - 2
    }
    pub fn bufioreq(&self) -> u64 {
        self.pages - 1
    }
}

/// Either layout, by guest type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Pv(PvLayout),
    Hvm(HvmLayout),
}

impl Layout {
    pub fn new(guest_type: GuestType, pages: u64) -> Self {
        match guest_type {
            GuestType::Pv => Layout::Pv(PvLayout::new(pages)),
            GuestType::Hvm => Layout::Hvm(HvmLayout { pages }),
        }
    }
    pub fn pages(&self) -> u64 {
        match self {
            Layout::Pv(l) => l.pages,
            Layout::Hvm(l) => l.pages,
        }
    }
    /// The workload's data pages as a pfn range.
    pub fn data(&self) -> std::ops::Range<u64> {
        match self {
            Layout::Pv(l) => l.data_first..l.pages,
            Layout::Hvm(l) => HvmLayout::DATA_FIRST..l.data_end(),
        }
    }
    pub fn descriptor(&self) -> u64 {
        match self {
            Layout::Pv(_) => PvLayout::DESCRIPTOR,
            Layout::Hvm(_) => HvmLayout::DESCRIPTOR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_layout_regions_do_not_overlap_and_cover_the_tables() {
        for pages in [MIN_PAGES, 1000, 262_144, 262_145, 1 << 20] {
            let l = PvLayout::new(pages);
            assert!(l.p2m_frames * P2M_PER_FRAME >= pages);
            assert!(l.l1_count * 512 >= pages);
            assert!(l.l2_count * 512 >= l.l1_count);
            assert!(l.data_first < pages, "no data pages for {pages}");
            assert_eq!(l.pt_level(l.l4), 4);
            assert_eq!(l.pt_level(l.data_first), 0);
            assert_eq!(l.pt_level(l.data_first - 1), 1);
        }
        assert_eq!(DIRECT_MAP_L4_SLOT, 273);
    }
}
