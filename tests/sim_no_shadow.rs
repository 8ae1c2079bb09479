//! A host whose hypervisor has no shadow paging (CONFIG_SHADOW_PAGING=n,
//! as Debian 13's Xen 4.20): a live save of a PV guest is refused before
//! it starts, with the reason and what works instead, and the guest is
//! left running with log-dirty off; a non-live save still works, and so
//! does a live save of an HVM guest (HAP log-dirty).

mod sim_util;

use rxmigrate::hv::sim::{TrackingMode, WorkloadKind};
use rxmigrate::hv::{DomId, GuestType, HvError, Hypervisor};
use rxmigrate::save::{DirectHooks, SaveOptions};
use sim_util::*;
use std::time::{Duration, Instant};

fn live_save(th: &TestHost, dom: DomId) -> Result<Vec<u8>, rxmigrate::migrate::MigrateError> {
    let mut p = rxmigrate::precopy::by_name("xen4").expect("policy");
    rxmigrate::migrate::save_image(
        &th.host,
        dom,
        Vec::new(),
        p.as_mut(),
        SaveOptions { live: true },
        &mut DirectHooks,
        false,
    )
    .map(|(_, img)| img)
}

/// The guest makes progress: its step count grows (bounded wait).
fn assert_runs(th: &TestHost, dom: DomId) {
    let h = &th.host;
    assert_eq!(h.state_name(dom).unwrap(), "running");
    let info = h.domain_info(dom).unwrap();
    assert!(!info.paused && info.shutdown.is_none(), "{info:?}");
    let s0 = h.step(dom).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.step(dom).unwrap() == s0 {
        assert!(Instant::now() < deadline, "guest {dom} made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn live_pv_save_without_shadow_paging_is_refused_and_the_guest_runs_on() {
    let mut th = TestHost::new();
    th.host.set_shadow_paging(false).unwrap();
    assert!(!th.host.shadow_paging().unwrap());
    let mut c = cfg(
        "pv",
        GuestType::Pv,
        4,
        WorkloadKind::Uniform,
        TrackingMode::Soft,
    );
    c.paused = false;
    let dom = th.create(&c);
    assert_runs(&th, dom);

    let err = live_save(&th, dom).unwrap_err().to_string();
    for want in [
        &format!("live migration of PV guest {dom} needs shadow paging"),
        "CONFIG_SHADOW_PAGING=n",
        "a non-live save (rxmigrate save without --live / xl save) works",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    // Refused before it started: not a byte of stream was written.
    let mut raw = Vec::new();
    let mut p = rxmigrate::precopy::by_name("xen4").expect("policy");
    let e = rxmigrate::save::save(
        &th.host,
        dom,
        &mut raw,
        p.as_mut(),
        SaveOptions { live: true },
        &mut DirectHooks,
    )
    .map(|_| ())
    .unwrap_err();
    assert!(e.to_string().contains("needs shadow paging"), "{e}");
    assert!(
        raw.is_empty(),
        "{} bytes written before the refusal",
        raw.len()
    );

    // Untouched: still running, never suspended, log-dirty off (enabling it
    // on a host with shadow paging succeeds, which it would not were it
    // left on).
    assert_runs(&th, dom);
    th.host.set_shadow_paging(true).unwrap();
    th.host.logdirty_enable(dom).unwrap();
    th.host.logdirty_disable(dom).unwrap();
    th.host.set_shadow_paging(false).unwrap();

    // Log-dirty itself fails the same way (what Xen's EOPNOTSUPP becomes).
    let e = th.host.logdirty_enable(dom).unwrap_err();
    assert!(
        matches!(e, HvError::NoShadowPaging { dom: d } if d == dom),
        "{e}"
    );
    assert_eq!(e.errno(), Some(rxmigrate::hv::Errno::EOPNOTSUPP));
    assert_runs(&th, dom);

    // What the message says works: a non-live save.
    let img = th.save_image(dom);
    assert!(!img.is_empty());
}

#[test]
fn live_hvm_save_needs_no_shadow_paging() {
    let mut th = TestHost::new();
    th.host.set_shadow_paging(false).unwrap();
    let mut c = cfg(
        "hvm",
        GuestType::Hvm,
        4,
        WorkloadKind::Uniform,
        TrackingMode::Soft,
    );
    c.paused = false;
    let dom = th.create(&c);
    let img = live_save(&th, dom).expect("live HVM save on a host without shadow paging");
    assert!(!img.is_empty());
}
