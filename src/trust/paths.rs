//! Paths a received config may name, judged by their text alone: Xen's own
//! directories, and what makes a path "clean".

use std::path::{Component, Path};

/// Xen's own directories: the only places a received config may make the
/// device model create or write files (serial logs, sockets, pipes). Only
/// root can write there on a Xen host, so nothing in them can be a link a
/// local user planted.
pub const XEN_DIRS: [&str; 4] = ["/var/lib/xen", "/var/log/xen", "/var/run/xen", "/run/xen"];

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("is not an absolute path")]
    Relative,
    #[error("has a '.', '..' or empty component")]
    NotClean,
    #[error("contains a control character")]
    Control,
    #[error("is outside Xen's directories ({})", XEN_DIRS.join(", "))]
    OutsideXenDirs,
}

/// An absolute path without '.', '..' or empty components (no "//", no
/// trailing '/') and without control characters: its text says where it is.
pub fn check_clean(p: &str) -> Result<&Path, PathError> {
    if p.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    if !p.starts_with('/') {
        return Err(PathError::Relative);
    }
    // Path::components hides "//", "/./" and a trailing '/': look at the text.
    let rest = &p[1..];
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(PathError::NotClean);
    }
    let path = Path::new(p);
    debug_assert!(path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
    Ok(path)
}

/// A clean path strictly below one of [`XEN_DIRS`].
pub fn check_under_xen_dirs(p: &str) -> Result<&Path, PathError> {
    let path = check_clean(p)?;
    if XEN_DIRS
        .iter()
        .any(|d| path.starts_with(d) && path != Path::new(d))
    {
        Ok(path)
    } else {
        Err(PathError::OutsideXenDirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_xen_dirs_pass() {
        for p in [
            "/var/log/xen/console/guest-hvm-lab-serial.log",
            "/var/lib/xen/x",
            "/run/xen/serial.sock",
            "/var/run/xen/a b",
        ] {
            assert!(check_under_xen_dirs(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn escapes_and_other_places_are_refused() {
        use PathError::*;
        for (p, want) in [
            ("/var/log/xen/../../../etc/shadow", NotClean),
            ("/var/log/xen/./x", NotClean),
            ("/var/log/xen//x", NotClean),
            ("/var/log/xen/x/", NotClean),
            ("var/log/xen/x", Relative),
            ("", Relative),
            ("/var/log/xen", OutsideXenDirs),
            ("/var/log/xenx/y", OutsideXenDirs),
            ("/etc/cron.d/x", OutsideXenDirs),
            ("/var/log/xen/x\n", Control),
        ] {
            assert_eq!(check_under_xen_dirs(p), Err(want), "{p:?}");
        }
    }

    #[test]
    fn clean_paths_may_be_anywhere() {
        assert!(check_clean("/root/guest/vmlinuz").is_ok());
        assert_eq!(check_clean("/root/../etc"), Err(PathError::NotClean));
    }
}
