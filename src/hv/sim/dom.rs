//! `Dom`: one simulated domain's mappings (its metadata, RAM, control
//! state and page view), and where its guest frames are: which frame holds
//! a gfn, which frame a populate of a pfn takes.

use super::build::Scramble;
use super::ctl::DomState;
use super::layout::{HvmLayout, SPARE_FRAMES};
use super::machine::{Frames, M2p, RamView};
use super::meta::DomainMeta;
use super::shm::Shm;
use crate::hv::{GuestType, HvError, Result, INVALID_MFN};
use std::sync::atomic::Ordering;

/// A domain's mappings, opened once per SimHost handle.
pub struct Dom {
    pub meta: DomainMeta,
    pub ram: Shm,
    pub st: DomState,
    pub view: RamView,
}

impl Dom {
    pub fn frames(&self) -> Frames<'_> {
        Frames {
            ram: &self.view,
            base: self.meta.mfn_base,
            // The M2P is a fixed-size region of a live mapping.
            m2p: M2p::Shared(self.st.m2p().unwrap_or(&[])),
        }
    }

    pub fn pages(&self) -> u64 {
        self.meta.pages()
    }

    /// Frame index of a gfn (PV: mfn) that is this domain's and populated.
    pub fn frame_of_gfn(&self, gfn: u64) -> Option<usize> {
        match self.meta.guest_type {
            GuestType::Pv => self.frames().frame_of(gfn),
            GuestType::Hvm => {
                let lay = HvmLayout::new(self.pages());
                match lay.frame_of(gfn) {
                    Some(f) => self.frames().frame_of(f),
                    None => match self.spare_of(&lay, gfn) {
                        Ok(Some((f, true))) => Some(f),
                        _ => None,
                    },
                }
            }
        }
    }

    /// The frame a populate of `pfn` takes: PV, the scrambled frame of
    /// `sc`; HVM, the layout's frame, or for a pfn in a hole of the layout
    /// a spare frame while there is one.
    pub(super) fn frame_to_populate(&self, sc: &Scramble, pfn: u64) -> Result<usize> {
        match self.meta.guest_type {
            GuestType::Pv => Ok(sc.frame(pfn) as usize),
            GuestType::Hvm => {
                let lay = HvmLayout::new(self.pages());
                if let Some(f) = lay.frame_of(pfn) {
                    return Ok(f as usize);
                }
                match self.spare_of(&lay, pfn)? {
                    Some((f, _)) => Ok(f),
                    None => Err(HvError::op(
                        self.meta.domid,
                        "populate",
                        format!(
                            "pfn {pfn:#x} is in a hole of the guest's layout and all \
                             {SPARE_FRAMES} spare frames are taken"
                        ),
                    )),
                }
            }
        }
    }

    /// The spare frame holding `gfn` (populated in a hole of the layout):
    /// Ok(Some((frame, true))), or the first free spare Ok(Some((frame,
    /// false))), or Ok(None) when all are taken by other pfns. Spares are
    /// taken in order and never given back, so the walk stops at the first
    /// free one.
    fn spare_of(&self, lay: &HvmLayout, gfn: u64) -> Result<Option<(usize, bool)>> {
        let m2p = self.st.m2p()?;
        for f in lay.spares() {
            match m2p.get(f as usize).map(|w| w.load(Ordering::Acquire)) {
                Some(p) if p == gfn => return Ok(Some((f as usize, true))),
                Some(INVALID_MFN) => return Ok(Some((f as usize, false))),
                Some(_) => {}
                None => break,
            }
        }
        Ok(None)
    }
}
