//! Files a process running as root may act on, and files it creates for
//! itself.
//!
//! A file is *trusted* (to be executed, read for settings, or handed to a
//! guest) when it is a regular file owned by root and writable by no one
//! else, in directories likewise owned by root and writable by no one else
//! (a sticky directory such as /tmp counts as safe: no one else can rename
//! or replace what root owns in it). Then no other local user can change it
//! between the check and its use. When this process is not root (tests, a
//! user's own simulated host), files and directories of its own user count
//! as root's.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no argument, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Whose files this process trusts: root's, and its own user's.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

/// Why a file is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum Why {
    #[error("cannot be examined: {0}")]
    Io(#[source] std::io::Error),
    #[error("is a symbolic link")]
    Symlink,
    #[error("is not a regular file")]
    NotRegular,
    #[error("is owned by uid {0}, not root")]
    Owner(u32),
    #[error("is writable by group or others (mode {0:04o})")]
    Writable(u32),
    #[error("is in directory {dir}, owned by uid {uid}, not root")]
    DirOwner { dir: PathBuf, uid: u32 },
    #[error("is in directory {dir}, writable by group or others (mode {mode:04o})")]
    DirWritable { dir: PathBuf, mode: u32 },
    #[error("is not readable by every local user (mode {0:04o})")]
    NotPublic(u32),
}

/// A file refused, and why.
#[derive(Debug, thiserror::Error)]
#[error("{} {why}", path.display())]
pub struct UntrustedFile {
    pub path: PathBuf,
    #[source]
    pub why: Why,
}

fn refuse<T>(path: &Path, why: Why) -> Result<T, UntrustedFile> {
    Err(UntrustedFile {
        path: path.to_path_buf(),
        why,
    })
}

const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Check that `path` is a trusted file (see the module documentation);
/// returns it with links resolved, the path that was checked and should be
/// used.
pub fn check_trusted_file(path: &Path) -> Result<PathBuf, UntrustedFile> {
    let real = match path.canonicalize() {
        Ok(p) => p,
        Err(e) => return refuse(path, Why::Io(e)),
    };
    let md = match std::fs::metadata(&real) {
        Ok(m) => m,
        Err(e) => return refuse(path, Why::Io(e)),
    };
    if !md.is_file() {
        return refuse(path, Why::NotRegular);
    }
    if !trusted_owner(md.uid()) {
        return refuse(path, Why::Owner(md.uid()));
    }
    let mode = md.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return refuse(path, Why::Writable(mode));
    }
    for dir in real.ancestors().skip(1) {
        let d = match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) => return refuse(path, Why::Io(e)),
        };
        if !trusted_owner(d.uid()) {
            return refuse(
                path,
                Why::DirOwner {
                    dir: dir.to_path_buf(),
                    uid: d.uid(),
                },
            );
        }
        let mode = d.mode() & 0o7777;
        if mode & GROUP_OTHER_WRITE != 0 && mode & STICKY == 0 {
            return refuse(
                path,
                Why::DirWritable {
                    dir: dir.to_path_buf(),
                    mode,
                },
            );
        }
    }
    Ok(real)
}

/// A trusted file that every local user may read as well: handing it to a
/// guest discloses nothing (a guest's kernel and initrd).
pub fn check_public_file(path: &Path) -> Result<PathBuf, UntrustedFile> {
    let real = check_trusted_file(path)?;
    let mode = match std::fs::metadata(&real) {
        Ok(m) => m.mode() & 0o7777,
        Err(e) => return refuse(path, Why::Io(e)),
    };
    if mode & 0o004 == 0 {
        return refuse(path, Why::NotPublic(mode));
    }
    Ok(real)
}

/// Create `path` afresh for this process's eyes only: mode 0600 from the
/// start, never through a link. A stale entry (a file a crashed run left, or
/// a link someone planted) is removed first, not followed; if another
/// appears in between, the creation fails.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Open `path` for appending, creating it with mode 0600 if need be: never
/// through a symbolic link, and only if it is a regular file of a trusted
/// owner (a log or statistics file named by the environment).
pub fn open_append_private(path: &Path) -> Result<File, UntrustedFile> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        // O_NONBLOCK: a FIFO in its place must not hang the open; it has
        // no effect on the regular file that alone is accepted.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return refuse(path, Why::Symlink),
        Err(e) => return refuse(path, Why::Io(e)),
    };
    let md = match f.metadata() {
        Ok(m) => m,
        Err(e) => return refuse(path, Why::Io(e)),
    };
    if !md.is_file() {
        return refuse(path, Why::NotRegular);
    }
    if !trusted_owner(md.uid()) {
        return refuse(path, Why::Owner(md.uid()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private directory of this user: a safe chain up to /, as
    /// [`check_trusted_file`] demands (skips loudly where it is not).
    fn safe_dir() -> Option<tempfile::TempDir> {
        let d = tempfile::tempdir().unwrap();
        let probe = d.path().join("probe");
        std::fs::write(&probe, "x").unwrap();
        chmod(&probe, 0o644);
        match check_trusted_file(&probe) {
            Ok(_) => Some(d),
            Err(e) => {
                eprintln!("SKIPPED: the temporary directory is not a safe chain: {e}");
                None
            }
        }
    }

    #[test]
    fn writable_files_and_directories_are_refused() {
        let Some(d) = safe_dir() else { return };
        let f = d.path().join("helper");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        chmod(&f, 0o755);
        assert_eq!(check_trusted_file(&f).unwrap(), f.canonicalize().unwrap());
        chmod(&f, 0o775);
        let e = check_trusted_file(&f).unwrap_err();
        assert!(matches!(e.why, Why::Writable(0o775)), "{e}");
        assert!(e
            .to_string()
            .ends_with("is writable by group or others (mode 0775)"));
        chmod(&f, 0o757);
        assert!(matches!(
            check_trusted_file(&f).unwrap_err().why,
            Why::Writable(_)
        ));
        chmod(&f, 0o755);
        let sub = d.path().join("open");
        std::fs::create_dir(&sub).unwrap();
        let g = sub.join("helper");
        std::fs::write(&g, "").unwrap();
        chmod(&g, 0o755);
        chmod(&sub, 0o777);
        let e = check_trusted_file(&g).unwrap_err();
        assert!(matches!(e.why, Why::DirWritable { .. }), "{e}");
        // A sticky directory (as /tmp) is safe: no one else may replace root's files.
        chmod(&sub, 0o1777);
        assert!(check_trusted_file(&g).is_ok());
    }

    #[test]
    fn links_are_judged_by_their_target_and_odd_files_refused() {
        let Some(d) = safe_dir() else { return };
        let f = d.path().join("real");
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o644);
        let l = d.path().join("link");
        symlink(&f, &l).unwrap();
        assert_eq!(check_trusted_file(&l).unwrap(), f.canonicalize().unwrap());
        assert!(matches!(
            check_trusted_file(d.path()).unwrap_err().why,
            Why::NotRegular
        ));
        assert!(matches!(
            check_trusted_file(&d.path().join("absent"))
                .unwrap_err()
                .why,
            Why::Io(_)
        ));
        // A file only its owner may read is not handed to a guest.
        chmod(&f, 0o640);
        assert!(matches!(
            check_public_file(&f).unwrap_err().why,
            Why::NotPublic(0o640)
        ));
        chmod(&f, 0o644);
        assert!(check_public_file(&f).is_ok());
    }

    #[test]
    fn files_of_other_users_are_refused() {
        assert!(trusted_owner(0));
        assert!(trusted_owner(euid()));
        let other = if euid() == 65534 { 65533 } else { 65534 };
        assert!(!trusted_owner(other));
        if euid() != 0 {
            eprintln!("SKIPPED (ownership part): only root can give a file away");
            return;
        }
        let Some(d) = safe_dir() else { return };
        let f = d.path().join("theirs");
        std::fs::write(&f, "").unwrap();
        chmod(&f, 0o644);
        std::os::unix::fs::chown(&f, Some(other), None).unwrap();
        assert!(matches!(
            check_trusted_file(&f).unwrap_err().why,
            Why::Owner(u) if u == other
        ));
    }

    #[test]
    fn private_files_are_0600_and_never_follow_links() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let p = d.path().join("state");
        symlink(&target, &p).unwrap();
        let mut f = create_private(&p).unwrap();
        f.write_all(b"secret").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert!(md.is_file());
        assert_eq!(md.mode() & 0o777, 0o600);
        // A stale file is replaced, not reused with its old mode.
        chmod(&p, 0o644);
        drop(f);
        let mut f = create_private(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "");
        std::fs::create_dir(d.path().join("dir")).unwrap();
        assert!(create_private(&d.path().join("dir")).is_err());
    }

    #[test]
    fn append_files_refuse_links_and_non_files() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let l = d.path().join("stats");
        symlink(&target, &l).unwrap();
        let e = open_append_private(&l).unwrap_err();
        assert!(matches!(e.why, Why::Symlink), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Without a reader the open fails (ENXIO), with one it is refused.
        let e = open_append_private(&fifo).unwrap_err();
        assert!(
            matches!(e.why, Why::Io(ref x) if x.raw_os_error() == Some(libc::ENXIO)),
            "{e}"
        );
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert!(matches!(
            open_append_private(&fifo).unwrap_err().why,
            Why::NotRegular
        ));
        let fresh = d.path().join("fresh");
        let mut f = open_append_private(&fresh).unwrap();
        f.write_all(b"a\n").unwrap();
        let mut f = open_append_private(&fresh).unwrap();
        f.write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "a\nb\n");
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    }
}
