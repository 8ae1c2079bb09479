//! The contract every backend keeps, for both traits: one suite, run on the
//! simulated host here (and so in CI) and on a real Xen in the lab.
//!
//! On Xen (as root in dom0):
//!
//! ```sh
//! RXMIGRATE_HV=xen cargo test --test hv_conformance -- --nocapture --test-threads=1 xen
//! ```
//!
//! or, with the test binary built elsewhere (`cargo test --test
//! hv_conformance --no-run` prints its path), `RXMIGRATE_HV=xen
//! ./hv_conformance-HASH --nocapture --test-threads=1 xen`. Without Xen the
//! Xen case prints "skipped: no Xen (…)"; with `RXMIGRATE_HV=xen` set and
//! no usable Xen it fails.

mod sim_util;

use rxmigrate::bitmap::Bitmap;
use rxmigrate::hv::sim::{GuestConfig, WorkloadKind};
use rxmigrate::hv::*;
use sim_util::TestHost;

/// HVM param indices (xen/include/public/hvm/params.h).
const HVM_PARAM_STORE_EVTCHN: u32 = 2;

/// Destroys the domains a suite made, also when it fails half-way.
struct Made<'a> {
    host: Host<'a>,
    doms: Vec<DomId>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        for d in self.doms.drain(..) {
            if let Err(e) = self.host.hv.destroy(d) {
                eprintln!("conformance: destroying domain {d}: {e}");
            }
        }
    }
}

fn spec(name: &str, t: GuestType) -> DomainSpec {
    DomainSpec {
        name: name.into(),
        guest_type: t,
        // 4 MiB, 2 vCPUs.
        max_pfn: 1023,
        max_vcpu_id: 1,
        config: None,
    }
}

fn assert_esrch<T: std::fmt::Debug>(what: &str, r: Result<T>) {
    match r {
        Ok(v) => panic!("{what} of a missing domain succeeded: {v:?}"),
        Err(e) => assert_eq!(e.errno(), Some(Errno::ESRCH), "{what}: {e}"),
    }
}

/// The suite: builds, fills, tracks, reads and destroys domains of both
/// types on `host`; `tag` keeps its domain names apart from others'.
fn conformance(host: Host<'_>, tag: &str) {
    let (hv, ts) = (host.hv, host.ts);
    let mut made = Made {
        host,
        doms: Vec::new(),
    };
    for t in [GuestType::Pv, GuestType::Hvm] {
        let name = format!("rxmigrate-conformance-{tag}-{t}");
        // Build: an empty, paused domain with its rings' channels and its
        // xenstore directory.
        let built = ts.build_domain(&spec(&name, t)).expect("build_domain");
        let d = built.domid;
        made.doms.push(d);
        let ch = built.channels;
        assert!(ch.store_port != 0 && ch.console_port != 0, "{ch:?}");
        assert_ne!(ch.store_port, ch.console_port);
        let info = hv.domain_info(d).expect("domain_info");
        assert_eq!(info.guest_type, t);
        assert_eq!(info.max_vcpu_id, 1);
        assert!(info.paused, "a built domain starts paused");
        assert_eq!(hv.lookup(&name).expect("lookup"), d);
        assert!(hv.list_domains().unwrap().iter().any(|i| i.domid == d));
        let dp = format!("/local/domain/{d}");
        assert_eq!(
            ts.xenstore_read(&format!("{dp}/name")).unwrap().as_deref(),
            Some(name.as_str())
        );
        assert_eq!(ts.domain_config(d).unwrap().name(), Some(name.as_str()));
        // Rename: the hypervisor's view and xenstore agree.
        let renamed = format!("{name}-r");
        hv.rename(d, &renamed).expect("rename");
        assert_eq!(hv.domain_info(d).unwrap().name, renamed);
        assert_eq!(
            ts.xenstore_read(&format!("{dp}/name")).unwrap().as_deref(),
            Some(renamed.as_str())
        );
        assert!(hv.domain_max_memory(d).unwrap() >= 1024 * 4096);

        // Populate and map.
        let pfns: Vec<u64> = (0..256).collect();
        let gfns = hv.populate(d, &pfns).expect("populate");
        assert_eq!(gfns.len(), pfns.len());
        if t == GuestType::Hvm {
            assert_eq!(gfns, pfns, "HVM gfns are pfns");
        }
        {
            let m = hv.map_pages(d, &gfns, false).expect("map");
            assert_eq!(m.len(), gfns.len());
            assert!(
                (0..m.len()).all(|i| m.page(i).is_zero()),
                "populated frames are zero"
            );
        }
        {
            let mut m = hv.map_pages(d, &gfns[..4], true).expect("map writable");
            for i in 0..4 {
                m.page_mut(i).fill(0x10 + i as u8);
            }
        }
        let m = hv.map_pages(d, &gfns[..4], false).unwrap();
        for i in 0..4 {
            assert!(
                m.page(i).matches(&[0x10 + i as u8; 4096]),
                "page {i} read back"
            );
        }
        drop(m);
        let mut types = vec![PageType::XTAB; gfns.len()];
        hv.page_types(d, &gfns, &mut types).expect("page_types");
        assert!(types.iter().all(|&ty| ty != PageType::XTAB), "{types:?}");

        // Log-dirty: a paused domain writes nothing; CLEAN empties the
        // log, PEEK leaves it as it is. A PV domain's log-dirty is shadow
        // paging's: a hypervisor built without it (Debian's 4.20) must
        // refuse it as NoShadowPaging, which is what rxmigrate reports.
        let size = hv.domain_info(d).unwrap().p2m_size();
        if t == GuestType::Pv && !hv.shadow_paging().expect("shadow_paging") {
            match hv.logdirty_enable(d) {
                Err(HvError::NoShadowPaging { dom }) if dom == d => {
                    println!("expected difference: PV log-dirty refused (no shadow paging)")
                }
                r => panic!("PV log-dirty without shadow paging: {r:?}, not NoShadowPaging"),
            }
        } else {
            hv.logdirty_enable(d).expect("logdirty_enable");
            let mut bm = Bitmap::new(size);
            let n = hv.logdirty_clean(d, &mut bm, false).expect("clean");
            assert_eq!(n, bm.count());
            let n = hv.logdirty_clean(d, &mut bm, false).unwrap();
            assert_eq!(
                (n, bm.count()),
                (0, 0),
                "a paused domain's log after a CLEAN"
            );
            let mut peek = Bitmap::new(size);
            assert_eq!(hv.logdirty_peek(d, &mut peek).unwrap(), 0);
            assert_eq!(hv.logdirty_peek(d, &mut peek).unwrap(), peek.count());
            hv.logdirty_disable(d).expect("logdirty_disable");
        }

        // Pause is idempotent on a paused domain.
        hv.pause(d).expect("pause");
        assert!(hv.domain_info(d).unwrap().paused);

        // vCPU and platform context round trips.
        // TSC: mode and frequency round-trip. The elapsed time is read at
        // the call, and Xen counts each set in the incarnation (a restore
        // is a new incarnation), so those two only must not go backwards.
        let tsc = hv.tsc_info(d).expect("tsc_info");
        hv.set_tsc_info(d, &tsc).expect("set_tsc_info");
        let back = hv.tsc_info(d).unwrap();
        assert_eq!(
            (back.mode, back.khz),
            (tsc.mode, tsc.khz),
            "{back:?} after {tsc:?}"
        );
        assert!(
            back.incarnation >= tsc.incarnation,
            "{back:?} after {tsc:?}"
        );
        let pol = hv.cpu_policy(d).expect("cpu_policy");
        hv.set_cpu_policy(d, &pol).expect("set_cpu_policy");
        assert_eq!(hv.cpu_policy(d).unwrap(), pol);
        match t {
            GuestType::Pv => {
                assert_eq!(hv.guest_width(d).unwrap(), 8);
                hv.set_guest_width(d, 8).expect("set_guest_width");
                assert!(hv.shared_info_frame(d).is_ok());
                let si = hv.shared_info(d).expect("shared_info");
                hv.set_shared_info(d, &si).expect("set_shared_info");
                assert_eq!(hv.shared_info(d).unwrap(), si);
                assert!(hv.hvm_context(d).is_err(), "a PV domain has no HVM context");
                // Pinning: zeroed frames are valid L1 tables (no entry
                // present), pinned together; a pinned table cannot be
                // pinned again, and a frame of garbage (gfns[1] is all
                // 0x11: every entry present, naming no frame of the
                // domain) is no page table. A batch with one bad table
                // fails whole.
                let zeroed: Vec<(u64, u8)> = gfns[8..12].iter().map(|&g| (g, 1)).collect();
                hv.pin_tables(d, &zeroed).expect("pin_tables of zeroed L1s");
                assert!(hv.pin_table(d, gfns[8], 1).is_err(), "pinned twice");
                assert!(hv.pin_table(d, gfns[1], 1).is_err(), "garbage pinned as L1");
                let e = hv
                    .pin_tables(d, &[(gfns[12], 1), (gfns[1], 1)])
                    .expect_err("a batch with a garbage L1");
                println!("a bad batch of pins: {e}");
            }
            GuestType::Hvm => {
                hv.set_hvm_param(d, HVM_PARAM_STORE_EVTCHN, ch.store_port.into())
                    .expect("set_hvm_param");
                assert_eq!(
                    hv.hvm_param(d, HVM_PARAM_STORE_EVTCHN).unwrap(),
                    u64::from(ch.store_port)
                );
                // The same records come back; their contents may hold
                // clocks (the vCPU's TSC, timers) that Xen reads at the call.
                let ctx = hv.hvm_context(d).expect("hvm_context");
                hv.set_hvm_context(d, &ctx).expect("set_hvm_context");
                let shape = |blob: &[u8]| -> Vec<(u16, u16, usize)> {
                    rxmigrate::stream::hvm_context::parse(blob)
                        .expect("an HVM context Xen's parser accepts")
                        .iter()
                        .map(|e| (e.typecode, e.instance, e.data.len()))
                        .collect()
                };
                assert_eq!(shape(&hv.hvm_context(d).unwrap()), shape(&ctx));
                assert!(hv.pv_vcpu(d, 0).is_err(), "an HVM domain has no PV vCPU");
            }
        }

        // The toolstack's restore tail: grants, introduction.
        let rings = Rings {
            store_gfn: gfns[2],
            console_gfn: gfns[3],
        };
        ts.seed_grant_table(
            d,
            &GrantSeed {
                console_gfn: rings.console_gfn,
                console_domid: 0,
                store_gfn: rings.store_gfn,
                store_domid: 0,
            },
        )
        .expect("seed_grant_table");
        ts.restore_finished(d, &rings).expect("restore_finished");
        let read = |p: &str| ts.xenstore_read(&format!("{dp}/{p}")).unwrap();
        assert_eq!(read("store/ring-ref"), Some(rings.store_gfn.to_string()));
        assert_eq!(read("store/port"), Some(ch.store_port.to_string()));
        assert_eq!(
            read("console/ring-ref"),
            Some(rings.console_gfn.to_string())
        );
        assert_eq!(read("console/port"), Some(ch.console_port.to_string()));
        if t == GuestType::Pv {
            assert_eq!(ts.device_model_state(d).unwrap(), None);
            ts.start_platform(d, None, None)
                .expect("start_platform (PV)");
        }

        // Destroyed, the domain is gone for both traits.
        hv.destroy(d).expect("destroy");
        made.doms.retain(|&x| x != d);
        assert!(!hv.list_domains().unwrap().iter().any(|i| i.domid == d));
        // Xen tears a destroyed domain down in the background (calls on it
        // may answer EBUSY meanwhile): the ESRCH contract is checked on an
        // id no domain has.
        let unused = (1..0x7ff0)
            .rev()
            .find(|id| !hv.list_domains().unwrap().iter().any(|i| i.domid == *id))
            .expect("a free domain id");
        missing_domain_errors(host, unused);
    }
}

/// Every call about a domain that does not exist says ESRCH.
fn missing_domain_errors(host: Host<'_>, d: DomId) {
    let (hv, ts) = (host.hv, host.ts);
    assert_esrch("domain_info", hv.domain_info(d));
    assert_esrch("pause", hv.pause(d));
    assert_esrch("unpause", hv.unpause(d));
    assert_esrch("populate", hv.populate(d, &[0]));
    assert_esrch("hvm_param", hv.hvm_param(d, 1));
    assert_esrch("tsc_info", hv.tsc_info(d));
    assert_esrch("logdirty_enable", hv.logdirty_enable(d));
    assert_esrch("domain_config", ts.domain_config(d));
    assert_esrch("device_model_state", ts.device_model_state(d));
    let seed = GrantSeed {
        console_gfn: 1,
        console_domid: 0,
        store_gfn: 2,
        store_domid: 0,
    };
    assert_esrch("seed_grant_table", ts.seed_grant_table(d, &seed));
    assert!(hv.lookup(&format!("no-such-domain-{d}")).is_err());
}

#[test]
fn sim_conforms() {
    let b = TestHost::new();
    conformance(Host::of(&b.host), "sim");
}

/// A host without shadow paging (Xen 4.20 as Debian builds it) refuses PV
/// log-dirty and passes the rest of the suite.
#[test]
fn sim_conforms_without_shadow_paging() {
    let b = TestHost::new();
    b.host.set_shadow_paging(false).unwrap();
    assert!(!b.host.shadow_paging().unwrap());
    conformance(Host::of(&b.host), "sim-noshadow");
}

/// What only the simulated host can show: a running guest's lifecycle and
/// an HVM device model's state through start_platform and back.
#[test]
fn sim_lifecycle_and_device_model_round_trip() {
    let mut a = TestHost::new();
    let mut c = GuestConfig::new("life", GuestType::Hvm, 16, WorkloadKind::Uniform);
    c.seed = 5;
    let d = a.create(&c);
    let h = &a.host;
    h.pause(d).unwrap();
    assert!(h.domain_info(d).unwrap().paused);
    h.unpause(d).unwrap();
    assert!(!h.domain_info(d).unwrap().paused);
    h.suspend(d).unwrap();
    assert_eq!(
        h.domain_info(d).unwrap().shutdown,
        Some(ShutdownReason::Suspend)
    );
    let dm = h.device_model_state(d).unwrap().expect("device model");
    h.resume(d, true).unwrap();
    assert_eq!(h.domain_info(d).unwrap().shutdown, None);
    // A sim-created guest is introduced at creation.
    assert!(h.toolstack_state(d).unwrap().introduced.is_some());

    let b = TestHost::new();
    let built = b.host.build_domain(&spec("dm", GuestType::Hvm)).unwrap();
    let nd = built.domid;
    assert_eq!(b.host.device_model_state(nd).unwrap(), None);
    b.host.start_platform(nd, Some(&dm), None).unwrap();
    assert_eq!(b.host.device_model_state(nd).unwrap(), Some(dm.clone()));
    // Starting a device model for a PVH guest is refused.
    let pvh = DomainConfig::from_json(serde_json::json!({"c_info": {"type": "pvh"}})).unwrap();
    assert!(b.host.start_platform(nd, Some(&dm), Some(&pvh)).is_err());
    b.host.destroy(nd).unwrap();
}

#[test]
fn xen_conforms() {
    let asked = std::env::var("RXMIGRATE_HV").ok().as_deref() == Some("xen");
    if !asked && !xen::XenHost::present() {
        println!(
            "skipped: no Xen ({} is missing; set RXMIGRATE_HV=xen in a dom0 to run it)",
            xen_sys::PRIVCMD
        );
        return;
    }
    let x = match xen::XenHost::open() {
        Ok(x) => x,
        Err(e) if !asked => {
            println!("skipped: no Xen ({e})");
            return;
        }
        Err(e) => panic!("RXMIGRATE_HV=xen but Xen cannot be opened: {e}"),
    };
    conformance(Host::of(&x), &format!("{}", std::process::id()));
}
