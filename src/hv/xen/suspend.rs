//! Suspending a guest for the final round, as libxl does.

use super::XenHost;
use crate::hv::{DomId, GuestType, HvError, Hypervisor, Result, ShutdownReason};
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

/// Suspends the guest and, for HVM, stops its device model, as libxl's
/// suspend does: what QEMU still had in flight (emulated DMA) lands before
/// the final round's dirty bitmap is taken, not after it. A resume sends
/// QEMU `cont`.
pub fn suspend(host: &XenHost, dom: DomId) -> Result<()> {
    let hvm = host.domain_info(dom)?.guest_type == GuestType::Hvm;
    suspend_guest(host, dom)?;
    if hvm {
        let sock = super::qmp::socket_path(dom);
        if sock.exists() {
            super::qmp::stop(&sock).map_err(|e| HvError::op(dom, "suspend", e))?;
        }
    }
    Ok(())
}

fn suspend_guest(host: &XenHost, dom: DomId) -> Result<()> {
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
