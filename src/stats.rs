//! Per-round metrics and the migration summary (docs/ARCHITECTURE.md, "Statistics").

use serde::Serialize;
use std::io::Write;

/// One pre-copy round (live rounds, then the final stop-and-copy round).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RoundStats {
    /// 0-based; the final round has `last: true`.
    pub round: u32,
    pub last: bool,
    /// Pages the CLEAN before this round returned (round 0: all pages).
    pub dirty_pages: u64,
    /// Pages the policy holds in its hot set after planning this round.
    pub hot_pages: u64,
    /// Pages sent, zero pages included.
    pub pages_sent: u64,
    /// Of `pages_sent`, zero pages sent as XALLOC entries without data.
    pub zero_pages: u64,
    pub pages_skipped: u64,
    /// Log-dirty PEEKs made in this round.
    pub peeks: u64,
    pub bytes: u64,
    pub duration_ms: f64,
    /// Bytes per second over this round.
    pub bandwidth: f64,
    /// What a stop-and-copy now would cost at this round's bandwidth, ms.
    pub expected_downtime_ms: f64,
    /// Auto-converge: the share of the guest's CPU taken away, percent,
    /// in force once this round's plan was made (0: none).
    pub throttle_pct: u8,
    /// Where the sender's time went in this round.
    pub times: SendTimes,
}

/// The sender's time in its hypervisor calls and its stream writes, ms:
/// what a round's `duration_ms` is made of (the rest is the loop itself
/// and the policy).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct SendTimes {
    /// Page types of the batches' pfns (holes included).
    pub types_ms: f64,
    /// Mapping the frames with data.
    pub map_ms: f64,
    /// Copying pages out of the mappings (zero check and page-table
    /// normalisation included).
    pub copy_ms: f64,
    /// Writing PAGE_DATA records to the stream (waiting for the link included).
    pub write_ms: f64,
    /// Log-dirty PEEKs.
    pub peek_ms: f64,
    /// Log-dirty CLEANs.
    pub clean_ms: f64,
}

impl SendTimes {
    /// What was spent since `before` (both cumulative).
    pub fn since(&self, before: &SendTimes) -> SendTimes {
        SendTimes {
            types_ms: self.types_ms - before.types_ms,
            map_ms: self.map_ms - before.map_ms,
            copy_ms: self.copy_ms - before.copy_ms,
            write_ms: self.write_ms - before.write_ms,
            peek_ms: self.peek_ms - before.peek_ms,
            clean_ms: self.clean_ms - before.clean_ms,
        }
    }
}

/// The receiver's time in the page data, ms: reading the stream and what
/// each PAGE_DATA record costs. The work after the memory (END's fix-ups,
/// the device model, the unpause) is in the downtime's `rx:` parts.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct RecvTimes {
    /// Reading and checking records (waiting for the sender included).
    pub read_ms: f64,
    /// Populating frames: the records' pfns and what page tables point at.
    pub populate_ms: f64,
    /// PV page tables: their pfns turned into the new frames.
    pub localise_ms: f64,
    /// Mapping the frames written, and unmapping them.
    pub map_ms: f64,
    /// Copying pages into the frames (after VERIFY: comparing them).
    pub copy_ms: f64,
    /// PV: keeping the guest's P2M frames in step with the pages.
    pub p2m_ms: f64,
}

/// What a restore did with the guest's memory: one JSON line
/// (`{"restore": …}`) in a stats file, and the receiver's log line.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RestoreStats {
    /// PAGE_DATA records applied.
    pub page_records: u64,
    /// Pages written with data (zero pages are populated, not written).
    pub pages: u64,
    /// Frames populated.
    pub populated: u64,
    /// From the first record read to END.
    pub total_ms: f64,
    pub times: RecvTimes,
}

impl std::fmt::Display for RestoreStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.times;
        write!(
            f,
            "{} pages written, {} frames populated, {} PAGE_DATA records in {:.0} ms \
             (ms: reading {:.0}, populating {:.0}, page tables {:.0}, mapping {:.0}, \
             copying {:.0}, P2M {:.0})",
            self.pages,
            self.populated,
            self.page_records,
            self.total_ms,
            t.read_ms,
            t.populate_ms,
            t.localise_ms,
            t.map_ms,
            t.copy_ms,
            t.p2m_ms
        )
    }
}

/// Adds the time `f` takes to `into` (ms).
pub fn timed<T>(into: &mut f64, f: impl FnOnce() -> T) -> T {
    let t = std::time::Instant::now();
    let r = f();
    *into += t.elapsed().as_secs_f64() * 1e3;
    r
}

/// The whole migration.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub policy: String,
    pub guest_pages: u64,
    pub rounds: u32,
    /// Pages sent, zero pages included.
    pub total_pages_sent: u64,
    /// Of `total_pages_sent`, zero pages sent without data (XALLOC).
    pub zero_pages: u64,
    pub total_bytes: u64,
    pub total_time_ms: f64,
    /// Source paused → destination running (or, for a save, source paused →
    /// stream complete).
    pub downtime_ms: f64,
    pub final_round_pages: u64,
    pub hot_pages_final: u64,
    /// Auto-converge: the highest throttle applied, percent (0: none).
    pub throttle_max_pct: u8,
    /// The downtime in consecutive parts, each named by the mark that ends
    /// it (`tx:` the sender, `rx:` the receiver; see [`downtime_parts`]).
    /// Empty when unknown.
    pub downtime_parts: Vec<DowntimePart>,
    /// The suspend on this host's [`monotonic_ms`] clock (0: unknown): a
    /// receiver on the same host writes its marks on that clock (the
    /// `marks` of its `{"restore": …}` line), so the two lay side by side.
    pub suspended_ms: f64,
}

/// A moment on this host's monotonic clock (CLOCK_MONOTONIC, the clock of
/// `Instant`), in ms: comparable between the processes of one host, not
/// between hosts.
pub fn monotonic_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// `at` on the [`monotonic_ms`] clock.
pub fn instant_ms(at: std::time::Instant) -> f64 {
    monotonic_ms() - at.elapsed().as_secs_f64() * 1e3
}

/// A named moment on the [`monotonic_ms`] clock.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Mark {
    pub what: &'static str,
    pub at_ms: f64,
}

/// Marks in the order they were taken: where a save's or a restore's time
/// went after the guest stopped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub marks: Vec<Mark>,
}

impl Timeline {
    /// Mark now.
    pub fn mark(&mut self, what: &'static str) {
        self.mark_at(what, monotonic_ms());
    }
    pub fn mark_at(&mut self, what: &'static str, at_ms: f64) {
        self.marks.push(Mark { what, at_ms });
    }
    /// When `what` was last marked.
    pub fn at(&self, what: &str) -> Option<f64> {
        self.marks
            .iter()
            .rev()
            .find(|m| m.what == what)
            .map(|m| m.at_ms)
    }
}

/// One part of the downtime: `ms` from the previous mark (of either side)
/// to the mark `what`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct DowntimePart {
    pub what: String,
    pub ms: f64,
}

/// The downtime from `start_ms` (the suspend) to the last mark, cut at
/// every mark of `timelines` (merged by time; marks before `start_ms` are
/// left out). On one host the sender's and the receiver's marks share a
/// clock, so a part ended by an `rx:` mark is the receiver's work (or its
/// wait for the stream) while the sender waited.
pub fn downtime_parts(start_ms: f64, timelines: &[&Timeline]) -> Vec<DowntimePart> {
    let mut marks: Vec<&Mark> = timelines
        .iter()
        .flat_map(|t| t.marks.iter())
        .filter(|m| m.at_ms >= start_ms)
        .collect();
    marks.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    let mut prev = start_ms;
    marks
        .into_iter()
        .map(|m| {
            let part = DowntimePart {
                what: m.what.to_string(),
                ms: m.at_ms - prev,
            };
            prev = m.at_ms;
            part
        })
        .collect()
}

impl std::fmt::Display for Summary {
    /// One line for a log or a terminal: "hotpage: 6 rounds, 10382 pages
    /// (120 zero, 40.6 MiB) in 555 ms, downtime 222 ms, 3499 pages in the
    /// final round of which 2330 hot".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} rounds, {} pages ({} zero, {:.1} MiB) in {:.0} ms, downtime {:.0} ms, \
             {} pages in the final round of which {} hot",
            self.policy,
            self.rounds,
            self.total_pages_sent,
            self.zero_pages,
            self.total_bytes as f64 / 1048576.0,
            self.total_time_ms,
            self.downtime_ms,
            self.final_round_pages,
            self.hot_pages_final
        )?;
        if self.throttle_max_pct > 0 {
            write!(f, ", guest throttled up to {} %", self.throttle_max_pct)?;
        }
        if !self.downtime_parts.is_empty() {
            f.write_str("; downtime parts:")?;
            for p in &self.downtime_parts {
                write!(f, " {} {:.1}", p.what, p.ms)?;
            }
        }
        Ok(())
    }
}

/// Writes one JSON line per round and one for the summary.
pub struct StatsWriter {
    out: Box<dyn Write + Send>,
}

#[derive(Serialize)]
struct RoundLine<'a> {
    round: &'a RoundStats,
}
#[derive(Serialize)]
struct SummaryLine<'a> {
    summary: &'a Summary,
}
#[derive(Serialize)]
struct RestoreLine<'a> {
    restore: RestoreRecord<'a>,
}
#[derive(Serialize)]
struct RestoreRecord<'a> {
    #[serde(flatten)]
    stats: &'a RestoreStats,
    /// The receiver's marks after the page data, on the host's
    /// [`monotonic_ms`] clock.
    marks: &'a [Mark],
}

impl StatsWriter {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        StatsWriter { out }
    }
    pub fn round(&mut self, r: &RoundStats) -> std::io::Result<()> {
        self.line(&RoundLine { round: r })
    }
    pub fn summary(&mut self, s: &Summary) -> std::io::Result<()> {
        self.line(&SummaryLine { summary: s })
    }
    /// The restore's line: its page-data figures and its marks (`rx:…`).
    pub fn restore(&mut self, s: &RestoreStats, marks: &Timeline) -> std::io::Result<()> {
        self.line(&RestoreLine {
            restore: RestoreRecord {
                stats: s,
                marks: &marks.marks,
            },
        })
    }
    /// One line in one write: the sending and the receiving helper of a
    /// local `xl migrate` may append to the same file.
    fn line(&mut self, v: &impl Serialize) -> std::io::Result<()> {
        let mut buf = serde_json::to_vec(v)?;
        buf.push(b'\n');
        self.out.write_all(&buf)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod display_tests {
    use super::Summary;

    #[test]
    fn summary_line_names_every_total() {
        let s = Summary {
            policy: "hotpage".into(),
            guest_pages: 4096,
            rounds: 6,
            total_pages_sent: 10382,
            zero_pages: 120,
            total_bytes: 42_572_185,
            total_time_ms: 555.4,
            downtime_ms: 222.2,
            final_round_pages: 3499,
            hot_pages_final: 2330,
            throttle_max_pct: 0,
            downtime_parts: Vec::new(),
            suspended_ms: 0.0,
        };
        assert_eq!(
            s.to_string(),
            "hotpage: 6 rounds, 10382 pages (120 zero, 40.6 MiB) in 555 ms, downtime 222 ms, \
             3499 pages in the final round of which 2330 hot"
        );
        let ac = Summary {
            policy: "xen4+ac".into(),
            throttle_max_pct: 95,
            ..s
        };
        assert!(
            ac.to_string()
                .ends_with("of which 2330 hot, guest throttled up to 95 %"),
            "{ac}"
        );
    }

    #[test]
    fn downtime_parts_merge_both_sides_from_the_suspend() {
        use super::{downtime_parts, Timeline};
        let mut tx = Timeline::default();
        tx.mark_at("tx:before", 5.0);
        tx.mark_at("tx:final_round", 12.0);
        tx.mark_at("tx:end", 15.0);
        tx.mark_at("tx:report", 40.0);
        let mut rx = Timeline::default();
        rx.mark_at("rx:end_record", 16.5);
        rx.mark_at("rx:pin", 30.0);
        let parts = downtime_parts(10.0, &[&tx, &rx]);
        let got: Vec<(&str, f64)> = parts.iter().map(|p| (p.what.as_str(), p.ms)).collect();
        assert_eq!(
            got,
            [
                ("tx:final_round", 2.0),
                ("tx:end", 3.0),
                ("rx:end_record", 1.5),
                ("rx:pin", 13.5),
                ("tx:report", 10.0)
            ]
        );
        let total: f64 = parts.iter().map(|p| p.ms).sum();
        assert_eq!(total, 30.0);
        let s = super::Summary {
            downtime_parts: parts[..2].to_vec(),
            ..Default::default()
        };
        assert!(s
            .to_string()
            .ends_with("; downtime parts: tx:final_round 2.0 tx:end 3.0"));
    }
}
