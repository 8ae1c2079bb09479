//! The xl config in a stream is data, not commands (issue 12, finding 1):
//! `rxmigrate restore` and `rxmigrate receive`, run as a user runs them on
//! a simulated host, refuse a config that names a device-model program,
//! adds QEMU arguments, points a serial port outside Xen's directories or
//! carries a path-like domain name, naming the field and leaving no domain
//! behind; `--trust-config` accepts all but the name.

mod sim_util;

use rxmigrate::hv::sim::{GuestConfig, SimHost, WorkloadKind};
use rxmigrate::hv::{GuestType, Hypervisor};
use rxmigrate::stream::handshake::PERMISSION_TO_GO;
use rxmigrate::stream::{read_xl_header_info, write_xl_header};
use serde_json::{json, Value};
use sim_util::TestHost;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// An xl save image of a small HVM guest of the simulated host.
fn saved_image() -> Vec<u8> {
    let mut a = TestHost::new();
    let mut c = GuestConfig::new("web", GuestType::Hvm, 16, WorkloadKind::Uniform);
    c.seed = 5;
    let dom = a.create(&c);
    a.save_image(dom)
}

/// `img` with its xl config changed by `edit`.
fn with_config(img: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut r = img;
    let info = read_xl_header_info(&mut r).expect("xl header");
    let text = info.header.config.expect("a config");
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let mut config: Value = serde_json::from_slice(&text[..end]).expect("JSON config");
    edit(&mut config);
    let mut out = Vec::new();
    write_xl_header(&mut out, Some(config.to_string().as_bytes())).expect("header");
    out.extend_from_slice(&img[info.size as usize..]);
    out
}

/// A simulated host in a temporary directory, for the binary.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn names(&self) -> Vec<String> {
        let h = SimHost::open(self.path()).expect("host");
        h.list_domains()
            .expect("list")
            .into_iter()
            .map(|d| d.name)
            .collect()
    }
    fn rx(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rxmigrate"));
        c.arg("--hv").arg(format!("sim:{}", self.path().display()));
        c
    }
    /// `rxmigrate restore -p IMG [extra...]`.
    fn restore(&self, img: &[u8], extra: &[&str]) -> Output {
        let file = self.path().join("image");
        std::fs::write(&file, img).unwrap();
        self.rx()
            .args(["restore", "-p"])
            .arg(&file)
            .args(extra)
            .output()
            .unwrap()
    }
    /// `rxmigrate receive -p [extra...]` fed `img`, then permission to go.
    fn receive(&self, img: &[u8], extra: &[&str]) -> Output {
        let mut child = self
            .rx()
            .args(["receive", "-p"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // A refusing receiver stops reading: a broken pipe is expected then.
        let _ = stdin
            .write_all(img)
            .and_then(|()| stdin.write_all(PERMISSION_TO_GO));
        drop(stdin);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(h) = SimHost::open(self.path()) {
            for d in h.list_domains().unwrap_or_default() {
                let _ = h.destroy(d.domid);
            }
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run failed, naming `field`, and left no domain.
fn refused(h: &Host, o: &Output, field: &str) -> String {
    let e = stderr(o);
    assert!(!o.status.success(), "accepted:\n{e}");
    assert!(
        e.contains(&format!("the xl config in the stream is refused: {field} ")),
        "{e}"
    );
    assert!(h.names().is_empty(), "left behind: {:?}", h.names());
    e
}

fn accepted(h: &Host, o: &Output, name: &str) {
    assert!(o.status.success(), "refused:\n{}", stderr(o));
    assert_eq!(h.names(), vec![name.to_string()]);
}

#[test]
fn a_plain_image_needs_no_trust() {
    let img = saved_image();
    let h = Host::new();
    accepted(&h, &h.restore(&img, &[]), "web");
    let h = Host::new();
    accepted(&h, &h.receive(&img, &[]), "web");
}

#[test]
fn a_device_model_program_is_refused_unless_trusted() {
    let img = with_config(&saved_image(), |c| {
        c["b_info"]["device_model"] = json!("/tmp/evil-qemu");
    });
    let h = Host::new();
    let e = refused(&h, &h.restore(&img, &[]), "b_info.device_model");
    assert!(e.contains("--trust-config"), "{e}");
    refused(&h, &h.receive(&img, &[]), "b_info.device_model");
    accepted(&h, &h.restore(&img, &["--trust-config"]), "web");
}

#[test]
fn extra_qemu_arguments_are_refused_unless_trusted() {
    let img = with_config(&saved_image(), |c| {
        c["b_info"]["extra_hvm"] = json!(["-monitor", "tcp:0.0.0.0:4444,server,nowait"]);
    });
    let h = Host::new();
    refused(&h, &h.receive(&img, &[]), "b_info.extra_hvm");
    refused(&h, &h.restore(&img, &[]), "b_info.extra_hvm");
    accepted(&h, &h.receive(&img, &["--trust-config"]), "web");
}

#[test]
fn a_serial_file_outside_xens_directories_is_refused_unless_trusted() {
    let img = with_config(&saved_image(), |c| {
        c["b_info"]["type.hvm"] = json!({"serial": "file:/etc/cron.d/rxmigrate"});
    });
    let h = Host::new();
    let e = refused(&h, &h.restore(&img, &[]), "b_info.type.hvm.serial");
    assert!(e.contains("outside Xen's directories"), "{e}");
    refused(&h, &h.receive(&img, &[]), "b_info.type.hvm.serial");
    accepted(&h, &h.restore(&img, &["--trust-config"]), "web");
}

#[test]
fn a_path_like_name_is_refused_even_when_trusted() {
    let img = with_config(&saved_image(), |c| {
        c["c_info"]["name"] = json!("../../../../x");
    });
    let h = Host::new();
    for trust in [&[][..], &["--trust-config"][..]] {
        let e = refused(&h, &h.restore(&img, trust), "c_info.name");
        assert!(e.contains("contains '/'"), "{e}");
        assert!(!e.contains("--trust-config"), "{e}");
        refused(&h, &h.receive(&img, trust), "c_info.name");
    }
    // The operator's --name is held to the same rule.
    let o = h.restore(&saved_image(), &["--name", "../x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("contains '/'"), "{}", stderr(&o));
    assert!(h.names().is_empty());
}
