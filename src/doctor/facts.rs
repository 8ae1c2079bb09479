//! What the host has, gathered once for the checks: the hypervisor and its
//! capabilities, the privcmd device, Xen's libraries, the save helper xl
//! runs, and where the settings and keys are.

use super::helper::{self, SaveHelper};
use crate::version::XEN_RELEASES;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// Which hypervisor to examine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvChoice {
    Xen,
    /// The simulated host in this directory (tests): no device, no
    /// libraries, Xen's capabilities as simulated.
    Sim(PathBuf),
}

/// What to examine and where.
#[derive(Debug, Clone)]
pub struct Options {
    pub hv: HvChoice,
    /// Files (save helper, dpkg's diversions, settings, keys) are looked up
    /// under this directory: `/` on a host.
    pub root: PathBuf,
    /// The settings file (default: ROOT/etc/rxmigrate.conf).
    pub conf: Option<PathBuf>,
    /// The key directory (default: ROOT/etc/rxmigrate).
    pub key_dir: Option<PathBuf>,
    /// The save helper xl runs when LIBXL_SAVE_HELPER names one.
    pub env_helper: Option<PathBuf>,
    /// Memory a receiver should have free, in bytes.
    pub min_free: u64,
}

impl Options {
    /// `path` (absolute) under the root.
    pub fn under_root(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    pub fn conf_path(&self) -> PathBuf {
        self.conf
            .clone()
            .unwrap_or_else(|| self.under_root("/etc/rxmigrate.conf"))
    }

    pub fn key_dir_path(&self) -> PathBuf {
        self.key_dir
            .clone()
            .unwrap_or_else(|| self.under_root(crate::transport::keys::DEFAULT_KEY_DIR))
    }
}

/// The hypervisor as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvFacts {
    /// No usable Xen: why, in the backend's words.
    Absent { why: String },
    Xen {
        /// "4.17"
        release: String,
        shadow: bool,
        hap: bool,
        /// Bytes a new guest could get.
        free: Option<u64>,
    },
    Sim {
        dir: PathBuf,
        release: String,
        free: Option<u64>,
    },
}

impl HvFacts {
    /// The release found, if any.
    pub fn release(&self) -> Option<&str> {
        match self {
            HvFacts::Absent { .. } => None,
            HvFacts::Xen { release, .. } | HvFacts::Sim { release, .. } => Some(release),
        }
    }
}

/// A library and whether the loader opens it (`Err`: its words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    pub soname: String,
    pub found: Result<(), String>,
}

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct Facts {
    pub hv: HvFacts,
    /// Opening the privcmd device read-write (`None`: simulated host).
    pub privcmd: Option<Result<(), String>>,
    /// Xen's libraries (`None`: simulated host).
    pub libraries: Option<Vec<Library>>,
    /// The save helper(s) xl would run: one per installed Xen release.
    pub helpers: Vec<SaveHelper>,
}

/// The sonames rxmigrate and libxl need for `release`: libxenctrl and
/// libxenguest change ABI with each release, the others are stable.
pub fn sonames(release: &str) -> Vec<String> {
    let mut v = vec![
        format!("libxenctrl.so.{release}"),
        format!("libxenguest.so.{release}"),
    ];
    for s in [
        "libxenforeignmemory.so.1",
        "libxencall.so.1",
        "libxenevtchn.so.1",
        "libxengnttab.so.1",
        "libxentoollog.so.1",
        "libxenstore.so.4",
    ] {
        v.push(s.to_string());
    }
    v
}

/// Whether the dynamic loader opens `soname` (with its dependencies).
pub fn probe_library(soname: &str) -> Result<(), String> {
    let name = CString::new(soname).map_err(|_| "a NUL in the name".to_string())?;
    // SAFETY: name is a NUL-terminated string; RTLD_NOW|RTLD_LOCAL keeps the
    // library's symbols out of the global namespace. Loading runs the
    // library's constructors, as any use of it would.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated string valid
        // until the next dl* call on this thread, copied out at once.
        let why = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "not found".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(why);
    }
    // SAFETY: h came from a successful dlopen and is closed once.
    unsafe { libc::dlclose(h) };
    Ok(())
}

/// Opening the privcmd device read-write, as the backend does.
pub fn probe_privcmd(path: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn xen_facts() -> HvFacts {
    match crate::hv::xen::XenHost::open() {
        Err(e) => HvFacts::Absent { why: e.to_string() },
        Ok(x) => {
            use crate::hv::Hypervisor;
            let (major, minor) = x.xen_version();
            let release = format!("{major}.{minor}");
            match x.physinfo() {
                Ok(p) => HvFacts::Xen {
                    release,
                    shadow: p.has_shadow(),
                    hap: p.has_hap(),
                    free: Some(p.free_bytes()),
                },
                Err(e) => HvFacts::Absent {
                    why: format!("Xen {release} answers, but not to physinfo: {e}"),
                },
            }
        }
    }
}

#[cfg(feature = "sim")]
fn sim_facts(dir: &Path) -> HvFacts {
    use crate::hv::Hypervisor;
    match crate::hv::sim::SimHost::open(dir) {
        Err(e) => HvFacts::Absent { why: e.to_string() },
        Ok(h) => {
            let (major, minor) = h.xen_version();
            HvFacts::Sim {
                dir: dir.to_path_buf(),
                release: format!("{major}.{minor}"),
                free: h.host_free_memory().ok().flatten(),
            }
        }
    }
}

#[cfg(not(feature = "sim"))]
fn sim_facts(dir: &Path) -> HvFacts {
    HvFacts::Absent {
        why: format!("sim:{}: this build has no simulated host", dir.display()),
    }
}

/// Look at the host.
pub fn gather(opts: &Options) -> Facts {
    let (hv, privcmd, libraries) = match &opts.hv {
        HvChoice::Sim(dir) => (sim_facts(dir), None, None),
        HvChoice::Xen => {
            let hv = xen_facts();
            // The running release's libraries; without Xen, those of the
            // release whose libxenctrl is installed, else the newest release
            // this build drives.
            let release = hv
                .release()
                .filter(|r| crate::version::supports_release(r))
                .map(str::to_string)
                .or_else(|| xen_sys::installed_release().map(|r| r.to_string()))
                .unwrap_or_else(|| XEN_RELEASES[XEN_RELEASES.len() - 1].to_string());
            let libs = sonames(&release)
                .into_iter()
                .map(|soname| Library {
                    found: probe_library(&soname),
                    soname,
                })
                .collect();
            let privcmd = probe_privcmd(Path::new(xen_sys::PRIVCMD));
            (hv, Some(privcmd), Some(libs))
        }
    };
    let helpers = helper::find(opts, hv.release());
    Facts {
        hv,
        privcmd,
        libraries,
        helpers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_opens_libc_and_not_a_library_that_does_not_exist() {
        assert_eq!(probe_library("libc.so.6"), Ok(()));
        let e = probe_library("libxen-no-such-library.so.9").unwrap_err();
        assert!(e.contains("libxen-no-such-library.so.9"), "{e}");
    }

    #[test]
    fn the_per_release_sonames_follow_the_release() {
        let s = sonames("4.17");
        assert_eq!(s[0], "libxenctrl.so.4.17");
        assert_eq!(s[1], "libxenguest.so.4.17");
        assert_eq!(s.len(), 8);
    }

    #[test]
    fn a_missing_device_is_reported_with_the_systems_words() {
        let e = probe_privcmd(Path::new("/nonexistent/privcmd")).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
    }
}
