//! `rxmigrate doctor` on a simulated host (`--hv sim:DIR`) with a system
//! image as its root (`--root DIR`): a ready host, one that is not (Xen's
//! own helper, a bad settings file, no key), too little memory, and this
//! machine without Xen.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rxmigrate"))
        .args(args)
        .env_remove("RXMIGRATE_HV")
        .env_remove("RXMIGRATE_KEY_DIR")
        .env_remove("LIBXL_SAVE_HELPER")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The line of check `name`.
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l[l.find(' ').map_or(0, |i| i + 1)..].starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
}

/// rxmigrate-save-helper as `cargo build --workspace` leaves it beside
/// rxmigrate (ci/test builds it first).
fn built_helper() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_BIN_EXE_rxmigrate")).with_file_name("rxmigrate-save-helper");
    p.is_file().then_some(p)
}

struct Host {
    _t: tempfile::TempDir,
    root: PathBuf,
    sim: String,
}

impl Host {
    fn new() -> Host {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let sim = format!("sim:{}", t.path().join("sim").display());
        std::fs::create_dir_all(root.join("usr/lib/xen-4.17/bin")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        Host { _t: t, root, sim }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn bin(&self) -> PathBuf {
        self.path("/usr/lib/xen-4.17/bin")
    }

    /// Xen's helper at its place (a stand-in file: doctor never runs it).
    fn stock_helper(&self, name: &str) {
        let f = self.bin().join(name);
        std::fs::write(
            &f,
            "#!/bin/sh\necho Xen's helper is never run by doctor >&2\nexit 9\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The plugin as the package installs it: ours in place, Xen's
    /// diverted to .stock by the package.
    fn plugin(&self, helper: &Path) {
        self.stock_helper("libxl-save-helper.stock");
        std::fs::create_dir_all(self.path("/usr/lib/rxmigrate")).unwrap();
        std::fs::copy(
            helper,
            self.path("/usr/lib/rxmigrate/rxmigrate-save-helper"),
        )
        .unwrap();
        symlink(
            "/usr/lib/rxmigrate/rxmigrate-save-helper",
            self.bin().join("libxl-save-helper"),
        )
        .unwrap();
        std::fs::write(
            self.path("/var/lib/dpkg/diversions"),
            "/usr/lib/xen-4.17/bin/libxl-save-helper\n\
             /usr/lib/xen-4.17/bin/libxl-save-helper.stock\n\
             rxmigrate-xl-plugin\n",
        )
        .unwrap();
    }

    fn conf(&self, text: &str) {
        let f = self.path("/etc/rxmigrate.conf");
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn keys(&self) {
        let dir = self.path("/etc/rxmigrate");
        let o = rx(&["keygen", "--key-dir", dir.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::copy(dir.join("key.pub"), dir.join("authorized_peers")).unwrap();
    }

    fn doctor(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "--hv",
            &self.sim,
            "doctor",
            "--root",
            self.root.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        rx(&args)
    }
}

#[test]
fn a_ready_host_passes_every_check_and_exits_0() {
    let Some(helper) = built_helper() else {
        println!("skipped: rxmigrate-save-helper is not built beside rxmigrate (cargo build --workspace)");
        return;
    };
    let h = Host::new();
    h.plugin(&helper);
    h.conf("policy = hotpage\nfallback = fail\n");
    h.keys();
    let o = h.doctor(&["--min-free", "1M"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains(rxmigrate::version::GIT_COMMIT),
        "{out}"
    );
    assert!(!out.contains('✗'), "{out}");
    assert!(out.trim_end().ends_with("ready"), "{out}");
    let s = line(&out, "save-helper");
    assert!(s.contains("xl runs rxmigrate-save-helper"), "{s}");
    assert!(s.contains(rxmigrate::version::VERSION), "{s}");
    assert!(
        s.contains("-> /usr/lib/rxmigrate/rxmigrate-save-helper"),
        "{s}"
    );
    assert!(s.contains("by package rxmigrate-xl-plugin"), "{s}");
    let c = line(&out, "config");
    assert!(c.contains("valid (policy hotpage, fallback fail)"), "{c}");
    assert!(line(&out, "key").contains("fingerprint"), "{out}");
    assert!(line(&out, "authorized-peers").contains("1 sender"), "{out}");
    assert!(line(&out, "xen").contains("simulated host"), "{out}");
}

#[test]
fn a_host_with_xens_helper_a_bad_setting_and_no_key_is_not_ready() {
    let Some(helper) = built_helper() else {
        println!("skipped: rxmigrate-save-helper is not built beside rxmigrate (cargo build --workspace)");
        return;
    };
    // Xen's helper in place, but our helper left in /usr/lib/rxmigrate
    // checks nothing: the settings are judged by the trust rule alone.
    let h = Host::new();
    h.stock_helper("libxl-save-helper");
    h.conf("policy = turbo\n");
    let o = h.doctor(&["--min-free", "1M"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let s = line(&out, "save-helper");
    assert!(
        s.starts_with('✗') && s.contains("xl runs Xen's own helper (Xen 4.17)"),
        "{s}"
    );
    assert!(s.contains("fix: apt install rxmigrate-xl-plugin"), "{s}");
    let k = line(&out, "key");
    assert!(
        k.starts_with('✗') && k.contains("fix: rxmigrate keygen --key-dir"),
        "{k}"
    );
    assert!(out.contains("not ready: 2 checks failed"), "{out}");

    // With our helper in place the bad policy is caught, by the helper's
    // own parser, with the place and the fix.
    let h = Host::new();
    h.plugin(&helper);
    h.conf("policy = turbo\n");
    h.keys();
    let o = h.doctor(&["--min-free", "1M"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let c = line(&out, "config");
    assert!(
        c.starts_with('✗') && c.contains("rxmigrate.conf:1") && c.contains("turbo"),
        "{c}"
    );
    assert!(c.contains("fix: edit"), "{c}");
    assert!(out.contains("not ready: 1 check failed"), "{out}");
}

#[test]
fn a_writable_settings_file_and_a_lost_stock_helper_are_caught() {
    let Some(helper) = built_helper() else {
        println!("skipped: rxmigrate-save-helper is not built beside rxmigrate (cargo build --workspace)");
        return;
    };
    let h = Host::new();
    h.plugin(&helper);
    h.keys();
    h.conf("policy = xen4\n");
    std::fs::set_permissions(
        h.path("/etc/rxmigrate.conf"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::fs::remove_file(h.bin().join("libxl-save-helper.stock")).unwrap();
    let o = h.doctor(&["--min-free", "1M"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let c = line(&out, "config");
    assert!(
        c.starts_with('✗') && c.contains("writable") && c.contains("chmod 644"),
        "{c}"
    );
    let s = line(&out, "save-helper");
    assert!(s.starts_with('✗') && s.contains("but it is missing"), "{s}");
}

#[test]
fn too_little_free_memory_is_not_ready() {
    let h = Host::new();
    let o = h.doctor(&["--min-free", "1000T"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let m = line(&out, "memory");
    assert!(m.starts_with('✗') && m.contains("less than"), "{m}");
}

#[test]
fn without_xen_the_doctor_says_so_and_exits_1() {
    if Path::new("/dev/xen/privcmd").exists() {
        println!("skipped: this machine is a Xen dom0");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let o = rx(&[
        "--hv",
        "xen",
        "doctor",
        "--root",
        t.path().to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let x = line(&out, "xen");
    assert!(
        x.starts_with('✗') && x.contains("no usable Xen here"),
        "{x}"
    );
    assert!(line(&out, "privcmd").starts_with('✗'), "{out}");
    // The release whose libraries are checked: the installed libxenctrl's
    // when there is one, else the newest this build drives. Either way the
    // line names a supported release's soname.
    let lib = line(&out, "libxenctrl");
    assert!(
        ["4.17", "4.18", "4.19", "4.20", "4.21", "4.22"]
            .iter()
            .any(|r| lib.contains(&format!("libxenctrl.so.{r}"))),
        "{out}"
    );
    assert!(out.contains("not ready"), "{out}");
}
