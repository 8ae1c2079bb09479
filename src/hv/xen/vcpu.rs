//! PV vCPU state: the four X86_PV_VCPU_* blobs, read and written with the
//! calls libxenguest uses (getcontext, and the ext-context, xsave and MSR
//! domctls).

use super::handle::Handles;
use crate::hv::{DomId, HvError, PvVcpuState, Result};
use std::mem::size_of;
use xen_sys::{
    vcpu_guest_context_any_t, vcpu_guest_context_x86_64, xen_domctl, xen_domctl_ext_vcpucontext,
    xen_domctl_vcpu_msr_t, XEN_DOMCTL_get_ext_vcpucontext, XEN_DOMCTL_get_vcpu_msrs,
    XEN_DOMCTL_getvcpuextstate, XEN_DOMCTL_set_ext_vcpucontext, XEN_DOMCTL_set_vcpu_msrs,
    XEN_DOMCTL_setvcpuextstate,
};

/// Size of a 64-bit PV vCPU context (the X86_PV_VCPU_BASIC body).
pub const BASIC_SIZE: usize = size_of::<vcpu_guest_context_x86_64>();
/// Size of one entry of the X86_PV_VCPU_MSRS body.
pub const MSR_SIZE: usize = size_of::<xen_domctl_vcpu_msr_t>();
/// Upper bound of the X86_PV_VCPU_EXTENDED body.
pub const EXT_MAX: usize = size_of::<xen_domctl_ext_vcpucontext>();

fn domctl(cmd: u32, dom: DomId) -> xen_domctl {
    // SAFETY: xen_domctl is plain data; all-zero is its "empty" value.
    let mut d: xen_domctl = unsafe { std::mem::zeroed() };
    d.cmd = cmd;
    d.domain = dom as u16;
    d
}

fn as_bytes<T>(v: &T, len: usize) -> Vec<u8> {
    assert!(len <= size_of::<T>());
    // SAFETY: reading len ≤ size_of::<T>() bytes of a plain-data value.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, len) }.to_vec()
}

fn copy_into<T>(v: &mut T, bytes: &[u8]) {
    assert!(bytes.len() <= size_of::<T>());
    // SAFETY: writing at most size_of::<T>() bytes into a plain-data value.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v as *mut T as *mut u8, bytes.len()) };
}

pub fn get(h: &Handles, dom: DomId, vcpu: u32) -> Result<PvVcpuState> {
    // SAFETY: plain data, zero is a valid value.
    let mut ctx: vcpu_guest_context_any_t = unsafe { std::mem::zeroed() };
    // SAFETY: ctx is a full vcpu_guest_context_any_t for Xen to fill.
    h.call(dom, "vcpu getcontext", |x| unsafe {
        x.lib.xc_vcpu_getcontext(x.xch, dom, vcpu, &mut ctx) as i64
    })?;
    // SAFETY: a 64-bit guest's context is the x64 member.
    let basic = as_bytes(unsafe { &ctx.x64 }, BASIC_SIZE);

    let mut d = domctl(XEN_DOMCTL_get_ext_vcpucontext, dom);
    d.u.ext_vcpucontext.vcpu = vcpu;
    // SAFETY: d is a complete domctl.
    h.call(dom, "get_ext_vcpucontext", |x| unsafe {
        x.lib.xc_domctl(x.xch, &mut d) as i64
    })?;
    // SAFETY: reading the member this domctl filled.
    let ext = unsafe { d.u.ext_vcpucontext };
    let extended = as_bytes(&ext, (ext.size as usize).min(EXT_MAX));

    let xsave = get_xsave(h, dom, vcpu)?;
    let msrs = get_msrs(h, dom, vcpu)?;
    Ok(PvVcpuState {
        basic,
        extended,
        xsave,
        msrs,
    })
}

fn get_xsave(h: &Handles, dom: DomId, vcpu: u32) -> Result<Vec<u8>> {
    let mut d = domctl(XEN_DOMCTL_getvcpuextstate, dom);
    d.u.vcpuextstate.vcpu = vcpu;
    // SAFETY: a size query: the buffer handle is NULL.
    h.call(dom, "getvcpuextstate", |x| unsafe {
        x.lib.xc_domctl(x.xch, &mut d) as i64
    })?;
    // SAFETY: reading the member this domctl filled.
    let (mask, size) = unsafe { (d.u.vcpuextstate.xfeature_mask, d.u.vcpuextstate.size) };
    if mask == 0 || size == 0 {
        return Ok(Vec::new());
    }
    let size = size as usize;
    let mut buf = h.hbuf(dom, size.div_ceil(4096))?;
    // The handle points at hypercall-safe memory of ≥ size bytes.
    d.u.vcpuextstate.buffer.p = buf.ptr() as *mut u64;
    // SAFETY: d is complete; Xen writes at most size bytes into buf.
    h.call(dom, "getvcpuextstate", |x| unsafe {
        x.lib.xc_domctl(x.xch, &mut d) as i64
    })?;
    // SAFETY: reading the member this domctl filled.
    let got = unsafe { d.u.vcpuextstate.size } as usize;
    Ok(buf.bytes_mut()[..got.min(size)].to_vec())
}

fn get_msrs(h: &Handles, dom: DomId, vcpu: u32) -> Result<Vec<u8>> {
    let mut d = domctl(XEN_DOMCTL_get_vcpu_msrs, dom);
    d.u.vcpu_msrs.vcpu = vcpu;
    // SAFETY: a count query: the buffer handle is NULL.
    h.call(dom, "get_vcpu_msrs", |x| unsafe {
        x.lib.xc_domctl(x.xch, &mut d) as i64
    })?;
    // SAFETY: reading the member this domctl filled.
    let count = unsafe { d.u.vcpu_msrs.msr_count } as usize;
    if count == 0 {
        return Ok(Vec::new());
    }
    let bytes = count * MSR_SIZE;
    let buf = h.hbuf(dom, bytes.div_ceil(4096))?;
    // The handle points at hypercall-safe memory of ≥ bytes.
    d.u.vcpu_msrs.msrs.p = buf.ptr() as *mut xen_domctl_vcpu_msr_t;
    // SAFETY: d is complete; Xen writes at most msr_count entries.
    h.call(dom, "get_vcpu_msrs", |x| unsafe {
        x.lib.xc_domctl(x.xch, &mut d) as i64
    })?;
    // SAFETY: reading the member this domctl filled.
    let got = unsafe { d.u.vcpu_msrs.msr_count } as usize;
    Ok(buf.bytes()[..got.min(count) * MSR_SIZE].to_vec())
}

/// Checks blob sizes before anything reaches Xen.
pub fn validate(vcpu: u32, s: &PvVcpuState) -> Result<()> {
    let bad = |msg: String| HvError::Invalid {
        op: "set_pv_vcpu",
        msg: format!("vCPU {vcpu}: {msg}"),
    };
    if !s.basic.is_empty() && s.basic.len() != BASIC_SIZE {
        return Err(bad(format!(
            "BASIC context of {} bytes, expected {BASIC_SIZE}",
            s.basic.len()
        )));
    }
    if s.extended.len() > EXT_MAX {
        return Err(bad(format!(
            "EXTENDED context of {} bytes, at most {EXT_MAX}",
            s.extended.len()
        )));
    }
    if s.msrs.len() % MSR_SIZE != 0 {
        return Err(bad(format!(
            "MSRS blob of {} bytes is not a multiple of {MSR_SIZE}",
            s.msrs.len()
        )));
    }
    Ok(())
}

pub fn set(h: &Handles, dom: DomId, vcpu: u32, s: &PvVcpuState) -> Result<()> {
    validate(vcpu, s)?;
    if !s.basic.is_empty() {
        // SAFETY: plain data, zero is a valid value.
        let mut ctx: vcpu_guest_context_any_t = unsafe { std::mem::zeroed() };
        // SAFETY: filling the x64 member with exactly its size.
        copy_into(unsafe { &mut ctx.x64 }, &s.basic);
        // SAFETY: ctx is a complete context.
        h.call(dom, "vcpu setcontext", |x| unsafe {
            x.lib.xc_vcpu_setcontext(x.xch, dom, vcpu, &mut ctx) as i64
        })?;
    }
    if !s.extended.is_empty() {
        let mut d = domctl(XEN_DOMCTL_set_ext_vcpucontext, dom);
        // SAFETY: the blob is the leading part of the member, as saved.
        copy_into(unsafe { &mut d.u.ext_vcpucontext }, &s.extended);
        // SAFETY: d is complete.
        h.call(dom, "set_ext_vcpucontext", |x| unsafe {
            x.lib.xc_domctl(x.xch, &mut d) as i64
        })?;
    }
    if !s.xsave.is_empty() {
        let mut buf = h.hbuf(dom, s.xsave.len().div_ceil(4096))?;
        buf.bytes_mut()[..s.xsave.len()].copy_from_slice(&s.xsave);
        let mut d = domctl(XEN_DOMCTL_setvcpuextstate, dom);
        d.u.vcpuextstate.vcpu = vcpu;
        d.u.vcpuextstate.size = s.xsave.len() as u64;
        d.u.vcpuextstate.buffer.p = buf.ptr() as *mut u64;
        // SAFETY: d is complete; buf holds size bytes.
        h.call(dom, "setvcpuextstate", |x| unsafe {
            x.lib.xc_domctl(x.xch, &mut d) as i64
        })?;
    }
    if !s.msrs.is_empty() {
        let mut buf = h.hbuf(dom, s.msrs.len().div_ceil(4096))?;
        buf.bytes_mut()[..s.msrs.len()].copy_from_slice(&s.msrs);
        let mut d = domctl(XEN_DOMCTL_set_vcpu_msrs, dom);
        d.u.vcpu_msrs.vcpu = vcpu;
        d.u.vcpu_msrs.msr_count = (s.msrs.len() / MSR_SIZE) as u32;
        d.u.vcpu_msrs.msrs.p = buf.ptr() as *mut xen_domctl_vcpu_msr_t;
        // SAFETY: d is complete; buf holds msr_count entries.
        h.call(dom, "set_vcpu_msrs", |x| unsafe {
            x.lib.xc_domctl(x.xch, &mut d) as i64
        })?;
    }
    Ok(())
}
