//! The layers around a libxc stream in an xl save file or an `xl migrate`
//! stream: xl header + JSON config, libxl header, LIBXC_CONTEXT … libxc … END.

use crate::hv::{DeviceModelState, DomainInfo, GuestType};
use crate::stream::{
    read_xl_header_info_capped, write_libxl_header, write_libxl_record, write_xl_header, LibxlCaps,
    LibxlRecord, LibxlWalk, OverLimit, StreamError, Unit, Walked, XL_FLAG_STREAMV2,
};
use serde_json::{json, Value};
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

/// The xl-style domain config we carry: the fields of libxl's JSON that a
/// restore needs, plus the host's own description of the guest.
pub fn config_json(info: &DomainInfo, host_config: Option<Value>) -> Value {
    // A host that has xl's own config of the domain (Xen) hands it over
    // whole, as `xl save` writes it: stock `xl restore` rebuilds the domain
    // (devices included) from it.
    if let Some(libxl) = host_config
        .as_ref()
        .and_then(|h| h.get("libxl"))
        .filter(|l| l.is_object())
    {
        // Under the domain's name now, as libxl's own retrieval of a
        // domain's config does: the stored one keeps the name it was
        // created with (`NAME--incoming` after an `xl migrate`).
        let mut cfg = libxl.clone();
        if let Some(c_info) = cfg.get_mut("c_info").and_then(Value::as_object_mut) {
            c_info.insert("name".into(), Value::String(info.name.clone()));
        }
        return cfg;
    }
    let mut v = json!({
        "c_info": {
            "type": match info.guest_type { GuestType::Pv => "pv", GuestType::Hvm => "hvm" },
            "name": info.name,
        },
        "b_info": {
            "max_vcpus": info.max_vcpu_id + 1,
            "max_memkb": info.p2m_size() * 4,
        },
    });
    if let Some(h) = host_config {
        v["rxmigrate"] = h;
    }
    v
}

/// What a restore learns from the config.
#[derive(Debug, Clone, Default)]
pub struct ConfigFacts {
    pub name: Option<String>,
    pub max_pfn: Option<u64>,
    pub max_vcpu_id: u32,
    /// `b_info.max_memkb` and `b_info.max_vcpus` as the config says them,
    /// for the receiver's limits.
    pub max_memkb: Option<u64>,
    pub max_vcpus: Option<u64>,
    pub host_config: Option<Value>,
    /// xl's `type = "pvh"`.
    pub pvh: bool,
}

pub fn config_facts(config: &Value) -> ConfigFacts {
    let max_memkb = config["b_info"]["max_memkb"].as_u64();
    let max_vcpus = config["b_info"]["max_vcpus"].as_u64();
    ConfigFacts {
        name: config["c_info"]["name"].as_str().map(str::to_string),
        max_pfn: max_memkb.filter(|&kb| kb >= 4).map(|kb| kb / 4 - 1),
        max_vcpu_id: max_vcpus.map_or(0, |n| {
            u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX)
        }),
        max_memkb,
        max_vcpus,
        host_config: config.get("rxmigrate").cloned(),
        pvh: config["c_info"]["type"].as_str() == Some("pvh"),
    }
}

/// Writes the xl header, the libxl header and LIBXC_CONTEXT: the libxc
/// stream goes right after.
pub fn write_start<W: Write>(w: &mut W, config: &Value) -> Result<(), ImageError> {
    let text = serde_json::to_vec_pretty(config)
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
pub fn read_start<R: Read>(r: &mut R) -> Result<Option<Value>, ImageError> {
    read_start_limited(r, &ImageLimits::default())
}

/// As [`read_start`], within `limits`.
pub fn read_start_limited<R: Read>(
    r: &mut R,
    limits: &ImageLimits,
) -> Result<Option<Value>, ImageError> {
    let xl = read_xl_header_info_capped(r, limits.max_config)?;
    if xl.header.mandatory_flags & XL_FLAG_STREAMV2 == 0 {
        return Err(ImageError::Format(
            "legacy (pre-4.6) save image: convert it with Xen's convert-legacy-stream first".into(),
        ));
    }
    let config = match &xl.header.config {
        Some(text) => Some(serde_json::from_slice::<Value>(text).map_err(|e| {
            ImageError::Format(format!(
                "xl header: the config ({} bytes) is not JSON: {e}",
                text.len()
            ))
        })?),
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
        write_start(&mut b, &json!({"c_info": {"name": "x"}})).unwrap();
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
    fn pvh_is_known_from_the_config_only() {
        let f = config_facts(&json!({"c_info": {"type": "pvh", "name": "p"},
                                     "b_info": {"max_memkb": 131072, "max_vcpus": 2}}));
        assert!(f.pvh);
        assert_eq!((f.max_pfn, f.max_vcpu_id), (Some(32767), 1));
        assert!(!config_facts(&json!({"c_info": {"type": "hvm"}})).pvh);
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

    /// After an `xl migrate` libxl's stored config still names the domain
    /// `NAME--incoming`; the image carries the name it has now.
    #[test]
    fn the_config_carries_the_domains_name_now() {
        let info = DomainInfo {
            domid: 7,
            name: "web".into(),
            guest_type: GuestType::Pv,
            max_pfn: 32767,
            max_vcpu_id: 0,
            online_vcpus: vec![0],
            paused: false,
            shutdown: None,
        };
        let stored = json!({"libxl": {"c_info": {"type": "pv", "name": "web--incoming"},
                                      "b_info": {"max_memkb": 131072}}});
        let cfg = config_json(&info, Some(stored));
        assert_eq!(cfg["c_info"]["name"], "web");
        assert_eq!(cfg["b_info"]["max_memkb"], 131072);
    }
}
