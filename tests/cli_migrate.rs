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
    let recv_stats = b.path().join("recv.jsonl");
    let receiver = format!(
        "{} --hv sim:{} receive --stats {}",
        env!("CARGO_BIN_EXE_rxmigrate"),
        b.path().display(),
        recv_stats.display()
    );
    let stats = a.path().join("stats.jsonl");
    ok(
        rx(a.path())
            .args(["migrate", "db", &receiver, "-s", "", "--policy", "xen4"])
            .arg("--stats")
            .arg(&stats)
            .output()
            .unwrap(),
        "migrate -s",
    );
    b.check("db");

    // Both sides on one host's monotonic clock: the receiver's marks fall
    // inside the sender's pause, in the order they were taken.
    let last = |path: &std::path::Path, key: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .rev()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find_map(|l| l.get(key).cloned())
            .unwrap_or_else(|| panic!("no {key} line in {}:\n{text}", path.display()))
    };
    let summary = last(&stats, "summary");
    let restore = last(&recv_stats, "restore");
    let start = summary["suspended_ms"].as_f64().unwrap();
    let end = start + summary["downtime_ms"].as_f64().unwrap();
    assert!(start > 0.0, "{summary}");
    let marks: Vec<(&str, f64)> = restore["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["what"].as_str().unwrap(), m["at_ms"].as_f64().unwrap()))
        .collect();
    let names: Vec<&str> = marks.iter().map(|m| m.0).collect();
    for want in ["rx:end_record", "rx:hvm_context", "rx:unpause"] {
        assert!(names.contains(&want), "{want} missing: {restore}");
    }
    assert!(
        marks.windows(2).all(|w| w[0].1 <= w[1].1),
        "marks out of order: {restore}"
    );
    for (what, at) in &marks {
        assert!(
            (start..=end).contains(at),
            "{what} at {at} ms, outside the sender's pause {start}..{end}"
        );
    }
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
