//! The HVM context blob carried by HVM_CONTEXT (docs/REFERENCE.md §5.8): a sequence
//! of `{u16 typecode, u16 instance, u32 length}` descriptors, each followed
//! by `length` bytes, ended by a descriptor of typecode 0 and length 0.

use super::error::{Layer, Place, StreamError};
use super::wire::Fields;

/// Size of a descriptor.
pub const DESC_SIZE: usize = 8;
/// Typecode of the END descriptor.
pub const END: u16 = 0;
/// Typecode of the HEADER entry (always first).
pub const HEADER: u16 = 1;
/// Typecode of the per-vCPU CPU entry.
pub const CPU: u16 = 2;
/// `hvm_save_header.magic`.
pub const HVM_FILE_MAGIC: u32 = 0x5438_1286;

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

/// Splits a blob into its entries. Every descriptor must fit, the blob must
/// end with the END descriptor and nothing may follow it.
pub fn parse(blob: &[u8]) -> Result<Vec<Entry>, StreamError> {
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
            let trailing = blob.len() - off - DESC_SIZE;
            if trailing != 0 {
                return Err(fail(format!("{trailing} bytes follow the END descriptor")));
            }
            return Ok(entries);
        }
        let data = f.bytes(length).map_err(|_| {
            fail(format!(
                "{} (instance {instance}) claims {length} bytes, only {} left",
                typecode_name(typecode),
                blob.len() - off - DESC_SIZE
            ))
        })?;
        entries.push(Entry {
            typecode,
            instance,
            data: data.to_vec(),
        });
        off += DESC_SIZE + length;
    }
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
    let fail = |msg: String| {
        StreamError::invalid(Layer::HvmContext, msg)
            .with_place(Place::Entry { index: 0 })
            .with_offset(0)
    };
    let first = entries
        .first()
        .ok_or_else(|| fail("no entries: a HEADER entry must come first".into()))?;
    if first.typecode != HEADER {
        return Err(fail(format!(
            "first entry is {} ({}), must be HEADER (1)",
            typecode_name(first.typecode),
            first.typecode
        )));
    }
    let mut f = Fields::new(&first.data);
    let magic = f.u32().map_err(|_| fail("HEADER too short".into()))?;
    let version = f.u32().map_err(|_| fail("HEADER too short".into()))?;
    if magic != HVM_FILE_MAGIC {
        return Err(fail(format!(
            "HEADER magic is {magic:#010x}, must be {HVM_FILE_MAGIC:#010x}"
        )));
    }
    if version != 1 {
        return Err(fail(format!("HEADER version is {version}, must be 1")));
    }
    Ok(())
}
