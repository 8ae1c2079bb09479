//! A relay between an in-process sender (`migrate::send`) and a receiver
//! process (`rxmigrate receive` on its stdin/stdout) that breaks the
//! migration where a test asks: a cut of the data stream after N bytes, on
//! the sender's side or the receiver's, a receiver killed after READY, a
//! sender gone after permission to go.

use super::framer::Framer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rxmigrate::stream::handshake;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::{ChildStdin, ChildStdout};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Where the data stream is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// At the k-th record boundary of this run's stream (its end when the
    /// stream has fewer).
    Boundary(usize),
    /// After this many bytes (the stream's end when it is shorter).
    Offset(u64),
    /// This many bytes into permission to go, after the whole stream.
    IntoGo(u64),
}

/// Who sees the cut first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The sender's connection closes: the receiver reads EOF, then the
    /// sender's writes fail.
    Sender,
    /// The receiver stops reading and closes: the sender's writes fail
    /// (EPIPE) and its reads end, then the receiver reads EOF.
    Receiver,
}

/// The fault a relay injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Cut(Cut, Side),
    /// SIGTERM to the receiver as its READY passes (racing permission to
    /// go: either side may end up owning the guest, never both or none).
    ReceiverTermAfterReady,
    /// SIGKILL to the receiver once it sent READY, before the sender reads
    /// it; its connection closes as a dead process's does.
    ReceiverKillAfterReady,
    /// The sender's connection closes right after permission to go left it,
    /// as when the sender dies there.
    SenderGoneAfterGo,
}

#[derive(Default)]
struct Flags {
    receiver_exited: bool,
    sender_done: bool,
    case_done: bool,
}

/// What the relay threads and the test share.
#[derive(Default)]
pub struct Shared {
    flags: Mutex<Flags>,
    cv: Condvar,
}

impl Shared {
    fn set(&self, f: impl FnOnce(&mut Flags)) {
        let mut g = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g);
        self.cv.notify_all();
    }
    fn wait(&self, limit: Duration, cond: impl Fn(&Flags) -> bool) -> bool {
        let g = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, limit, |f| !cond(f))
            .unwrap_or_else(|e| e.into_inner());
        cond(&g)
    }
    pub fn receiver_exited(&self) {
        self.set(|f| f.receiver_exited = true);
    }
    pub fn sender_done(&self) {
        self.set(|f| f.sender_done = true);
    }
    pub fn case_done(&self) {
        self.set(|f| f.case_done = true);
    }
    /// Wait for the case to end; false after `limit`.
    pub fn wait_case_done(&self, limit: Duration) -> bool {
        self.wait(limit, |f| f.case_done)
    }
}

/// How long the relay waits for one side to react to a cut.
const REACT: Duration = Duration::from_secs(30);

/// What the data direction saw.
#[derive(Debug, Default)]
pub struct DataReport {
    pub boundaries: Vec<u64>,
    pub stream_end: Option<u64>,
    pub forwarded: u64,
    /// Where it cut, if it did.
    pub cut_at: Option<u64>,
    /// Every byte the sender wrote (when asked to capture).
    pub captured: Vec<u8>,
}

fn cut_point(fault: Fault, f: &Framer) -> Option<u64> {
    match fault {
        Fault::Cut(Cut::Boundary(k), _) => match (f.boundaries.get(k), f.stream_end) {
            (Some(&b), _) => Some(b),
            (None, Some(end)) => Some(end),
            (None, None) => None,
        },
        Fault::Cut(Cut::Offset(n), _) => Some(f.stream_end.map_or(n, |end| n.min(end))),
        Fault::Cut(Cut::IntoGo(j), _) => f.stream_end.map(|end| end + j.min(Framer::GO_LEN)),
        Fault::SenderGoneAfterGo => f.stream_end.map(|end| end + Framer::GO_LEN),
        _ => None,
    }
}

/// Sender → receiver: forward, learn the boundaries, cut where asked.
pub fn data(
    mut from: UnixStream,
    to: ChildStdin,
    fault: Fault,
    shared: &Shared,
    capture: bool,
) -> DataReport {
    let mut to = Some(to);
    let mut framer = Framer::default();
    let mut rep = DataReport::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.feed(&buf[..n]);
        if capture {
            rep.captured.extend_from_slice(&buf[..n]);
        }
        let mut len = n as u64;
        let cut = cut_point(fault, &framer).filter(|&c| c <= rep.forwarded + len);
        if let Some(c) = cut {
            len = c.saturating_sub(rep.forwarded);
        }
        if len > 0 {
            let sent = to.as_mut().map(|t| {
                t.write_all(&buf[..len as usize])
                    .and_then(|()| t.flush())
                    .is_ok()
            });
            if sent != Some(true) {
                // The receiver is gone: its end of a pipe would be closed.
                to = None;
                let _ = from.shutdown(Shutdown::Read);
                break;
            }
        }
        rep.forwarded += len;
        if let Some(c) = cut {
            rep.cut_at = Some(c);
            match fault {
                Fault::Cut(_, Side::Sender) => {
                    drop(to.take());
                    shared.wait(REACT, |f| f.receiver_exited);
                    let _ = from.shutdown(Shutdown::Both);
                }
                Fault::Cut(_, Side::Receiver) => {
                    let _ = from.shutdown(Shutdown::Both);
                    shared.wait(REACT, |f| f.sender_done);
                    drop(to.take());
                }
                _ => {
                    // The sender is gone after permission to go.
                    let _ = from.shutdown(Shutdown::Both);
                    drop(to.take());
                }
            }
            break;
        }
    }
    drop(to);
    rep.boundaries = framer.boundaries;
    rep.stream_end = framer.stream_end;
    rep
}

/// Receiver → sender: forward the acks; kill the receiver after READY when
/// asked.
pub fn acks(mut from: ChildStdout, mut to: UnixStream, fault: Fault, shared: &Shared, pid: u32) {
    let ready_at = handshake::BANNER.len() + handshake::READY.len();
    let mut seen = 0usize;
    let mut open = true;
    let mut buf = [0u8; 4096];
    let pid = Pid::from_raw(pid as i32);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let ready_passes = seen < ready_at && seen + n >= ready_at;
        seen += n;
        let chunk = &buf[..n];
        if ready_passes && fault == Fault::ReceiverKillAfterReady {
            let _ = kill(pid, Signal::SIGKILL);
            shared.wait(REACT, |f| f.receiver_exited);
            // A dead process's pipe: what it wrote can still be read,
            // nothing more can be written to it (EPIPE, even for a writer
            // woken by the READY below).
            let _ = to.shutdown(Shutdown::Read);
            let _ = to.write_all(chunk);
            let _ = to.shutdown(Shutdown::Write);
            open = false;
            continue;
        }
        if open && to.write_all(chunk).is_err() {
            open = false;
        }
        if ready_passes && fault == Fault::ReceiverTermAfterReady {
            let _ = kill(pid, Signal::SIGTERM);
        }
    }
    if open {
        let _ = to.shutdown(Shutdown::Write);
    }
}

/// Unblock everything of a hung case: kill the receiver, close the
/// sender's connection.
pub fn abort(sock: &UnixStream, pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = sock.shutdown(Shutdown::Both);
}
