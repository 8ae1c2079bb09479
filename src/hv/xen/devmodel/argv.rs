//! QEMU's command line for an HVM guest, from libxl's JSON config of it
//! (the config `xl save` writes into the save file).
//!
//! A device model loads saved device state only into the same device set, in
//! the same PCI slots, so the arguments follow the order and spelling libxl
//! 4.17 uses for qemu-xen (tools/libs/light/libxl_dm.c). Devices that need
//! backends xl sets up (disks, NICs, PCI passthrough, channels, ...) are
//! refused: restoring those guests is `xl restore`'s job (with
//! rxmigrate-save-helper), and a half-equipped guest is worse than an error.

use serde_json::Value;

/// The xl-config JSON paths of devices a standalone restore cannot provide.
const XL_DEVICES: &[(&str, &str)] = &[
    ("disks", "disk"),
    ("nics", "network interface"),
    ("pcidevs", "PCI passthrough device"),
    ("rdms", "reserved device memory region"),
    ("dtdevs", "device-tree passthrough device"),
    ("vfbs", "virtual framebuffer"),
    ("vkbs", "virtual keyboard"),
    ("vtpms", "vTPM"),
    ("p9s", "9pfs share"),
    ("pvcallsifs", "PV calls interface"),
    ("vdispls", "virtual display"),
    ("vsnds", "virtual sound card"),
    ("channels", "channel"),
    ("connectors", "connector"),
    ("usbctrls", "USB controller"),
    ("usbdevs", "USB device"),
];

/// Why no command line can be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgvError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ArgvError> {
    Err(ArgvError(msg.into()))
}

/// libxl's defbool: "True" / "False" / "<default>" (or absent).
fn defbool(v: &Value, default: bool) -> bool {
    match v {
        Value::String(s) if s == "True" => true,
        Value::String(s) if s == "False" => false,
        Value::Bool(b) => *b,
        _ => default,
    }
}

fn string(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// QEMU's `-name` value: QEMU splits it into options at ',' and reads
/// `KEY=` as an option name, so a name is quoted (',' doubled, and given as
/// `guest=NAME` if it holds a '='); a plain name is passed as libxl does.
fn name_option(name: &str) -> String {
    let quoted = name.replace(',', ",,");
    if name.contains('=') {
        format!("guest={quoted}")
    } else {
        quoted
    }
}

/// The firmware hvmloader loads (xenstore `hvmloader/bios`): libxl's
/// bios_type, seabios by default.
pub fn hvmloader_bios(config: &Value) -> Result<&str, ArgvError> {
    match &config["b_info"]["type.hvm"]["bios"] {
        Value::Null => Ok("seabios"),
        Value::String(b) if ["rombios", "seabios", "ovmf"].contains(&b.as_str()) => Ok(b),
        other => err(format!(
            "b_info.type.hvm.bios is {other}, not rombios, seabios or ovmf"
        )),
    }
}

/// Arguments (without the program) for qemu-xen serving HVM domain `dom`,
/// loading its saved device state from file descriptor `state_fd`.
pub fn qemu_argv(dom: u32, config: &Value, state_fd: i32) -> Result<Vec<String>, ArgvError> {
    let c = &config["c_info"];
    let b = &config["b_info"];
    let h = &b["type.hvm"];
    match c["type"].as_str() {
        Some("hvm") => {}
        other => return err(format!("not an HVM guest (c_info.type is {other:?})")),
    }
    match b["device_model_version"].as_str() {
        None | Some("qemu_xen") => {}
        Some(v) => {
            return err(format!(
                "device model {v:?} is not supported (only qemu_xen, Xen's upstream QEMU)"
            ))
        }
    }
    if defbool(&b["device_model_stubdomain"], false) {
        return err("the guest's device model runs in a stub domain, which only xl can build");
    }
    let devices: Vec<String> = XL_DEVICES
        .iter()
        .filter_map(|(key, what)| {
            let n = config[*key].as_array().map_or(0, Vec::len);
            (n > 0).then(|| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
        })
        .collect();
    if !devices.is_empty() {
        return err(format!(
            "the guest has {}: only xl can connect them",
            devices.join(", ")
        ));
    }
    for (key, what) in [("spice", "SPICE"), ("gfx_passthru", "graphics passthrough")] {
        let on = match key {
            "spice" => defbool(&h["spice"]["enable"], false),
            _ => defbool(&h[key], false),
        };
        if on {
            return err(format!("{what} is enabled: only xl can set it up"));
        }
    }

    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let dom_s = dom.to_string();
    push(&["-xen-domid", &dom_s, "-no-shutdown"]);
    let cmd = format!(
        "socket,id=libxl-cmd,path={},server=on,wait=off",
        super::super::qmp::socket_path(dom).display()
    );
    push(&["-chardev", &cmd, "-mon", "chardev=libxl-cmd,mode=control"]);
    let stat = format!(
        "socket,id=libxenstat-cmd,path=/var/run/xen/qmp-libxenstat-{dom},server=on,wait=off"
    );
    push(&[
        "-chardev",
        &stat,
        "-mon",
        "chardev=libxenstat-cmd,mode=control",
    ]);
    push(&["-nodefaults", "-no-user-config"]);
    if let Some(name) = string(&c["name"]) {
        push(&["-name", &name_option(name)]);
    }

    let vnc = &h["vnc"];
    let vnc_on = defbool(&vnc["enable"], true);
    if vnc_on {
        let display = vnc["display"].as_u64().unwrap_or(0);
        let mut arg = match string(&vnc["listen"]) {
            Some(l) if l.contains(':') => {
                if display != 0 {
                    return err("vnc: vncdisplay set and vnclisten contains a display");
                }
                l.to_string()
            }
            Some(l) => format!("{l}:{display}"),
            None => format!("127.0.0.1:{display}"),
        };
        if string(&vnc["passwd"]).is_some() {
            arg.push_str(",password=on");
        }
        if defbool(&vnc["findunused"], true) {
            arg.push_str(",to=99");
        }
        push(&["-vnc", &arg]);
    } else {
        push(&["-vnc", "none"]);
    }
    push(&["-display", "none"]);
    let sdl_on = defbool(&h["sdl"]["enable"], false);
    if sdl_on {
        push(&["-display", "sdl"]);
    }
    if let Some(k) = string(&h["keymap"]) {
        push(&["-k", k]);
    }

    for (key, flag) in [
        ("kernel", "-kernel"),
        ("ramdisk", "-initrd"),
        ("cmdline", "-append"),
    ] {
        if let Some(v) = string(&b[key]) {
            push(&[flag, v]);
        }
    }
    let serial_list = strings(&h["serial_list"]);
    match (string(&h["serial"]), serial_list.is_empty()) {
        (Some(_), false) => return err("both serial and serial_list are set"),
        (Some(s), true) => push(&["-serial", s]),
        (None, _) => {
            for s in serial_list {
                push(&["-serial", s]);
            }
        }
    }
    if defbool(&h["nographic"], false) && !sdl_on && !vnc_on {
        push(&["-nographic"]);
    }

    let video_mb = b["video_memkb"].as_u64().unwrap_or(0) / 1024;
    match h["vga"]["kind"].as_str().unwrap_or("cirrus") {
        "std" => push(&["-device", &format!("VGA,vgamem_mb={video_mb}")]),
        "cirrus" => push(&["-device", &format!("cirrus-vga,vgamem_mb={video_mb}")]),
        "qxl" => {
            let half = b["video_memkb"].as_u64().unwrap_or(0) / 2 / 1024;
            push(&[
                "-device",
                &format!("qxl-vga,vram_size_mb={half},ram_size_mb={half}"),
            ]);
        }
        "none" => {}
        other => return err(format!("unknown emulated video card {other:?}")),
    }
    // libxl's default boot order when the config names none
    let order = string(&h["boot"]).unwrap_or("cda");
    push(&["-boot", &format!("order={order}")]);

    let usbdevices = strings(&h["usbdevice_list"]);
    let usbdevice = string(&h["usbdevice"]);
    if defbool(&h["usb"], false) || usbdevice.is_some() || !usbdevices.is_empty() {
        if usbdevice.is_some() && !usbdevices.is_empty() {
            return err("both usbdevice and usbdevice_list are set");
        }
        push(&["-usb"]);
        for d in usbdevice.into_iter().chain(usbdevices) {
            push(&["-usbdevice", d]);
        }
    } else {
        match h["usbversion"].as_u64().unwrap_or(0) {
            0 => {}
            1 => push(&["-device", "piix3-usb-uhci,id=usb"]),
            2 => {
                push(&[
                    "-device",
                    "ich9-usb-ehci1,id=usb,addr=0x1d.0x7,multifunction=on",
                ]);
                for i in 1..4u32 {
                    let d = format!(
                        "ich9-usb-uhci{i},masterbus=usb.0,firstport={},addr=0x1d.{:#x},multifunction=on",
                        2 * (i - 1),
                        i - 1
                    );
                    push(&["-device", &d]);
                }
            }
            3 => push(&["-device", "nec-usb-xhci,id=usb"]),
            v => return err(format!("usbversion {v} is invalid (1 to 3)")),
        }
        // USB redirection channels need SPICE, refused above.
    }
    if let Some(s) = string(&h["soundhw"]) {
        if s == "hda" {
            push(&["-device", "intel-hda", "-device", "hda-duplex"]);
        } else {
            push(&["-device", s]);
        }
    }
    // libxl__acpi_defbool_val: both the generic and the HVM-only switch.
    if !(defbool(&b["acpi"], true) && defbool(&h["acpi"], true)) {
        push(&["-no-acpi"]);
    }
    let max_vcpus = b["max_vcpus"].as_u64().unwrap_or(1);
    if max_vcpus > 1 {
        let smp = match b["avail_vcpus"].as_array() {
            Some(set) if !set.is_empty() => format!("{},maxcpus={max_vcpus}", set.len()),
            _ => max_vcpus.to_string(),
        };
        push(&["-smp", &smp]);
    }
    // No emulated NICs (NICs are refused above).
    push(&["-net", "none"]);
    if defbool(&b["dm_restrict"], false) {
        log::warn!(
            "dm_restrict is set for this guest: the device model runs unrestricted \
             (as root, no chroot) after a standalone restore"
        );
    }
    push(&["-incoming", &format!("fd:{state_fd}")]);
    for e in strings(&b["extra"]) {
        push(&[e]);
    }

    let mut machine = if defbool(&h["xen_platform_pci"], true) {
        "xenfv,suppress-vmdesc=on".to_string()
    } else {
        "pc,accel=xen,suppress-vmdesc=on".to_string()
    };
    let hole_kb = h["mmio_hole_memkb"].as_u64().unwrap_or(0);
    if hole_kb > 0 {
        // libxl ignores holes that leave RAM above its MMIO start (0xf0000000).
        let below = (1u64 << 32).saturating_sub(hole_kb << 10);
        if below <= 0xf000_0000 {
            machine.push_str(&format!(",max-ram-below-4g={below}"));
        }
    }
    push(&["-machine", &machine]);
    for e in strings(&b["extra_hvm"]) {
        push(&[e]);
    }
    let Some(max_kb) = b["max_memkb"].as_u64() else {
        return err("b_info.max_memkb is missing");
    };
    let ram_mb = max_kb.saturating_sub(b["video_memkb"].as_u64().unwrap_or(0)) / 1024;
    push(&["-m", &ram_mb.to_string()]);
    if h["hdtype"].as_str() == Some("ahci") {
        push(&["-device", "ahci,id=ahci0"]);
    }
    Ok(a)
}

/// The device model binary: the config's (accepted only from a config the
/// receiver trusts: `trust::check_config` refuses it otherwise), else
/// `RXMIGRATE_QEMU`, else the first of libxl's usual places that exists.
pub fn qemu_program(config: &Value) -> Result<std::path::PathBuf, ArgvError> {
    if let Some(p) = string(&config["b_info"]["device_model"]) {
        return Ok(p.into());
    }
    if let Some(p) = std::env::var_os("RXMIGRATE_QEMU").filter(|p| !p.is_empty()) {
        return Ok(p.into());
    }
    const PLACES: &[&str] = &[
        // Debian's qemu-system-xen (what its libxl runs)
        "/usr/libexec/xen-qemu-system-i386",
        "/usr/lib/xen-4.17/bin/qemu-system-i386",
        "/usr/libexec/xen/bin/qemu-system-i386",
        "/usr/lib/xen/bin/qemu-system-i386",
        "/usr/bin/qemu-system-i386",
    ];
    PLACES
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.exists())
        .map(|p| p.to_path_buf())
        .ok_or_else(|| {
            ArgvError(format!(
                "no qemu-xen device model found (looked for {}; install qemu-system-xen \
                 or set RXMIGRATE_QEMU)",
                PLACES.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shape of the lab's HVM guest as libxl stores it (defaults filled).
    fn lab_guest() -> Value {
        json!({
            "c_info": {"type": "hvm", "name": "hvm-lab"},
            "b_info": {
                "max_vcpus": 1,
                "avail_vcpus": [0],
                "max_memkb": 131072,
                "target_memkb": 131072,
                "video_memkb": 0,
                "device_model_version": "qemu_xen",
                "kernel": "/root/guest/vmlinuz",
                "cmdline": "console=ttyS0 quiet",
                "ramdisk": "/root/guest/initrd.gz",
                "type.hvm": {
                    "vga": {"kind": "none"},
                    "vnc": {"enable": "True", "listen": "127.0.0.1", "findunused": "True"},
                    "sdl": {"enable": "False"},
                    "spice": {"enable": "False"},
                    "nographic": "True",
                    "serial": "file:/var/log/xen/console/guest-hvm-lab-serial.log",
                    "boot": "cda",
                    "usb": "False",
                    "xen_platform_pci": "True",
                    "acpi": "True"
                }
            }
        })
    }

    fn joined(v: &[String]) -> String {
        v.join(" ")
    }

    #[test]
    fn lab_guest_gets_the_command_line_libxl_gave_it() {
        // Captured in the lab (ci/lab/run, `capture_domain`): xl's stored
        // config of the HVM test guest and the argv libxl started QEMU with
        // for it as domain 1. A restore adds only `-incoming`.
        let config: Value =
            serde_json::from_str(include_str!("testdata/lab-hvm.xl-config.json")).unwrap();
        let mut expected: Vec<String> = include_str!("testdata/lab-hvm.dm-argv.txt")
            .lines()
            .skip(1) // the program
            .map(str::to_string)
            .collect();
        let at = expected.iter().position(|a| a == "-machine").unwrap();
        expected.splice(at..at, ["-incoming".to_string(), "fd:3".to_string()]);
        assert_eq!(qemu_argv(1, &config, 3).unwrap(), expected);
    }

    #[test]
    fn display_memory_and_cpus_follow_the_config() {
        let mut c = lab_guest();
        c["b_info"]["max_vcpus"] = json!(4);
        c["b_info"]["avail_vcpus"] = json!([0, 1]);
        c["b_info"]["max_memkb"] = json!(1048576 + 16384);
        c["b_info"]["video_memkb"] = json!(16384);
        c["b_info"]["type.hvm"]["vga"]["kind"] = json!("std");
        c["b_info"]["type.hvm"]["vnc"]["enable"] = json!("False");
        c["b_info"]["type.hvm"]["acpi"] = json!("False");
        c["b_info"]["type.hvm"]["xen_platform_pci"] = json!("False");
        let a = joined(&qemu_argv(3, &c, 3).unwrap());
        assert!(a.contains("-vnc none -display none"), "{a}");
        assert!(a.contains("-nographic -device VGA,vgamem_mb=16"), "{a}");
        assert!(a.contains("-no-acpi -smp 2,maxcpus=4 -net none"), "{a}");
        assert!(
            a.ends_with("-machine pc,accel=xen,suppress-vmdesc=on -m 1024"),
            "{a}"
        );
    }

    #[test]
    fn absent_fields_take_libxls_defaults() {
        let c = json!({
            "c_info": {"type": "hvm", "name": "bare"},
            "b_info": {"max_vcpus": 1, "max_memkb": 262144, "video_memkb": 8192}
        });
        let a = joined(&qemu_argv(1, &c, 3).unwrap());
        // cirrus VGA and VNC on 127.0.0.1 are libxl's defaults for HVM
        assert!(a.contains("-vnc 127.0.0.1:0,to=99"), "{a}");
        assert!(a.contains("-device cirrus-vga,vgamem_mb=8"), "{a}");
        assert!(
            a.ends_with("-machine xenfv,suppress-vmdesc=on -m 248"),
            "{a}"
        );
        assert!(!a.contains("-kernel") && !a.contains("-serial"), "{a}");
    }

    #[test]
    fn guests_with_xl_devices_are_refused_by_name() {
        let mut c = lab_guest();
        c["disks"] = json!([{"vdev": "hda"}, {"vdev": "hdb"}]);
        c["nics"] = json!([{"devid": 0}]);
        let e = qemu_argv(1, &c, 3).unwrap_err().to_string();
        assert_eq!(
            e,
            "the guest has 2 disks, 1 network interface: only xl can connect them"
        );
    }

    #[test]
    fn other_refusals_say_why() {
        let mut c = lab_guest();
        c["b_info"]["device_model_version"] = json!("qemu_xen_traditional");
        assert!(qemu_argv(1, &c, 3)
            .unwrap_err()
            .to_string()
            .contains("\"qemu_xen_traditional\" is not supported"));
        let mut c = lab_guest();
        c["b_info"]["device_model_stubdomain"] = json!("True");
        assert!(qemu_argv(1, &c, 3)
            .unwrap_err()
            .to_string()
            .contains("stub domain"));
        let mut c = lab_guest();
        c["c_info"]["type"] = json!("pv");
        assert!(qemu_argv(1, &c, 3)
            .unwrap_err()
            .to_string()
            .contains("not an HVM guest"));
        let mut c = lab_guest();
        c["b_info"]["type.hvm"]["serial_list"] = json!(["pty"]);
        assert_eq!(
            qemu_argv(1, &c, 3).unwrap_err().to_string(),
            "both serial and serial_list are set"
        );
        let mut c = lab_guest();
        c["b_info"]["type.hvm"]["spice"]["enable"] = json!("True");
        assert!(qemu_argv(1, &c, 3)
            .unwrap_err()
            .to_string()
            .contains("SPICE"));
    }

    #[test]
    fn names_cannot_add_qemu_options() {
        let mut c = lab_guest();
        c["c_info"]["name"] = json!("web,debug-threads=on");
        let a = qemu_argv(1, &c, 3).unwrap();
        let at = a.iter().position(|x| x == "-name").unwrap();
        assert_eq!(a[at + 1], "guest=web,,debug-threads=on");
        c["c_info"]["name"] = json!("a,b");
        let a = qemu_argv(1, &c, 3).unwrap();
        assert_eq!(a[at + 1], "a,,b");
    }

    #[test]
    fn the_bios_is_one_libxl_knows() {
        let mut c = lab_guest();
        assert_eq!(hvmloader_bios(&c).unwrap(), "seabios");
        c["b_info"]["type.hvm"]["bios"] = json!("ovmf");
        assert_eq!(hvmloader_bios(&c).unwrap(), "ovmf");
        c["b_info"]["type.hvm"]["bios"] = json!("/etc/shadow");
        assert!(hvmloader_bios(&c).is_err());
    }

    #[test]
    fn the_configs_device_model_wins() {
        let mut c = lab_guest();
        c["b_info"]["device_model"] = json!("/opt/qemu/bin/qemu-system-i386");
        assert_eq!(
            qemu_program(&c).unwrap(),
            std::path::PathBuf::from("/opt/qemu/bin/qemu-system-i386")
        );
    }
}
