//! The domain's CPU policy (CPUID leaves and MSRs) through libxenguest's
//! `xc_cpu_policy_*` calls.

use super::XenHost;
use crate::hv::{CpuPolicy, DomId, Errno, HvError, Result};
use xen_sys::*;

pub(super) fn cpu_policy(host: &XenHost, dom: DomId) -> Result<CpuPolicy> {
    let xc = host.h.xc();
    let g = xc.guest;
    let op = "cpu_policy";
    let fail = |what: &str| {
        let e = std::io::Error::last_os_error();
        HvError::Op {
            dom,
            op,
            msg: format!("{what}: {e}"),
            errno: e.raw_os_error().map(Errno::from_raw),
        }
    };
    // SAFETY: the policy object is created, used and destroyed here;
    // the arrays are sized by xc_cpu_policy_get_size.
    unsafe {
        let (mut nl, mut nm) = (0u32, 0u32);
        if g.xc_cpu_policy_get_size(xc.xch, &mut nl, &mut nm) != 0 {
            return Err(fail("xc_cpu_policy_get_size"));
        }
        let p = g.xc_cpu_policy_init();
        if p.is_null() {
            return Err(fail("xc_cpu_policy_init"));
        }
        let mut leaves = vec![xen_cpuid_leaf_t::default(); nl as usize];
        let mut msrs = vec![xen_msr_entry_t::default(); nm as usize];
        let r = if g.xc_cpu_policy_get_domain(xc.xch, dom, p) != 0 {
            Err(fail("xc_cpu_policy_get_domain"))
        } else if g.xc_cpu_policy_serialise(
            xc.xch,
            p,
            leaves.as_mut_ptr(),
            &mut nl,
            msrs.as_mut_ptr(),
            &mut nm,
        ) != 0
        {
            Err(fail("xc_cpu_policy_serialise"))
        } else {
            Ok(())
        };
        g.xc_cpu_policy_destroy(p);
        r?;
        let lb = std::mem::size_of::<xen_cpuid_leaf_t>() * nl as usize;
        let mb = std::mem::size_of::<xen_msr_entry_t>() * nm as usize;
        Ok(CpuPolicy {
            cpuid: std::slice::from_raw_parts(leaves.as_ptr() as *const u8, lb).to_vec(),
            msrs: std::slice::from_raw_parts(msrs.as_ptr() as *const u8, mb).to_vec(),
        })
    }
}

pub(super) fn set_cpu_policy(host: &XenHost, dom: DomId, policy: &CpuPolicy) -> Result<()> {
    let ls = std::mem::size_of::<xen_cpuid_leaf_t>();
    let ms = std::mem::size_of::<xen_msr_entry_t>();
    if policy.cpuid.len() % ls != 0 || policy.msrs.len() % ms != 0 {
        return Err(HvError::Invalid {
            op: "set_cpu_policy",
            msg: format!(
                "CPUID policy of {} bytes (entries of {ls}) / MSR policy of {} bytes (entries of {ms})",
                policy.cpuid.len(),
                policy.msrs.len()
            ),
        });
    }
    let mut leaves = vec![xen_cpuid_leaf_t::default(); policy.cpuid.len() / ls];
    let mut msrs = vec![xen_msr_entry_t::default(); policy.msrs.len() / ms];
    // SAFETY: the vectors have exactly the byte sizes copied into them.
    unsafe {
        std::ptr::copy_nonoverlapping(
            policy.cpuid.as_ptr(),
            leaves.as_mut_ptr() as *mut u8,
            policy.cpuid.len(),
        );
        std::ptr::copy_nonoverlapping(
            policy.msrs.as_ptr(),
            msrs.as_mut_ptr() as *mut u8,
            policy.msrs.len(),
        );
    }
    let (mut el, mut es, mut em) = (0u32, 0u32, 0u32);
    let r = host.h.call(dom, "set_cpu_policy", |x| {
        // SAFETY: counts match the vectors; empty ones pass NULL.
        unsafe {
            x.guest.xc_set_domain_cpu_policy(
                x.xch,
                dom,
                leaves.len() as u32,
                if leaves.is_empty() {
                    std::ptr::null_mut()
                } else {
                    leaves.as_mut_ptr()
                },
                msrs.len() as u32,
                if msrs.is_empty() {
                    std::ptr::null_mut()
                } else {
                    msrs.as_mut_ptr()
                },
                &mut el,
                &mut es,
                &mut em,
            ) as i64
        }
    });
    r.map(|_| ()).map_err(|e| {
        e.reworded(|msg| format!("{msg} (Xen refused leaf {el:#x}/{es:#x}, MSR {em:#x})"))
    })
}
