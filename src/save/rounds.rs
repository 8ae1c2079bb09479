//! The pre-copy round loop, generic over how pages move ([`Pager`]) so that
//! the same loop runs against a hypervisor and against a model in tests.

use super::SaveError;
use crate::bitmap::Bitmap;
use crate::precopy::{Decision, Policy, RoundFacts};
use crate::stats::{RoundStats, SendTimes};
use crate::stream::MAX_BATCH;
use std::time::Instant;

/// How pages leave the guest: the mechanism under the round loop.
pub trait Pager {
    /// Send these pfns (ascending, at most [`MAX_BATCH`]) as one batch. Pages
    /// that cannot be sent now go into the pager's deferred set. Returns how
    /// many went out with their contents: holes (XTAB, e.g. an HVM guest's
    /// MMIO range) and deferred pages travel without data and do not count.
    fn send_batch(&mut self, pfns: &[u64]) -> Result<u64, SaveError>;
    /// Log-dirty PEEK (no clearing).
    fn peek(&mut self, out: &mut Bitmap) -> Result<(), SaveError>;
    /// Log-dirty CLEAN; `final_round` after the guest is suspended.
    fn clean(&mut self, out: &mut Bitmap, final_round: bool) -> Result<(), SaveError>;
    /// Stop the guest for the final round.
    fn suspend(&mut self) -> Result<(), SaveError>;
    /// Move the deferred set into `into` (OR) and clear it.
    fn take_deferred(&mut self, into: &mut Bitmap);
    /// Bytes written to the stream so far.
    fn bytes_written(&self) -> u64;
    /// Pages sent so far as zero pages (XALLOC, no data); they count in
    /// `send_batch`'s result too.
    fn zero_pages(&self) -> u64 {
        0
    }
    /// Time spent so far in each kind of work (cumulative).
    fn times(&self) -> SendTimes {
        SendTimes::default()
    }
    /// Pages sent so far in this round out of the round's total.
    fn progress(&mut self, _done: u64, _total: u64) {}
    /// A round has ended (statistics, progress).
    fn round_done(&mut self, _stats: &RoundStats) {}
}

/// What the loop did.
#[derive(Debug, Clone)]
pub struct RoundsOutcome {
    pub rounds: Vec<RoundStats>,
    /// When the guest was suspended (start of downtime).
    pub suspended_at: Instant,
    /// When the final round's last page was written.
    pub final_round_done: Instant,
    pub total_pages_sent: u64,
    pub hot_pages_final: u64,
}

/// With per-batch PEEKs, batches that sent nothing after which the next
/// batch PEEKs again anyway: a 512 MiB HVM guest's round 0 has ~1 000
/// batches of holes, and a PEEK reads the log of the whole P2M.
pub const PEEK_AFTER_IDLE: u32 = 32;

/// With adaptive PEEKs ([`Policy::adaptive_peek`]): the most batches with
/// data between two PEEKs, reached by doubling while each PEEK finds the log
/// as the one before left it.
pub const PEEK_MAX_INTERVAL: u32 = 32;

/// How a round refreshes its view of pages dirtied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peek {
    /// No PEEK (Xen 4's saver; the final round).
    Never,
    /// Before every batch that follows one with data (Xen 3.3).
    EveryBatch,
    /// As `EveryBatch` while the log grows; while it does not, every 2, 4,
    /// … up to [`PEEK_MAX_INTERVAL`] batches.
    Adaptive,
}

struct RoundLoop<'a, P: Pager> {
    pager: &'a mut P,
    p2m_size: u64,
    to_skip: Bitmap,
    rounds: Vec<RoundStats>,
    total_sent: u64,
    /// PEEKs made (all rounds): what adaptive PEEKs save shows here.
    peeks: u64,
}

impl<P: Pager> RoundLoop<'_, P> {
    /// Send `set` in batches; with a PEEK before a batch, leave out pages
    /// already dirty again (they stay in the log for the next CLEAN).
    /// Batches that sent nothing (holes only: an HVM guest's P2M is mostly
    /// holes below 4 GiB) took little time, so the batch after one reuses
    /// the last PEEK unless [`PEEK_AFTER_IDLE`] of them have passed since.
    /// Returns (sent, skipped bitmap).
    fn send_set(&mut self, set: &Bitmap, peek: Peek) -> Result<(u64, Bitmap), SaveError> {
        let total = set.count();
        let mut done_pfns = 0;
        let mut skipped = Bitmap::new(self.p2m_size);
        let mut sent = 0;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut pfns = set.iter_ones().peekable();
        let skip = peek != Peek::Never;
        let mut peek_due = true;
        let mut idle = 0;
        // batches with data since the last PEEK, and how many it may be
        let (mut since, mut interval) = (0u32, 1u32);
        let mut logged: Option<u64> = None;
        while pfns.peek().is_some() {
            // A signal stops the save here; the caller resumes the guest.
            crate::cancel::check()?;
            if skip && peek_due {
                self.pager.peek(&mut self.to_skip)?;
                self.peeks += 1;
                if peek == Peek::Adaptive {
                    let now = self.to_skip.count();
                    interval = match logged {
                        Some(before) if before == now => (interval * 2).min(PEEK_MAX_INTERVAL),
                        _ => 1,
                    };
                    logged = Some(now);
                }
                idle = 0;
                since = 0;
            }
            batch.clear();
            while batch.len() < MAX_BATCH {
                match pfns.next() {
                    Some(p) if skip && self.to_skip.get(p) => skipped.set(p),
                    Some(p) => batch.push(p),
                    None => break,
                }
            }
            if !batch.is_empty() {
                let n = self.pager.send_batch(&batch)?;
                if n == 0 {
                    idle += 1;
                } else {
                    since += 1;
                }
                peek_due = (n > 0 && since >= interval) || idle >= PEEK_AFTER_IDLE;
                sent += n;
                done_pfns += batch.len() as u64;
                self.pager.progress(done_pfns, total);
            }
        }
        Ok((sent, skipped))
    }

    /// Where a round starts: (bytes, zero pages, times, PEEKs) so far.
    fn mark(&self) -> (u64, u64, SendTimes, u64) {
        (
            self.pager.bytes_written(),
            self.pager.zero_pages(),
            self.pager.times(),
            self.peeks,
        )
    }

    /// Finish a round's statistics (bytes, zero pages, time, bandwidth).
    fn measure(
        &self,
        mut r: RoundStats,
        started: Instant,
        before: (u64, u64, SendTimes, u64),
    ) -> RoundStats {
        let secs = started.elapsed().as_secs_f64();
        r.bytes = self.pager.bytes_written() - before.0;
        r.zero_pages = self.pager.zero_pages() - before.1;
        r.times = self.pager.times().since(&before.2);
        r.peeks = self.peeks - before.3;
        r.duration_ms = secs * 1e3;
        r.bandwidth = if secs > 0.0 {
            r.bytes as f64 / secs
        } else {
            0.0
        };
        r
    }

    /// Count a finished round and report it.
    fn record(&mut self, r: RoundStats) {
        self.total_sent += r.pages_sent;
        self.pager.round_done(&r);
        self.rounds.push(r);
    }
}

/// Live save: round 0 sends every pfn, later rounds what the policy plans
/// from each CLEAN, then suspend and the final round.
pub fn run_live<P: Pager>(
    pager: &mut P,
    policy: &mut dyn Policy,
    p2m_size: u64,
) -> Result<RoundsOutcome, SaveError> {
    run_live_throttled(pager, policy, p2m_size, &mut |_| 0)
}

/// [`run_live`] with auto-converge's hook: after each plan, `throttle`
/// gets the throttle the policy asks for ([`Policy::throttle`], percent)
/// and returns the one in force, which the round's statistics record. The
/// caller applies it and puts the guest's old cap back when this returns.
pub fn run_live_throttled<P: Pager>(
    pager: &mut P,
    policy: &mut dyn Policy,
    p2m_size: u64,
    throttle: &mut dyn FnMut(u8) -> u8,
) -> Result<RoundsOutcome, SaveError> {
    let mut lp = RoundLoop {
        pager,
        p2m_size,
        to_skip: Bitmap::new(p2m_size),
        rounds: Vec::new(),
        total_sent: 0,
        peeks: 0,
    };
    let skip = match (policy.skip_redirtied(), policy.adaptive_peek()) {
        (false, _) => Peek::Never,
        (true, false) => Peek::EveryBatch,
        (true, true) => Peek::Adaptive,
    };
    let mut to_send = Bitmap::full(p2m_size);
    let mut dirty = Bitmap::new(p2m_size);
    let mut round = 0u32;
    let mut pending = Bitmap::new(p2m_size);
    let mut in_force;
    loop {
        crate::cancel::check()?;
        let started = Instant::now();
        let before = lp.mark();
        let planned = to_send.count();
        let (sent, skipped) = lp.send_set(&to_send, skip)?;
        lp.pager.clean(&mut dirty, false)?;
        let mut r = lp.measure(
            RoundStats {
                round,
                dirty_pages: planned,
                pages_sent: sent,
                pages_skipped: skipped.count(),
                ..Default::default()
            },
            started,
            before,
        );
        let facts = RoundFacts {
            round,
            p2m_size,
            sent,
            skipped: r.pages_skipped,
            total_sent: lp.total_sent + sent,
            total_bytes: lp.pager.bytes_written(),
            duration: started.elapsed(),
            bandwidth: r.bandwidth,
        };
        let decision = policy.plan(&facts, &mut dirty, &skipped);
        in_force = throttle(policy.throttle());
        r.throttle_pct = in_force;
        let held = policy.held().map_or(0, |h| h.count());
        r.hot_pages = held;
        r.expected_downtime_ms = if r.bandwidth > 0.0 {
            (dirty.count() + held) as f64 * 4096.0 / r.bandwidth * 1e3
        } else {
            0.0
        };
        lp.record(r);
        round += 1;
        match decision {
            Decision::Continue => to_send.copy_from(&dirty),
            Decision::LastLive => {
                let started = Instant::now();
                let before = lp.mark();
                let planned = dirty.count();
                let (sent, skipped) = lp.send_set(&dirty, skip)?;
                let r = lp.measure(
                    RoundStats {
                        round,
                        dirty_pages: planned,
                        hot_pages: held,
                        pages_sent: sent,
                        pages_skipped: skipped.count(),
                        throttle_pct: in_force,
                        ..Default::default()
                    },
                    started,
                    before,
                );
                lp.record(r);
                round += 1;
                break;
            }
            Decision::StopAndCopy => {
                pending.copy_from(&dirty);
                break;
            }
        }
    }

    crate::cancel::check()?;
    lp.pager.suspend()?;
    let suspended_at = Instant::now();
    let started = suspended_at;
    let before = lp.mark();
    let mut last = Bitmap::new(p2m_size);
    lp.pager.clean(&mut last, true)?;
    last.or_with(&pending);
    let hot_final = policy.held().map_or(0, |h| h.count());
    if let Some(h) = policy.held() {
        last.or_with(h);
    }
    lp.pager.take_deferred(&mut last);
    let planned = last.count();
    let (sent, _) = lp.send_set(&last, Peek::Never)?;
    let r = lp.measure(
        RoundStats {
            round,
            last: true,
            dirty_pages: planned,
            hot_pages: hot_final,
            pages_sent: sent,
            throttle_pct: in_force,
            ..Default::default()
        },
        started,
        before,
    );
    lp.record(r);
    Ok(RoundsOutcome {
        total_pages_sent: lp.total_sent,
        rounds: lp.rounds,
        suspended_at,
        final_round_done: Instant::now(),
        hot_pages_final: hot_final,
    })
}

/// Non-live save (`xl save`): suspend, then send every pfn once.
pub fn run_nonlive<P: Pager>(pager: &mut P, p2m_size: u64) -> Result<RoundsOutcome, SaveError> {
    crate::cancel::check()?;
    pager.suspend()?;
    let suspended_at = Instant::now();
    let mut lp = RoundLoop {
        pager,
        p2m_size,
        to_skip: Bitmap::new(p2m_size),
        rounds: Vec::new(),
        total_sent: 0,
        peeks: 0,
    };
    let all = Bitmap::full(p2m_size);
    // The round's bytes are its PAGE_DATA records, not the headers before.
    let before = lp.mark();
    // The guest is suspended: the pager fails rather than defers.
    let (sent, _) = lp.send_set(&all, Peek::Never)?;
    let r = lp.measure(
        RoundStats {
            round: 0,
            last: true,
            dirty_pages: p2m_size,
            pages_sent: sent,
            ..Default::default()
        },
        suspended_at,
        before,
    );
    lp.record(r);
    Ok(RoundsOutcome {
        total_pages_sent: lp.total_sent,
        rounds: lp.rounds,
        suspended_at,
        final_round_done: Instant::now(),
        hot_pages_final: 0,
    })
}

#[cfg(test)]
#[path = "rounds_tests.rs"]
mod tests;
