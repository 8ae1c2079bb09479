//! The xl config of domains rxmigrate built, kept for their next save.
//!
//! libxl keeps the config of the domains it builds (its userdata file), and
//! `xl save` puts it into the image; a domain `rxmigrate restore` built has
//! none, so its image's config is kept here instead. A later `rxmigrate
//! save` of it then carries the same config (devices, serial, memory), which
//! stock `xl restore` and the next standalone restore need.

use super::XenHost;
use crate::hv::DomId;
use crate::trust::files::create_private;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

fn path(dom: DomId) -> PathBuf {
    // A run directory: domain ids start again after a reboot.
    PathBuf::from(format!("/var/run/xen/rxmigrate-config.{dom}.json"))
}

/// The domain's xenstore `vm` path names its uuid: it tells a kept config
/// from one left by an earlier domain with the same id.
fn vm_of(host: &XenHost, dom: DomId) -> Option<String> {
    host.h.xs_read(&format!("/local/domain/{dom}/vm"))
}

pub fn keep(host: &XenHost, dom: DomId, config: &Value) {
    let doc = json!({ "vm": vm_of(host, dom), "config": config });
    let p = path(dom);
    if let Err(e) = write(&p, &doc) {
        log::warn!(
            "could not keep the config of domain {dom} in {}: {e}; a later save of it \
             carries a minimal config",
            p.display()
        );
    }
}

/// The config may hold secrets (a VNC password): root's eyes only, mode
/// 0600 from creation, never written through a link.
fn write(p: &Path, doc: &Value) -> std::io::Result<()> {
    let mut f = create_private(p)?;
    f.write_all(doc.to_string().as_bytes())
}

/// The kept config, named as the domain is called now.
pub fn read(host: &XenHost, dom: DomId, name: &str) -> Option<Value> {
    let text = std::fs::read(path(dom)).ok()?;
    let doc: Value = serde_json::from_slice(&text).ok()?;
    if doc["vm"].as_str() != vm_of(host, dom).as_deref() {
        return None;
    }
    let mut config = doc["config"].clone();
    if config["c_info"].is_object() {
        config["c_info"]["name"] = Value::from(name);
    }
    Some(config)
}

pub fn forget(dom: DomId) {
    let _ = std::fs::remove_file(path(dom));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn the_kept_config_is_private_and_not_written_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let p = d.path().join("rxmigrate-config.3.json");
        symlink(&victim, &p).unwrap();
        let doc = json!({"vm": "/vm/u", "config": {"b_info": {"type.hvm": {"vnc": {"passwd": "s3cret"}}}}});
        write(&p, &doc).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert!(md.is_file());
        assert_eq!(md.mode() & 0o777, 0o600);
        let back: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(back, doc);
    }
}
