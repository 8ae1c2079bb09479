//! Pre-copy policies: which pages go in the next round and when to stop.
//!
//! A policy is pure: it sees per-round facts and bitmaps, never a stream or a
//! hypervisor. The save engine owns the mechanism (send, PEEK, CLEAN, suspend)
//! and guarantees that the final stop-and-copy round carries
//! `final CLEAN ∪ pages planned but not sent ∪ policy.held()`. A policy may
//! therefore drop a dirty page from a live round only by holding it.
//!
//! - [`Xen33`]: Xen 3.3's loop, the paper's baseline.
//! - [`Xen4`]: stock Xen since 4.6 (`simple_precopy_policy`).
//! - [`HotPage`]: the paper's hot-page bitmap, plus release of cooled pages
//!   and a switchover rule driven by a downtime target.
//! - [`AutoConverge`]: any of them (`NAME+ac`), plus a guest throttle when
//!   the final round cannot fit the downtime target otherwise.

mod converge;
mod hotpage;
mod spec;
mod xen33;
mod xen4;

pub use converge::{next_throttle, projected_final_ms, AutoConverge, ConvergeParams};
pub use hotpage::{HotPage, HotPageParams};
pub use spec::PolicySpec;
pub use xen33::{Xen33, Xen33Params};
pub use xen4::{Xen4, Xen4Params};

use crate::bitmap::Bitmap;
use std::time::Duration;

/// Errors of the policy layer (bad parameters).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown policy {0:?} (known: xen33, xen4, paper (or hotpage), hotpeek, each also as NAME+ac for auto-converge)")]
    Unknown(String),
    #[error("policy parameter {name}: {msg}")]
    BadParam { name: &'static str, msg: String },
}

/// What happened in the live round that just ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundFacts {
    /// 0-based index of the round just sent (round 0 sends every pfn).
    pub round: u32,
    /// Guest size in pages (p2m_size).
    pub p2m_size: u64,
    /// Pages sent in this round.
    pub sent: u64,
    /// Pages skipped because a PEEK showed them dirty again.
    pub skipped: u64,
    /// Pages sent over all rounds so far.
    pub total_sent: u64,
    /// Bytes written over all rounds so far.
    pub total_bytes: u64,
    /// Wall time of this round.
    pub duration: Duration,
    /// Measured send rate of this round, bytes per second.
    pub bandwidth: f64,
}

/// The policy's verdict after a round's CLEAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the planned set live and come back after the next CLEAN.
    Continue,
    /// Send the planned set live, then suspend and stop-and-copy (stock Xen
    /// sends a small last dirty set live before it stops).
    LastLive,
    /// Suspend now; the planned set goes into the final round.
    StopAndCopy,
}

/// A pre-copy policy.
pub trait Policy: Send {
    fn name(&self) -> &'static str;
    /// Refresh the dirty log (PEEK) before each batch and skip pages that are
    /// already dirty again (Xen 3.3's `to_skip`).
    fn skip_redirtied(&self) -> bool;
    /// With [`Policy::skip_redirtied`]: PEEK less often while the PEEKs
    /// find no page dirtied since the one before (the log only grows
    /// between CLEANs, so an unchanged count is an unchanged log). Xen 3.3
    /// PEEKs before every batch; `xen33` keeps that.
    fn adaptive_peek(&self) -> bool {
        false
    }
    /// After live round `facts.round` and its CLEAN: `dirty` holds the pages
    /// the CLEAN returned and `skipped` those the round skipped. Leave in
    /// `dirty` the pages to send next; anything removed must be held (see
    /// [`Policy::held`]) until sent.
    fn plan(&mut self, facts: &RoundFacts, dirty: &mut Bitmap, skipped: &Bitmap) -> Decision;
    /// Pages the policy holds back for the final round.
    fn held(&self) -> Option<&Bitmap> {
        None
    }
    /// The share of the guest's CPU time to take away for the next round,
    /// percent (0: none). Only [`AutoConverge`] asks for one; the engine
    /// applies it after [`Policy::plan`] and undoes it when the rounds end.
    fn throttle(&self) -> u8 {
        0
    }
}

/// The suffix that adds auto-converge to a policy's name (`xen4+ac`).
pub const AC_SUFFIX: &str = "+ac";

/// A policy name as users write it, `NAME` or `NAME+ac`: the policy's
/// name (one of [`POLICY_NAMES_ACCEPTED`]) and whether auto-converge is
/// added. The one parser of policy names (CLI, helper configuration, bench).
pub fn parse_name(name: &str) -> Result<(&str, bool), PolicyError> {
    let (base, ac) = match name.strip_suffix(AC_SUFFIX) {
        Some(base) => (base, true),
        None => (name, false),
    };
    match POLICY_NAMES_ACCEPTED.iter().find(|&&n| n == base) {
        Some(n) => Ok((n, ac)),
        None => Err(PolicyError::Unknown(name.to_string())),
    }
}

/// Build a policy by name with its defaults; `NAME+ac` wraps it in
/// [`AutoConverge`] with its defaults.
pub fn by_name(name: &str) -> Result<Box<dyn Policy>, PolicyError> {
    let (name, ac) = parse_name(name)?;
    if ac {
        return Ok(Box::new(AutoConverge::new(
            by_name(name)?,
            ConvergeParams::default(),
        )?));
    }
    match name {
        "xen33" => Ok(Box::new(Xen33::new(Xen33Params::default()))),
        "xen4" => Ok(Box::new(Xen4::new(Xen4Params::default()))),
        "paper" | "hotpage" => Ok(Box::new(HotPage::named(
            if name == "paper" { "paper" } else { "hotpage" },
            HotPageParams::default(),
        )?)),
        "hotpeek" => Ok(Box::new(HotPage::named(
            "hotpeek",
            HotPageParams::hotpeek(),
        )?)),
        other => Err(PolicyError::Unknown(other.to_string())),
    }
}

/// The policy names, for `--help` and configuration checks.
pub const POLICY_NAMES: &[&str] = &["xen33", "xen4", "paper", "hotpeek"];

/// Every name `by_name` accepts: the policies, and `hotpage`, the paper's
/// policy under its first name (it keeps that name in statistics).
pub const POLICY_NAMES_ACCEPTED: &[&str] = &["xen33", "xen4", "paper", "hotpeek", "hotpage"];

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(round: u32, sent: u64, skipped: u64, total_sent: u64) -> RoundFacts {
        RoundFacts {
            round,
            p2m_size: 1000,
            sent,
            skipped,
            total_sent,
            ..Default::default()
        }
    }

    #[test]
    fn xen33_stop_rules() {
        let mut p = Xen33::new(Xen33Params::default());
        let mut d = Bitmap::new(1000);
        let s = Bitmap::new(1000);
        let mut plan = |f| p.plan(&f, &mut d, &s);
        assert_eq!(plan(facts(0, 1000, 0, 1000)), Decision::Continue);
        assert_eq!(plan(facts(27, 100, 0, 2000)), Decision::Continue);
        assert_eq!(
            plan(facts(28, 100, 0, 2000)),
            Decision::StopAndCopy,
            "29 rounds"
        );
        assert_eq!(
            plan(facts(3, 40, 9, 2000)),
            Decision::StopAndCopy,
            "< 50 sent+skipped"
        );
        assert_eq!(plan(facts(3, 40, 10, 2000)), Decision::Continue);
        assert_eq!(plan(facts(3, 500, 0, 3000)), Decision::Continue);
        assert_eq!(
            plan(facts(3, 500, 0, 3001)),
            Decision::StopAndCopy,
            "> 3x memory"
        );
    }

    #[test]
    fn xen4_stop_rules() {
        let mut p = Xen4::new(Xen4Params::default());
        let s = Bitmap::new(1000);
        let mut d = Bitmap::new(1000);
        (0..60).for_each(|i| d.set(i));
        assert_eq!(
            p.plan(&facts(0, 1000, 0, 1000), &mut d, &s),
            Decision::Continue
        );
        assert_eq!(
            p.plan(&facts(4, 60, 0, 1300), &mut d, &s),
            Decision::StopAndCopy
        );
        let mut few = Bitmap::new(1000);
        (0..49).for_each(|i| few.set(i));
        assert_eq!(
            p.plan(&facts(1, 60, 0, 1060), &mut few, &s),
            Decision::LastLive
        );
    }

    #[test]
    fn hotpage_holds_pages_dirty_twice_and_releases_cooled_ones() {
        let mut p = HotPage::new(HotPageParams {
            target_dirty: 0,
            ..Default::default()
        })
        .unwrap();
        let none = Bitmap::new(200);
        let mut d = Bitmap::new(200);
        d.set(5);
        d.set(7);
        assert_eq!(
            p.plan(&facts(0, 200, 0, 200), &mut d, &none),
            Decision::Continue
        );
        assert!(d.get(5) && d.get(7), "first observation: still sent live");
        let mut d = Bitmap::new(200);
        d.set(5);
        p.plan(&facts(1, 2, 0, 202), &mut d, &none);
        assert!(!d.get(5), "second consecutive observation: held");
        assert!(p.held().unwrap().get(5));
        // Page 5 stays clean for a round: released and sent live.
        let mut d = Bitmap::new(200);
        p.plan(&facts(2, 0, 0, 202), &mut d, &none);
        assert!(d.get(5));
        assert!(!p.held().unwrap().get(5));
        // A page skipped by the PEEK counts as an observation too.
        let mut d = Bitmap::new(200);
        d.set(9);
        p.plan(&facts(3, 1, 0, 203), &mut d, &none);
        let mut sk = Bitmap::new(200);
        sk.set(9);
        let mut d = Bitmap::new(200);
        d.set(9);
        p.plan(&facts(4, 0, 1, 203), &mut d, &sk);
        assert!(p.held().unwrap().get(9));
    }

    #[test]
    fn hotpage_never_passes_its_round_cap() {
        let mut p = HotPage::new(HotPageParams::default()).unwrap();
        let s = Bitmap::new(1000);
        let mut d = Bitmap::full(1000);
        assert_eq!(
            p.plan(&facts(4, 1000, 0, 2000), &mut d, &s),
            Decision::StopAndCopy
        );
    }

    #[test]
    fn unknown_policy_is_refused() {
        assert!(matches!(by_name("nope"), Err(PolicyError::Unknown(_))));
        for n in POLICY_NAMES_ACCEPTED {
            assert_eq!(by_name(n).unwrap().name(), *n);
            let ac = format!("{n}{AC_SUFFIX}");
            assert_eq!(by_name(&ac).unwrap().name(), ac);
        }
        assert!(matches!(
            by_name("xen4+ac+ac"),
            Err(PolicyError::Unknown(_))
        ));
    }
}
