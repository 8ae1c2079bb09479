//! What the toolstack (libxl) does for a domain besides the migration stream:
//! its xl config, the event channels and grant entries of a restored guest,
//! its xenstore and console connection, and an HVM guest's device model.

use super::{bare_domain, devmodel, kept_config, qmp, XenHost};
use crate::hv::{DeviceModelState, DomId, HvError, Hypervisor, Result};
use std::path::PathBuf;
use xen_sys::*;

pub(super) fn domain_config(host: &XenHost, dom: DomId) -> Result<Option<serde_json::Value>> {
    // xl's own record of the domain, so that stock `xl restore` can
    // rebuild it from an rxmigrate save file.
    let Some(path) = XenHost::libxl_userdata(dom) else {
        // A domain rxmigrate built: the config its image had.
        let name = host.domain_info(dom)?.name;
        return Ok(kept_config::read(host, dom, &name).map(|c| serde_json::json!({ "libxl": c })));
    };
    let text =
        std::fs::read(&path).map_err(|e| HvError::io(format!("reading {}", path.display()), e))?;
    // libxl stores the JSON text with its terminating NUL.
    let end = text.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let v: serde_json::Value = serde_json::from_slice(&text[..end])
        .map_err(|e| HvError::op(dom, "domain_config", format!("{}: {e}", path.display())))?;
    Ok(Some(serde_json::json!({ "libxl": v })))
}

pub(super) fn restore_channels(host: &XenHost, dom: DomId) -> Result<Option<(u32, u32)>> {
    Ok(host
        .created
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&dom)
        .map(|c| (c.store_evtchn, c.console_evtchn)))
}

pub(super) fn seed_grant_table(
    host: &XenHost,
    dom: DomId,
    console_gfn: u64,
    console_domid: u32,
    store_gfn: u64,
    store_domid: u32,
) -> Result<()> {
    let info = host.raw_info(dom)?;
    let hvm = XenHost::is_hvm(&info);
    // SAFETY: integer arguments only.
    host.h.call(dom, "seed_grant_table", |x| unsafe {
        x.guest.xc_dom_gnttab_seed(
            x.xch,
            dom,
            hvm,
            console_gfn as xen_pfn_t,
            store_gfn as xen_pfn_t,
            console_domid,
            store_domid,
        ) as i64
    })?;
    Ok(())
}

pub(super) fn device_model_state(host: &XenHost, dom: DomId) -> Result<Option<DeviceModelState>> {
    let info = host.raw_info(dom)?;
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
            std::fs::read(&file).map_err(|e| HvError::io(format!("reading {}", file.display()), e))
        });
    let _ = std::fs::remove_file(&file);
    let context = r?;
    // Where the device model mapped guest memory (VRAM), as libxl saves it.
    let dm = format!("/local/domain/0/device-model/{dom}");
    let mut xenstore = Vec::new();
    for p in host.h.xs_directory(&format!("{dm}/physmap")) {
        for node in ["start_addr", "size", "name"] {
            let key = format!("physmap/{p}/{node}");
            if let Some(v) = host.h.xs_read(&format!("{dm}/{key}")) {
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

pub(super) fn check_restore_config(config: &serde_json::Value) -> Result<()> {
    devmodel::check(config).map_err(|e| {
        HvError::Refused(format!(
            "this HVM guest cannot be restored without xl: {e}. Restore it with \
             `xl restore` (with rxmigrate-save-helper installed, see xl-plugin/README.md)"
        ))
    })
}

pub(super) fn start_platform(
    host: &XenHost,
    dom: DomId,
    state: Option<&DeviceModelState>,
    config: Option<&serde_json::Value>,
) -> Result<()> {
    let created = host
        .created
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&dom);
    // A domain libxl built gets all this from libxl.
    if !created {
        return Ok(());
    }
    if let Some(config) = config {
        kept_config::keep(host, dom, config);
    }
    if !XenHost::is_hvm(&host.raw_info(dom)?) {
        return Ok(());
    }
    if let Some(config) = config {
        for (index, value) in devmodel::platform_params(config) {
            host.set_hvm_param(dom, index, value)?;
        }
        // PVH guests have no device model.
        if config["c_info"]["type"].as_str() == Some("pvh") {
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
    devmodel::start(host, dom, state, config)
}

pub(super) fn restore_finished(
    host: &XenHost,
    dom: DomId,
    store_gfn: u64,
    console_gfn: u64,
) -> Result<()> {
    let Some(c) = host
        .created
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&dom)
        .copied()
    else {
        return Ok(());
    };
    for n in bare_domain::ring_nodes(
        dom,
        (store_gfn, c.store_evtchn),
        (console_gfn, c.console_evtchn),
    ) {
        host.h.xs_write(&n.path, &n.value)?;
        host.h.xs_set_perms(&n.path, &n.perms)?;
    }
    host.h.xs_introduce(dom, store_gfn, c.store_evtchn)
}
