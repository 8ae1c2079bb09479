//! What one log-dirty CLEAN of a 1 GiB guest costs on the simulated host, in
//! both tracking modes, with nothing, a quarter and all of RAM written since
//! the last CLEAN. A measurement, not a check: run it with
//!   cargo test --release --test sim_clean_cost -- --ignored --nocapture

mod sim_util;

use rxmigrate::hv::sim::{TrackingMode, WorkloadKind};
use rxmigrate::hv::{GuestType, Hypervisor};
use sim_util::*;
use std::time::Instant;

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn clean_of_a_1gib_guest() {
    for mode in [TrackingMode::Uffd, TrackingMode::Soft] {
        let mut th = TestHost::new();
        let c = cfg("cost", GuestType::Pv, 1024, WorkloadKind::Streaming, mode);
        let dom = th.create(&c);
        let h = &th.host;
        let pages = c.pages();
        h.logdirty_enable(dom).unwrap();
        let mut b = bitmap_for(h, dom);
        h.logdirty_clean(dom, &mut b, false).unwrap();
        let mut step = 0;
        // The streaming workload rewrites one page per step.
        for (label, writes) in [("none", 0), ("1/4", pages / 4), ("all", pages)] {
            step += writes;
            h.run_until(dom, step).unwrap();
            b.clear_all();
            let t = Instant::now();
            let n = h.logdirty_clean(dom, &mut b, false).unwrap();
            let dt = t.elapsed();
            println!(
                "{mode:?}: CLEAN of {pages} pages, {label:>4} written: {n:>6} dirty in {:.3} ms",
                dt.as_secs_f64() * 1e3
            );
        }
    }
}
