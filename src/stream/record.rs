//! Typed values of the libxc stream: headers and records (docs/REFERENCE.md §4, §5).

use super::types::{PageType, TscInfo};

/// Record type codes (docs/REFERENCE.md §4.5, `xg_sr_stream_format.h`).
pub mod rec_type {
    pub const END: u32 = 0x00;
    pub const PAGE_DATA: u32 = 0x01;
    pub const X86_PV_INFO: u32 = 0x02;
    pub const X86_PV_P2M_FRAMES: u32 = 0x03;
    pub const X86_PV_VCPU_BASIC: u32 = 0x04;
    pub const X86_PV_VCPU_EXTENDED: u32 = 0x05;
    pub const X86_PV_VCPU_XSAVE: u32 = 0x06;
    pub const SHARED_INFO: u32 = 0x07;
    pub const X86_TSC_INFO: u32 = 0x08;
    pub const HVM_CONTEXT: u32 = 0x09;
    pub const HVM_PARAMS: u32 = 0x0A;
    pub const TOOLSTACK: u32 = 0x0B;
    pub const X86_PV_VCPU_MSRS: u32 = 0x0C;
    pub const VERIFY: u32 = 0x0D;
    pub const CHECKPOINT: u32 = 0x0E;
    pub const CHECKPOINT_DIRTY_PFN_LIST: u32 = 0x0F;
    pub const STATIC_DATA_END: u32 = 0x10;
    pub const X86_CPUID_POLICY: u32 = 0x11;
    pub const X86_MSR_POLICY: u32 = 0x12;
    /// Bit 31: an unknown record with this bit may be skipped.
    pub const OPTIONAL: u32 = 0x8000_0000;
}

/// Name of a libxc record type, as Xen's `mandatory_rec_types[]` spells it.
pub fn libxc_type_name(t: u32) -> &'static str {
    use rec_type::*;
    match t {
        END => "END",
        PAGE_DATA => "PAGE_DATA",
        X86_PV_INFO => "X86_PV_INFO",
        X86_PV_P2M_FRAMES => "X86_PV_P2M_FRAMES",
        X86_PV_VCPU_BASIC => "X86_PV_VCPU_BASIC",
        X86_PV_VCPU_EXTENDED => "X86_PV_VCPU_EXTENDED",
        X86_PV_VCPU_XSAVE => "X86_PV_VCPU_XSAVE",
        SHARED_INFO => "SHARED_INFO",
        X86_TSC_INFO => "X86_TSC_INFO",
        HVM_CONTEXT => "HVM_CONTEXT",
        HVM_PARAMS => "HVM_PARAMS",
        TOOLSTACK => "TOOLSTACK",
        X86_PV_VCPU_MSRS => "X86_PV_VCPU_MSRS",
        VERIFY => "VERIFY",
        CHECKPOINT => "CHECKPOINT",
        CHECKPOINT_DIRTY_PFN_LIST => "CHECKPOINT_DIRTY_PFN_LIST",
        STATIC_DATA_END => "STATIC_DATA_END",
        X86_CPUID_POLICY => "X86_CPUID_POLICY",
        X86_MSR_POLICY => "X86_MSR_POLICY",
        t if t & OPTIONAL != 0 => "UNKNOWN_OPTIONAL",
        _ => "UNKNOWN",
    }
}

/// Domain header `type` (docs/REFERENCE.md §4.3). PVH guests are saved as HVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainType {
    X86Pv = 1,
    X86Hvm = 2,
}

impl DomainType {
    pub fn from_code(code: u32) -> Option<DomainType> {
        match code {
            1 => Some(DomainType::X86Pv),
            2 => Some(DomainType::X86Hvm),
            _ => None,
        }
    }
    pub fn code(self) -> u32 {
        self as u32
    }
    pub fn name(self) -> &'static str {
        match self {
            DomainType::X86Pv => "x86 PV",
            DomainType::X86Hvm => "x86 HVM",
        }
    }
}

/// The libxc domain header (16 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainHeader {
    pub domain_type: DomainType,
    /// Always 12 (4 KiB pages).
    pub page_shift: u16,
    /// `XENVER_version >> 16` of the saving host; 0 for legacy-converted streams.
    pub xen_major: u32,
    pub xen_minor: u32,
}

/// One PAGE_DATA pfn entry: the pfn and its page type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfnEntry {
    pub pfn: u64,
    pub ty: PageType,
}

/// Bits 0–51 of a PAGE_DATA entry hold the pfn.
pub const PAGE_DATA_PFN_MASK: u64 = 0x000f_ffff_ffff_ffff;
/// Bits 52–59 are reserved.
pub const PAGE_DATA_RESERVED_MASK: u64 = 0x0ff0_0000_0000_0000;
/// Bits 60–63 hold the type nibble.
pub const PAGE_DATA_TYPE_SHIFT: u32 = 60;

impl PfnEntry {
    /// The 64-bit wire form `type << 60 | pfn` (the pfn must fit in 52 bits;
    /// writers check this before encoding).
    pub fn encode(self) -> u64 {
        (u64::from(self.ty.0 & 0xF) << PAGE_DATA_TYPE_SHIFT) | (self.pfn & PAGE_DATA_PFN_MASK)
    }
    /// Splits a wire entry; reserved bits 52–59 are dropped, as Xen does.
    pub fn decode(raw: u64) -> PfnEntry {
        PfnEntry {
            pfn: raw & PAGE_DATA_PFN_MASK,
            ty: PageType((raw >> PAGE_DATA_TYPE_SHIFT) as u8),
        }
    }
}

/// A PAGE_DATA record: the pfn entries and the bodies of the pages that carry
/// data (4096 bytes per entry whose `ty.has_data()`, in entry order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageData {
    pub entries: Vec<PfnEntry>,
    pub data: Vec<u8>,
}

impl PageData {
    /// Number of entries whose type carries a page of data.
    pub fn pages_with_data(&self) -> usize {
        self.entries.iter().filter(|e| e.ty.has_data()).count()
    }
    /// The page bodies, one 4096-byte slice per data-carrying entry.
    pub fn pages(&self) -> impl Iterator<Item = &[u8]> {
        self.data.chunks(super::PAGE_SIZE)
    }
}

/// An X86_PV_VCPU_* record: the vCPU and its opaque context blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuRecord {
    pub vcpu_id: u32,
    pub blob: Vec<u8>,
}

/// One libxc record, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    End,
    PageData(PageData),
    X86PvInfo {
        guest_width: u8,
        pt_levels: u8,
    },
    X86PvP2mFrames {
        start_pfn: u32,
        end_pfn: u32,
        frames: Vec<u64>,
    },
    X86PvVcpuBasic(VcpuRecord),
    X86PvVcpuExtended(VcpuRecord),
    X86PvVcpuXsave(VcpuRecord),
    X86PvVcpuMsrs(VcpuRecord),
    SharedInfo(Vec<u8>),
    X86TscInfo(TscInfo),
    HvmContext(Vec<u8>),
    /// (index, value) pairs.
    HvmParams(Vec<(u64, u64)>),
    Verify,
    Checkpoint,
    CheckpointDirtyPfnList(Vec<u64>),
    StaticDataEnd,
    /// Raw `xen_cpuid_leaf_t` array (24 bytes per leaf).
    X86CpuidPolicy(Vec<u8>),
    /// Raw `xen_msr_entry_t` array (16 bytes per MSR).
    X86MsrPolicy(Vec<u8>),
    /// Read side only: an unknown optional record (bit 31 set), skipped.
    UnknownOptional {
        rtype: u32,
        length: u32,
    },
}

impl Record {
    pub fn type_code(&self) -> u32 {
        use rec_type::*;
        match self {
            Record::End => END,
            Record::PageData(_) => PAGE_DATA,
            Record::X86PvInfo { .. } => X86_PV_INFO,
            Record::X86PvP2mFrames { .. } => X86_PV_P2M_FRAMES,
            Record::X86PvVcpuBasic(_) => X86_PV_VCPU_BASIC,
            Record::X86PvVcpuExtended(_) => X86_PV_VCPU_EXTENDED,
            Record::X86PvVcpuXsave(_) => X86_PV_VCPU_XSAVE,
            Record::X86PvVcpuMsrs(_) => X86_PV_VCPU_MSRS,
            Record::SharedInfo(_) => SHARED_INFO,
            Record::X86TscInfo(_) => X86_TSC_INFO,
            Record::HvmContext(_) => HVM_CONTEXT,
            Record::HvmParams(_) => HVM_PARAMS,
            Record::Verify => VERIFY,
            Record::Checkpoint => CHECKPOINT,
            Record::CheckpointDirtyPfnList(_) => CHECKPOINT_DIRTY_PFN_LIST,
            Record::StaticDataEnd => STATIC_DATA_END,
            Record::X86CpuidPolicy(_) => X86_CPUID_POLICY,
            Record::X86MsrPolicy(_) => X86_MSR_POLICY,
            Record::UnknownOptional { rtype, .. } => *rtype,
        }
    }

    pub fn name(&self) -> &'static str {
        libxc_type_name(self.type_code())
    }
}

/// Name of an HVM param index (`xen/include/public/hvm/params.h`), for the
/// ones a stream carries.
pub fn hvm_param_name(index: u64) -> &'static str {
    match index {
        0 => "CALLBACK_IRQ",
        1 => "STORE_PFN",
        2 => "STORE_EVTCHN",
        4 => "PAE_ENABLED",
        5 => "IOREQ_PFN",
        6 => "BUFIOREQ_PFN",
        9 => "VIRIDIAN",
        12 => "IDENT_PT",
        15 => "VM86_TSS",
        17 => "CONSOLE_PFN",
        18 => "CONSOLE_EVTCHN",
        19 => "ACPI_IOPORTS_LOCATION",
        27 => "PAGING_RING_PFN",
        28 => "MONITOR_RING_PFN",
        29 => "SHARING_RING_PFN",
        32 => "IOREQ_SERVER_PFN",
        33 => "NR_IOREQ_SERVER_PAGES",
        34 => "VM_GENERATION_ID_ADDR",
        36 => "X87_FIP_WIDTH",
        37 => "VM86_TSS_SIZED",
        38 => "MCA_CAP",
        _ => "UNKNOWN",
    }
}
