//! Wire-level value types shared with the hypervisor layer.

use std::fmt;

/// A page's type as `XEN_DOMCTL_getpageframeinfo3` reports it: the value of
/// the PFINFO nibble (bits 28–31 of the 32-bit PFINFO word), which is also the
/// type nibble of a PAGE_DATA pfn entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageType(pub u8);

impl PageType {
    pub const NOTAB: PageType = PageType(0x0);
    pub const L1TAB: PageType = PageType(0x1);
    pub const L2TAB: PageType = PageType(0x2);
    pub const L3TAB: PageType = PageType(0x3);
    pub const L4TAB: PageType = PageType(0x4);
    /// Pinned flag (LPINTAB) within the nibble.
    pub const PINNED: u8 = 0x8;
    pub const BROKEN: PageType = PageType(0xD);
    pub const XALLOC: PageType = PageType(0xE);
    pub const XTAB: PageType = PageType(0xF);

    /// Known to Xen's restore (`is_known_page_type`): 0–4, 9–0xF.
    pub fn is_known(self) -> bool {
        matches!(self.0, 0x0..=0x4 | 0x9..=0xF)
    }
    /// Carries 4096 bytes in a PAGE_DATA record (`page_type_has_stream_data`).
    pub fn has_data(self) -> bool {
        matches!(self.0, 0x0..=0x4 | 0x9..=0xC)
    }
    /// Restore allocates the frame (`page_type_to_populate`).
    pub fn populates(self) -> bool {
        self.has_data() || self == PageType::XALLOC
    }
    /// Page-table level 1..=4, or 0 for data pages and specials.
    pub fn pt_level(self) -> u8 {
        if self.has_data() {
            self.0 & 0x7
        } else {
            0
        }
    }
    pub fn is_pinned(self) -> bool {
        self.has_data() && self.0 & Self::PINNED != 0
    }
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NOTAB",
            0x1 => "L1TAB",
            0x2 => "L2TAB",
            0x3 => "L3TAB",
            0x4 => "L4TAB",
            0x9 => "L1TAB|PIN",
            0xA => "L2TAB|PIN",
            0xB => "L3TAB|PIN",
            0xC => "L4TAB|PIN",
            0xD => "BROKEN",
            0xE => "XALLOC",
            0xF => "XTAB",
            _ => "INVALID",
        }
    }
}

impl fmt::Display for PageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// X86_TSC_INFO contents (`xc_domain_get_tsc_info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TscInfo {
    pub mode: u32,
    pub khz: u32,
    pub nsec: u64,
    pub incarnation: u32,
}
