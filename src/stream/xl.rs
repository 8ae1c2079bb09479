//! The xl save-file header and its optional data, the domain config
//! (docs/REFERENCE.md §2).

use super::error::{invalid, ErrorKind, Layer, Place, StreamError};
use super::limits::{OverLimit, Unit};
use super::wire::{self, Fields};
use super::REC_LENGTH_MAX;
use std::io::{Read, Write};

/// The 32-byte magic, no trailing NUL.
pub const XL_MAGIC: &[u8; 32] = b"Xen saved domain, xl format\n \0 \r";
/// `byteorder` as written by a little-endian host.
pub const XL_BYTEORDER: u32 = 0x0102_0304;
/// Mandatory flag: the config is JSON.
pub const XL_FLAG_JSON: u32 = 1;
/// Mandatory flag: a libxl v2 stream follows (else a legacy stream).
pub const XL_FLAG_STREAMV2: u32 = 2;
/// Size of the fixed header (magic + four u32).
pub const XL_HDR_SIZE: usize = 48;

/// The xl header. `config` is the config text without its trailing NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlHeader {
    pub mandatory_flags: u32,
    pub optional_flags: u32,
    pub config: Option<Vec<u8>>,
}

impl XlHeader {
    /// A libxl stream follows (not a legacy one).
    pub fn is_streamv2(&self) -> bool {
        self.mandatory_flags & XL_FLAG_STREAMV2 != 0
    }
    pub fn config_is_json(&self) -> bool {
        self.mandatory_flags & XL_FLAG_JSON != 0
    }
    /// Bytes the header and its optional data take (as written by
    /// [`write_xl_header`]; for a header that was read, see
    /// [`XlHeaderInfo::size`]).
    pub fn written_size(&self) -> u64 {
        XL_HDR_SIZE as u64 + 4 + self.config.as_ref().map_or(0, |c| c.len() as u64 + 1)
    }
}

/// A header as read, with the layout facts inspect reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlHeaderInfo {
    pub header: XlHeader,
    /// `optional_data_len` from the header.
    pub optional_data_len: u32,
    /// Total bytes read: the fixed header plus the optional data.
    pub size: u64,
}

fn fail(k: ErrorKind) -> StreamError {
    StreamError::new(Layer::Xl, k)
        .with_place(Place::Header("save-file header"))
        .with_offset(0)
}

/// Reads the header and its optional data, with xl's checks: magic, byte
/// order, no unknown mandatory flags, config length within the optional data.
pub fn read_xl_header<R: Read>(r: &mut R) -> Result<XlHeader, StreamError> {
    read_xl_header_info(r).map(|i| i.header)
}

/// As [`read_xl_header`], refusing a config longer than `max_config` bytes
/// from the header's length field, before the config is read.
pub fn read_xl_header_capped<R: Read>(r: &mut R, max_config: u32) -> Result<XlHeader, StreamError> {
    read_header(r, max_config).map(|i| i.header)
}

/// As [`read_xl_header_capped`], also returning the sizes read.
pub fn read_xl_header_info_capped<R: Read>(
    r: &mut R,
    max_config: u32,
) -> Result<XlHeaderInfo, StreamError> {
    read_header(r, max_config)
}

/// As [`read_xl_header`], also returning the sizes read.
pub fn read_xl_header_info<R: Read>(r: &mut R) -> Result<XlHeaderInfo, StreamError> {
    read_header(r, REC_LENGTH_MAX as u32)
}

fn read_header<R: Read>(r: &mut R, max_config: u32) -> Result<XlHeaderInfo, StreamError> {
    let mut h = [0u8; XL_HDR_SIZE];
    wire::read_exact_at(r, &mut h, 0, true).map_err(fail)?;
    let mut f = Fields::new(&h);
    let magic = f.bytes(32).map_err(fail)?;
    if magic != XL_MAGIC {
        return Err(fail(invalid("bad magic: not an xl save file")));
    }
    let byteorder = f.u32().map_err(fail)?;
    let mandatory_flags = f.u32().map_err(fail)?;
    let optional_flags = f.u32().map_err(fail)?;
    let optional_data_len = f.u32().map_err(fail)?;
    if byteorder != XL_BYTEORDER {
        return Err(fail(invalid(format!(
            "byte order marker is {byteorder:#010x}, must be {XL_BYTEORDER:#010x} (written on a host of other endianness?)"
        ))));
    }
    let unknown = mandatory_flags & !(XL_FLAG_JSON | XL_FLAG_STREAMV2);
    if unknown != 0 {
        return Err(fail(invalid(format!(
            "unknown mandatory flags {unknown:#x}"
        ))));
    }
    // xl has no limit; ours keeps a hostile length from allocating.
    if optional_data_len as usize > REC_LENGTH_MAX {
        return Err(fail(invalid(format!(
            "optional data length {optional_data_len:#x} exceeds the cap of {REC_LENGTH_MAX:#x}"
        ))));
    }
    // The optional data is the config's u32 length and the config.
    OverLimit::check(
        "the domain config (optional data length - 4)",
        u64::from(optional_data_len.saturating_sub(4)),
        u64::from(max_config),
        Unit::Bytes,
    )
    .map_err(|e| fail(e.into()))?;
    let opt = wire::read_vec(r, optional_data_len as usize, XL_HDR_SIZE as u64).map_err(fail)?;
    let config = parse_config(&opt, mandatory_flags & XL_FLAG_JSON != 0).map_err(fail)?;
    Ok(XlHeaderInfo {
        header: XlHeader {
            mandatory_flags,
            optional_flags,
            config,
        },
        optional_data_len,
        size: XL_HDR_SIZE as u64 + u64::from(optional_data_len),
    })
}

/// The optional data: u32 config_len, then the config (xl ignores anything
/// after it).
fn parse_config(opt: &[u8], json: bool) -> Result<Option<Vec<u8>>, ErrorKind> {
    if opt.is_empty() {
        return Ok(None);
    }
    let mut f = Fields::new(opt);
    if opt.len() < 4 {
        return Err(invalid(format!(
            "optional data is {} bytes, too short for the config length",
            opt.len()
        )));
    }
    let config_len = f.u32()? as usize;
    if config_len > opt.len() - 4 {
        return Err(invalid(format!(
            "config length {config_len} runs past the {} bytes of optional data",
            opt.len()
        )));
    }
    let config = f.bytes(config_len)?;
    match config.split_last() {
        None => Ok(None),
        Some((0, text)) => Ok(Some(text.to_vec())),
        // libxl parses JSON configs as C strings.
        Some(_) if json => Err(invalid("JSON config is not NUL-terminated")),
        Some(_) => Ok(Some(config.to_vec())),
    }
}

/// Writes the header as `xl save` does: STREAMv2, plus JSON when a config is
/// given; the optional data is the u32 config length and the config with a
/// trailing NUL (just the zero length when there is no config).
pub fn write_xl_header<W: Write>(w: &mut W, config_json: Option<&[u8]>) -> Result<(), StreamError> {
    let mut flags = XL_FLAG_STREAMV2;
    let config_len = match config_json {
        Some(c) => {
            if c.contains(&0) {
                return Err(fail(invalid("the JSON config contains a NUL byte")));
            }
            flags |= XL_FLAG_JSON;
            c.len() + 1
        }
        None => 0,
    };
    let optional_len = 4 + config_len;
    if optional_len > REC_LENGTH_MAX {
        return Err(fail(invalid(format!(
            "config of {config_len} bytes exceeds the cap of {REC_LENGTH_MAX:#x}"
        ))));
    }
    let mut h = Vec::with_capacity(XL_HDR_SIZE + 4);
    h.extend_from_slice(XL_MAGIC);
    h.extend_from_slice(&XL_BYTEORDER.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&(optional_len as u32).to_le_bytes());
    h.extend_from_slice(&(config_len as u32).to_le_bytes());
    let config = config_json.unwrap_or(&[]);
    let nul: &[u8] = if config_json.is_some() { &[0] } else { &[] };
    wire::write_all_vectored(w, &[&h, config, nul]).map_err(|e| fail(ErrorKind::Io(e)))
}
