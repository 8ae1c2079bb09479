//! A restore done by hand through the `Hypervisor` calls a restore engine
//! makes (build_domain, populate, page types, map, vCPU contexts, pin,
//! unpause), between two simulated hosts: the guest continues exactly where
//! it stopped. A restore that skips localisation fails loudly.

mod sim_util;

use rxmigrate::hv::sim::{check, SimHost, TrackingMode, WorkloadKind};
use rxmigrate::hv::{DomId, DomainSpec, GuestType, Hypervisor, PageType, PvVcpuState, Toolstack};
use rxmigrate::x86::{pagetable, shared_info, start_info, vcpu};
use sim_util::*;
use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    NoLocalise,
    NoP2mRewrite,
    /// start_info keeps a zero shared-info address.
    NoSharedInfo,
}

/// Save `src` (suspended) into a new domain on `dst`, as libxenguest would.
fn pv_restore(src: &SimHost, sd: DomId, dst: &SimHost, fault: Fault) -> Result<DomId, String> {
    let e = |x: rxmigrate::hv::HvError| x.to_string();
    let info = src.domain_info(sd).map_err(e)?;
    let sp2m = src.pv_p2m(sd).map_err(e)?;
    let m2p: HashMap<u64, u64> = sp2m
        .p2m
        .iter()
        .enumerate()
        .map(|(p, &m)| (m, p as u64))
        .collect();
    let n = info.p2m_size();
    let dd = dst
        .build_domain(&DomainSpec {
            name: format!("{}-incoming", info.name),
            guest_type: GuestType::Pv,
            max_pfn: info.max_pfn,
            max_vcpu_id: info.max_vcpu_id,
            config: Some(src.domain_config(sd).map_err(e)?),
        })
        .map_err(e)?
        .domid;
    let pfns: Vec<u64> = (0..n).collect();
    let dp2m = dst.populate(dd, &pfns).map_err(e)?;
    let mut types = vec![PageType::NOTAB; n as usize];
    for (i, chunk) in sp2m.p2m.chunks(1024).enumerate() {
        src.page_types(sd, chunk, &mut types[i * 1024..i * 1024 + chunk.len()])
            .map_err(e)?;
    }
    for pfn in 0..n as usize {
        let s = src.map_pages(sd, &[sp2m.p2m[pfn]], false).map_err(e)?;
        let mut page = s.page(0).to_vec();
        let level = types[pfn].pt_level();
        if level > 0 {
            pagetable::normalise(&mut page, level, |m| m2p.get(&m).copied())
                .map_err(|x| x.to_string())?;
            if fault != Fault::NoLocalise {
                pagetable::localise(&mut page, level, |p| {
                    dp2m.get(p as usize)
                        .copied()
                        .ok_or(rxmigrate::x86::X86Error::UnknownFrame { slot: 0, frame: p })
                })
                .map_err(|x| x.to_string())?;
            }
        }
        let mut d = dst.map_pages(dd, &[dp2m[pfn]], true).map_err(e)?;
        d.page_mut(0).copy_from(&page);
    }
    // END: shared info, vCPUs (start_info first), pins, P2M.
    let mut si = dst.shared_info(dd).map_err(e)?;
    shared_info::restore_into(&src.shared_info(sd).map_err(e)?, &mut si)
        .map_err(|x| x.to_string())?;
    dst.set_shared_info(dd, &si).map_err(e)?;
    for v in info.online_vcpus.clone() {
        let mut st = src.pv_vcpu(sd, v).map_err(e)?;
        vcpu::normalise_basic(&mut st.basic, v, |m| m2p.get(&m).copied())
            .map_err(|x| x.to_string())?;
        if v == 0 {
            let si_pfn = vcpu::Context64::new(&st.basic).unwrap().reg(vcpu::Reg::Rdx);
            let mut m = dst
                .map_pages(dd, &[dp2m[si_pfn as usize]], true)
                .map_err(e)?;
            let mut page = m.page(0).to_vec();
            let store = start_info::store_mfn(&page);
            let console = start_info::console_mfn(&page);
            start_info::rewrite(
                &mut page,
                &start_info::Rewrite {
                    nr_pages: n,
                    shared_info_maddr: if fault == Fault::NoSharedInfo {
                        0
                    } else {
                        dst.shared_info_frame(dd).map_err(e)? << 12
                    },
                    store_mfn: dp2m[store as usize],
                    store_evtchn: 1,
                    console_mfn: dp2m[console as usize],
                    console_evtchn: 2,
                },
            )
            .map_err(|x| x.to_string())?;
            m.page_mut(0).copy_from(&page);
        }
        vcpu::localise_basic(&mut st.basic, v, |p| dp2m.get(p as usize).copied())
            .map_err(|x| x.to_string())?;
        dst.set_pv_vcpu(dd, v, &PvVcpuState { ..st }).map_err(e)?;
    }
    for (pfn, t) in types.iter().enumerate() {
        if t.is_pinned() {
            dst.pin_table(dd, dp2m[pfn], t.pt_level()).map_err(e)?;
        }
    }
    if fault != Fault::NoP2mRewrite {
        for (i, &fpfn) in sp2m.frames.iter().enumerate() {
            let mut m = dst.map_pages(dd, &[dp2m[fpfn as usize]], true).map_err(e)?;
            let mut page = m.page_mut(0);
            for k in 0..512 {
                let v = dp2m.get(i * 512 + k).copied().unwrap_or(u64::MAX);
                page.write_u64(k * 8, v);
            }
        }
    }
    dst.set_tsc_info(dd, &src.tsc_info(sd).map_err(e)?)
        .map_err(e)?;
    dst.set_cpu_policy(dd, &src.cpu_policy(sd).map_err(e)?)
        .map_err(e)?;
    dst.unpause(dd).map_err(e)?;
    Ok(dd)
}

fn hvm_restore(src: &SimHost, sd: DomId, dst: &SimHost) -> Result<DomId, String> {
    let e = |x: rxmigrate::hv::HvError| x.to_string();
    let info = src.domain_info(sd).map_err(e)?;
    let n = info.p2m_size();
    let dd = dst
        .build_domain(&DomainSpec {
            name: info.name.clone(),
            guest_type: GuestType::Hvm,
            // The guest's memory size (its P2M spans holes beyond it).
            max_pfn: src.meta(sd).map_err(e)?.pages() - 1,
            max_vcpu_id: info.max_vcpu_id,
            config: None, // a raw stream carries no config
        })
        .map_err(e)?
        .domid;
    let gfns: Vec<u64> = (0..n).collect();
    let mut types = vec![PageType::NOTAB; n as usize];
    for (i, chunk) in gfns.chunks(1024).enumerate() {
        src.page_types(sd, chunk, &mut types[i * 1024..i * 1024 + chunk.len()])
            .map_err(e)?;
    }
    let data: Vec<u64> = gfns
        .iter()
        .copied()
        .filter(|&g| types[g as usize].has_data())
        .collect();
    dst.populate(dd, &data).map_err(e)?;
    let s = src.map_pages(sd, &data, false).map_err(e)?;
    let mut d = dst.map_pages(dd, &data, true).map_err(e)?;
    for i in 0..data.len() {
        d.page_mut(i).copy_from(&s.page(i).to_vec());
    }
    drop(d);
    for idx in [1u32, 5, 6, 17] {
        let v = src.hvm_param(sd, idx).map_err(e)?;
        dst.set_hvm_param(dd, idx, v).map_err(e)?;
        // Xen's restore zeroes these pages.
        let mut m = dst.map_pages(dd, &[v], true).map_err(e)?;
        m.page_mut(0).fill(0);
    }
    dst.set_hvm_context(dd, &src.hvm_context(sd).map_err(e)?)
        .map_err(e)?;
    dst.unpause(dd).map_err(e)?;
    Ok(dd)
}

#[test]
fn pv_guest_restored_on_another_host_continues_exactly() {
    for mode in MODES {
        let mut a = TestHost::new();
        let mut b = TestHost::new();
        let sd = a.create(&cfg(
            "mig",
            GuestType::Pv,
            4,
            WorkloadKind::PhaseChange,
            mode,
        ));
        a.host.run_until(sd, 5000).unwrap();
        a.host.unpause(sd).unwrap();
        a.host.suspend(sd).unwrap();
        let step = a.host.step(sd).unwrap();
        let dd = pv_restore(&a.host, sd, &b.host, Fault::None).unwrap();
        b.doms.push(dd);
        b.host.pause(dd).unwrap();
        let r = check(&b.host, dd).unwrap();
        assert!(r.ok(), "{mode}: {r}");
        assert!(r.step >= step);
        let s = b.host.step(dd).unwrap();
        b.host.run_until(dd, s + 5000).unwrap();
        let r = check(&b.host, dd).unwrap();
        assert!(r.ok(), "{mode} after running on: {r}");
        // The new domain really has other machine frames.
        assert_ne!(
            a.host.pv_p2m(sd).unwrap().p2m,
            b.host.pv_p2m(dd).unwrap().p2m
        );
    }
}

#[test]
fn pv_restore_without_localisation_fails_loudly() {
    let mut a = TestHost::new();
    let mut b = TestHost::new();
    let sd = a.create(&cfg(
        "bad",
        GuestType::Pv,
        2,
        WorkloadKind::Uniform,
        TrackingMode::Soft,
    ));
    a.host.run_until(sd, 1000).unwrap();
    a.host.suspend(sd).unwrap();
    let err = pv_restore(&a.host, sd, &b.host, Fault::NoLocalise).unwrap_err();
    assert!(
        err.contains("not this domain's") || err.contains("outside this domain"),
        "{err}"
    );
    for d in b.host.list_domains().unwrap() {
        b.doms.push(d.domid);
    }
}

#[test]
fn pv_restore_without_p2m_rewrite_fails_loudly() {
    let mut a = TestHost::new();
    let mut b = TestHost::new();
    let sd = a.create(&cfg(
        "badp2m",
        GuestType::Pv,
        2,
        WorkloadKind::Uniform,
        TrackingMode::Soft,
    ));
    a.host.run_until(sd, 1000).unwrap();
    a.host.suspend(sd).unwrap();
    // The guest checks its P2M after it reports running (as a resumed
    // kernel's own work runs after Xen's unpause): the unpause may return
    // before the guest crashes, or see the crash.
    let err = match pv_restore(&a.host, sd, &b.host, Fault::NoP2mRewrite) {
        Err(e) => e,
        Ok(dd) => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while b.host.domain_info(dd).unwrap().shutdown.is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a guest with a stale P2M ran on for 60 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            b.host.message(dd).unwrap()
        }
    };
    assert!(err.contains("P2M"), "{err}");
    for d in b.host.list_domains().unwrap() {
        b.doms.push(d.domid);
        assert_eq!(
            b.host.domain_info(d.domid).unwrap().shutdown,
            Some(rxmigrate::hv::ShutdownReason::Crash)
        );
    }
}

#[test]
fn pv_restore_without_the_shared_info_address_fails_loudly() {
    let mut a = TestHost::new();
    let mut b = TestHost::new();
    let sd = a.create(&cfg(
        "badsi",
        GuestType::Pv,
        2,
        WorkloadKind::Uniform,
        TrackingMode::Soft,
    ));
    a.host.run_until(sd, 1000).unwrap();
    a.host.suspend(sd).unwrap();
    let err = pv_restore(&a.host, sd, &b.host, Fault::NoSharedInfo).unwrap_err();
    assert!(err.contains("shared_info"), "{err}");
    for d in b.host.list_domains().unwrap() {
        b.doms.push(d.domid);
    }
}

#[test]
fn hvm_guest_restored_without_config_continues_exactly() {
    for mode in MODES {
        let mut a = TestHost::new();
        let mut b = TestHost::new();
        let sd = a.create(&cfg(
            "hmig",
            GuestType::Hvm,
            4,
            WorkloadKind::ReadMostly,
            mode,
        ));
        a.host.run_until(sd, 8000).unwrap();
        a.host.suspend(sd).unwrap();
        let dd = hvm_restore(&a.host, sd, &b.host).unwrap();
        b.doms.push(dd);
        let s = b.host.step(dd).unwrap();
        b.host.pause(dd).unwrap();
        let s2 = b.host.step(dd).unwrap();
        assert!(s2 >= s);
        b.host.run_until(dd, s2 + 3000).unwrap();
        let r = check(&b.host, dd).unwrap();
        assert!(r.ok(), "{mode}: {r}");
        assert!(b.host.tracking_mode(dd).unwrap().is_some());
    }
}

#[test]
fn a_built_domain_starts_paused_and_unpause_without_context_fails() {
    let mut b = TestHost::new();
    let dd = b
        .host
        .build_domain(&DomainSpec {
            name: "empty".into(),
            guest_type: GuestType::Pv,
            max_pfn: 255,
            max_vcpu_id: 0,
            config: None,
        })
        .unwrap()
        .domid;
    b.doms.push(dd);
    let info = b.host.domain_info(dd).unwrap();
    assert!(info.paused);
    assert!(
        info.online_vcpus.is_empty(),
        "no vCPU is up before its context is set"
    );
    let err = b.host.unpause(dd).unwrap_err().to_string();
    assert!(err.contains("crashed at boot"), "{err}");
}
