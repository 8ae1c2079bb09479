//! `rxmigrate inspect` and `rxmigrate verify`: walk a save file or stream
//! through all its layers (xl header, libxl records, the libxc stream inline
//! after LIBXC_CONTEXT, the remaining libxl records), one record at a time,
//! and report what it holds or the first rule it breaks.
//!
//! `verify` applies what Xen's verify-stream-v2 checks (reserved fields zero,
//! no unknown records) on top of the restore rules; `inspect` reads with the
//! restore rules only so that it can show streams the verifier would reject
//! for cosmetic reasons.

use crate::stream::{
    detect, hvm_context, hvm_param_name, libxc_type_name, DomainType, Format, Layer, LibxcReader,
    LibxlHeader, LibxlReader, LibxlRecord, PageType, Place, ReadOptions, Record, StreamError,
    TscInfo, XlHeaderInfo, DETECT_LEN, PAGE_SIZE, XL_FLAG_JSON, XL_FLAG_STREAMV2,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

/// Errors of inspect / verify.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The input broke a rule of one of the formats, or could not be read.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The input is not a Xen migration stream.
    #[error("{0}")]
    Unrecognised(String),
    /// A stream this tool does not handle (legacy pre-4.6 images).
    #[error("{0}")]
    Unsupported(String),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(#[source] io::Error),
}

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

/// Prints every header and record of a stream, then a summary; on a broken
/// stream, the records up to the error and then the error. `json` prints one
/// JSON object per line instead.
pub fn inspect(
    input: &mut dyn Read,
    json: bool,
    out: &mut dyn Write,
) -> Result<Summary, InspectError> {
    let mut report = Report {
        out,
        json,
        records: true,
    };
    let res = walk(input, false, &mut report);
    report.finish(&res, false)?;
    res
}

/// Checks a whole stream structurally, as Xen's verify-stream-v2 does, and
/// prints a verdict: a one-line summary, or the first error.
pub fn verify(
    input: &mut dyn Read,
    json: bool,
    out: &mut dyn Write,
) -> Result<Summary, InspectError> {
    let mut report = Report {
        out,
        json,
        records: false,
    };
    let res = walk(input, true, &mut report);
    report.finish(&res, true)?;
    res
}

/// Where a walk reports what it finds.
struct Report<'a> {
    out: &'a mut dyn Write,
    json: bool,
    /// Print each header and record (inspect), or only the verdict (verify).
    records: bool,
}

/// One header or record, for the report.
struct Item<'a> {
    offset: u64,
    layer: Layer,
    index: Option<u64>,
    name: &'a str,
    code: Option<u32>,
    length: u64,
    text: String,
    details: Value,
}

impl Report<'_> {
    fn item(&mut self, it: Item<'_>) -> Result<(), InspectError> {
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

    fn heading(&mut self) -> Result<(), InspectError> {
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

    fn finish(
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

/// Walks the input; `strict` selects the verifier's rules.
fn walk(
    input: &mut dyn Read,
    strict: bool,
    report: &mut Report<'_>,
) -> Result<Summary, InspectError> {
    let mut first = [0u8; DETECT_LEN];
    let got = read_up_to(input, &mut first).map_err(|e| StreamError::io(Layer::Libxc, e))?;
    let head = first.get(..got).unwrap_or(&[]);
    if got == 0 {
        return Err(InspectError::Unrecognised("empty input".into()));
    }
    let format = detect(head).ok_or_else(|| {
        InspectError::Unrecognised(format!(
            "not a Xen migration stream (xl save file, libxl or libxc stream): starts with {}",
            hex(head)
        ))
    })?;
    let mut r = io::Cursor::new(first).chain(input);
    let mut w = Walker {
        strict,
        report,
        summary: Summary {
            format,
            bytes: 0,
            xl: None,
            libxl: None,
            libxc: None,
        },
        libxl_index: 0,
    };
    w.report.heading()?;
    let end = match format {
        Format::Xl => {
            let info = crate::stream::read_xl_header_info(&mut r)?;
            w.xl_header(&info)?;
            if info.header.mandatory_flags & XL_FLAG_STREAMV2 == 0 {
                return Err(InspectError::Unsupported(
                    "the xl header announces a legacy (pre-Xen 4.6) stream; convert it with Xen's convert-legacy-stream first".into(),
                ));
            }
            w.libxl_stream(&mut r, info.size)?
        }
        Format::Libxl => w.libxl_stream(&mut r, 0)?,
        Format::Libxc => w.libxc_stream(&mut r, 0, false)?,
    };
    w.summary.bytes = end;
    let trailing = count_rest(&mut r).map_err(|e| StreamError::io(Layer::Libxc, e))?;
    if trailing > 0 {
        let layer = match format {
            Format::Libxc => Layer::Libxc,
            _ => Layer::Libxl,
        };
        return Err(StreamError::new(
            layer,
            crate::stream::ErrorKind::Invalid(format!(
                "{trailing} bytes of trailing data after END"
            )),
        )
        .with_offset(end)
        .into());
    }
    Ok(w.summary)
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn count_rest(r: &mut dyn Read) -> io::Result<u64> {
    io::copy(r, &mut io::sink())
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Walker<'r, 'o> {
    strict: bool,
    report: &'r mut Report<'o>,
    summary: Summary,
    /// Next libxl record index (libxl records continue around the inline
    /// libxc stream).
    libxl_index: u64,
}

impl Walker<'_, '_> {
    fn xl_header(&mut self, info: &XlHeaderInfo) -> Result<(), InspectError> {
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

    fn libxl_error(&self, index: u64, rtype: u32, at: u64, msg: String) -> InspectError {
        StreamError::new(Layer::Libxl, crate::stream::ErrorKind::Invalid(msg))
            .with_place(Place::Record {
                index: Some(index),
                rtype: Some(rtype),
            })
            .with_offset(at)
            .into()
    }

    /// Reads one libxl record at `at`; returns it with the offset after it.
    fn libxl_record<R: Read>(
        &mut self,
        r: &mut R,
        at: u64,
    ) -> Result<(LibxlRecord, u64, u64), InspectError> {
        let index = self.libxl_index;
        let mut lr = LibxlReader::new(&mut *r, at, self.strict).with_index(index);
        let rec = lr.next_record()?;
        let length = u64::from(lr.last_record_length());
        let end = lr.offset();
        self.libxl_index += 1;
        if let Some(l) = &mut self.summary.libxl {
            l.records += 1;
            *l.records_by_type.entry(rec.name().to_string()).or_default() += 1;
            match &rec {
                LibxlRecord::EmulatorXenstoreData { pairs, .. } => {
                    l.xenstore_pairs += pairs.len() as u64
                }
                LibxlRecord::EmulatorContext { blob, .. } => {
                    l.emulator_context_bytes += blob.len() as u64
                }
                _ => {}
            }
        }
        let (text, details) = describe_libxl(&rec);
        self.report.item(Item {
            offset: at,
            layer: Layer::Libxl,
            index: Some(index),
            name: rec.name(),
            code: Some(rec.type_code()),
            length,
            text,
            details,
        })?;
        Ok((rec, index, end))
    }

    /// The libxl stream at `base`; returns the offset after its END.
    fn libxl_stream<R: Read>(&mut self, r: &mut R, base: u64) -> Result<u64, InspectError> {
        let mut lr = LibxlReader::new(&mut *r, base, self.strict);
        let hdr: LibxlHeader = lr.read_header()?;
        self.summary.libxl = Some(LibxlSummary {
            version: hdr.version,
            options: hdr.options,
            legacy: hdr.options & crate::stream::LIBXL_OPT_LEGACY != 0,
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
                if hdr.options & crate::stream::LIBXL_OPT_LEGACY != 0 {
                    " (converted from a legacy stream)"
                } else {
                    ""
                }
            ),
            details: json!({"version": hdr.version, "options": hdr.options}),
        })?;
        let mut at = lr.offset();
        let mut libxc_seen = false;
        loop {
            let (rec, index, end) = self.libxl_record(r, at)?;
            let rtype = rec.type_code();
            match rec {
                LibxlRecord::End => {
                    if !libxc_seen {
                        return Err(self.libxl_error(
                            index,
                            rtype,
                            at,
                            "END before any LIBXC_CONTEXT: the stream holds no domain".into(),
                        ));
                    }
                    return Ok(end);
                }
                LibxlRecord::LibxcContext => {
                    if libxc_seen {
                        return Err(self.libxl_error(
                            index,
                            rtype,
                            at,
                            "second LIBXC_CONTEXT record".into(),
                        ));
                    }
                    libxc_seen = true;
                    at = self.libxc_stream(r, end, true)?;
                    continue;
                }
                LibxlRecord::EmulatorXenstoreData { .. } | LibxlRecord::EmulatorContext { .. } => {
                    if self.pv_stream() {
                        return Err(self.libxl_error(
                            index,
                            rtype,
                            at,
                            format!(
                                "{} in the stream of a PV guest (emulator records are HVM-only)",
                                crate::stream::libxl_type_name(rtype)
                            ),
                        ));
                    }
                }
                LibxlRecord::CheckpointEnd => {
                    return Err(self.libxl_error(
                        index,
                        rtype,
                        at,
                        "CHECKPOINT_END without a libxc CHECKPOINT before it".into(),
                    ));
                }
                LibxlRecord::CheckpointState(_) => {
                    return Err(self.libxl_error(
                        index,
                        rtype,
                        at,
                        "CHECKPOINT_STATE belongs on the COLO back-channel, not in a stream".into(),
                    ));
                }
            }
            at = end;
        }
    }

    fn pv_stream(&self) -> bool {
        matches!(&self.summary.libxc, Some(c) if c.domain_type == DomainType::X86Pv)
    }

    /// The libxc stream at `base`; returns the offset after its END. Inside a
    /// libxl stream, each CHECKPOINT is followed by libxl records up to
    /// CHECKPOINT_END before libxc records resume.
    fn libxc_stream<R: Read>(
        &mut self,
        r: &mut R,
        base: u64,
        in_libxl: bool,
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
        self.summary.libxc = Some(LibxcSummary {
            version: rd.version(),
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
        });
        loop {
            let start = rd.offset();
            let index = rd.record_index();
            let rec = match rd.next_record()? {
                Some(rec) => rec,
                None => break,
            };
            let length = u64::from(rd.last_record_length());
            let note = self.account(&rec, start)?;
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
                Record::Checkpoint if in_libxl => {
                    let before = rd.offset();
                    let mut at = before;
                    loop {
                        let (lrec, lindex, end) = self.libxl_record(rd.get_mut(), at)?;
                        let rtype = lrec.type_code();
                        match lrec {
                            LibxlRecord::CheckpointEnd => {
                                at = end;
                                break;
                            }
                            LibxlRecord::EmulatorXenstoreData { .. }
                            | LibxlRecord::EmulatorContext { .. } => {
                                if self.pv_stream() {
                                    return Err(self.libxl_error(
                                        lindex,
                                        rtype,
                                        at,
                                        "emulator record in the stream of a PV guest".into(),
                                    ));
                                }
                            }
                            other => {
                                return Err(self.libxl_error(
                                    lindex,
                                    rtype,
                                    at,
                                    format!("{} inside a checkpoint (only emulator records and CHECKPOINT_END belong there)", other.name()),
                                ));
                            }
                        }
                        at = end;
                    }
                    rd.skip_offset(at - before);
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

    /// Adds a record to the summary. Returns a note for inspect when the HVM
    /// context does not parse (an error for verify).
    fn account(&mut self, rec: &Record, at: u64) -> Result<Option<String>, InspectError> {
        let strict = self.strict;
        let Some(c) = &mut self.summary.libxc else {
            return Ok(None);
        };
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

fn describe_libxl(rec: &LibxlRecord) -> (String, Value) {
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

fn describe_libxc(rec: &Record) -> (String, Value) {
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
