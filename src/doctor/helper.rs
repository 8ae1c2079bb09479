//! Which libxl-save-helper xl will run: Xen's own, or rxmigrate's put in
//! its place (by the rxmigrate-xl-plugin package or `install.sh`, both with
//! a dpkg diversion of Xen's helper), with its path and version.
//!
//! libxl runs `LIBXL_SAVE_HELPER` when set, else the helper in the
//! installed Xen's libexec directory, `/usr/lib/xen-RELEASE/bin` on Debian.

use super::facts::Options;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Xen's helper is kept while ours is in place.
pub const STOCK_NAME: &str = "libxl-save-helper.stock";

/// A dpkg diversion of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diversion {
    pub to: PathBuf,
    /// The package that holds it, or `None` for a local one (install.sh).
    pub by: Option<String>,
}

/// One save helper xl would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveHelper {
    /// The path libxl runs (as on the host, not under the root).
    pub path: PathBuf,
    /// The Xen release whose libexec directory holds it.
    pub release: Option<String>,
    /// Named by LIBXL_SAVE_HELPER.
    pub from_env: bool,
    /// Whether anything is at `path`.
    pub exists: bool,
    /// The file it leads to, symbolic links followed (as on the host).
    pub resolved: Option<PathBuf>,
    /// rxmigrate-save-helper's `--version` line (`Err`: why there is
    /// none), or `None` when the file is not ours.
    pub ours: Option<Result<String, String>>,
    pub diversion: Option<Diversion>,
    /// Whether the diverted (stock) helper is there.
    pub stock_present: bool,
}

/// dpkg's diversions: groups of three lines (path, diverted to, package or
/// `:` for a local diversion).
pub fn parse_diversions(text: &str) -> Vec<(PathBuf, Diversion)> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks_exact(3)
        .map(|c| {
            (
                PathBuf::from(c[0]),
                Diversion {
                    to: PathBuf::from(c[1]),
                    by: (c[2] != ":").then(|| c[2].to_string()),
                },
            )
        })
        .collect()
}

/// Follow symbolic links of `path` (a host path) under `root`; the host
/// path it ends at, `None` when it does not exist or loops.
fn resolve(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        let under = root.join(p.strip_prefix("/").unwrap_or(&p));
        let md = std::fs::symlink_metadata(&under).ok()?;
        if !md.file_type().is_symlink() {
            return Some(p);
        }
        let t = std::fs::read_link(&under).ok()?;
        p = if t.is_absolute() {
            t
        } else {
            p.parent().unwrap_or(Path::new("/")).join(t)
        };
    }
    None
}

/// Whether the file holds rxmigrate-save-helper's name (Xen's helper does
/// not): ours are asked for their version, Xen's are never run.
fn is_ours(file: &Path) -> bool {
    const MARK: &[u8] = b"rxmigrate-save-helper";
    match std::fs::read(file) {
        Ok(bytes) => bytes.windows(MARK.len()).any(|w| w == MARK),
        Err(_) => false,
    }
}

/// `FILE --version`, the first line of its output.
pub fn version_of(file: &Path) -> Result<String, String> {
    let out = Command::new(file)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", file.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next() {
        Some(l) if out.status.success() => Ok(l.trim().to_string()),
        _ => Err(format!(
            "{} --version failed ({})",
            file.display(),
            out.status
        )),
    }
}

fn examine(
    opts: &Options,
    path: PathBuf,
    release: Option<String>,
    from_env: bool,
    diversions: &[(PathBuf, Diversion)],
) -> SaveHelper {
    let under = |p: &Path| opts.root.join(p.strip_prefix("/").unwrap_or(p));
    let exists = std::fs::symlink_metadata(under(&path)).is_ok();
    let resolved = resolve(&opts.root, &path);
    let ours = resolved
        .as_ref()
        .filter(|r| is_ours(&under(r)))
        .map(|r| version_of(&under(r)));
    let diversion = diversions
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, d)| d.clone());
    let stock_present = diversion.as_ref().is_some_and(|d| under(&d.to).is_file());
    SaveHelper {
        path,
        release,
        from_env,
        exists,
        resolved,
        ours,
        diversion,
        stock_present,
    }
}

/// The helpers xl would run: LIBXL_SAVE_HELPER's, else the one of the
/// running release (`release`) or, when that is not known, of every
/// installed release.
pub fn find(opts: &Options, release: Option<&str>) -> Vec<SaveHelper> {
    let diversions = std::fs::read_to_string(opts.under_root("/var/lib/dpkg/diversions"))
        .map(|t| parse_diversions(&t))
        .unwrap_or_default();
    if let Some(p) = &opts.env_helper {
        return vec![examine(opts, p.clone(), None, true, &diversions)];
    }
    let mut releases: Vec<String> = std::fs::read_dir(opts.under_root("/usr/lib"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rel = name.strip_prefix("xen-")?.to_string();
            let bin = e.path().join("bin");
            (bin.join("libxl-save-helper").symlink_metadata().is_ok()
                || bin.join(STOCK_NAME).exists())
            .then_some(rel)
        })
        .collect();
    releases.sort();
    if let Some(r) = release {
        if releases.iter().any(|x| x == r) {
            releases.retain(|x| x == r);
        }
    }
    releases
        .into_iter()
        .map(|r| {
            let path = PathBuf::from(format!("/usr/lib/xen-{r}/bin/libxl-save-helper"));
            examine(opts, path, Some(r), false, &diversions)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diversions_are_read_three_lines_at_a_time() {
        let text = "/usr/lib/xen-4.17/bin/libxl-save-helper\n\
                    /usr/lib/xen-4.17/bin/libxl-save-helper.stock\n\
                    rxmigrate-xl-plugin\n\
                    /usr/bin/x\n/usr/bin/x.real\n:\n";
        let d = parse_diversions(text);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].1.by.as_deref(), Some("rxmigrate-xl-plugin"));
        assert_eq!(
            d[0].1.to,
            Path::new("/usr/lib/xen-4.17/bin/libxl-save-helper.stock")
        );
        assert_eq!(d[1].1.by, None);
    }

    #[test]
    fn links_are_followed_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("usr/lib/xen-4.17/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib/rxmigrate")).unwrap();
        std::fs::write(t.path().join("usr/lib/rxmigrate/h"), "x").unwrap();
        std::os::unix::fs::symlink("/usr/lib/rxmigrate/h", bin.join("libxl-save-helper")).unwrap();
        std::os::unix::fs::symlink("../../rxmigrate/h", bin.join("rel")).unwrap();
        assert_eq!(
            resolve(
                t.path(),
                Path::new("/usr/lib/xen-4.17/bin/libxl-save-helper")
            ),
            Some(PathBuf::from("/usr/lib/rxmigrate/h"))
        );
        assert_eq!(
            resolve(t.path(), Path::new("/usr/lib/xen-4.17/bin/rel")),
            Some(PathBuf::from("/usr/lib/xen-4.17/bin/../../rxmigrate/h"))
        );
        assert_eq!(resolve(t.path(), Path::new("/usr/lib/none")), None);
    }
}
