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
//! HVM, as Xen 4.17's libxl and libxenguest lay out a guest with a device
//! model (gfn == pfn; `pages` is the guest's memory size):
//! ```text
//! pfn 0               workload descriptor (vCPU0 rdi holds its gfn)
//! 0x1 .. 0xA0         workload data
//! 0xA0 .. 0xC0        VGA hole: never populated
//! 0xC0 .. low_end     workload data; low_end = min(pages, 0xF0000)
//! low_end .. 0xFEFF0  hole (the rest of RAM's room, the 256 MiB MMIO hole)
//! 0xFEFF0 .. 0xFEFF8  ioreq-server pages (HVM_PARAM_IOREQ_SERVER_PFN, 8 of them)
//! 0xFEFF8 .. 0xFF000  special pages: paging, access, sharing rings, buffered
//!                     ioreq, xenstore, ioreq, identity page table, console
//! 0x100000 ..         the RAM above low_end when the guest is bigger than
//!                     4 GiB - 256 MiB
//! ```
//! The highest pfn is 0xFEFFF, or the end of the RAM above 4 GiB. Frames
//! (the RAM file) hold the populated pfns in pfn order, `pages - 16` of
//! them (the VGA hole's 32 are missing, the 16 special pages added), as
//! Xen's `tot_pages`, then `SPARE_FRAMES` unpopulated ones: populating a
//! pfn outside the layout (a hole, as Xen allows up to the domain's
//! maximum) takes one of those. Xen-heap pages a guest maps into its physmap (shared
//! info, grant frames) are not the guest's: Xen reports them XTAB, as it
//! does holes, so the sim leaves them out.

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

/// First pfn of the VGA hole (not populated in an HVM guest).
pub const VGA_HOLE_FIRST: u64 = 0xA0;
/// Pfns in the VGA hole (LIBXL_VGA_HOLE_SIZE).
pub const VGA_HOLE_PAGES: u64 = 0x20;
/// First pfn of the MMIO hole below 4 GiB (HVM_BELOW_4G_MMIO_START).
pub const MMIO_HOLE_FIRST: u64 = 0xF0000;
/// End of Xen's special-page region (X86_HVM_END_SPECIAL_REGION).
pub const SPECIAL_END: u64 = 0xFF000;
/// Special pages (X86_HVM_NR_SPECIAL_PAGES) just below `SPECIAL_END`.
pub const SPECIAL_PAGES: u64 = 8;
/// ioreq-server pages below the special pages (NR_IOREQ_SERVER_PAGES).
pub const IOREQ_SERVER_PAGES: u64 = 8;
/// Frames of an HVM guest's RAM file beyond its layout, for pfns populated
/// in its holes (a restore of a stream laid out otherwise).
pub const SPARE_FRAMES: u64 = 64;
/// First pfn above 4 GiB.
pub const HIGH_FIRST: u64 = 0x10_0000;

/// Special page slots (libxenguest's SPECIALPAGE_*).
pub mod special {
    pub const PAGING: u64 = 0;
    pub const ACCESS: u64 = 1;
    pub const SHARING: u64 = 2;
    pub const BUFIOREQ: u64 = 3;
    pub const XENSTORE: u64 = 4;
    pub const IOREQ: u64 = 5;
    pub const IDENT_PT: u64 = 6;
    pub const CONSOLE: u64 = 7;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvmLayout {
    /// The guest's memory size in pages (RAM, holes not counted).
    pub pages: u64,
}

impl HvmLayout {
    pub const DESCRIPTOR: u64 = 0;
    pub const DATA_FIRST: u64 = 1;
    /// Populated pfns besides RAM: the special and ioreq-server pages.
    pub const EXTRA: u64 = SPECIAL_PAGES + IOREQ_SERVER_PAGES;

    pub fn new(pages: u64) -> Self {
        HvmLayout { pages }
    }
    /// The layout of a RAM file of `file_frames` frames.
    pub fn from_frames(file_frames: u64) -> Self {
        HvmLayout {
            pages: file_frames - SPARE_FRAMES + VGA_HOLE_PAGES - Self::EXTRA,
        }
    }
    /// Frames of the RAM file: the layout's and the spares.
    pub fn file_frames(&self) -> u64 {
        self.frames() + SPARE_FRAMES
    }
    /// The spare frames (for pfns outside the layout).
    pub fn spares(&self) -> std::ops::Range<u64> {
        self.frames()..self.file_frames()
    }
    /// End of the RAM below 4 GiB (exclusive pfn).
    pub fn low_end(&self) -> u64 {
        self.pages.min(MMIO_HOLE_FIRST)
    }
    /// Pages of RAM above 4 GiB.
    pub fn high_pages(&self) -> u64 {
        self.pages - self.low_end()
    }
    /// Frames the guest has: its populated pfns (Xen's tot_pages).
    pub fn frames(&self) -> u64 {
        self.pages - VGA_HOLE_PAGES + Self::EXTRA
    }
    /// The highest pfn (XENMEM_maximum_gpfn).
    pub fn max_pfn(&self) -> u64 {
        match self.high_pages() {
            0 => SPECIAL_END - 1,
            h => HIGH_FIRST + h - 1,
        }
    }
    pub fn special_first(&self) -> u64 {
        SPECIAL_END - SPECIAL_PAGES
    }
    pub fn ioreq_server_first(&self) -> u64 {
        self.special_first() - IOREQ_SERVER_PAGES
    }
    pub fn special(&self, slot: u64) -> u64 {
        self.special_first() + slot
    }
    /// The ioreq-server and special pages.
    pub fn is_special(&self, pfn: u64) -> bool {
        (self.ioreq_server_first()..SPECIAL_END).contains(&pfn)
    }
    /// Frame index of a pfn, None for a hole.
    pub fn frame_of(&self, pfn: u64) -> Option<u64> {
        let low = self.low_end();
        let below_special = low - VGA_HOLE_PAGES;
        if pfn < VGA_HOLE_FIRST {
            Some(pfn)
        } else if pfn < VGA_HOLE_FIRST + VGA_HOLE_PAGES {
            None
        } else if pfn < low {
            Some(pfn - VGA_HOLE_PAGES)
        } else if self.is_special(pfn) {
            Some(below_special + pfn - self.ioreq_server_first())
        } else if (HIGH_FIRST..HIGH_FIRST + self.high_pages()).contains(&pfn) {
            Some(below_special + Self::EXTRA + pfn - HIGH_FIRST)
        } else {
            None
        }
    }
    /// The pfn of a frame index (the inverse of [`Self::frame_of`]).
    pub fn pfn_of(&self, frame: u64) -> Option<u64> {
        let below_special = self.low_end() - VGA_HOLE_PAGES;
        if frame < VGA_HOLE_FIRST {
            Some(frame)
        } else if frame < below_special {
            Some(frame + VGA_HOLE_PAGES)
        } else if frame < below_special + Self::EXTRA {
            Some(self.ioreq_server_first() + frame - below_special)
        } else if frame < self.frames() {
            Some(HIGH_FIRST + frame - below_special - Self::EXTRA)
        } else {
            None
        }
    }
    /// The workload's data pfns, in order (RAM but the descriptor).
    pub fn data_pfns(&self) -> impl Iterator<Item = u64> + '_ {
        (Self::DATA_FIRST..VGA_HOLE_FIRST)
            .chain(VGA_HOLE_FIRST + VGA_HOLE_PAGES..self.low_end())
            .chain(HIGH_FIRST..HIGH_FIRST + self.high_pages())
    }
    /// How many data pfns there are.
    pub fn data_pages(&self) -> u64 {
        self.pages - VGA_HOLE_PAGES - Self::DATA_FIRST
    }
    pub fn store(&self) -> u64 {
        self.special(special::XENSTORE)
    }
    pub fn console(&self) -> u64 {
        self.special(special::CONSOLE)
    }
    pub fn ioreq(&self) -> u64 {
        self.special(special::IOREQ)
    }
    pub fn bufioreq(&self) -> u64 {
        self.special(special::BUFIOREQ)
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
            GuestType::Hvm => Layout::Hvm(HvmLayout::new(pages)),
        }
    }
    pub fn pages(&self) -> u64 {
        match self {
            Layout::Pv(l) => l.pages,
            Layout::Hvm(l) => l.pages,
        }
    }
    /// The workload's data pfns, in order.
    pub fn data_pfns(&self) -> Vec<u64> {
        match self {
            Layout::Pv(l) => (l.data_first..l.pages).collect(),
            Layout::Hvm(l) => l.data_pfns().collect(),
        }
    }
    /// Frames of the RAM file.
    pub fn frames(&self) -> u64 {
        match self {
            Layout::Pv(l) => l.pages,
            Layout::Hvm(l) => l.file_frames(),
        }
    }
    /// pfns in the P2M (highest pfn + 1).
    pub fn p2m_size(&self) -> u64 {
        match self {
            Layout::Pv(l) => l.pages,
            Layout::Hvm(l) => l.max_pfn() + 1,
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

    #[test]
    fn hvm_layout_is_xens() {
        // 512 MiB: Xen's P2M spans 0xFF000 pfns; 16 special pages populated.
        let l = HvmLayout::new(131_072);
        assert_eq!(l.max_pfn(), 0xFEFFF);
        assert_eq!(l.frames(), 131_072 - 32 + 16);
        assert_eq!(l.store(), 0xFEFFC);
        assert_eq!(l.console(), 0xFEFFF);
        assert_eq!(l.ioreq(), 0xFEFFD);
        assert_eq!(l.bufioreq(), 0xFEFFB);
        assert_eq!(l.ioreq_server_first(), 0xFEFF0);
        assert_eq!(l.frame_of(0xA0), None);
        assert_eq!(l.frame_of(0xBF), None);
        assert_eq!(l.frame_of(131_072), None);
        assert_eq!(l.frame_of(0xFEFEF), None);
        // 5 GiB: 3.75 GiB below the hole, the rest from 4 GiB on.
        let big = HvmLayout::new(5 << 18);
        assert_eq!(big.low_end(), 0xF0000);
        assert_eq!(big.max_pfn(), 0x100000 + (5 << 18) - 0xF0000 - 1);
        assert_eq!(big.frame_of(0xF0000), None);
        for l in [l, big, HvmLayout::new(MIN_PAGES)] {
            let mut n = 0;
            for pfn in 0..=l.max_pfn() {
                if let Some(f) = l.frame_of(pfn) {
                    assert_eq!(l.pfn_of(f), Some(pfn));
                    assert_eq!(f, n, "frames follow pfn order");
                    n += 1;
                }
            }
            assert_eq!(n, l.frames());
            assert_eq!(l.pfn_of(n), None);
            assert_eq!(HvmLayout::from_frames(l.file_frames()), l);
            assert_eq!(l.data_pfns().count() as u64, l.data_pages());
            assert!(l
                .data_pfns()
                .all(|p| l.frame_of(p).is_some() && !l.is_special(p)));
        }
    }
}
