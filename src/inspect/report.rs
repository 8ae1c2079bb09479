//! How inspect and verify print: one line (or JSON object) per header and
//! record, then a summary or a verdict.

use super::summary::Summary;
use super::InspectError;
use crate::stream::{libxc_type_name, Layer, PAGE_SIZE};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, Write};

/// Where a walk reports what it finds.
pub(super) struct Report<'a> {
    pub(super) out: &'a mut dyn Write,
    pub(super) json: bool,
    /// Print each header and record (inspect), or only the verdict (verify).
    pub(super) records: bool,
}

/// One header or record, for the report.
pub(super) struct Item<'a> {
    pub(super) offset: u64,
    pub(super) layer: Layer,
    pub(super) index: Option<u64>,
    pub(super) name: &'a str,
    pub(super) code: Option<u32>,
    pub(super) length: u64,
    pub(super) text: String,
    pub(super) details: Value,
}

impl Report<'_> {
    pub(super) fn item(&mut self, it: Item<'_>) -> Result<(), InspectError> {
        if !self.records {
            return Ok(());
        }
        if self.json {
            let mut v = json!({
                "event": "record",
                "offset": it.offset,
                "layer": it.layer,
                "index": it.index,
                "type": it.name,
                "code": it.code,
                "length": it.length,
            });
            if let (Value::Object(m), Value::Object(d)) = (&mut v, it.details) {
                m.extend(d);
            }
            writeln!(self.out, "{v}").map_err(InspectError::Output)
        } else {
            let index = it.index.map_or_else(|| "-".to_string(), |i| i.to_string());
            writeln!(
                self.out,
                "{:#012x}  {:<6} {:>7}  {:<26} {:>10}  {}",
                it.offset,
                it.layer.name(),
                index,
                it.name,
                it.length,
                it.text
            )
            .map_err(InspectError::Output)
        }
    }

    pub(super) fn heading(&mut self) -> Result<(), InspectError> {
        if self.records && !self.json {
            writeln!(
                self.out,
                "{:>12}  {:<6} {:>7}  {:<26} {:>10}  DETAILS",
                "OFFSET", "LAYER", "#", "TYPE", "LENGTH"
            )
            .map_err(InspectError::Output)?;
        }
        Ok(())
    }

    pub(super) fn finish(
        &mut self,
        res: &Result<Summary, InspectError>,
        verdict_only: bool,
    ) -> Result<(), InspectError> {
        let w = &mut *self.out;
        let r = match (res, self.json) {
            (Ok(s), true) => {
                let v = if verdict_only {
                    json!({"ok": true, "summary": s})
                } else {
                    json!({"event": "summary", "ok": true, "summary": s})
                };
                writeln!(w, "{v}")
            }
            (Err(e), true) => {
                let mut v = json!({"ok": false, "error": error_json(e)});
                if !verdict_only {
                    if let Value::Object(m) = &mut v {
                        m.insert("event".into(), json!("error"));
                    }
                }
                writeln!(w, "{v}")
            }
            (Ok(s), false) if verdict_only => writeln!(w, "OK: {}", one_line(s)),
            (Ok(s), false) => print_summary(w, s),
            (Err(e), false) => writeln!(w, "FAILED: {e}"),
        };
        r.and_then(|_| w.flush()).map_err(InspectError::Output)
    }
}

fn error_json(e: &InspectError) -> Value {
    match e {
        InspectError::Stream(se) => {
            let rtype = se.record_type();
            let type_name = rtype.map(|t| match se.layer() {
                Layer::Libxl => crate::stream::libxl_type_name(t),
                _ => libxc_type_name(t),
            });
            json!({
                "message": se.to_string(),
                "kind": if se.is_eof() { "truncated" } else if se.rule().is_some() { "invalid" } else { "io" },
                "layer": se.layer(),
                "record_index": se.record_index(),
                "record_type": rtype,
                "record_type_name": type_name,
                "offset": se.offset(),
                "rule": se.rule(),
            })
        }
        InspectError::Unrecognised(m) => json!({"message": m, "kind": "unrecognised"}),
        InspectError::Unsupported(m) => json!({"message": m, "kind": "unsupported"}),
        InspectError::Output(io) => json!({"message": io.to_string(), "kind": "output"}),
    }
}

fn layers_line(s: &Summary) -> String {
    let mut parts = Vec::new();
    if s.xl.is_some() {
        parts.push("xl save file".to_string());
    }
    if let Some(l) = &s.libxl {
        parts.push(format!("libxl v{}", l.version));
    }
    if let Some(c) = &s.libxc {
        parts.push(format!("libxc v{}", c.version));
    }
    parts.join(" -> ")
}

fn one_line(s: &Summary) -> String {
    let mut line = layers_line(s);
    if let Some(c) = &s.libxc {
        line.push_str(&format!(
            ", {} from Xen {}.{}: {} records, {} pages ({}), {} vCPU{}",
            c.domain_type.name(),
            c.xen_major,
            c.xen_minor,
            c.records,
            c.pages_carried,
            mib(c.pages_carried * PAGE_SIZE as u64),
            c.vcpus,
            if c.vcpus == 1 { "" } else { "s" }
        ));
    }
    line.push_str(&format!(", {} bytes", s.bytes));
    line
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_summary(w: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(w, "summary:")?;
    writeln!(w, "  layers          {}", layers_line(s))?;
    writeln!(w, "  bytes           {}", s.bytes)?;
    if let Some(x) = &s.xl {
        writeln!(
            w,
            "  xl config       {}",
            match x.config_bytes {
                Some(n) => format!("{n} bytes{}", if x.config_json { " (JSON)" } else { "" }),
                None => "none".into(),
            }
        )?;
    }
    if let Some(c) = &s.libxc {
        writeln!(
            w,
            "  domain          {}, page shift {}, from Xen {}.{}{}",
            c.domain_type.name(),
            c.page_shift,
            c.xen_major,
            c.xen_minor,
            if c.xen_major == 0 {
                " (legacy-converted)"
            } else {
                ""
            }
        )?;
        writeln!(
            w,
            "  libxc records   {} ({})",
            c.records,
            counts(&c.records_by_type)
        )?;
        let range = match (c.pfn_min, c.pfn_max) {
            (Some(a), Some(b)) => format!(", pfns {a:#x}-{b:#x}"),
            _ => String::new(),
        };
        writeln!(w, "  pfn entries     {}{range}", c.pfn_entries)?;
        writeln!(w, "  pages by type   {}", counts(&c.pages_by_type))?;
        writeln!(
            w,
            "  pages carried   {} ({})",
            c.pages_carried,
            mib(c.pages_carried * PAGE_SIZE as u64)
        )?;
        writeln!(w, "  vCPUs           {}", c.vcpus)?;
        if let Some(p) = c.pv_info {
            writeln!(
                w,
                "  PV guest        {}-bit, {} page-table levels",
                u32::from(p.guest_width) * 8,
                p.pt_levels
            )?;
        }
        if let Some(p) = c.p2m_frames {
            writeln!(
                w,
                "  P2M frames      {} for pfns {:#x}-{:#x}",
                p.frames, p.start_pfn, p.end_pfn
            )?;
        }
        if let Some(t) = c.tsc {
            writeln!(
                w,
                "  TSC             mode {}, {} kHz, {} ns, incarnation {}",
                t.mode, t.khz, t.nsec, t.incarnation
            )?;
        }
        if let Some(n) = c.hvm_context_bytes {
            let entries = c
                .hvm_context_entries
                .iter()
                .map(|e| format!("{}({}) x{}", e.name, e.typecode, e.count))
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(w, "  HVM context     {n} bytes: {entries}")?;
        }
        if !c.hvm_params.is_empty() {
            let params = c
                .hvm_params
                .iter()
                .map(|p| format!("{}({})={:#x}", p.name, p.index, p.value))
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(w, "  HVM params      {params}")?;
        }
        if c.cpuid_leaves + c.msrs > 0 {
            writeln!(
                w,
                "  CPU policy      {} CPUID leaves, {} MSRs",
                c.cpuid_leaves, c.msrs
            )?;
        }
        if c.checkpoints > 0 {
            writeln!(w, "  checkpoints     {}", c.checkpoints)?;
        }
        if c.unknown_optional > 0 {
            writeln!(
                w,
                "  skipped         {} unknown optional records",
                c.unknown_optional
            )?;
        }
    }
    if let Some(l) = &s.libxl {
        writeln!(
            w,
            "  libxl records   {} ({})",
            l.records,
            counts(&l.records_by_type)
        )?;
        if l.xenstore_pairs > 0 {
            writeln!(w, "  xenstore data   {} pairs", l.xenstore_pairs)?;
        }
        if l.emulator_context_bytes > 0 {
            writeln!(w, "  emulator state  {} bytes", l.emulator_context_bytes)?;
        }
    }
    Ok(())
}
