//! TCP connections between `migrate HOST` and `receive --listen`: encrypted
//! and mutually authenticated ([`super::secure`]) unless `--insecure`, which
//! only ever talks to loopback; every wait timed ([`super::timed`]); one
//! migration per listener, later peers told so.

use super::error::TransportError;
use super::keys::{AuthorizedPeers, Keypair, Pin, PublicKey};
use super::secure::{self, REFUSAL_PREFIX};
use super::timed::{set_nonblocking, wait_fd, Timed, Waits};
use crate::cancel;
use nix::poll::PollFlags;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a second sender reads while a migration is in progress.
pub const BUSY: &str = "rxmigrate: busy: this receiver takes one migration per run \
                        and one is in progress; try again when it is done\n";

/// How a sender proves itself and checks the receiver.
pub enum SenderAuth {
    /// Plain TCP, loopback only.
    Insecure,
    Keys {
        me: Keypair,
        pin: Pin,
    },
}

/// How a receiver proves itself and checks senders.
pub enum ReceiverAuth {
    /// Plain TCP, loopback only.
    Insecure,
    Keys {
        me: Keypair,
        authorized: AuthorizedPeers,
    },
}

/// An established connection: the migration protocol runs over its halves.
pub struct Connection {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
    pub peer: String,
    /// The peer's authenticated key (`None` for `--insecure`).
    pub peer_key: Option<PublicKey>,
}

/// Split `HOST[:PORT]`, `[V6]:PORT` or a bare IPv6 address.
pub fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), TransportError> {
    let bad = |msg: &str| TransportError::Address {
        addr: s.to_string(),
        op: "parsing HOST[:PORT]",
        source: io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| bad("the port is not a number"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((host.to_string(), port(p)?)),
            None if tail.is_empty() => Ok((host.to_string(), default_port)),
            None => Err(bad("text after ]")),
        };
    }
    match s.matches(':').count() {
        0 => Ok((s.to_string(), default_port)),
        1 => {
            let (h, p) = s.split_once(':').ok_or_else(|| bad("no port"))?;
            Ok((h.to_string(), port(p)?))
        }
        // A bare IPv6 address.
        _ => Ok((s.to_string(), default_port)),
    }
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, TransportError> {
    let addr = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| TransportError::Address {
            addr: addr.clone(),
            op: "resolving",
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(TransportError::Address {
            addr,
            op: "resolving",
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        });
    }
    Ok(addrs)
}

/// `--insecure` talks to loopback only: every address `host` names must be.
fn loopback_only(host: &str, addrs: &[SocketAddr]) -> Result<(), TransportError> {
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(a) => Err(TransportError::NotLoopback {
            addr: if a.ip().to_string() == host {
                host.to_string()
            } else {
                format!("{host} ({})", a.ip())
            },
        }),
        None => Ok(()),
    }
}

fn timed_halves(
    sock: TcpStream,
    waits: &Waits,
    peer: &str,
) -> Result<(Timed<TcpStream>, Timed<TcpStream>), TransportError> {
    let io = |op| {
        move |source| TransportError::Io {
            peer: peer.to_string(),
            op,
            source,
        }
    };
    sock.set_nodelay(true).map_err(io("setting TCP_NODELAY"))?;
    set_nonblocking(sock.as_fd()).map_err(io("setting O_NONBLOCK"))?;
    let reader = sock.try_clone().map_err(io("duplicating the socket"))?;
    Ok((
        Timed::new(reader, waits.timer.clone(), peer),
        Timed::new(sock, waits.timer.clone(), peer),
    ))
}

/// `connect_timeout` in a thread of its own, so that a signal ends the
/// wait at once rather than after the whole timeout (std's connect retries
/// when a signal interrupts its poll). A cancelled attempt's thread ends
/// with its timeout; its socket, if any, is closed unused.
fn connect_one(addr: SocketAddr, limit: Duration) -> Result<TcpStream, TransportError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            // The receiver is gone once the caller was cancelled.
            let _unused = tx.send(TcpStream::connect_timeout(&addr, limit));
        })
        .map_err(|source| TransportError::Address {
            addr: addr.to_string(),
            op: "starting the connect thread",
            source,
        })?;
    loop {
        match rx.recv_timeout(CANCEL_POLL) {
            Ok(r) => {
                return r.map_err(|source| TransportError::Address {
                    addr: addr.to_string(),
                    op: "connecting",
                    source,
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(signal) = cancel::check() {
                    return Err(TransportError::Cancelled {
                        peer: addr.to_string(),
                        what: "connecting".into(),
                        signal,
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(TransportError::Address {
                    addr: addr.to_string(),
                    op: "connecting",
                    source: io::Error::other("the connect thread ended without an answer"),
                })
            }
        }
    }
}

/// How often a wait that cannot poll a file descriptor looks for a signal.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Connect to a receiver and, unless insecure, run the handshake.
pub fn connect(
    host: &str,
    port: u16,
    auth: &SenderAuth,
    waits: &Waits,
) -> Result<Connection, TransportError> {
    let addrs = resolve(host, port)?;
    if matches!(auth, SenderAuth::Insecure) {
        loopback_only(host, &addrs)?;
    }
    let mut sock = Err(TransportError::Address {
        addr: format!("{host}:{port}"),
        op: "connecting",
        source: io::Error::new(io::ErrorKind::NotFound, "no address"),
    });
    for a in &addrs {
        sock = connect_one(*a, waits.timeouts.handshake).map(|s| (s, *a));
        if sock.is_ok() {
            break;
        }
    }
    let (sock, addr) = sock?;
    let peer = addr.to_string();
    let (reader, writer) = timed_halves(sock, waits, &peer)?;
    match auth {
        SenderAuth::Insecure => Ok(Connection {
            reader: Box::new(reader),
            writer: Box::new(writer),
            peer,
            peer_key: None,
        }),
        SenderAuth::Keys { me, pin } => {
            waits.handshake("running the Noise handshake");
            let s = secure::initiate(reader, writer, me, pin, &peer)?;
            Ok(Connection {
                reader: Box::new(s.reader),
                writer: Box::new(s.writer),
                peer,
                peer_key: Some(s.remote),
            })
        }
    }
}

/// A listening receiver.
pub struct Listener {
    sock: TcpListener,
    auth: ReceiverAuth,
    local: SocketAddr,
}

impl Listener {
    /// Bind `ADDR[:PORT]`; with `Insecure`, only a loopback address.
    pub fn bind(addr: &str, default_port: u16, auth: ReceiverAuth) -> Result<Self, TransportError> {
        let (host, port) = split_host_port(addr, default_port)?;
        let addrs = resolve(&host, port)?;
        if matches!(auth, ReceiverAuth::Insecure) {
            loopback_only(&host, &addrs)?;
        }
        let err = |op| {
            let addr = format!("{host}:{port}");
            move |source| TransportError::Address { addr, op, source }
        };
        let sock = TcpListener::bind(&addrs[..]).map_err(err("listening"))?;
        set_nonblocking(sock.as_fd()).map_err(err("setting O_NONBLOCK"))?;
        let local = sock
            .local_addr()
            .map_err(err("reading the bound address"))?;
        Ok(Listener { sock, auth, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn is_secure(&self) -> bool {
        matches!(self.auth, ReceiverAuth::Keys { .. })
    }

    /// Wait for the sender of the migration: the first connection when
    /// insecure, else the first that authenticates (each refused one is
    /// logged with its address and key and dropped, and the wait goes on
    /// until `--accept-timeout`).
    pub fn accept(&self, waits: &Waits) -> Result<Connection, TransportError> {
        const WHAT: &str = "waiting for a sender to connect";
        let label = format!("listener {}", self.local);
        let end = waits
            .timeouts
            .accept
            .map(|limit| (Instant::now() + limit, limit));
        loop {
            match end {
                Some((end, limit)) => waits
                    .timer
                    .deadline_at(WHAT, end, limit, "--accept-timeout"),
                None => waits.timer.unlimited(WHAT),
            }
            wait_fd(
                self.sock.as_fd(),
                PollFlags::POLLIN,
                &waits.timer,
                &label,
                Instant::now(),
            )?;
            let (sock, addr) = match self.sock.accept() {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(source) => {
                    return Err(TransportError::Io {
                        peer: label,
                        op: "accepting",
                        source,
                    })
                }
            };
            let peer = addr.to_string();
            let (reader, writer) = timed_halves(sock, waits, &peer)?;
            let (me, authorized) = match &self.auth {
                ReceiverAuth::Insecure => {
                    return Ok(Connection {
                        reader: Box::new(reader),
                        writer: Box::new(writer),
                        peer,
                        peer_key: None,
                    })
                }
                ReceiverAuth::Keys { me, authorized } => (me, authorized),
            };
            waits.handshake("running the Noise handshake");
            match secure::respond(reader, writer, me, authorized, &peer) {
                Ok(s) => {
                    log::info!(
                        "sender {peer} authenticated with key {} ({})",
                        s.remote.fingerprint(),
                        authorized.find(&s.remote).unwrap_or("")
                    );
                    return Ok(Connection {
                        reader: Box::new(s.reader),
                        writer: Box::new(s.writer),
                        peer,
                        peer_key: Some(s.remote),
                    });
                }
                Err(e @ TransportError::Cancelled { .. }) => return Err(e),
                Err(e) => log::warn!("{e}"),
            }
        }
    }

    /// From now on, answer every new connection with [`BUSY`] and close it,
    /// until the returned guard is dropped.
    pub fn refuse_others(self) -> Refuser {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || refuse_loop(&self.sock, &flag));
        Refuser {
            stop,
            thread: Some(thread),
        }
    }
}

fn refuse_loop(listener: &TcpListener, stop: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollTimeout};
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(100u16)), Ok(n) if n > 0) {
            continue;
        }
        let Ok((mut s, peer)) = listener.accept() else {
            continue;
        };
        log::warn!("refused {peer}: a migration is in progress (one per run); told it so");
        // Tell it, then let it read that before the close (bounded waits).
        let _ = s.set_nonblocking(false);
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        debug_assert!(BUSY.starts_with(REFUSAL_PREFIX));
        let _ = s.write_all(BUSY.as_bytes());
        let _ = s.shutdown(Shutdown::Write);
        let _ = s.read(&mut [0u8; 4096]);
    }
}

/// Stops refusing (and closes the listener) when dropped.
pub struct Refuser {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        let s = |x: &str| split_host_port(x, 8002).unwrap();
        assert_eq!(s("h"), ("h".into(), 8002));
        assert_eq!(s("h:9"), ("h".into(), 9));
        assert_eq!(s("[::1]:9"), ("::1".into(), 9));
        assert_eq!(s("[::1]"), ("::1".into(), 8002));
        assert_eq!(s("::1"), ("::1".into(), 8002));
        assert!(split_host_port("h:x", 1).is_err());
    }

    #[test]
    fn insecure_binds_loopback_only() {
        let e = Listener::bind("0.0.0.0:0", 1, ReceiverAuth::Insecure)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("loopback") && e.contains("0.0.0.0"), "{e}");
        let l = Listener::bind("127.0.0.1:0", 1, ReceiverAuth::Insecure).unwrap();
        assert!(l.local_addr().ip().is_loopback());
        let e = connect("0.0.0.0", 1, &SenderAuth::Insecure, &Waits::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn a_second_peer_is_told_the_receiver_is_busy() {
        let l = Listener::bind("127.0.0.1:0", 1, ReceiverAuth::Insecure).unwrap();
        let addr = l.local_addr();
        let first = TcpStream::connect(addr).unwrap();
        let _conn = l.accept(&Waits::default()).unwrap();
        let guard = l.refuse_others();
        let mut second = TcpStream::connect(addr).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = String::new();
        second.read_to_string(&mut line).unwrap();
        assert_eq!(line, BUSY);
        drop(guard);
        drop(first);
        // The listener is closed once the migration is over.
        assert!(TcpStream::connect(addr).is_err());
    }
}
