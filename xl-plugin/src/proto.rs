//! libxl's save-helper message protocol, helper side (docs/REFERENCE.md §8.2–§8.3,
//! Xen 4.14+ numbering).
//!
//! The helper speaks first: on stdout a native `u16` length, then the body,
//! a native `u16` message number followed by the arguments back to back
//! (`int`/`unsigned`/`uint32_t` 4 bytes, `unsigned long`/`xen_pfn_t` 8 bytes
//! on 64-bit hosts, strings as a `u32` length counting a final NUL, then the
//! bytes and the NUL). For messages that need an answer libxl writes one
//! native `int` on the helper's stdin.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::Mutex;

/// Message numbers (positional in libxl_save_msgs_gen.pl since Xen 4.14).
pub mod msg {
    pub const LOG: u16 = 1;
    pub const PROGRESS: u16 = 2;
    pub const SUSPEND: u16 = 3;
    pub const POSTCOPY: u16 = 4;
    pub const CHECKPOINT: u16 = 5;
    pub const WAIT_CHECKPOINT: u16 = 6;
    pub const SWITCH_QEMU_LOGDIRTY: u16 = 7;
    pub const STATIC_DATA_DONE: u16 = 8;
    pub const RESTORE_RESULTS: u16 = 9;
    pub const COMPLETE: u16 = 10;
}

/// `cbflags` bit of a callback libxl provides: `1 << msgnum`.
pub fn cbflag(msgnum: u16) -> u32 {
    1u32 << msgnum
}

/// xentoollog levels (tools/include/xentoollog.h).
pub mod level {
    pub const DEBUG: u32 = 1;
    pub const VERBOSE: u32 = 2;
    pub const DETAIL: u32 = 3;
    pub const PROGRESS: u32 = 4;
    pub const INFO: u32 = 5;
    pub const NOTICE: u32 = 6;
    pub const WARN: u32 = 7;
    pub const ERROR: u32 = 8;
    pub const CRITICAL: u32 = 9;
}

/// Largest message body libxl accepts (its length field is a `u16`).
pub const MAX_BODY: usize = u16::MAX as usize;

/// Errors talking to libxl.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("{what} message is {len} bytes, more than the protocol's {MAX_BODY}")]
    TooLong { what: &'static str, len: usize },
    #[error("sending the {what} message to libxl: {source}")]
    Send {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reading libxl's reply to {what}: {source}")]
    Reply {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the libxl pipes: {0}")]
    Pipes(#[source] std::io::Error),
}

/// One helper → libxl message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Log {
        level: u32,
        errnoval: u32,
        context: &'a str,
        formatted: &'a str,
    },
    Progress {
        context: &'a str,
        doing_what: &'a str,
        done: u64,
        total: u64,
    },
    Suspend,
    SwitchQemuLogdirty {
        domid: u32,
        enable: bool,
    },
    StaticDataDone {
        missing: u32,
    },
    RestoreResults {
        store_gfn: u64,
        console_gfn: u64,
    },
    Complete {
        retval: i32,
        errnoval: i32,
    },
}

impl Message<'_> {
    pub fn number(&self) -> u16 {
        match self {
            Message::Log { .. } => msg::LOG,
            Message::Progress { .. } => msg::PROGRESS,
            Message::Suspend => msg::SUSPEND,
            Message::SwitchQemuLogdirty { .. } => msg::SWITCH_QEMU_LOGDIRTY,
            Message::StaticDataDone { .. } => msg::STATIC_DATA_DONE,
            Message::RestoreResults { .. } => msg::RESTORE_RESULTS,
            Message::Complete { .. } => msg::COMPLETE,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Message::Log { .. } => "log",
            Message::Progress { .. } => "progress",
            Message::Suspend => "suspend",
            Message::SwitchQemuLogdirty { .. } => "switch_qemu_logdirty",
            Message::StaticDataDone { .. } => "static_data_done",
            Message::RestoreResults { .. } => "restore_results",
            Message::Complete { .. } => "complete",
        }
    }

    /// Whether libxl answers with an `int` (the W and A callbacks).
    pub fn wants_reply(&self) -> bool {
        matches!(
            self,
            Message::Suspend
                | Message::SwitchQemuLogdirty { .. }
                | Message::StaticDataDone { .. }
                | Message::Complete { .. }
        )
    }

    /// The message as written on the pipe: length prefix and body.
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        let mut b = vec![0u8; 2];
        b.extend_from_slice(&self.number().to_ne_bytes());
        match self {
            Message::Log {
                level,
                errnoval,
                context,
                formatted,
            } => {
                b.extend_from_slice(&level.to_ne_bytes());
                b.extend_from_slice(&errnoval.to_ne_bytes());
                put_string(&mut b, context);
                put_string(&mut b, formatted);
            }
            Message::Progress {
                context,
                doing_what,
                done,
                total,
            } => {
                put_string(&mut b, context);
                put_string(&mut b, doing_what);
                put_ulong(&mut b, *done);
                put_ulong(&mut b, *total);
            }
            Message::Suspend => {}
            Message::SwitchQemuLogdirty { domid, enable } => {
                b.extend_from_slice(&domid.to_ne_bytes());
                b.extend_from_slice(&u32::from(*enable).to_ne_bytes());
            }
            Message::StaticDataDone { missing } => b.extend_from_slice(&missing.to_ne_bytes()),
            Message::RestoreResults {
                store_gfn,
                console_gfn,
            } => {
                // xen_pfn_t is 64 bits on x86_64 and arm64.
                b.extend_from_slice(&store_gfn.to_ne_bytes());
                b.extend_from_slice(&console_gfn.to_ne_bytes());
            }
            Message::Complete { retval, errnoval } => {
                b.extend_from_slice(&retval.to_ne_bytes());
                b.extend_from_slice(&errnoval.to_ne_bytes());
            }
        }
        let len = b.len() - 2;
        let len16 = u16::try_from(len).map_err(|_| ProtoError::TooLong {
            what: self.name(),
            len,
        })?;
        b[..2].copy_from_slice(&len16.to_ne_bytes());
        Ok(b)
    }
}

/// `unsigned long`, the host's width.
fn put_ulong(b: &mut Vec<u8>, v: u64) {
    // On 32-bit hosts libxl's `unsigned long` is 4 bytes; saturate there.
    let v = libc::c_ulong::try_from(v).unwrap_or(libc::c_ulong::MAX);
    b.extend_from_slice(&v.to_ne_bytes());
}

/// A C string: `u32` length including the NUL, the bytes, the NUL. Interior
/// NULs would cut the string short on libxl's side, so they become spaces.
fn put_string(b: &mut Vec<u8>, s: &str) {
    let n = s.len() + 1;
    b.extend_from_slice(&(n as u32).to_ne_bytes());
    b.extend(s.bytes().map(|c| if c == 0 { b' ' } else { c }));
    b.push(0);
}

/// Cut `s` so that a log message carrying it and `context` fits the
/// protocol's 64 KiB limit.
pub fn fit_log_text<'a>(context: &str, s: &'a str) -> &'a str {
    // Header: msgnum, level, errnoval, two string lengths, two NULs.
    let room = MAX_BODY - (2 + 4 + 4 + 4 + 4 + 2) - context.len();
    if s.len() <= room {
        return s;
    }
    let mut end = room;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The two pipes to libxl: messages out on stdout, replies in on stdin.
/// Writes of whole messages are serialised, so the logger and the engine
/// can share it.
pub struct Libxl {
    out: Mutex<File>,
    replies: Mutex<File>,
}

impl Libxl {
    /// Duplicates of this process's stdin and stdout, unbuffered: nothing is
    /// read from libxl beyond the replies asked for.
    pub fn from_stdio() -> Result<Self, ProtoError> {
        let out = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(ProtoError::Pipes)?;
        let replies = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(ProtoError::Pipes)?;
        Ok(Self::new(File::from(out), File::from(replies)))
    }

    pub fn new(out: File, replies: File) -> Self {
        Libxl {
            out: Mutex::new(out),
            replies: Mutex::new(replies),
        }
    }

    /// Send a message that has no reply.
    pub fn send(&self, m: &Message<'_>) -> Result<(), ProtoError> {
        let bytes = m.encode()?;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|source| ProtoError::Send {
                what: m.name(),
                source,
            })
    }

    /// Send a message and wait for libxl's `int` answer.
    pub fn call(&self, m: &Message<'_>) -> Result<i32, ProtoError> {
        debug_assert!(m.wants_reply());
        // Held across the send so that two calls cannot take each other's replies.
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        self.send(m)?;
        let mut v = [0u8; 4];
        replies
            .read_exact(&mut v)
            .map_err(|source| ProtoError::Reply {
                what: m.name(),
                source: if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    std::io::Error::new(source.kind(), "libxl closed the reply pipe")
                } else {
                    source
                },
            })?;
        Ok(i32::from_ne_bytes(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspend_is_four_bytes_as_in_the_reference() {
        // Reference §4.3: "helper asks for suspend: bytes 02 00 03 00".
        assert_eq!(Message::Suspend.encode().unwrap(), [2, 0, 3, 0]);
    }

    #[test]
    fn strings_carry_their_nul_and_count_it() {
        let b = Message::Log {
            level: level::INFO,
            errnoval: 0,
            context: "xc",
            formatted: "a\0b",
        }
        .encode()
        .unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&(2u16 + 4 + 4 + 4 + 3 + 4 + 4).to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&5u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&3u32.to_ne_bytes());
        want.extend_from_slice(b"xc\0");
        want.extend_from_slice(&4u32.to_ne_bytes());
        want.extend_from_slice(b"a b\0");
        assert_eq!(b, want);
    }

    #[test]
    fn oversized_log_text_is_cut_to_fit() {
        let long = "é".repeat(40_000);
        let cut = fit_log_text("rxmigrate", &long);
        let m = Message::Log {
            level: level::INFO,
            errnoval: 0,
            context: "rxmigrate",
            formatted: cut,
        };
        let b = m.encode().expect("fits");
        assert!(b.len() - 2 <= MAX_BODY);
        assert!(cut.len() > 60_000);
        let too_long = Message::Log {
            level: level::INFO,
            errnoval: 0,
            context: "rxmigrate",
            formatted: &long,
        };
        assert!(matches!(too_long.encode(), Err(ProtoError::TooLong { .. })));
    }

    #[test]
    fn reply_flags_follow_the_generator() {
        assert!(Message::Suspend.wants_reply());
        assert!(Message::Complete {
            retval: 0,
            errnoval: 0
        }
        .wants_reply());
        assert!(!Message::RestoreResults {
            store_gfn: 0,
            console_gfn: 0
        }
        .wants_reply());
        assert_eq!(
            cbflag(msg::SUSPEND) | cbflag(msg::SWITCH_QEMU_LOGDIRTY),
            136
        );
        assert_eq!(
            cbflag(msg::STATIC_DATA_DONE) | cbflag(msg::RESTORE_RESULTS),
            768
        );
    }
}
