//! The stream layer's error: what went wrong, in which layer, at which record
//! and at which byte offset.

use std::fmt;
use std::io;

/// Which format layer an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The xl save-file header.
    Xl,
    /// The libxl stream (header and records).
    Libxl,
    /// The libxc stream (image header, domain header, records).
    Libxc,
    /// The xl migrate handshake messages.
    Handshake,
    /// The HVM context blob carried by HVM_CONTEXT.
    HvmContext,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Xl => "xl",
            Layer::Libxl => "libxl",
            Layer::Libxc => "libxc",
            Layer::Handshake => "handshake",
            Layer::HvmContext => "HVM context",
        }
    }
}

/// Where in its layer an error was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A fixed header ("image header", "domain header", ...).
    Header(&'static str),
    /// A record: its index in its layer (if known) and its type (if read).
    Record {
        index: Option<u64>,
        rtype: Option<u32>,
    },
    /// An entry of a blob (HVM context descriptors).
    Entry { index: u64 },
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
    /// The input ended. `clean` means it ended exactly where a new record or
    /// header would start (no byte of it was read).
    #[error("{}", eof_message(*.clean, *.at, *.wanted, *.got))]
    Eof {
        clean: bool,
        at: u64,
        wanted: u64,
        got: u64,
    },
    /// The input broke a rule of the format.
    #[error("{0}")]
    Invalid(String),
    /// The input is bigger than the reader's caps allow (the receiver's
    /// limits, tighter than the format's).
    #[error(transparent)]
    OverLimit(Box<super::limits::OverLimit>),
}

impl From<super::limits::OverLimit> for ErrorKind {
    fn from(e: super::limits::OverLimit) -> Self {
        ErrorKind::OverLimit(Box::new(e))
    }
}

fn eof_message(clean: bool, at: u64, wanted: u64, got: u64) -> String {
    if clean {
        format!("end of input at offset {at:#x} where {wanted} more bytes were expected")
    } else {
        format!(
            "input truncated at offset {:#x}: needed {wanted} bytes from offset {at:#x}, got {got}",
            at.saturating_add(got)
        )
    }
}

/// An error of the stream layer. Its text names the layer, the record (index
/// and type), the byte offset of the record or header, and the rule broken,
/// e.g. `libxc record #7 (PAGE_DATA) at offset 0x1a40: count is 0`.
#[derive(Debug)]
pub struct StreamError {
    layer: Layer,
    place: Option<Place>,
    offset: Option<u64>,
    kind: ErrorKind,
}

impl StreamError {
    pub(crate) fn new(layer: Layer, kind: ErrorKind) -> Self {
        StreamError {
            layer,
            place: None,
            offset: None,
            kind,
        }
    }

    pub(crate) fn invalid(layer: Layer, msg: impl Into<String>) -> Self {
        Self::new(layer, ErrorKind::Invalid(msg.into()))
    }

    pub(crate) fn io(layer: Layer, err: io::Error) -> Self {
        Self::new(layer, ErrorKind::Io(err))
    }

    pub(crate) fn with_place(mut self, place: Place) -> Self {
        self.place = Some(place);
        self
    }

    pub(crate) fn with_offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    pub fn layer(&self) -> Layer {
        self.layer
    }
    pub fn place(&self) -> Option<Place> {
        self.place
    }
    /// Index of the offending record within its layer (0 = first record
    /// after the headers), when the error concerns a record.
    pub fn record_index(&self) -> Option<u64> {
        match self.place {
            Some(Place::Record { index, .. }) => index,
            _ => None,
        }
    }
    /// Type code of the offending record, when its header was read.
    pub fn record_type(&self) -> Option<u32> {
        match self.place {
            Some(Place::Record { rtype, .. }) => rtype,
            _ => None,
        }
    }
    /// Byte offset of the offending record or header (from the start of the
    /// input, for readers that know where they started).
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
    /// The input ended (cleanly at a record boundary or in the middle of
    /// something); see [`StreamError::is_clean_eof`] to tell them apart.
    pub fn is_eof(&self) -> bool {
        matches!(self.kind, ErrorKind::Eof { .. })
    }
    /// The input ended exactly at a record boundary: the peer closed the
    /// stream between records (Remus/COLO treat this as failover).
    pub fn is_clean_eof(&self) -> bool {
        matches!(self.kind, ErrorKind::Eof { clean: true, .. })
    }
    /// The rule broken, for format errors.
    pub fn rule(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Invalid(s) => Some(s),
            _ => None,
        }
    }

    /// Name of a record type in this error's layer.
    fn type_name(&self, rtype: u32) -> &'static str {
        match self.layer {
            Layer::Libxl => super::libxl::libxl_type_name(rtype),
            _ => super::record::libxc_type_name(rtype),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.layer.name())?;
        match self.place {
            Some(Place::Header(name)) => write!(f, " {name}")?,
            Some(Place::Record { index, rtype }) => {
                f.write_str(" record")?;
                if let Some(i) = index {
                    write!(f, " #{i}")?;
                }
                if let Some(t) = rtype {
                    write!(f, " ({})", self.type_name(t))?;
                }
            }
            Some(Place::Entry { index }) => write!(f, " entry #{index}")?,
            None => {}
        }
        if let Some(off) = self.offset {
            write!(f, " at offset {off:#x}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for StreamError {
    // Only the I/O error is a separate cause: every other kind is already
    // part of this error's text.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Shorthand for a format-rule violation.
pub(crate) fn invalid(msg: impl Into<String>) -> ErrorKind {
    ErrorKind::Invalid(msg.into())
}
