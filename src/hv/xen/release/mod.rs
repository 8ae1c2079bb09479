//! Everything that differs between the Xen releases rxmigrate supports
//! (4.17 to 4.22), in one place: the rest of the backend calls these and
//! never asks which release it runs on.
//!
//! The facts are in [`facts`]; the calls whose argument layout or existence
//! differs dispatch here once on xen-sys's per-release table, each arm
//! using that release's own bindgen types.

pub mod facts;
#[cfg(test)]
mod tests;

pub use facts::Facts;

use super::handle::Handles;
use crate::hv::{DomId, Errno, HvError, Result};
use xen_sys::{xc_domaininfo_t, ReleaseLib, XenRelease};

/// What a new domain is created with (`xen_domctl_createdomain`'s fields
/// that every release has; altp2m stays off, as zero means in all of them).
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateConfig {
    pub handle: [u8; 16],
    pub flags: u32,
    pub max_vcpus: u32,
    pub max_evtchn_port: u32,
    pub max_grant_frames: i32,
    pub max_maptrack_frames: i32,
    pub grant_opts: u32,
    pub emulation_flags: u32,
}

/// Runs `$body` with `$m` bound to the installed release's xen-sys module
/// and `$t` to its function table.
macro_rules! with_release {
    ($lib:expr, |$m:ident, $t:ident| $body:expr) => {
        match $lib {
            ReleaseLib::V4_17($t) => {
                use xen_sys::v4_17 as $m;
                $body
            }
            ReleaseLib::V4_18($t) => {
                use xen_sys::v4_18 as $m;
                $body
            }
            ReleaseLib::V4_19($t) => {
                use xen_sys::v4_19 as $m;
                $body
            }
            ReleaseLib::V4_20($t) => {
                use xen_sys::v4_20 as $m;
                $body
            }
            ReleaseLib::V4_21($t) => {
                use xen_sys::v4_21 as $m;
                $body
            }
            ReleaseLib::V4_22($t) => {
                use xen_sys::v4_22 as $m;
                $body
            }
        }
    };
}

/// The installed release's facts (the loader only opens supported ones).
pub fn facts(h: &Handles) -> &'static Facts {
    facts::of(h.libs.release).expect("xen-sys opened an unsupported release")
}

/// Checks that the hypervisor runs the release whose libraries are
/// installed: libxenctrl stamps its own domctl/sysctl interface version on
/// every call, and a hypervisor of another release refuses them (EACCES).
pub fn confirm(libs: XenRelease, hypervisor: (u32, u32)) -> Result<()> {
    let hv = XenRelease::new(hypervisor.0, hypervisor.1);
    if hv == libs {
        return Ok(());
    }
    let range = XenRelease::supported_range();
    Err(HvError::Unavailable(if hv.is_supported() {
        format!(
            "the hypervisor is Xen {hv} but the installed tools are Xen {libs} ({}); \
             boot the matching hypervisor or install its tools (rxmigrate supports {range})",
            libs.xenctrl()
        )
    } else {
        format!("Xen {hv} found; rxmigrate supports {range}")
    }))
}

/// Creates a domain; returns its id.
pub fn create_domain(h: &Handles, cfg: &CreateConfig) -> Result<DomId> {
    let mut dom: u32 = 0;
    h.call(0, "create_domain", |x| {
        with_release!(x.rel, |v, t| {
            let mut c = v::xen_domctl_createdomain {
                handle: cfg.handle,
                flags: cfg.flags,
                max_vcpus: cfg.max_vcpus,
                max_evtchn_port: cfg.max_evtchn_port,
                max_grant_frames: cfg.max_grant_frames,
                max_maptrack_frames: cfg.max_maptrack_frames,
                grant_opts: cfg.grant_opts,
                ..Default::default()
            };
            c.arch.emulation_flags = cfg.emulation_flags;
            // SAFETY: c is this release's complete createdomain; dom 0
            // asks Xen to pick the id.
            unsafe { t.xc_domain_create(x.xch, &mut dom, &mut c) as i64 }
        })
    })?;
    Ok(dom)
}

/// One domain's info, or None if there is no such domain.
pub fn domain_info(h: &Handles, dom: DomId) -> Result<Option<xc_domaininfo_t>> {
    let mut info = xc_domaininfo_t::default();
    // Decided by the table itself: it has xc_domain_getinfo_single exactly
    // where facts.getinfo is GetInfo::Single (4.18 on).
    let single = single_fn(h.xc().rel);
    match single {
        None => {
            // SAFETY: info has room for the one entry asked for.
            let n = h.call(dom, "domain_info", |x| unsafe {
                x.lib.xc_domain_getinfolist(x.xch, dom, 1, &mut info) as i64
            })?;
            // getinfolist answers with the first domain at or after `dom`.
            Ok((n >= 1 && info.domain as DomId == dom).then_some(info))
        }
        Some(f) => {
            // SAFETY: info is the out parameter.
            let r = h.call(dom, "domain_info", |x| unsafe {
                f(x.xch, dom, &mut info) as i64
            });
            match r {
                Ok(_) => Ok(Some(info)),
                Err(HvError::Op {
                    errno: Some(Errno::ESRCH),
                    ..
                }) => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

type SingleFn = unsafe extern "C" fn(*mut xen_sys::xc_interface, u32, *mut xc_domaininfo_t) -> i32;

/// `xc_domain_getinfo_single` of the releases that have it (4.18 on).
fn single_fn(rel: &ReleaseLib) -> Option<SingleFn> {
    match rel {
        ReleaseLib::V4_17(_) => None,
        ReleaseLib::V4_18(t) => Some(t.xc_domain_getinfo_single),
        ReleaseLib::V4_19(t) => Some(t.xc_domain_getinfo_single),
        ReleaseLib::V4_20(t) => Some(t.xc_domain_getinfo_single),
        ReleaseLib::V4_21(t) => Some(t.xc_domain_getinfo_single),
        ReleaseLib::V4_22(t) => Some(t.xc_domain_getinfo_single),
    }
}

/// After a restore has laid out the console ring at `console_gfn` (zeroed
/// for HVM, the guest's for PV): from 4.21 on the ring's `connection` byte
/// starts XENCONSOLE_DISCONNECTED and xenconsoled sets it connected when it
/// attaches, as libxenguest's restore does. Earlier releases' xenconsoled
/// never sets it, so there it is left alone.
pub fn console_restored(h: &Handles, dom: DomId, console_gfn: u64) -> Result<()> {
    let Some(off) = facts(h).console_connection else {
        return Ok(());
    };
    if console_gfn == 0 {
        return Ok(());
    }
    let mut m = h.map(dom, &[console_gfn], true)?;
    let mut page = crate::hv::PageMapping::page_mut(&mut m, 0);
    // The byte is followed by the ring's tail padding: rewrite its
    // aligned word with only the low (first, little-endian) byte changed.
    let word = page.read_u32(off);
    page.write_u32(off, (word & !0xff) | 1); // XENCONSOLE_DISCONNECTED
    Ok(())
}
