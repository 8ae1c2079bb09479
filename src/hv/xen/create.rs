//! Creating the bare domain a standalone restore fills (what libxl's domain
//! build does for a guest without devices).

use super::bare_domain;
use super::release;
use super::{Created, XenHost};
use crate::hv::{DomId, DomainSpec, Hypervisor, Result};
use xen_sys::*;

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
    let p = bare_domain::create_params(spec.guest_type, spec.max_pfn, spec.max_vcpu_id);
    let handle = random_handle();
    let cfg = release::CreateConfig {
        handle,
        flags: if p.hvm {
            XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap
        } else {
            0
        },
        max_vcpus: p.max_vcpus,
        max_evtchn_port: 1023,
        // -1: the hypervisor's defaults for grant and maptrack frames.
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: 1, // grant table version 1 at most, what Linux uses
        emulation_flags: match (p.hvm, spec.pvh) {
            // PVH: a local APIC and nothing else, as libxl asks.
            (true, true) => XEN_X86_EMU_LAPIC,
            // Everything but vPCI, as libxl sets for HVM guests.
            (true, false) => XEN_X86_EMU_ALL & !(1 << 10),
            (false, _) => 0,
        },
    };
    // The release's own xen_domctl_createdomain layout (release/).
    let dom = release::create_domain(host.h, &cfg)?;
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
        let uuid = bare_domain::uuid_string(&handle);
        let mem_kb = (spec.max_pfn + 1) * 4;
        for n in bare_domain::base_nodes(dom, &spec.name, &uuid, spec.max_vcpu_id, mem_kb) {
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
