//! The scheduler's per-domain CPU cap (auto-converge's throttle), through
//! XEN_DOMCTL_scheduler_op as libxenctrl's `xc_sched_credit_domain_get/set`
//! and `xc_sched_credit2_domain_get/set` issue it: the structures are the
//! ones every supported release shares (xen-sys's `types.rs`), so the
//! domctl goes through `xc_domctl`, which stamps the interface version of
//! the libraries loaded.
//!
//! Which scheduler runs the domain is found by asking: a scheduler_op
//! naming another scheduler than the domain's answers EINVAL, so credit is
//! tried first and credit2 after it. Both take the cap in percent of one
//! physical CPU, 0 meaning none; credit2 refuses a cap above 100 × vCPUs.
//! Other schedulers (RTDS, ARINC653, null) have no cap: the call fails with
//! what Xen answered.

use super::handle::Handles;
use crate::hv::{DomId, Errno, HvError, Result};
use xen_sys::{
    xen_domctl, xen_domctl_sched_credit, xen_domctl_sched_credit2, XEN_DOMCTL_SCHEDOP_getinfo,
    XEN_DOMCTL_SCHEDOP_putinfo, XEN_DOMCTL_scheduler_op,
};

/// XEN_SCHEDULER_CREDIT and XEN_SCHEDULER_CREDIT2 (public/domctl.h).
const SCHED_CREDIT: u32 = 5;
const SCHED_CREDIT2: u32 = 6;

fn sched_op(dom: DomId, sched_id: u32, cmd: u32) -> xen_domctl {
    // SAFETY: xen_domctl is plain data; all-zero is its "empty" value.
    let mut d: xen_domctl = unsafe { std::mem::zeroed() };
    d.cmd = XEN_DOMCTL_scheduler_op;
    d.domain = dom as u16;
    d.u.scheduler_op.sched_id = sched_id;
    d.u.scheduler_op.cmd = cmd;
    d
}

/// The cap of `dom` under scheduler `sched_id`.
fn get(h: &Handles, dom: DomId, sched_id: u32) -> Result<u16> {
    let mut d = sched_op(dom, sched_id, XEN_DOMCTL_SCHEDOP_getinfo);
    // SAFETY: d is a complete domctl; Xen fills the scheduler's member.
    h.call(dom, "scheduler getinfo", |x| unsafe {
        x.lib.xc_domctl(x.xch, &mut d) as i64
    })?;
    // SAFETY: reading the member of the scheduler this domctl named, which
    // Xen filled.
    Ok(unsafe {
        if sched_id == SCHED_CREDIT {
            d.u.scheduler_op.u.credit.cap
        } else {
            d.u.scheduler_op.u.credit2.cap
        }
    })
}

/// The domain's scheduler (credit or credit2) and its cap.
fn which(h: &Handles, dom: DomId) -> Result<(u32, u16)> {
    match get(h, dom, SCHED_CREDIT) {
        Ok(c) => Ok((SCHED_CREDIT, c)),
        Err(e) if e.errno() == Some(Errno::EINVAL) => {
            let c = get(h, dom, SCHED_CREDIT2).map_err(|e| {
                e.reworded(|m| {
                    format!("{m} (neither credit nor credit2 runs it: no per-domain cap)")
                })
            })?;
            Ok((SCHED_CREDIT2, c))
        }
        Err(e) => Err(e),
    }
}

pub fn cap(h: &Handles, dom: DomId) -> Result<u32> {
    which(h, dom).map(|(_, cap)| u32::from(cap))
}

pub fn set_cap(h: &Handles, dom: DomId, cap: u32) -> Result<()> {
    let cap16 = u16::try_from(cap)
        .ok()
        .filter(|&c| c != u16::MAX)
        .ok_or_else(|| HvError::Invalid {
            op: "set_cpu_cap",
            msg: format!("cap {cap} % for domain {dom}: at most {} %", u16::MAX - 1),
        })?;
    let (sched_id, _) = which(h, dom)?;
    let mut d = sched_op(dom, sched_id, XEN_DOMCTL_SCHEDOP_putinfo);
    // Weight 0 leaves the weight as it is (both schedulers); both take the
    // cap as given, 0 removing it (credit reads 0xffff as "keep the cap",
    // refused above).
    if sched_id == SCHED_CREDIT {
        d.u.scheduler_op.u.credit = xen_domctl_sched_credit {
            weight: 0,
            cap: cap16,
        };
    } else {
        d.u.scheduler_op.u.credit2 = xen_domctl_sched_credit2 {
            weight: 0,
            cap: cap16,
        };
    }
    // SAFETY: d is a complete domctl.
    h.call(dom, "scheduler putinfo (cap)", |x| unsafe {
        x.lib.xc_domctl(x.xch, &mut d) as i64
    })?;
    Ok(())
}
