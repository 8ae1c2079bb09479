//! The save engine: `xc_domain_save` over the [`Hypervisor`] trait.
//!
//! Layout of what it writes (docs/REFERENCE.md §6.1): headers, PV_INFO (PV), CPU
//! policy, STATIC_DATA_END, P2M_FRAMES (PV), PAGE_DATA rounds, then TSC_INFO
//! and either SHARED_INFO + vCPU records (PV) or HVM_CONTEXT + HVM_PARAMS
//! (HVM), END. Log-dirty is switched off again on every path.

mod pager;
pub mod rounds;

use crate::hv::{DomId, GuestType, HvError, Hypervisor};
use crate::precopy::Policy;
use crate::stats::{RoundStats, Summary};
use crate::stream::{DomainHeader, DomainType, LibxcWriter, Record, StreamError, VcpuRecord};
use crate::x86::X86Error;
use pager::HvPager;
use std::io::Write;
use std::time::Instant;

/// Errors of the save engine.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    Hv(#[from] HvError),
    #[error("writing the stream: {0}")]
    Stream(#[from] StreamError),
    #[error("pfn {pfn:#x}: {source}")]
    PageTable {
        pfn: u64,
        #[source]
        source: X86Error,
    },
    #[error("vCPU {vcpu}: {source}")]
    Vcpu {
        vcpu: u32,
        #[source]
        source: X86Error,
    },
    #[error("guest did not suspend: {0}")]
    Suspend(String),
    #[error("unsupported guest: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Hook(String),
    /// A signal asked to stop (checked between batches and rounds).
    #[error(transparent)]
    Cancelled(#[from] crate::cancel::Cancelled),
}

/// HVM params saved, in the order Xen's `write_hvm_params` queries them.
pub const SAVED_HVM_PARAMS: &[u32] = &[1, 5, 6, 27, 28, 29, 37, 17, 19, 9, 12, 34, 32, 33, 36, 38];

/// What the caller (CLI, migration, save-helper) does at the engine's request.
pub trait SaveHooks {
    /// Stop the guest for the final round; must leave it in SHUTDOWN_suspend.
    fn suspend(&mut self, hv: &dyn Hypervisor, dom: DomId) -> Result<(), SaveError> {
        hv.suspend(dom)
            .map_err(|e| SaveError::Suspend(e.to_string()))
    }
    /// libxl's switch_qemu_logdirty for HVM guests.
    fn switch_qemu_logdirty(&mut self, _dom: DomId, _enable: bool) -> Result<(), SaveError> {
        Ok(())
    }
    fn round_done(&mut self, _stats: &RoundStats) {}
    /// Pages written so far out of a round's total.
    fn progress(&mut self, _done: u64, _total: u64) {}
}

/// The default hooks: suspend through the hypervisor, nothing else.
pub struct DirectHooks;
impl SaveHooks for DirectHooks {}

#[derive(Debug, Clone, Copy, Default)]
pub struct SaveOptions {
    /// Pre-copy while the guest runs (xl migrate) or suspend first (xl save).
    pub live: bool,
}

/// Result of a save: statistics and the rounds.
#[derive(Debug, Clone)]
pub struct SaveOutcome {
    pub summary: Summary,
    pub rounds: Vec<RoundStats>,
    /// When the guest was suspended (start of downtime).
    pub suspended_at: Instant,
}

/// Save domain `dom` as one libxc stream into `out`. On success the guest is
/// left suspended (the caller destroys it or resumes it); on failure it may be
/// running or suspended, and the caller resumes it (see `migrate`).
pub fn save<W: Write>(
    hv: &dyn Hypervisor,
    dom: DomId,
    out: W,
    policy: &mut dyn Policy,
    opts: SaveOptions,
    hooks: &mut dyn SaveHooks,
) -> Result<(SaveOutcome, W), SaveError> {
    let started = Instant::now();
    let mut info = hv.domain_info(dom)?;
    let (major, minor) = hv.xen_version();
    let header = DomainHeader {
        domain_type: match info.guest_type {
            GuestType::Pv => DomainType::X86Pv,
            GuestType::Hvm => DomainType::X86Hvm,
        },
        page_shift: 12,
        xen_major: major,
        xen_minor: minor,
    };
    let mut w = LibxcWriter::new(out, &header)?;

    // Static data: what does not change while the guest runs.
    if info.guest_type == GuestType::Pv {
        let width = hv.guest_width(dom)?;
        if width != 8 {
            return Err(SaveError::Unsupported(format!(
                "domain {dom} is a {}-bit PV guest; only 64-bit PV guests are supported",
                width * 8
            )));
        }
        w.write_record(&Record::X86PvInfo {
            guest_width: 8,
            pt_levels: 4,
        })?;
    }
    let policy_blobs = hv.cpu_policy(dom)?;
    if !policy_blobs.cpuid.is_empty() {
        w.write_record(&Record::X86CpuidPolicy(policy_blobs.cpuid))?;
    }
    if !policy_blobs.msrs.is_empty() {
        w.write_record(&Record::X86MsrPolicy(policy_blobs.msrs))?;
    }
    w.write_record(&Record::StaticDataEnd)?;

    let mut pager = HvPager::new(hv, dom, &info, w, hooks)?;
    if let Some(n) = pager.pv_p2m_size() {
        info.max_pfn = n - 1;
    }
    if let Some(frames) = pager.p2m_frames() {
        pager.writer().write_record(&Record::X86PvP2mFrames {
            start_pfn: 0,
            end_pfn: u32::try_from(info.max_pfn).map_err(|_| {
                SaveError::Unsupported(format!("max_pfn {:#x} exceeds 32 bits", info.max_pfn))
            })?,
            frames,
        })?;
    }

    let outcome = run_engine(&mut pager, policy, &info, opts);
    let (w, hooks) = pager.finish();
    let outcome = outcome?;
    let mut w = w;
    write_tail(hv, dom, &info, &mut w)?;
    let out = w.finish()?;

    let last = outcome.rounds.last();
    let summary = Summary {
        policy: if opts.live {
            policy.name().to_string()
        } else {
            "non-live".into()
        },
        guest_pages: info.p2m_size(),
        rounds: outcome.rounds.len() as u32,
        total_pages_sent: outcome.total_pages_sent,
        total_bytes: 0, // filled in by the caller, who knows the whole stream
        total_time_ms: started.elapsed().as_secs_f64() * 1e3,
        downtime_ms: outcome.suspended_at.elapsed().as_secs_f64() * 1e3,
        final_round_pages: last.map_or(0, |r| r.pages_sent),
        hot_pages_final: outcome.hot_pages_final,
    };
    let _ = hooks;
    Ok((
        SaveOutcome {
            summary,
            rounds: outcome.rounds,
            suspended_at: outcome.suspended_at,
        },
        out,
    ))
}

/// The rounds, with log-dirty switched on for them and off again afterwards
/// whatever happens.
fn run_engine<W: Write>(
    pager: &mut HvPager<'_, W>,
    policy: &mut dyn Policy,
    info: &crate::hv::DomainInfo,
    opts: SaveOptions,
) -> Result<rounds::RoundsOutcome, SaveError> {
    let hvm = info.guest_type == GuestType::Hvm;
    // Xen tells the device model even for a non-live save.
    if hvm {
        pager.hooks().switch_qemu_logdirty(info.domid, true)?;
    }
    let result = if opts.live {
        pager
            .logdirty_enable()
            .and_then(|()| rounds::run_live(pager, policy, info.p2m_size()))
    } else {
        rounds::run_nonlive(pager, info.p2m_size())
    };
    let off = pager.logdirty_disable();
    let qemu_off = if hvm {
        pager.hooks().switch_qemu_logdirty(info.domid, false)
    } else {
        Ok(())
    };
    let outcome = result?;
    off?;
    qemu_off?;
    Ok(outcome)
}

/// Records after the memory: `end_of_checkpoint` in Xen's terms.
fn write_tail<W: Write>(
    hv: &dyn Hypervisor,
    dom: DomId,
    info: &crate::hv::DomainInfo,
    w: &mut LibxcWriter<W>,
) -> Result<(), SaveError> {
    w.write_record(&Record::X86TscInfo(hv.tsc_info(dom)?))?;
    match info.guest_type {
        GuestType::Pv => {
            w.write_record(&Record::SharedInfo(hv.shared_info(dom)?))?;
            let p2m = hv.pv_p2m(dom)?;
            let m2p = pager::invert_p2m(&p2m.p2m);
            for &v in &info.online_vcpus {
                let st = hv.pv_vcpu(dom, v)?;
                let mut basic = st.basic;
                crate::x86::vcpu::normalise_basic(&mut basic, v, |mfn| m2p.get(&mfn).copied())
                    .map_err(|source| SaveError::Vcpu { vcpu: v, source })?;
                w.write_record(&Record::X86PvVcpuBasic(VcpuRecord {
                    vcpu_id: v,
                    blob: basic,
                }))?;
                if !st.extended.is_empty() {
                    w.write_record(&Record::X86PvVcpuExtended(VcpuRecord {
                        vcpu_id: v,
                        blob: st.extended,
                    }))?;
                }
                if !st.xsave.is_empty() {
                    w.write_record(&Record::X86PvVcpuXsave(VcpuRecord {
                        vcpu_id: v,
                        blob: st.xsave,
                    }))?;
                }
                if !st.msrs.is_empty() {
                    w.write_record(&Record::X86PvVcpuMsrs(VcpuRecord {
                        vcpu_id: v,
                        blob: st.msrs,
                    }))?;
                }
            }
        }
        GuestType::Hvm => {
            w.write_record(&Record::HvmContext(hv.hvm_context(dom)?))?;
            let mut params = Vec::new();
            for &idx in SAVED_HVM_PARAMS {
                let v = hv.hvm_param(dom, idx)?;
                if v != 0 {
                    params.push((idx as u64, v));
                }
            }
            if !params.is_empty() {
                w.write_record(&Record::HvmParams(params))?;
            }
        }
    }
    Ok(())
}
