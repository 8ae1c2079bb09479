//! The HVM context blob carried by HVM_CONTEXT (docs/REFERENCE.md §5.8): a sequence
//! of `{u16 typecode, u16 instance, u32 length}` descriptors, each followed
//! by `length` bytes, ended by a descriptor of typecode 0 and length 0.

use super::error::{Layer, Place, StreamError};
use super::wire::Fields;
use std::ops::Range;

/// Size of a descriptor.
pub const DESC_SIZE: usize = 8;
/// Typecode of the END descriptor.
pub const END: u16 = 0;
/// Typecode of the HEADER entry (always first).
pub const HEADER: u16 = 1;
/// Typecode of the per-vCPU CPU entry.
pub const CPU: u16 = 2;
/// Typecode of the per-vCPU TSC_ADJUST entry.
pub const TSC_ADJUST: u16 = 19;
/// Typecode of the PMTIMER entry.
pub const PMTIMER: u16 = 13;
/// Highest typecode Xen 4.17 knows (CPU_MSR).
pub const MAX_TYPECODE: u16 = 20;
/// `hvm_save_header.magic`.
pub const HVM_FILE_MAGIC: u32 = 0x5438_1286;
/// `hvm_save_header.version`.
pub const HVM_FILE_VERSION: u32 = 1;

/// One save entry (END excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub typecode: u16,
    pub instance: u16,
    pub data: Vec<u8>,
}

/// Name of a save typecode (`xen/include/public/arch-x86/hvm/save.h`).
pub fn typecode_name(t: u16) -> &'static str {
    match t {
        0 => "END",
        1 => "HEADER",
        2 => "CPU",
        3 => "PIC",
        4 => "IOAPIC",
        5 => "LAPIC",
        6 => "LAPIC_REGS",
        7 => "PCI_IRQ",
        8 => "ISA_IRQ",
        9 => "PCI_LINK",
        10 => "PIT",
        11 => "RTC",
        12 => "HPET",
        13 => "PMTIMER",
        14 => "MTRR",
        15 => "VIRIDIAN_DOMAIN",
        16 => "CPU_XSAVE",
        17 => "VIRIDIAN_VCPU",
        18 => "VMCE_VCPU",
        19 => "TSC_ADJUST",
        20 => "CPU_MSR",
        _ => "UNKNOWN",
    }
}

/// One entry where it lies in the blob (END excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub typecode: u16,
    pub instance: u16,
    /// Byte range of the entry's body in the blob.
    pub body: Range<usize>,
}

/// Walks the descriptors from the start of the blob to the END descriptor:
/// every descriptor and body must fit, END must have length 0. Returns the
/// entries and the offset just past END. What follows END is not looked at
/// (Xen's `hvm_load` stops there too); [`parse`] refuses it.
pub fn locate(blob: &[u8]) -> Result<(Vec<Located>, usize), StreamError> {
    let mut entries = Vec::new();
    let mut f = Fields::new(blob);
    let mut off = 0usize;
    loop {
        let index = entries.len() as u64;
        let fail = |msg: String| {
            StreamError::invalid(Layer::HvmContext, msg)
                .with_place(Place::Entry { index })
                .with_offset(off as u64)
        };
        if blob.len() - off < DESC_SIZE {
            return Err(fail(format!(
                "{} bytes left, too short for a descriptor (the blob must end with an END descriptor)",
                blob.len() - off
            )));
        }
        let typecode = f.u16().map_err(|k| fail(k.to_string()))?;
        let instance = f.u16().map_err(|k| fail(k.to_string()))?;
        let length = f.u32().map_err(|k| fail(k.to_string()))? as usize;
        if typecode == END {
            if length != 0 {
                return Err(fail(format!("END descriptor with length {length}")));
            }
            return Ok((entries, off + DESC_SIZE));
        }
        f.bytes(length).map_err(|_| {
            fail(format!(
                "{} (instance {instance}) claims {length} bytes, only {} left",
                typecode_name(typecode),
                blob.len() - off - DESC_SIZE
            ))
        })?;
        let body = off + DESC_SIZE..off + DESC_SIZE + length;
        entries.push(Located {
            typecode,
            instance,
            body,
        });
        off += DESC_SIZE + length;
    }
}

/// Splits a blob into its entries. Every descriptor must fit, the blob must
/// end with the END descriptor and nothing may follow it.
pub fn parse(blob: &[u8]) -> Result<Vec<Entry>, StreamError> {
    let (located, end) = locate(blob)?;
    let trailing = blob.len() - end;
    if trailing != 0 {
        return Err(StreamError::invalid(
            Layer::HvmContext,
            format!("{trailing} bytes follow the END descriptor"),
        )
        .with_place(Place::Entry {
            index: located.len() as u64,
        })
        .with_offset((end - DESC_SIZE) as u64));
    }
    Ok(located
        .into_iter()
        .map(|l| Entry {
            typecode: l.typecode,
            instance: l.instance,
            data: blob[l.body].to_vec(),
        })
        .collect())
}

/// Builds a blob from entries (END excluded: it is appended).
pub fn build(entries: &[Entry]) -> Vec<u8> {
    let size = entries
        .iter()
        .map(|e| DESC_SIZE + e.data.len())
        .sum::<usize>()
        + DESC_SIZE;
    let mut b = Vec::with_capacity(size);
    for e in entries {
        b.extend_from_slice(&e.typecode.to_le_bytes());
        b.extend_from_slice(&e.instance.to_le_bytes());
        b.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&e.data);
    }
    b.extend_from_slice(&[0; DESC_SIZE]);
    b
}

/// Checks that the first entry is a well-formed HEADER (magic, version 1).
pub fn check_header(entries: &[Entry]) -> Result<(), StreamError> {
    header_rule(entries.first().map(|e| (e.typecode, e.data.as_slice())))
}

/// [`check_header`] on located entries of `blob`.
pub fn check_header_located(blob: &[u8], entries: &[Located]) -> Result<(), StreamError> {
    header_rule(
        entries
            .first()
            .map(|e| (e.typecode, blob.get(e.body.clone()).unwrap_or(&[]))),
    )
}

fn header_rule(first: Option<(u16, &[u8])>) -> Result<(), StreamError> {
    let fail = |msg: String| {
        StreamError::invalid(Layer::HvmContext, msg)
            .with_place(Place::Entry { index: 0 })
            .with_offset(0)
    };
    let (typecode, data) =
        first.ok_or_else(|| fail("no entries: a HEADER entry must come first".into()))?;
    if typecode != HEADER {
        return Err(fail(format!(
            "first entry is {} ({}), must be HEADER (1)",
            typecode_name(typecode),
            typecode
        )));
    }
    let mut f = Fields::new(data);
    let magic = f.u32().map_err(|_| fail("HEADER too short".into()))?;
    let version = f.u32().map_err(|_| fail("HEADER too short".into()))?;
    if magic != HVM_FILE_MAGIC {
        return Err(fail(format!(
            "HEADER magic is {magic:#010x}, must be {HVM_FILE_MAGIC:#010x}"
        )));
    }
    if version != HVM_FILE_VERSION {
        return Err(fail(format!(
            "HEADER version is {version}, must be {HVM_FILE_VERSION}"
        )));
    }
    Ok(())
}
