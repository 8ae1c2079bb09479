//! Suspending a guest for the final round (as libxl does), and creating the
//! bare domain a standalone restore fills.

use super::layout;
use super::{Created, XenHost};
use crate::hv::{DomId, DomainSpec, GuestType, HvError, Hypervisor, Result, ShutdownReason};
use std::time::{Duration, Instant};
use xen_sys::*;

/// libxl waits this long for the guest to acknowledge, then as long again
/// for it to suspend.
fn timeout() -> Duration {
    std::env::var("RXMIGRATE_XEN_SUSPEND_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60))
}

/// Waits until the domain reports SHUTDOWN_suspend; another shutdown
/// reason is an error.
fn wait_suspended(host: &XenHost, dom: DomId, how: &str) -> Result<()> {
    let deadline = Instant::now() + timeout();
    loop {
        let info = host.domain_info(dom)?;
        match info.shutdown {
            Some(ShutdownReason::Suspend) => return Ok(()),
            Some(r) => {
                return Err(HvError::op(
                    dom,
                    "suspend",
                    format!("the guest shut down ({r:?}) instead of suspending"),
                ))
            }
            None => {}
        }
        if Instant::now() > deadline {
            return Err(HvError::op(
                dom,
                "suspend",
                format!("guest did not suspend within {:?} of {how}", timeout()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Does the guest run PV drivers that answer `control/shutdown`? PV guests
/// always; HVM guests once they set up their event-channel callback.
fn has_pv_control(host: &XenHost, dom: DomId, hvm: bool) -> Result<bool> {
    if !hvm {
        return Ok(true);
    }
    Ok(host.hvm_param(dom, HVM_PARAM_CALLBACK_IRQ)? != 0)
}

pub fn suspend(host: &XenHost, dom: DomId) -> Result<()> {
    let info = host.domain_info(dom)?;
    if info.shutdown == Some(ShutdownReason::Suspend) {
        return Ok(());
    }
    let hvm = info.guest_type == GuestType::Hvm;
    if !has_pv_control(host, dom, hvm)? {
        // An HVM guest without PV drivers: Xen suspends it directly.
        host.h.call(dom, "suspend", |x| {
            // SAFETY: integer arguments only.
            unsafe {
                x.lib
                    .xc_domain_shutdown(x.xch, dom, SHUTDOWN_suspend as i32) as i64
            }
        })?;
        return wait_suspended(host, dom, "the suspend shutdown call");
    }
    let dp = format!("/local/domain/{dom}");
    // The guest's suspend event channel, if it published one, is the fast
    // path libxl prefers: notify it instead of writing control/shutdown.
    if let Some(port) = host
        .h
        .xs_read(&format!("{dp}/device/suspend/event-channel"))
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        if notify_evtchn(host, dom, port).is_ok() {
            return wait_suspended(host, dom, "the suspend event");
        }
        log::info!("domain {dom}: suspend event channel {port} unusable; using control/shutdown");
    }
    let node = format!("{dp}/control/shutdown");
    host.h.xs_write(&node, "suspend")?;
    // The guest acknowledges by clearing the node, then suspends.
    let deadline = Instant::now() + timeout();
    loop {
        if host.domain_info(dom)?.shutdown.is_some() {
            break;
        }
        match host.h.xs_read(&node) {
            Some(v) if v == "suspend" => {}
            _ => break,
        }
        if Instant::now() > deadline {
            // Withdraw the request, as libxl does, so a late guest does not
            // suspend after we have given up.
            host.h.xs_write(&node, "")?;
            return Err(HvError::op(
                dom,
                "suspend",
                format!(
                    "guest didn't acknowledge the suspend request within {:?}",
                    timeout()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_suspended(host, dom, "its acknowledgement")
}

fn notify_evtchn(host: &XenHost, dom: DomId, port: u32) -> Result<()> {
    let e = &host.h.libs.evtchn;
    // SAFETY: the handle is opened, used and closed here.
    unsafe {
        let xce = e.xenevtchn_open(std::ptr::null_mut(), 0);
        if xce.is_null() {
            return Err(HvError::io(
                "xenevtchn_open",
                std::io::Error::last_os_error(),
            ));
        }
        let local = e.xenevtchn_bind_interdomain(xce, dom, port);
        let r = if local < 0 {
            Err(HvError::io(
                "binding the suspend event channel",
                std::io::Error::last_os_error(),
            ))
        } else {
            let n = e.xenevtchn_notify(xce, local as u32);
            e.xenevtchn_unbind(xce, local as u32);
            if n < 0 {
                Err(HvError::io(
                    "notifying the suspend event channel",
                    std::io::Error::last_os_error(),
                ))
            } else {
                Ok(())
            }
        };
        e.xenevtchn_close(xce);
        r
    }
}

fn random_handle() -> [u8; 16] {
    let mut h = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut h);
    }
    // RFC 4122 version 4, variant 1.
    h[6] = (h[6] & 0x0f) | 0x40;
    h[8] = (h[8] & 0x3f) | 0x80;
    h
}

/// Creates a paused, empty domain with its xenstore directory and two
/// unbound event channels (xenstore, console) for dom0's daemons.
pub fn create(host: &XenHost, spec: &DomainSpec) -> Result<DomId> {
    let p = layout::create_params(spec.guest_type, spec.max_pfn, spec.max_vcpu_id);
    let handle = random_handle();
    // SAFETY: plain data, zero is its empty value.
    let mut cfg: xen_domctl_createdomain = unsafe { std::mem::zeroed() };
    cfg.handle = handle;
    cfg.flags = if p.hvm {
        XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap
    } else {
        0
    };
    cfg.max_vcpus = p.max_vcpus;
    cfg.max_evtchn_port = 1023;
    // -1: the hypervisor's defaults for grant and maptrack frames.
    cfg.max_grant_frames = -1;
    cfg.max_maptrack_frames = -1;
    cfg.grant_opts = 1; // grant table version 1 at most, what Linux uses
    if p.hvm {
        cfg.arch.emulation_flags = if spec.pvh {
            // PVH: a local APIC and nothing else, as libxl asks.
            XEN_X86_EMU_LAPIC
        } else {
            // Everything but vPCI, as libxl sets for HVM guests.
            XEN_X86_EMU_ALL & !(1 << 10)
        };
    }
    let mut dom: u32 = 0;
    // SAFETY: cfg is complete; dom 0 asks Xen to pick the id.
    host.h.call(0, "create_domain", |x| unsafe {
        x.lib.xc_domain_create(x.xch, &mut dom, &mut cfg) as i64
    })?;
    let built = (|| -> Result<Created> {
        // The vCPUs themselves (createdomain only sizes the array).
        // SAFETY: integer arguments only.
        host.h.call(dom, "max_vcpus", |x| unsafe {
            x.lib.xc_domain_max_vcpus(x.xch, dom, p.max_vcpus) as i64
        })?;
        // SAFETY: integer arguments only.
        host.h.call(dom, "setmaxmem", |x| unsafe {
            x.lib.xc_domain_setmaxmem(x.xch, dom, p.max_kb as _) as i64
        })?;
        if p.hvm {
            let mut mb = p.shadow_mb;
            // SAFETY: mb is the in/out size in MiB.
            host.h.call(dom, "paging pool", |x| unsafe {
                x.lib
                    .xc_shadow_control(x.xch, dom, XEN_DOMCTL_SHADOW_OP_SET_ALLOCATION, &mut mb, 0)
                    as i64
            })?;
        }
        // SAFETY: integer arguments only (remote dom0 runs xenstored and
        // xenconsoled).
        let store = host.h.call(dom, "evtchn_alloc_unbound", |x| unsafe {
            x.lib.xc_evtchn_alloc_unbound(x.xch, dom, 0) as i64
        })? as u32;
        // SAFETY: as above.
        let console = host.h.call(dom, "evtchn_alloc_unbound", |x| unsafe {
            x.lib.xc_evtchn_alloc_unbound(x.xch, dom, 0) as i64
        })? as u32;
        let uuid = layout::uuid_string(&handle);
        let mem_kb = (spec.max_pfn + 1) * 4;
        for n in layout::base_nodes(dom, &spec.name, &uuid, spec.max_vcpu_id, mem_kb) {
            host.h.xs_write(&n.path, &n.value)?;
            host.h.xs_set_perms(&n.path, &n.perms)?;
        }
        Ok(Created {
            store_evtchn: store,
            console_evtchn: console,
        })
    })();
    match built {
        Ok(c) => {
            host.created
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(dom, c);
            log::info!("created domain {dom} ({}) for the restore", spec.name);
            Ok(dom)
        }
        Err(e) => {
            if let Err(de) = host.destroy(dom) {
                log::error!("destroying half-created domain {dom}: {de}");
            }
            Err(e)
        }
    }
}
