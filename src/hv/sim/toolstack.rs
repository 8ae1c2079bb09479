//! The simulated host's [`Toolstack`]: what libxl and xenstored keep for a
//! domain, kept per domain in `dom.<id>/toolstack.json` — its xenstore
//! nodes (the same ones the Xen backend writes, `hv::toolstack::xenstore`),
//! the event channels of its rings, whether it was introduced, its grant
//! table's reserved entries (v1 layout), the xl config it was restored with
//! and its device model's state. A test reads them back
//! ([`SimHost::toolstack_state`], [`Toolstack::xenstore_read`]).

use super::build::Scramble;
use super::config::{GuestConfig, MAX_MEM_MIB, MAX_VCPUS};
use super::host::SimHost;
use super::layout::{HvmLayout, PvLayout};
use super::{cpu, ctl, hvmctx};
use crate::hv::toolstack::xenstore;
use crate::hv::{
    BuiltDomain, Channels, DeviceModelState, DomId, DomainConfig, DomainSpec, GrantSeed, GuestType,
    HvError, Hypervisor, Result, Rings, Toolstack,
};
use crate::x86::shared_info;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The section of an xl config the simulated host keeps its guest's
/// workload in ([`GuestConfig`]).
pub const SECTION: &str = "rxmigrate";

/// `GTF_permit_access`: a v1 grant entry that lets `domid` map `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Reserved grant references (xen/include/public/grant_table.h).
pub const GNTTAB_RESERVED_CONSOLE: usize = 0;
pub const GNTTAB_RESERVED_XENSTORE: usize = 1;

/// A grant entry as `grant_entry_v1_t` holds it, but with room for the
/// simulated host's 40-bit PV machine frames (Xen's v1 entry has 32 bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantEntry {
    pub flags: u16,
    pub domid: u16,
    pub frame: u64,
}

/// What the simulated toolstack keeps about a domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolstackState {
    /// xenstore: path → value (this domain's nodes only).
    pub xenstore: BTreeMap<String, String>,
    /// The event channels allocated for its rings.
    pub channels: Option<Channels>,
    /// Built by [`Toolstack::build_domain`] (a restore's target).
    pub built_for_restore: bool,
    /// Where its rings are, once introduced to xenstore.
    pub introduced: Option<Rings>,
    /// The grant table's first frame, entries in use (trailing empty ones
    /// left out).
    pub grant_table: Vec<GrantEntry>,
    /// The xl config it was restored with (carried by its next save).
    pub config: Option<serde_json::Value>,
    /// Its device model's state (HVM guests with emulated devices).
    pub device_model: Option<DeviceModelState>,
    /// The device model was started (`start_platform`).
    pub platform_started: bool,
    /// The device model's dirty tracking is on (`device_model_dirty_log`).
    #[serde(default)]
    pub dm_dirty_log: bool,
}

/// The first ports an unbound event channel gets (port 0 is never used).
const CHANNELS: Channels = Channels {
    store_port: 1,
    console_port: 2,
};

impl SimHost {
    fn ts_path(&self, dom: DomId) -> std::path::PathBuf {
        self.dir.dom_dir(dom).join("toolstack.json")
    }

    /// The toolstack's record of a domain.
    pub fn toolstack_state(&self, dom: DomId) -> Result<ToolstackState> {
        // The domain must exist (its meta says so); a missing file is an
        // empty record.
        self.dir.read_meta(dom)?;
        let p = self.ts_path(dom);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| HvError::Invalid {
                op: "read state",
                msg: format!("{}: {e}", p.display()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ToolstackState::default()),
            Err(e) => Err(HvError::io(format!("read {}", p.display()), e)),
        }
    }

    /// Change a domain's record under the host lock.
    pub(super) fn update_toolstack(
        &self,
        dom: DomId,
        f: impl FnOnce(&mut ToolstackState) -> Result<()>,
    ) -> Result<()> {
        let _l = self.dir.lock()?;
        let mut st = self.toolstack_state(dom)?;
        f(&mut st)?;
        let p = self.ts_path(dom);
        let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(&st).map_err(|e| HvError::Invalid {
            op: "write state",
            msg: e.to_string(),
        })?;
        std::fs::write(&tmp, body)
            .map_err(|e| HvError::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &p).map_err(|e| HvError::io(format!("rename {}", p.display()), e))
    }

    /// A new domain's xenstore directory and ring channels, as libxl
    /// writes them at domain build.
    pub(super) fn toolstack_new_domain(
        &self,
        dom: DomId,
        name: &str,
        max_vcpu_id: u32,
        pages: u64,
        for_restore: bool,
    ) -> Result<()> {
        let uuid = xenstore::uuid_string(&uuid_of(self.tag, dom));
        self.update_toolstack(dom, |st| {
            for n in xenstore::base_nodes(dom, name, &uuid, max_vcpu_id, pages * 4) {
                st.xenstore.insert(n.path, n.value);
            }
            st.channels = Some(CHANNELS);
            st.built_for_restore = for_restore;
            Ok(())
        })
    }

    /// A freshly built guest (`sim create`) is introduced at once, with a
    /// device model if it is HVM.
    pub(super) fn toolstack_new_guest(&self, dom: DomId, cfg: &GuestConfig) -> Result<()> {
        let d = self.dom(dom)?;
        self.toolstack_new_domain(dom, &cfg.name, d.meta.max_vcpu_id, d.pages(), false)?;
        let rings = match cfg.guest_type {
            GuestType::Pv => {
                let sc = Scramble::new(d.pages(), d.meta.salt);
                let gfn = |pfn| d.meta.mfn_base + sc.frame(pfn);
                Rings {
                    store_gfn: gfn(PvLayout::STORE),
                    console_gfn: gfn(PvLayout::CONSOLE),
                }
            }
            GuestType::Hvm => {
                let lay = HvmLayout::new(d.pages());
                Rings {
                    store_gfn: lay.store(),
                    console_gfn: lay.console(),
                }
            }
        };
        self.introduce(dom, &rings)?;
        if cfg.guest_type == GuestType::Hvm {
            let state = fresh_device_model(self.tag, dom);
            self.update_toolstack(dom, |st| {
                st.device_model = Some(state);
                st.platform_started = true;
                Ok(())
            })?;
        }
        Ok(())
    }

    fn introduce(&self, dom: DomId, rings: &Rings) -> Result<()> {
        self.update_toolstack(dom, |st| {
            let c = st.channels.ok_or_else(|| {
                HvError::op(dom, "restore_finished", "the domain has no ring channels")
            })?;
            for n in xenstore::ring_nodes(
                dom,
                (rings.store_gfn, c.store_port),
                (rings.console_gfn, c.console_port),
            ) {
                st.xenstore.insert(n.path, n.value);
            }
            st.introduced = Some(*rings);
            Ok(())
        })
    }

    /// The domain's xenstore nodes follow a rename (`/local/domain/N/name`
    /// and its `/vm` entry), as libxl's rename writes them.
    pub(super) fn toolstack_rename(&self, dom: DomId, name: &str) -> Result<()> {
        self.update_toolstack(dom, |st| {
            let dp = format!("/local/domain/{dom}");
            if st.xenstore.contains_key(&format!("{dp}/name")) {
                st.xenstore.insert(format!("{dp}/name"), name.to_string());
            }
            if let Some(vm) = st.xenstore.get(&format!("{dp}/vm")).cloned() {
                st.xenstore.insert(format!("{vm}/name"), name.to_string());
            }
            Ok(())
        })
    }
}

/// A domain's handle: distinct per host and domain id.
fn uuid_of(tag: u32, dom: DomId) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&tag.to_be_bytes());
    h[12..].copy_from_slice(&dom.to_be_bytes());
    h[6] = (h[6] & 0x0f) | 0x40;
    h[8] = (h[8] & 0x3f) | 0x80;
    h
}

/// The device model of a simulated HVM guest: emulated devices without
/// guest-visible effects, whose saved state names the host and domain it
/// was made on (so a restore shows whose state it carries).
fn fresh_device_model(tag: u32, dom: DomId) -> DeviceModelState {
    let mut context = b"rxmigrate-sim device model v1\n".to_vec();
    context.extend_from_slice(format!("made on host {tag:03x} as domain {dom}\n").as_bytes());
    DeviceModelState {
        emulator_id: 2,
        xenstore: vec![("state".into(), "running".into())],
        context,
    }
}

impl Toolstack for SimHost {
    fn domain_config(&self, dom: DomId) -> Result<DomainConfig> {
        let info = self.domain_info(dom)?;
        if let Some(kept) = self.toolstack_state(dom)?.config {
            return Ok(DomainConfig::from_json(kept)?.named(&info.name));
        }
        let meta = self.dir.read_meta(dom)?;
        let cfg = DomainConfig::from_info_sized(&info, meta.pages().saturating_mul(4));
        Ok(match meta.config {
            Some(section) => cfg.with_section(SECTION, section),
            None => cfg,
        })
    }

    fn check_restore_config(&self, config: &DomainConfig) -> Result<()> {
        if let Some(kb) = config.max_memory_kb() {
            if kb / 1024 > MAX_MEM_MIB {
                return Err(HvError::Refused(format!(
                    "the simulated host runs guests of up to {MAX_MEM_MIB} MiB; the config \
                     asks for {} MiB (b_info.max_memkb)",
                    kb / 1024
                )));
            }
        }
        if let Some(n) = config.max_vcpus() {
            if n == 0 || n > u64::from(MAX_VCPUS) {
                return Err(HvError::Refused(format!(
                    "the simulated host runs guests of 1 to {MAX_VCPUS} vCPUs; the config \
                     asks for {n} (b_info.max_vcpus)"
                )));
            }
        }
        if let Some(section) = config.section(SECTION) {
            serde_json::from_value::<GuestConfig>(section.clone()).map_err(|e| {
                HvError::Refused(format!(
                    "the config's {SECTION} section is not a simulated guest's: {e}"
                ))
            })?;
        }
        Ok(())
    }

    fn build_domain(&self, spec: &DomainSpec) -> Result<BuiltDomain> {
        if spec.max_pfn >= MAX_MEM_MIB * 256 {
            return Err(HvError::Invalid {
                op: "build_domain",
                msg: format!("max_pfn {:#x} too large", spec.max_pfn),
            });
        }
        let section = spec
            .config
            .as_ref()
            .and_then(|c| c.section(SECTION))
            .cloned();
        let tracking = section
            .as_ref()
            .and_then(|c| serde_json::from_value::<GuestConfig>(c.clone()).ok())
            .and_then(|c| c.tracking);
        let d = self.new_domain(
            &spec.name,
            spec.guest_type,
            spec.max_pfn + 1,
            spec.max_vcpu_id + 1,
            section,
            tracking,
        )?;
        let dom = d.meta.domid;
        let built = (|| {
            if spec.guest_type == GuestType::Pv {
                let mut si = vec![0u8; ctl::PAGE];
                // A new domain's event channels all start masked.
                si[shared_info::EVTCHN_MASK
                    ..shared_info::EVTCHN_MASK + 8 * shared_info::EVTCHN_WORDS]
                    .fill(0xff);
                d.st.set_shared_info(&si)?;
            } else {
                // Xen gives a new HVM domain a context: its vCPUs in their
                // reset state (nothing runs until a restore sets one).
                let cpus = vec![vec![0u8; hvmctx::CPU_SIZE]; d.meta.vcpus() as usize];
                d.st.set_hvm_context(&hvmctx::build(cpu::CPUID1_EAX, cpu::TSC_KHZ, &cpus))?;
            }
            self.toolstack_new_domain(dom, &spec.name, spec.max_vcpu_id, d.pages(), true)
        })();
        if let Err(e) = built {
            if let Err(de) = self.destroy(dom) {
                log::error!("destroying half-built domain {dom}: {de}");
            }
            return Err(e);
        }
        Ok(BuiltDomain {
            domid: dom,
            channels: CHANNELS,
        })
    }

    fn seed_grant_table(&self, dom: DomId, seed: &GrantSeed) -> Result<()> {
        let entry = |gfn: u64, domid: u32, what: &str| -> Result<GrantEntry> {
            let domid = u16::try_from(domid).map_err(|_| HvError::Invalid {
                op: "seed_grant_table",
                msg: format!("{what} backend domain {domid} is not a domain id"),
            })?;
            Ok(GrantEntry {
                flags: GTF_PERMIT_ACCESS,
                domid,
                frame: gfn,
            })
        };
        let console = entry(seed.console_gfn, seed.console_domid, "console")?;
        let store = entry(seed.store_gfn, seed.store_domid, "xenstore")?;
        self.update_toolstack(dom, |st| {
            // The grant frame is cleared, then the reserved entries written.
            st.grant_table = vec![GrantEntry::default(); GNTTAB_RESERVED_XENSTORE + 1];
            st.grant_table[GNTTAB_RESERVED_CONSOLE] = console;
            st.grant_table[GNTTAB_RESERVED_XENSTORE] = store;
            Ok(())
        })
    }

    fn restore_finished(&self, dom: DomId, rings: &Rings) -> Result<()> {
        if !self.toolstack_state(dom)?.built_for_restore {
            return Err(HvError::Invalid {
                op: "restore_finished",
                msg: format!("domain {dom} was not built by this host's restore"),
            });
        }
        self.introduce(dom, rings)
    }

    fn device_model_dirty_log(&self, dom: DomId, enable: bool) -> Result<()> {
        if self.device_model_state(dom)?.is_none() {
            return Ok(());
        }
        self.update_toolstack(dom, |st| {
            st.dm_dirty_log = enable;
            Ok(())
        })
    }

    fn device_model_state(&self, dom: DomId) -> Result<Option<DeviceModelState>> {
        let info = self.domain_info(dom)?;
        if info.guest_type != GuestType::Hvm {
            return Ok(None);
        }
        Ok(self.toolstack_state(dom)?.device_model)
    }

    fn start_platform(
        &self,
        dom: DomId,
        state: Option<&DeviceModelState>,
        config: Option<&DomainConfig>,
    ) -> Result<()> {
        let info = self.domain_info(dom)?;
        self.update_toolstack(dom, |st| {
            // A domain another toolstack built is left to it.
            if !st.built_for_restore {
                return Ok(());
            }
            st.config = config.map(|c| c.raw().clone());
            let pvh = config.is_some_and(DomainConfig::is_pvh);
            match (info.guest_type, state) {
                (GuestType::Pv, Some(_)) => {
                    return Err(HvError::Invalid {
                        op: "start_platform",
                        msg: format!("domain {dom} is a PV guest: it has no device model"),
                    })
                }
                (GuestType::Hvm, Some(_)) if pvh => {
                    return Err(HvError::Invalid {
                        op: "start_platform",
                        msg: format!("domain {dom} is a PVH guest: it has no device model"),
                    })
                }
                // The simulated platform runs without emulated devices
                // too (a bare libxc stream carries none).
                (_, s) => st.device_model = s.cloned(),
            }
            st.platform_started = true;
            Ok(())
        })
    }

    fn xenstore_read(&self, path: &str) -> Result<Option<String>> {
        // /local/domain/N/… is domain N's; /vm/UUID/… the domain's whose
        // `vm` node names it.
        if let Some(rest) = path.strip_prefix("/local/domain/") {
            let id = rest.split('/').next().unwrap_or("");
            let Ok(dom) = id.parse::<DomId>() else {
                return Ok(None);
            };
            return match self.toolstack_state(dom) {
                Ok(st) => Ok(st.xenstore.get(path).cloned()),
                Err(HvError::NoSuchDomain(_)) => Ok(None),
                Err(e) => Err(e),
            };
        }
        if path.starts_with("/vm/") {
            for dom in self.dir.domids()? {
                let st = match self.toolstack_state(dom) {
                    Ok(st) => st,
                    Err(HvError::NoSuchDomain(_)) => continue,
                    Err(e) => return Err(e),
                };
                if let Some(v) = st.xenstore.get(path) {
                    return Ok(Some(v.clone()));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_differ_by_host_and_domain() {
        let a = xenstore::uuid_string(&uuid_of(0x123, 1));
        assert_ne!(a, xenstore::uuid_string(&uuid_of(0x123, 2)));
        assert_ne!(a, xenstore::uuid_string(&uuid_of(0x124, 1)));
        assert_eq!(&a[14..15], "4");
    }
}
