//! One record in words (and as JSON details), for the report.

use crate::stream::{hvm_context, hvm_param_name, LibxlRecord, PageType, Record};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(super) fn describe_libxl(rec: &LibxlRecord) -> (String, Value) {
    match rec {
        LibxlRecord::EmulatorXenstoreData {
            emulator_id,
            index,
            pairs,
        } => (
            format!(
                "emulator {emulator_id} index {index}, {} pairs: {}",
                pairs.len(),
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            json!({"emulator_id": emulator_id, "emulator_index": index, "pairs": pairs}),
        ),
        LibxlRecord::EmulatorContext {
            emulator_id,
            index,
            blob,
        } => (
            format!(
                "emulator {emulator_id} index {index}, {} bytes of state",
                blob.len()
            ),
            json!({"emulator_id": emulator_id, "emulator_index": index, "state_bytes": blob.len()}),
        ),
        LibxlRecord::CheckpointState(id) => (format!("control id {id}"), json!({"control_id": id})),
        _ => (String::new(), json!({})),
    }
}

pub(super) fn describe_libxc(rec: &Record) -> (String, Value) {
    match rec {
        Record::PageData(pd) => {
            let mut by_type: BTreeMap<PageType, u64> = BTreeMap::new();
            let (mut lo, mut hi) = (u64::MAX, 0);
            for e in &pd.entries {
                *by_type.entry(e.ty).or_default() += 1;
                lo = lo.min(e.pfn);
                hi = hi.max(e.pfn);
            }
            let types = by_type
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let pages = pd.pages_with_data();
            let tmap: BTreeMap<String, u64> = by_type
                .iter()
                .map(|(t, n)| (t.name().to_string(), *n))
                .collect();
            (
                format!(
                    "pfns {lo:#x}-{hi:#x}, {} entries ({types}), {pages} pages",
                    pd.entries.len()
                ),
                json!({"pfn_first": lo, "pfn_last": hi, "entries": pd.entries.len(), "types": tmap, "pages": pages}),
            )
        }
        Record::X86PvInfo {
            guest_width,
            pt_levels,
        } => (
            format!(
                "{}-bit guest, {pt_levels} levels",
                u32::from(*guest_width) * 8
            ),
            json!({"guest_width": guest_width, "pt_levels": pt_levels}),
        ),
        Record::X86PvP2mFrames {
            start_pfn,
            end_pfn,
            frames,
        } => (
            format!("pfns {start_pfn:#x}-{end_pfn:#x}, {} frames", frames.len()),
            json!({"start_pfn": start_pfn, "end_pfn": end_pfn, "frames": frames.len()}),
        ),
        Record::X86PvVcpuBasic(v)
        | Record::X86PvVcpuExtended(v)
        | Record::X86PvVcpuXsave(v)
        | Record::X86PvVcpuMsrs(v) => (
            format!(
                "vcpu {}, {} bytes{}",
                v.vcpu_id,
                v.blob.len(),
                if v.blob.is_empty() {
                    " (empty, ignored)"
                } else {
                    ""
                }
            ),
            json!({"vcpu": v.vcpu_id, "blob_bytes": v.blob.len()}),
        ),
        Record::X86TscInfo(t) => (
            format!(
                "mode {}, {} kHz, {} ns, incarnation {}",
                t.mode, t.khz, t.nsec, t.incarnation
            ),
            json!({"tsc": t}),
        ),
        Record::HvmContext(b) => {
            let entries = hvm_context::parse(b).map(|e| e.len()).ok();
            (
                match entries {
                    Some(n) => format!("{n} entries"),
                    None => String::new(),
                },
                json!({"entries": entries}),
            )
        }
        Record::HvmParams(p) => (
            p.iter()
                .map(|(i, v)| format!("{}={v:#x}", hvm_param_name(*i)))
                .collect::<Vec<_>>()
                .join(" "),
            json!({"params": p.iter().map(|(i, v)| json!({"index": i, "name": hvm_param_name(*i), "value": v})).collect::<Vec<_>>()}),
        ),
        Record::X86CpuidPolicy(b) => {
            let n = b.len() / crate::stream::CPUID_LEAF_SIZE;
            (format!("{n} leaves"), json!({"leaves": n}))
        }
        Record::X86MsrPolicy(b) => {
            let n = b.len() / crate::stream::MSR_ENTRY_SIZE;
            (format!("{n} MSRs"), json!({"msrs": n}))
        }
        Record::CheckpointDirtyPfnList(p) => {
            (format!("{} pfns", p.len()), json!({"pfns": p.len()}))
        }
        Record::UnknownOptional { rtype, .. } => (
            format!("type {rtype:#010x}, skipped"),
            json!({"skipped": true}),
        ),
        _ => (String::new(), json!({})),
    }
}
