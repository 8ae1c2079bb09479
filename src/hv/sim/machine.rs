//! The sim guest's "kernel": how a guest finds its workload from its vCPU
//! context and RAM, exactly as a booted or restored guest would, and runs it.
//! Used by the guest process over shared RAM and by the oracle's reference
//! run over private RAM, so both take the same path.
//!
//! A PV guest starts from vCPU0's BASIC context: cr3 (its L4 mfn) and rdx
//! (its start_info mfn). It walks its page tables for the descriptor, its
//! data pages and its P2M, refusing any frame outside its domain, so a
//! restore that forgot to localise fails here, loudly. An HVM guest starts
//! from the CPU record of its HVM context (rdi = descriptor gfn).

use super::hvmctx;
use super::layout::{HvmLayout, PvLayout, DIRECT_MAP_VA, WORKLOAD_RIP};
use super::workload::{self, Descriptor, GuestMem, Rng, State, PAGE_WORDS};
use crate::hv::{GuestPage, GuestPageMut};
use crate::x86::pagetable::{self, PTE_PRESENT, PTE_PSE, PTE_RW};
use crate::x86::start_info;
use crate::x86::vcpu::{Context64, Context64Mut, Reg, VGCF_ONLINE};
use std::sync::atomic::{AtomicU64, Ordering};

pub type BootResult<T> = std::result::Result<T, String>;

/// Raw access to a run of 4 KiB frames (guest RAM), by frame index.
pub struct RamView {
    ptr: *mut u8,
    frames: usize,
}

// SAFETY: a view of shared or owned memory accessed only through raw
// pointer copies; callers keep the memory alive (see `new`).
unsafe impl Send for RamView {}
// SAFETY: as above.
unsafe impl Sync for RamView {}

impl RamView {
    /// # Safety
    /// `ptr` must be 8-byte aligned and point at `frames * 4096` bytes that
    /// stay mapped and writable for the lifetime of the view.
    pub unsafe fn new(ptr: *mut u8, frames: usize) -> Self {
        RamView { ptr, frames }
    }
    pub fn frames(&self) -> usize {
        self.frames
    }
    fn word_ptr(&self, frame: usize, word: usize, n: usize) -> Option<*mut u64> {
        (frame < self.frames && word + n <= PAGE_WORDS)
            // SAFETY: in bounds of the mapped range per `new`'s contract.
            .then(|| unsafe { (self.ptr as *mut u64).add(frame * PAGE_WORDS + word) })
    }
    pub fn read_u64(&self, frame: usize, word: usize) -> Option<u64> {
        let p = self.word_ptr(frame, word, 1)?;
        // SAFETY: in bounds and 8-byte aligned (the base is, per `new`);
        // volatile because another process may write it.
        Some(unsafe { p.read_volatile() })
    }
    pub fn write_u64s(&self, frame: usize, word: usize, words: &[u64]) -> bool {
        match self.word_ptr(frame, word, words.len()) {
            Some(p) => {
                for (k, &w) in words.iter().enumerate() {
                    // SAFETY: in bounds (checked for the whole run) and
                    // aligned; volatile because others may read it meanwhile.
                    unsafe { p.add(k).write_volatile(w) };
                }
                true
            }
            None => false,
        }
    }
    pub fn read_page(&self, frame: usize, out: &mut [u8]) -> bool {
        match self.word_ptr(frame, 0, PAGE_WORDS) {
            Some(p) if out.len() == 4096 => {
                // SAFETY: a whole in-bounds, 8-byte aligned frame that stays
                // mapped while the view lives (`new`); read volatile.
                unsafe { GuestPage::new(p as *const u8) }.copy_to(out);
                true
            }
            _ => false,
        }
    }
    pub fn write_page(&self, frame: usize, data: &[u8]) -> bool {
        match self.word_ptr(frame, 0, PAGE_WORDS) {
            Some(p) if data.len() == 4096 => {
                // SAFETY: a whole in-bounds, 8-byte aligned, writable frame
                // (`new`); written volatile.
                unsafe { GuestPageMut::new(p as *mut u8) }.copy_from(data);
                true
            }
            _ => false,
        }
    }
}

/// Xen's machine-to-phys table for the domain's frames: shared (a live
/// domain) or private (a reference guest).
#[derive(Clone, Copy)]
pub enum M2p<'a> {
    Shared(&'a [AtomicU64]),
    Private(&'a [u64]),
}

impl M2p<'_> {
    pub fn pfn_of(&self, frame: usize) -> Option<u64> {
        let p = match self {
            M2p::Shared(s) => s.get(frame)?.load(Ordering::Relaxed),
            M2p::Private(s) => *s.get(frame)?,
        };
        (p != crate::hv::INVALID_MFN).then_some(p)
    }
}

/// Where a domain's frames sit in machine space.
#[derive(Clone, Copy)]
pub struct Frames<'a> {
    pub ram: &'a RamView,
    /// mfn of frame 0 (0 for HVM, where frames are gfns).
    pub base: u64,
    pub m2p: M2p<'a>,
}

impl Frames<'_> {
    /// Frame index of an mfn that belongs to this domain and is populated.
    pub fn frame_of(&self, mfn: u64) -> Option<usize> {
        let f = mfn.checked_sub(self.base)? as usize;
        (f < self.ram.frames() && self.m2p.pfn_of(f).is_some()).then_some(f)
    }
    fn describe(&self) -> String {
        format!(
            "mfns {:#x}..{:#x}",
            self.base,
            self.base + self.ram.frames() as u64
        )
    }

    /// Walk 4-level page tables from an L4 mfn; returns (frame, leaf pte).
    pub fn walk(&self, l4_mfn: u64, va: u64) -> BootResult<(usize, u64)> {
        self.leaf(self.l1_of(l4_mfn, va)?, va)
    }

    /// The frame of the L1 table that maps `va` (a walk that stops there).
    pub fn l1_of(&self, l4_mfn: u64, va: u64) -> BootResult<usize> {
        let mut mfn = l4_mfn;
        for level in (2..=4u32).rev() {
            let table = self.table(mfn, level, va)?;
            let pte = self.entry(table, level, va)?;
            if pte & PTE_PSE != 0 {
                return Err(format!("page-table walk of {va:#x}: superpage at L{level}"));
            }
            mfn = pagetable::frame(pte);
        }
        self.table(mfn, 1, va)
    }

    /// `va`'s entry in L1 table `l1`: (the frame it maps, the entry).
    pub fn leaf(&self, l1: usize, va: u64) -> BootResult<(usize, u64)> {
        let pte = self.entry(l1, 1, va)?;
        let mfn = pagetable::frame(pte);
        let f = self.frame_of(mfn).ok_or_else(|| {
            format!(
                "page-table walk of {va:#x}: maps mfn {mfn:#x}, outside this domain ({}); page tables not localised?",
                self.describe()
            )
        })?;
        Ok((f, pte))
    }

    /// The frame of the level-`level` table at `mfn`.
    fn table(&self, mfn: u64, level: u32, va: u64) -> BootResult<usize> {
        self.frame_of(mfn).ok_or_else(|| {
            format!(
                "page-table walk of {va:#x}: L{level} table at mfn {mfn:#x} is outside this domain ({}); page tables not localised?",
                self.describe()
            )
        })
    }

    /// `va`'s present entry in the level-`level` table in frame `table`.
    fn entry(&self, table: usize, level: u32, va: u64) -> BootResult<u64> {
        let slot = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
        let pte = self
            .ram
            .read_u64(table, slot)
            .ok_or_else(|| format!("frame {table} unreadable"))?;
        if pte & PTE_PRESENT == 0 {
            return Err(format!(
                "page-table walk of {va:#x}: L{level} slot {slot} not present"
            ));
        }
        Ok(pte)
    }
}

/// Workload registers in vCPU0: step r12, RNG r13 r14 r15 rbp, acc rbx.
fn state_from_pv(ctx: &Context64) -> State {
    State {
        step: ctx.reg(Reg::R12),
        rng: Rng([
            ctx.reg(Reg::R13),
            ctx.reg(Reg::R14),
            ctx.reg(Reg::R15),
            ctx.reg(Reg::Rbp),
        ]),
        acc: ctx.reg(Reg::Rbx),
    }
}

pub fn state_to_pv(ctx: &mut Context64Mut, st: &State) {
    ctx.set_reg(Reg::R12, st.step);
    ctx.set_reg(Reg::R13, st.rng.0[0]);
    ctx.set_reg(Reg::R14, st.rng.0[1]);
    ctx.set_reg(Reg::R15, st.rng.0[2]);
    ctx.set_reg(Reg::Rbp, st.rng.0[3]);
    ctx.set_reg(Reg::Rbx, st.acc);
    ctx.set_reg(Reg::Rip, WORKLOAD_RIP);
}

fn state_from_hvm(rec: &[u8]) -> State {
    use hvmctx::{cpu, get};
    State {
        step: get(rec, cpu::R12),
        rng: Rng([
            get(rec, cpu::R13),
            get(rec, cpu::R14),
            get(rec, cpu::R15),
            get(rec, cpu::RBP),
        ]),
        acc: get(rec, cpu::RBX),
    }
}

pub fn state_to_hvm(rec: &mut [u8], st: &State) {
    use hvmctx::{cpu, set};
    set(rec, cpu::R12, st.step);
    set(rec, cpu::R13, st.rng.0[0]);
    set(rec, cpu::R14, st.rng.0[1]);
    set(rec, cpu::R15, st.rng.0[2]);
    set(rec, cpu::RBP, st.rng.0[3]);
    set(rec, cpu::RBX, st.acc);
    set(rec, cpu::RIP, WORKLOAD_RIP);
}

/// A booted workload: descriptor, registers, and where its data pages are.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub desc: Descriptor,
    pub state: State,
    /// Data page index → frame index (the guest's translation cache).
    pub xlat: Vec<u32>,
    /// PV: start_info frame and the store/console pfns (for suspend).
    pub start_info: Option<usize>,
}

/// Boot (or resume) a PV guest from its vCPU0 BASIC context: [`load_pv`]
/// then [`finish_pv`].
pub fn boot_pv(fr: Frames, basic0: &[u8]) -> BootResult<Kernel> {
    let (mut k, rest) = load_pv(fr, basic0)?;
    finish_pv(fr, &mut k, &rest)?;
    Ok(k)
}

/// What [`finish_pv`] still has to walk: the P2M and the data pages.
#[derive(Debug, Clone, Copy)]
pub struct PvRest {
    cr3: u64,
    mfn_list: u64,
    nr_pages: u64,
}

/// The first part of a PV boot, whose cost does not grow with the guest:
/// the context, start_info and the descriptor. The kernel it returns has no
/// data translation yet ([`finish_pv`] fills it).
pub fn load_pv(fr: Frames, basic0: &[u8]) -> BootResult<(Kernel, PvRest)> {
    let ctx = Context64::new(basic0).map_err(|e| format!("vCPU0 context: {e}"))?;
    if ctx.flags() & VGCF_ONLINE == 0 {
        return Err("vCPU0 is not online (context never set)".into());
    }
    if ctx.reg(Reg::Rip) != WORKLOAD_RIP {
        return Err(format!(
            "vCPU0 rip {:#x} is not the workload loop {WORKLOAD_RIP:#x}: context not restored?",
            ctx.reg(Reg::Rip)
        ));
    }
    let cr3 = ctx.cr3_frame();
    let si_mfn = ctx.reg(Reg::Rdx);
    let si_frame = fr.frame_of(si_mfn).ok_or_else(|| {
        format!(
            "start_info mfn {si_mfn:#x} (vCPU0 rdx) is outside this domain ({}): context not localised?",
            fr.describe()
        )
    })?;
    let mut si = vec![0u8; 4096];
    fr.ram.read_page(si_frame, &mut si);
    if !start_info::is_x86_64(&si) {
        return Err(format!("no start_info at mfn {si_mfn:#x}: bad magic"));
    }
    let nr_pages = start_info::nr_pages(&si);
    if nr_pages != fr.ram.frames() as u64 {
        return Err(format!(
            "start_info nr_pages {nr_pages} but the domain has {} pages",
            fr.ram.frames()
        ));
    }
    let si_maddr = start_info::shared_info_maddr(&si);
    if si_maddr != super::build::shared_info_maddr(fr.base) {
        return Err(format!(
            "start_info shared_info {si_maddr:#x} is not this domain's shared info page \
             ({:#x}): start_info not rewritten?",
            super::build::shared_info_maddr(fr.base)
        ));
    }
    for (what, mfn) in [
        ("store_mfn", start_info::store_mfn(&si)),
        ("console mfn", start_info::console_mfn(&si)),
    ] {
        if fr.frame_of(mfn).is_none() {
            return Err(format!(
                "start_info {what} {mfn:#x} is outside this domain ({}): start_info not rewritten?",
                fr.describe()
            ));
        }
    }
    // The descriptor, through the page tables.
    let (df, _) = fr.walk(cr3, PvLayout::va(PvLayout::DESCRIPTOR))?;
    let mut page = vec![0u8; 4096];
    fr.ram.read_page(df, &mut page);
    let desc = Descriptor::decode(&page).map_err(|e| e.to_string())?;
    if desc.pages != nr_pages {
        return Err(format!(
            "descriptor says {} pages, start_info {nr_pages}",
            desc.pages
        ));
    }
    if desc.data_base < DIRECT_MAP_VA {
        return Err(format!(
            "data base {:#x} below the direct map",
            desc.data_base
        ));
    }
    let rest = PvRest {
        cr3,
        mfn_list: u64_at(&si, start_info::MFN_LIST),
        nr_pages,
    };
    Ok((
        Kernel {
            desc,
            state: state_from_pv(&ctx),
            xlat: Vec::new(),
            start_info: Some(si_frame),
        },
        rest,
    ))
}

/// The rest of a PV boot, O(pages): the P2M checked entry by entry against
/// Xen's M2P, and the data pages' translation built through the page
/// tables. The simulated guest does it after it reports running and before
/// its first step, as a resumed kernel does its own work after Xen unpaused
/// it: it is the guest's time, not the toolstack's downtime.
pub fn finish_pv(fr: Frames, k: &mut Kernel, rest: &PvRest) -> BootResult<()> {
    let PvRest {
        cr3,
        mfn_list,
        nr_pages,
    } = *rest;
    let desc = &k.desc;
    // The P2M, through the page tables: every entry must be ours and agree
    // with Xen's M2P (a restore that did not rewrite it fails here).
    let mut p2m_frame = usize::MAX;
    for pfn in 0..nr_pages {
        if pfn % 512 == 0 {
            p2m_frame = fr.walk(cr3, mfn_list + pfn * 8)?.0;
        }
        let mfn = fr
            .ram
            .read_u64(p2m_frame, (pfn % 512) as usize)
            .ok_or("P2M frame unreadable")?;
        let f = fr.frame_of(mfn).ok_or_else(|| {
            format!(
                "P2M entry of pfn {pfn:#x} is mfn {mfn:#x}, outside this domain ({}): P2M not rewritten?",
                fr.describe()
            )
        })?;
        if fr.m2p.pfn_of(f) != Some(pfn) {
            return Err(format!(
                "P2M maps pfn {pfn:#x} to mfn {mfn:#x}, which Xen's M2P gives to another pfn"
            ));
        }
    }
    // The data pages, through the page tables; they must be writable.
    // One walk per L1 table, then its entries.
    let mut xlat = Vec::with_capacity(desc.data_pages as usize);
    let mut l1 = None;
    for i in 0..desc.data_pages {
        let va = desc.data_base + i * 4096;
        let table = match l1 {
            Some(t) if (va >> 12) & 511 != 0 => t,
            _ => fr.l1_of(cr3, va)?,
        };
        l1 = Some(table);
        let (f, pte) = fr.leaf(table, va)?;
        if pte & PTE_RW == 0 {
            return Err(format!("data page at {va:#x} is mapped read-only"));
        }
        xlat.push(f as u32);
    }
    k.xlat = xlat;
    Ok(())
}

fn u64_at(p: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[o..o + 8]);
    u64::from_le_bytes(b)
}

/// Boot (or resume) an HVM guest from its HVM context.
pub fn boot_hvm(ram: &RamView, blob: &[u8]) -> BootResult<Kernel> {
    let r = hvmctx::cpu_record(blob, 0).map_err(|e| e.to_string())?;
    let rec = &blob[r];
    let rip = hvmctx::get(rec, hvmctx::cpu::RIP);
    if rip != WORKLOAD_RIP {
        return Err(format!(
            "vCPU0 rip {rip:#x} is not the workload loop {WORKLOAD_RIP:#x}: context not restored?"
        ));
    }
    let lay = HvmLayout::from_frames(ram.frames() as u64);
    let pages = lay.pages;
    let dg = hvmctx::get(rec, hvmctx::cpu::RDI);
    let df = lay
        .frame_of(dg)
        .ok_or_else(|| format!("descriptor gfn {dg:#x} (rdi) is not RAM"))?;
    let mut page = vec![0u8; 4096];
    ram.read_page(df as usize, &mut page);
    let desc = Descriptor::decode(&page).map_err(|e| e.to_string())?;
    if desc.pages != pages
        || desc.data_base != HvmLayout::DATA_FIRST
        || desc.data_pages > lay.data_pages()
    {
        return Err(format!(
            "descriptor data {:#x}+{} does not fit a {pages}-page guest",
            desc.data_base, desc.data_pages
        ));
    }
    // The data pfns in order, over the holes; frames are RAM-file indices.
    let xlat = lay
        .data_pfns()
        .take(desc.data_pages as usize)
        .filter_map(|p| lay.frame_of(p))
        .map(|f| f as u32)
        .collect();
    Ok(Kernel {
        desc,
        state: state_from_hvm(rec),
        xlat,
        start_info: None,
    })
}

/// The workload's memory: data pages through the translation, optionally
/// marking the software dirty bitmap after each write lands.
pub struct DataMem<'a> {
    pub ram: &'a RamView,
    pub xlat: &'a [u32],
    pub dirty: Option<&'a [AtomicU64]>,
}

impl GuestMem for DataMem<'_> {
    fn data_pages(&self) -> u64 {
        self.xlat.len() as u64
    }
    fn write_words(&mut self, page: u64, word: usize, words: &[u64]) {
        let Some(&f) = self.xlat.get(page as usize) else {
            return;
        };
        self.ram.write_u64s(f as usize, word, words);
        if let Some(d) = self.dirty {
            // After the write: a CLEAN racing with it can only see the bit
            // one round late, never lose the page.
            if let Some(w) = d.get(f as usize / 64) {
                w.fetch_or(1 << (f % 64), Ordering::Release);
            }
        }
    }
    fn read_word(&self, page: u64, word: usize) -> u64 {
        self.xlat
            .get(page as usize)
            .and_then(|&f| self.ram.read_u64(f as usize, word))
            .unwrap_or(0)
    }
}

impl Kernel {
    /// One workload step; returns the frame written, if any.
    pub fn step(&mut self, ram: &RamView, dirty: Option<&[AtomicU64]>) -> Option<u32> {
        let mut mem = DataMem {
            ram,
            xlat: &self.xlat,
            dirty,
        };
        let p = workload::step(&self.desc, &mut self.state, &mut mem)?;
        self.xlat.get(p as usize).copied()
    }
}
