//! Per-round metrics and the migration summary (ARCHITECTURE.md, "Statistics").

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
    pub pages_sent: u64,
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
    pub total_pages_sent: u64,
    pub total_bytes: u64,
    pub total_time_ms: f64,
    /// Source paused → destination running (or, for a save, source paused →
    /// stream complete).
    pub downtime_ms: f64,
    pub final_round_pages: u64,
    pub hot_pages_final: u64,
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
