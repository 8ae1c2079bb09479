//! The fixed messages of `xl migrate` / `xl migrate-receive` (docs/REFERENCE.md §7.2),
//! byte for byte. Receipt is an exact comparison of exactly that many bytes.

use super::error::{invalid, ErrorKind, Layer, Place, StreamError};
use super::wire;
use std::io::{Read, Write};

/// Receiver to sender, first thing on the ack channel (no NUL).
pub const BANNER: &[u8] = b"xl migration receiver ready, send binary domain data.\n";
/// Receiver to sender after the domain was received (with its NUL).
pub const READY: &[u8] = b"domain received, ready to unpause\0";
/// Sender to receiver (and back, when the receiver failed), with its NUL.
pub const PERMISSION_TO_GO: &[u8] = b"domain is yours, you are cleared to unpause\0";
/// Receiver to sender, with its NUL; one status byte follows.
pub const REPORT: &[u8] = b"my copy unpause results are as follows\0";

/// Reads exactly `msg.len()` bytes and checks they are `msg`; `what` names
/// the message in the error.
pub fn expect<R: Read>(r: &mut R, msg: &'static [u8], what: &str) -> Result<(), StreamError> {
    let mut buf = vec![0u8; msg.len()];
    let fail =
        |k: ErrorKind| StreamError::new(Layer::Handshake, k).with_place(Place::Header("message"));
    wire::read_exact_at(r, &mut buf, 0, true).map_err(|k| {
        fail(match k {
            ErrorKind::Eof { got, .. } => invalid(format!(
                "connection closed while waiting for the {what} message ({got} of {} bytes received)",
                msg.len()
            )),
            other => other,
        })
    })?;
    if buf != msg {
        return Err(fail(invalid(format!(
            "expected the {what} message {:?}, got {:?}",
            String::from_utf8_lossy(msg),
            String::from_utf8_lossy(&buf)
        ))));
    }
    Ok(())
}

/// Writes a message and flushes it (the peer is waiting for it).
pub fn send<W: Write>(w: &mut W, msg: &[u8]) -> Result<(), StreamError> {
    w.write_all(msg)
        .and_then(|_| w.flush())
        .map_err(|e| StreamError::io(Layer::Handshake, e).with_place(Place::Header("message")))
}

/// Reads the report message and the status byte that follows it; returns
/// the status (0 = the receiver unpaused its copy).
pub fn read_report<R: Read>(r: &mut R) -> Result<u8, StreamError> {
    expect(r, REPORT, "report")?;
    let mut b = [0u8; 1];
    wire::read_exact_at(r, &mut b, 0, false).map_err(|_| {
        StreamError::invalid(
            Layer::Handshake,
            "connection closed before the report's status byte",
        )
        .with_place(Place::Header("message"))
    })?;
    Ok(b[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_reference_lengths() {
        assert_eq!(BANNER.len(), 54);
        assert_eq!(READY.len(), 34);
        assert_eq!(PERMISSION_TO_GO.len(), 44);
        assert_eq!(REPORT.len(), 39);
    }

    #[test]
    fn expect_reads_exactly_the_message() {
        let mut input: Vec<u8> = READY.to_vec();
        input.extend_from_slice(b"next");
        let mut r = &input[..];
        expect(&mut r, READY, "ready").unwrap();
        assert_eq!(r, b"next");
    }

    #[test]
    fn expect_refuses_other_bytes_and_short_input() {
        let e = expect(&mut &PERMISSION_TO_GO[..], READY, "ready").unwrap_err();
        assert!(e.to_string().contains("expected the ready message"), "{e}");
        let e = expect(&mut &READY[..10], READY, "ready").unwrap_err();
        assert!(e.to_string().contains("10 of 34"), "{e}");
    }

    #[test]
    fn report_carries_a_status_byte() {
        let mut input = REPORT.to_vec();
        input.push(0xfd);
        assert_eq!(read_report(&mut &input[..]).unwrap(), 0xfd);
        assert!(read_report(&mut &REPORT[..]).is_err());
    }
}
