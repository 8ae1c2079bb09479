//! The restore engine: `xc_domain_restore` over the [`Hypervisor`] trait.
//!
//! Records are applied as Xen applies them (reference §5.8): pages and TSC
//! at once, HVM params at once (before the context), CPU policy at
//! STATIC_DATA_END, and the vCPUs, shared info, HVM context, pinning and the
//! guest's P2M at END. A domain the engine created is destroyed on any error.

mod pages;
mod pv;

use crate::bitmap::Bitmap;
use crate::hv::{CpuPolicy, DomId, DomainSpec, GuestType, HvError, Hypervisor, PvVcpuState};
use crate::stream::{DomainType, LibxcReader, Record, StreamError};
use crate::x86::X86Error;
use std::collections::BTreeMap;
use std::io::Read;

/// Errors of the restore engine.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("reading the stream: {0}")]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Hv(#[from] HvError),
    #[error("record #{index} ({rtype}) at offset {offset:#x}: {msg}")]
    Record {
        index: u64,
        rtype: &'static str,
        offset: u64,
        msg: String,
    },
    #[error("{what}: {source}")]
    X86 {
        what: String,
        #[source]
        source: X86Error,
    },
    #[error("stream incomplete: {0}")]
    Missing(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Hook(String),
    /// A signal asked to stop (checked before each record).
    #[error(transparent)]
    Cancelled(#[from] crate::cancel::Cancelled),
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
        config: Option<serde_json::Value>,
        /// A PVH guest (HVM streams do not tell PVH from HVM).
        pvh: bool,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    pub domid: DomId,
    pub store_gfn: u64,
    pub console_gfn: u64,
    pub pages: u64,
}

/// Restore one libxc stream (headers already read by `reader`) up to and
/// including its END record. Nothing past END is read. The domain is left
/// paused.
pub fn restore<R: Read>(
    hv: &dyn Hypervisor,
    reader: &mut LibxcReader<R>,
    target: Target,
    params: RestoreParams,
    hooks: &mut dyn RestoreHooks,
) -> Result<RestoreOutcome, RestoreError> {
    let guest_type = match reader.domain_header().domain_type {
        DomainType::X86Pv => GuestType::Pv,
        DomainType::X86Hvm => GuestType::Hvm,
    };
    let mut r = Restorer::new(hv, guest_type, target, params);
    let result = r.run(reader, hooks);
    match result {
        Ok(out) => Ok(out),
        Err(e) => {
            if let (Some(dom), true) = (r.dom, r.created) {
                if let Err(de) = hv.destroy(dom) {
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
    guest_type: GuestType,
    target: Option<Target>,
    params: RestoreParams,
    pub(crate) dom: Option<DomId>,
    pub(crate) created: bool,
    max_pfn: u64,
    populated: Bitmap,
    pv: Option<pv::PvRestore>,
    verify_mode: bool,
    static_done: bool,
    cpu_policy: CpuPolicy,
    hvm_context: Option<Vec<u8>>,
    hvm_params: Vec<(u32, u64)>,
    pages: u64,
}

impl<'a> Restorer<'a> {
    fn new(
        hv: &'a dyn Hypervisor,
        guest_type: GuestType,
        target: Target,
        params: RestoreParams,
    ) -> Self {
        Restorer {
            hv,
            guest_type,
            target: Some(target),
            params,
            dom: None,
            created: false,
            max_pfn: 0,
            populated: Bitmap::new(0),
            pv: None,
            verify_mode: false,
            static_done: false,
            cpu_policy: CpuPolicy::default(),
            hvm_context: None,
            hvm_params: Vec::new(),
            pages: 0,
        }
    }

    /// The domain, creating it now if the target is new and its size known.
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
                self.max_pfn = max_pfn.unwrap_or(info.max_pfn).max(info.max_pfn);
                d
            }
            Some(Target::New {
                name,
                max_pfn: spec_max,
                max_vcpu_id,
                config,
                pvh,
            }) => {
                let Some(max) = max_pfn.or(spec_max) else {
                    return Err(RestoreError::Missing(
                        "the size of the guest is unknown: an HVM stream without a domain \
                         config needs the guest's memory size (--memory)"
                            .into(),
                    ));
                };
                let d = self.hv.create_domain(&DomainSpec {
                    name,
                    guest_type: self.guest_type,
                    max_pfn: max,
                    max_vcpu_id,
                    config,
                    pvh,
                })?;
                self.created = true;
                self.max_pfn = max;
                // A host that builds the domain itself also made its rings'
                // event channels; the guest must be told those.
                if let Some((store, console)) = self.hv.restore_channels(d)? {
                    self.params.store_evtchn = store;
                    self.params.console_evtchn = console;
                }
                d
            }
            None => return Err(RestoreError::Missing("no restore target".into())),
        };
        self.dom = Some(dom);
        self.populated = Bitmap::new(self.max_pfn + 1);
        Ok(dom)
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
        loop {
            crate::cancel::check()?;
            let offset = reader.offset();
            let index = reader.record_index();
            let Some(rec) = reader.next_record()? else {
                return Err(RestoreError::Missing("stream ended before END".into()));
            };
            let rtype = rec.name();
            let at = |msg: String| RestoreError::Record {
                index,
                rtype,
                offset,
                msg,
            };
            match self.apply(rec, hooks, &at) {
                Ok(true) => break,
                Ok(false) => {}
                Err(RestoreError::Hv(e)) => return Err(at(e.to_string())),
                Err(RestoreError::X86 { what, source }) => {
                    return Err(at(format!("{what}: {source}")))
                }
                Err(e) => return Err(e),
            }
        }
        self.complete()
    }

    /// Apply one record; Ok(true) at END.
    fn apply(
        &mut self,
        rec: Record,
        hooks: &mut dyn RestoreHooks,
        at: &dyn Fn(String) -> RestoreError,
    ) -> Result<bool, RestoreError> {
        match rec {
            Record::End => return Ok(true),
            Record::PageData(pd) => {
                self.static_data_end(hooks)?;
                if self.dom.is_none() {
                    return Err(at("page data before the P2M_FRAMES record".into()));
                }
                self.page_data(&pd, at)?;
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
                self.pv_state(at)?.width_seen(at)?;
            }
            Record::X86PvP2mFrames {
                start_pfn,
                end_pfn,
                frames,
            } => {
                self.static_data_end(hooks)?;
                if start_pfn != 0 {
                    return Err(at(format!(
                        "P2M frames starting at pfn {start_pfn:#x} are not supported (Xen writes 0)"
                    )));
                }
                let dom = self.ensure_domain(Some(end_pfn as u64))?;
                if (end_pfn as u64) > self.max_pfn && !self.created {
                    // A PV domain the toolstack built has no P2M yet (Xen
                    // reports max pfn 0): the stream sizes it, as in Xen.
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
                self.pv_state(at)?
                    .set_p2m_frames(end_pfn as u64, max, frames, at)?;
            }
            Record::X86PvVcpuBasic(v) => self.pv_state(at)?.vcpu(v.vcpu_id).basic = v.blob,
            Record::X86PvVcpuExtended(v) => self.pv_state(at)?.vcpu(v.vcpu_id).extended = v.blob,
            Record::X86PvVcpuXsave(v) => self.pv_state(at)?.vcpu(v.vcpu_id).xsave = v.blob,
            Record::X86PvVcpuMsrs(v) => self.pv_state(at)?.vcpu(v.vcpu_id).msrs = v.blob,
            Record::SharedInfo(page) => self.pv_state(at)?.shared_info = Some(page),
            Record::X86TscInfo(t) => {
                let dom = self.domain(at)?;
                self.hv.set_tsc_info(dom, &t)?;
            }
            Record::HvmContext(blob) => {
                self.hvm_only(at)?;
                self.hvm_context = Some(blob);
            }
            Record::HvmParams(params) => {
                self.hvm_only(at)?;
                self.hvm_params(&params, at)?;
            }
            Record::Verify => self.verify_mode = true,
            Record::Checkpoint | Record::CheckpointDirtyPfnList(_) => {
                return Err(RestoreError::Unsupported(
                    "checkpointed streams (Remus/COLO) are not supported by rxmigrate; \
                     the stock helper handles them"
                        .into(),
                ))
            }
            Record::StaticDataEnd => self.static_data_end(hooks)?,
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
    /// this one, up to 1 TiB of guest address space. The host still refuses
    /// frames it cannot back.
    pub(super) fn fit_hvm(&mut self, pfn: u64) {
        const HVM_PFN_LIMIT: u64 = 1 << 28;
        if self.guest_type == GuestType::Hvm && pfn > self.max_pfn && pfn < HVM_PFN_LIMIT {
            self.grow(pfn);
        }
    }

    /// Raise the guest's size to `max_pfn`, keeping what is populated.
    fn grow(&mut self, max_pfn: u64) {
        let mut b = Bitmap::new(max_pfn + 1);
        for p in self.populated.iter_ones() {
            b.set(p);
        }
        self.populated = b;
        self.max_pfn = max_pfn;
    }

    fn domain(&self, at: &dyn Fn(String) -> RestoreError) -> Result<DomId, RestoreError> {
        self.dom
            .ok_or_else(|| at("record arrived before the domain could be created".into()))
    }

    fn hvm_only(&self, at: &dyn Fn(String) -> RestoreError) -> Result<(), RestoreError> {
        if self.guest_type != GuestType::Hvm {
            return Err(at("HVM record in a PV stream".into()));
        }
        Ok(())
    }

    fn pv_state(
        &mut self,
        at: &dyn Fn(String) -> RestoreError,
    ) -> Result<&mut pv::PvRestore, RestoreError> {
        if self.guest_type != GuestType::Pv {
            return Err(at("PV record in an HVM stream".into()));
        }
        Ok(self.pv.get_or_insert_with(pv::PvRestore::default))
    }

    /// STATIC_DATA_END, explicit (v3) or inferred (v2): apply the CPU policy
    /// and tell the caller what was missing.
    fn static_data_end(&mut self, hooks: &mut dyn RestoreHooks) -> Result<(), RestoreError> {
        if std::mem::replace(&mut self.static_done, true) {
            return Ok(());
        }
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
                    self.fit_hvm(val);
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
            self.hvm_params.push((idx32, val));
            self.hv.set_hvm_param(dom, idx32, val)?;
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
                pv.complete(self.hv, dom, self.max_pfn, &self.params)?
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
                let get = |i: u32| {
                    self.hvm_params
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == i)
                        .map_or(0, |(_, v)| *v)
                };
                (get(hvm_param::STORE_PFN), get(hvm_param::CONSOLE_PFN))
            }
        };
        self.hv.seed_grant_table(
            dom,
            console_gfn,
            self.params.console_domid,
            store_gfn,
            self.params.store_domid,
        )?;
        if self.created {
            self.hv.restore_finished(dom, store_gfn, console_gfn)?;
        }
        Ok(RestoreOutcome {
            domid: dom,
            store_gfn,
            console_gfn,
            pages: self.pages,
        })
    }
}

/// vCPU blobs stashed until END, by vCPU id.
pub(crate) type VcpuStash = BTreeMap<u32, PvVcpuState>;
