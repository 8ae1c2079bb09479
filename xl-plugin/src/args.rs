//! The command line libxl gives its save helper (Xen 4.14 and later,
//! `libxl_save_callout.c: run_helper`; docs/REFERENCE.md §8.1):
//!
//! ```text
//! --save-domain    io_fd recv_fd domid xcflags cbflags stream_type
//! --restore-domain io_fd send_back_fd domid store_evtchn store_domid
//!                  console_evtchn console_domid cbflags stream_type
//! ```

use rxmigrate::helper_settings::{RESTORE_ARGS, SAVE_ARGS};
use std::fmt;

/// `XCFLAGS_LIVE` (tools/include/xenguest.h).
pub const XCFLAGS_LIVE: u32 = 1 << 0;
/// `XCFLAGS_DEBUG`: a VERIFY pass after the save.
pub const XCFLAGS_DEBUG: u32 = 1 << 1;

/// Bad command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error(
        "no mode given; usage: rxmigrate-save-helper --save-domain IO_FD RECV_FD DOMID XCFLAGS \
         CBFLAGS STREAM_TYPE | --restore-domain IO_FD SEND_BACK_FD DOMID STORE_EVTCHN STORE_DOMID \
         CONSOLE_EVTCHN CONSOLE_DOMID CBFLAGS STREAM_TYPE (as run by libxl, Xen 4.14+)"
    )]
    NoMode,
    #[error("unknown mode {0:?}: expected --save-domain or --restore-domain")]
    UnknownMode(String),
    #[error(
        "{mode} takes {want} arguments ({names}; the layout of Xen 4.14 and later), got {got}"
    )]
    Count {
        mode: &'static str,
        want: usize,
        got: usize,
        names: String,
    },
    #[error("{mode} argument {pos} ({name}): {value:?} is not {what}")]
    Value {
        mode: &'static str,
        pos: usize,
        name: &'static str,
        value: String,
        what: &'static str,
    },
}

/// libxl's `libxl_checkpointed_stream` / libxc's `xc_stream_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    Plain,
    Remus,
    Colo,
}

impl fmt::Display for StreamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamType::Plain => "plain",
            StreamType::Remus => "Remus",
            StreamType::Colo => "COLO",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveArgs {
    pub io_fd: i32,
    /// COLO's back channel; a dup of libxl's stdin otherwise (unused).
    pub recv_fd: i32,
    pub domid: u32,
    pub xcflags: u32,
    pub cbflags: u32,
    pub stream_type: StreamType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreArgs {
    pub io_fd: i32,
    pub send_back_fd: i32,
    pub domid: u32,
    pub store_evtchn: u32,
    pub store_domid: u32,
    pub console_evtchn: u32,
    pub console_domid: u32,
    pub cbflags: u32,
    pub stream_type: StreamType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Save(SaveArgs),
    Restore(RestoreArgs),
}

impl Mode {
    pub fn stream_type(&self) -> StreamType {
        match self {
            Mode::Save(a) => a.stream_type,
            Mode::Restore(a) => a.stream_type,
        }
    }
    pub fn domid(&self) -> u32 {
        match self {
            Mode::Save(a) => a.domid,
            Mode::Restore(a) => a.domid,
        }
    }
}

/// Highest domid a real domain can have (DOMID_FIRST_RESERVED - 1).
const MAX_DOMID: u32 = 0x7fef;

struct Fields<'a> {
    mode: &'static str,
    names: &'static [&'static str],
    values: &'a [String],
}

impl Fields<'_> {
    fn err(&self, i: usize, what: &'static str) -> ArgError {
        ArgError::Value {
            mode: self.mode,
            pos: i + 1,
            name: self.names[i],
            value: self.values[i].clone(),
            what,
        }
    }
    /// Decimal, as libxl prints them (`%lu`, or `-1` for "no fd").
    fn u32(&self, i: usize) -> Result<u32, ArgError> {
        let s = &self.values[i];
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(self.err(i, "a decimal number"));
        }
        s.parse().map_err(|_| self.err(i, "a 32-bit number"))
    }
    fn fd(&self, i: usize, optional: bool) -> Result<i32, ArgError> {
        if optional && self.values[i] == "-1" {
            return Ok(-1);
        }
        let v = self.u32(i).map_err(|_| {
            self.err(
                i,
                if optional {
                    "a file descriptor number (or -1)"
                } else {
                    "a file descriptor number"
                },
            )
        })?;
        i32::try_from(v).map_err(|_| self.err(i, "a file descriptor number"))
    }
    fn domid(&self, i: usize) -> Result<u32, ArgError> {
        let v = self.u32(i)?;
        if v > MAX_DOMID {
            return Err(self.err(i, "a domain id (0..=32751)"));
        }
        Ok(v)
    }
    fn stream_type(&self, i: usize) -> Result<StreamType, ArgError> {
        match self.u32(i) {
            Ok(0) => Ok(StreamType::Plain),
            Ok(1) => Ok(StreamType::Remus),
            Ok(2) => Ok(StreamType::Colo),
            _ => Err(self.err(i, "a stream type (0 plain, 1 Remus, 2 COLO)")),
        }
    }
}

/// Parse the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Mode, ArgError> {
    let Some((mode, rest)) = args.split_first() else {
        return Err(ArgError::NoMode);
    };
    let (mode, names): (&'static str, &'static [&'static str]) = match mode.as_str() {
        "--save-domain" => ("--save-domain", &SAVE_ARGS),
        "--restore-domain" => ("--restore-domain", &RESTORE_ARGS),
        other => return Err(ArgError::UnknownMode(other.to_string())),
    };
    if rest.len() != names.len() {
        return Err(ArgError::Count {
            mode,
            want: names.len(),
            got: rest.len(),
            names: names.join(" "),
        });
    }
    let f = Fields {
        mode,
        names,
        values: rest,
    };
    Ok(match mode {
        "--save-domain" => Mode::Save(SaveArgs {
            io_fd: f.fd(0, false)?,
            recv_fd: f.fd(1, true)?,
            domid: f.domid(2)?,
            xcflags: f.u32(3)?,
            cbflags: f.u32(4)?,
            stream_type: f.stream_type(5)?,
        }),
        _ => Mode::Restore(RestoreArgs {
            io_fd: f.fd(0, false)?,
            send_back_fd: f.fd(1, true)?,
            domid: f.domid(2)?,
            store_evtchn: f.u32(3)?,
            store_domid: f.domid(4)?,
            console_evtchn: f.u32(5)?,
            console_domid: f.domid(6)?,
            cbflags: f.u32(7)?,
            stream_type: f.stream_type(8)?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn libxl_417_save_and_restore_lines() {
        assert_eq!(
            parse(&v("--save-domain 7 8 3 1 136 0")).unwrap(),
            Mode::Save(SaveArgs {
                io_fd: 7,
                recv_fd: 8,
                domid: 3,
                xcflags: XCFLAGS_LIVE,
                cbflags: 136,
                stream_type: StreamType::Plain
            })
        );
        assert_eq!(
            parse(&v("--restore-domain 5 -1 4 1 0 2 0 768 0")).unwrap(),
            Mode::Restore(RestoreArgs {
                io_fd: 5,
                send_back_fd: -1,
                domid: 4,
                store_evtchn: 1,
                store_domid: 0,
                console_evtchn: 2,
                console_domid: 0,
                cbflags: 768,
                stream_type: StreamType::Plain
            })
        );
        assert_eq!(
            parse(&v("--save-domain 7 8 3 1 184 1"))
                .unwrap()
                .stream_type(),
            StreamType::Remus
        );
    }

    #[test]
    fn bad_lines_name_the_argument() {
        assert_eq!(parse(&[]), Err(ArgError::NoMode));
        assert!(matches!(parse(&v("--save")), Err(ArgError::UnknownMode(m)) if m == "--save"));
        // Xen 4.10-4.13 had an extra `hvm` argument.
        let e = parse(&v("--save-domain 7 8 3 1 0 136 0")).unwrap_err();
        assert!(e.to_string().contains("takes 6 arguments"), "{e}");
        assert!(e.to_string().contains("got 7"), "{e}");
        let e = parse(&v("--save-domain 7 8 x3 1 136 0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--save-domain argument 3 (domid): \"x3\" is not a decimal number"
        );
        let e = parse(&v("--restore-domain 5 -1 4 1 0 2 0 768 9")).unwrap_err();
        assert!(e.to_string().contains("argument 9 (stream_type)"), "{e}");
        let e = parse(&v("--save-domain -1 8 3 1 136 0")).unwrap_err();
        assert!(e.to_string().contains("(io_fd)"), "{e}");
        let e = parse(&v("--save-domain 7 8 40000 1 136 0")).unwrap_err();
        assert!(e.to_string().contains("domain id"), "{e}");
    }
}
