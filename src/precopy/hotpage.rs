//! The paper's improvement: pages dirtied round after round are *hot* and go
//! only in the final round; a hot page that cools down for a whole round is
//! released and sent live, so the final round carries only pages still being
//! written.

use super::{Decision, Policy, PolicyError, RoundFacts};
use crate::bitmap::Bitmap;

#[derive(Debug, Clone, Copy)]
pub struct HotPageParams {
    /// Consecutive dirty observations that make a page hot.
    pub hot_threshold: u8,
    /// Live rounds at most.
    pub max_rounds: u32,
    /// Stop when fewer than this many non-hot pages are dirty.
    pub target_dirty: u64,
    /// Never send more than this many times guest memory.
    pub max_factor: u64,
    /// Release hot pages that stayed clean for a round (beyond the paper).
    pub release_cooled: bool,
}

impl Default for HotPageParams {
    fn default() -> Self {
        HotPageParams {
            hot_threshold: 2,
            max_rounds: 5,
            target_dirty: 50,
            max_factor: 3,
            release_cooled: true,
        }
    }
}

pub struct HotPage {
    p: HotPageParams,
    /// Consecutive observations dirty, per pfn (saturating).
    streak: Vec<u8>,
    hot: Bitmap,
}

impl HotPage {
    pub fn new(p: HotPageParams) -> Result<Self, PolicyError> {
        if p.hot_threshold == 0 {
            return Err(PolicyError::BadParam {
                name: "hot-threshold",
                msg: "must be at least 1".into(),
            });
        }
        if p.max_rounds == 0 {
            return Err(PolicyError::BadParam {
                name: "max-rounds",
                msg: "must be at least 1".into(),
            });
        }
        Ok(HotPage {
            p,
            streak: Vec::new(),
            hot: Bitmap::new(0),
        })
    }

    /// Pages currently in the hot set.
    pub fn hot(&self) -> &Bitmap {
        &self.hot
    }
}

impl Policy for HotPage {
    fn name(&self) -> &'static str {
        "hotpage"
    }
    fn skip_redirtied(&self) -> bool {
        // A page skipped by the PEEK is a second observation in the same way
        // as a second CLEAN.
        true
    }
    fn plan(&mut self, f: &RoundFacts, dirty: &mut Bitmap, skipped: &Bitmap) -> Decision {
        let n = dirty.len();
        if self.hot.len() != n {
            self.hot = Bitmap::new(n);
            self.streak = vec![0; n as usize];
        }
        for (wi, (dw, sw)) in dirty
            .words_mut()
            .iter_mut()
            .zip(skipped.words())
            .enumerate()
        {
            let hot_w = &mut self.hot.words_mut()[wi];
            let seen = *dw | *sw;
            let base = wi * 64;
            // Reset streaks of pages not seen this round, word at a time.
            for b in 0..64usize {
                let i = base + b;
                if i >= self.streak.len() {
                    break;
                }
                let bit = 1u64 << b;
                if seen & bit != 0 {
                    let s = self.streak[i].saturating_add(1);
                    self.streak[i] = s;
                    if s >= self.p.hot_threshold {
                        *hot_w |= bit;
                    }
                } else {
                    self.streak[i] = 0;
                    if self.p.release_cooled && *hot_w & bit != 0 {
                        // Clean for a whole round: send it live, drop it from the hot set.
                        *hot_w &= !bit;
                        *dw |= bit;
                    }
                }
            }
            // Hot pages are held, not sent live.
            *dw &= !*hot_w;
        }
        let rounds_done = f.round + 1;
        if rounds_done >= self.p.max_rounds
            || f.total_sent > f.p2m_size.saturating_mul(self.p.max_factor)
        {
            Decision::StopAndCopy
        } else if dirty.count() < self.p.target_dirty {
            Decision::LastLive
        } else {
            Decision::Continue
        }
    }
    fn held(&self) -> Option<&Bitmap> {
        Some(&self.hot)
    }
}
