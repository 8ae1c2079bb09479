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
    pub bytes: u64,
    pub duration_ms: f64,
    /// Bytes per second over this round.
    pub bandwidth: f64,
    /// What a stop-and-copy now would cost at this round's bandwidth, ms.
    pub expected_downtime_ms: f64,
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
        )
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

impl StatsWriter {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        StatsWriter { out }
    }
    pub fn round(&mut self, r: &RoundStats) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, &RoundLine { round: r })?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
    pub fn summary(&mut self, s: &Summary) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, &SummaryLine { summary: s })?;
        self.out.write_all(b"\n")?;
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
        };
        assert_eq!(
            s.to_string(),
            "hotpage: 6 rounds, 10382 pages (120 zero, 40.6 MiB) in 555 ms, downtime 222 ms, \
             3499 pages in the final round of which 2330 hot"
        );
    }
}
