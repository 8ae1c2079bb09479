//! The toolstack boundary.
//!
//! [`Toolstack`] is what libxl (and libxenguest's restore tail) does for a
//! domain besides the hypervisor calls of [`super::Hypervisor`]: build an
//! empty domain for a restore, hand out its xenstore and console event
//! channels, seed its reserved grant entries, introduce it to xenstore, save
//! and start an HVM guest's device model, and keep the xl config of the
//! domain as a typed [`DomainConfig`]. Both backends implement every method:
//! - `hv::xen`: xenstore, libxl's saved config, `xc_dom_gnttab_seed`, QEMU;
//! - `hv::sim`: a per-domain xenstore, grant table and device-model blob of
//!   the simulated host, so that the restore tests exercise each step.

mod config;
pub mod xenstore;

pub use config::{DomainConfig, XlType};

use super::{DomId, GuestType, Result};

/// The event channels a toolstack allocated for a guest's rings: the
/// restore writes them into the guest (PV start_info, HVM params).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Channels {
    pub store_port: u32,
    pub console_port: u32,
}

/// A domain built for a restore: empty, paused, with its channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltDomain {
    pub domid: DomId,
    pub channels: Channels,
}

/// The reserved grant entries of a restored guest (`xc_dom_gnttab_seed`):
/// entry 0 grants the console ring to the console backend's domain, entry 1
/// the xenstore ring to xenstored's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantSeed {
    pub console_gfn: u64,
    pub console_domid: u32,
    pub store_gfn: u64,
    pub store_domid: u32,
}

/// Where a restored guest's rings are (the frames restore_results reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rings {
    pub store_gfn: u64,
    pub console_gfn: u64,
}

/// What a restore asks the toolstack to build before the stream's contents
/// go in.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainSpec {
    pub name: String,
    pub guest_type: GuestType,
    pub max_pfn: u64,
    pub max_vcpu_id: u32,
    /// The image's xl config, when it carried one.
    pub config: Option<DomainConfig>,
}

impl DomainSpec {
    /// An HVM guest without emulated platform devices (xl's `type =
    /// "pvh"`): Xen gives it a local APIC only. The stream does not say;
    /// the config does.
    pub fn pvh(&self) -> bool {
        self.config.as_ref().is_some_and(DomainConfig::is_pvh)
    }
}

/// The device model state of an HVM guest, as libxl carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceModelState {
    /// libxl's emulator id (2 = qemu-xen).
    pub emulator_id: u32,
    /// The device model's xenstore entries, relative to its directory.
    pub xenstore: Vec<(String, String)>,
    /// The device state the device model saved.
    pub context: Vec<u8>,
}

impl DeviceModelState {
    pub fn empty(emulator_id: u32) -> DeviceModelState {
        DeviceModelState {
            emulator_id,
            xenstore: Vec::new(),
            context: Vec::new(),
        }
    }
}

/// The toolstack's steps the engines take. Like [`super::Hypervisor`], all
/// methods take `&self`; no method has a default: each backend says what
/// each step means on its host.
pub trait Toolstack: Send + Sync {
    /// The xl config of a running domain, as a save carries it (stock `xl
    /// restore` rebuilds the domain from it), under the domain's name now.
    fn domain_config(&self, dom: DomId) -> Result<DomainConfig>;
    /// Before anything is restored from an image with this config: can this
    /// host give the guest what it needs? A clear refusal here costs
    /// nothing; one after the memory is restored costs a domain.
    fn check_restore_config(&self, config: &DomainConfig) -> Result<()>;
    /// Build an empty, paused domain to restore into (libxl's domain build
    /// for a guest without devices), with its xenstore directory and the
    /// event channels of its rings.
    fn build_domain(&self, spec: &DomainSpec) -> Result<BuiltDomain>;
    /// Write the console and xenstore grant entries of a restored guest
    /// (done at the end of every restore, as libxenguest's does).
    fn seed_grant_table(&self, dom: DomId, seed: &GrantSeed) -> Result<()>;
    /// The restore into a domain [`Toolstack::build_domain`] built is
    /// complete (still paused): write where its rings are and introduce it
    /// to xenstore, so that dom0's daemons serve it.
    fn restore_finished(&self, dom: DomId, rings: &Rings) -> Result<()>;
    /// Switch the device model's own dirty tracking on or off for a live
    /// save (libxl's `switch_qemu_logdirty`): while it is on, what the
    /// device model writes into guest memory (emulated DMA) is marked in
    /// Xen's log-dirty bitmap, which sees only the guest's own writes.
    /// Nothing to do for a guest without a device model.
    fn device_model_dirty_log(&self, dom: DomId, enable: bool) -> Result<()>;
    /// A suspended HVM guest's device model, stopped and saved (libxl's
    /// EMULATOR_XENSTORE_DATA and EMULATOR_CONTEXT records). `None`: the
    /// guest has no device model.
    fn device_model_state(&self, dom: DomId) -> Result<Option<DeviceModelState>>;
    /// A domain this toolstack built and restored (still paused) gets what
    /// a toolstack gives a guest besides the stream: platform settings from
    /// the image's `config` and, for HVM, its device model started with the
    /// `state` the image carried. A domain another toolstack built (libxl's
    /// restore) is left to it.
    fn start_platform(
        &self,
        dom: DomId,
        state: Option<&DeviceModelState>,
        config: Option<&DomainConfig>,
    ) -> Result<()>;
    /// A xenstore node's value; `None` when the node does not exist.
    fn xenstore_read(&self, path: &str) -> Result<Option<String>>;
}
