//! Pages out of a domain into PAGE_DATA records (`write_batch`).

use super::rounds::Pager;
use super::{SaveError, SaveHooks};
use crate::bitmap::Bitmap;
use crate::hv::{DomId, DomainInfo, GuestType, Hypervisor, PageType, INVALID_MFN};
use crate::stats::RoundStats;
use crate::stream::{LibxcWriter, PfnEntry, PAGE_SIZE};
use crate::x86::{pagetable, X86Error};
use std::collections::HashMap;
use std::io::Write;

/// mfn → pfn for a PV guest, from its P2M (what Xen's M2P answers for the
/// guest's own frames; frames not in the P2M are not the guest's).
pub(crate) fn invert_p2m(p2m: &[u64]) -> HashMap<u64, u64> {
    p2m.iter()
        .enumerate()
        .filter(|(_, &m)| m != INVALID_MFN)
        .map(|(pfn, &mfn)| (mfn, pfn as u64))
        .collect()
}

struct PvMaps {
    p2m: Vec<u64>,
    m2p: HashMap<u64, u64>,
    frames: Vec<u64>,
}

pub(crate) struct HvPager<'a, W: Write> {
    hv: &'a dyn Hypervisor,
    dom: DomId,
    w: LibxcWriter<W>,
    hooks: &'a mut dyn SaveHooks,
    pv: Option<PvMaps>,
    deferred: Bitmap,
    suspended: bool,
    logdirty_on: bool,
    // Scratch, reused across batches.
    gfns: Vec<u64>,
    types: Vec<PageType>,
    entries: Vec<PfnEntry>,
    normalised: Vec<u8>,
    pages_in_round: u64,
}

impl<'a, W: Write> HvPager<'a, W> {
    pub fn new(
        hv: &'a dyn Hypervisor,
        dom: DomId,
        info: &DomainInfo,
        w: LibxcWriter<W>,
        hooks: &'a mut dyn SaveHooks,
    ) -> Result<Self, SaveError> {
        let pv = match info.guest_type {
            GuestType::Pv => {
                let p = hv.pv_p2m(dom)?;
                // Shorter is fine: a missing tail is cut off as Xen does
                // (the save then covers the P2M's pfns only).
                if p.p2m.is_empty() || p.p2m.len() as u64 > info.p2m_size() {
                    return Err(SaveError::Unsupported(format!(
                        "domain {dom}: P2M has {} entries, domain reports {}",
                        p.p2m.len(),
                        info.p2m_size()
                    )));
                }
                Some(PvMaps {
                    m2p: invert_p2m(&p.p2m),
                    p2m: p.p2m,
                    frames: p.frames,
                })
            }
            GuestType::Hvm => None,
        };
        Ok(HvPager {
            hv,
            dom,
            w,
            hooks,
            pv,
            deferred: Bitmap::new(info.p2m_size()),
            suspended: false,
            logdirty_on: false,
            gfns: Vec::new(),
            types: Vec::new(),
            entries: Vec::new(),
            normalised: Vec::new(),
            pages_in_round: 0,
        })
    }

    /// A PV guest's P2M size: the pfns the save covers.
    pub fn pv_p2m_size(&self) -> Option<u64> {
        self.pv.as_ref().map(|pv| pv.p2m.len() as u64)
    }
    pub fn p2m_frames(&self) -> Option<Vec<u64>> {
        self.pv.as_ref().map(|p| p.frames.clone())
    }
    pub fn writer(&mut self) -> &mut LibxcWriter<W> {
        &mut self.w
    }
    pub fn hooks(&mut self) -> &mut dyn SaveHooks {
        self.hooks
    }
    pub fn logdirty_enable(&mut self) -> Result<(), SaveError> {
        // As Xen: if enabling fails (already on, e.g. for VRAM tracking),
        // switch it off and try once more.
        if self.hv.logdirty_enable(self.dom).is_err() {
            self.hv.logdirty_disable(self.dom)?;
            self.hv.logdirty_enable(self.dom)?;
        }
        self.logdirty_on = true;
        Ok(())
    }
    pub fn logdirty_disable(&mut self) -> Result<(), SaveError> {
        if std::mem::take(&mut self.logdirty_on) {
            self.hv.logdirty_disable(self.dom)?;
        }
        Ok(())
    }
    pub fn finish(self) -> (LibxcWriter<W>, &'a mut dyn SaveHooks) {
        (self.w, self.hooks)
    }
}

impl<W: Write> Pager for HvPager<'_, W> {
    fn send_batch(&mut self, pfns: &[u64]) -> Result<u64, SaveError> {
        let n = pfns.len();
        self.gfns.clear();
        self.entries.clear();
        match &self.pv {
            Some(pv) => self.gfns.extend(
                pfns.iter()
                    .map(|&p| pv.p2m.get(p as usize).copied().unwrap_or(INVALID_MFN)),
            ),
            None => self.gfns.extend_from_slice(pfns),
        }
        self.types.clear();
        self.types.resize(n, PageType::XTAB);
        // Ballooned-out PV pfns have no frame: they travel as XTAB.
        let valid: Vec<usize> = (0..n).filter(|&i| self.gfns[i] != INVALID_MFN).collect();
        if !valid.is_empty() {
            let vg: Vec<u64> = valid.iter().map(|&i| self.gfns[i]).collect();
            let mut vt = vec![PageType::XTAB; vg.len()];
            self.hv.page_types(self.dom, &vg, &mut vt)?;
            for (k, &i) in valid.iter().enumerate() {
                self.types[i] = vt[k];
            }
        }
        if let Some((pfn, ty)) = pfns.iter().zip(&self.types).find(|(_, t)| !t.is_known()) {
            return Err(SaveError::Unsupported(format!(
                "pfn {pfn:#x}: hypervisor reported unknown page type {:#x}",
                ty.0
            )));
        }
        let with_data: Vec<usize> = (0..n).filter(|&i| self.types[i].has_data()).collect();
        let data_gfns: Vec<u64> = with_data.iter().map(|&i| self.gfns[i]).collect();
        let map = if data_gfns.is_empty() {
            None
        } else {
            Some(self.hv.map_pages(self.dom, &data_gfns, false)?)
        };

        // PV page tables go out normalised (mfn → pfn), from a private copy.
        self.normalised.clear();
        let mut norm_slot: Vec<Option<usize>> = vec![None; with_data.len()];
        let mut skip = vec![false; with_data.len()];
        if let (Some(pv), Some(map)) = (&self.pv, &map) {
            for (k, &i) in with_data.iter().enumerate() {
                let level = self.types[i].pt_level();
                if level == 0 {
                    continue;
                }
                let start = self.normalised.len();
                self.normalised.resize(start + PAGE_SIZE, 0);
                let page = &mut self.normalised[start..start + PAGE_SIZE];
                map.page(k).copy_to(page);
                match pagetable::normalise(page, level, |mfn| pv.m2p.get(&mfn).copied()) {
                    Ok(()) => norm_slot[k] = Some(start),
                    Err(X86Error::UnknownFrame { .. }) if !self.suspended => {
                        // The guest is changing this table under us: send it
                        // in the final round instead (Xen's "deferred").
                        self.normalised.truncate(start);
                        self.deferred.set(pfns[i]);
                        skip[k] = true;
                    }
                    Err(source) => {
                        return Err(SaveError::PageTable {
                            pfn: pfns[i],
                            source,
                        })
                    }
                }
            }
        }

        // The other pages are copied out of the mapping too: the guest may
        // write them while they are mapped, so the writer gets private bytes.
        if let Some(map) = &map {
            for k in 0..with_data.len() {
                if norm_slot[k].is_none() && !skip[k] {
                    let start = self.normalised.len();
                    self.normalised.resize(start + PAGE_SIZE, 0);
                    map.page(k).copy_to(&mut self.normalised[start..]);
                    norm_slot[k] = Some(start);
                }
            }
        }

        let mut pages: Vec<&[u8]> = Vec::with_capacity(with_data.len());
        let mut k = 0;
        for (&pfn, &ty) in pfns.iter().zip(&self.types) {
            let mut ty = ty;
            if ty.has_data() {
                if skip[k] {
                    ty = PageType::XTAB;
                } else if let Some(start) = norm_slot[k] {
                    pages.push(&self.normalised[start..start + PAGE_SIZE]);
                }
                k += 1;
            }
            self.entries.push(PfnEntry { pfn, ty });
        }
        self.w.write_page_batch(&self.entries, &pages)?;
        let with_contents = pages.len() as u64;
        drop(pages);
        drop(map);
        self.pages_in_round += n as u64;
        Ok(with_contents)
    }

    fn peek(&mut self, out: &mut Bitmap) -> Result<(), SaveError> {
        self.hv.logdirty_peek(self.dom, out)?;
        Ok(())
    }

    fn clean(&mut self, out: &mut Bitmap, final_round: bool) -> Result<(), SaveError> {
        self.hv.logdirty_clean(self.dom, out, final_round)?;
        Ok(())
    }

    fn suspend(&mut self) -> Result<(), SaveError> {
        self.hooks.suspend(self.hv, self.dom)?;
        let info = self.hv.domain_info(self.dom)?;
        if info.shutdown != Some(crate::hv::ShutdownReason::Suspend) {
            return Err(SaveError::Suspend(format!(
                "domain {} reports {:?} after the suspend request, not suspended",
                self.dom, info.shutdown
            )));
        }
        self.suspended = true;
        Ok(())
    }

    fn take_deferred(&mut self, into: &mut Bitmap) {
        into.or_with(&self.deferred);
        self.deferred.clear_all();
    }

    fn bytes_written(&self) -> u64 {
        self.w.bytes_written()
    }

    fn round_done(&mut self, stats: &RoundStats) {
        self.pages_in_round = 0;
        self.hooks.round_done(stats);
    }
}
