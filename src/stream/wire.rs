//! Low-level byte handling shared by every layer: exact reads that tell a
//! clean end of input from a truncation, bounded allocation, padding,
//! vectored writes, and little-endian field access that cannot panic.

use super::error::{invalid, ErrorKind};
use std::io::{self, IoSlice, Read, Write};

/// Records are padded to this alignment.
pub(crate) const ALIGN: u64 = 8;

/// Bytes of zero padding after a body of `len` bytes.
pub(crate) fn padding_len(len: u64) -> usize {
    ((ALIGN - len % ALIGN) % ALIGN) as usize
}

/// Zeroes used as padding by every writer.
pub(crate) const ZEROS: [u8; 8] = [0; 8];

/// Initial allocation for a body whose bytes have not arrived yet: a hostile
/// length must not make us allocate before the data is really there.
const FIRST_CHUNK: usize = 1 << 20;

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Fills `buf` from `r`, which is at stream offset `at`. `boundary` says that
/// `at` is where a new header or record starts, so that an end of input there
/// is reported as clean.
pub(crate) fn read_exact_at<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
    at: u64,
    boundary: bool,
) -> Result<(), ErrorKind> {
    let got = read_full(r, buf).map_err(ErrorKind::Io)?;
    if got == buf.len() {
        Ok(())
    } else {
        Err(ErrorKind::Eof {
            clean: boundary && got == 0,
            at,
            wanted: buf.len() as u64,
            got: got as u64,
        })
    }
}

/// Reads `len` bytes into a new vector whose capacity grows with the data
/// that really arrives and never exceeds `len`.
pub(crate) fn read_vec<R: Read + ?Sized>(
    r: &mut R,
    len: usize,
    at: u64,
) -> Result<Vec<u8>, ErrorKind> {
    let mut v = Vec::new();
    read_vec_into(r, &mut v, len, at)?;
    Ok(v)
}

/// As [`read_vec`] into `v`: the bytes `v` already holds (from an earlier
/// record) are overwritten without being zeroed again, beyond them the
/// buffer doubles as the bytes arrive. On success `v` is exactly `len`
/// bytes long.
pub(crate) fn read_vec_into<R: Read + ?Sized>(
    r: &mut R,
    v: &mut Vec<u8>,
    len: usize,
    at: u64,
) -> Result<(), ErrorKind> {
    v.truncate(len);
    let mut filled = 0usize;
    while filled < len {
        if filled == v.len() {
            // Double, clamped to what is left (v.len() <= capacity).
            let grow = filled
                .max(FIRST_CHUNK)
                .max(v.capacity() - filled)
                .min(len - filled);
            v.resize(filled + grow, 0);
        }
        let got = read_full(r, &mut v[filled..]).map_err(ErrorKind::Io)?;
        let want = v.len() - filled;
        filled += got;
        if got < want {
            return Err(ErrorKind::Eof {
                clean: false,
                at,
                wanted: len as u64,
                got: filled as u64,
            });
        }
    }
    Ok(())
}

/// Discards `len` bytes without holding them.
pub(crate) fn skip<R: Read + ?Sized>(r: &mut R, len: u64, at: u64) -> Result<(), ErrorKind> {
    let mut buf = [0u8; 8192];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        let got = read_full(r, &mut buf[..n]).map_err(ErrorKind::Io)?;
        left -= got as u64;
        if got < n {
            return Err(ErrorKind::Eof {
                clean: false,
                at,
                wanted: len,
                got: len - left,
            });
        }
    }
    Ok(())
}

/// Reads the padding after a body of `body_len` bytes (which starts at `at`)
/// and checks that it is all zero.
pub(crate) fn read_padding<R: Read + ?Sized>(
    r: &mut R,
    body_len: u64,
    at: u64,
) -> Result<usize, ErrorKind> {
    let n = padding_len(body_len);
    let mut pad = [0u8; 8];
    let pad = &mut pad[..n];
    read_exact_at(r, pad, at + body_len, false)?;
    if let Some(i) = pad.iter().position(|&b| b != 0) {
        return Err(invalid(format!(
            "padding byte {i} after the {body_len}-byte body is {:#04x}, must be zero",
            pad[i]
        )));
    }
    Ok(n)
}

/// Writes every byte of every slice, with as few `write_vectored` calls as
/// the writer allows.
pub(crate) fn write_all_vectored<W: Write + ?Sized>(w: &mut W, bufs: &[&[u8]]) -> io::Result<()> {
    // Index of the first slice not fully written, and bytes of it already written.
    let mut first = 0usize;
    let mut done_in_first = 0usize;
    while first < bufs.len() {
        let head = bufs
            .get(first)
            .map_or(&[][..], |b| b.get(done_in_first..).unwrap_or(&[]));
        if head.is_empty() {
            first += 1;
            done_in_first = 0;
            continue;
        }
        // Linux caps iovcnt at 1024 (IOV_MAX); std clamps too, stay under it.
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity((bufs.len() - first).min(1024));
        slices.push(IoSlice::new(head));
        for b in bufs.iter().skip(first + 1).take(1023) {
            slices.push(IoSlice::new(b));
        }
        let mut n = match w.write_vectored(&slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Advance over what was written.
        while n > 0 && first < bufs.len() {
            let left = bufs.get(first).map_or(0, |b| b.len()) - done_in_first;
            if n >= left {
                n -= left;
                first += 1;
                done_in_first = 0;
            } else {
                done_in_first += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// A cursor over a body slice; every access is checked, so a short body
/// yields an error, never a panic.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ErrorKind> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(invalid(format!(
                "body too short: needed {n} bytes at body offset {}, {} left",
                self.pos,
                self.buf.len().saturating_sub(self.pos)
            ))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ErrorKind> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ErrorKind> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, ErrorKind> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, ErrorKind> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, ErrorKind> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `max` bytes per call, to exercise the
    /// partial-write bookkeeping.
    struct Dribble {
        out: Vec<u8>,
        max: usize,
    }
    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn vectored_write_survives_partial_writes() {
        let parts: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| vec![i as u8; (i % 7) as usize])
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        for max in [1, 3, 8, 1000, usize::MAX / 2] {
            let mut w = Dribble {
                out: Vec::new(),
                max,
            };
            write_all_vectored(&mut w, &refs).unwrap();
            assert_eq!(w.out, parts.concat(), "max {max}");
        }
    }

    #[test]
    fn read_vec_reports_truncation_and_never_overallocates() {
        let data = vec![7u8; 3000];
        let v = read_vec(&mut &data[..], 3000, 0).unwrap();
        assert_eq!(v, data);
        let err = read_vec(&mut &data[..], 100_000_000, 16).unwrap_err();
        assert!(matches!(
            err,
            ErrorKind::Eof {
                clean: false,
                got: 3000,
                at: 16,
                ..
            }
        ));
    }

    #[test]
    fn padding_must_be_zero() {
        assert_eq!(padding_len(0), 0);
        assert_eq!(padding_len(4), 4);
        assert_eq!(padding_len(8), 0);
        assert_eq!(read_padding(&mut &[0u8, 0, 0][..], 5, 0).unwrap(), 3);
        assert!(read_padding(&mut &[0u8, 1, 0][..], 5, 0).is_err());
    }
}
