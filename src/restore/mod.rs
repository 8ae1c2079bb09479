//! The restore engine: `xc_domain_restore` over the [`Hypervisor`] trait,
//! with the toolstack's steps (domain build, grant seeding, introduction to
//! xenstore) through [`Toolstack`].
//!
//! Records are applied as Xen applies them (docs/REFERENCE.md §10): pages and TSC
//! at once, HVM params at once (before the context), CPU policy at
//! STATIC_DATA_END, and the vCPUs, shared info, HVM context, pinning and the
//! guest's P2M at END. A domain the engine created is destroyed on any error.

mod limits;
mod pages;
mod pv;

pub use limits::{parse_size, Limits, FALLBACK_MAX_MEMORY};

use crate::bitmap::Bitmap;
use crate::hv::{
    CpuPolicy, DomId, DomainConfig, DomainSpec, GrantSeed, GuestType, Host, HvError, Hypervisor,
    PvVcpuState, Rings, Toolstack,
};
use crate::stats::{timed, RestoreStats, Timeline};
use crate::stream::{DomainType, LibxcReader, OverLimit, Record, StreamError, Unit, PAGE_SIZE};
use crate::x86::X86Error;
use std::collections::BTreeMap;
use std::io::Read;

/// Errors of the restore engine.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("reading the stream: {0}")]
    Stream(StreamError),
    #[error(transparent)]
    Hv(#[from] HvError),
    #[error("record #{index} ({rtype}) at offset {offset:#x}: {msg}")]
    Record {
        index: u64,
        rtype: &'static str,
        offset: u64,
        msg: String,
    },
    // Not a `source`: its text is part of this error's.
    #[error("{what}: {error}")]
    X86 { what: String, error: X86Error },
    #[error("stream incomplete: {0}")]
    Missing(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Hook(String),
    /// A signal asked to stop (checked before each record).
    #[error(transparent)]
    Cancelled(#[from] crate::cancel::Cancelled),
    /// The stream asks for more than the receiver allows.
    #[error(transparent)]
    Limit(#[from] OverLimit),
}

// By hand, not `#[from]`: the stream error is part of this one's text and
// must not be reported again as its cause.
impl From<StreamError> for RestoreError {
    fn from(e: StreamError) -> Self {
        RestoreError::Stream(e)
    }
}

/// HVM params with special handling (xen/include/public/hvm/params.h).
pub mod hvm_param {
    pub const STORE_PFN: u32 = 1;
    pub const STORE_EVTCHN: u32 = 2;
    pub const PAE_ENABLED: u32 = 4;
    pub const IOREQ_PFN: u32 = 5;
    pub const BUFIOREQ_PFN: u32 = 6;
    pub const CONSOLE_PFN: u32 = 17;
    pub const CONSOLE_EVTCHN: u32 = 18;
}

/// Where the restored guest goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Create a domain (destroyed again on failure). `max_pfn` may be unknown
    /// for PV streams (the P2M_FRAMES record tells).
    New {
        name: String,
        max_pfn: Option<u64>,
        max_vcpu_id: u32,
        /// The image's xl config (it tells PVH from HVM; HVM streams do not).
        config: Option<DomainConfig>,
    },
    /// A domain the toolstack already built (libxl's restore).
    Existing(DomId),
}

/// The argv facts libxl hands the save-helper for a restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreParams {
    pub store_evtchn: u32,
    pub store_domid: u32,
    pub console_evtchn: u32,
    pub console_domid: u32,
}

/// Callbacks to the caller during a restore.
pub trait RestoreHooks {
    /// libxl's static_data_done: `missing` bit 0 = no CPUID policy, bit 1 = no MSR policy.
    fn static_data_done(&mut self, _missing: u32) -> Result<(), RestoreError> {
        Ok(())
    }
    /// Progress: pages restored so far.
    fn progress(&mut self, _pages: u64) {}
}

pub struct NoHooks;
impl RestoreHooks for NoHooks {}

/// What a finished restore reports (libxl's restore_results).
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreOutcome {
    pub domid: DomId,
    pub store_gfn: u64,
    pub console_gfn: u64,
    pub pages: u64,
    /// The receiver's marks from the end of the page data on (`rx:…`), for
    /// the downtime's parts; the caller adds its own (device model, unpause).
    pub timeline: Timeline,
    /// Where the time of the page data went.
    pub stats: RestoreStats,
}

/// Restore one libxc stream (headers already read by `reader`) up to and
/// including its END record, within the host's default [`Limits`]. Nothing
/// past END is read. The domain is left paused.
pub fn restore<'h, R: Read>(
    host: impl Into<Host<'h>>,
    reader: &mut LibxcReader<R>,
    target: Target,
    params: RestoreParams,
    hooks: &mut dyn RestoreHooks,
) -> Result<RestoreOutcome, RestoreError> {
    let host = host.into();
    let limits = Limits::for_host(host.hv);
    restore_limited(host, reader, target, params, hooks, &limits)
}

/// As [`restore`], within `limits`: the guest's size (from the target or
/// the stream) is checked before the domain is created, and every record
/// against that size as it arrives.
pub fn restore_limited<'h, R: Read>(
    host: impl Into<Host<'h>>,
    reader: &mut LibxcReader<R>,
    target: Target,
    params: RestoreParams,
    hooks: &mut dyn RestoreHooks,
    limits: &Limits,
) -> Result<RestoreOutcome, RestoreError> {
    let host = host.into();
    let guest_type = match reader.domain_header().domain_type {
        DomainType::X86Pv => GuestType::Pv,
        DomainType::X86Hvm => GuestType::Hvm,
    };
    let mut r = Restorer::new(host, guest_type, target, params, limits.clone());
    let result = r.run(reader, hooks);
    match result {
        Ok(out) => Ok(out),
        Err(e) => {
            if let (Some(dom), true) = (r.dom, r.created) {
                if let Err(de) = host.hv.destroy(dom) {
                    log::error!("restore failed and destroying domain {dom} failed too: {de}");
                } else {
                    log::info!("restore failed: destroyed half-built domain {dom}");
                }
            }
            Err(e)
        }
    }
}

pub(crate) struct Restorer<'a> {
    hv: &'a dyn Hypervisor,
    ts: &'a dyn Toolstack,
    guest_type: GuestType,
    target: Option<Target>,
    params: RestoreParams,
    pub(crate) dom: Option<DomId>,
    pub(crate) created: bool,
    limits: Limits,
    /// Highest pfn of the guest as the stream has shown it so far.
    max_pfn: u64,
    /// Highest pfn the stream may ever name: the guest's size as the
    /// receiver knows it (config or stream, capped by the limits) and, for
    /// HVM, the room above its RAM ([`Limits::hvm_pfn_cap`]).
    pfn_cap: u64,
    /// Highest vCPU id the guest may have.
    max_vcpu_id: u32,
    /// Pfns populated so far; its length grows by doubling, up to `pfn_cap`.
    populated: Bitmap,
    pv: Option<pv::PvRestore>,
    verify_mode: bool,
    cpu_policy: CpuPolicy,
    hvm_context: Option<Vec<u8>>,
    /// The last value of each HVM param (the host refuses unknown indices).
    hvm_params: BTreeMap<u32, u64>,
    /// Records of the kinds [`Restorer::count_once_records`] counts.
    once_counts: [u64; 4],
    pages: u64,
    /// PAGE_DATA work space, kept across records.
    scratch: pages::Scratch,
    /// The last record was PAGE_DATA (the next other one starts the tail).
    in_pages: bool,
    timeline: Timeline,
    /// The page data's counts and times.
    stats: RestoreStats,
}

/// Most records of a kind Xen writes once per stream (TSC info, shared
/// info, HVM context, HVM params) a stream may carry.
const MAX_ONCE_RECORDS: u64 = 64;

impl<'a> Restorer<'a> {
    fn new(
        host: Host<'a>,
        guest_type: GuestType,
        target: Target,
        params: RestoreParams,
        limits: Limits,
    ) -> Self {
        let max_vcpu_id = match &target {
            Target::New { max_vcpu_id, .. } => *max_vcpu_id,
            // Known once the domain is looked at, before any record.
            Target::Existing(_) => 0,
        };
        let pfn_cap = match guest_type {
            GuestType::Pv => limits.max_pages().saturating_sub(1),
            GuestType::Hvm => Limits::hvm_pfn_cap(limits.max_pages()),
        };
        Restorer {
            hv: host.hv,
            ts: host.ts,
            guest_type,
            target: Some(target),
            params,
            dom: None,
            created: false,
            limits,
            max_pfn: 0,
            pfn_cap,
            max_vcpu_id,
            populated: Bitmap::new(0),
            pv: None,
            verify_mode: false,
            cpu_policy: CpuPolicy::default(),
            hvm_context: None,
            hvm_params: BTreeMap::new(),
            once_counts: [0; 4],
            pages: 0,
            scratch: pages::Scratch::default(),
            in_pages: false,
            timeline: Timeline::default(),
            stats: RestoreStats::default(),
        }
    }

    /// The domain, creating it now if the target is new and its size known
    /// (`max_pfn`: the P2M's end, for a PV stream without a config).
    fn ensure_domain(&mut self, max_pfn: Option<u64>) -> Result<DomId, RestoreError> {
        if let Some(d) = self.dom {
            return Ok(d);
        }
        let dom = match self.target.take() {
            Some(Target::Existing(d)) => {
                let info = self.hv.domain_info(d)?;
                if info.guest_type != self.guest_type {
                    return Err(RestoreError::Unsupported(format!(
                        "stream holds a {} guest but domain {d} is {}",
                        self.guest_type, info.guest_type
                    )));
                }
                // The toolstack built this domain: its size stands. The
                // stream may size a domain it left empty, within what the
                // toolstack granted it and the receiver's limits.
                let granted = self.hv.domain_max_memory(d)? / PAGE_SIZE as u64;
                let cap = self.limits.granted_pfn_cap(self.guest_type, granted);
                self.pfn_cap = info.max_pfn.max(cap);
                log::debug!(
                    "domain {d}: {granted} pages granted, stream pfns up to {:#x}",
                    self.pfn_cap
                );
                self.max_vcpu_id = info.max_vcpu_id;
                self.max_pfn = match max_pfn {
                    Some(m) => self
                        .check_pfn("X86_PV_P2M_FRAMES end_pfn", m)?
                        .max(info.max_pfn),
                    None => info.max_pfn,
                };
                d
            }
            Some(Target::New {
                name,
                max_pfn: spec_max,
                max_vcpu_id,
                config,
            }) => {
                let (max, what) = match (spec_max, max_pfn) {
                    (Some(m), _) => (m, "the guest's memory size (config max_memkb or --memory)"),
                    (None, Some(m)) => (m, "X86_PV_P2M_FRAMES end_pfn"),
                    (None, None) => {
                        return Err(RestoreError::Missing(
                            "the size of the guest is unknown: an HVM stream without a domain \
                             config needs the guest's memory size (--memory)"
                                .into(),
                        ))
                    }
                };
                // Nothing is created for a guest bigger than the receiver allows.
                self.limits.check_pages(what, max.saturating_add(1))?;
                self.limits
                    .check_vcpus("the guest's vCPU count (config max_vcpus)", max_vcpu_id)?;
                self.pfn_cap = match self.guest_type {
                    GuestType::Pv => max,
                    GuestType::Hvm => Limits::hvm_pfn_cap(max + 1),
                };
                self.max_vcpu_id = max_vcpu_id;
                let built = self.ts.build_domain(&DomainSpec {
                    name,
                    guest_type: self.guest_type,
                    max_pfn: max,
                    max_vcpu_id,
                    config,
                })?;
                self.created = true;
                self.max_pfn = max;
                // The toolstack that built the domain made its rings' event
                // channels; the guest must be told those.
                self.params.store_evtchn = built.channels.store_port;
                self.params.console_evtchn = built.channels.console_port;
                built.domid
            }
            None => return Err(RestoreError::Missing("no restore target".into())),
        };
        self.dom = Some(dom);
        self.populated = Bitmap::new(self.max_pfn + 1);
        Ok(dom)
    }

    /// Records Xen's saver writes once per stream (once per checkpoint, and
    /// checkpointed streams are refused) each cost a call to the host: a
    /// stream repeating them is refused after [`MAX_ONCE_RECORDS`].
    fn count_once_records(&mut self, rec: &Record) -> Result<(), OverLimit> {
        let slot = match rec {
            Record::X86TscInfo(_) => 0,
            Record::SharedInfo(_) => 1,
            Record::HvmContext(_) => 2,
            Record::HvmParams(_) => 3,
            _ => return Ok(()),
        };
        self.once_counts[slot] += 1;
        OverLimit::check(
            &format!("the count of {} records", rec.name()),
            self.once_counts[slot],
            MAX_ONCE_RECORDS,
            Unit::Items,
        )
    }

    /// `pfn`, named by `what`, is within what the stream may name.
    fn check_pfn(&self, what: &str, pfn: u64) -> Result<u64, OverLimit> {
        OverLimit::check(what, pfn, self.pfn_cap, Unit::Pfn)
            .map_err(|e| e.bound("the highest pfn the receiver allows this guest"))?;
        Ok(pfn)
    }

    /// A vCPU record's id is one of the guest's.
    fn check_vcpu(&self, id: u32) -> Result<(), OverLimit> {
        OverLimit::check("vCPU id", id.into(), self.max_vcpu_id.into(), Unit::Items)
            .map_err(|e| e.bound("the guest's highest vCPU id"))
    }

    fn run<R: Read>(
        &mut self,
        reader: &mut LibxcReader<R>,
        hooks: &mut dyn RestoreHooks,
    ) -> Result<RestoreOutcome, RestoreError> {
        // HVM domains (and targets of known size) exist before any record.
        if self.guest_type == GuestType::Hvm
            || matches!(self.target, Some(Target::Existing(_)))
            || matches!(
                self.target,
                Some(Target::New {
                    max_pfn: Some(_),
                    ..
                })
            )
        {
            self.ensure_domain(None)?;
        }
        let started = std::time::Instant::now();
        loop {
            crate::cancel::check()?;
            let offset = reader.offset();
            let index = reader.record_index();
            reader.set_caps(self.limits.read_caps(self.pfn_cap));
            let static_before = reader.static_data_ended();
            let Some(rec) = timed(&mut self.stats.times.read_ms, || reader.next_record())? else {
                return Err(RestoreError::Missing("stream ended before END".into()));
            };
            let rtype = rec.name();
            // Where the memory ends and the records after it start.
            let is_pages = matches!(rec, Record::PageData(_));
            if std::mem::replace(&mut self.in_pages, is_pages) && !is_pages {
                self.timeline.mark("rx:pages");
            }
            let at = |msg: String| RestoreError::Record {
                index,
                rtype,
                offset,
                msg,
            };
            // The stream's rules say where static data ends (explicit in
            // v3, inferred in v2); the CPU policy is applied there.
            let crossed = !static_before && reader.static_data_ended();
            let result = self.apply(rec, crossed, hooks, &at);
            // The page buffer goes back to the reader for the next record.
            if let Some(buf) = self.scratch.take_page_buffer() {
                reader.recycle(buf);
            }
            match result {
                Ok(true) => {
                    self.timeline.mark("rx:end_record");
                    self.stats.total_ms = started.elapsed().as_secs_f64() * 1e3;
                    self.stats.pages = self.pages;
                    log::info!("restore: {}", self.stats);
                    break;
                }
                Ok(false) => {}
                Err(RestoreError::Hv(e)) => return Err(at(e.to_string())),
                Err(RestoreError::X86 { what, error }) => {
                    return Err(at(format!("{what}: {error}")))
                }
                Err(RestoreError::Limit(l)) => return Err(at(l.to_string())),
                Err(e) => return Err(e),
            }
        }
        self.complete()
    }

    /// Apply one record; Ok(true) at END. `static_data_end`: this record
    /// ends the static data (the reader's rules tell).
    ///
    /// The record order (one X86_PV_INFO, X86_PV_P2M_FRAMES after it, PV
    /// records only in PV streams, HVM records only in HVM ones, …) is the
    /// reader's: it refuses a stream that breaks it before the record
    /// reaches here.
    fn apply(
        &mut self,
        rec: Record,
        static_data_end: bool,
        hooks: &mut dyn RestoreHooks,
        at: &dyn Fn(String) -> RestoreError,
    ) -> Result<bool, RestoreError> {
        self.count_once_records(&rec)?;
        if static_data_end {
            self.static_data_end(hooks)?;
        }
        match rec {
            Record::End => return Ok(true),
            Record::PageData(mut pd) => {
                if self.dom.is_none() {
                    return Err(at("page data before the P2M_FRAMES record".into()));
                }
                self.stats.page_records += 1;
                let done = self.page_data(&mut pd, at);
                self.scratch.keep_page_buffer(pd.data);
                done?;
                hooks.progress(self.pages);
            }
            Record::X86PvInfo {
                guest_width,
                pt_levels,
            } => {
                if (guest_width, pt_levels) != (8, 4) {
                    return Err(at(format!(
                        "{}-bit PV guests with {pt_levels}-level page tables are not supported \
                         (only 64-bit, 4-level)",
                        guest_width as u32 * 8
                    )));
                }
            }
            Record::X86PvP2mFrames {
                start_pfn,
                end_pfn,
                frames,
            } => {
                if start_pfn != 0 {
                    return Err(at(format!(
                        "P2M frames starting at pfn {start_pfn:#x} are not supported (Xen writes 0)"
                    )));
                }
                let dom = self.ensure_domain(Some(end_pfn as u64))?;
                if (end_pfn as u64) > self.max_pfn && !self.created {
                    // A PV domain the toolstack built has no P2M yet (Xen
                    // reports max pfn 0): the stream sizes it, as in Xen.
                    self.check_pfn("X86_PV_P2M_FRAMES end_pfn", end_pfn.into())?;
                    self.grow(end_pfn as u64);
                }
                if (end_pfn as u64) > self.max_pfn {
                    return Err(at(format!(
                        "P2M ends at pfn {end_pfn:#x} beyond the domain's max pfn {:#x}",
                        self.max_pfn
                    )));
                }
                let width_ok = self.hv.guest_width(dom)?;
                if width_ok != 8 {
                    self.hv.set_guest_width(dom, 8)?;
                }
                let max = self.max_pfn;
                self.pv_state()
                    .set_p2m_frames(end_pfn as u64, max, frames, at)?;
            }
            Record::X86PvVcpuBasic(v) => {
                self.check_vcpu(v.vcpu_id)?;
                self.pv_state().vcpu(v.vcpu_id).basic = v.blob
            }
            Record::X86PvVcpuExtended(v) => {
                self.check_vcpu(v.vcpu_id)?;
                self.pv_state().vcpu(v.vcpu_id).extended = v.blob
            }
            Record::X86PvVcpuXsave(v) => {
                self.check_vcpu(v.vcpu_id)?;
                self.pv_state().vcpu(v.vcpu_id).xsave = v.blob
            }
            Record::X86PvVcpuMsrs(v) => {
                self.check_vcpu(v.vcpu_id)?;
                self.pv_state().vcpu(v.vcpu_id).msrs = v.blob
            }
            Record::SharedInfo(page) => self.pv_state().shared_info = Some(page),
            Record::X86TscInfo(t) => {
                let dom = self.domain(at)?;
                self.hv.set_tsc_info(dom, &t)?;
            }
            Record::HvmContext(blob) => self.hvm_context = Some(blob),
            Record::HvmParams(params) => self.hvm_params(&params, at)?,
            Record::Verify => self.verify_mode = true,
            Record::Checkpoint | Record::CheckpointDirtyPfnList(_) => {
                return Err(RestoreError::Unsupported(
                    "checkpointed streams (Remus/COLO) are not supported by rxmigrate; \
                     the stock helper handles them"
                        .into(),
                ))
            }
            Record::StaticDataEnd => {}
            Record::X86CpuidPolicy(b) => self.cpu_policy.cpuid = b,
            Record::X86MsrPolicy(b) => self.cpu_policy.msrs = b,
            Record::UnknownOptional { rtype, length } => {
                log::info!("skipping optional record type {rtype:#x} ({length} bytes)");
            }
        }
        Ok(false)
    }

    /// An HVM guest's frames go beyond its RAM (video RAM, the special
    /// pages below 4 GiB): Xen's restore grows with the stream, so does
    /// this one, up to the guest's pfn cap. The host still refuses frames
    /// it cannot back.
    pub(super) fn fit_hvm(&mut self, what: &str, pfn: u64) -> Result<(), OverLimit> {
        if self.guest_type == GuestType::Hvm && pfn > self.max_pfn {
            self.check_pfn(what, pfn)?;
            self.grow(pfn);
        }
        Ok(())
    }

    /// Raise the guest's size to `max_pfn` (within `pfn_cap`), keeping what
    /// is populated. The bitmap at least doubles, so that a stream raising
    /// its top pfn record after record costs amortised O(1) per record.
    fn grow(&mut self, max_pfn: u64) {
        self.max_pfn = max_pfn;
        let want = max_pfn.saturating_add(1);
        if want > self.populated.len() {
            let doubled = self
                .populated
                .len()
                .saturating_mul(2)
                .min(self.pfn_cap.saturating_add(1));
            self.populated.grow_to(want.max(doubled));
        }
    }

    fn domain(&self, at: &dyn Fn(String) -> RestoreError) -> Result<DomId, RestoreError> {
        self.dom
            .ok_or_else(|| at("record arrived before the domain could be created".into()))
    }

    /// The PV state (the reader admits PV records in PV streams only).
    fn pv_state(&mut self) -> &mut pv::PvRestore {
        self.pv.get_or_insert_with(pv::PvRestore::default)
    }

    /// STATIC_DATA_END, explicit (v3) or inferred (v2): apply the CPU policy
    /// and tell the caller what was missing.
    fn static_data_end(&mut self, hooks: &mut dyn RestoreHooks) -> Result<(), RestoreError> {
        let mut missing = 0;
        if self.cpu_policy.cpuid.is_empty() {
            missing |= 1;
        }
        if self.cpu_policy.msrs.is_empty() {
            missing |= 2;
        }
        if missing != 3 {
            if let Some(dom) = self.dom {
                self.hv.set_cpu_policy(dom, &self.cpu_policy)?;
            }
        }
        hooks.static_data_done(missing)
    }

    fn hvm_params(
        &mut self,
        params: &[(u64, u64)],
        at: &dyn Fn(String) -> RestoreError,
    ) -> Result<(), RestoreError> {
        let dom = self.domain(at)?;
        for &(idx, val) in params {
            let idx32 = u32::try_from(idx)
                .map_err(|_| at(format!("HVM param index {idx:#x} out of range")))?;
            match idx32 {
                hvm_param::PAE_ENABLED => continue,
                hvm_param::STORE_PFN
                | hvm_param::CONSOLE_PFN
                | hvm_param::IOREQ_PFN
                | hvm_param::BUFIOREQ_PFN => {
                    // The toolstack rebuilds these rings: they start zeroed.
                    self.fit_hvm(&format!("HVM param {idx32} (a ring's pfn)"), val)?;
                    if val > self.max_pfn {
                        return Err(at(format!(
                            "HVM param {idx32} points at pfn {val:#x} beyond the guest ({:#x})",
                            self.max_pfn
                        )));
                    }
                    self.ensure_populated(&[val])?;
                    let mut m = self.hv.map_pages(dom, &[val], true)?;
                    m.page_mut(0).fill(0);
                }
                _ => {}
            }
            self.hv.set_hvm_param(dom, idx32, val)?;
            self.hvm_params.insert(idx32, val);
        }
        Ok(())
    }

    fn complete(&mut self) -> Result<RestoreOutcome, RestoreError> {
        let dom = self
            .dom
            .ok_or_else(|| RestoreError::Missing("the stream carried no guest memory".into()))?;
        let (store_gfn, console_gfn) = match self.guest_type {
            GuestType::Pv => {
                let pv = self
                    .pv
                    .take()
                    .ok_or_else(|| RestoreError::Missing("PV stream without PV records".into()))?;
                pv.complete(self.hv, dom, self.max_pfn, &self.params, &mut self.timeline)?
            }
            GuestType::Hvm => {
                self.hv.set_hvm_param(
                    dom,
                    hvm_param::STORE_EVTCHN,
                    self.params.store_evtchn as u64,
                )?;
                self.hv.set_hvm_param(
                    dom,
                    hvm_param::CONSOLE_EVTCHN,
                    self.params.console_evtchn as u64,
                )?;
                let ctx = self
                    .hvm_context
                    .take()
                    .ok_or_else(|| RestoreError::Missing("no HVM_CONTEXT record".into()))?;
                self.hv.set_hvm_context(dom, &ctx)?;
                self.timeline.mark("rx:hvm_context");
                let get = |i: u32| self.hvm_params.get(&i).copied().unwrap_or(0);
                (get(hvm_param::STORE_PFN), get(hvm_param::CONSOLE_PFN))
            }
        };
        self.ts.seed_grant_table(
            dom,
            &GrantSeed {
                console_gfn,
                console_domid: self.params.console_domid,
                store_gfn,
                store_domid: self.params.store_domid,
            },
        )?;
        self.timeline.mark("rx:grant_table");
        if self.created {
            self.ts.restore_finished(
                dom,
                &Rings {
                    store_gfn,
                    console_gfn,
                },
            )?;
            self.timeline.mark("rx:finished");
        }
        Ok(RestoreOutcome {
            domid: dom,
            store_gfn,
            console_gfn,
            pages: self.pages,
            timeline: std::mem::take(&mut self.timeline),
            stats: std::mem::take(&mut self.stats),
        })
    }
}

/// vCPU blobs stashed until END, by vCPU id.
pub(crate) type VcpuStash = BTreeMap<u32, PvVcpuState>;
