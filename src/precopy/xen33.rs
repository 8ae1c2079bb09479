//! Xen 3.3's live loop (`xc_domain_save`), the paper's baseline.

use super::{Decision, Policy, RoundFacts};
use crate::bitmap::Bitmap;

#[derive(Debug, Clone, Copy)]
pub struct Xen33Params {
    /// DEF_MAX_ITERS.
    pub max_rounds: u32,
    /// Stop when a round sent plus skipped fewer pages than this.
    pub min_progress: u64,
    /// DEF_MAX_FACTOR: never send more than this many times guest memory.
    pub max_factor: u64,
}

impl Default for Xen33Params {
    fn default() -> Self {
        Xen33Params {
            max_rounds: 29,
            min_progress: 50,
            max_factor: 3,
        }
    }
}

pub struct Xen33 {
    p: Xen33Params,
}

impl Xen33 {
    pub fn new(p: Xen33Params) -> Self {
        Xen33 { p }
    }
}

impl Policy for Xen33 {
    fn name(&self) -> &'static str {
        "xen33"
    }
    fn skip_redirtied(&self) -> bool {
        true
    }
    fn plan(&mut self, f: &RoundFacts, _dirty: &mut Bitmap, _skipped: &Bitmap) -> Decision {
        // `iter` in Xen 3.3 counts from 1 for the first (full) round.
        let iter = f.round + 1;
        if iter >= self.p.max_rounds
            || f.sent + f.skipped < self.p.min_progress
            || f.total_sent > f.p2m_size.saturating_mul(self.p.max_factor)
        {
            Decision::StopAndCopy
        } else {
            Decision::Continue
        }
    }
}
