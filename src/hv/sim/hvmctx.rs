//! The HVM context blob (`XEN_DOMCTL_gethvmcontext`): a sequence of
//! `{u16 typecode, u16 instance, u32 length}` descriptors each followed by
//! `length` bytes, from HEADER (1) to END (0). Layouts from Xen's
//! public/arch-x86/hvm/save.h.

use crate::hv::{HvError, Result};

pub const HVM_FILE_MAGIC: u32 = 0x5438_1286;
pub const HVM_FILE_VERSION: u32 = 1;

pub const TYPE_END: u16 = 0;
pub const TYPE_HEADER: u16 = 1;
pub const TYPE_CPU: u16 = 2;
pub const TYPE_PMTIMER: u16 = 13;
pub const TYPE_TSC_ADJUST: u16 = 19;
/// Highest typecode Xen 4.17 knows (CPU_MSR).
pub const TYPE_MAX: u16 = 20;

pub const HEADER_SIZE: usize = 24;
/// `struct hvm_hw_cpu`: 1024 bytes up to error_code, then u32 flags + pad.
pub const CPU_SIZE: usize = 1032;
pub const PMTIMER_SIZE: usize = 8;
pub const TSC_ADJUST_SIZE: usize = 8;

/// Offsets in `struct hvm_hw_cpu`: FPU area, then 16 GPRs in this order.
pub mod cpu {
    pub const RAX: usize = 512;
    pub const RBX: usize = 520;
    pub const RCX: usize = 528;
    pub const RDX: usize = 536;
    pub const RBP: usize = 544;
    pub const RSI: usize = 552;
    pub const RDI: usize = 560;
    pub const RSP: usize = 568;
    pub const R8: usize = 576;
    pub const R12: usize = 608;
    pub const R13: usize = 616;
    pub const R14: usize = 624;
    pub const R15: usize = 632;
    pub const RIP: usize = 640;
    pub const RFLAGS: usize = 648;
    pub const CR0: usize = 656;
    pub const CR3: usize = 672;
    pub const CR4: usize = 680;
    pub const MSR_EFER: usize = 992;
    pub const FLAGS: usize = 1024;
    /// XEN_X86_FPU_INITIALISED
    pub const FPU_INITIALISED: u32 = 1;
}

const DESC_SIZE: usize = 8;

/// One entry: typecode, instance, and the byte range of its body in the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub typecode: u16,
    pub instance: u16,
    pub body: std::ops::Range<usize>,
}

fn bad(msg: String) -> HvError {
    HvError::Invalid {
        op: "HVM context",
        msg,
    }
}

/// Split a blob into entries, checking the framing, the header and the END.
pub fn parse(blob: &[u8]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    loop {
        let d = blob
            .get(off..off + DESC_SIZE)
            .ok_or_else(|| bad(format!("truncated at offset {off} (no END entry)")))?;
        let typecode = u16::from_le_bytes([d[0], d[1]]);
        let instance = u16::from_le_bytes([d[2], d[3]]);
        let len = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
        let start = off + DESC_SIZE;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= blob.len())
            .ok_or_else(|| {
                bad(format!(
                    "entry type {typecode} at {off}: length {len} overruns the blob"
                ))
            })?;
        if out.is_empty() && typecode != TYPE_HEADER {
            return Err(bad(format!("first entry is type {typecode}, not HEADER")));
        }
        if typecode > TYPE_MAX {
            return Err(bad(format!(
                "unknown entry type {typecode} at offset {off}"
            )));
        }
        out.push(Entry {
            typecode,
            instance,
            body: start..end,
        });
        off = end;
        if typecode == TYPE_END {
            break;
        }
    }
    let hdr = &blob[out[0].body.clone()];
    if hdr.len() < HEADER_SIZE {
        return Err(bad(format!("HEADER of {} bytes", hdr.len())));
    }
    let magic = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let version = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    if magic != HVM_FILE_MAGIC || version != HVM_FILE_VERSION {
        return Err(bad(format!("HEADER magic {magic:#x} version {version}")));
    }
    Ok(out)
}

fn push(out: &mut Vec<u8>, typecode: u16, instance: u16, body: &[u8]) {
    out.extend_from_slice(&typecode.to_le_bytes());
    out.extend_from_slice(&instance.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// Build a context: HEADER, one CPU per vCPU, PMTIMER, TSC_ADJUST per vCPU, END.
pub fn build(cpuid1_eax: u32, gtsc_khz: u32, cpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut hdr = [0u8; HEADER_SIZE];
    hdr[0..4].copy_from_slice(&HVM_FILE_MAGIC.to_le_bytes());
    hdr[4..8].copy_from_slice(&HVM_FILE_VERSION.to_le_bytes());
    hdr[16..20].copy_from_slice(&cpuid1_eax.to_le_bytes());
    hdr[20..24].copy_from_slice(&gtsc_khz.to_le_bytes());
    push(&mut out, TYPE_HEADER, 0, &hdr);
    for (i, c) in cpus.iter().enumerate() {
        push(&mut out, TYPE_CPU, i as u16, c);
    }
    push(&mut out, TYPE_PMTIMER, 0, &[0u8; PMTIMER_SIZE]);
    for i in 0..cpus.len() {
        push(&mut out, TYPE_TSC_ADJUST, i as u16, &[0u8; TSC_ADJUST_SIZE]);
    }
    push(&mut out, TYPE_END, 0, &[]);
    out
}

/// Byte range of vCPU `vcpu`'s CPU record.
pub fn cpu_record(blob: &[u8], vcpu: u16) -> Result<std::ops::Range<usize>> {
    let e = parse(blob)?
        .into_iter()
        .find(|e| e.typecode == TYPE_CPU && e.instance == vcpu)
        .ok_or_else(|| bad(format!("no CPU entry for vcpu {vcpu}")))?;
    if e.body.len() < CPU_SIZE - 8 {
        return Err(bad(format!("CPU entry of {} bytes", e.body.len())));
    }
    Ok(e.body)
}

pub fn get(rec: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&rec[off..off + 8]);
    u64::from_le_bytes(b)
}

pub fn set(rec: &mut [u8], off: usize, v: u64) {
    rec[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse() {
        let cpus = vec![vec![0u8; CPU_SIZE]; 2];
        let blob = build(0x806ec, 3_000_000, &cpus);
        let e = parse(&blob).unwrap();
        assert_eq!(e.first().unwrap().typecode, TYPE_HEADER);
        assert_eq!(e.last().unwrap().typecode, TYPE_END);
        assert_eq!(cpu_record(&blob, 1).unwrap().len(), CPU_SIZE);
        assert!(cpu_record(&blob, 2).is_err());
        assert!(parse(&blob[..blob.len() - 8]).is_err(), "END missing");
        let mut bad = blob.clone();
        bad[8] ^= 0xff;
        assert!(parse(&bad).is_err(), "bad magic");
    }
}
