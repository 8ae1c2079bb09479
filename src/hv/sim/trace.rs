//! Recorded page-write traces: the file format, and the schedule a sim guest
//! replays one on (docs/TRACES.md).
//!
//! A trace is what a real program wrote, sampled every few milliseconds by
//! `ci/trace-shim`: per sample the time since the previous one and the set of
//! pages written in between. Pages are numbered densely (0..footprint) over
//! every page the program ever wrote, in address order, so a trace fits any
//! guest whose data area is at least its footprint (a smaller one gets the
//! trace folded onto it, see [`Replay::page_in`]).
//!
//! File layout (integers are LEB128 varints unless said otherwise):
//!
//! ```text
//! "RXMTRC01"                       8 bytes
//! footprint                        pages, ≥ 1
//! note length, note                UTF-8: what was recorded, how
//! sample count
//! per sample:
//!   dt                             µs since the previous sample (the first: since the start)
//!   runs                           number of runs of consecutive written pages
//!   per run: gap, length - 1       gap = first page - end of the previous run (0 at first)
//! checksum                         u64 little-endian, FNV-1a 64 of every byte before it
//! ```
//!
//! Runs keep a sequential sweep to a few bytes per sample; scattered writes
//! cost about one byte per page.

use crate::hv::{HvError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub const MAGIC: &[u8; 8] = b"RXMTRC01";
/// Replay tick rate bounds (steps per second at 1×), see [`Replay::new`].
pub const MIN_TICKS_PER_S: u64 = 1000;
pub const MAX_TICKS_PER_S: u64 = 1_000_000;
/// Largest footprint (64 GiB of pages, the largest sim guest) and most page
/// writes in one trace: a file cannot make the reader allocate without bound.
pub const MAX_FOOTPRINT: u64 = 1 << 24;
pub const MAX_WRITES: usize = 1 << 28;

/// One sample: the pages written since the previous one, sorted, distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub dt_us: u64,
    pub pages: Vec<u32>,
}

/// A decoded trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub footprint: u32,
    pub note: String,
    pub samples: Vec<Sample>,
}

/// Why a trace file does not parse: what, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {what}")]
pub struct FormatError {
    pub offset: usize,
    pub what: String,
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Trace {
    /// Check the invariants the format relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.footprint == 0 {
            return Err("footprint of 0 pages".into());
        }
        for (i, s) in self.samples.iter().enumerate() {
            if s.pages.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("sample {i}: pages not sorted and distinct"));
            }
            if s.pages.last().is_some_and(|&p| p >= self.footprint) {
                return Err(format!("sample {i}: page beyond the footprint"));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        put_varint(&mut out, self.footprint as u64);
        put_varint(&mut out, self.note.len() as u64);
        out.extend_from_slice(self.note.as_bytes());
        put_varint(&mut out, self.samples.len() as u64);
        for s in &self.samples {
            put_varint(&mut out, s.dt_us);
            let runs = runs_of(&s.pages);
            put_varint(&mut out, runs.len() as u64);
            let mut end = 0u64;
            for (first, len) in runs {
                put_varint(&mut out, first as u64 - end);
                put_varint(&mut out, len as u64 - 1);
                end = first as u64 + len as u64;
            }
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Trace, FormatError> {
        let mut r = Reader { b: bytes, pos: 0 };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(r.err("not a trace file (no RXMTRC01 magic)"));
        }
        r.pos = MAGIC.len();
        let at = r.pos;
        let footprint = r.varint("footprint")?;
        if footprint == 0 || footprint > MAX_FOOTPRINT {
            return Err(FormatError {
                offset: at,
                what: format!("footprint of {footprint} pages"),
            });
        }
        let note_len = r.varint("note length")? as usize;
        let at = r.pos;
        let note = r.bytes(note_len, "note")?;
        let note = String::from_utf8(note.to_vec()).map_err(|_| FormatError {
            offset: at,
            what: "note is not UTF-8".into(),
        })?;
        let count = r.varint("sample count")?;
        let mut samples = Vec::new();
        let mut total = 0usize;
        for i in 0..count {
            let dt_us = r.varint("sample time")?;
            let at = r.pos;
            let runs = r.varint("run count")?;
            if runs > footprint {
                return Err(FormatError {
                    offset: at,
                    what: format!("sample {i}: {runs} runs in a {footprint}-page footprint"),
                });
            }
            let mut pages = Vec::new();
            let mut end = 0u64;
            for _ in 0..runs {
                let at = r.pos;
                let gap = r.varint("run gap")?;
                let len = r.varint("run length")?.saturating_add(1);
                let first = end.saturating_add(gap);
                let stop = first.saturating_add(len);
                if stop > footprint || (gap == 0 && end > 0) {
                    return Err(FormatError {
                        offset: at,
                        what: format!(
                            "sample {i}: run of {len} pages at {first} beyond the {footprint}-page footprint or touching the previous run"
                        ),
                    });
                }
                total += len as usize;
                if total > MAX_WRITES {
                    return Err(FormatError {
                        offset: at,
                        what: format!("more than {MAX_WRITES} page writes"),
                    });
                }
                pages.extend(first as u32..stop as u32);
                end = stop;
            }
            samples.push(Sample { dt_us, pages });
        }
        let at = r.pos;
        let sum = r.bytes(8, "checksum")?;
        let want = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
        if fnv1a(&bytes[..at]) != want {
            return Err(FormatError {
                offset: at,
                what: "checksum mismatch: the file is corrupt".into(),
            });
        }
        if r.pos != bytes.len() {
            return Err(r.err("trailing bytes after the checksum"));
        }
        Ok(Trace {
            footprint: footprint as u32,
            note,
            samples,
        })
    }

    /// Read and decode a trace file; errors name the file and the byte.
    pub fn read(path: &Path) -> Result<(Trace, u64)> {
        let bytes = std::fs::read(path)
            .map_err(|e| HvError::io(format!("reading trace file {}", path.display()), e))?;
        let t = Trace::decode(&bytes).map_err(|e| HvError::Invalid {
            op: "trace",
            msg: format!("trace file {}: {e}", path.display()),
        })?;
        Ok((t, fnv1a(&bytes)))
    }
}

/// Sorted distinct pages → (first, length) runs.
fn runs_of(pages: &[u32]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &p in pages {
        match runs.last_mut() {
            Some((f, l)) if *f + *l == p => *l += 1,
            _ => runs.push((p, 1)),
        }
    }
    runs
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, what: &str) -> FormatError {
        FormatError {
            offset: self.pos,
            what: what.into(),
        }
    }
    fn varint(&mut self, what: &str) -> std::result::Result<u64, FormatError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.b.get(self.pos) else {
                return Err(FormatError {
                    offset: start,
                    what: format!("file ends inside the {what}"),
                });
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                break;
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(FormatError {
            offset: start,
            what: format!("the {what} does not fit 64 bits"),
        })
    }
    fn bytes(&mut self, n: usize, what: &str) -> std::result::Result<&[u8], FormatError> {
        if self.b.len() - self.pos < n {
            return Err(FormatError {
                offset: self.pos,
                what: format!(
                    "file ends inside the {what} ({n} bytes wanted, {} left)",
                    self.b.len() - self.pos
                ),
            });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

/// A trace laid out for replay on a step clock.
///
/// A step is one tick of `1 / ticks_per_s` seconds (at 1×). Sample `i`
/// (`dt` µs, `k` pages) gets `max(k, round(dt · ticks_per_s))` ticks; its
/// `k` writes are spread evenly over them, the other ticks write nothing.
/// `ticks_per_s` is the highest per-sample write rate of the trace, within
/// [`MIN_TICKS_PER_S`], [`MAX_TICKS_PER_S`]: a sample faster than that is
/// stretched. The schedule loops when the trace ends.
#[derive(Clone, PartialEq, Eq)]
pub struct Replay {
    pub footprint: u32,
    pub ticks_per_s: u64,
    /// `start[i]`: first tick of sample i; `start[n]` is the period.
    start: Vec<u64>,
    /// `first[i]`: sample i's first entry in `pages`; `first[n]` = len.
    first: Vec<usize>,
    pages: Vec<u32>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("footprint", &self.footprint)
            .field("ticks_per_s", &self.ticks_per_s)
            .field("samples", &(self.start.len() - 1))
            .field("period", &self.period())
            .field("writes", &self.pages.len())
            .finish()
    }
}

impl Replay {
    pub fn new(t: &Trace) -> std::result::Result<Replay, String> {
        let peak = t
            .samples
            .iter()
            .filter(|s| !s.pages.is_empty())
            .map(|s| (s.pages.len() as u64 * 1_000_000).div_ceil(s.dt_us.max(1)))
            .max()
            .unwrap_or(0);
        let ticks_per_s = peak.clamp(MIN_TICKS_PER_S, MAX_TICKS_PER_S);
        let mut start = vec![0u64];
        let mut first = vec![0usize];
        let mut pages = Vec::new();
        for s in &t.samples {
            let ticks = ((s.dt_us as u128 * ticks_per_s as u128 + 500_000) / 1_000_000) as u64;
            let ticks = ticks.max(s.pages.len() as u64);
            start.push(start.last().expect("non-empty") + ticks);
            pages.extend_from_slice(&s.pages);
            first.push(pages.len());
        }
        if *start.last().expect("non-empty") == 0 {
            return Err("the trace lasts no time (no samples, or all of 0 µs)".into());
        }
        Ok(Replay {
            footprint: t.footprint,
            ticks_per_s,
            start,
            first,
            pages,
        })
    }

    /// Ticks in one pass of the trace.
    pub fn period(&self) -> u64 {
        *self.start.last().expect("non-empty")
    }

    /// Total page writes in one pass.
    pub fn writes(&self) -> usize {
        self.pages.len()
    }

    /// The trace page written at step `n` (1-based, as the workload counts),
    /// if that tick writes.
    pub fn page_at(&self, n: u64) -> Option<u32> {
        let pos = (n.max(1) - 1) % self.period();
        let i = self.start.partition_point(|&s| s <= pos) - 1;
        let o = pos - self.start[i];
        let slots = self.start[i + 1] - self.start[i];
        let k = (self.first[i + 1] - self.first[i]) as u64;
        let (a, b) = (o * k / slots, (o + 1) * k / slots);
        (b > a).then(|| self.pages[self.first[i] + a as usize])
    }

    /// A trace page on a data area of `data_pages`: itself when the trace
    /// fits, else scaled down onto it (neighbouring pages merge).
    pub fn page_in(&self, p: u32, data_pages: u64) -> u64 {
        let f = self.footprint as u64;
        if f <= data_pages {
            p as u64
        } else {
            (p as u128 * data_pages as u128 / f as u128) as u64
        }
    }
}

/// Replay schedules by (file, checksum).
type Cache = Mutex<HashMap<(PathBuf, u64), Arc<Replay>>>;

/// Decoded traces by (path, checksum): the guest, the oracle's reference run
/// and the bench all load the same file, once per process.
pub fn load(path: &Path) -> Result<(Arc<Replay>, u64)> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let (t, sum) = Trace::read(path)?;
    let key = (path.to_path_buf(), sum);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok((r.clone(), sum));
    }
    let r = Arc::new(Replay::new(&t).map_err(|msg| HvError::Invalid {
        op: "trace",
        msg: format!("trace file {}: {msg}", path.display()),
    })?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, r.clone());
    Ok((r, sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_trace() -> impl Strategy<Value = Trace> {
        (1u32..5000, ".{0,20}").prop_flat_map(|(fp, note)| {
            let sample = (
                0u64..1_000_000,
                proptest::collection::btree_set(0..fp, 0..200usize),
            )
                .prop_map(|(dt_us, set)| Sample {
                    dt_us,
                    pages: set.into_iter().collect(),
                });
            proptest::collection::vec(sample, 0..40).prop_map(move |samples| Trace {
                footprint: fp,
                note: note.clone(),
                samples,
            })
        })
    }

    proptest! {
        #[test]
        fn format_round_trips(t in arb_trace()) {
            prop_assert!(t.validate().is_ok());
            let b = t.encode();
            prop_assert_eq!(Trace::decode(&b).unwrap(), t);
        }

        #[test]
        fn every_cut_and_flip_is_refused(t in arb_trace(), cut in any::<prop::sample::Index>(), bit in 0u8..8) {
            let b = t.encode();
            let n = cut.index(b.len());
            prop_assert!(Trace::decode(&b[..n]).is_err());
            let mut c = b.clone();
            c[n] ^= 1 << bit;
            prop_assert!(Trace::decode(&c).is_err());
        }

        #[test]
        fn replay_writes_each_sample_once_per_pass(t in arb_trace()) {
            let Ok(r) = Replay::new(&t) else { return Ok(()) };
            let mut got = Vec::new();
            for n in 1..=r.period() {
                got.extend(r.page_at(n));
            }
            let want: Vec<u32> = t.samples.iter().flat_map(|s| s.pages.iter().copied()).collect();
            prop_assert_eq!(&got, &want);
            // It loops.
            prop_assert_eq!(r.page_at(1), r.page_at(r.period() + 1));
        }
    }

    #[test]
    fn truncation_names_the_offset() {
        let t = Trace {
            footprint: 10,
            note: "x".into(),
            samples: vec![Sample {
                dt_us: 5000,
                pages: vec![1, 2, 3, 7],
            }],
        };
        let b = t.encode();
        let e = Trace::decode(&b[..b.len() - 3]).unwrap_err();
        assert_eq!(e.offset, b.len() - 8, "{e}");
        assert!(e.to_string().contains("checksum"), "{e}");
        let e = Trace::decode(&b[..12]).unwrap_err();
        assert!(e.to_string().starts_with("at byte 1"), "{e}");
    }

    #[test]
    fn ticks_follow_the_recorded_time() {
        // 10 writes in 5 ms, then 5 ms of nothing: 2000 writes/s peak.
        let t = Trace {
            footprint: 10,
            note: String::new(),
            samples: vec![
                Sample {
                    dt_us: 5000,
                    pages: (0..10).collect(),
                },
                Sample {
                    dt_us: 5000,
                    pages: vec![],
                },
            ],
        };
        let r = Replay::new(&t).unwrap();
        assert_eq!(r.ticks_per_s, 2000);
        assert_eq!(r.period(), 20);
        assert_eq!(r.page_in(9, 5), 4);
        assert_eq!(r.page_in(9, 10), 9);
    }
}
