//! The [`Toolstack`] of a Xen host: what libxl does for a domain besides
//! the migration stream — its xl config, building a bare domain for a
//! restore (`create`), the event channels and grant entries of a restored
//! guest, its xenstore and console connection, and an HVM guest's device
//! model (`devmodel`).

use super::{create, devmodel, kept_config, qmp, XenHost};
use crate::hv::toolstack::xenstore;
use crate::hv::{
    BuiltDomain, DeviceModelState, DomId, DomainConfig, DomainSpec, GrantSeed, HvError, Hypervisor,
    Result, Rings, Toolstack,
};
use std::path::PathBuf;
use xen_sys::*;

impl XenHost {
    /// The channels of a domain this host built for a restore.
    fn built(&self, dom: DomId) -> Option<super::Created> {
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dom)
            .copied()
    }
}

impl Toolstack for XenHost {
    fn domain_config(&self, dom: DomId) -> Result<DomainConfig> {
        let info = self.domain_info(dom)?;
        // xl's own record of the domain, so that stock `xl restore` can
        // rebuild it from an rxmigrate save file.
        let Some(path) = XenHost::libxl_userdata(dom) else {
            // A domain rxmigrate built: the config its image had; else what
            // the hypervisor tells.
            return match kept_config::read(self, dom, &info.name) {
                Some(c) => DomainConfig::from_json(c),
                None => Ok(DomainConfig::from_info(&info)),
            };
        };
        let text = std::fs::read(&path)
            .map_err(|e| HvError::io(format!("reading {}", path.display()), e))?;
        // libxl stores the JSON text with its terminating NUL.
        let end = text.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let v: serde_json::Value = serde_json::from_slice(&text[..end])
            .map_err(|e| HvError::op(dom, "domain_config", format!("{}: {e}", path.display())))?;
        Ok(DomainConfig::from_json(v)
            .map_err(|e| HvError::op(dom, "domain_config", format!("{}: {e}", path.display())))?
            .named(&info.name))
    }

    fn check_restore_config(&self, config: &DomainConfig) -> Result<()> {
        devmodel::check(config.raw()).map_err(|e| {
            HvError::Refused(format!(
                "this HVM guest cannot be restored without xl: {e}. Restore it with \
                 `xl restore` (with rxmigrate-save-helper installed, see xl-plugin/README.md)"
            ))
        })
    }

    fn build_domain(&self, spec: &DomainSpec) -> Result<BuiltDomain> {
        create::create(self, spec)
    }

    fn seed_grant_table(&self, dom: DomId, seed: &GrantSeed) -> Result<()> {
        // The console ring as this release's xenconsoled expects it; the
        // restore is done with it, as libxenguest is when it seeds.
        super::release::console_restored(self.h, dom, seed.console_gfn)?;
        let info = self.raw_info(dom)?;
        let hvm = XenHost::is_hvm(&info);
        // SAFETY: integer arguments only.
        self.h.call(dom, "seed_grant_table", |x| unsafe {
            x.guest.xc_dom_gnttab_seed(
                x.xch,
                dom,
                hvm,
                seed.console_gfn as xen_pfn_t,
                seed.store_gfn as xen_pfn_t,
                seed.console_domid,
                seed.store_domid,
            ) as i64
        })?;
        Ok(())
    }

    fn restore_finished(&self, dom: DomId, rings: &Rings) -> Result<()> {
        let Some(c) = self.built(dom) else {
            return Err(HvError::Invalid {
                op: "restore_finished",
                msg: format!("domain {dom} was not built by this host's restore"),
            });
        };
        for n in xenstore::ring_nodes(
            dom,
            (rings.store_gfn, c.store_evtchn),
            (rings.console_gfn, c.console_evtchn),
        ) {
            self.h.xs_write(&n.path, &n.value)?;
            self.h.xs_set_perms(&n.path, &n.perms)?;
        }
        self.h.xs_introduce(dom, rings.store_gfn, c.store_evtchn)
    }

    fn device_model_dirty_log(&self, dom: DomId, enable: bool) -> Result<()> {
        let info = self.raw_info(dom)?;
        let sock = qmp::socket_path(dom);
        if !XenHost::is_hvm(&info) || !sock.exists() {
            return Ok(());
        }
        qmp::set_dirty_log(&sock, enable).map_err(|e| HvError::op(dom, "device_model_dirty_log", e))
    }

    fn device_model_state(&self, dom: DomId) -> Result<Option<DeviceModelState>> {
        let info = self.raw_info(dom)?;
        let sock = qmp::socket_path(dom);
        if !XenHost::is_hvm(&info) || !sock.exists() {
            return Ok(None);
        }
        let file = PathBuf::from(format!("/var/lib/xen/rxmigrate-dm.{dom}"));
        // Guest data: created 0600 here (never through a link), so QEMU's
        // O_CREAT|O_TRUNC open keeps that mode.
        crate::trust::files::create_private(&file)
            .map_err(|e| HvError::io(format!("creating {}", file.display()), e))?;
        let r = qmp::save_device_state(&sock, &file)
            .map_err(|e| HvError::op(dom, "device_model_state", e))
            .and_then(|()| {
                std::fs::read(&file)
                    .map_err(|e| HvError::io(format!("reading {}", file.display()), e))
            });
        if let Err(e) = std::fs::remove_file(&file) {
            log::debug!("removing {}: {e}", file.display());
        }
        let context = r?;
        // Where the device model mapped guest memory (VRAM), as libxl saves it.
        let dm = format!("/local/domain/0/device-model/{dom}");
        let mut xenstore = Vec::new();
        for p in self.h.xs_directory(&format!("{dm}/physmap")) {
            for node in ["start_addr", "size", "name"] {
                let key = format!("physmap/{p}/{node}");
                if let Some(v) = self.h.xs_read(&format!("{dm}/{key}")) {
                    xenstore.push((key, v));
                }
            }
        }
        Ok(Some(DeviceModelState {
            emulator_id: 2,
            xenstore,
            context,
        }))
    }

    fn start_platform(
        &self,
        dom: DomId,
        state: Option<&DeviceModelState>,
        config: Option<&DomainConfig>,
    ) -> Result<()> {
        // A domain libxl built gets all this from libxl.
        if self.built(dom).is_none() {
            return Ok(());
        }
        if let Some(config) = config {
            kept_config::keep(self, dom, config.raw());
        }
        if !XenHost::is_hvm(&self.raw_info(dom)?) {
            return Ok(());
        }
        if let Some(config) = config {
            for (index, value) in devmodel::platform_params(config.raw()) {
                self.set_hvm_param(dom, index, value)?;
            }
            // PVH guests have no device model.
            if config.is_pvh() {
                return Ok(());
            }
        }
        let (Some(state), Some(config)) = (state, config) else {
            return Err(HvError::Refused(format!(
                "domain {dom} is an HVM guest and the stream has {}: it cannot run without \
                 its device model (QEMU). Restore from an xl save file or `xl migrate` \
                 stream, not a bare libxc stream",
                if state.is_none() {
                    "no device model state (EMULATOR_CONTEXT)"
                } else {
                    "no xl config"
                }
            )));
        };
        devmodel::start(self, dom, state, config.raw())
    }

    fn xenstore_read(&self, path: &str) -> Result<Option<String>> {
        Ok(self.h.xs_read(path))
    }
}
