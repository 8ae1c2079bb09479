//! `rxmigrate migrate` / `receive` / `save` / `restore` run as a user runs
//! them: two simulated hosts, the binary, the stats file, the oracle.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn rx(host: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rxmigrate"));
    c.arg("--hv").arg(format!("sim:{}", host.display()));
    c
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Destroys whatever is left on a host when the test ends.
struct Host(tempfile::TempDir);
impl Host {
    fn new() -> Self {
        Host(tempfile::tempdir().unwrap())
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}
impl Drop for Host {
    fn drop(&mut self) {
        let Ok(o) = rx(self.path()).args(["sim", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&o.stdout).lines().skip(1) {
            if let Some(id) = line.split_whitespace().next() {
                let _ = rx(self.path()).args(["sim", "destroy", id]).output();
            }
        }
    }
}

fn create(h: &Host, name: &str, ty: &str) {
    ok(
        rx(h.path())
            .args(["sim", "create", "--name", name, "--type", ty, "--mem", "32"])
            .args(["--workload", "hot-set", "--seed", "3", "--rate", "0"])
            .output()
            .unwrap(),
        "sim create",
    );
}

fn check(h: &Host, name: &str) {
    let out = ok(
        rx(h.path()).args(["sim", "check", name]).output().unwrap(),
        "sim check",
    );
    assert!(out.contains("matches the reference"), "{out}");
}

/// Host keys for a sender `a` and a receiver `b` that trust each other (b
/// authorizes a's key, a pins b's for 127.0.0.1); their key directories.
fn trust(a: &Host, b: &Host) -> (PathBuf, PathBuf) {
    let keygen = |h: &Host| {
        let dir = h.path().join("keys");
        let line = ok(
            rx(h.path())
                .arg("keygen")
                .arg("--key-dir")
                .arg(&dir)
                .output()
                .unwrap(),
            "keygen",
        );
        (dir, line.split_whitespace().next().unwrap().to_string())
    };
    let ((da, ka), (db, kb)) = (keygen(a), keygen(b));
    std::fs::write(db.join("authorized_peers"), format!("{ka}\n")).unwrap();
    std::fs::write(da.join("known_hosts"), format!("127.0.0.1 {kb}\n")).unwrap();
    (da, db)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn migrate_over_tcp_to_a_receiver_writes_round_stats_with_the_hot_set() {
    let (a, b) = (Host::new(), Host::new());
    create(&a, "web", "pv");
    let (ka, kb) = trust(&a, &b);
    let port = free_port();
    // Encrypted and authenticated: TCP's default.
    let mut recv = rx(b.path())
        .args(["receive", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--key-dir")
        .arg(&kb)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stats = a.path().join("stats.jsonl");
    // The receiver may take a moment to listen.
    let mut out = None;
    for _ in 0..50 {
        let o = rx(a.path())
            .args(["migrate", "web", &format!("127.0.0.1:{port}")])
            .args(["--policy", "hotpage", "--bandwidth", "1G", "--stats"])
            .arg(&stats)
            .arg("--key-dir")
            .arg(&ka)
            .output()
            .unwrap();
        let refused = String::from_utf8_lossy(&o.stderr).contains("Connection refused");
        if !refused {
            out = Some(o);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ok(out.expect("receiver never listened"), "migrate");
    assert!(recv.wait().unwrap().success(), "receiver failed");
    check(&b, "web");
    let list = ok(rx(a.path()).args(["sim", "list"]).output().unwrap(), "list");
    assert!(!list.contains("web"), "source still there:\n{list}");

    let text = std::fs::read_to_string(&stats).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rounds: Vec<_> = lines.iter().filter_map(|l| l.get("round")).collect();
    let summary = lines.last().unwrap()["summary"].clone();
    assert!(rounds.len() >= 2, "{text}");
    assert!(rounds.len() <= 6, "hotpage passed 5 live rounds: {text}");
    assert_eq!(summary["rounds"].as_u64().unwrap() as usize, rounds.len());
    assert_eq!(summary["policy"], "hotpage");
    assert_eq!(rounds.last().unwrap()["last"], true);
    assert_eq!(rounds[0]["dirty_pages"], summary["guest_pages"]);
    let sent: u64 = rounds
        .iter()
        .map(|r| r["pages_sent"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, summary["total_pages_sent"].as_u64().unwrap());
    // A hot-set workload at full speed builds a hot set that waits for the
    // final round.
    let max_hot = rounds
        .iter()
        .map(|r| r["hot_pages"].as_u64().unwrap())
        .max();
    assert!(max_hot.unwrap() > 0, "no hot set seen: {text}");
}

#[test]
fn migrate_through_a_command_as_xl_migrate_s() {
    let (a, b) = (Host::new(), Host::new());
    create(&a, "db", "hvm");
    // -s "": the host string is the receiver command, talked to over its
    // stdin/stdout.
    let receiver = format!(
        "{} --hv sim:{} receive",
        env!("CARGO_BIN_EXE_rxmigrate"),
        b.path().display()
    );
    ok(
        rx(a.path())
            .args(["migrate", "db", &receiver, "-s", "", "--policy", "xen4"])
            .output()
            .unwrap(),
        "migrate -s",
    );
    check(&b, "db");
}

#[test]
fn save_then_restore_from_the_command_line() {
    let (a, b) = (Host::new(), Host::new());
    create(&a, "s1", "pv");
    let img = a.path().join("s1.img");
    ok(
        rx(a.path())
            .args(["save", "s1"])
            .arg(&img)
            .arg("--live")
            .output()
            .unwrap(),
        "save",
    );
    let v = ok(
        rx(a.path()).arg("verify").arg(&img).output().unwrap(),
        "verify",
    );
    assert!(v.contains("xl save file"), "{v}");
    let id = ok(
        rx(b.path()).arg("restore").arg(&img).output().unwrap(),
        "restore",
    );
    assert!(id.trim().parse::<u32>().is_ok(), "restore printed {id:?}");
    check(&b, "s1");

    // A bare libxc stream needs --raw; read without it, a clear error and no
    // domain.
    let raw = a.path().join("s1.raw");
    create(&a, "s2", "pv");
    ok(
        rx(a.path())
            .args(["save", "s2", "--raw"])
            .arg(&raw)
            .output()
            .unwrap(),
        "save --raw",
    );
    let o = rx(b.path()).arg("restore").arg(&raw).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--raw") || err.contains("xl"), "{err}");
    let list = ok(rx(b.path()).args(["sim", "list"]).output().unwrap(), "list");
    assert_eq!(list.lines().count(), 2, "{list}"); // header + s1
    ok(
        rx(b.path())
            .args(["restore", "--raw", "--name", "s2"])
            .arg(&raw)
            .output()
            .unwrap(),
        "restore --raw",
    );
    check(&b, "s2");
}
