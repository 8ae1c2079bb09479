//! The encrypted, mutually authenticated channel: the Noise protocol
//! framework through the `snow` crate, `Noise_XX_25519_ChaChaPoly_BLAKE2s`.
//!
//! Why XX: both ends have a static key, and each checks the other's against
//! what it was told to trust (the receiver its `authorized_peers`, the
//! sender the key pinned for that receiver). In XX both static keys travel
//! inside the handshake, encrypted, so each side learns the key the other
//! actually presented and can name it when it refuses: the sender says
//! "presented key X, pinned Y", the receiver logs the refused sender's
//! fingerprint, as ssh does. The sender sends its own static key only after
//! it has checked the receiver's (message 3), so a man in the middle learns
//! nothing of it. IK would save half a round trip but a wrongly pinned key
//! then fails as an opaque decryption error on the receiver, with no key to
//! report on either side; KK would make the receiver guess which authorized
//! key the sender uses. One and a half round trips per migration cost
//! nothing. ChaCha20-Poly1305 and BLAKE2s are fast in software on any CPU;
//! snow's pure-Rust back end is used (no ring, no OpenSSL).
//!
//! On the wire:
//! 1. the receiver sends [`HELLO`], one text line (so a plain-TCP sender
//!    reading the xl banner gets a readable refusal, not a hang);
//! 2. the three XX messages, each a frame;
//! 3. the receiver's verdict, one encrypted frame: `accepted`, or `refused:
//!    REASON` and the connection closes;
//! 4. the xl migration protocol, unchanged, in encrypted frames.
//!
//! A frame is a 2-byte big-endian length and that many bytes of one Noise
//! message (at most 65535: 65519 bytes of data and a 16-byte tag). Nonces
//! count frames in each direction, so a replayed, dropped or reordered frame
//! fails authentication. Nothing the receiver reads from an unauthenticated
//! peer reaches the xl parser: refusal happens in step 2 or 3.

use super::error::TransportError;
use super::keys::{AuthorizedPeers, Keypair, Pin, PublicKey};
use crate::stream::handshake::BANNER;
use snow::params::NoiseParams;
use snow::StatelessTransportState;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash: both ends must speak this version.
const PROLOGUE: &[u8] = b"rxmigrate transport 1";
/// The receiver's first line on a secured listener.
pub const HELLO: &[u8] =
    b"rxmigrate noise 1: this receiver takes encrypted, authenticated connections only\n";
/// Largest Noise message.
pub const MAX_FRAME: usize = 65535;
const TAG: usize = 16;
/// Most data in one frame.
pub const MAX_PLAIN: usize = MAX_FRAME - TAG;
/// XX's messages with empty payloads are 32, 96 and 64 bytes.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// Longest greeting line a sender reads.
const MAX_GREETING: usize = 256;
const ACCEPTED: &[u8] = b"accepted";
const REFUSED: &str = "refused: ";
/// Lines a receiver sends to refuse a connection start with this.
pub const REFUSAL_PREFIX: &str = "rxmigrate: ";

pub(super) fn params() -> Result<NoiseParams, snow::Error> {
    PATTERN.parse()
}

fn noise<'a>(peer: &'a str, op: &'static str) -> impl FnOnce(snow::Error) -> TransportError + 'a {
    move |source| TransportError::Noise {
        peer: peer.to_string(),
        op,
        source,
    }
}

/// An I/O error on the connection during `op`; a timeout or cancellation
/// already names the peer and the wait, and is passed on as it is.
fn io_err<'a>(peer: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> TransportError + 'a {
    move |source| {
        if source.get_ref().is_some_and(|e| e.is::<TransportError>()) {
            if let Some(inner) = source.into_inner() {
                if let Ok(t) = inner.downcast::<TransportError>() {
                    return *t;
                }
            }
            return protocol(peer, format!("{op}: lost error"));
        }
        if source.kind() == io::ErrorKind::UnexpectedEof {
            return protocol(
                peer,
                format!("closed the connection while {op} (does it not trust our key?)"),
            );
        }
        TransportError::Io {
            peer: peer.to_string(),
            op,
            source,
        }
    }
}

fn protocol(peer: &str, msg: impl Into<String>) -> TransportError {
    TransportError::Protocol {
        peer: peer.to_string(),
        msg: msg.into(),
    }
}

fn write_frame<W: Write>(w: &mut W, msg: &[u8], peer: &str) -> Result<(), TransportError> {
    let len = u16::try_from(msg.len()).map_err(|_| protocol(peer, "handshake message too long"))?;
    w.write_all(&len.to_be_bytes())
        .and_then(|()| w.write_all(msg))
        .and_then(|()| w.flush())
        .map_err(io_err(peer, "sending a handshake message"))
}

fn read_handshake_frame<R: Read>(
    r: &mut R,
    peer: &str,
    first: bool,
) -> Result<Vec<u8>, TransportError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)
        .map_err(io_err(peer, "waiting for a handshake message"))?;
    let len = u16::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_HANDSHAKE_FRAME {
        return Err(protocol(
            peer,
            if first {
                format!(
                    "did not start a Noise handshake (its first frame would be {len} bytes): \
                     no key, not an rxmigrate sender with keys (a plain-TCP sender?); \
                     dropped before reading any of its stream"
                )
            } else {
                format!("a handshake message of {len} bytes")
            },
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .map_err(io_err(peer, "waiting for a handshake message"))?;
    Ok(buf)
}

/// Read one line (up to `\n`, at most [`MAX_GREETING`] bytes) a byte at a
/// time: nothing past it is consumed.
fn read_line<R: Read>(r: &mut R, peer: &str) -> Result<Vec<u8>, TransportError> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < MAX_GREETING {
        match r.read(&mut b) {
            Ok(0) if line.is_empty() => {
                return Err(protocol(peer, "closed the connection without a word"))
            }
            Ok(0) => break,
            Ok(_) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(peer, "reading the receiver's greeting")(e)),
        }
    }
    Ok(line)
}

/// The two halves of an authenticated connection and the peer's key.
pub struct Session<R, W> {
    pub reader: SecureReader<R>,
    pub writer: SecureWriter<W>,
    pub remote: PublicKey,
}

fn split<R: Read, W: Write>(
    hs: snow::HandshakeState,
    r: R,
    w: W,
    peer: &str,
) -> Result<Session<R, W>, TransportError> {
    let remote = hs
        .get_remote_static()
        .and_then(PublicKey::from_bytes)
        .ok_or_else(|| protocol(peer, "no static key after the handshake"))?;
    let state = Arc::new(
        hs.into_stateless_transport_mode()
            .map_err(noise(peer, "finishing the handshake"))?,
    );
    Ok(Session {
        reader: SecureReader::new(r, state.clone(), peer),
        writer: SecureWriter::new(w, state),
        remote,
    })
}

/// The receiver's side: greet, run the handshake, and accept the sender only
/// if its key is in `authorized`. On refusal the sender is told why (over
/// the encrypted channel: it has checked our key by then) and the error
/// names its address and key.
pub fn respond<R: Read, W: Write>(
    mut r: R,
    mut w: W,
    me: &Keypair,
    authorized: &AuthorizedPeers,
    peer: &str,
) -> Result<Session<R, W>, TransportError> {
    w.write_all(HELLO)
        .and_then(|()| w.flush())
        .map_err(io_err(peer, "sending the greeting"))?;
    let mut hs = snow::Builder::new(params().map_err(noise(peer, "parameters"))?)
        .local_private_key(me.private())
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .map_err(noise(peer, "setting up"))?;
    let mut payload = [0u8; MAX_HANDSHAKE_FRAME];
    let mut out = [0u8; MAX_HANDSHAKE_FRAME];
    let m1 = read_handshake_frame(&mut r, peer, true)?;
    hs.read_message(&m1, &mut payload)
        .map_err(noise(peer, "handshake message 1"))?;
    let n = hs
        .write_message(&[], &mut out)
        .map_err(noise(peer, "handshake message 2"))?;
    write_frame(&mut w, &out[..n], peer)?;
    let m3 = read_handshake_frame(&mut r, peer, false)?;
    hs.read_message(&m3, &mut payload)
        .map_err(noise(peer, "handshake message 3"))?;
    let mut s = split(hs, r, w, peer)?;
    if authorized.find(&s.remote).is_some() {
        s.writer
            .write_all(ACCEPTED)
            .and_then(|()| s.writer.flush())
            .map_err(io_err(peer, "sending the verdict"))?;
        return Ok(s);
    }
    let fp = s.remote.fingerprint();
    let why = format!("{REFUSED}key {fp} is not in the receiver's authorized_peers");
    // Best effort: the connection is dropped either way.
    let _ = s
        .writer
        .write_all(why.as_bytes())
        .and_then(|()| s.writer.flush());
    Err(TransportError::Refused {
        peer: peer.to_string(),
        msg: format!(
            "refused sender with key {fp} ({}): not in {}; dropped before reading any of its stream",
            s.remote,
            authorized.path().display()
        ),
    })
}

/// The sender's side: read the receiver's greeting, run the handshake, and
/// go on only if the receiver's key is the pinned one and it accepts ours.
pub fn initiate<R: Read, W: Write>(
    mut r: R,
    mut w: W,
    me: &Keypair,
    pin: &Pin,
    peer: &str,
) -> Result<Session<R, W>, TransportError> {
    let line = read_line(&mut r, peer)?;
    if line != HELLO {
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        return Err(if line == BANNER {
            protocol(
                peer,
                "the receiver speaks plain TCP (it runs with --insecure): \
                 migrate to it with --insecure, or give it keys (docs/SECURITY.md)",
            )
        } else if text.starts_with(REFUSAL_PREFIX) {
            TransportError::Refused {
                peer: peer.to_string(),
                msg: format!("the receiver said: {text}"),
            }
        } else {
            protocol(peer, format!("not an rxmigrate receiver: it said {text:?}"))
        });
    }
    let mut hs = snow::Builder::new(params().map_err(noise(peer, "parameters"))?)
        .local_private_key(me.private())
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_initiator())
        .map_err(noise(peer, "setting up"))?;
    let mut payload = [0u8; MAX_HANDSHAKE_FRAME];
    let mut out = [0u8; MAX_HANDSHAKE_FRAME];
    let n = hs
        .write_message(&[], &mut out)
        .map_err(noise(peer, "handshake message 1"))?;
    write_frame(&mut w, &out[..n], peer)?;
    let m2 = read_handshake_frame(&mut r, peer, false)?;
    hs.read_message(&m2, &mut payload)
        .map_err(noise(peer, "handshake message 2"))?;
    let theirs = hs
        .get_remote_static()
        .and_then(PublicKey::from_bytes)
        .ok_or_else(|| protocol(peer, "no static key in handshake message 2"))?;
    if !pin.accepts(&theirs) {
        // Our static key has not been sent: the impostor learns nothing.
        let pinned: Vec<String> = pin.keys.iter().map(PublicKey::fingerprint).collect();
        return Err(TransportError::Refused {
            peer: peer.to_string(),
            msg: format!(
                "the receiver presented key {} ({theirs}), but {} pins {}: \
                 refusing to send (if the receiver's key really changed, update the pin)",
                theirs.fingerprint(),
                pin.source,
                pinned.join(", ")
            ),
        });
    }
    let n = hs
        .write_message(&[], &mut out)
        .map_err(noise(peer, "handshake message 3"))?;
    write_frame(&mut w, &out[..n], peer)?;
    let mut s = split(hs, r, w, peer)?;
    let verdict = s
        .reader
        .message()
        .map_err(io_err(peer, "reading the receiver's verdict"))?
        .unwrap_or_default();
    if verdict == ACCEPTED {
        return Ok(s);
    }
    let text = String::from_utf8_lossy(&verdict);
    Err(TransportError::Refused {
        peer: peer.to_string(),
        msg: match text.strip_prefix(REFUSED) {
            Some(why) => format!(
                "the receiver refused us: {why}; add this host's key.pub line ({}) to it",
                me.public()
            ),
            None if verdict.is_empty() => "the receiver closed the connection after the \
                                           handshake (it does not accept our key?)"
                .to_string(),
            None => format!("unexpected verdict from the receiver: {text:?}"),
        },
    })
}

/// The receiving half: decrypts frames and hands out their data.
pub struct SecureReader<R> {
    inner: R,
    state: Arc<StatelessTransportState>,
    nonce: u64,
    frame: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    len: usize,
    peer: Arc<str>,
}

/// Read until `buf` is full or the input ends; the count read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<R: Read> SecureReader<R> {
    fn new(inner: R, state: Arc<StatelessTransportState>, peer: &str) -> Self {
        SecureReader {
            inner,
            state,
            nonce: 0,
            frame: vec![0u8; MAX_FRAME],
            plain: vec![0u8; MAX_FRAME],
            pos: 0,
            len: 0,
            peer: peer.into(),
        }
    }

    fn bad(&self, msg: String) -> io::Error {
        protocol(&self.peer, msg).into_io()
    }

    /// Decrypt the next frame with data; false at a clean end of input.
    fn fill(&mut self) -> io::Result<bool> {
        loop {
            let mut len = [0u8; 2];
            match read_full(&mut self.inner, &mut len)? {
                0 => return Ok(false),
                2 => {}
                _ => return Err(self.bad("connection closed inside a frame header".into())),
            }
            let len = u16::from_be_bytes(len) as usize;
            if len < TAG {
                return Err(self.bad(format!(
                    "frame #{} of {len} bytes, shorter than its tag",
                    self.nonce
                )));
            }
            if read_full(&mut self.inner, &mut self.frame[..len])? != len {
                return Err(self.bad(format!(
                    "connection closed inside frame #{} ({len} bytes)",
                    self.nonce
                )));
            }
            let n = self
                .state
                .read_message(self.nonce, &self.frame[..len], &mut self.plain)
                .map_err(|e| {
                    self.bad(format!(
                        "frame #{} failed authentication ({e}): altered in transit \
                         or not from the peer that authenticated",
                        self.nonce
                    ))
                })?;
            self.nonce += 1;
            self.pos = 0;
            self.len = n;
            if n > 0 {
                return Ok(true);
            }
        }
    }

    /// The rest of the current frame, or the next frame (`None` at the end
    /// of input).
    pub fn message(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.pos == self.len && !self.fill()? {
            return Ok(None);
        }
        let m = self.plain[self.pos..self.len].to_vec();
        self.pos = self.len;
        Ok(Some(m))
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for SecureReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos == self.len && !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The sending half: gathers data into frames of up to [`MAX_PLAIN`] bytes;
/// `flush` sends a partial frame.
pub struct SecureWriter<W> {
    inner: W,
    state: Arc<StatelessTransportState>,
    nonce: u64,
    plain: Vec<u8>,
    frame: Vec<u8>,
}

impl<W: Write> SecureWriter<W> {
    fn new(inner: W, state: Arc<StatelessTransportState>) -> Self {
        SecureWriter {
            inner,
            state,
            nonce: 0,
            plain: Vec::with_capacity(MAX_PLAIN),
            frame: vec![0u8; 2 + MAX_FRAME],
        }
    }

    fn seal(&mut self, data: &[u8]) -> io::Result<()> {
        let n = self
            .state
            .write_message(self.nonce, data, &mut self.frame[2..])
            .map_err(|e| io::Error::other(format!("encrypting frame #{}: {e}", self.nonce)))?;
        let len = u16::try_from(n)
            .map_err(|_| io::Error::other(format!("frame of {n} bytes is too long")))?;
        self.frame[..2].copy_from_slice(&len.to_be_bytes());
        self.inner.write_all(&self.frame[..2 + n])?;
        self.nonce += 1;
        Ok(())
    }

    fn seal_buffered(&mut self) -> io::Result<()> {
        if self.plain.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.plain);
        let r = self.seal(&data);
        self.plain = data;
        self.plain.clear();
        r
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for SecureWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.plain.is_empty() && buf.len() >= MAX_PLAIN {
            self.seal(&buf[..MAX_PLAIN])?;
            return Ok(MAX_PLAIN);
        }
        let n = buf.len().min(MAX_PLAIN - self.plain.len());
        self.plain.extend_from_slice(&buf[..n]);
        if self.plain.len() == MAX_PLAIN {
            self.seal_buffered()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.seal_buffered()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::thread;

    fn authorized(keys: &[PublicKey]) -> AuthorizedPeers {
        let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
        AuthorizedPeers::parse(Path::new("authorized_peers"), &text).unwrap()
    }

    fn pin(k: PublicKey) -> Pin {
        Pin {
            keys: vec![k],
            source: "--peer-key".into(),
        }
    }

    /// Run a handshake over a socket pair; the receiver echoes what it
    /// reads back.
    fn pair(
        sender: Keypair,
        pinned: PublicKey,
        receiver: Keypair,
        allowed: Vec<PublicKey>,
    ) -> (
        Result<Session<UnixStream, UnixStream>, TransportError>,
        Result<PublicKey, TransportError>,
    ) {
        let (a, b) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || {
            let r = b.try_clone().unwrap();
            let s = respond(r, b, &receiver, &authorized(&allowed), "sender")?;
            let remote = s.remote;
            let (mut rd, mut wr) = (s.reader, s.writer);
            let mut buf = vec![0u8; 100_000];
            loop {
                let n = rd.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                wr.write_all(&buf[..n]).unwrap();
                wr.flush().unwrap();
            }
            Ok(remote)
        });
        let r = a.try_clone().unwrap();
        let s = initiate(r, a, &sender, &pin(pinned), "receiver");
        if let Ok(s) = &s {
            // Let the echo thread end when the test drops the session.
            let _ = s.writer.get_ref().shutdown(std::net::Shutdown::Write);
        }
        let got = t.join().unwrap();
        (s, got)
    }

    #[test]
    fn both_keys_right_data_goes_both_ways_in_frames() {
        let (s, r) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let (sp, rp) = (s.public(), r.public());
        let (a, b) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || {
            let rd = b.try_clone().unwrap();
            let s = respond(rd, b, &r, &authorized(&[sp]), "sender").unwrap();
            assert_eq!(s.remote, sp);
            let (mut rd, mut wr) = (s.reader, s.writer);
            let mut all = Vec::new();
            rd.read_to_end(&mut all).unwrap();
            wr.write_all(&(all.len() as u64).to_le_bytes()).unwrap();
            wr.flush().unwrap();
            all
        });
        let rd = a.try_clone().unwrap();
        let mut sess = initiate(rd, a, &s, &pin(rp), "receiver").unwrap();
        assert_eq!(sess.remote, rp);
        // More than a frame, written in odd pieces.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
        sess.writer.write_all(&data[..10]).unwrap();
        sess.writer.write_all(&data[10..150_001]).unwrap();
        sess.writer.write_all(&data[150_001..]).unwrap();
        sess.writer.flush().unwrap();
        sess.writer
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut n = [0u8; 8];
        sess.reader.read_exact(&mut n).unwrap();
        assert_eq!(u64::from_le_bytes(n), data.len() as u64);
        assert_eq!(t.join().unwrap(), data);
    }

    #[test]
    fn an_unauthorized_sender_is_refused_and_told() {
        let (s, r) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let rp = r.public();
        let other = Keypair::generate().unwrap().public();
        let fp = s.public().fingerprint();
        let (sent, got) = pair(s, rp, r, vec![other]);
        let e = got.unwrap_err().to_string();
        assert!(e.contains(&fp) && e.contains("authorized_peers"), "{e}");
        assert!(e.starts_with("sender:"), "{e}");
        let e = sent.err().expect("sender refused").to_string();
        assert!(e.contains("refused us") && e.contains(&fp), "{e}");
    }

    #[test]
    fn a_receiver_with_another_key_than_the_pinned_one_gets_nothing() {
        let (s, r) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let sp = s.public();
        let rfp = r.public().fingerprint();
        let wrong = Keypair::generate().unwrap().public();
        let (sent, got) = pair(s, wrong, r, vec![sp]);
        let e = sent.err().expect("sender refused").to_string();
        assert!(e.contains(&rfp) && e.contains("--peer-key pins"), "{e}");
        // The receiver never saw message 3.
        assert!(got.is_err());
    }

    #[test]
    fn a_plain_stream_is_refused_at_its_first_two_bytes() {
        let r = Keypair::generate().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"Xen saved domain, xl format\n \0 \r").unwrap();
        let rd = b.try_clone().unwrap();
        let e = respond(rd, b, &r, &authorized(&[r.public()]), "10.9.8.7:1234")
            .err()
            .expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("10.9.8.7:1234") && msg.contains("Noise"),
            "{msg}"
        );
        let mut hello = vec![0u8; HELLO.len()];
        a.read_exact(&mut hello).unwrap();
        assert_eq!(hello, HELLO);
    }

    #[test]
    fn a_tampered_frame_fails_authentication() {
        let (s, r) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let (sp, rp) = (s.public(), r.public());
        // The sender writes through a pipe we can edit: run the handshake
        // over one socket pair, then feed a modified frame to the reader.
        let (a, b) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || {
            let rd = b.try_clone().unwrap();
            respond(rd, b, &r, &authorized(&[sp]), "sender").unwrap()
        });
        let rd = a.try_clone().unwrap();
        let mine = initiate(rd, a, &s, &pin(rp), "receiver").unwrap();
        let theirs = t.join().unwrap();
        let mut wire = Vec::new();
        {
            let mut w = SecureWriter::new(&mut wire, mine.writer.state.clone());
            w.write_all(b"domain is yours").unwrap();
            w.flush().unwrap();
        }
        wire[5] ^= 1;
        let mut rd = SecureReader::new(&wire[..], theirs.reader.state.clone(), "sender");
        let e = rd.read(&mut [0u8; 32]).unwrap_err();
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }
}
