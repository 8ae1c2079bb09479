//! PV-only machinery of the simulated host: the guest's P2M as a saver reads
//! it, vCPU contexts and pins with Xen's page-table validation (typing a tree
//! when it is pinned or loaded into cr3), and the rewrite of start_info's
//! frames on a non-cooperative resume.

use super::dom::Dom;
use super::host::SimHost;
use crate::hv::{
    DomId, GuestType, HvError, Hypervisor, PageType, PvP2m, PvVcpuState, Result, INVALID_MFN,
};
use crate::x86::pagetable::{self, PTE_PSE, PTE_RW};
use crate::x86::{shared_info, start_info, vcpu};
use std::sync::atomic::Ordering;

impl SimHost {
    /// Type a page table and everything below it (Xen's validation when a
    /// table is pinned or loaded into cr3). Refuses frames outside the
    /// domain, superpages, type conflicts, and writable mappings of tables.
    pub(super) fn validate_table(
        &self,
        d: &Dom,
        root: usize,
        level: u8,
        op: &'static str,
    ) -> Result<()> {
        let dom = d.meta.domid;
        let fr = d.frames();
        // Types given in this walk, by frame (0: none), and the frames
        // typed, in order; the L1s' entries are checked after the walk,
        // once every table under the root is known.
        let mut newtypes = vec![0u8; d.pages() as usize];
        let mut typed: Vec<usize> = Vec::new();
        let mut stack = vec![(root, level)];
        while let Some((f, lvl)) = stack.pop() {
            let cur = d.st.page_type(f)? & 0x7;
            let had = newtypes.get(f).copied().filter(|&h| h != 0);
            if (cur != 0 && cur != lvl) || had.is_some_and(|h| h != lvl) {
                return Err(HvError::op(
                    dom,
                    op,
                    format!(
                        "frame {:#x} is already an L{} table, cannot be L{lvl}",
                        d.meta.mfn_base + f as u64,
                        had.unwrap_or(cur)
                    ),
                ));
            }
            // Validated already (a table typed when cr3 was loaded): Xen
            // takes another type reference and does not walk it again.
            if had.is_some() || cur == lvl {
                continue;
            }
            if let Some(n) = newtypes.get_mut(f) {
                *n = lvl;
            }
            typed.push(f);
            if lvl == 1 {
                continue;
            }
            for slot in 0..512usize {
                if lvl == 4 && pagetable::XEN_L4_SLOTS.contains(&slot) {
                    continue;
                }
                let pte = d.view.read_u64(f, slot).unwrap_or(0);
                if pte & 1 == 0 {
                    continue;
                }
                if pte & PTE_PSE != 0 {
                    return Err(HvError::op(
                        dom,
                        op,
                        format!(
                            "L{lvl} table {:#x} slot {slot}: superpage",
                            d.meta.mfn_base + f as u64
                        ),
                    ));
                }
                let t = Self::mapped_frame(d, &fr, f, lvl, slot, pte, op)?;
                stack.push((t, lvl - 1));
            }
        }
        for &f in typed.iter().filter(|&&f| newtypes[f] == 1) {
            for slot in 0..512usize {
                let pte = d.view.read_u64(f, slot).unwrap_or(0);
                if pte & 1 == 0 {
                    continue;
                }
                let t = Self::mapped_frame(d, &fr, f, 1, slot, pte, op)?;
                let is_table = newtypes.get(t).is_some_and(|&n| n != 0)
                    || d.st.page_type(t).map(|x| x & 7 != 0).unwrap_or(false);
                if pte & PTE_RW != 0 && is_table {
                    return Err(HvError::op(
                        dom,
                        op,
                        format!(
                            "L1 table {:#x} slot {slot} maps page table {:#x} writable",
                            d.meta.mfn_base + f as u64,
                            d.meta.mfn_base + t as u64
                        ),
                    ));
                }
            }
        }
        for f in typed {
            let pinned = d.st.page_type(f)? & PageType::PINNED;
            d.st.set_page_type(f, newtypes[f] | pinned)?;
        }
        Ok(())
    }

    /// The frame an entry of table `f` maps, which must be this domain's.
    fn mapped_frame(
        d: &Dom,
        fr: &super::machine::Frames<'_>,
        f: usize,
        lvl: u8,
        slot: usize,
        pte: u64,
        op: &'static str,
    ) -> Result<usize> {
        let mfn = pagetable::frame(pte);
        fr.frame_of(mfn).ok_or_else(|| {
            HvError::op(
                d.meta.domid,
                op,
                format!(
                    "L{lvl} table {:#x} slot {slot} maps mfn {mfn:#x}, which is not this domain's",
                    d.meta.mfn_base + f as u64
                ),
            )
        })
    }

    /// Put mfns back into start_info's store/console fields after a suspend
    /// that canonicalised them to pfns (the non-cooperative resume path).
    pub(super) fn relocalise_start_info(&self, d: &Dom) -> Result<()> {
        let dom = d.meta.domid;
        let [basic, ..] = d.st.vcpu_blobs(0)?;
        let c = vcpu::Context64::new(&basic).map_err(|e| HvError::op(dom, "resume", e))?;
        let si_mfn = c.reg(vcpu::Reg::Rdx);
        let p2m = self.pv_p2m(dom)?;
        let mut m = self.map_pages(dom, &[si_mfn], true)?;
        let mut copy = m.page(0).to_vec();
        let page = copy.as_mut_slice();
        for (get, set) in [
            (
                start_info::store_mfn as fn(&[u8]) -> u64,
                start_info::set_store_mfn as fn(&mut [u8], u64),
            ),
            (start_info::console_mfn, start_info::set_console_mfn),
        ] {
            let pfn = get(page);
            if let Some(&mfn) = p2m.p2m.get(pfn as usize) {
                set(page, mfn);
            }
        }
        m.page_mut(0).copy_from(&copy);
        Ok(())
    }
}

pub(super) fn pv_p2m(host: &SimHost, dom: DomId) -> Result<PvP2m> {
    let d = host.dom(dom)?;
    host.require(&d, GuestType::Pv, "pv_p2m")?;
    let si = d.st.shared_info()?;
    let cr3 = shared_info::p2m_cr3(&si);
    let vaddr = shared_info::p2m_vaddr(&si);
    let size = shared_info::max_pfn(&si);
    if cr3 == 0 {
        return Err(HvError::op(
            dom,
            "pv_p2m",
            "the guest has not published a linear P2M (shared_info.arch.p2m_cr3 = 0)",
        ));
    }
    if size == 0 || size > d.pages() {
        return Err(HvError::op(
            dom,
            "pv_p2m",
            format!("shared_info.arch.max_pfn {size} out of range"),
        ));
    }
    let fr = d.frames();
    let m2p = d.st.m2p()?;
    let mut p2m = Vec::with_capacity(size as usize);
    let mut frames = Vec::new();
    let mut leaf = 0usize;
    for pfn in 0..size {
        if pfn % 512 == 0 {
            leaf = fr
                .walk(cr3 >> 12, vaddr + pfn * 8)
                .map_err(|e| HvError::op(dom, "pv_p2m", e))?
                .0;
            let lp = m2p[leaf].load(Ordering::Relaxed);
            frames.push(lp);
        }
        p2m.push(
            d.view
                .read_u64(leaf, (pfn % 512) as usize)
                .unwrap_or(INVALID_MFN),
        );
    }
    Ok(PvP2m { p2m, frames })
}

pub(super) fn set_pv_vcpu(host: &SimHost, dom: DomId, vcpu: u32, s: &PvVcpuState) -> Result<()> {
    let d = host.dom(dom)?;
    host.require(&d, GuestType::Pv, "set_pv_vcpu")?;
    if !s.basic.is_empty() {
        let c = vcpu::Context64::new(&s.basic).map_err(|e| HvError::op(dom, "set_pv_vcpu", e))?;
        // Xen takes a type reference on cr3 as a root page table,
        // validating the whole tree if it is not yet typed.
        let cr3 = c.cr3_frame();
        let f = d.frame_of_gfn(cr3).ok_or_else(|| {
            HvError::op(
                dom,
                "set_pv_vcpu",
                format!("vcpu {vcpu}: cr3 mfn {cr3:#x} is not this domain's"),
            )
        })?;
        host.validate_table(&d, f, 4, "set_pv_vcpu")?;
    }
    let [ob, oe, ox, om] = d.st.vcpu_blobs(vcpu)?;
    let pick = |new: &Vec<u8>, old: Vec<u8>| if new.is_empty() { old } else { new.clone() };
    let (b, e, x, m) = (
        pick(&s.basic, ob),
        pick(&s.extended, oe),
        pick(&s.xsave, ox),
        pick(&s.msrs, om),
    );
    if m.len() % 16 != 0 {
        return Err(HvError::Invalid {
            op: "set_pv_vcpu",
            msg: format!("MSRS blob of {} bytes", m.len()),
        });
    }
    d.st.set_vcpu_blobs(vcpu, [&b, &e, &x, &m])
}

pub(super) fn pin_table(host: &SimHost, dom: DomId, mfn: u64, level: u8) -> Result<()> {
    let d = host.dom(dom)?;
    host.require(&d, GuestType::Pv, "pin_table")?;
    if !(1..=4).contains(&level) {
        return Err(HvError::Invalid {
            op: "pin_table",
            msg: format!("level {level}"),
        });
    }
    let f = d.frame_of_gfn(mfn).ok_or_else(|| {
        HvError::op(
            dom,
            "pin_table",
            format!("mfn {mfn:#x} is not this domain's"),
        )
    })?;
    if d.st.page_type(f)? & PageType::PINNED != 0 {
        return Err(HvError::op(
            dom,
            "pin_table",
            format!("mfn {mfn:#x} is already pinned"),
        ));
    }
    host.validate_table(&d, f, level, "pin_table")?;
    let t = d.st.page_type(f)?;
    d.st.set_page_type(f, t | PageType::PINNED)
}
