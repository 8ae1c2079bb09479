//! Byte movers around the stream: counting, rate limiting (here); waits
//! with limits ([`timed`]); host keys and trust files ([`keys`]); the
//! encrypted, authenticated channel ([`secure`]); TCP connections made of
//! them ([`tcp`]).

pub mod error;
pub mod keys;
pub mod secure;
pub mod tcp;
pub mod timed;

pub use error::TransportError;

use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

/// Counts the bytes written through it.
pub struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Counting<W> {
    pub fn new(inner: W) -> Self {
        Counting { inner, bytes: 0 }
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A token bucket on the sender: at most `rate` bytes per second on average,
/// bursts of up to `burst` bytes. Sleeps in the writer, so the rest of the
/// engine sees a slower link exactly as it would see a real one.
pub struct RateLimited<W> {
    inner: W,
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl<W: Write> RateLimited<W> {
    /// `rate` in bytes per second; 0 means unlimited.
    pub fn new(inner: W, rate: u64) -> Self {
        let rate = rate as f64;
        let burst = (rate / 50.0).max(256.0 * 1024.0);
        RateLimited {
            inner,
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn wait_for(&mut self, want: usize) -> usize {
        if self.rate <= 0.0 {
            return want;
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        let chunk = (want as f64).min(self.burst);
        if self.tokens < chunk {
            let need = (chunk - self.tokens) / self.rate;
            // In slices: a signal is seen by the save loop at its next
            // check, not after a long wait on a slow link.
            let until = Instant::now() + Duration::from_secs_f64(need);
            while crate::cancel::requested().is_none() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
            self.tokens = chunk;
            self.last = Instant::now();
        }
        chunk as usize
    }
}

impl<W: Write> Write for RateLimited<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let allowed = self.wait_for(buf.len()).max(1).min(buf.len());
        let n = self.inner.write(&buf[..allowed])?;
        self.tokens -= n as f64;
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.rate <= 0.0 {
            return self.inner.write_vectored(bufs);
        }
        let allowed = self.wait_for(total);
        if allowed >= total {
            let n = self.inner.write_vectored(bufs)?;
            self.tokens -= n as f64;
            return Ok(n);
        }
        // Budget smaller than the whole vector: write a prefix of the first
        // non-empty slice; write_all_vectored comes back for the rest.
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(b) => self.write(&b[..allowed.min(b.len()).max(1)]),
            None => Ok(0),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Parse a bandwidth such as `1G`, `100M`, `500k` (bits per second, as links
/// are quoted) or `12MB` (bytes per second) into bytes per second.
pub fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| t.split_at(i))
        .unwrap_or((t, ""));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bandwidth {s:?}: expected a number with an optional unit"))?;
    let u = unit.trim().to_ascii_lowercase();
    let bytes_per_s = match u.as_str() {
        "" | "b" | "bit" | "bps" => v / 8.0,
        "k" | "kbit" | "kbps" => v * 1e3 / 8.0,
        "m" | "mbit" | "mbps" => v * 1e6 / 8.0,
        "g" | "gbit" | "gbps" => v * 1e9 / 8.0,
        "kb" | "kib" => v * 1024.0,
        "mb" | "mib" => v * 1024.0 * 1024.0,
        "gb" | "gib" => v * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "bandwidth {s:?}: unknown unit {unit:?} (use k/M/G bits or KB/MB/GB bytes)"
            ))
        }
    };
    if !(bytes_per_s.is_finite() && bytes_per_s >= 1.0) {
        return Err(format!("bandwidth {s:?}: must be positive"));
    }
    Ok(bytes_per_s as u64)
}

/// A reader that counts bytes read (for restore statistics).
pub struct CountingReader<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> CountingReader<R> {
    pub fn new(inner: R) -> Self {
        CountingReader { inner, bytes: 0 }
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_units() {
        assert_eq!(parse_bandwidth("1G").unwrap(), 125_000_000);
        assert_eq!(parse_bandwidth("100M").unwrap(), 12_500_000);
        assert_eq!(parse_bandwidth("1MB").unwrap(), 1 << 20);
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("0").is_err());
        assert!(parse_bandwidth("10 parsecs").is_err());
    }

    #[test]
    fn rate_limited_passes_every_byte_in_order() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = RateLimited::new(Vec::new(), 50_000_000);
        // Drive write_vectored the way write_all_vectored does.
        let (mut a, mut b) = (&data[..1000], &data[1000..]);
        while !a.is_empty() || !b.is_empty() {
            let n = w
                .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                .unwrap();
            assert!(n > 0);
            let from_a = n.min(a.len());
            a = &a[from_a..];
            b = &b[n - from_a..];
        }
        assert_eq!(w.into_inner(), data);
    }
}
