//! Building a fresh sim guest: RAM contents (start_info, descriptor, P2M,
//! page tables), Xen's view of it (M2P, page types), vCPU contexts, the HVM
//! context and params, shared info.
//!
//! The same builder makes the oracle's reference guest, in private memory.

use super::config::GuestConfig;
use super::cpu;
use super::hvmctx;
use super::layout::*;
use super::machine::{state_to_hvm, state_to_pv, RamView};
use super::workload::{Descriptor, State};
use crate::hv::{GuestType, HvError, PageType, Result};
use crate::x86::pagetable::{set_entry, with_frame};
use crate::x86::vcpu::{self, Context64Mut, Reg, Seg};
use crate::x86::{shared_info, start_info};

/// HVM param indices (public/hvm/params.h).
pub mod param {
    pub const STORE_PFN: u32 = 1;
    pub const STORE_EVTCHN: u32 = 2;
    pub const IOREQ_PFN: u32 = 5;
    pub const BUFIOREQ_PFN: u32 = 6;
    pub const IDENT_PT: u32 = 12;
    pub const CONSOLE_PFN: u32 = 17;
    pub const CONSOLE_EVTCHN: u32 = 18;
    pub const PAGING_RING_PFN: u32 = 27;
    pub const MONITOR_RING_PFN: u32 = 28;
    pub const SHARING_RING_PFN: u32 = 29;
    pub const IOREQ_SERVER_PFN: u32 = 32;
    pub const NR_IOREQ_SERVER_PAGES: u32 = 33;
    /// HVM_NR_PARAMS in Xen 4.17.
    pub const NR: u32 = 39;
}

pub const STORE_EVTCHN: u32 = 1;
pub const CONSOLE_EVTCHN: u32 = 2;

/// A bijection pfn ↔ frame index over 0..pages, different per (host, domain):
/// `frame = (pfn * a + c) mod pages` with `a` coprime to `pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scramble {
    pages: u64,
    a: u64,
    c: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Scramble {
    pub fn new(pages: u64, salt: u64) -> Self {
        let h = super::workload::mix(salt);
        let mut a = (h % pages.max(2)) | 1;
        while gcd(a, pages) != 1 || (a == 1 && pages > 2) {
            a = (a + 2) % pages.max(3);
            if a == 0 {
                a = 1;
            }
        }
        Scramble {
            pages,
            a,
            c: super::workload::mix(h) % pages.max(1),
        }
    }
    pub fn frame(&self, pfn: u64) -> u64 {
        ((pfn as u128 * self.a as u128 + self.c as u128) % self.pages as u128) as u64
    }
}

/// Everything the builder produces besides RAM contents.
#[derive(Debug, Clone)]
pub struct Image {
    /// Frame index → pfn.
    pub m2p: Vec<u64>,
    /// Frame index → PFINFO nibble.
    pub types: Vec<u8>,
    /// PV: per vCPU (BASIC, EXTENDED, XSAVE, MSRS).
    pub vcpus: Vec<[Vec<u8>; 4]>,
    pub hvm_ctx: Vec<u8>,
    pub params: Vec<(u32, u64)>,
    pub shared_info: Vec<u8>,
}

fn set_u64(p: &mut [u8], o: usize, v: u64) {
    p[o..o + 8].copy_from_slice(&v.to_le_bytes());
}
fn set_u32(p: &mut [u8], o: usize, v: u32) {
    p[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// Machine address Xen gives a domain's shared-info page (a Xen-heap frame).
pub fn shared_info_maddr(base: u64) -> u64 {
    (base - 1) << 12
}

/// Write a fresh guest into `ram` (all frames, zero-filled beforehand).
pub fn build(cfg: &GuestConfig, ram: &RamView, base: u64, scramble: Scramble) -> Result<Image> {
    cfg.validate()?;
    let pages = cfg.pages();
    let frames = Layout::new(cfg.guest_type, pages).frames();
    if pages < MIN_PAGES || ram.frames() as u64 != frames {
        return Err(HvError::Invalid {
            op: "build",
            msg: format!(
                "{pages} pages (minimum {MIN_PAGES}) in {frames} frames, RAM has {}",
                ram.frames()
            ),
        });
    }
    match cfg.guest_type {
        GuestType::Pv => build_pv(cfg, ram, base, scramble),
        GuestType::Hvm => build_hvm(cfg, ram),
    }
}

fn write(ram: &RamView, frame: u64, page: &[u8]) -> Result<()> {
    if ram.write_page(frame as usize, page) {
        Ok(())
    } else {
        Err(HvError::Invalid {
            op: "build",
            msg: format!("frame {frame} outside RAM"),
        })
    }
}

fn build_pv(cfg: &GuestConfig, ram: &RamView, base: u64, sc: Scramble) -> Result<Image> {
    let pages = cfg.pages();
    let lay = PvLayout::new(pages);
    let frame = |pfn: u64| sc.frame(pfn);
    let mfn = |pfn: u64| base + sc.frame(pfn);
    let mut m2p = vec![crate::hv::INVALID_MFN; pages as usize];
    for pfn in 0..pages {
        m2p[frame(pfn) as usize] = pfn;
    }
    let mut types = vec![PageType::NOTAB.0; pages as usize];

    // start_info
    let mut page = vec![0u8; PAGE_SIZE];
    start_info::set_magic_x86_64(&mut page);
    set_u64(&mut page, start_info::NR_PAGES, pages);
    set_u64(&mut page, start_info::SHARED_INFO, shared_info_maddr(base));
    set_u64(&mut page, start_info::STORE_MFN, mfn(PvLayout::STORE));
    set_u32(&mut page, start_info::STORE_EVTCHN, STORE_EVTCHN);
    set_u64(&mut page, start_info::CONSOLE_MFN, mfn(PvLayout::CONSOLE));
    set_u32(&mut page, start_info::CONSOLE_EVTCHN, CONSOLE_EVTCHN);
    set_u64(&mut page, start_info::PT_BASE, PvLayout::va(lay.l4));
    set_u64(&mut page, start_info::NR_PT_FRAMES, lay.data_first - lay.l4);
    set_u64(&mut page, start_info::MFN_LIST, PvLayout::va(lay.p2m_first));
    set_u64(&mut page, start_info::FIRST_P2M_PFN, lay.p2m_first);
    set_u64(&mut page, start_info::NR_P2M_FRAMES, lay.p2m_frames);
    let cmdline = format!("rxmigrate-sim workload={} seed={}", cfg.workload, cfg.seed);
    page[start_info::CMD_LINE..start_info::CMD_LINE + cmdline.len()]
        .copy_from_slice(cmdline.as_bytes());
    write(ram, frame(PvLayout::START_INFO), &page)?;

    // Descriptor
    let desc = Descriptor::for_guest(
        cfg,
        PvLayout::va(lay.data_first),
        pages - lay.data_first,
        pages,
    )?;
    let mut page = vec![0u8; PAGE_SIZE];
    desc.encode(&mut page);
    write(ram, frame(PvLayout::DESCRIPTOR), &page)?;

    // P2M leaves
    for i in 0..lay.p2m_frames {
        let mut page = vec![0u8; PAGE_SIZE];
        for e in 0..P2M_PER_FRAME {
            let pfn = i * P2M_PER_FRAME + e;
            let v = if pfn < pages {
                mfn(pfn)
            } else {
                crate::hv::INVALID_MFN
            };
            set_u64(&mut page, (e * 8) as usize, v);
        }
        write(ram, frame(lay.p2m_first + i), &page)?;
    }

    // Page tables: the direct map of every pfn.
    let mut l4 = vec![0u8; PAGE_SIZE];
    set_entry(
        &mut l4,
        DIRECT_MAP_L4_SLOT,
        with_frame(PT_FLAGS, mfn(lay.l3)),
    );
    write(ram, frame(lay.l4), &l4)?;
    types[frame(lay.l4) as usize] = PageType::L4TAB.0 | PageType::PINNED;
    let mut l3 = vec![0u8; PAGE_SIZE];
    for j in 0..lay.l2_count {
        set_entry(
            &mut l3,
            j as usize,
            with_frame(PT_FLAGS, mfn(lay.l2_first + j)),
        );
    }
    write(ram, frame(lay.l3), &l3)?;
    types[frame(lay.l3) as usize] = PageType::L3TAB.0;
    for j in 0..lay.l2_count {
        let mut l2 = vec![0u8; PAGE_SIZE];
        for k in 0..512u64 {
            let t = j * 512 + k;
            if t < lay.l1_count {
                set_entry(
                    &mut l2,
                    k as usize,
                    with_frame(PT_FLAGS, mfn(lay.l1_first + t)),
                );
            }
        }
        write(ram, frame(lay.l2_first + j), &l2)?;
        types[frame(lay.l2_first + j) as usize] = PageType::L2TAB.0;
    }
    for t in 0..lay.l1_count {
        let mut l1 = vec![0u8; PAGE_SIZE];
        for e in 0..512u64 {
            let pfn = t * 512 + e;
            if pfn < pages {
                let flags = if lay.read_only(pfn) {
                    PTE_DATA_RO
                } else {
                    PTE_DATA_RW
                };
                set_entry(&mut l1, e as usize, with_frame(flags, mfn(pfn)));
            }
        }
        write(ram, frame(lay.l1_first + t), &l1)?;
        types[frame(lay.l1_first + t) as usize] = PageType::L1TAB.0;
    }

    // vCPUs
    let st = State::initial(cfg.seed);
    let mut vcpus = Vec::new();
    for v in 0..cfg.vcpus {
        let mut basic = vec![0u8; vcpu::CONTEXT_SIZE_64];
        let mut c = Context64Mut::new(&mut basic).map_err(|e| HvError::Invalid {
            op: "build",
            msg: e.to_string(),
        })?;
        c.set_flags(vcpu::VGCF_ONLINE | vcpu::VGCF_IN_KERNEL | vcpu::VGCF_I387_VALID);
        c.set_cr3(mfn(lay.l4) << 12);
        c.set_ctrlreg(0, 0x8005_003b);
        c.set_ctrlreg(4, 0x0000_06f0);
        c.set_seg(Seg::Cs, 0xe033); // FLAT_KERNEL_CS64
        c.set_seg(Seg::Ss, 0xe02b); // FLAT_KERNEL_SS64
        c.set_kernel_ss(0xe02b);
        c.set_kernel_sp(WORKLOAD_RSP);
        c.set_reg(Reg::Rsp, WORKLOAD_RSP);
        c.set_reg(Reg::Rflags, 0x200);
        c.set_vm_assist(1 << 5); // VMASST_TYPE_pae_extended_cr3-style default
        c.fpu_ctxt_mut()[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        c.fpu_ctxt_mut()[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        if v == 0 {
            c.set_reg(Reg::Rdx, mfn(PvLayout::START_INFO));
            state_to_pv(&mut c, &st);
        } else {
            c.set_reg(Reg::Rip, IDLE_RIP);
        }
        vcpus.push([basic, cpu::ext_vcpu_blob(v), cpu::xsave_blob(), Vec::new()]);
    }

    let mut si = vec![0u8; PAGE_SIZE];
    shared_info::set_max_pfn(&mut si, pages);
    shared_info::set_p2m_cr3(&mut si, mfn(lay.l4) << 12);
    shared_info::set_p2m_vaddr(&mut si, PvLayout::va(lay.p2m_first));
    si[shared_info::EVTCHN_MASK..shared_info::EVTCHN_MASK + 8].fill(0xff);

    Ok(Image {
        m2p,
        types,
        vcpus,
        hvm_ctx: Vec::new(),
        params: Vec::new(),
        shared_info: si,
    })
}

/// A fresh HVM CPU record (long mode, paging on) for vCPU `v`.
fn hvm_cpu(v: u32, st: &State) -> Vec<u8> {
    use hvmctx::{cpu as c, set};
    let mut rec = vec![0u8; hvmctx::CPU_SIZE];
    rec[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
    rec[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    set(&mut rec, c::CR0, 0x8005_003b);
    set(&mut rec, c::CR4, 0x0000_06f0);
    set(&mut rec, c::MSR_EFER, 0xd01);
    set(&mut rec, c::RFLAGS, 0x202);
    set(&mut rec, c::RSP, WORKLOAD_RSP);
    set(&mut rec, c::RDI, HvmLayout::DESCRIPTOR);
    rec[c::FLAGS..c::FLAGS + 4].copy_from_slice(&c::FPU_INITIALISED.to_le_bytes());
    if v == 0 {
        state_to_hvm(&mut rec, st);
    } else {
        set(&mut rec, c::RIP, IDLE_RIP);
    }
    rec
}

fn build_hvm(cfg: &GuestConfig, ram: &RamView) -> Result<Image> {
    let pages = cfg.pages();
    let lay = HvmLayout::new(pages);
    let frames = lay.file_frames();
    // The data pfns run from DATA_FIRST over the VGA hole (the guest's
    // translation skips it, see `machine::boot_hvm`).
    let desc = Descriptor::for_guest(cfg, HvmLayout::DATA_FIRST, lay.data_pages(), pages)?;
    let mut page = vec![0u8; PAGE_SIZE];
    desc.encode(&mut page);
    let frame = |pfn: u64| {
        lay.frame_of(pfn).ok_or_else(|| HvError::Invalid {
            op: "build",
            msg: format!("pfn {pfn:#x} is a hole"),
        })
    };
    write(ram, frame(HvmLayout::DESCRIPTOR)?, &page)?;
    // The identity page table for CR0.PG=0 under EPT: a 32-bit page
    // directory of 4 MiB superpages (present, RW, user, accessed, dirty, PSE).
    let mut ident = vec![0u8; PAGE_SIZE];
    for (i, e) in ident.chunks_exact_mut(4).enumerate() {
        e.copy_from_slice(&(((i as u32) << 22) | 0xE7).to_le_bytes());
    }
    write(ram, frame(lay.special(special::IDENT_PT))?, &ident)?;
    let st = State::initial(cfg.seed);
    let cpus: Vec<Vec<u8>> = (0..cfg.vcpus).map(|v| hvm_cpu(v, &st)).collect();
    let params = vec![
        (param::STORE_PFN, lay.store()),
        (param::STORE_EVTCHN, STORE_EVTCHN as u64),
        (param::IOREQ_PFN, lay.ioreq()),
        (param::BUFIOREQ_PFN, lay.bufioreq()),
        (param::IDENT_PT, lay.special(special::IDENT_PT) << 12),
        (param::CONSOLE_PFN, lay.console()),
        (param::CONSOLE_EVTCHN, CONSOLE_EVTCHN as u64),
        (param::PAGING_RING_PFN, lay.special(special::PAGING)),
        (param::MONITOR_RING_PFN, lay.special(special::ACCESS)),
        (param::SHARING_RING_PFN, lay.special(special::SHARING)),
        (param::IOREQ_SERVER_PFN, lay.ioreq_server_first()),
        (param::NR_IOREQ_SERVER_PAGES, IOREQ_SERVER_PAGES),
    ];
    Ok(Image {
        m2p: (0..frames)
            .map(|f| lay.pfn_of(f).unwrap_or(crate::hv::INVALID_MFN))
            .collect(),
        types: vec![PageType::NOTAB.0; frames as usize],
        vcpus: Vec::new(),
        hvm_ctx: hvmctx::build(cpu::CPUID1_EAX, cpu::TSC_KHZ, &cpus),
        params,
        shared_info: vec![0u8; PAGE_SIZE],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scramble_is_a_permutation_and_not_identity() {
        for pages in [256u64, 257, 1000, 4096] {
            let s = Scramble::new(pages, 42);
            let mut seen = vec![false; pages as usize];
            for p in 0..pages {
                let f = s.frame(p);
                assert!(!seen[f as usize]);
                seen[f as usize] = true;
            }
            assert!((0..pages).any(|p| s.frame(p) != p));
        }
    }
}
