//! Auto-converge: when no choice of pages makes the final round fit the
//! downtime target (a guest that rewrites memory faster than the link
//! drains it), slow the guest down until it does.
//!
//! [`AutoConverge`] wraps any policy. After each live round it projects the
//! final round — the pages the wrapped policy would leave for it if it
//! stopped now (the dirty set it planned plus the pages it holds) at the
//! bandwidth the round measured — and, when that does not fit the target,
//! asks for a *throttle*: the share of the guest's CPU time taken away
//! ([`Policy::throttle`]). The save engine applies it (on Xen as the
//! scheduler's per-domain cap, on the simulated host by slowing the guest's
//! steps) and puts the old cap back when the rounds end.
//!
//! The decision, [`next_throttle`], is a pure function. Its model: the
//! pages a guest dirties in a round scale with the CPU time it gets. A
//! projection `p` ms against a target `t` ms under a throttle `c` wants the
//! guest's share cut by `t / p`: `1 - c'` = `(1 - c) · t / p`. The throttle
//! only rises (lowering it would let the dirty set grow back), starts at
//! [`ConvergeParams::min_pct`] at least and stops at
//! [`ConvergeParams::max_pct`]: a guest that gets no CPU at all is a paused
//! guest, and its services stop answering.

use super::hotpage::PAGE_WIRE_BYTES;
use super::{Decision, Policy, RoundFacts};
use crate::bitmap::Bitmap;

/// Parameters of the auto-converge rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvergeParams {
    /// The final round's budget on the wire, ms. Must not be 0.
    pub downtime_target_ms: u64,
    /// The smallest throttle applied once throttling starts, percent.
    pub min_pct: u8,
    /// The largest throttle, percent.
    pub max_pct: u8,
}

impl Default for ConvergeParams {
    fn default() -> Self {
        ConvergeParams {
            downtime_target_ms: super::HotPageParams::default().downtime_target_ms,
            min_pct: 10,
            max_pct: 95,
        }
    }
}

/// What a stop-and-copy now would cost at `bandwidth` (bytes/s), ms.
pub fn projected_final_ms(final_pages: u64, bandwidth: f64) -> Option<f64> {
    (bandwidth > 0.0).then(|| (final_pages * PAGE_WIRE_BYTES) as f64 / bandwidth * 1e3)
}

/// The throttle to apply for the next round, percent, given the pages the
/// final round would carry now (`final_pages`), the bandwidth the round
/// measured (bytes/s) and the throttle in force (`current`).
///
/// Rules (each pinned by a unit test):
/// - no bandwidth measured (nothing sent): keep `current`;
/// - the projection fits the target: keep `current`;
/// - otherwise `1 - c'` = `(1 - c) · target / projection`, rounded up,
///   raised to `min_pct`, capped at `max_pct`, and never below `current`.
pub fn next_throttle(final_pages: u64, bandwidth: f64, current: u8, p: &ConvergeParams) -> u8 {
    let Some(projected) = projected_final_ms(final_pages, bandwidth) else {
        return current;
    };
    let target = p.downtime_target_ms as f64;
    if projected <= target {
        return current;
    }
    let share = (1.0 - f64::from(current) / 100.0) * target / projected;
    let want = ((1.0 - share) * 100.0).ceil().clamp(0.0, 100.0) as u8;
    want.max(p.min_pct).min(p.max_pct).max(current)
}

/// A policy with auto-converge: the wrapped policy picks the pages and
/// decides when to stop; this adds the throttle.
pub struct AutoConverge {
    inner: Box<dyn Policy>,
    p: ConvergeParams,
    name: &'static str,
    throttle: u8,
}

/// The name of `inner` with auto-converge (`xen4+ac`).
fn ac_name(inner: &str) -> &'static str {
    match inner {
        "xen33" => "xen33+ac",
        "xen4" => "xen4+ac",
        "paper" => "paper+ac",
        "hotpage" => "hotpage+ac",
        "hotpeek" => "hotpeek+ac",
        _ => "auto-converge",
    }
}

impl AutoConverge {
    /// Wrap `inner`; refuses a downtime target of 0 (nothing to converge to)
    /// and a throttle range outside 1..=99.
    pub fn new(inner: Box<dyn Policy>, p: ConvergeParams) -> Result<Self, super::PolicyError> {
        if p.downtime_target_ms == 0 {
            return Err(super::PolicyError::BadParam {
                name: "downtime_target_ms",
                msg: "auto-converge needs a downtime target above 0 ms (it throttles the \
                      guest until the final round fits the target)"
                    .into(),
            });
        }
        if p.min_pct == 0 || p.min_pct > p.max_pct || p.max_pct > 99 {
            return Err(super::PolicyError::BadParam {
                name: "throttle range",
                msg: format!("{}..{} %: want 1 ≤ min ≤ max ≤ 99", p.min_pct, p.max_pct),
            });
        }
        Ok(AutoConverge {
            name: ac_name(inner.name()),
            inner,
            p,
            throttle: 0,
        })
    }
}

impl Policy for AutoConverge {
    fn name(&self) -> &'static str {
        self.name
    }
    fn skip_redirtied(&self) -> bool {
        self.inner.skip_redirtied()
    }
    fn adaptive_peek(&self) -> bool {
        self.inner.adaptive_peek()
    }
    fn plan(&mut self, facts: &RoundFacts, dirty: &mut Bitmap, skipped: &Bitmap) -> Decision {
        let d = self.inner.plan(facts, dirty, skipped);
        // Throttling only helps rounds still to come; once the wrapped
        // policy stops, the guest is about to be suspended anyway.
        if d == Decision::Continue {
            let final_pages = dirty.count() + self.inner.held().map_or(0, |h| h.count());
            self.throttle = next_throttle(final_pages, facts.bandwidth, self.throttle, &self.p);
        }
        d
    }
    fn held(&self) -> Option<&Bitmap> {
        self.inner.held()
    }
    fn throttle(&self) -> u8 {
        self.throttle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precopy::{Xen4, Xen4Params};

    const P: ConvergeParams = ConvergeParams {
        downtime_target_ms: 20,
        min_pct: 10,
        max_pct: 95,
    };
    /// 1000 pages on the wire per second.
    const BW: f64 = 1000.0 * PAGE_WIRE_BYTES as f64;

    #[test]
    fn a_final_round_that_fits_keeps_the_throttle() {
        // 20 pages at 1000 pages/s: 20 ms, the target.
        assert_eq!(next_throttle(20, BW, 0, &P), 0);
        assert_eq!(next_throttle(20, BW, 40, &P), 40);
        assert_eq!(next_throttle(0, BW, 0, &P), 0);
    }

    #[test]
    fn no_bandwidth_means_no_change() {
        assert_eq!(next_throttle(5000, 0.0, 0, &P), 0);
        assert_eq!(next_throttle(5000, 0.0, 30, &P), 30);
    }

    #[test]
    fn the_share_is_cut_by_target_over_projection() {
        // 40 ms projected against 20: half the CPU goes.
        assert_eq!(next_throttle(40, BW, 0, &P), 50);
        // Under a 50 % throttle already, 40 ms projected: half of the half.
        assert_eq!(next_throttle(40, BW, 50, &P), 75);
        // 25 ms against 20: 20 % (rounded up from 1 - 0.8).
        assert_eq!(next_throttle(25, BW, 0, &P), 20);
    }

    #[test]
    fn the_throttle_starts_at_the_minimum_and_stops_at_the_maximum() {
        // 21 ms against 20 wants 5 %: the minimum is 10.
        assert_eq!(next_throttle(21, BW, 0, &P), 10);
        // 10 s against 20 ms wants 99.8 %: the maximum is 95.
        assert_eq!(next_throttle(10_000, BW, 0, &P), 95);
        assert_eq!(next_throttle(10_000, BW, 95, &P), 95);
    }

    #[test]
    fn the_throttle_never_falls() {
        // A projection that fits or asks for less keeps what is in force.
        assert_eq!(next_throttle(21, BW, 60, &P), 62);
        assert_eq!(next_throttle(1, BW, 60, &P), 60);
        let mut ac = AutoConverge::new(Box::new(Xen4::new(Xen4Params::default())), P).unwrap();
        let s = Bitmap::new(100_000);
        let facts = |round| RoundFacts {
            round,
            p2m_size: 100_000,
            bandwidth: BW,
            ..Default::default()
        };
        let mut d = Bitmap::new(100_000);
        (0..1000).for_each(|i| d.set(i));
        assert_eq!(ac.plan(&facts(0), &mut d, &s), Decision::Continue);
        assert_eq!(ac.throttle(), 95);
        let mut d = Bitmap::new(100_000);
        (0..60).for_each(|i| d.set(i));
        ac.plan(&facts(1), &mut d, &s);
        assert_eq!(ac.throttle(), 95, "a smaller dirty set does not lower it");
    }

    #[test]
    fn the_wrapped_policy_decides_pages_and_stop_and_the_throttle_rises_only_to_continue() {
        let mut ac = AutoConverge::new(Box::new(Xen4::new(Xen4Params::default())), P).unwrap();
        assert_eq!(ac.name(), "xen4+ac");
        assert!(!ac.skip_redirtied());
        let s = Bitmap::new(100_000);
        let mut d = Bitmap::new(100_000);
        (0..1000).for_each(|i| d.set(i));
        let last = RoundFacts {
            round: 4,
            p2m_size: 100_000,
            bandwidth: BW,
            ..Default::default()
        };
        // Xen4 stops after its fifth round: no throttle for a suspended guest.
        assert_eq!(ac.plan(&last, &mut d, &s), Decision::StopAndCopy);
        assert_eq!(d.count(), 1000, "the plan is the wrapped policy's");
        assert_eq!(ac.throttle(), 0);
    }

    #[test]
    fn held_pages_count_in_the_projection() {
        let mut ac = AutoConverge::new(
            Box::new(
                crate::precopy::HotPage::new(crate::precopy::HotPageParams {
                    downtime_target_ms: 0,
                    // Never "converged": hotpage keeps going live.
                    target_dirty: 0,
                    ..Default::default()
                })
                .unwrap(),
            ),
            P,
        )
        .unwrap();
        assert_eq!(ac.name(), "hotpage+ac");
        let none = Bitmap::new(10_000);
        let facts = |round, sent| RoundFacts {
            round,
            p2m_size: 10_000,
            sent,
            total_sent: 10_000 + sent,
            bandwidth: BW,
            ..Default::default()
        };
        // 30 pages dirty twice: hotpage holds them, the plan is empty, the
        // final round still carries 30 pages (30 ms > 20).
        let mut d = Bitmap::new(10_000);
        (0..30).for_each(|i| d.set(i));
        ac.plan(&facts(0, 10_000), &mut d, &none);
        let mut d = Bitmap::new(10_000);
        (0..30).for_each(|i| d.set(i));
        assert_eq!(ac.plan(&facts(1, 30), &mut d, &none), Decision::Continue);
        assert_eq!(d.count(), 0);
        assert_eq!(ac.held().unwrap().count(), 30);
        assert!(ac.throttle() >= 34, "throttle {}", ac.throttle());
    }

    #[test]
    fn a_zero_target_or_a_bad_range_is_refused() {
        let xen4 = || Box::new(Xen4::new(Xen4Params::default())) as Box<dyn Policy>;
        let e = AutoConverge::new(
            xen4(),
            ConvergeParams {
                downtime_target_ms: 0,
                ..P
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("above 0 ms"), "{e}");
        for (min_pct, max_pct) in [(0, 95), (50, 40), (10, 100)] {
            assert!(AutoConverge::new(
                xen4(),
                ConvergeParams {
                    min_pct,
                    max_pct,
                    ..P
                }
            )
            .is_err());
        }
    }
}
