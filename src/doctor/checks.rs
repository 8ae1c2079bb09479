//! The verdicts: facts in, one [`Check`] per line out, each failed one with
//! its fix.

use super::facts::{Facts, HvFacts, Options};
use super::helper::SaveHelper;
use super::{Check, Report};
use crate::transport::keys::KeyDir;
use crate::trust::files::check_trusted_file;
use crate::version::{supports_release, XEN_RELEASES};
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn releases() -> String {
    XEN_RELEASES.join(", ")
}

fn xen(f: &Facts) -> Check {
    match &f.hv {
        HvFacts::Absent { why } => Check::fail(
            "xen",
            format!("no usable Xen here: {why}"),
            format!(
                "run on a Xen dom0 with Xen {} (Debian: apt install xen-system-amd64, reboot into Xen)",
                releases()
            ),
        ),
        HvFacts::Xen { release, .. } if supports_release(release) => Check::pass(
            "xen",
            format!("Xen {release} (this build drives {})", releases()),
        ),
        HvFacts::Xen { release, .. } => Check::fail(
            "xen",
            format!("Xen {release} is not a release this build drives ({})", releases()),
            format!("install the rxmigrate build for Xen {release}, or run Xen {}", releases()),
        ),
        HvFacts::Sim { dir, release, .. } => Check::pass(
            "xen",
            format!("simulated host {} (as Xen {release})", dir.display()),
        ),
    }
}

fn privcmd(f: &Facts) -> Check {
    match &f.privcmd {
        None => Check::pass("privcmd", "not needed by the simulated host"),
        Some(Ok(())) => Check::pass("privcmd", format!("{} opens read-write", xen_sys::PRIVCMD)),
        Some(Err(why)) => Check::fail(
            "privcmd",
            format!("{}: {why}", xen_sys::PRIVCMD),
            "run as root in a Xen dom0 with the xen_privcmd module loaded (modprobe xen_privcmd)",
        ),
    }
}

fn libraries(f: &Facts, out: &mut Vec<Check>) {
    let Some(libs) = &f.libraries else {
        out.push(Check::pass("libraries", "not needed by the simulated host"));
        return;
    };
    for l in libs {
        let name = l
            .soname
            .split(".so")
            .next()
            .unwrap_or(&l.soname)
            .to_string();
        out.push(match &l.found {
            Ok(()) => Check::pass(name, format!("{} loads", l.soname)),
            Err(why) => Check::fail(
                name,
                format!("{} cannot be loaded: {why}", l.soname),
                format!(
                    "install Xen's libraries (Debian: apt install xen-utils-{})",
                    f.hv.release()
                        .unwrap_or(XEN_RELEASES[XEN_RELEASES.len() - 1])
                ),
            ),
        });
    }
}

fn paging(f: &Facts, out: &mut Vec<Check>) {
    let (shadow, hap) = match &f.hv {
        HvFacts::Xen { shadow, hap, .. } => (Some(*shadow), Some(*hap)),
        HvFacts::Sim { .. } => {
            out.push(Check::pass(
                "shadow",
                "simulated host: PV log-dirty by write tracking",
            ));
            out.push(Check::pass("hap", "simulated host: PVH and HVM guests"));
            return;
        }
        HvFacts::Absent { .. } => (None, None),
    };
    out.push(match shadow {
        Some(true) => Check::pass("shadow", "shadow paging built in: PV guests can be live-migrated"),
        Some(false) => Check::fail(
            "shadow",
            "Xen has no shadow paging: PV guests cannot be live-migrated (log-dirty fails), only saved",
            "boot a Xen built with CONFIG_SHADOW_PAGING=y (Debian 12's 4.17.5 has it, 4.17.7 does not)",
        )
        .optional(),
        None => Check::fail("shadow", "unknown without Xen", "see the xen line").optional(),
    });
    out.push(match hap {
        Some(true) => Check::pass("hap", "hardware-assisted paging: PVH and HVM guests"),
        Some(false) => Check::fail(
            "hap",
            "no hardware-assisted paging: HVM guests run on shadow paging, no PVH guests",
            "enable AMD-V/NPT or VT-x/EPT in the firmware",
        )
        .optional(),
        None => Check::fail("hap", "unknown without Xen", "see the xen line").optional(),
    });
}

fn helper_line(h: &SaveHelper) -> Check {
    let what = if h.from_env {
        format!("LIBXL_SAVE_HELPER={}", h.path.display())
    } else {
        h.path.display().to_string()
    };
    let kept = match &h.diversion {
        Some(d) => format!(
            "Xen's helper diverted to {} ({}){}",
            d.to.display(),
            d.by.as_deref()
                .map(|p| format!("by package {p}"))
                .unwrap_or_else(|| "local diversion, install.sh".into()),
            if h.stock_present {
                ""
            } else {
                ", but it is missing"
            }
        ),
        None => "no diversion of Xen's helper".into(),
    };
    let install = "apt install rxmigrate-xl-plugin (or xl-plugin/install.sh install)";
    if !h.exists {
        return Check::fail(
            "save-helper",
            format!("nothing at {what}"),
            match &h.release {
                Some(r) => format!("reinstall xen-utils-{r}, then {install}"),
                None => "unset LIBXL_SAVE_HELPER or point it at a helper".into(),
            },
        );
    }
    let target = match &h.resolved {
        Some(r) if *r != h.path => format!(" -> {}", r.display()),
        _ => String::new(),
    };
    match &h.ours {
        Some(Ok(v)) if h.from_env || h.stock_present => Check::pass(
            "save-helper",
            format!("xl runs {v}: {what}{target}; {kept}"),
        ),
        Some(Ok(v)) => Check::fail(
            "save-helper",
            format!("xl runs {v}: {what}{target}; {kept}: streams it leaves to Xen cannot be handed over"),
            format!("reinstall: {install}"),
        ),
        Some(Err(why)) => Check::fail(
            "save-helper",
            format!("{what}{target} is rxmigrate's but does not run: {why}"),
            format!("reinstall: {install}"),
        ),
        None => Check::fail(
            "save-helper",
            format!(
                "xl runs Xen's own helper{}: {what}{target}; {kept}",
                h.release.as_deref().map(|r| format!(" (Xen {r})")).unwrap_or_default()
            ),
            install,
        ),
    }
}

fn helpers(f: &Facts, out: &mut Vec<Check>) {
    if f.helpers.is_empty() {
        out.push(Check::fail(
            "save-helper",
            "no /usr/lib/xen-*/bin/libxl-save-helper: xl is not installed",
            format!(
                "apt install xen-utils-{}",
                XEN_RELEASES[XEN_RELEASES.len() - 1]
            ),
        ));
    }
    out.extend(f.helpers.iter().map(helper_line));
}

/// rxmigrate-save-helper's own verdict on the settings file.
fn helper_verdict(helper: &Path, conf: &Path) -> Result<String, String> {
    let out = Command::new(helper)
        .arg("--check-config")
        .arg(conf)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", helper.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn config(opts: &Options, f: &Facts) -> Check {
    let conf = opts.conf_path();
    let fix = format!(
        "edit {} (its keys: /usr/share/doc/rxmigrate-xl-plugin/README.md)",
        conf.display()
    );
    if !conf.exists() {
        return Check::pass(
            "config",
            format!("no {}: the save helper uses its defaults", conf.display()),
        );
    }
    if let Err(e) = check_trusted_file(&conf) {
        return Check::fail(
            "config",
            format!("the save helper refuses it: {e}"),
            format!("chown root:root {0}; chmod 644 {0}", conf.display()),
        );
    }
    // Our helper parses it, as it will under xl.
    let ours = f.helpers.iter().find_map(|h| match (&h.ours, &h.resolved) {
        (Some(Ok(_)), Some(r)) => Some(opts.root.join(r.strip_prefix("/").unwrap_or(r))),
        _ => None,
    });
    match ours {
        None => Check::pass(
            "config",
            format!(
                "{} is trusted (its settings are checked by rxmigrate-save-helper, which is not installed)",
                conf.display()
            ),
        ),
        Some(h) => match helper_verdict(&h, &conf) {
            Ok(v) => Check::pass("config", v),
            Err(why) => Check::fail("config", why, fix),
        },
    }
}

fn keys(opts: &Options, out: &mut Vec<Check>) {
    let dir = KeyDir::resolve(Some(&opts.key_dir_path()));
    out.push(match dir.load_key() {
        Ok(k) => Check::pass(
            "key",
            format!(
                "{} (fingerprint {})",
                dir.key_file().display(),
                k.public().fingerprint()
            ),
        ),
        Err(e) => Check::fail(
            "key",
            format!("{e} (rxmigrate migrate/receive over TCP need it)"),
            format!("rxmigrate keygen --key-dir {}", dir.path().display()),
        ),
    });
    out.push(match dir.load_authorized() {
        Ok(p) => Check::pass(
            "authorized-peers",
            format!(
                "{}: {} sender(s) may migrate to this host",
                p.path().display(),
                p.len()
            ),
        ),
        Err(e) => Check::fail(
            "authorized-peers",
            format!("{e}: `rxmigrate receive --listen` accepts no sender"),
            format!(
                "add each sender's key.pub line to {} (docs/SECURITY.md)",
                dir.authorized_file().display()
            ),
        )
        .optional(),
    });
}

fn memory(opts: &Options, f: &Facts) -> Check {
    let free = match &f.hv {
        HvFacts::Xen { free, .. } | HvFacts::Sim { free, .. } => *free,
        HvFacts::Absent { .. } => None,
    };
    let need = opts.min_free;
    match free {
        Some(b) if b >= need => Check::pass(
            "memory",
            format!(
                "{} MiB free for receiving guests (at least {} MiB wanted)",
                b / MIB,
                need / MIB
            ),
        ),
        Some(b) => Check::fail(
            "memory",
            format!(
                "{} MiB free: less than the {} MiB wanted for receiving a guest",
                b / MIB,
                need / MIB
            ),
            "free memory for guests (shut some down, or shrink dom0: xl mem-set 0 SIZE)",
        ),
        None => Check::fail("memory", "unknown without a hypervisor", "see the xen line"),
    }
}

/// Every check, in the order printed.
pub fn run(opts: &Options, f: &Facts) -> Report {
    let mut c = vec![xen(f), privcmd(f)];
    libraries(f, &mut c);
    paging(f, &mut c);
    helpers(f, &mut c);
    c.push(config(opts, f));
    keys(opts, &mut c);
    c.push(memory(opts, f));
    Report { checks: c }
}
