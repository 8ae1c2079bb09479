//! The xl config a stream carries (libxl's JSON of the domain) is data from
//! the peer, not commands to the receiver. Before anything is restored from
//! it, [`check_config`] refuses a config that would:
//! - name a device-model program (`b_info.device_model`) — the receiver
//!   runs its own QEMU;
//! - add QEMU arguments (`b_info.extra`, `extra_pv`, `extra_hvm`), or
//!   values QEMU reads as more than a word (serial ports, VNC's address,
//!   keymap, boot order, sound card, USB devices; see [`super::devices`]);
//! - make QEMU create or write files outside Xen's directories (serial
//!   `file:`, `pipe:`, `unix:`);
//! - hand the guest a file not every local user may read (an HVM guest's
//!   `kernel` and `ramdisk`, which QEMU loads);
//! - carry a domain name that is not one file name (see [`super::name`]).
//!
//! A receiver that trusts its peer's config (`--trust-config`) skips all
//! but the name rule, which protects the paths made from the name.
//!
//! The config fields rxmigrate turns into paths, arguments or xenstore
//! entries (src/hv/xen/devmodel/argv.rs and mod.rs) are exactly the ones
//! checked here; the others (disks, NICs, bootloader, firmware, ...) are
//! never acted upon by a standalone restore (guests with xl's devices are
//! refused by the Xen backend) and are only kept with the domain.

use super::devices;
use super::files::check_public_file;
use super::name::check_domain_name;
use serde_json::Value;
use std::path::Path;

/// A config refused: which field, why, and whether `--trust-config` would
/// accept it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the xl config in the stream is refused: {field} {reason}{}",
    if *opt_in {
        "; a receiver that trusts its peer's config accepts this with --trust-config"
    } else {
        ""
    }
)]
pub struct ConfigRefused {
    /// The field's path in libxl's JSON, e.g. `b_info.device_model`.
    pub field: String,
    pub reason: String,
    /// `--trust-config` accepts it (false: never accepted).
    pub opt_in: bool,
}

fn refused(field: impl Into<String>, reason: impl Into<String>) -> ConfigRefused {
    ConfigRefused {
        field: field.into(),
        reason: reason.into(),
        opt_in: true,
    }
}

/// A string field, if present: `Ok(None)` when absent or null.
fn opt_str<'a>(v: &'a Value, field: &str) -> Result<Option<&'a str>, ConfigRefused> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(refused(field, format!("is {other}, not a string"))),
    }
}

/// A list-of-strings field, each element with its field path.
fn str_list<'a>(v: &'a Value, field: &str) -> Result<Vec<(String, &'a str)>, ConfigRefused> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let f = format!("{field}[{i}]");
                match e.as_str() {
                    Some(s) => Ok((f, s)),
                    None => Err(refused(f, format!("is {e}, not a string"))),
                }
            })
            .collect(),
        other => Err(refused(field, format!("is {other}, not a list"))),
    }
}

/// A check of one value that becomes a QEMU word: why it is refused.
type WordCheck = fn(&str) -> Result<(), String>;

/// Check the received `config` (see the module documentation). `trust`:
/// the receiver accepts its peer's choices of program, arguments and paths.
pub fn check_config(config: &Value, trust: bool) -> Result<(), ConfigRefused> {
    check_config_with(config, trust, &|p: &Path| {
        check_public_file(p)
            .map(drop)
            .map_err(|e| e.why.to_string())
    })
}

/// [`check_config`] with `public_file` saying whether a file may be handed
/// to the guest.
pub fn check_config_with(
    config: &Value,
    trust: bool,
    public_file: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<(), ConfigRefused> {
    if let Some(name) = opt_str(&config["c_info"]["name"], "c_info.name")? {
        check_domain_name(name).map_err(|e| ConfigRefused {
            field: "c_info.name".into(),
            reason: format!("{name:?} {e}"),
            opt_in: false,
        })?;
    }
    if trust {
        return Ok(());
    }
    let b = &config["b_info"];
    if let Some(dm) = opt_str(&b["device_model"], "b_info.device_model")? {
        return Err(refused(
            "b_info.device_model",
            format!("names a device-model program ({dm:?}): the receiver runs its own"),
        ));
    }
    for key in ["extra", "extra_pv", "extra_hvm"] {
        let field = format!("b_info.{key}");
        if let Some((_, first)) = str_list(&b[key], &field)?.first() {
            return Err(refused(
                field,
                format!("adds arguments to QEMU's command line ({first:?} ...)"),
            ));
        }
    }
    let h = &b["type.hvm"];
    let hf = |k: &str| format!("b_info.type.hvm.{k}");
    let mut words: Vec<(String, &str, WordCheck)> = Vec::new();
    if let Some(s) = opt_str(&h["serial"], &hf("serial"))? {
        words.push((hf("serial"), s, devices::serial));
    }
    for (f, s) in str_list(&h["serial_list"], &hf("serial_list"))? {
        words.push((f, s, devices::serial));
    }
    let listen = hf("vnc.listen");
    if let Some(l) = opt_str(&h["vnc"]["listen"], &listen)?.filter(|l| !l.is_empty()) {
        words.push((listen, l, devices::vnc_listen));
    }
    for (key, check) in [
        ("keymap", devices::keymap as WordCheck),
        ("boot", devices::boot_order),
        ("soundhw", devices::soundhw),
        ("usbdevice", devices::usbdevice),
    ] {
        if let Some(s) = opt_str(&h[key], &hf(key))?.filter(|s| !s.is_empty()) {
            words.push((hf(key), s, check));
        }
    }
    for (f, s) in str_list(&h["usbdevice_list"], &hf("usbdevice_list"))? {
        words.push((f, s, devices::usbdevice));
    }
    for (field, value, check) in words {
        check(value).map_err(|reason| refused(field, reason))?;
    }
    // QEMU loads an HVM guest's kernel and initrd; other guests' are not
    // read by a restore.
    if config["c_info"]["type"].as_str() == Some("hvm") {
        for key in ["kernel", "ramdisk"] {
            let field = format!("b_info.{key}");
            if let Some(p) = opt_str(&b[key], &field)?.filter(|p| !p.is_empty()) {
                devices::guest_file(p, public_file).map_err(|reason| refused(field, reason))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The lab's HVM guest as xl stored it (src/hv/xen/devmodel/testdata).
    fn lab_hvm() -> Value {
        serde_json::from_str(include_str!(
            "../hv/xen/devmodel/testdata/lab-hvm.xl-config.json"
        ))
        .unwrap()
    }

    /// The lab's files are public: root's, mode 0644, in root's directories.
    fn lab_files(p: &Path) -> Result<(), String> {
        if p.starts_with("/root/guest") {
            Ok(())
        } else {
            Err("is not readable by every local user (mode 0640)".into())
        }
    }

    fn check(c: &Value, trust: bool) -> Result<(), ConfigRefused> {
        check_config_with(c, trust, &lab_files)
    }

    fn refusal(c: &Value) -> ConfigRefused {
        check(c, false).expect_err("accepted")
    }

    #[test]
    fn the_lab_guests_configs_are_accepted() {
        assert_eq!(check(&lab_hvm(), false), Ok(()));
        let pv = json!({
            "c_info": {"type": "pv", "name": "pv-lab"},
            "b_info": {"max_memkb": 131072, "kernel": "/root/guest/vmlinuz",
                       "ramdisk": "/nowhere/initrd.gz", "cmdline": "console=hvc0"}
        });
        // A PV guest's kernel is not read by a restore: not checked.
        assert_eq!(check(&pv, false), Ok(()));
        assert_eq!(check(&json!({}), false), Ok(()));
    }

    #[test]
    fn a_device_model_program_is_refused_unless_trusted() {
        let mut c = lab_hvm();
        c["b_info"]["device_model"] = json!("/tmp/evil");
        let e = refusal(&c);
        assert_eq!(e.field, "b_info.device_model");
        assert!(e.opt_in);
        assert!(
            e.to_string().starts_with(
                "the xl config in the stream is refused: b_info.device_model names a \
                 device-model program (\"/tmp/evil\")"
            ),
            "{e}"
        );
        assert!(e.to_string().ends_with("with --trust-config"), "{e}");
        assert_eq!(check(&c, true), Ok(()));
    }

    #[test]
    fn extra_qemu_arguments_are_refused_unless_trusted() {
        for key in ["extra", "extra_pv", "extra_hvm"] {
            let mut c = lab_hvm();
            c["b_info"][key] = json!(["-monitor", "tcp:0.0.0.0:4444,server,nowait"]);
            let e = refusal(&c);
            assert_eq!(e.field, format!("b_info.{key}"));
            assert!(e.reason.contains("\"-monitor\""), "{e}");
            assert_eq!(check(&c, true), Ok(()));
        }
        // An empty list adds nothing.
        let mut c = lab_hvm();
        c["b_info"]["extra"] = json!([]);
        assert_eq!(check(&c, false), Ok(()));
    }

    #[test]
    fn serial_ports_outside_xens_directories_are_refused() {
        let mut c = lab_hvm();
        c["b_info"]["type.hvm"]["serial"] = json!("file:/etc/cron.d/evil");
        let e = refusal(&c);
        assert_eq!(e.field, "b_info.type.hvm.serial");
        assert!(e.reason.contains("outside Xen's directories"), "{e}");
        assert_eq!(check(&c, true), Ok(()));
        let mut c = lab_hvm();
        c["b_info"]["type.hvm"]["serial"] = Value::Null;
        c["b_info"]["type.hvm"]["serial_list"] = json!(["pty", "mon:tcp::4444,server"]);
        assert_eq!(refusal(&c).field, "b_info.type.hvm.serial_list[1]");
    }

    #[test]
    fn other_qemu_words_are_checked() {
        for (key, value, field) in [
            ("keymap", json!("/etc/shadow"), "b_info.type.hvm.keymap"),
            (
                "boot",
                json!("c,splash=/etc/shadow"),
                "b_info.type.hvm.boot",
            ),
            (
                "soundhw",
                json!("vfio-pci,host=00:1f.2"),
                "b_info.type.hvm.soundhw",
            ),
            ("usbdevice", json!("host:1.2"), "b_info.type.hvm.usbdevice"),
            (
                "usbdevice_list",
                json!(["tablet", "host:1.2"]),
                "b_info.type.hvm.usbdevice_list[1]",
            ),
            (
                "vnc",
                json!({"listen": "unix:/etc/x"}),
                "b_info.type.hvm.vnc.listen",
            ),
        ] {
            let mut c = lab_hvm();
            c["b_info"]["type.hvm"][key] = value;
            assert_eq!(refusal(&c).field, field);
            assert_eq!(check(&c, true), Ok(()));
        }
    }

    #[test]
    fn guest_files_must_be_readable_by_anyone() {
        let mut c = lab_hvm();
        c["b_info"]["ramdisk"] = json!("/etc/shadow");
        let e = refusal(&c);
        assert_eq!(e.field, "b_info.ramdisk");
        assert!(e.reason.contains("not readable by every local user"), "{e}");
        c["b_info"]["ramdisk"] = json!("/root/guest/../../etc/shadow");
        assert_eq!(refusal(&c).field, "b_info.ramdisk");
        assert_eq!(check(&c, true), Ok(()));
    }

    #[test]
    fn bad_names_are_refused_even_when_trusted() {
        for name in ["../../../../x", "", "a/b", "7", "-x", "a\nb"] {
            let mut c = lab_hvm();
            c["c_info"]["name"] = json!(name);
            for trust in [false, true] {
                let e = check(&c, trust).expect_err(name);
                assert_eq!(e.field, "c_info.name");
                assert!(!e.opt_in);
                assert!(!e.to_string().contains("--trust-config"), "{e}");
            }
        }
        let mut c = lab_hvm();
        c["c_info"]["name"] = json!(12);
        assert_eq!(refusal(&c).field, "c_info.name");
    }

    #[test]
    fn fields_of_the_wrong_type_are_refused() {
        let mut c = lab_hvm();
        c["b_info"]["extra_hvm"] = json!("-monitor stdio");
        assert_eq!(refusal(&c).field, "b_info.extra_hvm");
        let mut c = lab_hvm();
        c["b_info"]["device_model"] = json!(["/tmp/x"]);
        assert_eq!(refusal(&c).field, "b_info.device_model");
        let mut c = lab_hvm();
        c["b_info"]["type.hvm"]["serial_list"] = json!([1]);
        assert_eq!(refusal(&c).field, "b_info.type.hvm.serial_list[0]");
    }
}
