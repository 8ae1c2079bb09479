//! A simulated host on disk: a state directory holding `host.json` (the
//! host's tag and next domain id), a lock file, and one `dom.<id>/` per
//! domain with its `meta.json` and the guest's log. Guest RAM and the
//! domain's hypervisor state are files under /dev/shm named in the meta.

use super::config::TrackingMode;
use crate::hv::{CpuPolicy, DomId, GuestType, HvError, Result, TscInfo};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    /// Distinguishes hosts: mfn bases and shm file names derive from it.
    pub tag: u32,
    pub next_domid: DomId,
    /// Model a hypervisor built without shadow paging (CONFIG_SHADOW_PAGING=n):
    /// PV guests' log-dirty cannot be enabled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_shadow: bool,
}

/// What the toolstack keeps about a domain (Xen's domain struct, roughly).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainMeta {
    pub domid: DomId,
    pub name: String,
    pub guest_type: GuestType,
    /// The highest pfn (HVM: of Xen's layout, holes included).
    pub max_pfn: u64,
    /// The guest's memory in pages (0: `max_pfn + 1`, as PV guests and
    /// metadata written before HVM guests had holes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ram_pages: u64,
    pub max_vcpu_id: u32,
    /// mfn of frame 0 of the RAM file (PV); 0 for HVM.
    pub mfn_base: u64,
    /// Salt of the pfn → frame scramble used by populate (PV).
    pub salt: u64,
    pub ram_path: PathBuf,
    pub state_path: PathBuf,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub tracking: Option<TrackingMode>,
    pub tsc: TscInfo,
    pub cpuid_hex: String,
    pub msrs_hex: String,
    pub guest_width: u32,
}

impl DomainMeta {
    /// The guest's memory size in pages.
    pub fn pages(&self) -> u64 {
        match self.ram_pages {
            0 => self.max_pfn + 1,
            n => n,
        }
    }
    /// Frames of the RAM file (the populated pfns of a built guest).
    pub fn frames(&self) -> u64 {
        match (self.guest_type, self.ram_pages) {
            (GuestType::Hvm, n) if n != 0 => super::layout::HvmLayout::new(n).file_frames(),
            _ => self.max_pfn + 1,
        }
    }
    /// Entries of the P2M (the highest pfn + 1).
    pub fn p2m_size(&self) -> u64 {
        self.max_pfn + 1
    }
    pub fn vcpus(&self) -> u32 {
        self.max_vcpu_id + 1
    }
    pub fn cpu_policy(&self) -> Result<CpuPolicy> {
        Ok(CpuPolicy {
            cpuid: from_hex(&self.cpuid_hex)?,
            msrs: from_hex(&self.msrs_hex)?,
        })
    }
    pub fn set_cpu_policy(&mut self, p: &CpuPolicy) {
        self.cpuid_hex = to_hex(&p.cpuid);
        self.msrs_hex = to_hex(&p.msrs);
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn from_hex(s: &str) -> Result<Vec<u8>> {
    let bad = || HvError::Invalid {
        op: "domain metadata",
        msg: "bad hex string".into(),
    };
    if s.len() % 2 != 0 {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Paths of a host directory.
#[derive(Debug, Clone)]
pub struct HostDir {
    pub dir: PathBuf,
}

/// An exclusive lock on the host (held while ids and names are allocated).
pub struct HostLock {
    _file: File,
}

impl HostDir {
    pub fn host_json(&self) -> PathBuf {
        self.dir.join("host.json")
    }
    pub fn dom_dir(&self, dom: DomId) -> PathBuf {
        self.dir.join(format!("dom.{dom}"))
    }
    pub fn meta_path(&self, dom: DomId) -> PathBuf {
        self.dom_dir(dom).join("meta.json")
    }
    pub fn log_path(&self, dom: DomId) -> PathBuf {
        self.dom_dir(dom).join("guest.log")
    }

    pub fn lock(&self) -> Result<HostLock> {
        let p = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| HvError::io(format!("open {}", p.display()), e))?;
        // SAFETY: flock on an fd we own; blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(HvError::io(
                format!("lock {}", p.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(HostLock { _file: file })
    }

    pub fn read_host(&self) -> Result<HostState> {
        read_json(&self.host_json())
    }
    pub fn write_host(&self, h: &HostState) -> Result<()> {
        write_json(&self.host_json(), h)
    }
    pub fn read_meta(&self, dom: DomId) -> Result<DomainMeta> {
        let p = self.meta_path(dom);
        if !p.exists() {
            return Err(HvError::NoSuchDomain(dom.to_string()));
        }
        read_json(&p)
    }
    pub fn write_meta(&self, m: &DomainMeta) -> Result<()> {
        write_json(&self.meta_path(m.domid), m)
    }

    /// Domain ids present, ascending.
    pub fn domids(&self) -> Result<Vec<DomId>> {
        let mut ids = Vec::new();
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| HvError::io(format!("list {}", self.dir.display()), e))?;
        for ent in rd.flatten() {
            let name = ent.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("dom."))
                .and_then(|n| n.parse().ok())
            {
                if ent.path().join("meta.json").exists() {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let s = fs::read(p).map_err(|e| HvError::io(format!("read {}", p.display()), e))?;
    serde_json::from_slice(&s).map_err(|e| HvError::Invalid {
        op: "read state",
        msg: format!("{}: {e}", p.display()),
    })
}

/// Write via a temporary file and rename, so readers never see half a file.
fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<()> {
    let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
    let body = serde_json::to_vec_pretty(v).map_err(|e| HvError::Invalid {
        op: "write state",
        msg: e.to_string(),
    })?;
    let mut f =
        File::create(&tmp).map_err(|e| HvError::io(format!("create {}", tmp.display()), e))?;
    f.write_all(&body)
        .map_err(|e| HvError::io(format!("write {}", tmp.display()), e))?;
    fs::rename(&tmp, p).map_err(|e| HvError::io(format!("rename {}", p.display()), e))
}
