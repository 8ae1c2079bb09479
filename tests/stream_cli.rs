//! `rxmigrate inspect` and `rxmigrate verify` run as a user runs them, on
//! streams written by the tests.

mod stream_fixtures;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use stream_fixtures::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rxmigrate"))
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn run(args: &[&str], path: &Path) -> Output {
    bin().args(args).arg(path).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn verify_accepts_good_streams_of_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("pv.libxc", pv_bytes(), "libxc v3, x86 PV from Xen 4.17"),
        ("hvm.libxc", hvm_bytes(), "libxc v3, x86 HVM from Xen 4.17"),
        (
            "pv.xl",
            xl_file(&pv_bytes(), false, false),
            "xl save file -> libxl v2 -> libxc v3",
        ),
        (
            "hvm.xl",
            xl_file(&hvm_bytes(), true, true),
            "xl save file -> libxl v2 -> libxc v3",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = file(dir.path(), name, &bytes);
        let o = run(&["verify"], &p);
        assert!(o.status.success(), "{name}: {}", stdout(&o));
        let out = stdout(&o);
        assert!(out.starts_with("OK: "), "{name}: {out}");
        assert!(out.contains(want), "{name}: {out}");
        assert!(
            out.contains(&format!("{} bytes", bytes.len())),
            "{name}: {out}"
        );
    }
}

#[test]
fn verify_reports_the_first_error_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = pv_bytes();
    // Third record (X86_MSR_POLICY) is fine; corrupt the PAGE_DATA count of
    // the first PAGE_DATA record: find it by its header.
    let pos = find_record(&bytes, 1).unwrap();
    bytes[pos + 8..pos + 12].copy_from_slice(&0u32.to_le_bytes());
    let p = file(dir.path(), "bad.libxc", &bytes);
    let o = run(&["verify"], &p);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "libxc record #5 (PAGE_DATA) at offset {pos:#x}: count is 0"
        )),
        "{out}"
    );
}

/// Offset of the first libxc record of type `rtype` (walking the records).
fn find_record(bytes: &[u8], rtype: u32) -> Option<usize> {
    let mut at = 40;
    while at + 8 <= bytes.len() {
        let t = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if t == rtype {
            return Some(at);
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    None
}

#[test]
fn verify_json_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(dir.path(), "hvm.xl", &xl_file(&hvm_bytes(), true, true));
    let o = run(&["verify", "--json"], &good);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let s = &v["summary"];
    assert_eq!(s["format"], "xl");
    assert_eq!(s["libxc"]["domain_type"], "x86_hvm");
    assert_eq!(s["libxc"]["pages_carried"], 7);
    assert_eq!(s["libxc"]["pages_by_type"]["XTAB"], 2);
    assert_eq!(s["libxc"]["vcpus"], 1);
    assert_eq!(s["libxl"]["xenstore_pairs"], 3);

    let mut bytes = hvm_bytes();
    bytes.truncate(bytes.len() - 3);
    let bad = file(dir.path(), "cut.libxc", &bytes);
    let o = run(&["verify", "--json"], &bad);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "truncated");
    assert_eq!(v["error"]["layer"], "libxc");
    // The END record's header is cut: its index is known, its type is not.
    assert_eq!(v["error"]["record_index"], hvm_records().len() - 1);
    assert_eq!(v["error"]["record_type"], serde_json::Value::Null);
    assert_eq!(v["error"]["offset"], bytes.len() - 5);
}

#[test]
fn inspect_lists_layers_records_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "hvm.xl", &xl_file(&hvm_bytes(), true, true));
    let o = run(&["inspect"], &p);
    assert!(o.status.success(), "{}", stdout(&o));
    let out = stdout(&o);
    for want in [
        "save-file header",
        "LIBXC_CONTEXT",
        "image header",
        "version 3",
        "x86 HVM, page shift 12, Xen 4.17",
        "STATIC_DATA_END",
        "pfns 0x0-0xfeff0, 4 entries (NOTAB 4), 4 pages",
        "pfns 0xa0-0x100000, 3 entries (NOTAB 1, XTAB 2), 1 pages",
        "EMULATOR_XENSTORE_DATA",
        "physmap/f0000000/name=\"vga.vram\"",
        "EMULATOR_CONTEXT",
        "pages by type   NOTAB 7, XTAB 2",
        "pages carried   7",
        "HVM context     ",
        "CPU(2) x1",
        "PIC(3) x2",
        "STORE_PFN(1)=0xfeffc",
        "vCPUs           1",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn inspect_json_is_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "pv.libxc", &pv_bytes());
    let o = run(&["inspect", "--json"], &p);
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 2 headers + 21 records + summary.
    assert_eq!(lines.len(), 2 + pv_records().len() + 1);
    let pd: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "PAGE_DATA").collect();
    assert_eq!(pd.len(), 3);
    assert_eq!(pd[0]["entries"], 9);
    assert_eq!(pd[0]["pages"], 6);
    assert_eq!(pd[0]["types"]["L4TAB|PIN"], 1);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(last["summary"]["libxc"]["vcpus"], 2);
    assert_eq!(last["summary"]["libxc"]["pv_info"]["guest_width"], 8);
    assert_eq!(last["summary"]["libxc"]["p2m_frames"]["frames"], 4);
}

#[test]
fn stdin_works_and_garbage_is_refused() {
    let mut child = bin()
        .args(["verify", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&hvm_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stdout(&o));

    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "junk", b"LinuxGuestRecord and more");
    let o = run(&["verify"], &p);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("not a Xen migration stream"),
        "{}",
        stdout(&o)
    );

    let o = run(&["verify"], &dir.path().join("missing"));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn trailing_bytes_after_end_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = xl_file(&pv_bytes(), false, false);
    let end = bytes.len();
    bytes.extend_from_slice(b"junk");
    let p = file(dir.path(), "tail.xl", &bytes);
    let o = run(&["verify"], &p);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains(&format!(
            "at offset {end:#x}: 4 bytes of trailing data after END"
        )),
        "{}",
        stdout(&o)
    );
}
