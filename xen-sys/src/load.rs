//! Opening the Xen libraries at run time: which release is installed (the
//! libxenctrl soname present), and an exact account of what is missing when
//! they cannot be opened.

use crate::{v4_17, v4_18, v4_19, v4_20, v4_21, v4_22};
use crate::{xenctrl, xenevtchn, xenforeignmemory, xenguest, xenstore};
use std::fmt;
use std::path::{Path, PathBuf};

/// The hypervisor interface device of a Xen dom0.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// A Xen release, as `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XenRelease {
    pub major: u32,
    pub minor: u32,
}

impl XenRelease {
    pub const fn new(major: u32, minor: u32) -> XenRelease {
        XenRelease { major, minor }
    }
    /// `libxenctrl.so.4.20` and the like: libxenctrl and libxenguest change
    /// ABI with every release, so their sonames carry it.
    pub fn xenctrl(self) -> String {
        format!("libxenctrl.so.{self}")
    }
    pub fn xenguest(self) -> String {
        format!("libxenguest.so.{self}")
    }
    pub fn is_supported(self) -> bool {
        SUPPORTED.contains(&self)
    }
    /// "4.17–4.22".
    pub fn supported_range() -> String {
        format!("{}–{}", SUPPORTED[0], SUPPORTED[SUPPORTED.len() - 1])
    }
}

impl fmt::Display for XenRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The releases rxmigrate has bindings for, oldest first.
pub const SUPPORTED: [XenRelease; 6] = [
    XenRelease::new(4, 17),
    XenRelease::new(4, 18),
    XenRelease::new(4, 19),
    XenRelease::new(4, 20),
    XenRelease::new(4, 21),
    XenRelease::new(4, 22),
];

/// The libraries whose sonames every supported release shares.
pub const STABLE_LIBRARIES: [&str; 3] = [
    "libxenforeignmemory.so.1",
    "libxenevtchn.so.1",
    "libxenstore.so.4",
];

/// One thing that is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The privcmd device (not a Xen dom0, or xen modules not loaded).
    Device(PathBuf),
    /// No libxenctrl of any release.
    NoXenctrl,
    /// A libxenctrl of a release rxmigrate has no bindings for.
    Unsupported(XenRelease),
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
            Missing::NoXenctrl => write!(
                f,
                "libxenctrl not found: is Xen installed? (looked for {} to {})",
                SUPPORTED[0].xenctrl(),
                SUPPORTED[SUPPORTED.len() - 1].xenctrl()
            ),
            Missing::Unsupported(r) => write!(
                f,
                "Xen {r} found; rxmigrate supports {}",
                XenRelease::supported_range()
            ),
            Missing::Library { soname, why } => write!(f, "{soname} cannot be loaded ({why})"),
            Missing::Symbol { soname, why } => write!(
                f,
                "{soname} lacks a function rxmigrate needs ({why}); is it the Xen release its name says?"
            ),
        }
    }
}

/// Why Xen cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("Xen is not usable here: {}", list(.0))]
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

impl Probe {
    fn path(&self, soname: &str) -> PathBuf {
        match &self.lib_dir {
            Some(d) => d.join(soname),
            None => Path::new(soname).to_path_buf(),
        }
    }

    /// The directories where an installed libxenctrl would be, to name an
    /// unsupported release found there.
    fn search_dirs(&self) -> Vec<PathBuf> {
        if let Some(d) = &self.lib_dir {
            return vec![d.clone()];
        }
        let mut v: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for d in [
            "/usr/lib/x86_64-linux-gnu",
            "/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/lib64",
            "/usr/lib",
            "/usr/local/lib",
            "/usr/local/lib64",
        ] {
            v.push(PathBuf::from(d));
        }
        v
    }

    /// The newest `libxenctrl.so.MAJOR.MINOR` in the search directories.
    fn installed_xenctrl(&self) -> Option<XenRelease> {
        let mut found = Vec::new();
        for d in self.search_dirs() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("libxenctrl.so."))
                else {
                    continue;
                };
                let mut it = rest.split('.');
                if let (Some(Ok(major)), Some(Ok(minor))) = (
                    it.next().map(str::parse::<u32>),
                    it.next().map(str::parse::<u32>),
                ) {
                    found.push(XenRelease::new(major, minor));
                }
            }
        }
        found.into_iter().max()
    }
}

/// The per-release function table (`Release` of `gen/v4_NN.rs`), for the
/// release that is installed.
pub enum ReleaseLib {
    V4_17(v4_17::Release),
    V4_18(v4_18::Release),
    V4_19(v4_19::Release),
    V4_20(v4_20::Release),
    V4_21(v4_21::Release),
    V4_22(v4_22::Release),
}

impl ReleaseLib {
    /// Resolves release `r`'s table from its libxenctrl.
    ///
    /// # Safety
    /// `lib` must be `r`'s libxenctrl: the symbols are typed as that
    /// release's headers declare them.
    unsafe fn resolve(r: XenRelease, lib: libloading::Library) -> Result<ReleaseLib, String> {
        // SAFETY: the caller's contract; each `from_library` only looks
        // symbols up.
        let t = unsafe {
            match (r.major, r.minor) {
                (4, 17) => v4_17::Release::from_library(lib).map(ReleaseLib::V4_17),
                (4, 18) => v4_18::Release::from_library(lib).map(ReleaseLib::V4_18),
                (4, 19) => v4_19::Release::from_library(lib).map(ReleaseLib::V4_19),
                (4, 20) => v4_20::Release::from_library(lib).map(ReleaseLib::V4_20),
                (4, 21) => v4_21::Release::from_library(lib).map(ReleaseLib::V4_21),
                (4, 22) => v4_22::Release::from_library(lib).map(ReleaseLib::V4_22),
                _ => return Err(format!("no bindings for Xen {r}")),
            }
        };
        t.map_err(|e| e.to_string())
    }
}

/// All five libraries of one release, opened.
pub struct XenLibs {
    /// The release whose libraries these are (the libxenctrl soname).
    pub release: XenRelease,
    /// Its own functions (`gen/v4_NN.rs`).
    pub rel: ReleaseLib,
    pub ctrl: xenctrl::XenCtrl,
    pub guest: xenguest::XenGuest,
    pub fmem: xenforeignmemory::XenForeignMemory,
    pub evtchn: xenevtchn::XenEvtchn,
    pub store: xenstore::XenStore,
}

impl fmt::Debug for XenLibs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XenLibs({})", self.release)
    }
}

/// Opens one library; a failure is sorted into "not there" or "wrong one".
fn open<T>(
    probe: &Probe,
    soname: &str,
    resolve: impl FnOnce(libloading::Library) -> Result<T, String>,
    missing: &mut Vec<Missing>,
) -> Option<T> {
    let lib = match load(probe, soname) {
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
        Err(why) => {
            missing.push(Missing::Symbol {
                soname: soname.to_string(),
                why,
            });
            None
        }
    }
}

fn load(probe: &Probe, soname: &str) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: loading a Xen tool library runs its constructors, which only
    // initialise library-local state.
    unsafe { libloading::Library::new(probe.path(soname)) }
}

impl XenLibs {
    /// Open everything at the default places.
    pub fn open() -> Result<XenLibs, LoadError> {
        Self::open_with(&Probe::default())
    }

    /// Which supported release's libxenctrl is there (the newest if several).
    fn find_release(probe: &Probe) -> Result<XenRelease, Missing> {
        for r in SUPPORTED.iter().rev() {
            if load(probe, &r.xenctrl()).is_ok() {
                return Ok(*r);
            }
        }
        match probe.installed_xenctrl() {
            Some(r) => Err(Missing::Unsupported(r)),
            None => Err(Missing::NoXenctrl),
        }
    }

    /// Open everything, checking every item so the error lists all that is
    /// missing at once.
    pub fn open_with(probe: &Probe) -> Result<XenLibs, LoadError> {
        let mut missing = Vec::new();
        if !probe.privcmd.exists() {
            missing.push(Missing::Device(probe.privcmd.clone()));
        }
        let release = match Self::find_release(probe) {
            Ok(r) => Some(r),
            Err(m) => {
                missing.push(m);
                None
            }
        };
        // The `from_library` calls only look symbols up and store them with
        // the signatures bindgen took from the headers: the shared ones are
        // the same in every supported release (ci/regen-xen-bindings.sh
        // checks), the `Release` ones are the found release's own.
        let (rel, ctrl, guest) = match release {
            Some(r) => (
                open(
                    probe,
                    &r.xenctrl(),
                    // SAFETY: the library is r's libxenctrl (its soname).
                    |l| unsafe { ReleaseLib::resolve(r, l) },
                    &mut missing,
                ),
                open(
                    probe,
                    &r.xenctrl(),
                    // SAFETY: symbol look-ups only, typed as every release declares them.
                    |l| unsafe { xenctrl::XenCtrl::from_library(l) }.map_err(|e| e.to_string()),
                    &mut missing,
                ),
                open(
                    probe,
                    &r.xenguest(),
                    // SAFETY: as above.
                    |l| unsafe { xenguest::XenGuest::from_library(l) }.map_err(|e| e.to_string()),
                    &mut missing,
                ),
            ),
            None => (None, None, None),
        };
        let fmem = open(
            probe,
            STABLE_LIBRARIES[0],
            |l| {
                // SAFETY: as above.
                unsafe { xenforeignmemory::XenForeignMemory::from_library(l) }
                    .map_err(|e| e.to_string())
            },
            &mut missing,
        );
        let evtchn = open(
            probe,
            STABLE_LIBRARIES[1],
            // SAFETY: as above.
            |l| unsafe { xenevtchn::XenEvtchn::from_library(l) }.map_err(|e| e.to_string()),
            &mut missing,
        );
        let store = open(
            probe,
            STABLE_LIBRARIES[2],
            // SAFETY: as above.
            |l| unsafe { xenstore::XenStore::from_library(l) }.map_err(|e| e.to_string()),
            &mut missing,
        );
        match (release, rel, ctrl, guest, fmem, evtchn, store) {
            (
                Some(release),
                Some(rel),
                Some(ctrl),
                Some(guest),
                Some(fmem),
                Some(evtchn),
                Some(store),
            ) if missing.is_empty() => Ok(XenLibs {
                release,
                rel,
                ctrl,
                guest,
                fmem,
                evtchn,
                store,
            }),
            _ => Err(LoadError::Missing(missing)),
        }
    }
}
