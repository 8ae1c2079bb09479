//! `rxmigrate inspect` and `rxmigrate verify`: walk a save file or stream
//! through all its layers (xl header, libxl records, the libxc stream inline
//! after LIBXC_CONTEXT, the remaining libxl records), one record at a time,
//! and report what it holds or the first rule it breaks.
//!
//! `verify` applies what Xen's verify-stream-v2 checks (reserved fields zero,
//! no unknown records) on top of the restore rules; `inspect` reads with the
//! restore rules only so that it can show streams the verifier would reject
//! for cosmetic reasons.
//!
//! Rooms: `walker` reads the layers (the libxl records through the one
//! [`crate::stream::LibxlWalk`], the libxc records through
//! [`crate::stream::LibxcReader`]), `summary` adds up what they hold,
//! `describe` puts one record in words, `report` prints it all.

mod describe;
mod report;
mod summary;
mod walker;

use crate::stream::{detect, Format, Layer, StreamError, DETECT_LEN, XL_FLAG_STREAMV2};
use report::Report;
use std::io::{self, Read, Write};
use walker::Walker;

pub use summary::{
    HvmEntryCount, HvmParam, LibxcSummary, LibxlSummary, P2mInfo, PvInfo, Summary, XlSummary,
};

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

/// Prints every header and record of a stream, then a summary; on a broken
/// stream, the records up to the error and then the error. `json` prints one
/// JSON object per line instead.
pub fn inspect(
    input: &mut dyn Read,
    json: bool,
    out: &mut dyn Write,
) -> Result<Summary, InspectError> {
    run(input, json, out, false)
}

/// Checks a whole stream structurally, as Xen's verify-stream-v2 does, and
/// prints a verdict: a one-line summary, or the first error.
pub fn verify(
    input: &mut dyn Read,
    json: bool,
    out: &mut dyn Write,
) -> Result<Summary, InspectError> {
    run(input, json, out, true)
}

/// `verify`: the verifier's rules, the verdict only; `inspect`: the restore
/// rules, every record.
fn run(
    input: &mut dyn Read,
    json: bool,
    out: &mut dyn Write,
    verify: bool,
) -> Result<Summary, InspectError> {
    let mut report = Report {
        out,
        json,
        records: !verify,
    };
    let res = walk(input, verify, &mut report);
    report.finish(&res, verify)?;
    res
}

/// Walks the input; `strict` selects the verifier's rules.
fn walk(
    input: &mut dyn Read,
    strict: bool,
    report: &mut Report<'_>,
) -> Result<Summary, InspectError> {
    let mut first = [0u8; DETECT_LEN];
    let got = crate::stream::read_full(input, &mut first)
        .map_err(|e| StreamError::io(Layer::Libxc, e))?;
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
        Format::Libxc => w.libxc_stream(&mut r, 0, None)?,
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

fn count_rest(r: &mut dyn Read) -> io::Result<u64> {
    io::copy(r, &mut io::sink())
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
