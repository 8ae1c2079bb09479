//! The values of a received xl config that become words of QEMU's command
//! line, each held to what xl users write, so that none can name a file
//! outside Xen's directories, open a network port into QEMU, or smuggle in
//! an option (QEMU splits many option values at ',').
//!
//! Each check returns why the value is refused, worded to follow the value.

use super::paths::{check_clean, check_under_xen_dirs};

/// Serial backends with no path and no network.
const PLAIN_SERIALS: [&str; 4] = ["pty", "null", "none", "vc"];
/// Options a `unix:` serial socket may have (QEMU's legacy syntax).
const UNIX_OPTIONS: [&str; 6] = [
    "server",
    "nowait",
    "server=on",
    "server=off",
    "wait=on",
    "wait=off",
];
/// Sound cards libxl hands to QEMU as `-device NAME` (hda as intel-hda).
const SOUND_CARDS: [&str; 7] = ["ac97", "adlib", "cs4231a", "es1370", "gus", "hda", "sb16"];
/// `-usbdevice` devices that are emulated, not a host's.
const USB_DEVICES: [&str; 4] = ["tablet", "mouse", "keyboard", "wacom-tablet"];

fn xen_path(p: &str) -> Result<(), String> {
    check_under_xen_dirs(p)
        .map(drop)
        .map_err(|e| format!("names path {p:?}, which {e}"))?;
    if p.contains(',') {
        return Err(format!(
            "names path {p:?} with a ',' (QEMU would read options from it)"
        ));
    }
    Ok(())
}

/// A serial port (`serial`, `serial_list`): pty, null, none, vc, or a
/// file, pipe or unix socket under Xen's directories.
pub fn serial(s: &str) -> Result<(), String> {
    if PLAIN_SERIALS.contains(&s) {
        return Ok(());
    }
    if let Some(p) = s.strip_prefix("file:").or_else(|| s.strip_prefix("pipe:")) {
        return xen_path(p);
    }
    if let Some(rest) = s.strip_prefix("unix:") {
        let mut parts = rest.split(',');
        xen_path(parts.next().unwrap_or(""))?;
        return match parts.find(|o| !UNIX_OPTIONS.contains(o)) {
            None => Ok(()),
            Some(o) => Err(format!(
                "gives the socket option {o:?} (allowed: {})",
                UNIX_OPTIONS.join(", ")
            )),
        };
    }
    Err(format!(
        "is the QEMU serial backend {s:?}: a received config may use {}, or file:, pipe:, \
         unix: under Xen's directories",
        PLAIN_SERIALS.join(", ")
    ))
}

fn host_chars(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// VNC's listen address (`vnclisten`): a host name or IP address, with an
/// optional `:DISPLAY`; IPv6 in brackets.
pub fn vnc_listen(l: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "is {l:?}, not HOST[:DISPLAY] (a host name or IP address, IPv6 in brackets)"
        ))
    };
    let (host_ok, display) = if let Some(v6) = l.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else {
            return bad();
        };
        let ok = !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        match rest {
            "" => (ok, None),
            r => match r.strip_prefix(':') {
                Some(d) => (ok, Some(d)),
                None => return bad(),
            },
        }
    } else {
        match l.split_once(':') {
            Some((h, d)) => (host_chars(h), Some(d)),
            None => (host_chars(l), None),
        }
    };
    let display_ok = display
        .is_none_or(|d| !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && display_ok {
        Ok(())
    } else {
        bad()
    }
}

/// A keyboard layout (`keymap`): a name such as `en-us`, never a path
/// (QEMU opens a keymap that names an existing file as that file).
pub fn keymap(k: &str) -> Result<(), String> {
    if !k.is_empty()
        && k.len() <= 32
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "is {k:?}, not a keyboard layout name such as en-us"
        ))
    }
}

/// The boot order (`boot`): QEMU's drive letters a to p.
pub fn boot_order(b: &str) -> Result<(), String> {
    if !b.is_empty() && b.len() <= 16 && b.bytes().all(|c| (b'a'..=b'p').contains(&c)) {
        Ok(())
    } else {
        Err(format!(
            "is {b:?}, not a boot order of drive letters a to p"
        ))
    }
}

/// The emulated sound card (`soundhw`), which becomes `-device NAME`.
pub fn soundhw(s: &str) -> Result<(), String> {
    if SOUND_CARDS.contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "is {s:?}, which would be handed to QEMU as a device (sound cards: {})",
            SOUND_CARDS.join(", ")
        ))
    }
}

/// An emulated USB device (`usbdevice`), which becomes `-usbdevice NAME`.
pub fn usbdevice(d: &str) -> Result<(), String> {
    if USB_DEVICES.contains(&d) {
        Ok(())
    } else {
        Err(format!(
            "is {d:?}, which would be handed to QEMU as a USB device (emulated ones: {})",
            USB_DEVICES.join(", ")
        ))
    }
}

/// A file QEMU reads and hands to the guest (`kernel`, `ramdisk`): a clean
/// absolute path; `public` says whether the file may be disclosed.
pub fn guest_file(
    p: &str,
    public: &dyn Fn(&std::path::Path) -> Result<(), String>,
) -> Result<(), String> {
    let path = check_clean(p).map_err(|e| format!("names path {p:?}, which {e}"))?;
    public(path).map_err(|why| format!("names {p:?}, which the guest could read but {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_ports_stay_in_xens_directories() {
        for ok in [
            "pty",
            "null",
            "none",
            "vc",
            "file:/var/log/xen/console/guest-hvm-lab-serial.log",
            "pipe:/var/run/xen/serial-pipe",
            "unix:/run/xen/ser.sock,server,nowait",
            "unix:/run/xen/ser.sock",
        ] {
            assert_eq!(serial(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("file:/etc/cron.d/x", "outside Xen's directories"),
            ("file:/var/log/xen/../../../etc/passwd", "'..'"),
            ("pipe:/tmp/p", "outside Xen's directories"),
            ("file:/var/log/xen/a,append=on", "','"),
            ("unix:/tmp/s,server,nowait", "outside Xen's directories"),
            (
                "unix:/run/xen/s,server,path=/x",
                "socket option \"path=/x\"",
            ),
            ("tcp::4444,server,nowait", "QEMU serial backend"),
            ("mon:stdio", "QEMU serial backend"),
            ("/dev/sda", "QEMU serial backend"),
            ("stdio", "QEMU serial backend"),
            ("udp:1.2.3.4:9", "QEMU serial backend"),
        ] {
            let e = serial(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn vnc_listens_on_an_address() {
        for ok in [
            "127.0.0.1",
            "0.0.0.0",
            "localhost:1",
            "host-a.example.org",
            "[::1]",
            "[::1]:2",
        ] {
            assert_eq!(vnc_listen(ok), Ok(()), "{ok}");
        }
        for bad in [
            "unix:/etc/x",
            "127.0.0.1:0,websocket=5700",
            "127.0.0.1,tls-creds=x",
            "",
            ":1",
            "[::1",
            "[::1]x",
            "a:b",
            "a:",
            "a b",
        ] {
            assert!(vnc_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn words_are_words() {
        assert_eq!(keymap("en-us"), Ok(()));
        assert_eq!(keymap("de_CH"), Ok(()));
        assert!(keymap("/etc/shadow").is_err());
        assert!(keymap("../../../etc/shadow").is_err());
        assert!(keymap("").is_err());
        assert_eq!(boot_order("cda"), Ok(()));
        assert_eq!(boot_order("n"), Ok(()));
        assert!(boot_order("cd,splash=/etc/shadow").is_err());
        assert!(boot_order("z").is_err());
        assert_eq!(soundhw("hda"), Ok(()));
        assert!(soundhw("vfio-pci,host=0000:00:1f.2").is_err());
        assert_eq!(usbdevice("tablet"), Ok(()));
        assert!(usbdevice("host:1.2").is_err());
    }

    #[test]
    fn guest_files_must_be_public() {
        let public = |p: &std::path::Path| {
            if p == std::path::Path::new("/root/guest/vmlinuz") {
                Ok(())
            } else {
                Err("is not readable by every local user (mode 0640)".to_string())
            }
        };
        assert_eq!(guest_file("/root/guest/vmlinuz", &public), Ok(()));
        let e = guest_file("/etc/shadow", &public).unwrap_err();
        assert!(
            e.contains("\"/etc/shadow\", which the guest could read"),
            "{e}"
        );
        let e = guest_file("/root/guest/../../etc/shadow", &public).unwrap_err();
        assert!(e.contains("'..'"), "{e}");
        assert!(guest_file("vmlinuz", &public).is_err());
    }
}
