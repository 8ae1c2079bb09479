//! The walk of inspect and verify: each layer's headers and records in
//! input order, reported as they are read.

use super::describe::{describe_libxc, describe_libxl};
use super::report::{Item, Report};
use super::summary::{LibxcSummary, LibxlSummary, Summary, XlSummary};
use super::InspectError;
use crate::stream::{
    Layer, LibxcReader, LibxlCaps, LibxlRecord, LibxlWalk, ReadOptions, Record, Walked,
    XlHeaderInfo, XL_FLAG_JSON, XL_FLAG_STREAMV2,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read;

pub(super) struct Walker<'r, 'o> {
    pub(super) strict: bool,
    pub(super) report: &'r mut Report<'o>,
    pub(super) summary: Summary,
}

impl Walker<'_, '_> {
    pub(super) fn xl_header(&mut self, info: &XlHeaderInfo) -> Result<(), InspectError> {
        let h = &info.header;
        let mut flags = Vec::new();
        if h.mandatory_flags & XL_FLAG_JSON != 0 {
            flags.push("JSON");
        }
        if h.mandatory_flags & XL_FLAG_STREAMV2 != 0 {
            flags.push("STREAMv2");
        }
        self.summary.xl = Some(XlSummary {
            mandatory_flags: h.mandatory_flags,
            optional_flags: h.optional_flags,
            optional_data_len: info.optional_data_len,
            config_bytes: h.config.as_ref().map(|c| c.len()),
            config_json: h.config_is_json(),
        });
        self.report.item(Item {
            offset: 0,
            layer: Layer::Xl,
            index: None,
            name: "save-file header",
            code: None,
            length: info.size,
            text: format!(
                "mandatory flags {:#x} ({}), optional flags {:#x}, config {}",
                h.mandatory_flags,
                flags.join(", "),
                h.optional_flags,
                h.config
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |c| format!("{} bytes", c.len()))
            ),
            details: json!({
                "mandatory_flags": h.mandatory_flags,
                "optional_flags": h.optional_flags,
                "optional_data_len": info.optional_data_len,
                "config_bytes": h.config.as_ref().map(|c| c.len()),
            }),
        })
    }

    /// Reads one libxl record through the walk, adds it up and reports it;
    /// then checks where it stands (so that inspect shows the record a rule
    /// refuses).
    fn libxl_record<R: Read + ?Sized>(
        &mut self,
        walk: &mut LibxlWalk,
        r: &mut R,
        in_checkpoint: bool,
    ) -> Result<Walked, InspectError> {
        let w = walk.read(r)?;
        if let Some(l) = &mut self.summary.libxl {
            l.account(&w.rec);
        }
        let (text, details) = describe_libxl(&w.rec);
        self.report.item(Item {
            offset: w.offset,
            layer: Layer::Libxl,
            index: Some(w.index),
            name: w.rec.name(),
            code: Some(w.rec.type_code()),
            length: u64::from(w.length),
            text,
            details,
        })?;
        if in_checkpoint {
            walk.admit_in_checkpoint(&w)?;
        } else {
            walk.admit(&w)?;
        }
        Ok(w)
    }

    /// The libxl stream at `base`; returns the offset after its END.
    pub(super) fn libxl_stream<R: Read>(
        &mut self,
        r: &mut R,
        base: u64,
    ) -> Result<u64, InspectError> {
        let mut walk = LibxlWalk::new(base, self.strict, LibxlCaps::default());
        let hdr = walk.header(r)?;
        let legacy = hdr.options & crate::stream::LIBXL_OPT_LEGACY != 0;
        self.summary.libxl = Some(LibxlSummary {
            version: hdr.version,
            options: hdr.options,
            legacy,
            records: 0,
            records_by_type: BTreeMap::new(),
            xenstore_pairs: 0,
            emulator_context_bytes: 0,
        });
        self.report.item(Item {
            offset: base,
            layer: Layer::Libxl,
            index: None,
            name: "header",
            code: None,
            length: crate::stream::LIBXL_HDR_SIZE as u64,
            text: format!(
                "version {}, options {:#x}{}",
                hdr.version,
                hdr.options,
                if legacy {
                    " (converted from a legacy stream)"
                } else {
                    ""
                }
            ),
            details: json!({"version": hdr.version, "options": hdr.options}),
        })?;
        loop {
            let w = self.libxl_record(&mut walk, r, false)?;
            match w.rec {
                LibxlRecord::End => return Ok(walk.offset()),
                LibxlRecord::LibxcContext => {
                    let end = self.libxc_stream(r, walk.offset(), Some(&mut walk))?;
                    walk.skip_to(end);
                }
                _ => {}
            }
        }
    }

    /// The libxc stream at `base`; returns the offset after its END. Inside a
    /// libxl stream, each CHECKPOINT is followed by libxl records up to
    /// CHECKPOINT_END before libxc records resume.
    pub(super) fn libxc_stream<R: Read>(
        &mut self,
        r: &mut R,
        base: u64,
        mut libxl: Option<&mut LibxlWalk>,
    ) -> Result<u64, InspectError> {
        let mut rd = LibxcReader::with_options(
            &mut *r,
            ReadOptions {
                base_offset: base,
                strict: self.strict,
            },
        )?;
        let dh = rd.domain_header().clone();
        self.report.item(Item {
            offset: base,
            layer: Layer::Libxc,
            index: None,
            name: "image header",
            code: None,
            length: crate::stream::IHDR_SIZE as u64,
            text: format!("version {}, little endian", rd.version()),
            details: json!({"version": rd.version(), "options": rd.image_options()}),
        })?;
        self.report.item(Item {
            offset: base + crate::stream::IHDR_SIZE as u64,
            layer: Layer::Libxc,
            index: None,
            name: "domain header",
            code: None,
            length: crate::stream::DHDR_SIZE as u64,
            text: format!(
                "{}, page shift {}, Xen {}.{}",
                dh.domain_type.name(),
                dh.page_shift,
                dh.xen_major,
                dh.xen_minor
            ),
            details: json!({
                "domain_type": dh.domain_type,
                "page_shift": dh.page_shift,
                "xen_major": dh.xen_major,
                "xen_minor": dh.xen_minor,
            }),
        })?;
        self.summary.libxc = Some(LibxcSummary::new(rd.version(), &dh));
        if let Some(walk) = libxl.as_deref_mut() {
            walk.set_domain(dh.domain_type);
        }
        loop {
            let start = rd.offset();
            let index = rd.record_index();
            let rec = match rd.next_record()? {
                Some(rec) => rec,
                None => break,
            };
            let length = u64::from(rd.last_record_length());
            let note = match &mut self.summary.libxc {
                Some(c) => c.account(&rec, start, self.strict)?,
                None => None,
            };
            let (mut text, details) = describe_libxc(&rec);
            if let Some(n) = note {
                text.push_str(&format!(" [{n}]"));
            }
            self.report.item(Item {
                offset: start,
                layer: Layer::Libxc,
                index: Some(index),
                name: rec.name(),
                code: Some(rec.type_code()),
                length,
                text,
                details,
            })?;
            match rec {
                Record::End => break,
                Record::Checkpoint => {
                    if let Some(walk) = libxl.as_deref_mut() {
                        // libxl records up to CHECKPOINT_END, then libxc again.
                        walk.skip_to(rd.offset());
                        let before = rd.offset();
                        loop {
                            let w = self.libxl_record(walk, rd.get_mut(), true)?;
                            if matches!(w.rec, LibxlRecord::CheckpointEnd) {
                                break;
                            }
                        }
                        rd.skip_offset(walk.offset() - before);
                    }
                }
                _ => {}
            }
        }
        let end = rd.offset();
        if let Some(c) = &mut self.summary.libxc {
            c.bytes = end - base;
        }
        Ok(end)
    }
}
