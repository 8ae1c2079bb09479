//! `XenHost`: the [`Hypervisor`] trait (and in `toolstack`, the
//! [`crate::hv::Toolstack`] trait) over Xen 4.17's libxenctrl,
//! libxenguest, libxenforeignmemory, libxenevtchn and libxenstore (through
//! xen-sys, loaded at run time). A thin translation: each method is the
//! call libxenguest / libxl makes for the same step (docs/REFERENCE.md §11).

mod bare_domain;
mod conv;
mod cpu_policy;
mod create;
mod devmodel;
mod errno;
mod handle;
mod kept_config;
mod p2m;
mod physinfo;
mod qmp;
mod release;
mod sched;
mod suspend;
mod toolstack;
mod vcpu;

pub use conv::{bitmap_buffer_pages, bitmap_from_xen, page_type, shutdown_reason};
pub use errno::xc_error;
pub use p2m::{read as read_p2m, RawP2m};
pub use physinfo::PhysInfo;
pub use vcpu::{BASIC_SIZE as VCPU_BASIC_SIZE, MSR_SIZE as VCPU_MSR_SIZE};

use crate::bitmap::Bitmap;
use crate::hv::{
    CpuPolicy, DomId, DomainInfo, Errno, GuestType, HvError, Hypervisor, PageMapping, PageType,
    PvP2m, PvVcpuState, Result, TscInfo, INVALID_MFN, PIN_BATCH,
};
use handle::{HBuf, Handles};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use xen_sys::*;

/// Event channels of a domain this host created for a restore.
#[derive(Debug, Clone, Copy)]
struct Created {
    store_evtchn: u32,
    console_evtchn: u32,
}

/// A dirty bitmap buffer kept between log-dirty calls.
struct DirtyBuf {
    buf: HBuf<'static>,
    pages: u64,
}

/// A handle to the Xen host this process runs on (dom0).
pub struct XenHost {
    // Declared before `h` so they are freed while `h` is alive.
    dirty: Mutex<HashMap<DomId, DirtyBuf>>,
    created: Mutex<HashMap<DomId, Created>>,
    h: &'static Handles,
}

impl Drop for XenHost {
    fn drop(&mut self) {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // SAFETY: `h` was leaked from a Box in `open`; every borrow of it
        // (dirty buffers, mappings tied to &self) is gone by now.
        drop(unsafe { Box::from_raw(self.h as *const Handles as *mut Handles) });
    }
}

impl std::fmt::Debug for XenHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XenHost")
    }
}

impl XenHost {
    /// Opens the libraries and handles; the error names what is missing.
    pub fn open() -> Result<XenHost> {
        let libs = XenLibs::open().map_err(|e| HvError::Unavailable(e.to_string()))?;
        let h = Box::leak(Box::new(Handles::open(libs)?));
        let host = XenHost {
            dirty: Mutex::new(HashMap::new()),
            created: Mutex::new(HashMap::new()),
            h,
        };
        // The libraries name a release; the hypervisor must be that one.
        release::confirm(host.h.libs.release, host.xen_version())?;
        log::debug!("Xen {} (libxenctrl and hypervisor)", host.h.libs.release);
        Ok(host)
    }

    /// Is this a Xen dom0 (the auto-detection of `open_hv`)?
    pub fn present() -> bool {
        std::path::Path::new(PRIVCMD).exists()
    }

    fn raw_info(&self, dom: DomId) -> Result<xc_domaininfo_t> {
        release::domain_info(self.h, dom)?.ok_or_else(|| HvError::NoSuchDomain(dom.to_string()))
    }

    fn is_hvm(info: &xc_domaininfo_t) -> bool {
        info.flags & XEN_DOMINF_hvm_guest != 0
    }

    fn to_info(&self, info: &xc_domaininfo_t) -> Result<DomainInfo> {
        let dom = info.domain as DomId;
        let mut gpfns: xen_pfn_t = 0;
        // SAFETY: gpfns is the out parameter.
        self.h.call(dom, "maximum_gpfn", |x| unsafe {
            x.lib.xc_domain_maximum_gpfn(x.xch, dom, &mut gpfns) as i64
        })?;
        let mut online = Vec::new();
        for v in 0..=info.max_vcpu_id {
            let mut vi = xc_vcpuinfo_t::default();
            // SAFETY: vi is the out parameter.
            let r = self.h.call(dom, "vcpu_getinfo", |x| unsafe {
                x.lib.xc_vcpu_getinfo(x.xch, dom, v, &mut vi) as i64
            });
            match r {
                Ok(_) => {}
                // A vCPU not created yet is not online.
                Err(HvError::Op {
                    errno: Some(Errno::ESRCH),
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
            if vi.online != 0 {
                online.push(v);
            }
        }
        let shutdown = if info.flags & XEN_DOMINF_shutdown != 0 {
            conv::shutdown_reason(
                (info.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask,
            )
        } else {
            None
        };
        Ok(DomainInfo {
            domid: dom,
            name: self
                .h
                .xs_read(&format!("/local/domain/{dom}/name"))
                .unwrap_or_else(|| format!("Domain-{dom}")),
            guest_type: if Self::is_hvm(info) {
                GuestType::Hvm
            } else {
                GuestType::Pv
            },
            max_pfn: gpfns as u64,
            max_vcpu_id: info.max_vcpu_id,
            online_vcpus: online,
            paused: info.flags & XEN_DOMINF_paused != 0,
            shutdown,
        })
    }

    /// Copies guest frames (by gfn/mfn) out of the domain.
    fn read_frames(&self, dom: DomId, gfns: &[u64]) -> Result<Vec<u8>> {
        let m = self.h.map(dom, gfns, false)?;
        let mut out = vec![0u8; gfns.len() * 4096];
        for (i, chunk) in out.chunks_exact_mut(4096).enumerate() {
            m.page(i).copy_to(chunk);
        }
        Ok(out)
    }

    fn require(&self, dom: DomId, want: GuestType, op: &'static str) -> Result<xc_domaininfo_t> {
        let info = self.raw_info(dom)?;
        let is = if Self::is_hvm(&info) {
            GuestType::Hvm
        } else {
            GuestType::Pv
        };
        if is != want {
            return Err(HvError::Unsupported {
                dom,
                op,
                what: format!("{is} guests"),
            });
        }
        Ok(info)
    }

    /// libxl's saved config of a domain xl created, if any.
    fn libxl_userdata(dom: DomId) -> Option<PathBuf> {
        // libxl names it userdata-d.DOMID.UUID.libxl-json.
        let prefix = format!("userdata-d.{dom}.");
        std::fs::read_dir("/var/lib/xen")
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".libxl-json"))
            })
    }

    fn logdirty_op(
        &self,
        dom: DomId,
        out: &mut Bitmap,
        op: u32,
        mode: u32,
        name: &'static str,
    ) -> Result<u64> {
        let pages = out.len();
        let mut map = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&dom).is_none_or(|d| d.pages != pages) {
            map.remove(&dom);
            let buf = self.h.hbuf(dom, conv::bitmap_buffer_pages(pages))?;
            map.insert(dom, DirtyBuf { buf, pages });
        }
        let Some(d) = map.get_mut(&dom) else {
            return Err(HvError::op(dom, name, "no dirty bitmap buffer"));
        };
        let mut stats = xc_shadow_op_stats_t::default();
        let desc = d.buf.desc();
        // SAFETY: desc describes a hypercall buffer of ≥ pages bits.
        let got = self.h.call(dom, name, |x| unsafe {
            x.lib
                .xc_logdirty_control(x.xch, dom, op, desc, pages as _, mode, &mut stats)
        })?;
        if got as u64 != pages {
            return Err(HvError::op(
                dom,
                name,
                format!("Xen processed {got} of {pages} pages of the dirty log"),
            ));
        }
        Ok(conv::bitmap_from_xen(d.buf.words(), out))
    }
}

impl Hypervisor for XenHost {
    fn describe(&self) -> String {
        "xen".into()
    }

    fn xen_version(&self) -> (u32, u32) {
        let xc = self.h.xc();
        // SAFETY: XENVER_version takes no argument buffer.
        let v = unsafe {
            xc.lib
                .xc_version(xc.xch, XENVER_version as i32, std::ptr::null_mut())
        };
        if v < 0 {
            // Not expected of a working dom0; the libraries' release then.
            let r = self.h.libs.release;
            return (r.major, r.minor);
        }
        ((v as u32) >> 16, (v as u32) & 0xffff)
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>> {
        let mut buf = vec![xc_domaininfo_t::default(); 1024];
        // SAFETY: buf has room for 1024 entries.
        let n = self.h.call(0, "list_domains", |x| unsafe {
            x.lib
                .xc_domain_getinfolist(x.xch, 0, buf.len() as u32, buf.as_mut_ptr())
                as i64
        })?;
        let mut out = Vec::new();
        for info in &buf[..n as usize] {
            if info.flags & XEN_DOMINF_dying != 0 {
                continue;
            }
            match self.to_info(info) {
                Ok(i) => out.push(i),
                Err(HvError::NoSuchDomain(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn domain_info(&self, dom: DomId) -> Result<DomainInfo> {
        let info = self.raw_info(dom)?;
        self.to_info(&info)
    }

    fn rename(&self, dom: DomId, name: &str) -> Result<()> {
        for d in self.list_domains()? {
            if d.domid != dom && d.name == name {
                return Err(HvError::Invalid {
                    op: "rename",
                    msg: format!("a domain named {name:?} already exists (id {})", d.domid),
                });
            }
        }
        self.raw_info(dom)?;
        self.h
            .xs_write(&format!("/local/domain/{dom}/name"), name)?;
        if let Some(vm) = self.h.xs_read(&format!("/local/domain/{dom}/vm")) {
            if !vm.is_empty() {
                self.h.xs_write(&format!("{vm}/name"), name)?;
            }
        }
        Ok(())
    }

    fn pause(&self, dom: DomId) -> Result<()> {
        // SAFETY: integer arguments only.
        self.h.call(dom, "pause", |x| unsafe {
            x.lib.xc_domain_pause(x.xch, dom) as i64
        })?;
        Ok(())
    }

    fn unpause(&self, dom: DomId) -> Result<()> {
        // SAFETY: integer arguments only.
        self.h.call(dom, "unpause", |x| unsafe {
            x.lib.xc_domain_unpause(x.xch, dom) as i64
        })?;
        Ok(())
    }

    fn suspend(&self, dom: DomId) -> Result<()> {
        suspend::suspend(self, dom)
    }

    fn resume(&self, dom: DomId, cancel: bool) -> Result<()> {
        let info = self.raw_info(dom)?;
        // SAFETY: integer arguments only. fast=1 is the cooperative
        // (suspend-cancelled) resume, as libxl asks for it.
        self.h.call(dom, "resume", |x| unsafe {
            x.guest.xc_domain_resume(x.xch, dom, i32::from(cancel)) as i64
        })?;
        if !Self::is_hvm(&info) {
            // Tell xenstored the domain is no longer shut down (libxl does).
            self.h.xs_resume(dom);
        } else {
            // The save stopped the device model to take its state: the guest
            // cannot run until it serves I/O again (libxl sends "cont" too).
            let sock = qmp::socket_path(dom);
            if sock.exists() {
                qmp::resume(&sock).map_err(|e| HvError::op(dom, "resume", e))?;
            }
        }
        Ok(())
    }

    fn destroy(&self, dom: DomId) -> Result<()> {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dom);
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dom);
        // A domain xl built has devices and libxl state: only xl tears that
        // down properly.
        if Self::libxl_userdata(dom).is_some() {
            let st = std::process::Command::new("xl")
                .arg("destroy")
                .arg(dom.to_string())
                .status()
                .map_err(|e| HvError::io("running xl destroy", e))?;
            if !st.success() {
                return Err(HvError::op(
                    dom,
                    "destroy",
                    format!("xl destroy exited with {st}"),
                ));
            }
            return Ok(());
        }
        let vm = self.h.xs_read(&format!("/local/domain/{dom}/vm"));
        devmodel::stop(self, dom);
        kept_config::forget(dom);
        // SAFETY: integer arguments only.
        self.h.call(dom, "destroy", |x| unsafe {
            x.lib.xc_domain_destroy(x.xch, dom) as i64
        })?;
        self.h.xs_rm(&format!("/local/domain/{dom}"));
        if let Some(vm) = vm.filter(|v| v.starts_with("/vm/")) {
            self.h.xs_rm(&vm);
        }
        Ok(())
    }

    fn logdirty_enable(&self, dom: DomId) -> Result<()> {
        // SAFETY: no bitmap for ENABLE_LOGDIRTY.
        let r = self.h.call(dom, "logdirty_enable", |x| unsafe {
            x.lib.xc_shadow_control(
                x.xch,
                dom,
                XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
                std::ptr::null_mut(),
                0,
            ) as i64
        });
        match r {
            // A PV guest's log-dirty is shadow paging's; a hypervisor
            // built without it answers EOPNOTSUPP.
            Err(HvError::Op {
                errno: Some(Errno::EOPNOTSUPP),
                ..
            }) if self.raw_info(dom).is_ok_and(|i| !Self::is_hvm(&i)) => {
                Err(HvError::NoShadowPaging { dom })
            }
            r => r.map(|_| ()),
        }
    }

    fn logdirty_disable(&self, dom: DomId) -> Result<()> {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dom);
        // SAFETY: no bitmap for OFF.
        self.h.call(dom, "logdirty_disable", |x| unsafe {
            x.lib.xc_shadow_control(
                x.xch,
                dom,
                XEN_DOMCTL_SHADOW_OP_OFF,
                std::ptr::null_mut(),
                0,
            ) as i64
        })?;
        Ok(())
    }

    fn logdirty_clean(&self, dom: DomId, out: &mut Bitmap, final_round: bool) -> Result<u64> {
        let mode = if final_round {
            XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL
        } else {
            0
        };
        self.logdirty_op(dom, out, XEN_DOMCTL_SHADOW_OP_CLEAN, mode, "logdirty_clean")
    }

    fn logdirty_peek(&self, dom: DomId, out: &mut Bitmap) -> Result<u64> {
        self.logdirty_op(dom, out, XEN_DOMCTL_SHADOW_OP_PEEK, 0, "logdirty_peek")
    }

    fn page_types(&self, dom: DomId, gfns: &[u64], out: &mut [PageType]) -> Result<()> {
        if gfns.len() > 1024 || out.len() != gfns.len() {
            return Err(HvError::Invalid {
                op: "page_types",
                msg: format!("{} gfns (max 1024) into {} slots", gfns.len(), out.len()),
            });
        }
        if gfns.is_empty() {
            return Ok(());
        }
        let mut arr: Vec<xen_pfn_t> = gfns.iter().map(|&g| g as xen_pfn_t).collect();
        // One call for the whole batch (Xen takes up to 1024 pfns): the
        // call's fixed cost outweighs the bounce buffer's. Measured in the
        // lab (docs/LAB.md): split into calls of one page of pfns (512), a
        // 128 MiB HVM guest's round 0 spent 6.5-7.9 s in page types, against
        // 3.9-5.2 s with one call per batch of 1024.
        // SAFETY: arr holds arr.len() entries, rewritten in place by Xen.
        self.h.call(dom, "page_types", |x| unsafe {
            x.lib
                .xc_get_pfn_type_batch(x.xch, dom, arr.len() as u32, arr.as_mut_ptr())
                as i64
        })?;
        for (o, &t) in out.iter_mut().zip(&arr) {
            *o = conv::page_type(t);
        }
        Ok(())
    }

    fn map_pages<'a>(
        &'a self,
        dom: DomId,
        gfns: &[u64],
        writable: bool,
    ) -> Result<Box<dyn PageMapping + 'a>> {
        Ok(Box::new(self.h.map(dom, gfns, writable)?))
    }

    fn guest_width(&self, dom: DomId) -> Result<u32> {
        let mut w: u32 = 0;
        // SAFETY: w is the out parameter.
        self.h.call(dom, "guest_width", |x| unsafe {
            x.lib.xc_domain_get_guest_width(x.xch, dom, &mut w) as i64
        })?;
        Ok(w)
    }

    fn set_guest_width(&self, dom: DomId, width: u32) -> Result<()> {
        if width != 8 && width != 4 {
            return Err(HvError::Invalid {
                op: "set_guest_width",
                msg: format!("width {width} for domain {dom}"),
            });
        }
        // SAFETY: plain data, zero is its empty value.
        let mut d: xen_domctl = unsafe { std::mem::zeroed() };
        d.cmd = XEN_DOMCTL_set_address_size;
        d.domain = dom as u16;
        d.u.address_size.size = width * 8;
        // SAFETY: d is complete.
        self.h.call(dom, "set_guest_width", |x| unsafe {
            x.lib.xc_domctl(x.xch, &mut d) as i64
        })?;
        Ok(())
    }

    fn pv_p2m(&self, dom: DomId) -> Result<PvP2m> {
        let info = self.require(dom, GuestType::Pv, "pv_p2m")?;
        let si = self.read_frames(dom, &[info.shared_info_frame])?;
        let mut reader = |mfns: &[u64]| self.read_frames(dom, mfns).map_err(|e| e.to_string());
        let raw = p2m::read(&si, &mut reader).map_err(|e| HvError::op(dom, "pv_p2m", e))?;
        let mut m2p: HashMap<u64, u64> = HashMap::with_capacity(raw.p2m.len());
        for (pfn, &mfn) in raw.p2m.iter().enumerate() {
            if mfn != INVALID_MFN {
                m2p.entry(mfn).or_insert(pfn as u64);
            }
        }
        let frames = raw
            .leaf_mfns
            .iter()
            .map(|m| {
                m2p.get(m).copied().ok_or_else(|| {
                    HvError::op(
                        dom,
                        "pv_p2m",
                        format!("P2M leaf mfn {m:#x} is not one of the guest's frames"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PvP2m {
            p2m: raw.p2m,
            frames,
        })
    }

    fn pv_vcpu(&self, dom: DomId, v: u32) -> Result<PvVcpuState> {
        self.require(dom, GuestType::Pv, "pv_vcpu")?;
        vcpu::get(self.h, dom, v)
    }

    fn set_pv_vcpu(&self, dom: DomId, v: u32, state: &PvVcpuState) -> Result<()> {
        self.require(dom, GuestType::Pv, "set_pv_vcpu")?;
        vcpu::set(self.h, dom, v, state)
    }

    fn shared_info(&self, dom: DomId) -> Result<Vec<u8>> {
        let info = self.require(dom, GuestType::Pv, "shared_info")?;
        self.read_frames(dom, &[info.shared_info_frame])
    }

    fn shared_info_frame(&self, dom: DomId) -> Result<u64> {
        Ok(self.raw_info(dom)?.shared_info_frame)
    }

    fn set_shared_info(&self, dom: DomId, page: &[u8]) -> Result<()> {
        let info = self.require(dom, GuestType::Pv, "set_shared_info")?;
        if page.len() != 4096 {
            return Err(HvError::Invalid {
                op: "set_shared_info",
                msg: format!("page of {} bytes", page.len()),
            });
        }
        let mut m = self.h.map(dom, &[info.shared_info_frame], true)?;
        m.page_mut(0).copy_from(page);
        Ok(())
    }

    fn pin_table(&self, dom: DomId, mfn: u64, level: u8) -> Result<()> {
        self.pin_tables(dom, &[(mfn, level)])
    }

    fn pin_tables(&self, dom: DomId, tables: &[(u64, u8)]) -> Result<()> {
        for chunk in tables.chunks(PIN_BATCH) {
            let mut ops = chunk
                .iter()
                .map(|&(mfn, level)| {
                    // SAFETY: plain data, zero is its empty value.
                    let mut op: mmuext_op = unsafe { std::mem::zeroed() };
                    op.cmd = pin_cmd(level)?;
                    op.arg1.mfn = mfn as xen_pfn_t;
                    Ok(op)
                })
                .collect::<Result<Vec<_>>>()?;
            let n = ops.len() as u32;
            self.h
                .call(dom, "pin_table", |x| {
                    // SAFETY: `n` complete ops, which outlive the call.
                    unsafe { x.lib.xc_mmuext_op(x.xch, ops.as_mut_ptr(), n, dom) as i64 }
                })
                .map_err(|e| {
                    let (first, last) = (chunk[0], chunk[chunk.len() - 1]);
                    e.reworded(|msg| match chunk.len() {
                        1 => format!("L{} table at mfn {:#x}: {msg}", first.1, first.0),
                        k => format!(
                            "one of {k} page tables pinned together (mfns {:#x}..={:#x}): {msg}",
                            first.0, last.0
                        ),
                    })
                })?;
        }
        Ok(())
    }

    fn hvm_context(&self, dom: DomId) -> Result<Vec<u8>> {
        self.require(dom, GuestType::Hvm, "hvm_context")?;
        // SAFETY: a NULL buffer asks for the size.
        let size = self.h.call(dom, "hvm_context", |x| unsafe {
            x.lib
                .xc_domain_hvm_getcontext(x.xch, dom, std::ptr::null_mut(), 0) as i64
        })? as usize;
        let mut buf = vec![0u8; size];
        // SAFETY: buf holds size bytes.
        let got = self.h.call(dom, "hvm_context", |x| unsafe {
            x.lib
                .xc_domain_hvm_getcontext(x.xch, dom, buf.as_mut_ptr(), size as u32)
                as i64
        })? as usize;
        buf.truncate(got.min(size));
        Ok(buf)
    }

    fn set_hvm_context(&self, dom: DomId, blob: &[u8]) -> Result<()> {
        self.require(dom, GuestType::Hvm, "set_hvm_context")?;
        let mut b = blob.to_vec();
        // SAFETY: b holds b.len() bytes.
        self.h.call(dom, "set_hvm_context", |x| unsafe {
            x.lib
                .xc_domain_hvm_setcontext(x.xch, dom, b.as_mut_ptr(), b.len() as u32)
                as i64
        })?;
        Ok(())
    }

    fn hvm_param(&self, dom: DomId, index: u32) -> Result<u64> {
        let mut v = 0u64;
        // SAFETY: v is the out parameter.
        self.h.call(dom, "hvm_param", |x| unsafe {
            x.lib.xc_hvm_param_get(x.xch, dom, index, &mut v) as i64
        })?;
        Ok(v)
    }

    fn set_hvm_param(&self, dom: DomId, index: u32, value: u64) -> Result<()> {
        // SAFETY: integer arguments only.
        self.h.call(dom, "set_hvm_param", |x| unsafe {
            x.lib.xc_hvm_param_set(x.xch, dom, index, value) as i64
        })?;
        Ok(())
    }

    fn tsc_info(&self, dom: DomId) -> Result<TscInfo> {
        let (mut mode, mut nsec, mut khz, mut inc) = (0u32, 0u64, 0u32, 0u32);
        // SAFETY: four out parameters.
        self.h.call(dom, "tsc_info", |x| unsafe {
            x.lib
                .xc_domain_get_tsc_info(x.xch, dom, &mut mode, &mut nsec, &mut khz, &mut inc)
                as i64
        })?;
        Ok(TscInfo {
            mode,
            khz,
            nsec,
            incarnation: inc,
        })
    }

    fn set_tsc_info(&self, dom: DomId, t: &TscInfo) -> Result<()> {
        // SAFETY: integer arguments only.
        self.h.call(dom, "set_tsc_info", |x| unsafe {
            x.lib
                .xc_domain_set_tsc_info(x.xch, dom, t.mode, t.nsec, t.khz, t.incarnation)
                as i64
        })?;
        Ok(())
    }

    fn cpu_policy(&self, dom: DomId) -> Result<CpuPolicy> {
        cpu_policy::cpu_policy(self, dom)
    }

    fn set_cpu_policy(&self, dom: DomId, policy: &CpuPolicy) -> Result<()> {
        cpu_policy::set_cpu_policy(self, dom, policy)
    }

    fn populate(&self, dom: DomId, pfns: &[u64]) -> Result<Vec<u64>> {
        if pfns.is_empty() {
            return Ok(Vec::new());
        }
        let mut arr: Vec<xen_pfn_t> = pfns.iter().map(|&p| p as xen_pfn_t).collect();
        // SAFETY: arr holds arr.len() extents of order 0, rewritten in place
        // (PV: with the new mfns).
        let done = self.h.call(dom, "populate", |x| unsafe {
            x.lib.xc_domain_populate_physmap_exact(
                x.xch,
                dom,
                arr.len() as _,
                0,
                0,
                arr.as_mut_ptr(),
            ) as i64
        });
        if let Err(e) = done {
            // Xen populates nothing for a domain that does not exist and
            // libxc calls a short populate EBUSY: name the real cause.
            self.raw_info(dom)?;
            return Err(e);
        }
        Ok(arr)
    }

    fn host_free_memory(&self) -> Result<Option<u64>> {
        Ok(Some(self.physinfo()?.free_bytes()))
    }

    fn shadow_paging(&self) -> Result<bool> {
        Ok(self.physinfo()?.has_shadow())
    }

    fn domain_max_memory(&self, dom: DomId) -> Result<u64> {
        Ok(physinfo::max_memory_bytes(&self.raw_info(dom)?))
    }

    fn cpu_cap(&self, dom: DomId) -> Result<u32> {
        sched::cap(self.h, dom)
    }

    fn set_cpu_cap(&self, dom: DomId, cap: u32) -> Result<()> {
        sched::set_cap(self.h, dom, cap)
    }
}

/// The `MMUEXT_PIN_Ln_TABLE` command for a page-table level.
fn pin_cmd(level: u8) -> Result<u32> {
    match level {
        1 => Ok(MMUEXT_PIN_L1_TABLE),
        2 => Ok(MMUEXT_PIN_L2_TABLE),
        3 => Ok(MMUEXT_PIN_L3_TABLE),
        4 => Ok(MMUEXT_PIN_L4_TABLE),
        l => Err(HvError::Invalid {
            op: "pin_table",
            msg: format!("level {l}"),
        }),
    }
}
