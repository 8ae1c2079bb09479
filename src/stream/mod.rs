//! Xen's migration stream formats (docs/REFERENCE.md §2–§7): the libxc stream
//! (versions 2 and 3), the libxl stream around it, the xl save-file header
//! and the xl migrate handshake.
//!
//! Readers treat their input as hostile: every length, count, pfn and type
//! is checked before it is used, nothing is allocated beyond the 128 MiB
//! record cap, and an error names the layer, record index, byte offset and
//! the rule broken. The libxc reader never reads past END, so libxl can go on
//! using the same input.

mod codec;
mod error;
pub mod handshake;
pub mod hvm_context;
mod libxl;
mod libxl_walk;
mod limits;
mod reader;
mod record;
mod rules;
mod types;
mod wire;
mod writer;
mod xl;

pub use codec::{
    CPUID_LEAF_SIZE, MSR_ENTRY_SIZE, VCPU_BASIC_SIZE_32, VCPU_BASIC_SIZE_64, VCPU_EXTENDED_MAX,
    VCPU_MSR_SIZE, VCPU_XSAVE_MIN,
};
pub use error::{ErrorKind, Layer, Place, StreamError};
pub use libxl::{
    emulator_id, libxl_type, libxl_type_name, read_libxl_header, read_libxl_record,
    write_libxl_header, write_libxl_record, write_libxl_record_len, LibxlHeader, LibxlRecord,
    LIBXL_HDR_SIZE, LIBXL_IDENT, LIBXL_OPT_BIG_ENDIAN, LIBXL_OPT_LEGACY, LIBXL_VERSION,
};
pub use libxl_walk::{LibxlWalk, Walked};
pub use limits::{LibxlCaps, OverLimit, ReadCaps, Size, Unit};
pub use reader::{
    LibxcReader, ReadOptions, DHDR_SIZE, IHDR_ID, IHDR_MARKER, IHDR_OPT_BIG_ENDIAN, IHDR_SIZE,
    MAX_READ_PFNS,
};
pub use record::{
    hvm_param_name, libxc_type_name, rec_type, DomainHeader, DomainType, PageData, PfnEntry,
    Record, VcpuRecord, PAGE_DATA_PFN_MASK, PAGE_DATA_RESERVED_MASK, PAGE_DATA_TYPE_SHIFT,
};
pub use types::{PageType, TscInfo};
pub(crate) use wire::read_full;
pub use writer::LibxcWriter;
pub use xl::{
    read_xl_header, read_xl_header_capped, read_xl_header_info, read_xl_header_info_capped,
    write_xl_header, XlHeader, XlHeaderInfo, XL_BYTEORDER, XL_FLAG_JSON, XL_FLAG_STREAMV2,
    XL_HDR_SIZE, XL_MAGIC,
};

/// Guest page size; page_shift 12 everywhere.
pub const PAGE_SIZE: usize = 4096;
/// Most pfns the saver puts in one PAGE_DATA record (Xen's MAX_BATCH_SIZE,
/// also the limit of XEN_DOMCTL_getpageframeinfo3). Readers accept more.
pub const MAX_BATCH: usize = 1024;
/// Largest record body (`REC_LENGTH_MAX`): 128 MiB.
pub const REC_LENGTH_MAX: usize = 128 << 20;

/// Which layer a file starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// xl save-file header, then a libxl stream.
    Xl,
    /// libxl stream header.
    Libxl,
    /// Bare libxc image header.
    Libxc,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Xl => "xl",
            Format::Libxl => "libxl",
            Format::Libxc => "libxc",
        }
    }
}

/// Bytes [`detect`] needs to tell the formats apart.
pub const DETECT_LEN: usize = 8;

/// Which layer a file starts with, from its first bytes (at least
/// [`DETECT_LEN`]; more are compared too, up to each signature's length:
/// the xl magic, "LibxlFmt", or the libxc marker and "XENF").
pub fn detect(first: &[u8]) -> Option<Format> {
    if first.len() < DETECT_LEN {
        return None;
    }
    let mut libxc_sig = [0u8; 12];
    libxc_sig[..8].copy_from_slice(&IHDR_MARKER.to_be_bytes());
    libxc_sig[8..].copy_from_slice(&IHDR_ID.to_be_bytes());
    let sigs: [(&[u8], Format); 3] = [
        (XL_MAGIC, Format::Xl),
        (&LIBXL_IDENT.to_be_bytes(), Format::Libxl),
        (&libxc_sig, Format::Libxc),
    ];
    sigs.iter().find_map(|(sig, fmt)| {
        let n = sig.len().min(first.len());
        (first.get(..n) == sig.get(..n)).then_some(*fmt)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_recognises_each_layer_from_eight_bytes() {
        assert_eq!(detect(XL_MAGIC), Some(Format::Xl));
        assert_eq!(detect(&XL_MAGIC[..8]), Some(Format::Xl));
        assert_eq!(detect(b"LibxlFmt\0\0\0\x02"), Some(Format::Libxl));
        assert_eq!(detect(&[0xff; 8]), Some(Format::Libxc));
        assert_eq!(
            detect(b"\xff\xff\xff\xff\xff\xff\xff\xffXENF"),
            Some(Format::Libxc)
        );
        assert_eq!(detect(b"\xff\xff\xff\xff\xff\xff\xff\xffXENX"), None);
        assert_eq!(detect(&[0xff; 7]), None);
        assert_eq!(detect(b"LinuxGuestRecord"), None);
    }
}
