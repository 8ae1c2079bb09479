//! Making simulated domains: ids, names, the RAM and state files, and a
//! freshly built running guest.

use super::build::{self, Scramble};
use super::config::{GuestConfig, TrackingMode, MAX_VCPUS};
use super::cpu;
use super::ctl::{cmd, DomState};
use super::dom::Dom;
use super::host::{shm_dir, SimHost};
use super::layout::MIN_PAGES;
use super::meta::{to_hex, DomainMeta};
use super::shm::Shm;
use crate::hv::{DomId, GuestType, HvError, Hypervisor, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The simulated Xen host: a state directory (see `meta`), shared by every
/// process that opens it.
/// A host's tag, 1..=0xfff: PV machine frames start at `tag << 28`, and
/// must fit the 40-bit frame field of a page-table entry.
pub(super) fn host_tag(seed: u64) -> u32 {
    (super::workload::mix(seed) % 0xfff) as u32 + 1
}

impl SimHost {
    pub(super) fn fresh_meta(
        &self,
        domid: DomId,
        name: &str,
        gt: GuestType,
        pages: u64,
        vcpus: u32,
    ) -> Result<DomainMeta> {
        let shm = shm_dir(self.dir());
        // Unique among live hosts: two hosts of one process differ in their
        // directory's inode even when their random tags agree.
        let ino = std::fs::metadata(self.dir())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
        let stem = format!(
            "rxmigrate-sim-{:03x}-{}-{ino:x}-{domid}",
            self.tag,
            std::process::id()
        );
        let (base, salt) = match gt {
            // Per-host, per-domain machine frame ranges, far above any pfn.
            GuestType::Pv => (
                ((self.tag as u64) << 28) | ((domid as u64 & 0xff) << 20),
                ((self.tag as u64) << 32) | domid as u64,
            ),
            GuestType::Hvm => (0, 0),
        };
        let (max_pfn, ram_pages) = match gt {
            GuestType::Pv => (pages - 1, 0),
            GuestType::Hvm => (super::layout::HvmLayout::new(pages).max_pfn(), pages),
        };
        Ok(DomainMeta {
            domid,
            name: name.to_string(),
            guest_type: gt,
            max_pfn,
            ram_pages,
            max_vcpu_id: vcpus - 1,
            mfn_base: base,
            salt,
            ram_path: shm.join(format!("{stem}.ram")),
            state_path: shm.join(format!("{stem}.xen")),
            config: None,
            tracking: None,
            tsc: cpu::default_tsc(),
            cpuid_hex: to_hex(&cpu::default_policy().cpuid),
            msrs_hex: to_hex(&cpu::default_policy().msrs),
            guest_width: 8,
        })
    }

    /// Allocate an id, check the name, create the files. Returns the mapped domain.
    pub(super) fn new_domain(
        &self,
        name: &str,
        gt: GuestType,
        pages: u64,
        vcpus: u32,
        config: Option<serde_json::Value>,
        tracking: Option<TrackingMode>,
    ) -> Result<Arc<Dom>> {
        if pages < MIN_PAGES {
            return Err(HvError::Invalid {
                op: "create",
                msg: format!("{pages} pages is below the minimum of {MIN_PAGES}"),
            });
        }
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(HvError::Invalid {
                op: "create",
                msg: format!("{vcpus} vCPUs (1..={MAX_VCPUS})"),
            });
        }
        let _l = self.dir.lock()?;
        for id in self.dir.domids()? {
            if self
                .dir
                .read_meta(id)
                .map(|m| m.name == name)
                .unwrap_or(false)
            {
                return Err(HvError::Invalid {
                    op: "create",
                    msg: format!("a domain named {name:?} already exists (id {id})"),
                });
            }
        }
        let mut host = self.dir.read_host()?;
        let domid = host.next_domid;
        host.next_domid += 1;
        self.dir.write_host(&host)?;
        let mut meta = self.fresh_meta(domid, name, gt, pages, vcpus)?;
        meta.config = config;
        meta.tracking = tracking;
        std::fs::create_dir_all(self.dir.dom_dir(domid))
            .map_err(|e| HvError::io("create domain dir", e))?;
        // Files under this name can only be left by a dead process that had
        // our pid and a host directory with our inode (a killed test run):
        // no live domain uses them.
        for stale in [&meta.ram_path, &meta.state_path] {
            if std::fs::remove_file(stale).is_ok() {
                log::warn!("removed a stale {} of a dead process", stale.display());
            }
        }
        let frames = meta.frames() as usize;
        let ram = Shm::create(&meta.ram_path, frames * 4096)?;
        drop(ram);
        let st = DomState::create(&meta.state_path, vcpus as usize, frames)?;
        for (i, w) in st.params()?.iter().enumerate() {
            let _ = i;
            w.store(0, Ordering::Relaxed);
        }
        drop(st);
        self.dir.write_meta(&meta)?;
        self.dom(domid)
    }

    /// Build and start a running guest.
    pub fn create_guest(&self, cfg: &GuestConfig) -> Result<DomId> {
        cfg.validate()?;
        let config = serde_json::to_value(cfg).ok();
        let d = self.new_domain(
            &cfg.name,
            cfg.guest_type,
            cfg.pages(),
            cfg.vcpus,
            config,
            cfg.tracking,
        )?;
        let domid = d.meta.domid;
        let r = (|| {
            // Xen gives a new guest all its memory at build: allocate the
            // RAM now, so that nobody's first touch of a page allocates it.
            d.ram.allocate(0, d.ram.len())?;
            let img = build::build(
                cfg,
                &d.view,
                d.meta.mfn_base,
                Scramble::new(d.pages(), d.meta.salt),
            )?;
            for (f, &p) in img.m2p.iter().enumerate() {
                d.st.m2p()?[f].store(p, Ordering::Relaxed);
            }
            for (f, &t) in img.types.iter().enumerate() {
                if t != 0 {
                    d.st.set_page_type(f, t)?;
                }
            }
            for (v, b) in img.vcpus.iter().enumerate() {
                d.st.set_vcpu_blobs(v as u32, [&b[0], &b[1], &b[2], &b[3]])?;
            }
            if !img.hvm_ctx.is_empty() {
                d.st.set_hvm_context(&img.hvm_ctx)?;
            }
            for (i, v) in &img.params {
                d.st.params()?[*i as usize].store(*v, Ordering::Relaxed);
            }
            d.st.set_shared_info(&img.shared_info)?;
            self.toolstack_new_guest(domid, cfg)?;
            let c = if cfg.paused { cmd::PAUSE } else { cmd::RUN };
            d.st.cmd()?.store(c, Ordering::Release);
            self.start_guest(&d)
        })();
        if let Err(e) = r {
            let _ = self.destroy(domid);
            return Err(e);
        }
        Ok(domid)
    }
}
