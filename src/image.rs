//! The layers around a libxc stream in an xl save file or an `xl migrate`
//! stream: xl header + JSON config, libxl header, LIBXC_CONTEXT … libxc … END.

use crate::hv::{DeviceModelState, DomainConfig};
use crate::stream::{
    read_xl_header_info_capped, write_libxl_header, write_libxl_record, write_xl_header, LibxlCaps,
    LibxlRecord, LibxlWalk, OverLimit, StreamError, Unit, Walked, XL_FLAG_STREAMV2,
};
use serde_json::Value;
use std::io::{Read, Write};

/// Errors of the image layer.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("{0}")]
    Format(String),
    #[error("libxl stream: {0}")]
    Limit(OverLimit),
}

// By hand, not `#[from]`: the limit is part of this error's text and must
// not be reported again as its cause.
impl From<OverLimit> for ImageError {
    fn from(e: OverLimit) -> Self {
        ImageError::Limit(e)
    }
}

/// What a receiver accepts around the libxc stream.
///
/// The config: xl's JSON config of a domain is a few KiB (one with dozens
/// of disks and NICs stays under 64 KiB); 1 MiB leaves more than ten times
/// that and keeps the parsed JSON, which can take twenty times its text,
/// near 20 MiB. The device model: QEMU's saved device state of an HVM guest
/// is well under 1 MiB (guest RAM, video RAM included, is not in it), and
/// its xenstore data a few physmap entries; libxl writes one record of
/// each per device model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest xl config, bytes.
    pub max_config: u32,
    /// Largest EMULATOR_CONTEXT blob, bytes.
    pub max_emulator_context: u32,
    /// EMULATOR_XENSTORE_DATA bytes, all records together.
    pub max_xenstore_data: u32,
    /// xenstore key/value pairs, all records together.
    pub max_xenstore_pairs: u32,
    /// Most EMULATOR_* records after the libxc stream.
    pub max_emulator_records: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_config: 1 << 20,
            max_emulator_context: 32 << 20,
            max_xenstore_data: 1 << 20,
            max_xenstore_pairs: 4096,
            max_emulator_records: 8,
        }
    }
}

impl ImageLimits {
    fn libxl_caps(&self) -> LibxlCaps {
        LibxlCaps {
            max_emulator_context: self.max_emulator_context,
            max_xenstore_data: self.max_xenstore_data,
            max_xenstore_pairs: self.max_xenstore_pairs,
        }
    }
}

/// Writes the xl header, the libxl header and LIBXC_CONTEXT: the libxc
/// stream goes right after.
pub fn write_start<W: Write>(w: &mut W, config: &DomainConfig) -> Result<(), ImageError> {
    let text = serde_json::to_vec_pretty(config.raw())
        .map_err(|e| ImageError::Format(format!("encoding the domain config: {e}")))?;
    write_xl_header(w, Some(&text))?;
    write_libxl_header(w)?;
    write_libxl_record(w, &LibxlRecord::LibxcContext)?;
    Ok(())
}

/// After the libxc stream of an HVM guest: its device model's xenstore
/// entries (if any) and state.
pub fn write_device_model<W: Write>(
    w: &mut W,
    dm: &crate::hv::DeviceModelState,
) -> Result<(), ImageError> {
    if !dm.xenstore.is_empty() {
        write_libxl_record(
            w,
            &LibxlRecord::EmulatorXenstoreData {
                emulator_id: dm.emulator_id,
                index: 0,
                pairs: dm.xenstore.clone(),
            },
        )?;
    }
    write_libxl_record(
        w,
        &LibxlRecord::EmulatorContext {
            emulator_id: dm.emulator_id,
            index: 0,
            blob: dm.context.clone(),
        },
    )?;
    Ok(())
}

/// After the libxc stream: the libxl END record.
pub fn write_end<W: Write>(w: &mut W) -> Result<(), ImageError> {
    write_libxl_record(w, &LibxlRecord::End)?;
    Ok(())
}

/// Reads an xl header and the libxl records up to LIBXC_CONTEXT. Returns the
/// config (if the file carried one).
pub fn read_start<R: Read>(r: &mut R) -> Result<Option<DomainConfig>, ImageError> {
    read_start_limited(r, &ImageLimits::default())
}

/// As [`read_start`], within `limits`.
pub fn read_start_limited<R: Read>(
    r: &mut R,
    limits: &ImageLimits,
) -> Result<Option<DomainConfig>, ImageError> {
    let xl = read_xl_header_info_capped(r, limits.max_config)?;
    if xl.header.mandatory_flags & XL_FLAG_STREAMV2 == 0 {
        return Err(ImageError::Format(
            "legacy (pre-4.6) save image: convert it with Xen's convert-legacy-stream first".into(),
        ));
    }
    let config = match &xl.header.config {
        Some(text) => {
            let json = serde_json::from_slice::<Value>(text).map_err(|e| {
                ImageError::Format(format!(
                    "xl header: the config ({} bytes) is not JSON: {e}",
                    text.len()
                ))
            })?;
            Some(
                DomainConfig::from_json(json)
                    .map_err(|e| ImageError::Format(format!("xl header: {e}")))?,
            )
        }
        None => None,
    };
    let mut walk = LibxlWalk::new(xl.size, false, limits.libxl_caps());
    walk.header(r)?;
    let first = walk.next(r)?;
    match first.rec {
        LibxlRecord::LibxcContext => Ok(config),
        ref other => Err(walk
            .refuse(
                &first,
                format!(
                    "expected LIBXC_CONTEXT first, found {} ({} bytes)",
                    other.name(),
                    first.length
                ),
            )
            .into()),
    }
}

/// The libxl records after the libxc stream, up to END: the device model's
/// state of an HVM guest, if the stream carries one.
pub fn read_end<R: Read>(r: &mut R) -> Result<Option<DeviceModelState>, ImageError> {
    read_end_limited(r, &ImageLimits::default())
}

/// As [`read_end`], within `limits`: each record is checked from its header
/// before its body is read, the totals after each record. The records are
/// walked as a stream whose LIBXC_CONTEXT was the first record (what
/// [`read_start`] requires).
pub fn read_end_limited<R: Read>(
    r: &mut R,
    limits: &ImageLimits,
) -> Result<Option<DeviceModelState>, ImageError> {
    let mut walk = LibxlWalk::after_libxc(false, limits.libxl_caps());
    let mut dm: Option<DeviceModelState> = None;
    let mut records = 0u64;
    let mut xenstore_bytes = 0u64;
    loop {
        // The walk refuses a second LIBXC_CONTEXT and checkpoint records
        // (this is a plain stream: there was no libxc CHECKPOINT).
        let Walked {
            rec, index, offset, ..
        } = walk.next(r)?;
        let rtype = rec.type_code();
        let refuse =
            |msg: String| -> ImageError { walk.refuse_record(index, rtype, offset, msg).into() };
        if matches!(
            rec,
            LibxlRecord::EmulatorXenstoreData { .. } | LibxlRecord::EmulatorContext { .. }
        ) {
            records += 1;
            OverLimit::check(
                "the count of EMULATOR_* records",
                records,
                limits.max_emulator_records.into(),
                Unit::Items,
            )?;
        }
        match rec {
            LibxlRecord::End => {
                return match dm {
                    Some(d) if d.context.is_empty() => Err(refuse(
                        "EMULATOR_XENSTORE_DATA without EMULATOR_CONTEXT".into(),
                    )),
                    dm => Ok(dm),
                }
            }
            LibxlRecord::EmulatorXenstoreData {
                emulator_id, pairs, ..
            } => {
                let d = dm.get_or_insert_with(|| DeviceModelState::empty(emulator_id));
                xenstore_bytes += pairs
                    .iter()
                    .map(|(k, v)| (k.len() + v.len() + 2) as u64)
                    .sum::<u64>();
                OverLimit::check(
                    "EMULATOR_XENSTORE_DATA, all records together,",
                    xenstore_bytes,
                    limits.max_xenstore_data.into(),
                    Unit::Bytes,
                )?;
                OverLimit::check(
                    "the count of xenstore pairs, all records together,",
                    (d.xenstore.len() + pairs.len()) as u64,
                    limits.max_xenstore_pairs.into(),
                    Unit::Items,
                )?;
                d.xenstore.extend(pairs);
            }
            LibxlRecord::EmulatorContext {
                emulator_id, blob, ..
            } => {
                let d = dm.get_or_insert_with(|| DeviceModelState::empty(emulator_id));
                if !d.context.is_empty() {
                    return Err(refuse(
                        "a second EMULATOR_CONTEXT (one device model only)".into(),
                    ));
                }
                d.context = blob;
            }
            other => {
                return Err(refuse(format!(
                    "{} in a plain (non-checkpointed) stream",
                    other.name()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(records: &[LibxlRecord]) -> Vec<u8> {
        let mut b = Vec::new();
        for r in records {
            write_libxl_record(&mut b, r).unwrap();
        }
        b
    }

    #[test]
    fn device_model_records_become_one_state() {
        let b = tail(&[
            LibxlRecord::EmulatorXenstoreData {
                emulator_id: 2,
                index: 0,
                pairs: vec![("physmap/1/name".into(), "vga.vram".into())],
            },
            LibxlRecord::EmulatorContext {
                emulator_id: 2,
                index: 0,
                blob: b"QEVM".to_vec(),
            },
            LibxlRecord::End,
        ]);
        let dm = read_end(&mut b.as_slice()).unwrap().unwrap();
        assert_eq!(dm.emulator_id, 2);
        assert_eq!(
            dm.xenstore,
            vec![("physmap/1/name".into(), "vga.vram".into())]
        );
        assert_eq!(dm.context, b"QEVM");
        assert_eq!(
            read_end(&mut tail(&[LibxlRecord::End]).as_slice()).unwrap(),
            None
        );
    }

    #[test]
    fn a_misplaced_record_is_named_not_dumped() {
        let mut b = Vec::new();
        let c = DomainConfig::from_json(serde_json::json!({"c_info": {"name": "x"}})).unwrap();
        write_start(&mut b, &c).unwrap();
        // Replace LIBXC_CONTEXT (the last 8 bytes) with 1 MiB of emulator state.
        b.truncate(b.len() - 8);
        write_libxl_record(
            &mut b,
            &LibxlRecord::EmulatorContext {
                emulator_id: 2,
                index: 0,
                blob: vec![0x41; 1 << 20],
            },
        )
        .unwrap();
        let e = read_start(&mut b.as_slice()).unwrap_err().to_string();
        assert!(
            e.contains("expected LIBXC_CONTEXT first, found EMULATOR_CONTEXT"),
            "{e}"
        );
        assert!(e.contains("#0") && e.contains("offset"), "{e}");
        assert!(
            e.len() < 300,
            "{} bytes: {}",
            e.len(),
            &e[..300.min(e.len())]
        );
    }

    #[test]
    fn incomplete_or_doubled_device_models_are_refused() {
        let ctx = LibxlRecord::EmulatorContext {
            emulator_id: 2,
            index: 0,
            blob: b"QEVM".to_vec(),
        };
        let b = tail(&[ctx.clone(), ctx, LibxlRecord::End]);
        let e = read_end(&mut b.as_slice()).unwrap_err().to_string();
        assert!(e.contains("second EMULATOR_CONTEXT"), "{e}");
        let b = tail(&[
            LibxlRecord::EmulatorXenstoreData {
                emulator_id: 2,
                index: 0,
                pairs: vec![],
            },
            LibxlRecord::End,
        ]);
        let e = read_end(&mut b.as_slice()).unwrap_err().to_string();
        assert!(e.contains("without EMULATOR_CONTEXT"), "{e}");
    }
}
