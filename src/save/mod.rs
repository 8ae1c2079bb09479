//! The save engine: `xc_domain_save` over the [`Hypervisor`] trait.
//!
//! Layout of what it writes (docs/REFERENCE.md §6.1): headers, PV_INFO (PV), CPU
//! policy, STATIC_DATA_END, P2M_FRAMES (PV), PAGE_DATA rounds, then TSC_INFO
//! and either SHARED_INFO + vCPU records (PV) or HVM_CONTEXT + HVM_PARAMS
//! (HVM), END. Log-dirty is switched off again on every path.
//!
//! Module map: `ops` (what differs per guest type, as Xen's
//! `xc_sr_save_ops`) with `pv` and `hvm`; `pager` (pages into PAGE_DATA
//! records, zero pages as XALLOC); `rounds` (the pre-copy loop);
//! `throttle` (auto-converge's scheduler cap, put back on every path).

mod hvm;
mod ops;
mod pager;
mod pv;
pub mod rounds;
pub mod throttle;

use crate::hv::{DomId, GuestType, HvError, Hypervisor};
use crate::precopy::Policy;
use crate::stats::{downtime_parts, instant_ms, RoundStats, Summary, Timeline};
use crate::stream::{DomainHeader, LibxcWriter, Record, StreamError};
use crate::x86::X86Error;
use ops::SaveOps;
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
    /// The sender's marks after the suspend (`tx:…`), for the downtime's
    /// parts; the caller adds its own (the handshake).
    pub timeline: Timeline,
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
    // A live PV save needs shadow paging: refused before the guest is
    // touched (no log-dirty, no suspend), not halfway through.
    if opts.live && info.guest_type == GuestType::Pv && !hv.shadow_paging()? {
        return Err(crate::hv::HvError::NoShadowPaging { dom }.into());
    }
    let ops = ops::for_domain(hv, dom, &info)?;
    // The save covers the pfns the guest type says (a PV guest's P2M).
    info.max_pfn = ops.p2m_size() - 1;
    log::debug!(
        "domain {dom}: {:?} guest, {} pfns to cover ({} ms)",
        info.guest_type,
        ops.p2m_size(),
        started.elapsed().as_millis()
    );
    let (major, minor) = hv.xen_version();
    let header = DomainHeader {
        domain_type: ops.domain_type(),
        page_shift: 12,
        xen_major: major,
        xen_minor: minor,
    };
    let mut w = LibxcWriter::new(out, &header)?;

    // Static data: what does not change while the guest runs.
    for rec in ops.static_data() {
        w.write_record(&rec)?;
    }
    let policy_blobs = hv.cpu_policy(dom)?;
    if !policy_blobs.cpuid.is_empty() {
        w.write_record(&Record::X86CpuidPolicy(policy_blobs.cpuid))?;
    }
    if !policy_blobs.msrs.is_empty() {
        w.write_record(&Record::X86MsrPolicy(policy_blobs.msrs))?;
    }
    w.write_record(&Record::StaticDataEnd)?;
    for rec in ops.start_of_stream()? {
        w.write_record(&rec)?;
    }
    log::debug!(
        "static records written ({} ms)",
        started.elapsed().as_millis()
    );

    let mut pager = HvPager::new(hv, dom, ops.as_ref(), w, hooks);
    let outcome = run_engine(hv, &mut pager, policy, &info, opts);
    let zero_pages = pager.zero_pages_total();
    let xen_logdirty = pager.logdirty_is_on();
    let mut w = pager.finish();
    let outcome = outcome?;
    let mut timeline = Timeline::default();
    timeline.mark_at("tx:final_round", instant_ms(outcome.final_round_done));
    // The END record goes before log-dirty is switched off, as Xen's saver
    // does it: the receiver finishes while libxl asks the device model to
    // stop tracking (a QMP round trip in the pause), not after it.
    let tail =
        write_tail(hv, ops.as_ref(), &info, &mut w, &mut timeline).and_then(|()| Ok(w.finish()?));
    if tail.is_ok() {
        timeline.mark("tx:end");
    }
    let off = logdirty_off(hv, hooks, &info, xen_logdirty);
    timeline.mark("tx:logdirty_off");
    let out = tail?;
    off?;

    let last = outcome.rounds.last();
    let suspended_ms = instant_ms(outcome.suspended_at);
    let summary = Summary {
        policy: if opts.live {
            policy.name().to_string()
        } else {
            "non-live".into()
        },
        guest_pages: info.p2m_size(),
        rounds: outcome.rounds.len() as u32,
        total_pages_sent: outcome.total_pages_sent,
        zero_pages,
        total_bytes: 0, // filled in by the caller, who knows the whole stream
        total_time_ms: started.elapsed().as_secs_f64() * 1e3,
        downtime_ms: outcome.suspended_at.elapsed().as_secs_f64() * 1e3,
        final_round_pages: last.map_or(0, |r| r.pages_sent),
        hot_pages_final: outcome.hot_pages_final,
        throttle_max_pct: outcome
            .rounds
            .iter()
            .map(|r| r.throttle_pct)
            .max()
            .unwrap_or(0),
        downtime_parts: downtime_parts(suspended_ms, &[&timeline]),
        suspended_ms,
    };
    Ok((
        SaveOutcome {
            summary,
            rounds: outcome.rounds,
            suspended_at: outcome.suspended_at,
            timeline,
        },
        out,
    ))
}

/// The rounds, with log-dirty switched on for them. On failure it is
/// switched off again here; on success it stays on until the stream's END
/// ([`logdirty_off`]).
fn run_engine<W: Write>(
    hv: &dyn Hypervisor,
    pager: &mut HvPager<'_, W>,
    policy: &mut dyn Policy,
    info: &crate::hv::DomainInfo,
    opts: SaveOptions,
) -> Result<rounds::RoundsOutcome, SaveError> {
    let hvm = info.guest_type == GuestType::Hvm;
    // Xen tells the device model even for a non-live save.
    if hvm {
        let t = Instant::now();
        pager.hooks().switch_qemu_logdirty(info.domid, true)?;
        log::debug!(
            "device model's dirty tracking on ({} ms)",
            t.elapsed().as_millis()
        );
    }
    let result = if opts.live {
        // Auto-converge's throttle, undone when the rounds end however they
        // end (and by the guard's drop after a panic).
        let mut throttle = throttle::Throttle::new(hv, info.domid, info.max_vcpu_id + 1);
        let t = Instant::now();
        let result = pager.logdirty_enable().and_then(|()| {
            log::debug!("log-dirty on ({} ms)", t.elapsed().as_millis());
            rounds::run_live_throttled(pager, policy, info.p2m_size(), &mut |pct| {
                throttle.apply(pct)
            })
        });
        if let Err(e) = throttle.restore() {
            log::error!("auto-converge: {e}");
        }
        result
    } else {
        rounds::run_nonlive(pager, info.p2m_size())
    };
    if result.is_err() {
        let off = pager.logdirty_disable();
        let qemu_off = if hvm {
            pager.hooks().switch_qemu_logdirty(info.domid, false)
        } else {
            Ok(())
        };
        // The rounds' error is the one to report; a failure to switch off
        // after it is logged.
        for e in [off, qemu_off].into_iter().filter_map(Result::err) {
            log::error!("after the failed save of domain {}: {e}", info.domid);
        }
    }
    result
}

/// Log-dirty off after a successful save: Xen's (if the rounds switched it
/// on) and the device model's (HVM). Both are tried; the first failure is
/// returned.
fn logdirty_off(
    hv: &dyn Hypervisor,
    hooks: &mut dyn SaveHooks,
    info: &crate::hv::DomainInfo,
    xen: bool,
) -> Result<(), SaveError> {
    let off = if xen {
        hv.logdirty_disable(info.domid).map_err(SaveError::from)
    } else {
        Ok(())
    };
    let qemu_off = if info.guest_type == GuestType::Hvm {
        hooks.switch_qemu_logdirty(info.domid, false)
    } else {
        Ok(())
    };
    off.and(qemu_off)
}

/// Records after the memory: `end_of_checkpoint` in Xen's terms.
fn write_tail<W: Write>(
    hv: &dyn Hypervisor,
    ops: &dyn SaveOps,
    info: &crate::hv::DomainInfo,
    w: &mut LibxcWriter<W>,
    timeline: &mut Timeline,
) -> Result<(), SaveError> {
    w.write_record(&Record::X86TscInfo(hv.tsc_info(info.domid)?))?;
    timeline.mark("tx:tsc_info");
    for rec in ops.end_of_checkpoint(hv, info, timeline)? {
        w.write_record(&rec)?;
    }
    timeline.mark("tx:tail_records");
    Ok(())
}
