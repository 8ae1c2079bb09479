//! Body layouts of the libxc records (docs/REFERENCE.md §5): decoding with
//! every length and value rule, and encoding. The writer validates what it
//! encodes by decoding it again, so both sides apply exactly these rules.

use super::error::{invalid, ErrorKind};
use super::record::{rec_type, DomainType, PfnEntry, Record, VcpuRecord, PAGE_DATA_RESERVED_MASK};
use super::types::TscInfo;
use super::wire::Fields;
use super::PAGE_SIZE;

/// Size of `vcpu_guest_context` for 64-bit PV guests.
pub const VCPU_BASIC_SIZE_64: usize = 5168;
/// Size of `vcpu_guest_context` for 32-bit PV guests.
pub const VCPU_BASIC_SIZE_32: usize = 2800;
/// Largest X86_PV_VCPU_EXTENDED blob Xen's restore accepts.
pub const VCPU_EXTENDED_MAX: usize = 128;
/// Smallest non-empty X86_PV_VCPU_XSAVE blob (xcr0 + xcr0_accum).
pub const VCPU_XSAVE_MIN: usize = 16;
/// `xen_domctl_vcpu_msr_t`: u32 index, u32 reserved, u64 value.
pub const VCPU_MSR_SIZE: usize = 16;
/// `xen_cpuid_leaf_t`: six u32.
pub const CPUID_LEAF_SIZE: usize = 24;
/// `xen_msr_entry_t`: u32 idx, u32 flags, u64 val.
pub const MSR_ENTRY_SIZE: usize = 16;

/// What a record's body is checked against: facts from the headers and from
/// earlier records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyCtx {
    pub domain: DomainType,
    /// From X86_PV_INFO, once seen.
    pub guest_width: Option<u8>,
    /// Highest valid pfn of a PV guest, from X86_PV_P2M_FRAMES.
    pub max_pfn: Option<u64>,
    /// Also refuse what only Xen's verifier refuses (non-zero reserved fields).
    pub strict: bool,
}

fn reserved_zero(strict: bool, what: &str, value: u64) -> Result<(), ErrorKind> {
    if strict && value != 0 {
        Err(invalid(format!("{what} is {value:#x}, must be zero")))
    } else {
        Ok(())
    }
}

fn exact_len(body: &[u8], want: usize) -> Result<(), ErrorKind> {
    if body.len() != want {
        Err(invalid(format!("length is {}, must be {want}", body.len())))
    } else {
        Ok(())
    }
}

fn multiple_nonempty(body: &[u8], unit: usize, what: &str) -> Result<(), ErrorKind> {
    if body.is_empty() || body.len() % unit != 0 {
        Err(invalid(format!(
            "length is {}, must be a non-zero multiple of {unit} ({what})",
            body.len()
        )))
    } else {
        Ok(())
    }
}

/// Checks one PAGE_DATA entry (index `i`, wire value `raw`) and returns it.
pub(crate) fn check_pfn_entry(i: usize, raw: u64, ctx: &BodyCtx) -> Result<PfnEntry, ErrorKind> {
    if ctx.strict && raw & PAGE_DATA_RESERVED_MASK != 0 {
        return Err(invalid(format!(
            "pfn[{i}] = {raw:#018x} has reserved bits 52-59 set"
        )));
    }
    let e = PfnEntry::decode(raw);
    check_entry(i, e, ctx)?;
    Ok(e)
}

/// Checks a typed entry: known type, pfn within range.
pub(crate) fn check_entry(i: usize, e: PfnEntry, ctx: &BodyCtx) -> Result<(), ErrorKind> {
    if e.ty.0 > 0xF || !e.ty.is_known() {
        return Err(invalid(format!(
            "pfn[{i}] {:#x}: page type {:#x} is not a known type (valid: 0-4, 9-0xf)",
            e.pfn, e.ty.0
        )));
    }
    if e.pfn > super::record::PAGE_DATA_PFN_MASK {
        return Err(invalid(format!(
            "pfn[{i}] {:#x} does not fit in 52 bits",
            e.pfn
        )));
    }
    if ctx.domain == DomainType::X86Pv {
        match ctx.max_pfn {
            Some(max) if e.pfn <= max => {}
            Some(max) => {
                return Err(invalid(format!(
                    "pfn[{i}] {:#x} is beyond the guest's highest pfn {max:#x} (from X86_PV_P2M_FRAMES)",
                    e.pfn
                )))
            }
            None => {
                return Err(invalid("PAGE_DATA before X86_PV_P2M_FRAMES in a PV stream"));
            }
        }
    }
    Ok(())
}

/// Decodes the body of every record type except PAGE_DATA (read piecewise by
/// the reader) and unknown optional records (skipped unread).
pub(crate) fn decode_body(rtype: u32, body: &[u8], ctx: &BodyCtx) -> Result<Record, ErrorKind> {
    use rec_type::*;
    let mut f = Fields::new(body);
    let rec = match rtype {
        END | VERIFY | CHECKPOINT | STATIC_DATA_END => {
            if !body.is_empty() {
                return Err(invalid(format!(
                    "length is {}, must be 0 (the body is empty)",
                    body.len()
                )));
            }
            match rtype {
                END => Record::End,
                VERIFY => Record::Verify,
                CHECKPOINT => Record::Checkpoint,
                _ => Record::StaticDataEnd,
            }
        }
        X86_PV_INFO => {
            exact_len(body, 8)?;
            let guest_width = f.u8()?;
            let pt_levels = f.u8()?;
            let res16 = f.u16()?;
            let res32 = f.u32()?;
            if !matches!((guest_width, pt_levels), (4, 3) | (8, 4)) {
                return Err(invalid(format!(
                    "guest width {guest_width} with {pt_levels} page-table levels: only 4/3 and 8/4 are valid"
                )));
            }
            reserved_zero(
                ctx.strict,
                "reserved field",
                u64::from(res16) | u64::from(res32),
            )?;
            Record::X86PvInfo {
                guest_width,
                pt_levels,
            }
        }
        X86_PV_P2M_FRAMES => {
            if body.len() < 8 {
                return Err(invalid(format!(
                    "length is {}, must be at least 8",
                    body.len()
                )));
            }
            let start_pfn = f.u32()?;
            let end_pfn = f.u32()?;
            if start_pfn > end_pfn {
                return Err(invalid(format!(
                    "start pfn {start_pfn:#x} is above end pfn {end_pfn:#x}"
                )));
            }
            let width = ctx
                .guest_width
                .ok_or_else(|| invalid("X86_PV_P2M_FRAMES before X86_PV_INFO"))?;
            let fpp = (PAGE_SIZE / usize::from(width)) as u64;
            let n = (u64::from(end_pfn) / fpp + 1) - u64::from(start_pfn) / fpp;
            let want = 8 + 8 * n;
            if body.len() as u64 != want {
                return Err(invalid(format!(
                    "length is {}, must be 8 + 8 x {n} = {want} for pfns {start_pfn:#x}-{end_pfn:#x} ({fpp} entries per frame)",
                    body.len()
                )));
            }
            let mut frames = Vec::with_capacity(n as usize);
            for _ in 0..n {
                frames.push(f.u64()?);
            }
            Record::X86PvP2mFrames {
                start_pfn,
                end_pfn,
                frames,
            }
        }
        X86_PV_VCPU_BASIC | X86_PV_VCPU_EXTENDED | X86_PV_VCPU_XSAVE | X86_PV_VCPU_MSRS => {
            if body.len() < 8 {
                return Err(invalid(format!(
                    "length is {}, must be at least 8 (vCPU header)",
                    body.len()
                )));
            }
            let vcpu_id = f.u32()?;
            let res = f.u32()?;
            reserved_zero(ctx.strict, "reserved field", u64::from(res))?;
            let blob = f.rest();
            // Empty blobs are tolerated (spec errata 1: Xen 4.6-4.8 sent them).
            if !blob.is_empty() {
                check_vcpu_blob(rtype, blob.len(), ctx)?;
            }
            let v = VcpuRecord {
                vcpu_id,
                blob: blob.to_vec(),
            };
            match rtype {
                X86_PV_VCPU_BASIC => Record::X86PvVcpuBasic(v),
                X86_PV_VCPU_EXTENDED => Record::X86PvVcpuExtended(v),
                X86_PV_VCPU_XSAVE => Record::X86PvVcpuXsave(v),
                _ => Record::X86PvVcpuMsrs(v),
            }
        }
        SHARED_INFO => {
            exact_len(body, PAGE_SIZE)?;
            Record::SharedInfo(body.to_vec())
        }
        X86_TSC_INFO => {
            exact_len(body, 24)?;
            let mode = f.u32()?;
            let khz = f.u32()?;
            let nsec = f.u64()?;
            let incarnation = f.u32()?;
            let res = f.u32()?;
            reserved_zero(ctx.strict, "reserved field", u64::from(res))?;
            Record::X86TscInfo(TscInfo {
                mode,
                khz,
                nsec,
                incarnation,
            })
        }
        HVM_CONTEXT => {
            if body.is_empty() {
                return Err(invalid("HVM context is empty"));
            }
            Record::HvmContext(body.to_vec())
        }
        HVM_PARAMS => {
            if body.len() < 8 {
                return Err(invalid(format!(
                    "length is {}, must be at least 8",
                    body.len()
                )));
            }
            let count = f.u32()?;
            let res = f.u32()?;
            reserved_zero(ctx.strict, "reserved field", u64::from(res))?;
            let want = 8 + 16 * u64::from(count);
            if body.len() as u64 != want {
                return Err(invalid(format!(
                    "length is {}, must be 8 + 16 x {count} = {want}",
                    body.len()
                )));
            }
            let mut params = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let index = f.u64()?;
                let value = f.u64()?;
                params.push((index, value));
            }
            Record::HvmParams(params)
        }
        CHECKPOINT_DIRTY_PFN_LIST => {
            if body.len() % 8 != 0 {
                return Err(invalid(format!(
                    "length is {}, must be a multiple of 8",
                    body.len()
                )));
            }
            let mut pfns = Vec::with_capacity(body.len() / 8);
            for _ in 0..body.len() / 8 {
                pfns.push(f.u64()?);
            }
            Record::CheckpointDirtyPfnList(pfns)
        }
        X86_CPUID_POLICY => {
            multiple_nonempty(body, CPUID_LEAF_SIZE, "xen_cpuid_leaf_t")?;
            Record::X86CpuidPolicy(body.to_vec())
        }
        X86_MSR_POLICY => {
            multiple_nonempty(body, MSR_ENTRY_SIZE, "xen_msr_entry_t")?;
            Record::X86MsrPolicy(body.to_vec())
        }
        TOOLSTACK => return Err(invalid("TOOLSTACK records are refused by Xen's restore")),
        PAGE_DATA => return Err(invalid("PAGE_DATA body decoded out of place")),
        other => return Err(invalid(format!("unknown record type {other:#010x}"))),
    };
    Ok(rec)
}

/// Size rules of the vCPU blobs (`handle_x86_pv_vcpu_blob`).
fn check_vcpu_blob(rtype: u32, len: usize, ctx: &BodyCtx) -> Result<(), ErrorKind> {
    use rec_type::*;
    match rtype {
        X86_PV_VCPU_BASIC => {
            let want = match ctx.guest_width {
                Some(4) => VCPU_BASIC_SIZE_32,
                Some(_) => VCPU_BASIC_SIZE_64,
                None => return Err(invalid("vCPU record before X86_PV_INFO")),
            };
            if len != want {
                return Err(invalid(format!(
                    "vCPU context is {len} bytes, must be {want} for a {}-bit guest",
                    if want == VCPU_BASIC_SIZE_32 { 32 } else { 64 }
                )));
            }
        }
        X86_PV_VCPU_EXTENDED if len > VCPU_EXTENDED_MAX => {
            return Err(invalid(format!(
                "extended context is {len} bytes, at most {VCPU_EXTENDED_MAX} allowed"
            )))
        }
        X86_PV_VCPU_XSAVE if len < VCPU_XSAVE_MIN => {
            return Err(invalid(format!(
                "xsave blob is {len} bytes, at least {VCPU_XSAVE_MIN} needed"
            )))
        }
        X86_PV_VCPU_MSRS if len % VCPU_MSR_SIZE != 0 => {
            return Err(invalid(format!(
                "MSR blob is {len} bytes, must be a multiple of {VCPU_MSR_SIZE}"
            )))
        }
        _ => {}
    }
    Ok(())
}

/// Encodes the body of every record except PAGE_DATA (written with vectored
/// writes by the writer) and unknown optional records (never written).
pub(crate) fn encode_body(rec: &Record) -> Result<Vec<u8>, ErrorKind> {
    let mut b = Vec::new();
    match rec {
        Record::End | Record::Verify | Record::Checkpoint | Record::StaticDataEnd => {}
        Record::X86PvInfo {
            guest_width,
            pt_levels,
        } => {
            b.push(*guest_width);
            b.push(*pt_levels);
            b.extend_from_slice(&[0; 6]);
        }
        Record::X86PvP2mFrames {
            start_pfn,
            end_pfn,
            frames,
        } => {
            b.reserve(8 + 8 * frames.len());
            b.extend_from_slice(&start_pfn.to_le_bytes());
            b.extend_from_slice(&end_pfn.to_le_bytes());
            for fr in frames {
                b.extend_from_slice(&fr.to_le_bytes());
            }
        }
        Record::X86PvVcpuBasic(v)
        | Record::X86PvVcpuExtended(v)
        | Record::X86PvVcpuXsave(v)
        | Record::X86PvVcpuMsrs(v) => {
            b.reserve(8 + v.blob.len());
            b.extend_from_slice(&v.vcpu_id.to_le_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&v.blob);
        }
        Record::SharedInfo(d)
        | Record::HvmContext(d)
        | Record::X86CpuidPolicy(d)
        | Record::X86MsrPolicy(d) => b.extend_from_slice(d),
        Record::X86TscInfo(t) => {
            b.extend_from_slice(&t.mode.to_le_bytes());
            b.extend_from_slice(&t.khz.to_le_bytes());
            b.extend_from_slice(&t.nsec.to_le_bytes());
            b.extend_from_slice(&t.incarnation.to_le_bytes());
            b.extend_from_slice(&[0; 4]);
        }
        Record::HvmParams(params) => {
            let count = u32::try_from(params.len())
                .map_err(|_| invalid(format!("{} HVM params do not fit a u32 count", params.len())))?;
            b.reserve(8 + 16 * params.len());
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(&[0; 4]);
            for (i, v) in params {
                b.extend_from_slice(&i.to_le_bytes());
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        Record::CheckpointDirtyPfnList(pfns) => {
            b.reserve(8 * pfns.len());
            for p in pfns {
                b.extend_from_slice(&p.to_le_bytes());
            }
        }
        Record::PageData(_) => return Err(invalid("PAGE_DATA is encoded by the page writer")),
        Record::UnknownOptional { rtype, .. } => {
            return Err(invalid(format!(
                "unknown optional record {rtype:#010x} only exists on the read side and cannot be written"
            )))
        }
    }
    Ok(b)
}

/// Encodes the PAGE_DATA header and pfn array (the part before the pages),
/// after checking every entry; returns it with the number of data pages.
pub(crate) fn encode_page_header(
    entries: &[PfnEntry],
    ctx: &BodyCtx,
) -> Result<(Vec<u8>, usize), ErrorKind> {
    if entries.is_empty() {
        return Err(invalid(
            "count is 0 (a PAGE_DATA record needs at least one pfn)",
        ));
    }
    let count = u32::try_from(entries.len())
        .map_err(|_| invalid(format!("{} entries do not fit a u32 count", entries.len())))?;
    let mut b = Vec::with_capacity(8 + 8 * entries.len());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let mut data_pages = 0;
    for (i, e) in entries.iter().enumerate() {
        check_entry(i, *e, ctx)?;
        if e.ty.has_data() {
            data_pages += 1;
        }
        b.extend_from_slice(&e.encode().to_le_bytes());
    }
    Ok((b, data_pages))
}
