//! Records the git commit the build came from, for `rxmigrate --version` and
//! the save helper's first log line: `RXMIGRATE_GIT_COMMIT` from the
//! environment when set (packagers building from a tarball), else `git
//! rev-parse` of this tree, else "unknown" (a tarball without .git).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=RXMIGRATE_GIT_COMMIT");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    let commit = match std::env::var("RXMIGRATE_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself and the ref it names.
            for p in ["HEAD", "refs/heads", "packed-refs"] {
                if let Some(f) = git(dir, &["rev-parse", "--git-path", p]) {
                    println!("cargo:rerun-if-changed={}", dir.join(f).display());
                }
            }
            git(dir, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=RXMIGRATE_GIT_COMMIT={commit}");
}
