//! The hypervisor and toolstack boundaries.
//!
//! [`Hypervisor`] mirrors the few libxenctrl / libxenforeignmemory calls that
//! libxenguest's save and restore make (docs/REFERENCE.md §11), one method per call
//! or small group of calls: memory, log-dirty, vCPU and platform context, the
//! domain's lifecycle. [`Toolstack`] is what libxl does around them (domain
//! build, xenstore, grant seeding, device model, the xl config). The engines
//! above both hold all the logic; a backend implements both, as a
//! translation:
//! - [`sim`]: the simulated Xen host (processes over shared memory), the default
//!   wherever there is no Xen;
//! - [`xen`]: Xen 4.17 through xen-sys (libxenctrl and friends, loaded at
//!   run time).
//!
//! Frame numbers: for HVM guests gfn == pfn. For PV guests the calls that take
//! "gfns" take machine frames (mfns), as on Xen; the engine translates through
//! the guest's P2M ([`PvP2m`]).

pub mod page;
#[cfg(feature = "sim")]
pub mod sim;
pub mod toolstack;
pub mod xen;

use crate::bitmap::Bitmap;
pub use crate::stream::{PageType, TscInfo};
pub use nix::errno::Errno;
pub use page::{GuestPage, GuestPageMut};
use std::fmt;
pub use toolstack::{
    BuiltDomain, Channels, DeviceModelState, DomainConfig, DomainSpec, GrantSeed, Rings, Toolstack,
    XlType,
};

pub type DomId = u32;

/// Errors of the hypervisor layer.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("no such domain: {0}")]
    NoSuchDomain(String),
    /// A call failed; `errno` is the OS / hypercall error number when it
    /// came with one (the message already says it in words).
    #[error("domain {dom}: {op} failed: {msg}")]
    Op {
        dom: DomId,
        op: &'static str,
        msg: String,
        errno: Option<Errno>,
    },
    #[error("domain {dom}: {op} is not supported for {what}")]
    Unsupported {
        dom: DomId,
        op: &'static str,
        what: String,
    },
    /// The host cannot do what the guest needs (the message says what instead).
    #[error("{0}")]
    Refused(String),
    #[error("invalid argument to {op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    #[error("hypervisor not available: {0}")]
    Unavailable(String),
    /// A live save of a PV guest needs log-dirty on its shadow page
    /// tables, and the hypervisor was built without shadow paging.
    #[error(
        "live migration of PV guest {dom} needs shadow paging, which this hypervisor was \
         built without (CONFIG_SHADOW_PAGING=n, e.g. Debian 13's Xen 4.20); a non-live save \
         (rxmigrate save without --live / xl save) works, as does a hypervisor built with \
         CONFIG_SHADOW_PAGING=y"
    )]
    NoShadowPaging { dom: DomId },
    /// An OS call failed. The cause is printed here, so it is not also
    /// this error's `source` (a chain would print it twice); it is kept
    /// typed for [`HvError::errno`].
    #[error("{op}: {cause}")]
    Io { op: String, cause: std::io::Error },
}

pub type Result<T> = std::result::Result<T, HvError>;

impl HvError {
    /// An [`HvError::Op`] with its message rewritten by `f` (the errno and
    /// the operation kept); other errors as they are.
    pub fn reworded(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            HvError::Op {
                dom,
                op,
                msg,
                errno,
            } => HvError::Op {
                dom,
                op,
                msg: f(&msg),
                errno,
            },
            e => e,
        }
    }
    /// A failed operation without an error number.
    pub fn op(dom: DomId, op: &'static str, msg: impl fmt::Display) -> Self {
        HvError::Op {
            dom,
            op,
            msg: msg.to_string(),
            errno: None,
        }
    }
    /// A failed operation that left `errno`; the message is its text.
    pub fn os(dom: DomId, op: &'static str, errno: Errno) -> Self {
        HvError::Op {
            dom,
            op,
            msg: std::io::Error::from(errno).to_string(),
            errno: Some(errno),
        }
    }
    pub fn io(op: impl Into<String>, cause: std::io::Error) -> Self {
        HvError::Io {
            op: op.into(),
            cause,
        }
    }
    /// The error number this failure stands for, as libxenctrl's callers
    /// see it: the errno a call left, or the one Xen's tools use for the
    /// same refusal (ESRCH, EOPNOTSUPP, EINVAL). `None`: no number fits.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            HvError::Op { errno, .. } => *errno,
            HvError::Io { cause, .. } => cause.raw_os_error().map(Errno::from_raw),
            HvError::NoSuchDomain(_) => Some(Errno::ESRCH),
            HvError::Unsupported { .. } | HvError::NoShadowPaging { .. } => Some(Errno::EOPNOTSUPP),
            HvError::Invalid { .. } => Some(Errno::EINVAL),
            HvError::Refused(_) | HvError::Unavailable(_) => None,
        }
    }
}

/// PV or HVM, as `xc_domain_getinfo` reports it (PVH guests are HVM here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    Pv,
    Hvm,
}

impl fmt::Display for GuestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestType::Pv => "pv",
            GuestType::Hvm => "hvm",
        })
    }
}

/// Xen's SHUTDOWN_* reasons (xen/include/public/sched.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownReason {
    Poweroff = 0,
    Reboot = 1,
    Suspend = 2,
    Crash = 3,
    Watchdog = 4,
    SoftReset = 5,
}

/// What `xc_domain_getinfo_single` + `xc_vcpu_getinfo` tell the engines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DomainInfo {
    pub domid: DomId,
    pub name: String,
    pub guest_type: GuestType,
    /// Highest guest pfn (p2m_size - 1).
    pub max_pfn: u64,
    pub max_vcpu_id: u32,
    /// Ids of the online vCPUs, ascending.
    pub online_vcpus: Vec<u32>,
    pub paused: bool,
    /// `Some` once the domain has shut down (e.g. suspended for a save).
    pub shutdown: Option<ShutdownReason>,
}

impl DomainInfo {
    pub fn p2m_size(&self) -> u64 {
        self.max_pfn + 1
    }
}

/// The domain's CPU policy, serialised as the X86_CPUID_POLICY (24-byte
/// leaves) and X86_MSR_POLICY (16-byte entries) record bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuPolicy {
    pub cpuid: Vec<u8>,
    pub msrs: Vec<u8>,
}

/// A PV guest's physical-to-machine table and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvP2m {
    /// `p2m[pfn]` = mfn, or [`INVALID_MFN`] for a ballooned-out pfn.
    pub p2m: Vec<u64>,
    /// Pfns of the guest frames holding the P2M leaves, in order
    /// (X86_PV_P2M_FRAMES).
    pub frames: Vec<u64>,
}

pub const INVALID_MFN: u64 = u64::MAX;

/// Per-vCPU state blobs of a PV guest (the X86_PV_VCPU_* record bodies
/// without their 8-byte prefix). Empty vectors mean "Xen has none".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvVcpuState {
    pub basic: Vec<u8>,
    pub extended: Vec<u8>,
    pub xsave: Vec<u8>,
    pub msrs: Vec<u8>,
}

/// A batch of guest frames mapped into the toolstack (`xenforeignmemory_map`).
/// The guest may write them while they are mapped: they are reached through
/// [`GuestPage`] copies, never as Rust slices.
pub trait PageMapping {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The i-th mapped frame (panics if `i >= len()`).
    fn page(&self, i: usize) -> GuestPage<'_>;
    /// The i-th mapped frame, writable (panics on a read-only mapping).
    fn page_mut(&mut self, i: usize) -> GuestPageMut<'_>;
}

/// Page tables pinned per call by [`Hypervisor::pin_tables`] where the
/// backend batches (Xen's restore pins 1 024 per `mmuext_op` too).
pub const PIN_BATCH: usize = 1024;

/// The hypervisor calls the engines make. All methods take `&self`: a backend
/// is a handle to a host, shared by the save loop and its helpers.
pub trait Hypervisor: Send + Sync {
    /// Short description for logs ("sim:/path", "xen").
    fn describe(&self) -> String;
    /// `XENVER_version` as (major, minor).
    fn xen_version(&self) -> (u32, u32);

    fn list_domains(&self) -> Result<Vec<DomainInfo>>;
    fn domain_info(&self, dom: DomId) -> Result<DomainInfo>;
    /// A domain by id or name, as xl accepts them.
    fn lookup(&self, name_or_id: &str) -> Result<DomId> {
        let doms = self.list_domains()?;
        if let Ok(id) = name_or_id.parse::<DomId>() {
            if doms.iter().any(|d| d.domid == id) {
                return Ok(id);
            }
        }
        doms.iter()
            .find(|d| d.name == name_or_id)
            .map(|d| d.domid)
            .ok_or_else(|| HvError::NoSuchDomain(name_or_id.to_string()))
    }
    fn rename(&self, dom: DomId, name: &str) -> Result<()>;

    fn pause(&self, dom: DomId) -> Result<()>;
    fn unpause(&self, dom: DomId) -> Result<()>;
    /// Ask the guest to suspend and wait until it reports SHUTDOWN_suspend.
    fn suspend(&self, dom: DomId) -> Result<()>;
    /// `xc_domain_resume`: bring a suspended domain back; `cancel` is the
    /// suspend-cancel path (the guest continues in place after a failed save).
    fn resume(&self, dom: DomId, cancel: bool) -> Result<()>;
    fn destroy(&self, dom: DomId) -> Result<()>;

    // Log-dirty (`xc_shadow_control` / `xc_logdirty_control`).
    fn logdirty_enable(&self, dom: DomId) -> Result<()>;
    fn logdirty_disable(&self, dom: DomId) -> Result<()>;
    /// Read and clear the dirty log into `out` (overwritten, sized to the
    /// p2m). `final_round` is XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL. Returns the
    /// number of dirty pages.
    fn logdirty_clean(&self, dom: DomId, out: &mut Bitmap, final_round: bool) -> Result<u64>;
    /// Read the dirty log without clearing it.
    fn logdirty_peek(&self, dom: DomId, out: &mut Bitmap) -> Result<u64>;

    /// `xc_get_pfn_type_batch`: types of up to 1024 gfns.
    fn page_types(&self, dom: DomId, gfns: &[u64], out: &mut [PageType]) -> Result<()>;
    /// `xenforeignmemory_map` of a batch of gfns.
    fn map_pages<'a>(
        &'a self,
        dom: DomId,
        gfns: &[u64],
        writable: bool,
    ) -> Result<Box<dyn PageMapping + 'a>>;

    // PV guests.
    fn guest_width(&self, dom: DomId) -> Result<u32>;
    fn set_guest_width(&self, dom: DomId, width: u32) -> Result<()>;
    fn pv_p2m(&self, dom: DomId) -> Result<PvP2m>;
    fn pv_vcpu(&self, dom: DomId, vcpu: u32) -> Result<PvVcpuState>;
    fn set_pv_vcpu(&self, dom: DomId, vcpu: u32, state: &PvVcpuState) -> Result<()>;
    fn shared_info(&self, dom: DomId) -> Result<Vec<u8>>;
    /// The frame of a PV domain's shared info page (start_info's
    /// `shared_info` holds its machine address).
    fn shared_info_frame(&self, dom: DomId) -> Result<u64>;
    fn set_shared_info(&self, dom: DomId, page: &[u8]) -> Result<()>;
    /// `MMUEXT_PIN_Ln_TABLE` for an mfn.
    fn pin_table(&self, dom: DomId, mfn: u64, level: u8) -> Result<()>;
    /// Pin these tables, `(mfn, level)`, in this order: as
    /// [`pin_table`](Self::pin_table) for each, which is what this default
    /// does; a backend may batch them into fewer calls (Xen: one hypercall
    /// per [`PIN_BATCH`] tables, as Xen's own restore does).
    fn pin_tables(&self, dom: DomId, tables: &[(u64, u8)]) -> Result<()> {
        tables
            .iter()
            .try_for_each(|&(mfn, level)| self.pin_table(dom, mfn, level))
    }

    // HVM guests.
    fn hvm_context(&self, dom: DomId) -> Result<Vec<u8>>;
    fn set_hvm_context(&self, dom: DomId, blob: &[u8]) -> Result<()>;
    fn hvm_param(&self, dom: DomId, index: u32) -> Result<u64>;
    fn set_hvm_param(&self, dom: DomId, index: u32, value: u64) -> Result<()>;

    // Both.
    fn tsc_info(&self, dom: DomId) -> Result<TscInfo>;
    fn set_tsc_info(&self, dom: DomId, info: &TscInfo) -> Result<()>;
    fn cpu_policy(&self, dom: DomId) -> Result<CpuPolicy>;
    fn set_cpu_policy(&self, dom: DomId, policy: &CpuPolicy) -> Result<()>;

    // Restore.
    /// `xc_domain_populate_physmap_exact` for these pfns; returns the gfn of
    /// each (the new mfn for PV, the pfn itself for HVM).
    fn populate(&self, dom: DomId, pfns: &[u64]) -> Result<Vec<u64>>;
    /// Memory the host could still give a new guest, in bytes, as the
    /// hypervisor reports it: a receiver's default limit on the size of a
    /// guest it restores. `None`: this host cannot tell.
    fn host_free_memory(&self) -> Result<Option<u64>>;
    /// Whether the hypervisor has shadow paging (Xen: physinfo's
    /// `virt_caps` has `shadow`), which PV guests' log-dirty needs.
    fn shadow_paging(&self) -> Result<bool>;
    /// Most memory the domain may hold, in bytes: what the toolstack granted
    /// it (Xen: `max_pages`; sim: its RAM). A restore into a domain the
    /// toolstack built is bounded by this.
    fn domain_max_memory(&self, dom: DomId) -> Result<u64>;

    // Auto-converge's throttle.
    /// The scheduler's CPU cap of the domain, in percent of one physical
    /// CPU (a domain with N vCPUs can use up to N × 100); 0 means no cap.
    /// Xen: the credit or credit2 scheduler's per-domain cap.
    fn cpu_cap(&self, dom: DomId) -> Result<u32>;
    /// Set the cap [`Hypervisor::cpu_cap`] reads (0 removes it).
    fn set_cpu_cap(&self, dom: DomId, cap: u32) -> Result<()>;
}

/// A host as the engines see it: its hypervisor and its toolstack.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    pub hv: &'a dyn Hypervisor,
    pub ts: &'a dyn Toolstack,
}

impl<'a> Host<'a> {
    /// The host of a backend that implements both traits.
    pub fn of<B: Hypervisor + Toolstack>(backend: &'a B) -> Host<'a> {
        Host {
            hv: backend,
            ts: backend,
        }
    }
}

/// A backend that implements both traits is a host (`&sim` wherever a
/// `Host` is taken).
impl<'a, B: Hypervisor + Toolstack> From<&'a B> for Host<'a> {
    fn from(backend: &'a B) -> Host<'a> {
        Host::of(backend)
    }
}

/// A backend: one host's hypervisor and toolstack in one object.
pub trait Backend: Hypervisor + Toolstack {
    fn host(&self) -> Host<'_>;
}

impl<B: Hypervisor + Toolstack> Backend for B {
    fn host(&self) -> Host<'_> {
        Host::of(self)
    }
}

/// Open the host named by `spec`: `sim:DIR` (the simulated host in DIR),
/// `sim` (the default simulated host) or `xen`. Without a spec: env
/// `RXMIGRATE_HV`, else Xen where /dev/xen/privcmd exists, else the default
/// simulated host. A build without the `sim` feature opens Xen only.
pub fn open_hv(spec: Option<&str>) -> Result<Box<dyn Backend>> {
    let env = std::env::var("RXMIGRATE_HV").ok().filter(|s| !s.is_empty());
    let spec = spec.map(str::to_string).or(env);
    match spec.as_deref() {
        Some("xen") => Ok(Box::new(xen::XenHost::open()?)),
        None if xen::XenHost::present() => Ok(Box::new(xen::XenHost::open()?)),
        other => open_sim(other),
    }
}

#[cfg(feature = "sim")]
fn open_sim(spec: Option<&str>) -> Result<Box<dyn Backend>> {
    match spec {
        None | Some("sim") => Ok(Box::new(sim::SimHost::open(&sim::default_dir())?)),
        Some(s) => match s.strip_prefix("sim:") {
            Some(dir) if !dir.is_empty() => {
                Ok(Box::new(sim::SimHost::open(std::path::Path::new(dir))?))
            }
            _ => Err(HvError::Invalid {
                op: "--hv",
                msg: format!("{s:?}: expected sim:DIR or xen"),
            }),
        },
    }
}

#[cfg(not(feature = "sim"))]
fn open_sim(spec: Option<&str>) -> Result<Box<dyn Backend>> {
    Err(match spec {
        None => HvError::Unavailable(format!(
            "no Xen here ({} is missing) and this build has no simulated host",
            xen_sys::PRIVCMD
        )),
        Some(s) => HvError::Invalid {
            op: "--hv",
            msg: format!("{s:?}: this build drives Xen only (expected xen)"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_prints_its_cause_once_in_a_chain() {
        let e = HvError::io("open /x", std::io::Error::from_raw_os_error(libc::ENOENT));
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
        assert!(chain.starts_with("open /x: "), "{chain}");
    }

    #[test]
    fn errors_carry_their_errno_as_a_number() {
        let io = HvError::io("x", std::io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(io.errno(), Some(Errno::EBUSY));
        assert_eq!(
            HvError::os(1, "op", Errno::EAGAIN).errno(),
            Some(Errno::EAGAIN)
        );
        assert_eq!(HvError::op(1, "op", "text").errno(), None);
        assert_eq!(
            HvError::NoSuchDomain("x".into()).errno(),
            Some(Errno::ESRCH)
        );
    }
}
