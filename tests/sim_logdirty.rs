//! Log-dirty on the simulated host, in both tracking modes: CLEAN reports
//! exactly the pages written since the previous CLEAN, PEEK does not clear,
//! a paused guest writes nothing, and no write is ever lost to a CLEAN that
//! races with it.

mod sim_util;

use rxmigrate::hv::sim::{written_between, TrackingMode, WorkloadKind};
use rxmigrate::hv::{GuestType, Hypervisor};
use sim_util::*;

fn exact_clean_and_peek(t: GuestType, w: WorkloadKind, mode: TrackingMode) {
    let mut th = TestHost::new();
    let c = cfg("exact", t, 4, w, mode);
    let dom = th.create(&c);
    let h = &th.host;
    assert_eq!(h.tracking_mode(dom).unwrap(), Some(mode));
    h.run_until(dom, 100).unwrap();
    h.logdirty_enable(dom).unwrap();
    let mut b = bitmap_for(h, dom);

    // Steps 100..600: the CLEAN holds exactly the pages written.
    h.run_until(dom, 600).unwrap();
    let n = h.logdirty_clean(dom, &mut b, false).unwrap();
    let want1 = written_between(&c, 100, 600).unwrap();
    assert!(want1.count() > 10, "workload wrote too little to test");
    assert_eq!(b, want1, "{mode} {t}: first CLEAN");
    assert_eq!(n, want1.count());
    let first = b.clone();

    // Steps 600..1100: pages from the first round are absent unless written again.
    h.run_until(dom, 1100).unwrap();
    h.logdirty_clean(dom, &mut b, false).unwrap();
    let want2 = written_between(&c, 600, 1100).unwrap();
    assert_eq!(b, want2, "{mode} {t}: second CLEAN");
    let mut only_first = first.clone();
    only_first.and_not(&want2);
    assert!(
        only_first.any(),
        "test needs pages written only in the first round"
    );
    let mut leaked = only_first.clone();
    leaked.and_with(&b);
    assert!(
        !leaked.any(),
        "{mode} {t}: pages reported again without a write: {leaked:?}"
    );

    // PEEK reads without clearing.
    h.run_until(dom, 1500).unwrap();
    let want3 = written_between(&c, 1100, 1500).unwrap();
    let mut p1 = bitmap_for(h, dom);
    let mut p2 = bitmap_for(h, dom);
    h.logdirty_peek(dom, &mut p1).unwrap();
    h.logdirty_peek(dom, &mut p2).unwrap();
    assert_eq!(p1, want3, "{mode} {t}: PEEK");
    assert_eq!(p2, want3, "{mode} {t}: second PEEK");
    h.logdirty_clean(dom, &mut b, false).unwrap();
    assert_eq!(b, want3, "{mode} {t}: CLEAN after PEEK");
    // Paused: nothing more.
    assert_eq!(h.logdirty_clean(dom, &mut b, true).unwrap(), 0);
}

#[test]
fn clean_is_exact_and_peek_does_not_clear_pv() {
    for mode in MODES {
        exact_clean_and_peek(GuestType::Pv, WorkloadKind::Uniform, mode);
        exact_clean_and_peek(GuestType::Pv, WorkloadKind::PhaseChange, mode);
    }
}

#[test]
fn clean_is_exact_and_peek_does_not_clear_hvm() {
    for mode in MODES {
        exact_clean_and_peek(GuestType::Hvm, WorkloadKind::HotSet, mode);
        exact_clean_and_peek(GuestType::Hvm, WorkloadKind::Streaming, mode);
    }
}

/// Pre-copy against a guest writing as fast as it can: copy everything, then
/// repeatedly CLEAN and copy what it reports; after a final CLEAN of the
/// paused guest the copy must equal the guest's RAM exactly. Any write lost
/// by a CLEAN racing with it leaves a stale page in the copy.
fn no_write_lost(t: GuestType, w: WorkloadKind, mode: TrackingMode) {
    let mut th = TestHost::new();
    let dom = th.create(&cfg("race", t, 8, w, mode));
    let h = &th.host;
    h.unpause(dom).unwrap();
    let pages = h.domain_info(dom).unwrap().p2m_size();
    let g = gfns(h, dom);
    let all: Vec<u64> = (0..pages).collect();
    let mut copy = vec![0u8; pages as usize * 4096];
    h.logdirty_enable(dom).unwrap();
    copy_pages(h, dom, &g, &all, &mut copy);
    let mut b = bitmap_for(h, dom);
    let mut seen = 0;
    for _ in 0..30 {
        // Let the guest make progress (it keeps running during the CLEAN too).
        let s = h.step(dom).unwrap();
        while h.step(dom).unwrap() < s + 200 {
            std::thread::yield_now();
        }
        seen += h.logdirty_clean(dom, &mut b, false).unwrap();
        let dirty: Vec<u64> = b.iter_ones().collect();
        copy_pages(h, dom, &g, &dirty, &mut copy);
    }
    let before = h.step(dom).unwrap();
    h.pause(dom).unwrap();
    h.logdirty_clean(dom, &mut b, true).unwrap();
    let dirty: Vec<u64> = b.iter_ones().collect();
    copy_pages(h, dom, &g, &dirty, &mut copy);
    assert!(h.step(dom).unwrap() >= before);
    assert!(
        seen > 0,
        "{mode} {t} {w}: the guest wrote nothing during the rounds"
    );

    let mut now = vec![0u8; pages as usize * 4096];
    copy_pages(h, dom, &g, &all, &mut now);
    let stale: Vec<u64> = (0..pages)
        .filter(|&p| {
            let o = p as usize * 4096;
            copy[o..o + 4096] != now[o..o + 4096]
        })
        .collect();
    assert!(
        stale.is_empty(),
        "{mode} {t} {w}: writes lost for pfns {stale:?}"
    );
    // And the guest itself is still what the reference says.
    let r = rxmigrate::hv::sim::check(h, dom).unwrap();
    assert!(r.ok(), "{r}");
}

#[test]
fn no_write_is_lost_to_a_concurrent_clean() {
    for mode in MODES {
        no_write_lost(GuestType::Pv, WorkloadKind::Uniform, mode);
        no_write_lost(GuestType::Hvm, WorkloadKind::Streaming, mode);
        no_write_lost(GuestType::Pv, WorkloadKind::HotSet, mode);
    }
}

#[test]
fn a_paused_guest_writes_nothing() {
    for mode in MODES {
        let mut th = TestHost::new();
        let dom = th.create(&cfg(
            "paused",
            GuestType::Pv,
            4,
            WorkloadKind::Uniform,
            mode,
        ));
        let h = &th.host;
        h.unpause(dom).unwrap();
        h.logdirty_enable(dom).unwrap();
        h.pause(dom).unwrap();
        assert!(h.domain_info(dom).unwrap().paused);
        let step = h.step(dom).unwrap();
        let mut b = bitmap_for(h, dom);
        h.logdirty_clean(dom, &mut b, false).unwrap(); // writes before the pause
        let g = gfns(h, dom);
        let all: Vec<u64> = (0..g.len() as u64).collect();
        let mut snap = vec![0u8; g.len() * 4096];
        copy_pages(h, dom, &g, &all, &mut snap);
        for _ in 0..20 {
            assert_eq!(h.logdirty_clean(dom, &mut b, false).unwrap(), 0, "{mode}");
            std::thread::yield_now();
        }
        let mut again = vec![0u8; g.len() * 4096];
        copy_pages(h, dom, &g, &all, &mut again);
        assert!(snap == again, "{mode}: RAM changed while paused");
        assert_eq!(h.step(dom).unwrap(), step, "{mode}: steps ran while paused");
    }
}

#[test]
fn clean_requires_logdirty_and_a_matching_bitmap() {
    let mut th = TestHost::new();
    let dom = th.create(&cfg(
        "ld",
        GuestType::Hvm,
        2,
        WorkloadKind::Idle,
        TrackingMode::Soft,
    ));
    let h = &th.host;
    let mut b = bitmap_for(h, dom);
    assert!(
        h.logdirty_clean(dom, &mut b, false).is_err(),
        "CLEAN without log-dirty"
    );
    h.logdirty_enable(dom).unwrap();
    assert!(
        h.logdirty_enable(dom).is_err(),
        "second enable must fail as on Xen"
    );
    let mut wrong = rxmigrate::bitmap::Bitmap::new(b.len() + 1);
    assert!(h.logdirty_clean(dom, &mut wrong, false).is_err());
    h.logdirty_disable(dom).unwrap();
    h.logdirty_enable(dom).unwrap();
}
