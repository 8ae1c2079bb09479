//! The transport layer's error: key files, the Noise handshake, waits.

use crate::cancel::Cancelled;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong in the transport: every variant names the file or the
/// peer it concerns, and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A wait passed its limit.
    #[error(
        "{peer}: {} within {} s while {what} (the limit of {option})",
        if *.writing { "could not send anything" } else { "nothing received" },
        .limit.as_secs_f64()
    )]
    Timeout {
        peer: String,
        what: String,
        limit: Duration,
        writing: bool,
        option: &'static str,
    },
    /// A signal asked us to stop while we waited.
    #[error("{peer}: {signal} while {what}")]
    Cancelled {
        peer: String,
        what: String,
        signal: Cancelled,
    },
    /// A system call on a connection failed.
    #[error("{peer}: {op}: {source}")]
    Io {
        peer: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A key or trust file is missing.
    #[error("{} does not exist: {hint}", .path.display())]
    Missing { path: PathBuf, hint: String },
    /// A key or trust file could not be read or written.
    #[error("{}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A key or trust file (or its directory) is not owned by us.
    #[error(
        "{} is owned by uid {owner}, not by the running user (uid {user}): refusing it; \
         fix: chown {user} {}",
        .path.display(), .path.display()
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        user: u32,
    },
    /// A key or trust file (or its directory) is open to group or others.
    #[error(
        "{} has mode {mode:04o}: group or others can {}: refusing it; fix: chmod {} {}",
        .path.display(), if *.private { "read or write it" } else { "write it" },
        if *.private { "600" } else { "go-w" }, .path.display()
    )]
    Mode {
        path: PathBuf,
        mode: u32,
        private: bool,
    },
    /// A line of a key or trust file does not parse.
    #[error("{}:{line}: {msg}", .path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// `keygen` would overwrite a key.
    #[error("{} exists: keep it, or pass --force to replace it (peers that trust its public key will refuse the new one)", .path.display())]
    Exists { path: PathBuf },
    /// A public key given on the command line does not parse.
    #[error("{what}: {msg}")]
    BadKey { what: String, msg: String },
    /// No key is pinned for the receiver we are to connect to.
    #[error(
        "no key pinned for {host}: add a line `{host} KEY` to {} or pass --peer-key KEY \
         (KEY is the receiver's public key, in its key.pub); or --insecure for a loopback receiver",
        .known_hosts.display()
    )]
    NoPin { host: String, known_hosts: PathBuf },
    /// `--insecure` with an address that is not loopback.
    #[error("--insecure is for loopback only: {addr} is not a loopback address (set up keys instead: docs/SECURITY.md)")]
    NotLoopback { addr: String },
    /// The peer did not speak our handshake.
    #[error("{peer}: {msg}")]
    Protocol { peer: String, msg: String },
    /// The peer presented a key we do not trust.
    #[error("{peer}: {msg}")]
    Refused { peer: String, msg: String },
    /// The Noise library refused an operation.
    #[error("{peer}: Noise {op}: {source}")]
    Noise {
        peer: String,
        op: &'static str,
        #[source]
        source: snow::Error,
    },
    /// Name resolution or binding.
    #[error("{addr}: {op}: {source}")]
    Address {
        addr: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl TransportError {
    /// As an `io::Error`, for the `Read`/`Write` wrappers; the kind says
    /// what std's loops must know (timeouts are `TimedOut`; cancellation
    /// is never `Interrupted`, which `read_exact` would retry).
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            TransportError::Timeout { .. } => io::ErrorKind::TimedOut,
            TransportError::Protocol { .. } | TransportError::Noise { .. } => {
                io::ErrorKind::InvalidData
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}
