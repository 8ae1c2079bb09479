//! Handing a run over to Xen's own `libxl-save-helper` (checkpointed
//! streams, the VERIFY pass, hosts without a backend). It is exec'd in place
//! with our exact argv, so it inherits the stream fd and both libxl pipes
//! untouched: nothing has been read from them, and libxl sees one helper.

use rxmigrate::trust::files::{check_trusted_file, UntrustedFile};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Name install.sh gives the diverted stock helper, beside the original.
pub const DIVERTED_NAME: &str = "libxl-save-helper.stock";
/// Where Debian puts each Xen release's tools: `/usr/lib/xen-4.17/bin`
/// (Debian 12), `/usr/lib/xen-4.20/bin` (Debian 13), one per release.
pub const DEBIAN_XEN_LIBS: &str = "/usr/lib";
const HELPER_NAME: &str = "libxl-save-helper";

/// Xen's helper of the release whose xl started us: libxl runs the save
/// helper as a child of xl, which Debian keeps beside the helper
/// (`/usr/lib/xen-4.20/bin/xl`).
fn beside_parent_xl() -> Option<PathBuf> {
    let ppid = std::os::unix::process::parent_id();
    let xl = std::fs::read_link(format!("/proc/{ppid}/exe")).ok()?;
    (xl.file_name()? == "xl").then(|| xl.with_file_name(HELPER_NAME))
}

/// `(major, minor)` of a Debian Xen tools directory name, `xen-4.20`.
fn release_of(dir_name: &str) -> Option<(u32, u32)> {
    let (major, minor) = dir_name.strip_prefix("xen-")?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Debian's helpers under `libs`, newest release first.
fn debian_helpers(libs: &Path) -> Vec<PathBuf> {
    let mut found: Vec<((u32, u32), PathBuf)> = std::fs::read_dir(libs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let release = release_of(e.file_name().to_str()?)?;
            Some((release, e.path().join("bin").join(HELPER_NAME)))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error(
        "no stock libxl-save-helper found (tried {tried}); set RXMIGRATE_STOCK_HELPER or \
         stock_helper in /etc/rxmigrate.conf"
    )]
    NotFound { tried: String },
    #[error("{0} is this program, not Xen's helper; point RXMIGRATE_STOCK_HELPER at the real one")]
    IsSelf(PathBuf),
    #[error(
        "refusing to execute the stock helper: {0}; it must be a regular file owned by root \
         that no one else can write, in directories likewise"
    )]
    Untrusted(#[source] UntrustedFile),
    #[error("executing the stock helper {path}: {source}")]
    Exec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The stock helper: the configured one, else `libxl-save-helper.stock`
/// beside the path libxl ran us by (install.sh's diversion), else the one
/// beside the xl that started us, else Debian's, newest release first. Never this program itself, and only a trusted file (root's,
/// writable by no one else, in directories likewise: we run as root): a
/// configured helper that is not is refused, a found one skipped. Returns
/// the path checked, links resolved.
pub fn locate(configured: Option<&Path>, argv0: &Path) -> Result<PathBuf, StockError> {
    let me = std::env::current_exe().ok();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = configured {
        candidates.push(p.to_path_buf());
    } else {
        for dir in [argv0.parent(), me.as_deref().and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            candidates.push(dir.join(DIVERTED_NAME));
        }
        candidates.extend(beside_parent_xl());
        candidates.extend(debian_helpers(Path::new(DEBIAN_XEN_LIBS)));
    }
    for c in &candidates {
        if !c.is_file() {
            continue;
        }
        let is_me = me.as_deref().is_some_and(|m| same_file(c, m)) || same_file(c, argv0);
        if is_me {
            if configured.is_some() {
                return Err(StockError::IsSelf(c.clone()));
            }
            continue;
        }
        match check_trusted_file(c) {
            Ok(real) => return Ok(real),
            Err(e) if configured.is_some() => return Err(StockError::Untrusted(e)),
            Err(e) => log::warn!("not using {} as the stock helper: {e}", c.display()),
        }
    }
    Err(StockError::NotFound {
        tried: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Replace this process with the stock helper, same arguments. Returns only
/// on failure.
pub fn exec(path: &Path, args: &[OsString]) -> StockError {
    let source = std::process::Command::new(path)
        .arg0(path)
        .args(args)
        .exec();
    StockError::Exec {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_helper_wins_and_self_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().join("helper");
        std::fs::write(&h, "#!/bin/sh\n").unwrap();
        assert_eq!(locate(Some(&h), Path::new("/nowhere/x")).unwrap(), h);
        let me = std::env::current_exe().unwrap();
        assert!(matches!(locate(Some(&me), &me), Err(StockError::IsSelf(_))));
        let missing = d.path().join("absent");
        let e = locate(Some(&missing), Path::new("/nowhere/x")).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
    }

    #[test]
    fn a_helper_others_can_write_is_not_executed() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let h = d.path().join("helper");
        std::fs::write(&h, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = locate(Some(&h), Path::new("/nowhere/x")).unwrap_err();
        assert!(matches!(e, StockError::Untrusted(_)), "{e}");
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        // Found beside argv0 rather than configured: skipped.
        let stock = d.path().join(DIVERTED_NAME);
        std::fs::write(&stock, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&stock, std::fs::Permissions::from_mode(0o777)).unwrap();
        let found = locate(None, &d.path().join("libxl-save-helper"));
        assert!(found.map_or(true, |p| p != stock));
    }

    #[test]
    fn debian_helpers_newest_release_first() {
        let d = tempfile::tempdir().unwrap();
        for dir in ["xen-4.17", "xen-4.20", "xen-4.9", "xen-common", "xen-4.x"] {
            std::fs::create_dir_all(d.path().join(dir).join("bin")).unwrap();
        }
        let found = debian_helpers(d.path());
        let want: Vec<_> = ["xen-4.20", "xen-4.17", "xen-4.9"]
            .iter()
            .map(|r| d.path().join(r).join("bin/libxl-save-helper"))
            .collect();
        assert_eq!(found, want);
        assert_eq!(release_of("xen-4.20"), Some((4, 20)));
        assert_eq!(release_of("xen-common"), None);
    }

    #[test]
    fn diverted_helper_beside_argv0_is_found() {
        let d = tempfile::tempdir().unwrap();
        let stock = d.path().join(DIVERTED_NAME);
        std::fs::write(&stock, "#!/bin/sh\n").unwrap();
        let argv0 = d.path().join("libxl-save-helper");
        assert_eq!(locate(None, &argv0).unwrap(), stock);
    }
}
