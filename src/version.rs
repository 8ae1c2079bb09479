//! What this build is: its version, the git commit it was built from
//! (`build.rs`; "unknown" from a tarball without .git) and the Xen
//! releases it drives. `rxmigrate --version`, the save helper's first log
//! line and `rxmigrate doctor` all read them here.

use std::sync::LazyLock;

/// The package version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit of the build, 12 hex digits, or "unknown".
pub const GIT_COMMIT: &str = env!("RXMIGRATE_GIT_COMMIT");

/// The Xen releases (major.minor) this build drives, oldest first. The one
/// list: the version strings, the doctor's release check and the packages'
/// dependencies follow it.
pub const XEN_RELEASES: &[&str] = &["4.17", "4.18", "4.19", "4.20", "4.21", "4.22"];

/// Whether `release` ("4.17", or "4.17.5" with a patch level) is one of
/// [`XEN_RELEASES`].
pub fn supports_release(release: &str) -> bool {
    let mut parts = release.split('.');
    let major_minor = match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => return false,
    };
    XEN_RELEASES.contains(&major_minor.as_str())
}

/// "0.1.0 (git 0123456789ab; Xen 4.17)".
pub static LONG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{VERSION} (git {GIT_COMMIT}; Xen {})",
        XEN_RELEASES.join(", ")
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_releases_are_those_xen_sys_binds() {
        let bound: Vec<String> = xen_sys::SUPPORTED.iter().map(|r| r.to_string()).collect();
        assert_eq!(XEN_RELEASES, bound.as_slice());
    }

    #[test]
    fn a_release_is_supported_with_or_without_its_patch_level() {
        let first = XEN_RELEASES[0];
        assert!(supports_release(first));
        assert!(supports_release(&format!("{first}.5")));
        assert!(!supports_release("3.4"));
        assert!(!supports_release("4"));
        assert!(!supports_release(""));
    }

    #[test]
    fn the_long_version_names_the_commit_and_every_release() {
        assert!(LONG.starts_with(VERSION), "{}", *LONG);
        assert!(LONG.contains(GIT_COMMIT), "{}", *LONG);
        for r in XEN_RELEASES {
            assert!(LONG.contains(r), "{}", *LONG);
        }
    }
}
