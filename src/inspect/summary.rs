//! What a stream holds, layer by layer, as inspect and verify add it up.

use super::InspectError;
use crate::stream::{
    hvm_context, hvm_param_name, DomainHeader, DomainType, Format, Layer, LibxlRecord, Place,
    Record, StreamError, TscInfo,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The xl save-file header, as found.
#[derive(Debug, Clone, Serialize)]
pub struct XlSummary {
    pub mandatory_flags: u32,
    pub optional_flags: u32,
    pub optional_data_len: u32,
    /// Config text length without its NUL, if there is one.
    pub config_bytes: Option<usize>,
    pub config_json: bool,
}

/// The libxl layer, as found.
#[derive(Debug, Clone, Serialize)]
pub struct LibxlSummary {
    pub version: u32,
    pub options: u32,
    /// Produced by convert-legacy-stream.
    pub legacy: bool,
    pub records: u64,
    pub records_by_type: BTreeMap<String, u64>,
    pub xenstore_pairs: u64,
    pub emulator_context_bytes: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PvInfo {
    pub guest_width: u8,
    pub pt_levels: u8,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct P2mInfo {
    pub start_pfn: u32,
    pub end_pfn: u32,
    pub frames: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HvmEntryCount {
    pub typecode: u16,
    pub name: &'static str,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HvmParam {
    pub index: u64,
    pub name: &'static str,
    pub value: u64,
}

/// The libxc layer, as found.
#[derive(Debug, Clone, Serialize)]
pub struct LibxcSummary {
    pub version: u32,
    pub domain_type: DomainType,
    pub xen_major: u32,
    pub xen_minor: u32,
    pub page_shift: u16,
    /// Bytes of the libxc stream, headers included.
    pub bytes: u64,
    pub records: u64,
    pub records_by_type: BTreeMap<String, u64>,
    /// PAGE_DATA entries over all records, by page type.
    pub pages_by_type: BTreeMap<String, u64>,
    pub pfn_entries: u64,
    /// Pages whose contents the stream carries.
    pub pages_carried: u64,
    pub pfn_min: Option<u64>,
    pub pfn_max: Option<u64>,
    /// PV: distinct vCPUs with a BASIC record; HVM: CPU entries in the HVM
    /// context.
    pub vcpus: u64,
    pub pv_info: Option<PvInfo>,
    pub p2m_frames: Option<P2mInfo>,
    pub tsc: Option<TscInfo>,
    pub hvm_context_bytes: Option<u64>,
    /// Entries of the last HVM context, by type code.
    pub hvm_context_entries: Vec<HvmEntryCount>,
    /// Params of the last HVM_PARAMS record for each index.
    pub hvm_params: Vec<HvmParam>,
    pub cpuid_leaves: u64,
    pub msrs: u64,
    pub checkpoints: u64,
    pub unknown_optional: u64,
    #[serde(skip)]
    vcpu_ids: BTreeSet<u32>,
    #[serde(skip)]
    params: BTreeMap<u64, u64>,
}

/// What a file holds, layer by layer.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub format: Format,
    /// Bytes read, up to and including the last END.
    pub bytes: u64,
    pub xl: Option<XlSummary>,
    pub libxl: Option<LibxlSummary>,
    pub libxc: Option<LibxcSummary>,
}

impl LibxcSummary {
    /// An empty summary of a libxc stream with this domain header.
    pub(super) fn new(version: u32, dh: &DomainHeader) -> Self {
        LibxcSummary {
            version,
            domain_type: dh.domain_type,
            xen_major: dh.xen_major,
            xen_minor: dh.xen_minor,
            page_shift: dh.page_shift,
            bytes: 0,
            records: 0,
            records_by_type: BTreeMap::new(),
            pages_by_type: BTreeMap::new(),
            pfn_entries: 0,
            pages_carried: 0,
            pfn_min: None,
            pfn_max: None,
            vcpus: 0,
            pv_info: None,
            p2m_frames: None,
            tsc: None,
            hvm_context_bytes: None,
            hvm_context_entries: Vec::new(),
            hvm_params: Vec::new(),
            cpuid_leaves: 0,
            msrs: 0,
            checkpoints: 0,
            unknown_optional: 0,
            vcpu_ids: BTreeSet::new(),
            params: BTreeMap::new(),
        }
    }

    /// Adds a record to the summary. Returns a note for inspect when the HVM
    /// context does not parse (an error for verify).
    pub(super) fn account(
        &mut self,
        rec: &Record,
        at: u64,
        strict: bool,
    ) -> Result<Option<String>, InspectError> {
        let c = self;
        c.records += 1;
        *c.records_by_type.entry(rec.name().to_string()).or_default() += 1;
        let mut note = None;
        match rec {
            Record::PageData(pd) => {
                for e in &pd.entries {
                    *c.pages_by_type.entry(e.ty.name().to_string()).or_default() += 1;
                    c.pfn_min = Some(c.pfn_min.map_or(e.pfn, |m| m.min(e.pfn)));
                    c.pfn_max = Some(c.pfn_max.map_or(e.pfn, |m| m.max(e.pfn)));
                }
                c.pfn_entries += pd.entries.len() as u64;
                c.pages_carried += pd.pages_with_data() as u64;
            }
            Record::X86PvInfo {
                guest_width,
                pt_levels,
            } => {
                c.pv_info = Some(PvInfo {
                    guest_width: *guest_width,
                    pt_levels: *pt_levels,
                })
            }
            Record::X86PvP2mFrames {
                start_pfn,
                end_pfn,
                frames,
            } => {
                c.p2m_frames = Some(P2mInfo {
                    start_pfn: *start_pfn,
                    end_pfn: *end_pfn,
                    frames: frames.len() as u64,
                })
            }
            Record::X86PvVcpuBasic(v) => {
                c.vcpu_ids.insert(v.vcpu_id);
                c.vcpus = c.vcpu_ids.len() as u64;
            }
            Record::X86TscInfo(t) => c.tsc = Some(*t),
            Record::HvmContext(blob) => {
                c.hvm_context_bytes = Some(blob.len() as u64);
                c.hvm_context_entries.clear();
                let parsed = hvm_context::parse(blob).and_then(|entries| {
                    if strict {
                        hvm_context::check_header(&entries)?;
                    }
                    Ok(entries)
                });
                match parsed {
                    Ok(entries) => {
                        let mut by_code: BTreeMap<u16, u64> = BTreeMap::new();
                        for e in &entries {
                            *by_code.entry(e.typecode).or_default() += 1;
                        }
                        c.vcpus = by_code.get(&hvm_context::CPU).copied().unwrap_or(0);
                        c.hvm_context_entries = by_code
                            .into_iter()
                            .map(|(typecode, count)| HvmEntryCount {
                                typecode,
                                name: hvm_context::typecode_name(typecode),
                                count,
                            })
                            .collect();
                    }
                    Err(e) if strict => {
                        // Re-base the blob offset onto the input.
                        let blob_off = e.offset().unwrap_or(0);
                        return Err(StreamError::new(
                            Layer::HvmContext,
                            crate::stream::ErrorKind::Invalid(format!(
                                "in HVM_CONTEXT record at offset {at:#x}: {}",
                                e.rule().unwrap_or("unparsable")
                            )),
                        )
                        .with_place(e.place().unwrap_or(Place::Entry { index: 0 }))
                        .with_offset(at + 8 + blob_off)
                        .into());
                    }
                    Err(e) => note = Some(format!("unparsable: {e}")),
                }
            }
            Record::HvmParams(params) => {
                for (i, v) in params {
                    c.params.insert(*i, *v);
                }
                c.hvm_params = c
                    .params
                    .iter()
                    .map(|(&index, &value)| HvmParam {
                        index,
                        name: hvm_param_name(index),
                        value,
                    })
                    .collect();
            }
            Record::X86CpuidPolicy(b) => {
                c.cpuid_leaves = (b.len() / crate::stream::CPUID_LEAF_SIZE) as u64
            }
            Record::X86MsrPolicy(b) => c.msrs = (b.len() / crate::stream::MSR_ENTRY_SIZE) as u64,
            Record::Checkpoint => c.checkpoints += 1,
            Record::UnknownOptional { .. } => c.unknown_optional += 1,
            _ => {}
        }
        Ok(note)
    }
}

impl LibxlSummary {
    /// Adds a libxl record.
    pub(super) fn account(&mut self, rec: &LibxlRecord) {
        self.records += 1;
        *self
            .records_by_type
            .entry(rec.name().to_string())
            .or_default() += 1;
        match rec {
            LibxlRecord::EmulatorXenstoreData { pairs, .. } => {
                self.xenstore_pairs += pairs.len() as u64
            }
            LibxlRecord::EmulatorContext { blob, .. } => {
                self.emulator_context_bytes += blob.len() as u64
            }
            _ => {}
        }
    }
}
