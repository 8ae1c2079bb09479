//! A minimal QMP client for the device model libxl starts for an HVM guest
//! (qemu-xen): stop it and save its device state, as libxl does before it
//! writes the EMULATOR_CONTEXT record.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where libxl's QMP socket for `dom` lives.
pub fn socket_path(dom: u32) -> PathBuf {
    PathBuf::from(format!("/var/run/xen/qmp-libxl-{dom}"))
}

pub struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    /// Connects and leaves capabilities negotiation mode.
    pub fn connect(path: &Path) -> Result<Qmp, String> {
        let s = UnixStream::connect(path)
            .map_err(|e| format!("connecting to {}: {e}", path.display()))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
        let w = s.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            r: BufReader::new(s),
            w,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .r
            .read_line(&mut line)
            .map_err(|e| format!("reading QMP: {e}"))?;
        if n == 0 {
            return Err("QMP connection closed".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))
    }

    /// Runs one command; events that arrive meanwhile are skipped.
    pub fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, String> {
        let mut m = json!({ "execute": cmd });
        if let Some(a) = args {
            m["arguments"] = a;
        }
        let mut text = m.to_string();
        text.push('\n');
        self.w
            .write_all(text.as_bytes())
            .map_err(|e| format!("sending {cmd}: {e}"))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("{cmd}: {}", e["desc"].as_str().unwrap_or("error")));
            }
        }
    }
}

/// Stops the device model (its emulation and its I/O).
pub fn stop(sock: &Path) -> Result<(), String> {
    Qmp::connect(sock)?.execute("stop", None)?;
    Ok(())
}

/// Stops the device model and saves its state to `file` (non-live).
pub fn save_device_state(sock: &Path, file: &Path) -> Result<(), String> {
    let mut q = Qmp::connect(sock)?;
    q.execute("stop", None)?;
    q.execute(
        "xen-save-devices-state",
        Some(json!({ "filename": file.to_string_lossy(), "live": false })),
    )?;
    Ok(())
}

/// Switches the device model's dirty tracking on or off: while on, it
/// reports what it writes into guest memory to Xen's log-dirty bitmap.
pub fn set_dirty_log(sock: &Path, enable: bool) -> Result<(), String> {
    Qmp::connect(sock)?.execute(
        "xen-set-global-dirty-log",
        Some(json!({ "enable": enable })),
    )?;
    Ok(())
}

/// Lets a stopped device model run again (after a cancelled save).
pub fn resume(sock: &Path) -> Result<(), String> {
    Qmp::connect(sock)?.execute("cont", None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake device model that answers like QEMU and records the commands.
    fn fake_qemu(
        path: &Path,
        fail_on: Option<&'static str>,
    ) -> std::thread::JoinHandle<Vec<String>> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut seen = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                let cmd = v["execute"].as_str().unwrap().to_string();
                if cmd == "xen-save-devices-state" {
                    assert_eq!(v["arguments"]["live"], false);
                    std::fs::write(v["arguments"]["filename"].as_str().unwrap(), b"QEVM").unwrap();
                }
                if cmd == "stop" {
                    writeln!(w, r#"{{"event": "STOP", "timestamp": {{}}}}"#).unwrap();
                }
                if Some(cmd.as_str()) == fail_on {
                    writeln!(
                        w,
                        r#"{{"error": {{"class": "GenericError", "desc": "no can do"}}}}"#
                    )
                    .unwrap();
                } else {
                    writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
                }
                if cmd == "xen-set-global-dirty-log" {
                    seen.push(format!("{cmd} {}", v["arguments"]));
                } else {
                    seen.push(cmd);
                }
                line.clear();
            }
            seen
        })
    }

    #[test]
    fn stops_then_saves_the_device_state() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("qmp");
        let t = fake_qemu(&sock, None);
        let file = d.path().join("dm");
        save_device_state(&sock, &file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"QEVM");
        assert_eq!(
            t.join().unwrap(),
            vec!["qmp_capabilities", "stop", "xen-save-devices-state"]
        );
    }

    #[test]
    fn stop_stops() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("qmp");
        let t = fake_qemu(&sock, None);
        stop(&sock).unwrap();
        assert_eq!(t.join().unwrap(), vec!["qmp_capabilities", "stop"]);
    }

    #[test]
    fn dirty_log_on_and_off() {
        let d = tempfile::tempdir().unwrap();
        for enable in [true, false] {
            let sock = d.path().join(format!("qmp-{enable}"));
            let t = fake_qemu(&sock, None);
            set_dirty_log(&sock, enable).unwrap();
            assert_eq!(
                t.join().unwrap(),
                vec![
                    "qmp_capabilities".to_string(),
                    format!("xen-set-global-dirty-log {{\"enable\":{enable}}}")
                ]
            );
        }
    }

    #[test]
    fn qemu_errors_are_reported_with_the_command() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("qmp");
        let t = fake_qemu(&sock, Some("xen-save-devices-state"));
        let e = save_device_state(&sock, &d.path().join("dm")).unwrap_err();
        assert_eq!(e, "xen-save-devices-state: no can do");
        t.join().unwrap();
    }

    #[test]
    fn no_device_model_is_a_clear_error() {
        let e = Qmp::connect(Path::new("/nonexistent/qmp-libxl-9"))
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/qmp-libxl-9"), "{e}");
    }
}
