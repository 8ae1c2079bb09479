//! Sim guests as Xen would present them: determinism, PV structures,
//! suspend / resume, crashes.

mod sim_util;

use rxmigrate::hv::sim::{check, compare, Reference, TrackingMode, WorkloadKind};
use rxmigrate::hv::{GuestType, Hypervisor, PageType, ShutdownReason, INVALID_MFN};
use rxmigrate::x86::{shared_info, vcpu};
use sim_util::*;
use std::collections::HashSet;

#[test]
fn same_seed_and_steps_give_identical_ram() {
    for (t, w) in [
        (GuestType::Pv, WorkloadKind::PhaseChange),
        (GuestType::Hvm, WorkloadKind::ReadMostly),
        (GuestType::Pv, WorkloadKind::Streaming),
    ] {
        // Two hosts, so the PV guests' machine frames differ entirely.
        let mut a = TestHost::new();
        let mut b = TestHost::new();
        let c = cfg("twin", t, 4, w, TrackingMode::Uffd);
        let mut c2 = c.clone();
        c2.tracking = Some(TrackingMode::Soft);
        let da = a.create(&c);
        let db = b.create(&c2);
        a.host.run_until(da, 20_000).unwrap();
        b.host.run_until(db, 20_000).unwrap();
        let r = compare(&a.host, da, &b.host, db).unwrap();
        assert!(r.ok(), "{t} {w}: {r}");
        assert!(check(&a.host, da).unwrap().ok());

        // A different seed must show up as a difference.
        let mut c3 = c.clone();
        c3.name = "other".into();
        c3.seed += 1;
        let dc = b.create(&c3);
        b.host.run_until(dc, 20_000).unwrap();
        let r = compare(&a.host, da, &b.host, dc).unwrap();
        if w != WorkloadKind::Idle {
            assert!(!r.ok(), "{t} {w}: different seeds compared equal");
        }
    }
}

#[test]
fn oracle_notices_a_single_corrupted_page() {
    let mut th = TestHost::new();
    let dom = th.create(&cfg(
        "corrupt",
        GuestType::Pv,
        2,
        WorkloadKind::HotSet,
        TrackingMode::Soft,
    ));
    let h = &th.host;
    h.run_until(dom, 3000).unwrap();
    assert!(check(h, dom).unwrap().ok());
    let p2m = h.pv_p2m(dom).unwrap();
    let pfn = p2m.p2m.len() as u64 - 3;
    {
        let mut m = h.map_pages(dom, &[p2m.p2m[pfn as usize]], true).unwrap();
        let mut page = m.page_mut(0);
        let w = page.read_u64(96);
        page.write_u64(96, w ^ (0x40 << 32));
    }
    let r = check(h, dom).unwrap();
    assert_eq!(r.n_differing, 1, "{r}");
    assert_eq!(r.differing, vec![pfn]);
}

#[test]
fn reference_runs_are_reproducible() {
    let c = cfg(
        "ref",
        GuestType::Hvm,
        2,
        WorkloadKind::Uniform,
        TrackingMode::Soft,
    );
    let mut a = Reference::new(&c).unwrap();
    let mut b = Reference::new(&c).unwrap();
    let wa = a.run_to(5000).unwrap();
    b.run_to(2000).unwrap();
    let mut wb = b.run_to(5000).unwrap();
    assert!(wa.count() >= wb.count());
    wb.and_not(&wa);
    assert!(!wb.any());
    assert_eq!(a.step(), b.step());
}

#[test]
fn pv_guest_has_consistent_p2m_page_tables_and_types() {
    let mut th = TestHost::new();
    let mut other = TestHost::new();
    let c = cfg(
        "pv",
        GuestType::Pv,
        4,
        WorkloadKind::Uniform,
        TrackingMode::Soft,
    );
    let dom = th.create(&c);
    let dom2 = other.create(&c);
    let h = &th.host;
    let info = h.domain_info(dom).unwrap();
    assert_eq!(info.guest_type, GuestType::Pv);
    assert_eq!(info.p2m_size(), 1024);
    assert_eq!(h.guest_width(dom).unwrap(), 8);
    assert!(h.set_guest_width(dom, 4).is_err(), "32-bit PV is refused");

    let p2m = h.pv_p2m(dom).unwrap();
    assert_eq!(p2m.p2m.len(), 1024);
    assert_eq!(p2m.frames.len(), 2, "1024 entries in 512-entry leaves");
    let distinct: HashSet<u64> = p2m.p2m.iter().copied().collect();
    assert_eq!(distinct.len(), 1024, "every pfn has its own mfn");
    assert!(!p2m.p2m.contains(&INVALID_MFN));
    assert!(
        p2m.p2m.iter().enumerate().all(|(p, &m)| m != p as u64),
        "mfn != pfn"
    );
    let p2m2 = other.host.pv_p2m(dom2).unwrap();
    assert_ne!(p2m.p2m, p2m2.p2m, "two hosts give different machine frames");
    // The P2M frames hold exactly the P2M.
    let leaf_mfns: Vec<u64> = p2m
        .frames
        .iter()
        .map(|&pfn| p2m.p2m[pfn as usize])
        .collect();
    let m = h.map_pages(dom, &leaf_mfns, false).unwrap();
    for (i, chunk) in p2m.p2m.chunks(512).enumerate() {
        for (e, &mfn) in chunk.iter().enumerate() {
            let got = m.page(i).read_u64(e * 8);
            assert_eq!(got, mfn);
        }
    }
    drop(m);

    // Types: one pinned L4 (cr3), and the tables below it.
    let mut types = vec![PageType::NOTAB; 1024];
    h.page_types(dom, &p2m.p2m, &mut types).unwrap();
    let count = |t: PageType| types.iter().filter(|&&x| x == t).count();
    assert_eq!(count(PageType(0xC)), 1, "one pinned L4");
    assert_eq!(count(PageType::L3TAB), 1);
    assert_eq!(count(PageType::L2TAB), 1);
    assert_eq!(count(PageType::L1TAB), 2);
    let basic = h.pv_vcpu(dom, 0).unwrap().basic;
    let ctx = vcpu::Context64::new(&basic).unwrap();
    let l4_pfn = types.iter().position(|&t| t == PageType(0xC)).unwrap();
    assert_eq!(ctx.cr3_frame(), p2m.p2m[l4_pfn], "cr3 is the pinned L4");
    assert_eq!(
        ctx.reg(vcpu::Reg::Rdx),
        p2m.p2m[0],
        "rdx is start_info's mfn"
    );
    // Every present entry of every table points at one of the guest's mfns.
    let tables: Vec<(usize, u8)> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| t.pt_level() > 0)
        .map(|(p, t)| (p, t.pt_level()))
        .collect();
    for (pfn, level) in tables {
        let m = h.map_pages(dom, &[p2m.p2m[pfn]], false).unwrap();
        let mut page = m.page(0).to_vec();
        rxmigrate::x86::pagetable::normalise(&mut page, level, |mfn| {
            p2m.p2m.iter().position(|&x| x == mfn).map(|p| p as u64)
        })
        .unwrap_or_else(|e| panic!("L{level} table at pfn {pfn}: {e}"));
    }
    // Outside the domain: XTAB.
    let mut t1 = [PageType::NOTAB];
    h.page_types(dom, &[1], &mut t1).unwrap();
    assert_eq!(t1[0], PageType::XTAB);
    assert!(
        h.map_pages(dom, &[1], false).is_err(),
        "mapping a foreign frame fails"
    );
    let si = h.shared_info(dom).unwrap();
    assert_eq!(shared_info::max_pfn(&si), 1024);
    assert_eq!(shared_info::p2m_cr3(&si), ctx.cr3());
    assert!(
        h.pin_table(dom, p2m.p2m[l4_pfn], 4).is_err(),
        "already pinned"
    );
    assert!(h.hvm_context(dom).is_err(), "no HVM context for PV");
}

#[test]
fn hvm_guest_has_context_params_and_special_pages() {
    let mut th = TestHost::new();
    let dom = th.create(&cfg(
        "hvm",
        GuestType::Hvm,
        2,
        WorkloadKind::Uniform,
        TrackingMode::Soft,
    ));
    let h = &th.host;
    let n = h.domain_info(dom).unwrap().p2m_size();
    let blob = h.hvm_context(dom).unwrap();
    assert_eq!(&blob[0..2], &[1, 0], "HEADER first");
    assert_eq!(
        u32::from_le_bytes(blob[8..12].try_into().unwrap()),
        0x5438_1286
    );
    assert_eq!(&blob[blob.len() - 8..], &[0u8; 8], "END last");
    // Xen 4.17's layout: the P2M ends with the special pages at 0xFEFF8.
    assert_eq!(n, 0xFF000);
    assert_eq!(h.hvm_param(dom, 1).unwrap(), 0xFEFFC, "STORE_PFN");
    assert_eq!(h.hvm_param(dom, 17).unwrap(), 0xFEFFF, "CONSOLE_PFN");
    assert_eq!(h.hvm_param(dom, 5).unwrap(), 0xFEFFD, "IOREQ_PFN");
    assert_eq!(h.hvm_param(dom, 6).unwrap(), 0xFEFFB, "BUFIOREQ_PFN");
    assert_eq!(h.hvm_param(dom, 12).unwrap(), 0xFEFFE << 12, "IDENT_PT");
    assert_eq!(h.hvm_param(dom, 32).unwrap(), 0xFEFF0, "IOREQ_SERVER_PFN");
    assert_eq!(h.hvm_param(dom, 33).unwrap(), 8, "NR_IOREQ_SERVER_PAGES");
    assert!(h.hvm_param(dom, 39).is_err());
    let gfns: Vec<u64> = (0..n).collect();
    let mut types = vec![PageType::NOTAB; n as usize];
    // In batches, as the saver asks (the sim takes at most 1024 at once).
    for (g, t) in gfns.chunks(1024).zip(types.chunks_mut(1024)) {
        h.page_types(dom, g, t).unwrap();
    }
    // Holes: the VGA hole, everything from the end of RAM (2 MiB) to the
    // ioreq-server pages; populated: RAM and the 16 special pages.
    let populated = 2 * 256 - 32 + 16;
    assert_eq!(
        types.iter().filter(|&&t| t == PageType::XTAB).count() as u64,
        n - populated
    );
    assert!((0xA0..0xC0).all(|p| types[p] == PageType::XTAB));
    assert!((0xFEFF0..0xFF000).all(|p| types[p] == PageType::NOTAB));
    let mut bad = blob.clone();
    bad.truncate(bad.len() - 8);
    assert!(
        h.set_hvm_context(dom, &bad).is_err(),
        "a context without END is refused"
    );
    assert!(h.pv_p2m(dom).is_err());
    let pol = h.cpu_policy(dom).unwrap();
    assert!(!pol.cpuid.is_empty() && pol.cpuid.len() % 24 == 0);
    assert!(pol.msrs.len() % 16 == 0);
    h.set_cpu_policy(dom, &pol).unwrap();
    let mut tsc = h.tsc_info(dom).unwrap();
    tsc.incarnation += 1;
    h.set_tsc_info(dom, &tsc).unwrap();
    assert_eq!(h.tsc_info(dom).unwrap(), tsc);
}

fn suspend_resume(t: GuestType, cancel: bool) {
    let mut th = TestHost::new();
    let dom = th.create(&cfg("susp", t, 4, WorkloadKind::HotSet, TrackingMode::Soft));
    let h = &th.host;
    h.run_until(dom, 1000).unwrap();
    h.unpause(dom).unwrap();
    h.suspend(dom).unwrap();
    let info = h.domain_info(dom).unwrap();
    assert_eq!(info.shutdown, Some(ShutdownReason::Suspend));
    let step = h.step(dom).unwrap();
    assert!(step >= 1000);
    // The parked vCPU context carries the workload state.
    let reg_step = match t {
        GuestType::Pv => {
            let b = h.pv_vcpu(dom, 0).unwrap().basic;
            vcpu::Context64::new(&b).unwrap().reg(vcpu::Reg::R12)
        }
        GuestType::Hvm => {
            let blob = h.hvm_context(dom).unwrap();
            let r = rxmigrate::hv::sim::hvmctx::cpu_record(&blob, 0).unwrap();
            rxmigrate::hv::sim::hvmctx::get(&blob[r], rxmigrate::hv::sim::hvmctx::cpu::R12)
        }
    };
    assert_eq!(reg_step, step);
    assert!(check(h, dom).unwrap().ok());
    h.resume(dom, cancel).unwrap();
    assert_eq!(h.domain_info(dom).unwrap().shutdown, None);
    h.pause(dom).unwrap();
    let s = h.step(dom).unwrap();
    h.run_until(dom, s + 2000).unwrap();
    let r = check(h, dom).unwrap();
    assert!(r.ok(), "{t} cancel={cancel}: {r}");
}

#[test]
fn suspend_writes_context_and_resume_continues() {
    for t in [GuestType::Pv, GuestType::Hvm] {
        suspend_resume(t, true);
        suspend_resume(t, false);
    }
}

#[test]
fn names_ids_list_rename_destroy() {
    let mut th = TestHost::new();
    let a = th.create(&cfg(
        "alpha",
        GuestType::Pv,
        1,
        WorkloadKind::Idle,
        TrackingMode::Soft,
    ));
    let b = th.create(&cfg(
        "beta",
        GuestType::Hvm,
        1,
        WorkloadKind::Idle,
        TrackingMode::Soft,
    ));
    let h = &th.host;
    assert_eq!((a, b), (1, 2));
    assert!(h
        .create_guest(&cfg(
            "alpha",
            GuestType::Pv,
            1,
            WorkloadKind::Idle,
            TrackingMode::Soft
        ))
        .is_err());
    assert_eq!(h.lookup("beta").unwrap(), b);
    assert_eq!(h.lookup("1").unwrap(), a);
    assert!(h.rename(a, "beta").is_err());
    h.rename(a, "gamma").unwrap();
    assert_eq!(h.lookup("gamma").unwrap(), a);
    h.destroy(a).unwrap();
    let names: Vec<String> = h
        .list_domains()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, vec!["beta".to_string()]);
    let c = th.create(&cfg(
        "delta",
        GuestType::Pv,
        1,
        WorkloadKind::Idle,
        TrackingMode::Soft,
    ));
    assert_eq!(c, 3, "ids are not reused");
}

#[test]
fn a_killed_guest_shows_as_crashed() {
    let mut th = TestHost::new();
    let dom = th.create(&cfg(
        "victim",
        GuestType::Pv,
        1,
        WorkloadKind::Uniform,
        TrackingMode::Uffd,
    ));
    let h = &th.host;
    h.unpause(dom).unwrap();
    let pid = {
        let d = h.dom(dom).unwrap();
        d.st.pid()
            .unwrap()
            .load(std::sync::atomic::Ordering::Acquire)
    };
    // SAFETY: killing the guest process this test created.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // Waiting on an observable condition (the process gone), not a sleep.
    while std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        std::thread::yield_now();
    }
    assert_eq!(
        h.domain_info(dom).unwrap().shutdown,
        Some(ShutdownReason::Crash)
    );
    assert!(h.pause(dom).is_err());
    h.destroy(dom).unwrap();
}
