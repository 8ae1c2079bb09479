//! Fixed, plausible CPU facts of the simulated host: the CPU policy (CPUID
//! leaves in the 24-byte `xen_cpuid_leaf_t` layout, MSRs in the 16-byte
//! `xen_msr_entry_t` layout), TSC info, and the static PV vCPU blobs.

use crate::hv::{CpuPolicy, HvError, Result, TscInfo};

/// CPUID.1:EAX of the simulated CPU (family 6 model 0x8e stepping 0xc).
pub const CPUID1_EAX: u32 = 0x0008_06ec;
pub const TSC_KHZ: u32 = 2_904_000;
const NO_SUBLEAF: u32 = 0xFFFF_FFFF;

fn leaf(out: &mut Vec<u8>, l: u32, s: u32, r: [u32; 4]) {
    for v in [l, s, r[0], r[1], r[2], r[3]] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn msr(out: &mut Vec<u8>, idx: u32, val: u64) {
    out.extend_from_slice(&idx.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&val.to_le_bytes());
}

pub fn default_policy() -> CpuPolicy {
    let mut cpuid = Vec::new();
    // "GenuineIntel", max basic leaf 0xd.
    leaf(
        &mut cpuid,
        0,
        NO_SUBLEAF,
        [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
    );
    leaf(
        &mut cpuid,
        1,
        NO_SUBLEAF,
        [CPUID1_EAX, 0x0010_0800, 0xf6fa_3203, 0x178b_fbff],
    );
    leaf(&mut cpuid, 7, 0, [0, 0x009c_6fbb, 0, 0xbc00_0400]);
    leaf(&mut cpuid, 0xd, 0, [0x3, 0x240, 0x240, 0]);
    leaf(&mut cpuid, 0xd, 1, [0x1, 0, 0, 0]);
    leaf(&mut cpuid, 0x8000_0000, NO_SUBLEAF, [0x8000_0008, 0, 0, 0]);
    leaf(
        &mut cpuid,
        0x8000_0001,
        NO_SUBLEAF,
        [0, 0, 0x121, 0x2c10_0800],
    );
    leaf(&mut cpuid, 0x8000_0008, NO_SUBLEAF, [0x3027, 0, 0, 0]);
    let mut msrs = Vec::new();
    msr(&mut msrs, 0xce, 0x8000_0000); // MSR_INTEL_PLATFORM_INFO: cpuid faulting
    msr(&mut msrs, 0x10a, 0x0c00_006b); // MSR_ARCH_CAPABILITIES
    CpuPolicy { cpuid, msrs }
}

/// As `xc_set_domain_cpu_policy` would refuse: wrong element sizes, or a
/// vendor other than the host's.
pub fn check_policy(p: &CpuPolicy) -> Result<()> {
    let bad = |msg: String| {
        Err(HvError::Invalid {
            op: "set_cpu_policy",
            msg,
        })
    };
    if p.cpuid.len() % 24 != 0 || p.msrs.len() % 16 != 0 {
        return bad(format!(
            "CPUID policy of {} bytes / MSR policy of {} bytes are not whole entries",
            p.cpuid.len(),
            p.msrs.len()
        ));
    }
    for e in p.cpuid.chunks_exact(24) {
        let w = |i: usize| u32::from_le_bytes([e[4 * i], e[4 * i + 1], e[4 * i + 2], e[4 * i + 3]]);
        if w(0) == 0 && (w(3), w(4), w(5)) != (0x756e_6547, 0x6c65_746e, 0x4965_6e69) {
            return bad("CPUID vendor is not GenuineIntel, the host's vendor".into());
        }
    }
    for e in p.msrs.chunks_exact(16) {
        if e[4..8] != [0, 0, 0, 0] {
            return bad("MSR policy entry with non-zero flags".into());
        }
    }
    Ok(())
}

pub fn default_tsc() -> TscInfo {
    TscInfo {
        mode: 0, // TSC_MODE_DEFAULT
        khz: TSC_KHZ,
        nsec: 0,
        incarnation: 0,
    }
}

/// `xen_domctl_ext_vcpucontext` as Xen 4.17 reports it for a PV vCPU.
pub fn ext_vcpu_blob(vcpu: u32) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[0..4].copy_from_slice(&vcpu.to_le_bytes());
    b[4..8].copy_from_slice(&64u32.to_le_bytes());
    b
}

/// `XEN_DOMCTL_getvcpuextstate`: xcr0, xcr0_accum, then an uncompressed
/// XSAVE area for x87|SSE (512-byte legacy region + 64-byte header).
pub fn xsave_blob() -> Vec<u8> {
    let mut b = vec![0u8; 16 + 576];
    b[0..8].copy_from_slice(&3u64.to_le_bytes());
    b[8..16].copy_from_slice(&3u64.to_le_bytes());
    b[16..18].copy_from_slice(&0x37fu16.to_le_bytes()); // FCW
    b[16 + 24..16 + 28].copy_from_slice(&0x1f80u32.to_le_bytes()); // MXCSR
    b
}
