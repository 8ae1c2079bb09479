//! Stock Xen (4.6+): `simple_precopy_policy`.

use super::{Decision, Policy, RoundFacts};
use crate::bitmap::Bitmap;

#[derive(Debug, Clone, Copy)]
pub struct Xen4Params {
    /// Live rounds at most (SPP_MAX_ITERATIONS).
    pub max_rounds: u32,
    /// Stop when fewer pages than this are dirty (SPP_TARGET_DIRTY_COUNT).
    pub target_dirty: u64,
}

impl Default for Xen4Params {
    fn default() -> Self {
        Xen4Params {
            max_rounds: 5,
            target_dirty: 50,
        }
    }
}

pub struct Xen4 {
    p: Xen4Params,
}

impl Xen4 {
    pub fn new(p: Xen4Params) -> Self {
        Xen4 { p }
    }
}

impl Policy for Xen4 {
    fn name(&self) -> &'static str {
        "xen4"
    }
    fn skip_redirtied(&self) -> bool {
        false
    }
    fn plan(&mut self, f: &RoundFacts, dirty: &mut Bitmap, _skipped: &Bitmap) -> Decision {
        let rounds_done = f.round + 1;
        if rounds_done >= self.p.max_rounds {
            // Xen stops before the CLEAN: the dirty set goes to the final round.
            Decision::StopAndCopy
        } else if dirty.count() < self.p.target_dirty {
            Decision::LastLive
        } else {
            Decision::Continue
        }
    }
}
