//! The correctness oracle: a workload is deterministic given (seed, steps),
//! so a guest's RAM must equal, bit for bit, a fresh reference guest run to
//! the same step. Comparison is in pfn space: page tables and P2M frames are
//! normalised (mfn → pfn) on both sides first, start_info is compared only in
//! the fields a migration must preserve, and the frames a restore is entitled
//! to rewrite (xenstore / console / ioreq rings) are skipped.

use super::build::{self, Scramble};
use super::config::GuestConfig;
use super::host::SimHost;
use super::layout::{Layout, PvLayout};
use super::machine::{boot_hvm, boot_pv, Frames, Kernel, M2p, RamView};
use super::workload::Descriptor;
use crate::bitmap::Bitmap;
use crate::hv::{DomId, GuestType, HvError, Hypervisor, Result, INVALID_MFN};
use crate::x86::{pagetable, start_info};
use std::collections::HashMap;

/// mfn base of reference guests (any value distinct from pfns works).
const REF_BASE: u64 = 0x7_7700_0000;
const REF_SALT: u64 = 0x5eed;

/// What the oracle found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub domid: DomId,
    /// Step the guest was at (and the reference was run to).
    pub step: u64,
    pub pages: u64,
    pub compared: u64,
    pub skipped: u64,
    /// Number of pfns that differ, and the first few of them.
    pub n_differing: u64,
    pub differing: Vec<u64>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.n_differing == 0
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok() {
            write!(
                f,
                "domain {}: RAM matches the reference at step {} ({} pages compared, {} skipped)",
                self.domid, self.step, self.compared, self.skipped
            )
        } else {
            write!(
                f,
                "domain {}: {} of {} pages differ from the reference at step {}; first: {}",
                self.domid,
                self.n_differing,
                self.compared,
                self.step,
                self.differing
                    .iter()
                    .map(|p| format!("{p:#x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

/// A reference guest in private memory, built and booted like a real one.
pub struct Reference {
    ram: Vec<u64>,
    view: RamView,
    m2p: Vec<u64>,
    kernel: Kernel,
    layout: Layout,
}

impl Reference {
    pub fn new(cfg: &GuestConfig) -> Result<Reference> {
        cfg.validate()?;
        let pages = cfg.pages();
        let frames = Layout::new(cfg.guest_type, pages).frames();
        let mut ram = vec![0u64; frames as usize * 512];
        // SAFETY: `ram` holds frames*4096 bytes and is kept alive (and never
        // reallocated) alongside the view in the returned struct.
        let view = unsafe { RamView::new(ram.as_mut_ptr() as *mut u8, frames as usize) };
        let base = match cfg.guest_type {
            GuestType::Pv => REF_BASE,
            GuestType::Hvm => 0,
        };
        let img = build::build(cfg, &view, base, Scramble::new(pages, REF_SALT))?;
        let boot_err = |m: String| HvError::Invalid {
            op: "reference boot",
            msg: m,
        };
        let kernel = match cfg.guest_type {
            GuestType::Pv => {
                let fr = Frames {
                    ram: &view,
                    base,
                    m2p: M2p::Private(img.m2p.as_slice()),
                };
                boot_pv(fr, &img.vcpus[0][0]).map_err(boot_err)?
            }
            GuestType::Hvm => boot_hvm(&view, &img.hvm_ctx).map_err(boot_err)?,
        };
        Ok(Reference {
            ram,
            view,
            m2p: img.m2p,
            kernel,
            layout: Layout::new(cfg.guest_type, pages),
        })
    }

    pub fn step(&self) -> u64 {
        self.kernel.state.step
    }

    /// Run to `step`; returns the pfns written on the way.
    pub fn run_to(&mut self, step: u64) -> Result<Bitmap> {
        if step < self.step() {
            return Err(HvError::Invalid {
                op: "reference run",
                msg: format!("already at step {}, cannot go back to {step}", self.step()),
            });
        }
        let mut written = Bitmap::new(self.layout.p2m_size());
        while self.kernel.state.step < step {
            if let Some(f) = self.kernel.step(&self.view, None) {
                if let Some(&p) = self.m2p.get(f as usize) {
                    written.set(p);
                }
            }
        }
        Ok(written)
    }

    fn side(&self) -> Side<'_> {
        let mut frame_of = vec![None; self.layout.p2m_size() as usize];
        for (f, &p) in self.m2p.iter().enumerate() {
            if p != INVALID_MFN {
                frame_of[p as usize] = Some(f);
            }
        }
        let base = match self.layout {
            Layout::Pv(_) => REF_BASE,
            Layout::Hvm(_) => 0,
        };
        Side {
            ram: &self.view,
            frame_of,
            base,
            _keep: &self.ram,
        }
    }
}

/// One side of a comparison: RAM and its pfn → frame map.
struct Side<'a> {
    ram: &'a RamView,
    frame_of: Vec<Option<usize>>,
    base: u64,
    _keep: &'a [u64],
}

impl Side<'_> {
    fn page(&self, pfn: u64) -> Option<Vec<u8>> {
        let f = (*self.frame_of.get(pfn as usize)?)?;
        let mut p = vec![0u8; 4096];
        self.ram.read_page(f, &mut p).then_some(p)
    }
    fn m2p(&self) -> HashMap<u64, u64> {
        self.frame_of
            .iter()
            .enumerate()
            .filter_map(|(p, f)| f.map(|f| (self.base + f as u64, p as u64)))
            .collect()
    }
}

fn side_of(
    host: &SimHost,
    dom: DomId,
) -> Result<(std::sync::Arc<super::dom::Dom>, Vec<Option<usize>>)> {
    let d = host.dom(dom)?;
    let pages = d.meta.p2m_size();
    let frame_of = match d.meta.guest_type {
        GuestType::Pv => {
            // The guest's own P2M, as a saver reads it.
            let p2m = host.pv_p2m(dom)?;
            p2m.p2m
                .iter()
                .map(|&m| d.frame_of_gfn(m))
                .chain(std::iter::repeat(None))
                .take(pages as usize)
                .collect()
        }
        GuestType::Hvm => (0..pages).map(|g| d.frame_of_gfn(g)).collect(),
    };
    Ok((d, frame_of))
}

/// Fields of start_info a migration must carry unchanged.
const START_INFO_KEPT: [(usize, usize); 8] = [
    (start_info::MAGIC, start_info::MAGIC_SIZE),
    (start_info::NR_PAGES, 8),
    (start_info::PT_BASE, 8),
    (start_info::NR_PT_FRAMES, 8),
    (start_info::MFN_LIST, 8),
    (start_info::MOD_START, 16),
    (start_info::CMD_LINE, start_info::MAX_GUEST_CMDLINE),
    (start_info::FIRST_P2M_PFN, 16),
];

fn normalise_p2m(page: &mut [u8], m2p: &HashMap<u64, u64>) {
    for e in page.chunks_exact_mut(8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(e);
        let mfn = u64::from_le_bytes(b);
        let v = if mfn == INVALID_MFN {
            INVALID_MFN
        } else {
            m2p.get(&mfn).copied().unwrap_or(u64::MAX - 1)
        };
        e.copy_from_slice(&v.to_le_bytes());
    }
}

/// Compare two images pfn by pfn.
fn compare_sides(domid: DomId, step: u64, layout: Layout, a: &Side, b: &Side) -> CheckReport {
    let pages = layout.p2m_size();
    let (ma, mb) = (a.m2p(), b.m2p());
    let mut rep = CheckReport {
        domid,
        step,
        pages,
        compared: 0,
        skipped: 0,
        n_differing: 0,
        differing: Vec::new(),
    };
    for pfn in 0..pages {
        let skip = match layout {
            Layout::Pv(_) => pfn == PvLayout::STORE || pfn == PvLayout::CONSOLE,
            // Xen's special pages: the toolstack's and device model's.
            Layout::Hvm(l) => l.is_special(pfn),
        };
        if skip {
            rep.skipped += 1;
            continue;
        }
        rep.compared += 1;
        let same = match (a.page(pfn), b.page(pfn)) {
            (None, None) => true,
            (Some(mut pa), Some(mut pb)) => match layout {
                Layout::Pv(l) if l.pt_level(pfn) > 0 => {
                    let lv = l.pt_level(pfn);
                    let na = pagetable::normalise(&mut pa, lv, |m| ma.get(&m).copied());
                    let nb = pagetable::normalise(&mut pb, lv, |m| mb.get(&m).copied());
                    na.is_ok() && nb.is_ok() && pa == pb
                }
                Layout::Pv(l) if l.is_p2m(pfn) => {
                    normalise_p2m(&mut pa, &ma);
                    normalise_p2m(&mut pb, &mb);
                    pa == pb
                }
                Layout::Pv(_) if pfn == PvLayout::START_INFO => START_INFO_KEPT
                    .iter()
                    .all(|&(o, n)| pa[o..o + n] == pb[o..o + n]),
                _ => pa == pb,
            },
            _ => false,
        };
        if !same {
            rep.n_differing += 1;
            if rep.differing.len() < 32 {
                rep.differing.push(pfn);
            }
        }
    }
    rep
}

/// The config to rebuild a domain's reference from: its recorded config if
/// it has one, else what its descriptor page and Xen's view say.
fn reference_config(host: &SimHost, dom: DomId, frame_of: &[Option<usize>]) -> Result<GuestConfig> {
    let d = host.dom(dom)?;
    if let Some(cfg) = d
        .meta
        .config
        .clone()
        .and_then(|c| serde_json::from_value::<GuestConfig>(c).ok())
    {
        if cfg.pages() == d.pages() {
            return Ok(cfg);
        }
    }
    let desc_pfn = Layout::new(d.meta.guest_type, d.pages()).descriptor();
    let f = frame_of
        .get(desc_pfn as usize)
        .copied()
        .flatten()
        .ok_or_else(|| HvError::op(dom, "check", "descriptor page not populated"))?;
    let mut page = vec![0u8; 4096];
    d.view.read_page(f, &mut page);
    let desc = Descriptor::decode(&page)?;
    if d.pages() % 256 != 0 {
        return Err(HvError::op(
            dom,
            "check",
            "guest size is not a whole number of MiB",
        ));
    }
    Ok(GuestConfig {
        name: d.meta.name.clone(),
        guest_type: d.meta.guest_type,
        mem_mib: d.pages() / 256,
        vcpus: d.meta.vcpus(),
        workload: desc.kind,
        params: desc.params(),
        seed: desc.seed,
        rate: desc.rate,
        tracking: None,
        paused: false,
        trace: desc.trace_spec(),
    })
}

/// The step a paused/suspended guest's vCPU context says it completed.
fn context_step(host: &SimHost, dom: DomId) -> Result<u64> {
    let d = host.dom(dom)?;
    match d.meta.guest_type {
        GuestType::Pv => {
            let b = host.pv_vcpu(dom, 0)?.basic;
            let c =
                crate::x86::vcpu::Context64::new(&b).map_err(|e| HvError::op(dom, "check", e))?;
            Ok(c.reg(crate::x86::vcpu::Reg::R12))
        }
        GuestType::Hvm => {
            let blob = host.hvm_context(dom)?;
            let r = super::hvmctx::cpu_record(&blob, 0)?;
            Ok(super::hvmctx::get(&blob[r], super::hvmctx::cpu::R12))
        }
    }
}

/// Pause the guest at a step boundary, run a fresh reference to the same
/// step, and compare RAM bit for bit. A guest that was running is unpaused
/// afterwards.
pub fn check(host: &SimHost, dom: DomId) -> Result<CheckReport> {
    let info = host.domain_info(dom)?;
    let was_running = !info.paused && info.shutdown.is_none();
    host.pause(dom)?;
    let r = (|| {
        let step = context_step(host, dom)?;
        let (d, frame_of) = side_of(host, dom)?;
        let cfg = reference_config(host, dom, &frame_of)?;
        let mut reference = Reference::new(&cfg)?;
        reference.run_to(step)?;
        let a = Side {
            ram: &d.view,
            frame_of,
            base: d.meta.mfn_base,
            _keep: &[],
        };
        let layout = Layout::new(d.meta.guest_type, d.pages());
        Ok(compare_sides(dom, step, layout, &a, &reference.side()))
    })();
    if was_running {
        host.unpause(dom)?;
    }
    r
}

/// Compare two domains (on the same or different hosts) in pfn space, e.g.
/// two guests run from the same seed to the same step.
pub fn compare(host_a: &SimHost, a: DomId, host_b: &SimHost, b: DomId) -> Result<CheckReport> {
    let (da, fa) = side_of(host_a, a)?;
    let (db, fb) = side_of(host_b, b)?;
    if da.meta.guest_type != db.meta.guest_type || da.pages() != db.pages() {
        return Err(HvError::Invalid {
            op: "compare",
            msg: format!(
                "domains differ in shape: {} {} pages vs {} {} pages",
                da.meta.guest_type,
                da.pages(),
                db.meta.guest_type,
                db.pages()
            ),
        });
    }
    let step = context_step(host_a, a)?;
    let layout = Layout::new(da.meta.guest_type, da.pages());
    let sa = Side {
        ram: &da.view,
        frame_of: fa,
        base: da.meta.mfn_base,
        _keep: &[],
    };
    let sb = Side {
        ram: &db.view,
        frame_of: fb,
        base: db.meta.mfn_base,
        _keep: &[],
    };
    Ok(compare_sides(a, step, layout, &sa, &sb))
}

/// Pfns a workload writes in steps `(from, to]` (for tests of the dirty log).
pub fn written_between(cfg: &GuestConfig, from: u64, to: u64) -> Result<Bitmap> {
    let mut r = Reference::new(cfg)?;
    r.run_to(from)?;
    r.run_to(to)
}
