//! install.sh on a Debian-like system image (`--root`): the stock helper is
//! diverted, our helper answers at the stock path and finds Xen's helper
//! under its diverted name, and uninstall restores the original state.

mod libxl_side;

use libxl_side::*;
use rxmigrate_xl_plugin::config::Config;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

const INSTALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/install.sh");
const STOCK_SCRIPT: &str = "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > \"$STOCK_ARGV\"\nprintf stock-stream > /proc/self/fd/$2\n"; // not `>&N`: dash takes one-digit fds only

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(INSTALL)
        .args(args)
        .output()
        .expect("run install.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Everything under `root`, with symlink targets and file contents.
fn snapshot(root: &Path) -> Vec<(String, String)> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
                v.push((rel, "dir".into()));
            } else if m.file_type().is_symlink() {
                v.push((
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                ));
            } else {
                let body = std::fs::read(&p).unwrap();
                v.push((
                    rel,
                    format!(
                        "{:o} {}",
                        m.permissions().mode(),
                        String::from_utf8_lossy(&body)
                    ),
                ));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn install_diverts_the_stock_helper_and_uninstall_restores_it() {
    // Debian 12 (bookworm)
    install_roundtrip("4.17");
}

#[test]
fn install_finds_the_helper_of_xen_4_20() {
    // Debian 13 (trixie): libxl runs /usr/lib/xen-4.20/bin/libxl-save-helper
    install_roundtrip("4.20");
}

/// install, status, the hand-over to the diverted helper, uninstall, on a
/// system image with Xen `release`'s tools in /usr/lib/xen-RELEASE/bin.
fn install_roundtrip(release: &str) {
    assert!(
        Command::new("dpkg-divert")
            .arg("--version")
            .output()
            .is_ok(),
        "dpkg-divert is needed (Debian's dpkg package)"
    );
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let bin = root.join(format!("usr/lib/xen-{release}/bin"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let stock = bin.join("libxl-save-helper");
    std::fs::write(&stock, STOCK_SCRIPT).unwrap();
    std::fs::set_permissions(&stock, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(root);

    let r = root.display().to_string();
    let (ok, out) = sh(&["install", "--root", &r, "--binary", HELPER]);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_link(&stock).unwrap(),
        Path::new("/usr/local/lib/rxmigrate/rxmigrate-save-helper")
    );
    assert_eq!(
        std::fs::read_to_string(bin.join("libxl-save-helper.stock")).unwrap(),
        STOCK_SCRIPT
    );
    let installed = root.join("usr/local/lib/rxmigrate/rxmigrate-save-helper");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(HELPER).unwrap()
    );
    // The configuration it writes is one the helper accepts.
    let conf = root.join("etc/rxmigrate.conf");
    let mut c = Config::default();
    c.apply_file(&conf, &std::fs::read_to_string(&conf).unwrap())
        .expect("installed rxmigrate.conf parses");
    assert_eq!(c.policy, "hotpage");
    let (ok, out) = sh(&["status", "--root", &r]);
    assert!(ok && out.contains("rxmigrate"), "{out}");
    assert!(
        out.contains(&format!("/usr/lib/xen-{release}/bin/libxl-save-helper")),
        "{out}"
    );
    // Installing twice changes nothing.
    let once = snapshot(root);
    let (ok, out) = sh(&["install", "--root", &r, "--binary", HELPER]);
    assert!(ok, "{out}");
    assert_eq!(snapshot(root), once);

    // libxl runs the stock path; for a Remus stream our helper hands over
    // to Xen's helper, found under its diverted name.
    let argv_file = root.join("argv");
    let (rd, wr) = pipe();
    let mut cmd = Command::new(&installed);
    cmd.arg0(&stock)
        .args([
            "--save-domain",
            &wr.as_raw_fd().to_string(),
            "-1",
            "3",
            "1",
            "184",
            "1",
        ])
        .env("RXMIGRATE_CONF", "/dev/null")
        .env("STOCK_ARGV", &argv_file)
        .env_remove("RXMIGRATE_STOCK_HELPER")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let fd = wr.as_raw_fd();
    // SAFETY: only fcntl between fork and exec, on an fd open in the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().expect("run the installed helper");
    drop(wr);
    let stream = drain(rd).join().unwrap();
    assert!(status.success());
    assert_eq!(stream, b"stock-stream");
    let argv = std::fs::read_to_string(&argv_file).unwrap();
    assert!(
        argv.starts_with(&format!(
            "{}\n",
            bin.join("libxl-save-helper.stock").display()
        )),
        "{argv}"
    );
    std::fs::remove_file(&argv_file).unwrap();

    let (ok, out) = sh(&["uninstall", "--root", &r]);
    assert!(ok, "{out}");
    // dpkg keeps a backup of its diversions list; the rest is as before.
    let after: Vec<_> = snapshot(root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("var/lib/dpkg/diversions") && !p.starts_with("usr/local"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(p, _)| !p.starts_with("var/lib/dpkg/diversions"))
        .collect();
    assert_eq!(after, before);
    assert!(!root.join("usr/local/lib/rxmigrate").exists());
    let div = std::fs::read_to_string(root.join("var/lib/dpkg/diversions")).unwrap_or_default();
    assert!(div.trim().is_empty(), "diversion left: {div}");
    let (ok, out) = sh(&["status", "--root", &r]);
    assert!(!ok && out.contains("Xen's own helper"), "{out}");
}

#[test]
fn install_refuses_without_xen_or_binary() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("var/lib/dpkg")).unwrap();
    let r = t.path().display().to_string();
    let (ok, out) = sh(&["install", "--root", &r, "--binary", HELPER]);
    assert!(!ok);
    assert!(out.contains("is xen-utils installed?"), "{out}");
    let (ok, out) = sh(&["install", "--root", &r, "--binary", "/nonexistent"]);
    assert!(
        !ok && out.contains("/nonexistent is not an executable"),
        "{out}"
    );
    let (ok, out) = sh(&["frobnicate"]);
    assert!(
        !ok && out.contains("unknown argument 'frobnicate'"),
        "{out}"
    );
}
