//! `rxmigrate migrate` / `receive` / `save` / `restore` run as a user runs
//! them: two simulated hosts, the binary, the stats file, the oracle.

mod cli_util;

use cli_util::{ok, rx, trust, Host, Receiver};
use std::time::Duration;

/// Hang guard for a receiver that should have finished.
const HANG: Duration = Duration::from_secs(120);

#[test]
fn migrate_over_tcp_to_a_receiver_writes_round_stats_with_the_hot_set() {
    let (a, b) = (Host::new(), Host::new());
    a.create("web", "pv");
    trust(&a, &b);
    // Encrypted and authenticated: TCP's default. The sender starts once the
    // receiver has said where it listens (it does so after binding).
    let kb = b.keys();
    let recv = Receiver::start(&b, &["--key-dir", kb.to_str().unwrap()]);
    let addr = recv.addr();
    let stats = a.path().join("stats.jsonl");
    ok(
        rx(a.path())
            .args(["migrate", "web", &addr])
            .args(["--policy", "hotpage", "--bandwidth", "1G", "--stats"])
            .arg(&stats)
            .arg("--key-dir")
            .arg(a.keys())
            .output()
            .unwrap(),
        "migrate",
    );
    let (st, log) = recv.finish(HANG);
    assert!(st.success(), "receiver failed: {st}\n{log}");
    b.check("web");
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
    a.create("db", "hvm");
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
    b.check("db");
}

#[test]
fn save_then_restore_from_the_command_line() {
    let (a, b) = (Host::new(), Host::new());
    a.create("s1", "pv");
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
    b.check("s1");

    // A bare libxc stream needs --raw; read without it, a clear error and no
    // domain.
    let raw = a.path().join("s1.raw");
    a.create("s2", "pv");
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
    b.check("s2");
}
