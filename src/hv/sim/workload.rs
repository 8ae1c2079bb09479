//! The deterministic workloads: one step function shared by every running
//! sim guest and by the oracle's reference run, so the two cannot drift.
//!
//! A workload's configuration lives in a descriptor page in guest RAM; its
//! moving state ([`State`]: step counter, RNG, an accumulator for reads) lives
//! in vCPU0's registers. Given (descriptor, state, RAM) a step is a pure
//! function, so a guest restored elsewhere continues exactly.

use super::config::{GuestConfig, TraceSpec, WorkloadKind, WorkloadParams};
use super::trace::{self, Replay};
use crate::hv::{HvError, Result};
use std::path::PathBuf;
use std::sync::Arc;

pub const DESC_MAGIC: u64 = u64::from_le_bytes(*b"RXSIMWL1");
pub const DESC_VERSION: u32 = 1;
/// Words per 4 KiB page and per 64-byte line.
pub const PAGE_WORDS: usize = 512;
pub const LINE_WORDS: usize = 8;

/// A trace workload's file as the descriptor names it, and its replay
/// schedule loaded from it (checked against the checksum).
#[derive(Debug, Clone)]
pub struct TraceRef {
    pub path: PathBuf,
    /// FNV-1a 64 of the whole file, as created.
    pub sum: u64,
    pub speed_permille: u32,
    pub replay: Arc<Replay>,
}

impl PartialEq for TraceRef {
    fn eq(&self, o: &Self) -> bool {
        self.path == o.path && self.sum == o.sum && self.speed_permille == o.speed_permille
    }
}
impl Eq for TraceRef {}

impl TraceRef {
    fn load(spec: &TraceSpec) -> Result<TraceRef> {
        let (replay, sum) = trace::load(&spec.path)?;
        Ok(TraceRef {
            path: spec.path.clone(),
            sum,
            speed_permille: spec.speed_permille,
            replay,
        })
    }
    /// Steps per second: the trace's tick rate at this speed.
    pub fn rate(&self) -> u64 {
        (self.replay.ticks_per_s as u128 * self.speed_permille as u128 / 1000).max(1) as u64
    }
    pub fn spec(&self) -> TraceSpec {
        TraceSpec {
            path: self.path.clone(),
            speed_permille: self.speed_permille,
        }
    }
}

/// Where the trace's path lives in the descriptor page, and its room.
const TRACE_PATH_AT: usize = 1024;
pub const TRACE_PATH_MAX: usize = 4096 - TRACE_PATH_AT;

/// The workload descriptor page (guest RAM), little-endian fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub kind: WorkloadKind,
    pub seed: u64,
    pub hot_pages: u64,
    pub hot_permille: u32,
    pub write_permille: u32,
    pub phase_steps: u64,
    /// Steps per second, 0 = unthrottled.
    pub rate: u64,
    /// PV: virtual address of the first data page; HVM: its gfn.
    pub data_base: u64,
    pub data_pages: u64,
    /// Total guest pages (max_pfn + 1) when built.
    pub pages: u64,
    /// The recorded trace (kind `Trace` only).
    pub trace: Option<TraceRef>,
}

mod off {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const KIND: usize = 12;
    pub const SEED: usize = 16;
    pub const HOT_PAGES: usize = 24;
    pub const HOT_PERMILLE: usize = 32;
    pub const WRITE_PERMILLE: usize = 36;
    pub const PHASE_STEPS: usize = 40;
    pub const RATE: usize = 48;
    pub const DATA_BASE: usize = 56;
    pub const DATA_PAGES: usize = 64;
    pub const PAGES: usize = 72;
    pub const TRACE_SUM: usize = 80;
    pub const TRACE_SPEED: usize = 88;
    pub const TRACE_PATH_LEN: usize = 92;
}

fn rd64(p: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[o..o + 8]);
    u64::from_le_bytes(b)
}
fn rd32(p: &[u8], o: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[o..o + 4]);
    u32::from_le_bytes(b)
}

impl Descriptor {
    /// Resolve zero ("default") parameters against the guest's data size.
    pub fn new(
        kind: WorkloadKind,
        params: &WorkloadParams,
        seed: u64,
        rate: u64,
        data_base: u64,
        data_pages: u64,
        pages: u64,
    ) -> Self {
        let hot_pages = match params.hot_pages {
            0 => (data_pages / 64).max(1),
            h => h.min(data_pages).max(1),
        };
        Descriptor {
            kind,
            seed,
            hot_pages,
            hot_permille: if params.hot_permille == 0 {
                900
            } else {
                params.hot_permille
            },
            write_permille: if params.write_permille == 0 {
                20
            } else {
                params.write_permille
            },
            phase_steps: if params.phase_steps == 0 {
                (hot_pages * 4).max(1000)
            } else {
                params.phase_steps
            },
            rate,
            data_base,
            data_pages,
            pages,
            trace: None,
        }
    }

    /// The descriptor `cfg` builds, its trace loaded (a trace's rate is its
    /// recorded rate at the asked speed; `cfg.rate` is for the others).
    pub fn for_guest(
        cfg: &GuestConfig,
        data_base: u64,
        data_pages: u64,
        pages: u64,
    ) -> Result<Self> {
        let mut d = Descriptor::new(
            cfg.workload,
            &cfg.params,
            cfg.seed,
            cfg.rate,
            data_base,
            data_pages,
            pages,
        );
        if let Some(spec) = &cfg.trace {
            if spec.path.as_os_str().len() > TRACE_PATH_MAX {
                return Err(HvError::Invalid {
                    op: "create",
                    msg: format!(
                        "trace file path {} longer than {TRACE_PATH_MAX} bytes",
                        spec.path.display()
                    ),
                });
            }
            let t = TraceRef::load(spec)?;
            d.rate = t.rate();
            d.trace = Some(t);
        }
        Ok(d)
    }

    pub fn params(&self) -> WorkloadParams {
        WorkloadParams {
            hot_pages: self.hot_pages,
            hot_permille: self.hot_permille,
            write_permille: self.write_permille,
            phase_steps: self.phase_steps,
        }
    }

    pub fn encode(&self, page: &mut [u8]) {
        page[..PAGE_WORDS * 8].fill(0);
        let mut put64 = |o: usize, v: u64| page[o..o + 8].copy_from_slice(&v.to_le_bytes());
        put64(off::MAGIC, DESC_MAGIC);
        put64(off::SEED, self.seed);
        put64(off::HOT_PAGES, self.hot_pages);
        put64(off::PHASE_STEPS, self.phase_steps);
        put64(off::RATE, self.rate);
        put64(off::DATA_BASE, self.data_base);
        put64(off::DATA_PAGES, self.data_pages);
        put64(off::PAGES, self.pages);
        let mut put32 = |o: usize, v: u32| page[o..o + 4].copy_from_slice(&v.to_le_bytes());
        put32(off::VERSION, DESC_VERSION);
        put32(off::KIND, self.kind.code());
        put32(off::HOT_PERMILLE, self.hot_permille);
        put32(off::WRITE_PERMILLE, self.write_permille);
        if let Some(t) = &self.trace {
            use std::os::unix::ffi::OsStrExt;
            let path = t.path.as_os_str().as_bytes();
            let n = path.len().min(TRACE_PATH_MAX);
            put32(off::TRACE_SPEED, t.speed_permille);
            put32(off::TRACE_PATH_LEN, n as u32);
            page[off::TRACE_SUM..off::TRACE_SUM + 8].copy_from_slice(&t.sum.to_le_bytes());
            page[TRACE_PATH_AT..TRACE_PATH_AT + n].copy_from_slice(&path[..n]);
        }
    }

    /// The trace named in a descriptor page, loaded and checked.
    fn decode_trace(page: &[u8]) -> Result<TraceRef> {
        use std::os::unix::ffi::OsStrExt;
        let bad = |msg: String| HvError::Invalid {
            op: "workload descriptor",
            msg,
        };
        let n = rd32(page, off::TRACE_PATH_LEN) as usize;
        if n == 0 || n > TRACE_PATH_MAX {
            return Err(bad(format!("trace path of {n} bytes")));
        }
        let spec = TraceSpec {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(
                &page[TRACE_PATH_AT..TRACE_PATH_AT + n],
            )),
            speed_permille: rd32(page, off::TRACE_SPEED),
        };
        if spec.speed_permille == 0 || spec.speed_permille > super::config::MAX_TRACE_SPEED_PERMILLE
        {
            return Err(bad(format!("trace speed {}‰", spec.speed_permille)));
        }
        let t = TraceRef::load(&spec)?;
        let want = rd64(page, off::TRACE_SUM);
        if t.sum != want {
            return Err(bad(format!(
                "trace file {} changed since the guest was created (checksum {:#018x}, was {want:#018x})",
                spec.path.display(),
                t.sum
            )));
        }
        Ok(t)
    }

    /// The trace this guest replays, as a config names it.
    pub fn trace_spec(&self) -> Option<TraceSpec> {
        self.trace.as_ref().map(TraceRef::spec)
    }

    /// Parse and sanity-check a descriptor page read from guest RAM.
    pub fn decode(page: &[u8]) -> Result<Self> {
        let bad = |msg: String| HvError::Invalid {
            op: "workload descriptor",
            msg,
        };
        if page.len() < 4096 {
            return Err(bad(format!("page of {} bytes", page.len())));
        }
        let magic = rd64(page, off::MAGIC);
        if magic != DESC_MAGIC {
            return Err(bad(format!(
                "bad magic {magic:#018x}: this is not a workload descriptor (RAM not restored?)"
            )));
        }
        let version = rd32(page, off::VERSION);
        if version != DESC_VERSION {
            return Err(bad(format!("unknown version {version}")));
        }
        let code = rd32(page, off::KIND);
        let kind =
            WorkloadKind::from_code(code).ok_or_else(|| bad(format!("unknown kind {code}")))?;
        let trace = if kind == WorkloadKind::Trace {
            Some(Descriptor::decode_trace(page)?)
        } else {
            None
        };
        let d = Descriptor {
            kind,
            seed: rd64(page, off::SEED),
            hot_pages: rd64(page, off::HOT_PAGES),
            hot_permille: rd32(page, off::HOT_PERMILLE),
            write_permille: rd32(page, off::WRITE_PERMILLE),
            phase_steps: rd64(page, off::PHASE_STEPS),
            rate: rd64(page, off::RATE),
            data_base: rd64(page, off::DATA_BASE),
            data_pages: rd64(page, off::DATA_PAGES),
            pages: rd64(page, off::PAGES),
            trace,
        };
        if d.data_pages == 0 || d.data_pages > d.pages {
            return Err(bad(format!(
                "{} data pages in a {}-page guest",
                d.data_pages, d.pages
            )));
        }
        if d.hot_pages == 0 || d.hot_pages > d.data_pages {
            return Err(bad(format!("hot set of {} pages", d.hot_pages)));
        }
        if d.phase_steps == 0 || d.hot_permille > 1000 || d.write_permille > 1000 {
            return Err(bad("parameters out of range".into()));
        }
        Ok(d)
    }
}

/// xoshiro256** — small, fast, and fully specified, so runs are reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng(pub [u64; 4]);

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stateless 64-bit mix (for page contents).
pub fn mix(x: u64) -> u64 {
    let mut s = x;
    splitmix(&mut s)
}

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        let mut s = seed;
        Rng([
            splitmix(&mut s),
            splitmix(&mut s),
            splitmix(&mut s),
            splitmix(&mut s),
        ])
    }
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
    /// Uniform-ish in 0..n (n > 0), multiply-shift without rejection.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    pub fn permille(&mut self, p: u32) -> bool {
        self.below(1000) < p as u64
    }
    /// Log-uniform pick in 0..n: small indices far more likely (Zipf-like).
    pub fn zipf_like(&mut self, n: u64) -> u64 {
        let bits = 64 - n.leading_zeros() as u64;
        let k = self.below(bits + 1);
        let r = if k == 0 {
            0
        } else {
            self.next_u64() & (u64::MAX >> (64 - k))
        };
        r % n
    }
}

/// The workload's moving state (vCPU0 registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Steps completed.
    pub step: u64,
    pub rng: Rng,
    /// Fold of everything read (read-mostly), so reads are real work.
    pub acc: u64,
}

impl State {
    pub fn initial(seed: u64) -> Self {
        State {
            step: 0,
            rng: Rng::seeded(seed),
            acc: 0,
        }
    }
}

/// The guest's view of its data pages, indexed 0..data_pages.
pub trait GuestMem {
    fn data_pages(&self) -> u64;
    /// Write `words` starting at word `word` of data page `page`.
    fn write_words(&mut self, page: u64, word: usize, words: &[u64]);
    fn read_word(&self, page: u64, word: usize) -> u64;
}

fn hot_page(d: &Descriptor, st: &mut State, phase: u64) -> u64 {
    let j = st.rng.zipf_like(d.hot_pages);
    let stride = (d.data_pages / d.hot_pages).max(1);
    let offset = phase.wrapping_mul(d.data_pages / 3 + 1);
    (j.wrapping_mul(stride).wrapping_add(offset)) % d.data_pages
}

fn write_line<M: GuestMem>(d: &Descriptor, st: &mut State, mem: &mut M, page: u64) {
    let n = st.step;
    let line = st.rng.below((PAGE_WORDS / LINE_WORDS) as u64) as usize;
    let mut words = [0u64; LINE_WORDS];
    words[0] = n;
    words[1] = page;
    for (k, w) in words.iter_mut().enumerate().skip(2) {
        *w = mix(d.seed ^ n.wrapping_mul(0x100_0000_01B3) ^ k as u64);
    }
    mem.write_words(page, line * LINE_WORDS, &words);
}

/// One workload step. Returns the data page written, if any.
pub fn step<M: GuestMem>(d: &Descriptor, st: &mut State, mem: &mut M) -> Option<u64> {
    st.step += 1;
    let n = st.step;
    let dp = d.data_pages;
    match d.kind {
        WorkloadKind::Idle => None,
        WorkloadKind::Uniform => {
            let p = st.rng.below(dp);
            write_line(d, st, mem, p);
            Some(p)
        }
        WorkloadKind::HotSet | WorkloadKind::PhaseChange => {
            let phase = if d.kind == WorkloadKind::PhaseChange {
                (n - 1) / d.phase_steps
            } else {
                0
            };
            let p = if st.rng.permille(d.hot_permille) {
                hot_page(d, st, phase)
            } else {
                st.rng.below(dp)
            };
            write_line(d, st, mem, p);
            Some(p)
        }
        WorkloadKind::Streaming => {
            // memtester-like: each pass rewrites every page with a new pattern.
            let p = (n - 1) % dp;
            let pass = (n - 1) / dp;
            let mut words = [0u64; PAGE_WORDS];
            for (i, w) in words.iter_mut().enumerate() {
                *w = match pass % 4 {
                    0 => !0u64 ^ (pass << 32) ^ p,
                    1 => 1u64.rotate_left((i as u32 + pass as u32) % 64),
                    2 => (p << 20) ^ (i as u64) ^ (pass << 48),
                    _ => mix(d.seed ^ (pass << 40) ^ (p << 9) ^ i as u64),
                };
            }
            mem.write_words(p, 0, &words);
            Some(p)
        }
        WorkloadKind::Trace => {
            let r = &d.trace.as_ref()?.replay;
            let p = r.page_in(r.page_at(n)?, dp);
            write_line(d, st, mem, p);
            Some(p)
        }
        WorkloadKind::ReadMostly => {
            if st.rng.permille(d.write_permille) {
                let p = hot_page(d, st, 0);
                write_line(d, st, mem, p);
                Some(p)
            } else {
                let p = st.rng.below(dp);
                let w = st.rng.below(PAGE_WORDS as u64) as usize;
                st.acc = st.acc.rotate_left(5) ^ mem.read_word(p, w);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct VecMem(Vec<u64>, u64);
    impl GuestMem for VecMem {
        fn data_pages(&self) -> u64 {
            self.1
        }
        fn write_words(&mut self, page: u64, word: usize, words: &[u64]) {
            let o = page as usize * PAGE_WORDS + word;
            self.0[o..o + words.len()].copy_from_slice(words);
        }
        fn read_word(&self, page: u64, word: usize) -> u64 {
            self.0[page as usize * PAGE_WORDS + word]
        }
    }

    fn desc(kind: WorkloadKind) -> Descriptor {
        Descriptor::new(kind, &WorkloadParams::default(), 7, 0, 0, 300, 320)
    }

    #[test]
    fn descriptor_round_trips() {
        let d = desc(WorkloadKind::PhaseChange);
        let mut page = vec![0xAAu8; 4096];
        d.encode(&mut page);
        assert_eq!(Descriptor::decode(&page).unwrap(), d);
        page[0] ^= 1;
        assert!(Descriptor::decode(&page).is_err());
    }

    #[test]
    fn runs_are_reproducible_and_split_runs_agree() {
        for kind in WorkloadKind::ALL {
            let d = desc(kind);
            let mut a = VecMem(vec![0; 300 * PAGE_WORDS], 300);
            let mut sa = State::initial(d.seed);
            for _ in 0..5000 {
                step(&d, &mut sa, &mut a);
            }
            // Same run in two halves, with the state copied as a restore would.
            let mut b = VecMem(vec![0; 300 * PAGE_WORDS], 300);
            let mut sb = State::initial(d.seed);
            for _ in 0..2500 {
                step(&d, &mut sb, &mut b);
            }
            let mut sb2 = sb;
            for _ in 0..2500 {
                step(&d, &mut sb2, &mut b);
            }
            assert_eq!(sa, sb2, "{kind}");
            assert!(a.0 == b.0, "{kind}: memory differs");
            if kind != WorkloadKind::Idle {
                assert!(a.0.iter().any(|&w| w != 0), "{kind} wrote nothing");
            }
        }
    }

    #[test]
    fn a_trace_descriptor_names_its_file_and_refuses_a_changed_one() {
        use crate::hv::sim::trace::{Sample, Trace};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.rxtrace");
        let trace = |dt_us| Trace {
            footprint: 50,
            note: "test".into(),
            samples: vec![Sample {
                dt_us,
                pages: vec![1, 2, 40],
            }],
        };
        std::fs::write(&path, trace(5000).encode()).unwrap();
        let mut cfg = GuestConfig::new("t", crate::hv::GuestType::Pv, 16, WorkloadKind::Trace);
        cfg.trace = Some(TraceSpec {
            path: path.clone(),
            speed_permille: 2000,
        });
        let d = Descriptor::for_guest(&cfg, 0, 300, 320).unwrap();
        assert_eq!(d.rate, 2 * d.trace.as_ref().unwrap().replay.ticks_per_s);
        let mut page = vec![0u8; 4096];
        d.encode(&mut page);
        assert_eq!(Descriptor::decode(&page).unwrap(), d);
        assert_eq!(d.trace_spec(), cfg.trace);
        // Its steps write the trace's pages: 5 ticks of 1 ms for 3 writes.
        let mut m = VecMem(vec![0; 300 * PAGE_WORDS], 300);
        let mut s = State::initial(1);
        let written: Vec<u64> = (0..5).filter_map(|_| step(&d, &mut s, &mut m)).collect();
        assert_eq!(written, vec![1, 2, 40]);
        std::fs::write(&path, trace(6000).encode()).unwrap();
        let e = Descriptor::decode(&page).unwrap_err().to_string();
        assert!(e.contains("changed since the guest was created"), "{e}");
    }

    #[test]
    fn hot_set_concentrates_writes() {
        let d = desc(WorkloadKind::HotSet);
        let mut m = VecMem(vec![0; 300 * PAGE_WORDS], 300);
        let mut s = State::initial(1);
        let mut counts = vec![0u32; 300];
        for _ in 0..10_000 {
            if let Some(p) = step(&d, &mut s, &mut m) {
                counts[p as usize] += 1;
            }
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u32 = counts[..d.hot_pages as usize].iter().sum();
        assert!(top > 8_000, "hot pages got {top} of 10000 writes");
    }
}
