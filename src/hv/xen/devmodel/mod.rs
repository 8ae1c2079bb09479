//! The device model (qemu-xen) of an HVM guest that `rxmigrate restore` or
//! `receive` builds without xl. An HVM guest's emulated platform (serial
//! port, VGA, PCI host bridge, Xen platform device, ...) lives in QEMU: its
//! memory and vCPUs alone do not make a running guest. The saved device
//! state (libxl's EMULATOR_CONTEXT) is loaded into a QEMU started as libxl
//! starts it, and the restore completes only once QEMU reports "running".

mod argv;

pub use argv::{hvmloader_bios, qemu_argv, qemu_program, ArgvError};

use super::XenHost;
use crate::hv::{DeviceModelState, DomId, HvError, Result};
use crate::trust::check_domain_name;
use crate::trust::files::create_private;
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The descriptor QEMU reads its saved state from (`-incoming fd:3`).
const STATE_FD: i32 = 3;

/// How long QEMU may take to load its state and report "running": libxl
/// allows 60 s; an emulated lab dom0 needs more.
fn start_timeout() -> Duration {
    let secs = std::env::var("RXMIGRATE_DM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

fn dm_dir(dom: DomId) -> String {
    format!("/local/domain/0/device-model/{dom}")
}

fn pid_path(dom: DomId) -> String {
    format!("/local/domain/{dom}/image/device-model-pid")
}

fn op_err(dom: DomId, msg: impl std::fmt::Display) -> HvError {
    HvError::op(dom, "device_model", msg)
}

/// HVM params libxl sets from the config when it builds a domain; they are
/// not in the stream (libxl sets them on both ends), so a restore into a
/// domain rxmigrate built sets them here: HPET and timer alignment (HVM),
/// the timer mode (HVM and PVH). Absent settings take libxl's defaults.
pub fn platform_params(config: &Value) -> Vec<(u32, u64)> {
    let b = &config["b_info"];
    let h = &b["type.hvm"];
    let on = |v: &Value| match v.as_str() {
        Some("False") => 0,
        _ => 1,
    };
    // libxl_timer_mode, numbered as HVM_PARAM_TIMER_MODE
    let timer_mode = match b["timer_mode"].as_str() {
        Some("delay_for_missed_ticks") => 0,
        Some("no_missed_ticks_pending") => 2,
        Some("one_missed_tick_pending") => 3,
        _ => 1, // no_delay_for_missed_ticks, libxl's default
    };
    let mut p = Vec::new();
    match config["c_info"]["type"].as_str() {
        Some("hvm") => {
            p.push((xen_sys::HVM_PARAM_HPET_ENABLED, on(&h["hpet"])));
            p.push((xen_sys::HVM_PARAM_VPT_ALIGN, on(&h["vpt_align"])));
            p.push((xen_sys::HVM_PARAM_TIMER_MODE, timer_mode));
        }
        Some("pvh") => p.push((xen_sys::HVM_PARAM_TIMER_MODE, timer_mode)),
        _ => {}
    }
    p
}

/// Can a device model be built from this config? Checked before anything is
/// restored, so a refused guest costs nothing.
pub fn check(config: &Value) -> std::result::Result<(), ArgvError> {
    if config["c_info"]["type"].as_str() != Some("hvm") {
        return Ok(());
    }
    qemu_argv(0, config, STATE_FD)?;
    hvmloader_bios(config)?;
    qemu_program(config)?;
    Ok(())
}

/// Start QEMU for restored HVM domain `dom` (paused) with its saved state
/// and wait until it runs. On failure nothing of it is left behind.
pub fn start(host: &XenHost, dom: DomId, state: &DeviceModelState, config: &Value) -> Result<()> {
    let argv = qemu_argv(dom, config, STATE_FD).map_err(|e| op_err(dom, e.to_string()))?;
    let program = qemu_program(config).map_err(|e| op_err(dom, e.to_string()))?;
    let name = config["c_info"]["name"]
        .as_str()
        .unwrap_or("restored")
        .to_string();
    let r = spawn_and_wait(host, dom, &program, &argv, state, config, &name);
    if r.is_err() {
        host.h.xs_rm(&dm_dir(dom));
        host.h.xs_rm(&pid_path(dom));
    }
    r
}

fn spawn_and_wait(
    host: &XenHost,
    dom: DomId,
    program: &Path,
    argv: &[String],
    state: &DeviceModelState,
    config: &Value,
    name: &str,
) -> Result<()> {
    let h = host.h;
    // What hvmloader and QEMU read, as libxl writes it before the spawn.
    let bios = hvmloader_bios(config).map_err(|e| op_err(dom, e))?;
    h.xs_write(&format!("/local/domain/{dom}/hvmloader/bios"), bios)?;
    h.xs_write(
        &format!("/local/domain/{dom}/hvmloader/allow-memory-relocate"),
        "0",
    )?;
    let dir = dm_dir(dom);
    // The device model's own entries (where it mapped VRAM), saved by the
    // source: relative paths below its directory, as libxl requires.
    for (k, _) in &state.xenstore {
        check_xenstore_key(k).map_err(|e| op_err(dom, e))?;
    }
    let log_path = log_path(name).map_err(|e| op_err(dom, e))?;
    h.xs_rm(&dir);
    h.xs_write(&dir, "")?;
    for (k, v) in &state.xenstore {
        h.xs_write(&format!("{dir}/{k}"), v)?;
    }

    let state_file = PathBuf::from(format!("/var/lib/xen/qemu-resume.{dom}"));
    let spawned = write_state(&state_file, &state.context)
        .and_then(|file| spawn_qemu(program, argv, dom, &file, &log_path));
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&state_file);
            return Err(e);
        }
    };
    let _ = h.xs_write(&pid_path(dom), &child.id().to_string());
    let r = wait_running(host, dom, &mut child);
    // QEMU has read the state (or failed): libxl removes the file likewise.
    let _ = std::fs::remove_file(&state_file);
    if let Err(e) = r {
        let _ = child.kill();
        let _ = child.wait();
        let tail = log_tail(&log_path);
        return Err(op_err(
            dom,
            format!(
                "{e}{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; QEMU said: {tail}")
                }
            ),
        ));
    }
    log::info!("device model of domain {dom} running (pid {})", child.id());
    // Not waited for: QEMU lives as long as the domain (xl destroy and
    // rxmigrate's destroy stop it through device-model-pid).
    drop(child);
    Ok(())
}

/// QEMU with `state` readable on [`STATE_FD`], its output in `log_path`.
fn spawn_qemu(
    program: &Path,
    argv: &[String],
    dom: DomId,
    state: &File,
    log_path: &Path,
) -> Result<Child> {
    let log = open_log(log_path)?;
    let log2 = log
        .try_clone()
        .map_err(|e| HvError::io(format!("duplicating {}", log_path.display()), e))?;
    let fd = state.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(argv)
        .env("XEN_DOMAIN_ID", dom.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: QEMU outlives rxmigrate and its terminal.
        .process_group(0);
    // SAFETY: only async-signal-safe calls (umask, dup2, fcntl) between
    // fork and exec; `state` stays open in the parent until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // What QEMU creates (serial logs: guest output; sockets) is
            // root's alone.
            libc::umask(0o077);
            if fd == STATE_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, STATE_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    log::info!(
        "starting the device model of domain {dom}: {} {}",
        program.display(),
        argv.join(" ")
    );
    cmd.spawn()
        .map_err(|e| HvError::io(format!("starting {}", program.display()), e))
}

/// QEMU's log, named as libxl names it, in Xen's log directory: the name
/// is one file name component (checked again here, whatever the caller did).
fn log_path(name: &str) -> std::result::Result<PathBuf, String> {
    check_domain_name(name).map_err(|e| format!("domain name {name:?} {e}"))?;
    let p = PathBuf::from(format!("/var/log/xen/qemu-dm-{name}.log"));
    if p.parent() != Some(Path::new("/var/log/xen")) {
        return Err(format!("QEMU's log {} is not in /var/log/xen", p.display()));
    }
    Ok(p)
}

/// A key of the device model's saved xenstore entries: a relative path
/// (libxl's rule) of xenstore's characters, without empty components, so
/// it stays below the device model's directory.
fn check_xenstore_key(k: &str) -> std::result::Result<(), String> {
    let chars_ok = k
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b));
    if chars_ok && !k.is_empty() && k.split('/').all(|c| !c.is_empty()) {
        Ok(())
    } else {
        Err(format!(
            "the stream's device model xenstore key {k:?} is not a relative xenstore path"
        ))
    }
}

/// The device state for QEMU, in a file only root can read (guest data).
fn write_state(path: &Path, context: &[u8]) -> Result<File> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| HvError::io(format!("creating {}", d.display()), e))?;
    }
    let mut f =
        create_private(path).map_err(|e| HvError::io(format!("creating {}", path.display()), e))?;
    std::io::Write::write_all(&mut f, context)
        .and_then(|()| f.seek(SeekFrom::Start(0)).map(|_| ()))
        .map_err(|e| HvError::io(format!("writing {}", path.display()), e))?;
    Ok(f)
}

/// QEMU's log: mode 0644 as libxl creates it (QEMU's messages, no guest
/// data), never through a link.
fn open_log(path: &Path) -> Result<File> {
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| HvError::io(format!("opening {}", path.display()), e))
}

/// The last lines QEMU wrote, for an error message.
fn log_tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(600)));
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// QEMU writes "running" to its xenstore `state` node once the state is
/// loaded and it serves the guest (libxl waits for the same).
fn wait_running(host: &XenHost, dom: DomId, child: &mut Child) -> std::result::Result<(), String> {
    let node = format!("{}/state", dm_dir(dom));
    let limit = start_timeout();
    let t0 = Instant::now();
    loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| format!("waiting for QEMU: {e}"))?
        {
            return Err(format!(
                "QEMU exited with {st} while loading the device state"
            ));
        }
        if host.h.xs_read(&node).as_deref() == Some("running") {
            return Ok(());
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "QEMU did not report running within {} s (RXMIGRATE_DM_TIMEOUT)",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stop the device model rxmigrate started for `dom`, if any (before the
/// domain is destroyed).
pub fn stop(host: &XenHost, dom: DomId) {
    let Some(pid) = host
        .h
        .xs_read(&pid_path(dom))
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|&p| p > 1)
    else {
        return;
    };
    // Only a QEMU serving this domain: the pid may have been reused.
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"-xen-domid" && w[1] == dom.to_string().as_bytes())
        })
        .unwrap_or(false);
    if ours {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        log::info!("stopped the device model of domain {dom} (pid {pid})");
    }
    host.h.xs_rm(&dm_dir(dom));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn platform_params_follow_libxl() {
        let hvm = json!({"c_info": {"type": "hvm"}, "b_info": {"type.hvm": {}}});
        assert_eq!(
            platform_params(&hvm),
            vec![
                (xen_sys::HVM_PARAM_HPET_ENABLED, 1),
                (xen_sys::HVM_PARAM_VPT_ALIGN, 1),
                (xen_sys::HVM_PARAM_TIMER_MODE, 1)
            ]
        );
        let hvm = json!({"c_info": {"type": "hvm"}, "b_info": {
            "timer_mode": "one_missed_tick_pending",
            "type.hvm": {"hpet": "False", "vpt_align": "True"}}});
        assert_eq!(
            platform_params(&hvm),
            vec![
                (xen_sys::HVM_PARAM_HPET_ENABLED, 0),
                (xen_sys::HVM_PARAM_VPT_ALIGN, 1),
                (xen_sys::HVM_PARAM_TIMER_MODE, 3)
            ]
        );
        let pvh =
            json!({"c_info": {"type": "pvh"}, "b_info": {"timer_mode": "delay_for_missed_ticks"}});
        assert_eq!(
            platform_params(&pvh),
            vec![(xen_sys::HVM_PARAM_TIMER_MODE, 0)]
        );
        assert!(platform_params(&json!({"c_info": {"type": "pv"}})).is_empty());
    }

    #[test]
    fn the_device_model_reads_its_state_on_fd_3() {
        let d = tempfile::tempdir().unwrap();
        let state = write_state(&d.path().join("state"), b"QEVM saved devices").unwrap();
        let out = d.path().join("out");
        let log = d.path().join("log");
        let script = format!(
            "cat <&3 >{o}; echo \"domain $XEN_DOMAIN_ID\"; echo to-stderr >&2",
            o = out.display()
        );
        let mut child = spawn_qemu(
            Path::new("/bin/sh"),
            &["-c".to_string(), script],
            9,
            &state,
            &log,
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(&out).unwrap(), b"QEVM saved devices");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "domain 9\nto-stderr\n"
        );
        assert_eq!(log_tail(&log), "domain 9 | to-stderr");
    }

    #[test]
    fn the_log_path_is_one_file_in_xens_log_directory() {
        assert_eq!(
            log_path("hvm-lab").unwrap(),
            PathBuf::from("/var/log/xen/qemu-dm-hvm-lab.log")
        );
        for bad in ["../../../../x", "a/b", "..", ""] {
            let e = log_path(bad).unwrap_err();
            assert!(e.starts_with("domain name"), "{e}");
        }
    }

    #[test]
    fn saved_xenstore_keys_stay_below_the_device_model() {
        assert_eq!(check_xenstore_key("physmap/f0000000/start_addr"), Ok(()));
        for bad in [
            "",
            "/local/domain/0/x",
            "physmap//x",
            "physmap/",
            "../x",
            "a b",
        ] {
            assert!(check_xenstore_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_state_file_is_private_and_replaces_a_planted_link() {
        use std::os::unix::fs::{symlink, MetadataExt};
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "root's file").unwrap();
        let p = d.path().join("qemu-resume.5");
        symlink(&victim, &p).unwrap();
        let mut f = write_state(&p, b"QEVM").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file");
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert!(md.is_file());
        assert_eq!(md.mode() & 0o777, 0o600);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "QEVM");
    }

    #[test]
    fn what_the_device_model_creates_is_private() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let state = write_state(&d.path().join("state"), b"x").unwrap();
        let made = d.path().join("serial.log");
        let mut child = spawn_qemu(
            Path::new("/bin/sh"),
            &["-c".to_string(), format!("echo hi >{}", made.display())],
            2,
            &state,
            &d.path().join("log"),
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o777, 0o600);
        let log_mode = std::fs::metadata(d.path().join("log")).unwrap().mode() & 0o777;
        assert_eq!(log_mode & 0o600, 0o600);
    }

    #[test]
    fn a_missing_device_model_binary_is_named() {
        let d = tempfile::tempdir().unwrap();
        let state = write_state(&d.path().join("state"), b"x").unwrap();
        let e = spawn_qemu(
            Path::new("/nonexistent/qemu"),
            &[],
            1,
            &state,
            &d.path().join("log"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("starting /nonexistent/qemu"), "{e}");
    }

    #[test]
    fn pv_and_pvh_configs_need_no_device_model() {
        assert!(check(&json!({"c_info": {"type": "pv"}})).is_ok());
        assert!(check(&json!({"c_info": {"type": "pvh"}})).is_ok());
        let e = check(
            &json!({"c_info": {"type": "hvm"}, "b_info": {"max_memkb": 1024},
            "disks": [{}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("1 disk"), "{e}");
    }
}
