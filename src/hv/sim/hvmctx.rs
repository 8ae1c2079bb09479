//! The simulated hypervisor's side of the HVM context blob
//! (`XEN_DOMCTL_gethvmcontext` / `sethvmcontext`): what its guests' blobs
//! hold (Xen's public/arch-x86/hvm/save.h layouts) and the checks
//! `hvm_load` adds on top of the format. The format itself (descriptors,
//! HEADER, END) is parsed by [`crate::stream::hvm_context`] only.

use crate::hv::{HvError, Result};
use crate::stream::hvm_context::{self as fmt, Entry, Located};

pub use fmt::{HVM_FILE_MAGIC, HVM_FILE_VERSION};
pub const TYPE_HEADER: u16 = fmt::HEADER;
pub const TYPE_CPU: u16 = fmt::CPU;
pub const TYPE_PMTIMER: u16 = fmt::PMTIMER;
pub const TYPE_TSC_ADJUST: u16 = fmt::TSC_ADJUST;
/// Highest typecode Xen 4.17 knows (CPU_MSR).
pub const TYPE_MAX: u16 = fmt::MAX_TYPECODE;

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

fn bad(msg: String) -> HvError {
    HvError::Invalid {
        op: "HVM context",
        msg,
    }
}

/// Split a blob into entries (END excluded), as `hvm_load` accepts it: the
/// format's framing and HEADER, a HEADER of full size, no typecode Xen does
/// not know.
pub fn parse(blob: &[u8]) -> Result<Vec<Located>> {
    let (entries, _) = fmt::locate(blob).map_err(|e| bad(e.to_string()))?;
    fmt::check_header_located(blob, &entries).map_err(|e| bad(e.to_string()))?;
    if entries[0].body.len() < HEADER_SIZE {
        return Err(bad(format!("HEADER of {} bytes", entries[0].body.len())));
    }
    if let Some(e) = entries.iter().find(|e| e.typecode > TYPE_MAX) {
        return Err(bad(format!(
            "unknown entry type {} at offset {}",
            e.typecode,
            e.body.start - fmt::DESC_SIZE
        )));
    }
    Ok(entries)
}

/// Build a context: HEADER, one CPU per vCPU, PMTIMER, TSC_ADJUST per vCPU, END.
pub fn build(cpuid1_eax: u32, gtsc_khz: u32, cpus: &[Vec<u8>]) -> Vec<u8> {
    let mut hdr = vec![0u8; HEADER_SIZE];
    hdr[0..4].copy_from_slice(&HVM_FILE_MAGIC.to_le_bytes());
    hdr[4..8].copy_from_slice(&HVM_FILE_VERSION.to_le_bytes());
    hdr[16..20].copy_from_slice(&cpuid1_eax.to_le_bytes());
    hdr[20..24].copy_from_slice(&gtsc_khz.to_le_bytes());
    let entry = |typecode, instance: usize, data: Vec<u8>| Entry {
        typecode,
        instance: instance as u16,
        data,
    };
    let mut entries = vec![entry(TYPE_HEADER, 0, hdr)];
    entries.extend(
        cpus.iter()
            .enumerate()
            .map(|(i, c)| entry(TYPE_CPU, i, c.clone())),
    );
    entries.push(entry(TYPE_PMTIMER, 0, vec![0u8; PMTIMER_SIZE]));
    entries.extend((0..cpus.len()).map(|i| entry(TYPE_TSC_ADJUST, i, vec![0u8; TSC_ADJUST_SIZE])));
    fmt::build(&entries)
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
        // HEADER, 2 CPUs, PMTIMER, 2 TSC_ADJUST (END not listed).
        assert_eq!(e.len(), 6);
        assert_eq!(e.last().unwrap().typecode, TYPE_TSC_ADJUST);
        assert_eq!(cpu_record(&blob, 1).unwrap().len(), CPU_SIZE);
        assert!(cpu_record(&blob, 2).is_err());
        assert!(parse(&blob[..blob.len() - 8]).is_err(), "END missing");
        let mut bad = blob.clone();
        bad[8] ^= 0xff;
        assert!(parse(&bad).is_err(), "bad magic");
        // As hvm_load: bytes after END are not looked at; unknown types are refused.
        let mut trailing = blob.clone();
        trailing.extend_from_slice(&[0xaa; 4]);
        assert_eq!(parse(&trailing).unwrap().len(), 6);
        let mut unknown = blob.clone();
        let pmtimer = e[3].body.start - 8;
        unknown[pmtimer..pmtimer + 2].copy_from_slice(&(TYPE_MAX + 1).to_le_bytes());
        assert!(parse(&unknown).is_err(), "unknown typecode");
    }
}
