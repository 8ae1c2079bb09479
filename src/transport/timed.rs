//! Waits with limits: every read, write and accept of a migration connection
//! goes through [`Timed`] (or [`wait_fd`]), which polls its file descriptor
//! with the current limit and looks at [`crate::cancel::requested`] at every
//! wakeup, so a silent peer ends in a timeout and a signal ends any wait.
//!
//! The limits follow the protocol's phases, set from above on a [`Timer`]
//! that both halves of a connection share (through [`Waits`]):
//! - the handshake (connect, Noise, the xl banner): one deadline for each
//!   message, `--handshake-timeout`, default 30 s;
//! - the stream: inactivity, `--timeout`, default 60 s (a stream of any size
//!   goes on as long as bytes move), default 150 s;
//! - each later message (permission to go, the report): one deadline of
//!   `--timeout` for the whole message, so a peer cannot trickle it;
//! - READY, which the receiver sends once it restored the guest and started
//!   its device model: `--ready-timeout`, default 300 s;
//! - waiting for a sender to connect: `--accept-timeout`, default 600 s.
//!
//! Works on sockets, pipes and stdin/stdout. A descriptor in blocking mode
//! that we do not own (stdin/stdout) is written at most `PIPE_BUF` bytes at a
//! time after it polls writable, which the kernel then takes without
//! blocking; descriptors we own are put in non-blocking mode.

use super::error::TransportError;
use crate::cancel;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Default limit of each handshake message.
pub const DEFAULT_HANDSHAKE: Duration = Duration::from_secs(30);
/// Default limit of stream inactivity and of each later message: more than
/// libxl gives a guest to suspend (60 s to acknowledge, 60 s to do it),
/// during which the sender writes nothing.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(150);
/// Default limit of the sender's wait for READY: the receiver restores what
/// it buffered and starts the device model first (up to 180 s by default,
/// `RXMIGRATE_DM_TIMEOUT`).
pub const DEFAULT_READY: Duration = Duration::from_secs(300);
/// Default limit of the wait for a sender to connect.
pub const DEFAULT_ACCEPT: Duration = Duration::from_secs(600);

/// Longest single poll: how late a cancellation is seen at worst when its
/// signal lands just before the poll starts.
const SLICE: Duration = Duration::from_millis(200);

/// Bytes a pipe takes at once without blocking once it polls writable.
const PIPE_BUF: usize = 4096;

/// The limits of a migration's waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Each handshake message (connect, Noise, banner).
    pub handshake: Duration,
    /// Stream inactivity, and each message after the stream.
    pub idle: Duration,
    /// The sender's wait for READY.
    pub ready: Duration,
    /// The wait for a sender to connect (`None`: for ever).
    pub accept: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: DEFAULT_HANDSHAKE,
            idle: DEFAULT_IDLE,
            ready: DEFAULT_READY,
            accept: Some(DEFAULT_ACCEPT),
        }
    }
}

/// The current wait of a connection.
#[derive(Debug, Clone)]
struct Phase {
    what: String,
    option: &'static str,
    /// Per call (inactivity) or from when the phase was set.
    limit: Duration,
    deadline: Option<Instant>,
}

/// The phase a connection is in, shared by its reader and writer halves and
/// by the code that drives the protocol. A new timer has no limit (a
/// cancellation still ends its waits).
#[derive(Debug, Clone, Default)]
pub struct Timer(Arc<Mutex<Option<Phase>>>);

impl Timer {
    fn lock(&self) -> MutexGuard<'_, Option<Phase>> {
        // A panic elsewhere cannot leave a Phase half-written: use it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every read or write may wait `limit` for the descriptor.
    pub fn inactivity(&self, what: &str, limit: Duration, option: &'static str) {
        *self.lock() = Some(Phase {
            what: what.to_string(),
            option,
            limit,
            deadline: None,
        });
    }

    /// Everything until the next phase must be done within `limit` from now.
    pub fn deadline(&self, what: &str, limit: Duration, option: &'static str) {
        *self.lock() = Some(Phase {
            what: what.to_string(),
            option,
            limit,
            deadline: Some(Instant::now() + limit),
        });
    }

    /// Everything until the next phase must be done by `end` (a deadline
    /// of `limit` set earlier and carried on).
    pub fn deadline_at(&self, what: &str, end: Instant, limit: Duration, option: &'static str) {
        *self.lock() = Some(Phase {
            what: what.to_string(),
            option,
            limit,
            deadline: Some(end),
        });
    }

    /// No limit (cancellation only).
    pub fn unlimited(&self, what: &str) {
        *self.lock() = Some(Phase {
            what: what.to_string(),
            option: "",
            limit: Duration::MAX,
            deadline: None,
        });
    }

    /// When a wait that started at `start` must end, if ever.
    fn end(&self, start: Instant) -> Option<Instant> {
        let g = self.lock();
        let p = g.as_ref()?;
        match p.deadline {
            Some(d) => Some(d),
            None => start.checked_add(p.limit),
        }
    }

    fn what(&self) -> (String, &'static str, Duration) {
        match &*self.lock() {
            Some(p) => (p.what.clone(), p.option, p.limit),
            None => ("waiting".to_string(), "", Duration::MAX),
        }
    }

    fn timeout(&self, peer: &str, writing: bool) -> TransportError {
        let (what, option, limit) = self.what();
        TransportError::Timeout {
            peer: peer.to_string(),
            what,
            limit,
            writing,
            option,
        }
    }

    fn cancelled(&self, peer: &str, signal: cancel::Cancelled) -> TransportError {
        TransportError::Cancelled {
            peer: peer.to_string(),
            what: self.what().0,
            signal,
        }
    }
}

/// A timer with the limits it applies: what the protocol code holds.
#[derive(Debug, Clone, Default)]
pub struct Waits {
    pub timer: Timer,
    pub timeouts: Timeouts,
}

impl Waits {
    pub fn new(timeouts: Timeouts) -> Self {
        Waits {
            timer: Timer::default(),
            timeouts,
        }
    }
    /// A handshake message: one deadline of `--handshake-timeout`.
    pub fn handshake(&self, what: &str) {
        self.timer
            .deadline(what, self.timeouts.handshake, "--handshake-timeout");
    }
    /// The stream: inactivity of `--timeout`.
    pub fn stream(&self, what: &str) {
        self.timer.inactivity(what, self.timeouts.idle, "--timeout");
    }
    /// A message after the stream: one deadline of `--timeout`.
    pub fn message(&self, what: &str) {
        self.timer.deadline(what, self.timeouts.idle, "--timeout");
    }
    /// The receiver's READY: one deadline of `--ready-timeout`.
    pub fn ready(&self, what: &str) {
        self.timer
            .deadline(what, self.timeouts.ready, "--ready-timeout");
    }
}

/// Wait until `fd` is ready for `flags`, the timer's limit counted from
/// `start`. Err on timeout and on cancellation.
pub fn wait_fd(
    fd: BorrowedFd<'_>,
    flags: PollFlags,
    timer: &Timer,
    peer: &str,
    start: Instant,
) -> Result<(), TransportError> {
    let writing = flags.contains(PollFlags::POLLOUT);
    loop {
        if let Err(c) = cancel::check() {
            return Err(timer.cancelled(peer, c));
        }
        let now = Instant::now();
        let slice = match timer.end(start) {
            Some(end) if end <= now => return Err(timer.timeout(peer, writing)),
            Some(end) => (end - now).min(SLICE),
            None => SLICE,
        };
        // Round up: a 0 ms poll would spin until the deadline.
        let ms = u16::try_from(slice.as_millis() + 1).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, flags)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            // Ready, or hung up / in error: the read or write says which.
            Ok(_) => return Ok(()),
            Err(e) => {
                return Err(TransportError::Io {
                    peer: peer.to_string(),
                    op: "poll",
                    source: e.into(),
                })
            }
        }
    }
}

/// Put a descriptor we own in non-blocking mode.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fl = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)
        .map(|f| OFlag::from_bits_truncate(f).contains(OFlag::O_NONBLOCK))
        .unwrap_or(false)
}

/// A reader or writer whose every call waits at most the timer's limit and
/// stops on cancellation.
pub struct Timed<S> {
    inner: S,
    timer: Timer,
    peer: Arc<str>,
    nonblocking: bool,
}

impl<S: AsFd> Timed<S> {
    /// `peer` names the other end in errors (an address, "stdin", ...).
    pub fn new(inner: S, timer: Timer, peer: impl Into<Arc<str>>) -> Self {
        let nonblocking = is_nonblocking(inner.as_fd());
        Timed {
            inner,
            timer,
            peer: peer.into(),
            nonblocking,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn timer(&self) -> &Timer {
        &self.timer
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    fn wait(&self, flags: PollFlags, start: Instant) -> io::Result<()> {
        wait_fd(self.inner.as_fd(), flags, &self.timer, &self.peer, start)
            .map_err(TransportError::into_io)
    }
}

impl<S: AsFd + Read> Read for Timed<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let start = Instant::now();
        loop {
            self.wait(PollFlags::POLLIN, start)?;
            match self.inner.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                r => return r,
            }
        }
    }
}

impl<S: AsFd + Write> Write for Timed<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = if self.nonblocking {
            buf.len()
        } else {
            buf.len().min(PIPE_BUF)
        };
        let start = Instant::now();
        loop {
            self.wait(PollFlags::POLLOUT, start)?;
            match self.inner.write(&buf[..n]) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                r => return r,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_silent_peer_times_out_naming_the_wait() {
        let (a, _b) = UnixStream::pair().unwrap();
        let timer = Timer::default();
        timer.inactivity(
            "waiting for a test",
            Duration::from_millis(150),
            "--timeout",
        );
        let mut r = Timed::new(a, timer, "peer-x");
        let t0 = Instant::now();
        let e = r.read(&mut [0u8; 8]).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert!(t0.elapsed() < Duration::from_secs(5), "hang guard");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let msg = e.to_string();
        assert!(
            msg.contains("peer-x") && msg.contains("waiting for a test"),
            "{msg}"
        );
        assert!(msg.contains("--timeout"), "{msg}");
    }

    #[test]
    fn data_flows_and_a_deadline_covers_the_whole_phase() {
        let (a, mut b) = UnixStream::pair().unwrap();
        set_nonblocking(a.as_fd()).unwrap();
        let timer = Timer::default();
        timer.deadline("a message", Duration::from_millis(300), "--timeout");
        let mut r = Timed::new(a, timer, "peer-y");
        b.write_all(b"abc").unwrap();
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"abc");
        // The deadline runs from when the phase was set, not per read.
        std::thread::sleep(Duration::from_millis(350));
        b.write_all(b"d").unwrap();
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    }

    #[test]
    fn a_writer_the_peer_does_not_drain_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        set_nonblocking(a.as_fd()).unwrap();
        let timer = Timer::default();
        timer.inactivity("sending a test", Duration::from_millis(150), "--timeout");
        let mut w = Timed::new(a, timer, "peer-z");
        let chunk = vec![0u8; 1 << 16];
        let t0 = Instant::now();
        let e = loop {
            if let Err(e) = w.write(&chunk) {
                break e;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "hang guard");
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("could not send"), "{e}");
    }
}
