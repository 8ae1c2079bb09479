//! Caps a reader applies on top of the format's own: a receiver knows how
//! big the guest may be and how big the records around it may be, and
//! refuses anything larger before it allocates for it.

use super::record::PAGE_DATA_PFN_MASK;
use super::{MAX_READ_PFNS, PAGE_SIZE, REC_LENGTH_MAX};
use std::fmt;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Items,
    /// A guest frame number (shown in hex).
    Pfn,
}

/// A size or count beyond what the receiver allows. Not a format error: the
/// stream may be well formed, only bigger than this receiver accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {}, beyond {bound} of {}{hint}", show(*.unit, *.got), show(*.unit, *.limit))]
pub struct OverLimit {
    /// The field or thing measured ("config length", "vCPU id", ...).
    pub what: String,
    pub got: u64,
    pub limit: u64,
    pub unit: Unit,
    /// What sets the limit: "the receiver's limit" unless said otherwise.
    pub bound: &'static str,
    /// How to raise the limit, if it can be raised (" (--max-memory)").
    pub hint: &'static str,
}

impl OverLimit {
    pub fn new(what: impl Into<String>, got: u64, limit: u64, unit: Unit) -> OverLimit {
        OverLimit {
            what: what.into(),
            got,
            limit,
            unit,
            bound: "the receiver's limit",
            hint: "",
        }
    }
    pub fn bound(mut self, bound: &'static str) -> OverLimit {
        self.bound = bound;
        self
    }
    pub fn hint(mut self, hint: &'static str) -> OverLimit {
        self.hint = hint;
        self
    }
    /// `Err` when `got > limit`.
    pub fn check(what: &str, got: u64, limit: u64, unit: Unit) -> Result<(), OverLimit> {
        if got > limit {
            Err(OverLimit::new(what, got, limit, unit))
        } else {
            Ok(())
        }
    }
}

fn show(unit: Unit, v: u64) -> String {
    match unit {
        Unit::Bytes => Size(v).to_string(),
        Unit::Items => v.to_string(),
        Unit::Pfn => format!("{v:#x}"),
    }
}

/// A byte count for people: exact below 1 KiB, else in the largest binary
/// unit that keeps it at least 1 (one decimal when not whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let v = self.0;
        if v < 1024 {
            return write!(f, "{v} bytes");
        }
        let mut unit = 0;
        let mut scale = 1024u64;
        while unit + 1 < UNITS.len() && v / scale >= 1024 {
            scale *= 1024;
            unit += 1;
        }
        if v % scale == 0 {
            write!(f, "{} {}", v / scale, UNITS[unit])
        } else {
            write!(f, "{:.1} {}", v as f64 / scale as f64, UNITS[unit])
        }
    }
}

/// Caps of a libxc reader beyond the format's (see
/// [`LibxcReader::set_caps`](super::LibxcReader::set_caps)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCaps {
    /// Largest body of a record other than PAGE_DATA, X86_PV_P2M_FRAMES
    /// (sized by `max_pfn`) and skipped optional records (never held).
    pub max_body: u32,
    /// Most entries one PAGE_DATA record may hold.
    pub max_page_entries: u32,
    /// Highest pfn a PAGE_DATA entry may name; also sizes the largest
    /// X86_PV_P2M_FRAMES body (never capped below `max_body`).
    pub max_pfn: u64,
}

impl Default for ReadCaps {
    /// The format's own caps.
    fn default() -> Self {
        ReadCaps {
            max_body: REC_LENGTH_MAX as u32,
            max_page_entries: MAX_READ_PFNS as u32,
            max_pfn: PAGE_DATA_PFN_MASK,
        }
    }
}

impl ReadCaps {
    /// Largest X86_PV_P2M_FRAMES body for pfns up to `max_pfn` (one u64 per
    /// P2M frame of a 64-bit guest, 512 entries each, plus the 8-byte header),
    /// and never more than the format's cap.
    pub fn max_p2m_body(&self) -> u64 {
        let fpp = (PAGE_SIZE / 8) as u64;
        (8 + 8 * (self.max_pfn / fpp + 1)).min(REC_LENGTH_MAX as u64)
    }
}

/// Caps of the libxl records after the libxc stream (device model state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibxlCaps {
    /// Largest EMULATOR_CONTEXT blob.
    pub max_emulator_context: u32,
    /// Largest EMULATOR_XENSTORE_DATA key/value data.
    pub max_xenstore_data: u32,
    /// Most key/value pairs in one EMULATOR_XENSTORE_DATA record.
    pub max_xenstore_pairs: u32,
}

impl Default for LibxlCaps {
    /// The format's own cap on every record.
    fn default() -> Self {
        LibxlCaps {
            max_emulator_context: REC_LENGTH_MAX as u32,
            max_xenstore_data: REC_LENGTH_MAX as u32,
            max_xenstore_pairs: u32::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(Size(17).to_string(), "17 bytes");
        assert_eq!(Size(1 << 20).to_string(), "1 MiB");
        assert_eq!(Size(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Size(u64::MAX).to_string(), "16.0 EiB");
    }

    #[test]
    fn over_limit_names_field_value_and_limit() {
        let e =
            OverLimit::new("config length", 32 << 20, 1 << 20, Unit::Bytes).hint(" (--max-memory)");
        assert_eq!(
            e.to_string(),
            "config length is 32 MiB, beyond the receiver's limit of 1 MiB (--max-memory)"
        );
        assert!(OverLimit::check("x", 2, 2, Unit::Items).is_ok());
        assert!(OverLimit::check("x", 3, 2, Unit::Items).is_err());
    }

    #[test]
    fn p2m_body_follows_the_pfn_cap() {
        let c = ReadCaps {
            max_pfn: 511,
            ..ReadCaps::default()
        };
        assert_eq!(c.max_p2m_body(), 16);
        assert_eq!(ReadCaps::default().max_p2m_body(), REC_LENGTH_MAX as u64);
    }
}
