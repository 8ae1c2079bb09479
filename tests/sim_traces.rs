//! Recorded page-write traces as sim workloads (`trace:FILE[@Nx]`): a
//! replayed guest live-migrates and matches the oracle's reference run, and
//! a bad trace file is one error naming the file and the byte.

mod cli_util;
mod sim_util;

use rxmigrate::hv::sim::trace::{Sample, Trace};
use rxmigrate::hv::sim::{check, parse_workload, GuestConfig, SimHost, WorkloadKind};
use rxmigrate::hv::{GuestType, Hypervisor};
use rxmigrate::migrate::{self, SendOptions};
use rxmigrate::precopy;
use rxmigrate::save::DirectHooks;
use sim_util::TestHost;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;

/// A trace with the shapes real ones have: a hot run rewritten every
/// sample, a sweep, scattered writes, a quiet stretch.
fn synthetic(footprint: u32) -> Trace {
    let mut samples = Vec::new();
    for i in 0..400u32 {
        let mut pages: Vec<u32> = (0..16).collect();
        pages.extend((0..32).map(|k| 16 + (i * 32 + k) % (footprint - 16)));
        pages.extend((0..8).map(|k| (i * 7919 + k * 104_729) % footprint));
        pages.sort_unstable();
        pages.dedup();
        if i % 50 >= 45 {
            pages.clear();
        }
        samples.push(Sample { dt_us: 5000, pages });
    }
    Trace {
        footprint,
        note: "synthetic test trace".into(),
        samples,
    }
}

fn write_trace(dir: &Path, name: &str, t: &Trace) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, t.encode()).expect("write trace");
    p
}

fn trace_guest(name: &str, t: GuestType, workload: &str) -> GuestConfig {
    let (kind, spec) = parse_workload(workload).expect("parse");
    assert_eq!(kind, WorkloadKind::Trace);
    let mut c = GuestConfig::new(name, t, 16, kind);
    c.trace = spec;
    c
}

/// Live-migrate `dom` from `a` to `b` over a socket pair; the oracle must
/// pass on the destination.
fn migrate_and_check(a: &mut TestHost, b: &TestHost, dom: rxmigrate::hv::DomId, policy: &str) {
    let (s1, s2) = UnixStream::pair().expect("socketpair");
    let bdir = b.host.dir().to_path_buf();
    let recv = thread::spawn(move || {
        let host = SimHost::open(&bdir).expect("open b");
        let data = io::BufReader::new(s2.try_clone().expect("clone"));
        migrate::receive(&host, data, s2, &migrate::ReceiveOptions::default())
    });
    let mut p = precopy::by_name(policy).expect("policy");
    let mut w = s1.try_clone().expect("clone");
    migrate::send(
        &a.host,
        dom,
        s1,
        &mut w,
        SendOptions {
            policy: p.as_mut(),
            hooks: &mut DirectHooks,
            waits: Default::default(),
        },
    )
    .unwrap_or_else(|e| panic!("{policy}: send: {e}"));
    drop(w);
    a.doms.clear();
    let got = recv.join().expect("receiver").expect("receive");
    let r = check(&b.host, got.domid).expect("oracle");
    assert!(r.ok(), "{policy}: {r}");
    assert!(r.step > 0, "the guest never ran");
    b.host.destroy(got.domid).expect("destroy");
}

#[test]
fn replayed_traces_migrate_and_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    // One that fits the 16 MiB guest, one folded onto it, both sped up.
    let fits = write_trace(dir.path(), "fits.rxtrace", &synthetic(3000));
    let folded = write_trace(dir.path(), "folded.rxtrace", &synthetic(20_000));
    let cases = [
        (
            GuestType::Pv,
            format!("trace:{}", fits.display()),
            "hotpage",
        ),
        (
            GuestType::Hvm,
            format!("trace:{}@3x", fits.display()),
            "xen4",
        ),
        (
            GuestType::Pv,
            format!("trace:{}@0.5x", folded.display()),
            "xen33",
        ),
    ];
    for (t, w, pol) in cases {
        let mut a = TestHost::new();
        let b = TestHost::new();
        let dom = a.create(&trace_guest("tr", t, &w));
        // It writes: its RAM moves away from the freshly built image.
        let s0 = a.host.step(dom).expect("step");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while a.host.step(dom).expect("step") < s0 + 2000 {
            assert!(std::time::Instant::now() < deadline, "{w}: guest stuck");
            thread::sleep(std::time::Duration::from_millis(10));
        }
        migrate_and_check(&mut a, &b, dom, pol);
    }
}

/// The traces recorded in the repository replay too (they map onto a
/// 16 MiB guest folded).
#[test]
fn the_recorded_traces_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "rxtrace"));
    files.sort();
    if files.is_empty() {
        println!("skipped: no recorded traces in {}", dir.display());
        return;
    }
    for f in files {
        let (t, _) = Trace::read(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!t.note.is_empty(), "{}: no note", f.display());
        let mut a = TestHost::new();
        let b = TestHost::new();
        let dom = a.create(&trace_guest(
            "rec",
            GuestType::Pv,
            &format!("trace:{}", f.display()),
        ));
        thread::sleep(std::time::Duration::from_millis(200));
        migrate_and_check(&mut a, &b, dom, "hotpage");
    }
}

fn create_err(host: &cli_util::Host, workload: &str) -> String {
    let o = cli_util::rx(host.path())
        .args([
            "sim",
            "create",
            "--name",
            "bad",
            "--mem",
            "16",
            "--workload",
            workload,
        ])
        .output()
        .expect("run rxmigrate");
    assert!(!o.status.success(), "{workload}: created a guest");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_bad_trace_file_is_one_error_naming_the_file_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    let good = synthetic(3000).encode();
    let host = cli_util::Host::new();

    let cut = dir.path().join("cut.rxtrace");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let flipped = dir.path().join("flipped.rxtrace");
    let mut b = good.clone();
    b[40] ^= 0x10;
    std::fs::write(&flipped, &b).unwrap();
    let notrace = dir.path().join("not.rxtrace");
    std::fs::write(&notrace, b"hello").unwrap();

    for (f, what) in [
        (&cut, "file ends inside"),
        (&flipped, ""),
        (&notrace, "not a trace file"),
    ] {
        let canon = std::fs::canonicalize(f).unwrap();
        let err = create_err(&host, &format!("trace:{}", f.display()));
        assert!(
            err.contains(&format!("trace file {}: at byte ", canon.display())),
            "{err}"
        );
        assert!(err.contains(what), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
        // The bench refuses it before migrating anything.
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rxmigrate"))
            .args(["bench", "--sizes", "16M", "--repeats", "1", "--workloads"])
            .arg(format!("trace:{}", f.display()))
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .expect("run bench");
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains(&format!("trace file {}: at byte ", canon.display())),
            "{e}"
        );
    }
    let e = create_err(
        &host,
        &format!("trace:{}", dir.path().join("absent").display()),
    );
    assert!(e.contains("absent"), "{e}");
    let e = create_err(&host, &format!("trace:{}@fast", cut.display()));
    assert!(e.contains("speed"), "{e}");
}

/// The replayed guest finds its trace by path and checksum: a file changed
/// under a running guest is not silently taken for the one it ran.
#[test]
fn a_trace_changed_after_create_is_not_taken_for_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_trace(dir.path(), "t.rxtrace", &synthetic(3000));
    let mut a = TestHost::new();
    let dom = a.create(&trace_guest(
        "ch",
        GuestType::Pv,
        &format!("trace:{}", f.display()),
    ));
    thread::sleep(std::time::Duration::from_millis(100));
    let mut other = synthetic(3000);
    other.samples.reverse();
    std::fs::write(&f, other.encode()).unwrap();
    match check(&a.host, dom) {
        Ok(r) => assert!(
            !r.ok(),
            "the oracle replayed a different trace and agreed: {r}"
        ),
        Err(e) => assert!(e.to_string().contains("t.rxtrace"), "{e}"),
    }
}
