//! Opening the Xen libraries at run time, with an exact account of what is
//! missing when they cannot be opened.

use crate::{xenctrl, xenevtchn, xenforeignmemory, xenguest, xenstore};
use std::fmt;
use std::path::{Path, PathBuf};

/// The hypervisor interface device of a Xen dom0.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// The libraries, by soname, as Xen 4.17 installs them. libxenctrl and
/// libxenguest change ABI with every Xen release, hence the version pin.
pub const LIBRARIES: [&str; 5] = [
    "libxenctrl.so.4.17",
    "libxenguest.so.4.17",
    "libxenforeignmemory.so.1",
    "libxenevtchn.so.1",
    "libxenstore.so.4",
];

/// One thing that is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The privcmd device (not a Xen dom0, or xen modules not loaded).
    Device(PathBuf),
    /// A library that could not be opened, with the loader's words.
    Library { soname: String, why: String },
    /// A library that opened but lacks a function (a different Xen version).
    Symbol { soname: String, why: String },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Device(p) => write!(
                f,
                "{} is missing (not running in a Xen dom0, or the xen_privcmd module is not loaded)",
                p.display()
            ),
            Missing::Library { soname, why } => write!(f, "{soname} cannot be loaded ({why})"),
            Missing::Symbol { soname, why } => {
                write!(f, "{soname} lacks a function rxmigrate needs ({why}); is it Xen 4.17's?")
            }
        }
    }
}

/// Why Xen cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("Xen 4.17 is not usable here: {}", list(.0))]
    Missing(Vec<Missing>),
}

impl LoadError {
    pub fn missing(&self) -> &[Missing] {
        match self {
            LoadError::Missing(m) => m,
        }
    }
}

fn list(m: &[Missing]) -> String {
    m.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where to look: the real locations by default; tests point elsewhere.
#[derive(Debug, Clone)]
pub struct Probe {
    pub privcmd: PathBuf,
    /// Open libraries from this directory instead of the loader's search path.
    pub lib_dir: Option<PathBuf>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            privcmd: PathBuf::from(PRIVCMD),
            lib_dir: std::env::var_os("RXMIGRATE_XEN_LIBDIR").map(PathBuf::from),
        }
    }
}

/// All five libraries, opened.
pub struct XenLibs {
    pub ctrl: xenctrl::XenCtrl,
    pub guest: xenguest::XenGuest,
    pub fmem: xenforeignmemory::XenForeignMemory,
    pub evtchn: xenevtchn::XenEvtchn,
    pub store: xenstore::XenStore,
}

impl fmt::Debug for XenLibs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XenLibs")
    }
}

/// Opens one library; a failure is sorted into "not there" or "wrong one".
fn open<T>(
    probe: &Probe,
    soname: &str,
    resolve: impl FnOnce(libloading::Library) -> Result<T, libloading::Error>,
    missing: &mut Vec<Missing>,
) -> Option<T> {
    let path: PathBuf = match &probe.lib_dir {
        Some(d) => d.join(soname),
        None => Path::new(soname).to_path_buf(),
    };
    // SAFETY: loading a Xen tool library runs its constructors, which only
    // initialise library-local state.
    let lib = match unsafe { libloading::Library::new(&path) } {
        Ok(l) => l,
        Err(e) => {
            missing.push(Missing::Library {
                soname: soname.to_string(),
                why: e.to_string(),
            });
            return None;
        }
    };
    match resolve(lib) {
        Ok(t) => Some(t),
        Err(e) => {
            missing.push(Missing::Symbol {
                soname: soname.to_string(),
                why: e.to_string(),
            });
            None
        }
    }
}

impl XenLibs {
    /// Open everything at the default places.
    pub fn open() -> Result<XenLibs, LoadError> {
        Self::open_with(&Probe::default())
    }

    /// Open everything, checking every item so the error lists all that is
    /// missing at once.
    pub fn open_with(probe: &Probe) -> Result<XenLibs, LoadError> {
        let mut missing = Vec::new();
        if !probe.privcmd.exists() {
            missing.push(Missing::Device(probe.privcmd.clone()));
        }
        // The five `from_library` calls only look symbols up and store them
        // with the signatures bindgen took from the 4.17 headers.
        let ctrl = open(
            probe,
            LIBRARIES[0],
            // SAFETY: symbol look-ups only, typed as the 4.17 headers declare them.
            |l| unsafe { xenctrl::XenCtrl::from_library(l) },
            &mut missing,
        );
        let guest = open(
            probe,
            LIBRARIES[1],
            // SAFETY: symbol look-ups only, typed as the 4.17 headers declare them.
            |l| unsafe { xenguest::XenGuest::from_library(l) },
            &mut missing,
        );
        let fmem = open(
            probe,
            LIBRARIES[2],
            // SAFETY: symbol look-ups only, typed as the 4.17 headers declare them.
            |l| unsafe { xenforeignmemory::XenForeignMemory::from_library(l) },
            &mut missing,
        );
        let evtchn = open(
            probe,
            LIBRARIES[3],
            // SAFETY: symbol look-ups only, typed as the 4.17 headers declare them.
            |l| unsafe { xenevtchn::XenEvtchn::from_library(l) },
            &mut missing,
        );
        let store = open(
            probe,
            LIBRARIES[4],
            // SAFETY: symbol look-ups only, typed as the 4.17 headers declare them.
            |l| unsafe { xenstore::XenStore::from_library(l) },
            &mut missing,
        );
        match (ctrl, guest, fmem, evtchn, store) {
            (Some(ctrl), Some(guest), Some(fmem), Some(evtchn), Some(store))
                if missing.is_empty() =>
            {
                Ok(XenLibs {
                    ctrl,
                    guest,
                    fmem,
                    evtchn,
                    store,
                })
            }
            _ => Err(LoadError::Missing(missing)),
        }
    }
}
