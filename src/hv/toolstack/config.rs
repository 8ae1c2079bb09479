//! The xl config of a domain: libxl's JSON (`libxl_domain_config`) as a
//! save carries it in the xl header, with the fields the engines read typed
//! and checked once, and the whole JSON kept as it came, opaque, to be
//! carried into a stream again or handed to the backend that understands
//! the rest of it (Xen's device model, the simulated host's workload).

use crate::hv::{DomainInfo, GuestType, HvError, Result};
use serde_json::{json, Map, Value};

/// xl's `type`: the stream says PV or HVM; the config also tells PVH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XlType {
    Pv,
    Hvm,
    Pvh,
}

impl XlType {
    pub fn name(self) -> &'static str {
        match self {
            XlType::Pv => "pv",
            XlType::Hvm => "hvm",
            XlType::Pvh => "pvh",
        }
    }
}

/// An xl domain config.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainConfig {
    name: Option<String>,
    xl_type: Option<XlType>,
    memory_kb: Option<u64>,
    max_memory_kb: Option<u64>,
    max_vcpus: Option<u64>,
    raw: Value,
}

fn refused(msg: String) -> HvError {
    HvError::Invalid {
        op: "xl config",
        msg,
    }
}

/// `section.key` of `raw`: absent (or null) is `None`; present, it must be
/// what `get` accepts.
fn field<T>(
    raw: &Value,
    section: &str,
    key: &str,
    want: &str,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>> {
    let v = match raw.get(section) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o.get(key),
        Some(_) => return Err(refused(format!("{section} is not a JSON object"))),
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(x) => get(x)
            .map(Some)
            .ok_or_else(|| refused(format!("{section}.{key} is {x}, not {want}"))),
    }
}

impl DomainConfig {
    /// Parse libxl's JSON. The typed fields may be absent; present, they
    /// must have their JSON types (one error names the field otherwise).
    pub fn from_json(raw: Value) -> Result<DomainConfig> {
        if !raw.is_object() {
            return Err(refused("the config is not a JSON object".into()));
        }
        let name = field(&raw, "c_info", "name", "a string", |v| {
            v.as_str().map(str::to_string)
        })?;
        let xl_type = field(&raw, "c_info", "type", "pv, hvm or pvh", |v| {
            match v.as_str()? {
                "pv" => Some(XlType::Pv),
                "hvm" => Some(XlType::Hvm),
                "pvh" => Some(XlType::Pvh),
                _ => None,
            }
        })?;
        let kb = |key| field(&raw, "b_info", key, "a number of KiB", Value::as_u64);
        let memory_kb = kb("target_memkb")?;
        let max_memory_kb = kb("max_memkb")?;
        let max_vcpus = field(&raw, "b_info", "max_vcpus", "a count", Value::as_u64)?;
        Ok(DomainConfig {
            name,
            xl_type,
            memory_kb,
            max_memory_kb,
            max_vcpus,
            raw,
        })
    }

    /// The config a toolstack without xl's own record of a domain writes:
    /// its type, name, vCPUs and memory, from what the hypervisor reports.
    pub fn from_info(info: &DomainInfo) -> DomainConfig {
        Self::from_info_sized(info, info.p2m_size().saturating_mul(4))
    }

    /// [`Self::from_info`] with the guest's memory known (`max_kb`): an
    /// HVM guest's P2M spans holes, so its size is not the memory's.
    pub fn from_info_sized(info: &DomainInfo, kb: u64) -> DomainConfig {
        let xl_type = match info.guest_type {
            GuestType::Pv => XlType::Pv,
            GuestType::Hvm => XlType::Hvm,
        };
        DomainConfig {
            name: Some(info.name.clone()),
            xl_type: Some(xl_type),
            memory_kb: None,
            max_memory_kb: Some(kb),
            max_vcpus: Some(u64::from(info.max_vcpu_id) + 1),
            raw: json!({
                "c_info": { "type": xl_type.name(), "name": info.name },
                "b_info": { "max_vcpus": info.max_vcpu_id + 1, "max_memkb": kb },
            }),
        }
    }

    /// `c_info.name`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// `c_info.type`.
    pub fn xl_type(&self) -> Option<XlType> {
        self.xl_type
    }
    pub fn is_pvh(&self) -> bool {
        self.xl_type == Some(XlType::Pvh)
    }
    /// `b_info.target_memkb`: the guest's memory.
    pub fn memory_kb(&self) -> Option<u64> {
        self.memory_kb
    }
    /// `b_info.max_memkb`: the most memory the guest may have.
    pub fn max_memory_kb(&self) -> Option<u64> {
        self.max_memory_kb
    }
    /// `b_info.max_vcpus`.
    pub fn max_vcpus(&self) -> Option<u64> {
        self.max_vcpus
    }
    /// The guest's highest pfn by its maximum memory.
    pub fn max_pfn(&self) -> Option<u64> {
        self.max_memory_kb
            .filter(|&kb| kb >= 4)
            .map(|kb| kb / 4 - 1)
    }
    /// The guest's highest vCPU id (0 when the config does not say).
    pub fn max_vcpu_id(&self) -> u32 {
        self.max_vcpus.map_or(0, |n| {
            u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX)
        })
    }

    /// The whole JSON, as it came (with the name set by [`Self::set_name`]).
    pub fn raw(&self) -> &Value {
        &self.raw
    }
    pub fn into_raw(self) -> Value {
        self.raw
    }
    /// A top-level section a backend keeps its own facts in (the simulated
    /// host: `rxmigrate`, its guest's workload).
    pub fn section(&self, key: &str) -> Option<&Value> {
        self.raw.get(key)
    }
    /// The config with a backend's section added (or replaced).
    pub fn with_section(mut self, key: &str, value: Value) -> DomainConfig {
        if let Some(o) = self.raw.as_object_mut() {
            o.insert(key.to_string(), value);
        }
        self
    }

    /// Under the name the domain has now (libxl's stored config keeps the
    /// name it was created with, `NAME--incoming` after an `xl migrate`).
    pub fn set_name(&mut self, name: &str) {
        let Some(o) = self.raw.as_object_mut() else {
            return;
        };
        let c_info = o
            .entry("c_info")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(c) = c_info.as_object_mut() {
            c.insert("name".into(), Value::String(name.to_string()));
            self.name = Some(name.to_string());
        }
    }
    pub fn named(mut self, name: &str) -> DomainConfig {
        self.set_name(name);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_fields_come_from_libxls_json() {
        let c = DomainConfig::from_json(json!({
            "c_info": {"type": "pvh", "name": "p"},
            "b_info": {"max_memkb": 1024, "target_memkb": 512, "max_vcpus": 2},
            "rxmigrate": {"seed": 1},
        }))
        .unwrap();
        assert_eq!(c.name(), Some("p"));
        assert!(c.is_pvh());
        assert_eq!(c.max_pfn(), Some(255));
        assert_eq!(c.memory_kb(), Some(512));
        assert_eq!(c.max_vcpu_id(), 1);
        assert_eq!(c.section("rxmigrate"), Some(&json!({"seed": 1})));
        let bare = DomainConfig::from_json(json!({})).unwrap();
        assert_eq!(
            (bare.name(), bare.max_pfn(), bare.max_vcpu_id()),
            (None, None, 0)
        );
    }

    #[test]
    fn a_mistyped_field_is_named() {
        for (v, what) in [
            (json!([]), "not a JSON object"),
            (json!({"c_info": 3}), "c_info is not"),
            (json!({"c_info": {"type": "xen"}}), "c_info.type"),
            (json!({"b_info": {"max_memkb": "lots"}}), "b_info.max_memkb"),
            (json!({"b_info": {"max_vcpus": -1}}), "b_info.max_vcpus"),
        ] {
            let e = DomainConfig::from_json(v).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn renaming_keeps_the_rest() {
        let c = DomainConfig::from_json(json!({"c_info": {"name": "a", "uuid": "u"}, "x": 1}))
            .unwrap()
            .named("b");
        assert_eq!(c.name(), Some("b"));
        assert_eq!(c.raw()["c_info"]["uuid"], "u");
        assert_eq!(c.raw()["x"], 1);
    }
}
