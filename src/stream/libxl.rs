//! The libxl stream (docs/REFERENCE.md §3): its big-endian header and its
//! records. Unlike libxc, libxl refuses every record type it does not know,
//! optional or not.

use super::error::{invalid, ErrorKind, Layer, Place, StreamError};
use super::limits::{LibxlCaps, OverLimit, Unit};
use super::wire::{self, Fields};
use super::REC_LENGTH_MAX;
use std::io::{Read, Write};

/// "LibxlFmt".
pub const LIBXL_IDENT: u64 = 0x4C69_6278_6C46_6D74;
/// The only libxl stream version.
pub const LIBXL_VERSION: u32 = 2;
/// Header options bit 0: big-endian stream (refused).
pub const LIBXL_OPT_BIG_ENDIAN: u32 = 1;
/// Header options bit 1: produced by convert-legacy-stream (informational).
pub const LIBXL_OPT_LEGACY: u32 = 2;
/// Size of the libxl header.
pub const LIBXL_HDR_SIZE: usize = 16;

/// libxl record type codes.
pub mod libxl_type {
    pub const END: u32 = 0;
    pub const LIBXC_CONTEXT: u32 = 1;
    pub const EMULATOR_XENSTORE_DATA: u32 = 2;
    pub const EMULATOR_CONTEXT: u32 = 3;
    pub const CHECKPOINT_END: u32 = 4;
    pub const CHECKPOINT_STATE: u32 = 5;
}

/// Emulator ids of the emulator sub-header.
pub mod emulator_id {
    pub const UNKNOWN: u32 = 0;
    pub const QEMU_TRADITIONAL: u32 = 1;
    pub const QEMU_UPSTREAM: u32 = 2;
}

pub fn libxl_type_name(t: u32) -> &'static str {
    use libxl_type::*;
    match t {
        END => "END",
        LIBXC_CONTEXT => "LIBXC_CONTEXT",
        EMULATOR_XENSTORE_DATA => "EMULATOR_XENSTORE_DATA",
        EMULATOR_CONTEXT => "EMULATOR_CONTEXT",
        CHECKPOINT_END => "CHECKPOINT_END",
        CHECKPOINT_STATE => "CHECKPOINT_STATE",
        _ => "UNKNOWN",
    }
}

/// The libxl stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibxlHeader {
    pub version: u32,
    pub options: u32,
}

/// One libxl record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibxlRecord {
    End,
    /// The libxc stream follows immediately, unframed.
    LibxcContext,
    /// Key/value pairs relative to the device model's xenstore directory.
    EmulatorXenstoreData {
        emulator_id: u32,
        index: u32,
        pairs: Vec<(String, String)>,
    },
    /// The device model's saved state.
    EmulatorContext {
        emulator_id: u32,
        index: u32,
        blob: Vec<u8>,
    },
    CheckpointEnd,
    /// COLO control id.
    CheckpointState(u32),
}

impl LibxlRecord {
    pub fn type_code(&self) -> u32 {
        use libxl_type::*;
        match self {
            LibxlRecord::End => END,
            LibxlRecord::LibxcContext => LIBXC_CONTEXT,
            LibxlRecord::EmulatorXenstoreData { .. } => EMULATOR_XENSTORE_DATA,
            LibxlRecord::EmulatorContext { .. } => EMULATOR_CONTEXT,
            LibxlRecord::CheckpointEnd => CHECKPOINT_END,
            LibxlRecord::CheckpointState(_) => CHECKPOINT_STATE,
        }
    }
    pub fn name(&self) -> &'static str {
        libxl_type_name(self.type_code())
    }
}

pub(crate) fn parse_header(
    h: &[u8; LIBXL_HDR_SIZE],
    strict: bool,
) -> Result<LibxlHeader, ErrorKind> {
    let mut f = Fields::new(h);
    let ident = u64::from_be_bytes(arr(f.bytes(8)?));
    let version = u32::from_be_bytes(arr(f.bytes(4)?));
    let options = u32::from_be_bytes(arr(f.bytes(4)?));
    if ident != LIBXL_IDENT {
        return Err(invalid(format!(
            "ident is {ident:#018x}, must be {LIBXL_IDENT:#018x} (\"LibxlFmt\")"
        )));
    }
    if version != LIBXL_VERSION {
        return Err(invalid(format!(
            "version is {version}, must be {LIBXL_VERSION}"
        )));
    }
    if options & LIBXL_OPT_BIG_ENDIAN != 0 {
        return Err(invalid("big-endian streams are not supported"));
    }
    if strict && options & !(LIBXL_OPT_BIG_ENDIAN | LIBXL_OPT_LEGACY) != 0 {
        return Err(invalid(format!(
            "reserved option bits set: {options:#010x}"
        )));
    }
    Ok(LibxlHeader { version, options })
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = s.len().min(N);
    a[..n].copy_from_slice(&s[..n]);
    a
}

/// Reads and checks the libxl header (version 2, little-endian; reserved
/// option bits are ignored, as libxl does).
pub fn read_libxl_header<R: Read>(r: &mut R) -> Result<LibxlHeader, StreamError> {
    super::LibxlWalk::new(0, false, LibxlCaps::default()).header(r)
}

/// Writes a libxl header: version 2, options 0.
pub fn write_libxl_header<W: Write>(w: &mut W) -> Result<(), StreamError> {
    let mut h = [0u8; LIBXL_HDR_SIZE];
    h[..8].copy_from_slice(&LIBXL_IDENT.to_be_bytes());
    h[8..12].copy_from_slice(&LIBXL_VERSION.to_be_bytes());
    w.write_all(&h)
        .map_err(|e| StreamError::io(Layer::Libxl, e).with_place(Place::Header("header")))
}

/// Reads one libxl record. Any type other than the six known ones is an
/// error, as in libxl.
pub fn read_libxl_record<R: Read>(r: &mut R) -> Result<LibxlRecord, StreamError> {
    let mut at = 0u64;
    read_record_at(r, &mut at, false, &LibxlCaps::default())
        .map(|(rec, _)| rec)
        .map_err(|(rtype, k)| {
            StreamError::new(Layer::Libxl, k).with_place(Place::Record { index: None, rtype })
        })
}

/// Writes one libxl record after checking it.
pub fn write_libxl_record<W: Write>(w: &mut W, rec: &LibxlRecord) -> Result<(), StreamError> {
    write_libxl_record_len(w, rec).map(|_| ())
}

fn emit<W: Write>(w: &mut W, rtype: u32, body: &[u8]) -> Result<u64, ErrorKind> {
    let len = body.len() as u64;
    let pad = wire::padding_len(len);
    if len > REC_LENGTH_MAX as u64 {
        return Err(invalid(format!(
            "length {len:#x} exceeds the record cap of {REC_LENGTH_MAX:#x} (128 MiB)"
        )));
    }
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&rtype.to_le_bytes());
    hdr[4..].copy_from_slice(&(len as u32).to_le_bytes());
    wire::write_all_vectored(w, &[&hdr, body, &wire::ZEROS[..pad]]).map_err(ErrorKind::Io)?;
    Ok(8 + len + pad as u64)
}

fn encode_body(rec: &LibxlRecord) -> Result<Vec<u8>, ErrorKind> {
    let mut b = Vec::new();
    match rec {
        LibxlRecord::End | LibxlRecord::LibxcContext | LibxlRecord::CheckpointEnd => {}
        LibxlRecord::EmulatorXenstoreData {
            emulator_id,
            index,
            pairs,
        } => {
            b.extend_from_slice(&emulator_id.to_le_bytes());
            b.extend_from_slice(&index.to_le_bytes());
            for (i, (k, v)) in pairs.iter().enumerate() {
                if k.contains('\0') || v.contains('\0') {
                    return Err(invalid(format!(
                        "xenstore pair {i}: key or value contains a NUL"
                    )));
                }
                b.extend_from_slice(k.as_bytes());
                b.push(0);
                b.extend_from_slice(v.as_bytes());
                b.push(0);
            }
        }
        LibxlRecord::EmulatorContext {
            emulator_id,
            index,
            blob,
        } => {
            b.reserve(8 + blob.len());
            b.extend_from_slice(&emulator_id.to_le_bytes());
            b.extend_from_slice(&index.to_le_bytes());
            b.extend_from_slice(blob);
        }
        LibxlRecord::CheckpointState(id) => b.extend_from_slice(&id.to_le_bytes()),
    }
    Ok(b)
}

/// Reads one record from `r`, whose offset is `*at` (advanced past the
/// record on success). On error returns the record type if it was read.
pub(crate) fn read_record_at<R: Read + ?Sized>(
    r: &mut R,
    at: &mut u64,
    strict: bool,
    caps: &LibxlCaps,
) -> Result<(LibxlRecord, u32), (Option<u32>, ErrorKind)> {
    let start = *at;
    let mut hdr = [0u8; 8];
    wire::read_exact_at(r, &mut hdr, start, true).map_err(|k| (None, k))?;
    let mut f = Fields::new(&hdr);
    let rtype = f.u32().map_err(|k| (None, k))?;
    let length = f.u32().map_err(|k| (None, k))?;
    let e = |k| (Some(rtype), k);
    if rtype > libxl_type::CHECKPOINT_STATE {
        return Err(e(invalid(format!(
            "unknown record type {rtype:#010x} (libxl refuses every unknown record)"
        ))));
    }
    // libxl itself has no cap; ours keeps hostile lengths from allocating.
    if length as usize > REC_LENGTH_MAX {
        return Err(e(invalid(format!(
            "length {length:#x} exceeds the record cap of {REC_LENGTH_MAX:#x} (128 MiB)"
        ))));
    }
    check_length(rtype, length, caps).map_err(e)?;
    let body = wire::read_vec(r, length as usize, start + 8).map_err(e)?;
    let pad = wire::read_padding(r, u64::from(length), start + 8).map_err(e)?;
    let rec = decode_body(rtype, &body, strict, caps).map_err(e)?;
    *at = start + 8 + u64::from(length) + pad as u64;
    Ok((rec, length))
}

/// What a record's header alone tells about its length: the fixed-size
/// records' exact length, the emulator records' caps.
fn check_length(rtype: u32, length: u32, caps: &LibxlCaps) -> Result<(), ErrorKind> {
    use libxl_type::*;
    let fixed = match rtype {
        END | LIBXC_CONTEXT | CHECKPOINT_END => Some(0),
        CHECKPOINT_STATE => Some(4),
        _ => None,
    };
    if let Some(want) = fixed {
        if length != want {
            return Err(invalid(format!("length is {length}, must be {want}")));
        }
        return Ok(());
    }
    let data = u64::from(length.saturating_sub(8));
    match rtype {
        EMULATOR_CONTEXT => OverLimit::check(
            "EMULATOR_CONTEXT data length",
            data,
            caps.max_emulator_context.into(),
            Unit::Bytes,
        )?,
        EMULATOR_XENSTORE_DATA => OverLimit::check(
            "EMULATOR_XENSTORE_DATA length",
            data,
            caps.max_xenstore_data.into(),
            Unit::Bytes,
        )?,
        _ => {}
    }
    Ok(())
}

fn emulator_header(f: &mut Fields<'_>, len: usize, strict: bool) -> Result<(u32, u32), ErrorKind> {
    if len < 8 {
        return Err(invalid(format!(
            "length is {len}, too short for the 8-byte emulator header"
        )));
    }
    let id = f.u32()?;
    let index = f.u32()?;
    if strict && id > emulator_id::QEMU_UPSTREAM {
        return Err(invalid(format!(
            "emulator id is {id}, must be 0 (unknown), 1 (qemu-traditional) or 2 (qemu-upstream)"
        )));
    }
    Ok((id, index))
}

fn decode_body(
    rtype: u32,
    body: &[u8],
    strict: bool,
    caps: &LibxlCaps,
) -> Result<LibxlRecord, ErrorKind> {
    use libxl_type::*;
    let mut f = Fields::new(body);
    let empty = |r: LibxlRecord| {
        if body.is_empty() {
            Ok(r)
        } else {
            Err(invalid(format!("length is {}, must be 0", body.len())))
        }
    };
    match rtype {
        END => empty(LibxlRecord::End),
        LIBXC_CONTEXT => empty(LibxlRecord::LibxcContext),
        CHECKPOINT_END => empty(LibxlRecord::CheckpointEnd),
        CHECKPOINT_STATE => {
            if body.len() != 4 {
                return Err(invalid(format!(
                    "length is {}, must be 4 (u32 control id)",
                    body.len()
                )));
            }
            Ok(LibxlRecord::CheckpointState(f.u32()?))
        }
        EMULATOR_CONTEXT => {
            let (emulator_id, index) = emulator_header(&mut f, body.len(), strict)?;
            Ok(LibxlRecord::EmulatorContext {
                emulator_id,
                index,
                blob: f.rest().to_vec(),
            })
        }
        EMULATOR_XENSTORE_DATA => {
            let (emulator_id, index) = emulator_header(&mut f, body.len(), strict)?;
            let pairs = parse_xenstore_pairs(f.rest(), caps.max_xenstore_pairs)?;
            Ok(LibxlRecord::EmulatorXenstoreData {
                emulator_id,
                index,
                pairs,
            })
        }
        t => Err(invalid(format!("unknown record type {t:#010x}"))),
    }
}

/// `key\0value\0` pairs, with libxl's checks: every string NUL-terminated,
/// keys non-empty and relative; at most `max_pairs` of them, counted before
/// any is kept.
fn parse_xenstore_pairs(data: &[u8], max_pairs: u32) -> Result<Vec<(String, String)>, ErrorKind> {
    let strings = data.iter().filter(|&&b| b == 0).count() as u64;
    OverLimit::check(
        "EMULATOR_XENSTORE_DATA pair count",
        strings.div_ceil(2),
        max_pairs.into(),
        Unit::Items,
    )?;
    let mut pairs = Vec::with_capacity((strings / 2) as usize);
    let mut rest = data;
    while !rest.is_empty() {
        let (key, after) = split_cstr(rest, "key", pairs.len())?;
        if key.is_empty() {
            return Err(invalid(format!("xenstore pair {}: empty key", pairs.len())));
        }
        if key.starts_with('/') {
            return Err(invalid(format!(
                "xenstore pair {}: key {key:?} is absolute, must be relative",
                pairs.len()
            )));
        }
        let (val, after) = split_cstr(after, "value", pairs.len())?;
        pairs.push((key, val));
        rest = after;
    }
    Ok(pairs)
}

fn split_cstr<'a>(s: &'a [u8], what: &str, i: usize) -> Result<(String, &'a [u8]), ErrorKind> {
    let nul = s
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| invalid(format!("xenstore pair {i}: {what} is not NUL-terminated")))?;
    let text = std::str::from_utf8(&s[..nul])
        .map_err(|_| invalid(format!("xenstore pair {i}: {what} is not valid UTF-8")))?;
    Ok((text.to_owned(), &s[nul + 1..]))
}

/// Writes a libxl record and reports how many bytes it took (for callers
/// that track offsets).
pub fn write_libxl_record_len<W: Write>(w: &mut W, rec: &LibxlRecord) -> Result<u64, StreamError> {
    let fail = |k| {
        StreamError::new(Layer::Libxl, k).with_place(Place::Record {
            index: None,
            rtype: Some(rec.type_code()),
        })
    };
    let body = encode_body(rec).map_err(fail)?;
    decode_body(rec.type_code(), &body, true, &LibxlCaps::default()).map_err(fail)?;
    emit(w, rec.type_code(), &body).map_err(fail)
}
