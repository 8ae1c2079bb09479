//! The helper's edges, as libxl meets them: bad command lines, streams it
//! hands to the stock helper (exec'd in place with the same argv and fds),
//! hosts without a usable backend, a bad stream fd.

mod libxl_side;

use libxl_side::*;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

fn run_bad(args: &[&str]) -> (Option<i32>, String, Vec<u8>) {
    let out = Command::new(HELPER)
        .args(args)
        .env("RXMIGRATE_CONF", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("run helper");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.stdout,
    )
}

#[test]
fn bad_command_lines_fail_with_a_clear_error_and_no_protocol_bytes() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "no mode given"),
        (&["--save"], "unknown mode \"--save\""),
        // Xen 4.10-4.13 argv (with `hvm`): one argument too many.
        (
            &["--save-domain", "7", "8", "3", "1", "0", "136", "0"],
            "--save-domain takes 6 arguments (io_fd recv_fd domid xcflags cbflags stream_type",
        ),
        (
            &[
                "--restore-domain",
                "5",
                "-1",
                "4",
                "1",
                "0",
                "2",
                "0",
                "768",
            ],
            "--restore-domain takes 9 arguments",
        ),
        (
            &["--save-domain", "7", "8", "dom0", "1", "136", "0"],
            "argument 3 (domid): \"dom0\" is not a decimal number",
        ),
        (
            &[
                "--restore-domain",
                "5",
                "-1",
                "4",
                "1",
                "0",
                "2",
                "0",
                "768",
                "3",
            ],
            "argument 9 (stream_type)",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr, stdout) = run_bad(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
        assert!(
            stdout.is_empty(),
            "{args:?}: wrote {} bytes to libxl",
            stdout.len()
        );
    }
}

/// A stand-in for Xen's helper: records its argv and writes a marker on the
/// stream fd it was given, proving the fd arrived open and untouched.
fn fake_stock(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("libxl-save-helper.stock");
    std::fs::write(
        &p,
        // /proc/self/fd/N, not `>&N`: dash takes only one-digit fds there.
        "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > \"$STOCK_ARGV\"\nprintf stock-stream > /proc/self/fd/$2\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// What a handover run produced.
struct Handover {
    /// argv the stock helper saw (empty if it did not run).
    argv: Vec<String>,
    /// What arrived on the stream fd.
    stream: Vec<u8>,
    logs: Vec<(u32, String)>,
    code: Option<i32>,
    stderr: String,
}

/// Run the helper where it may hand over to a fake stock helper.
fn handover(mode: &str, tail: &[&str], env: &[(&str, String)], with_stock_env: bool) -> Handover {
    let d = tempfile::tempdir().unwrap();
    let stock = fake_stock(d.path());
    let argv_file = d.path().join("argv");
    let (r, w) = pipe();
    let mut args = vec![mode.to_string(), w.as_raw_fd().to_string(), "-1".into()];
    args.extend(tail.iter().map(|s| s.to_string()));
    let mut envs: Vec<(&str, String)> = vec![("STOCK_ARGV", argv_file.display().to_string())];
    if with_stock_env {
        envs.push(("RXMIGRATE_STOCK_HELPER", stock.display().to_string()));
    }
    envs.extend(env.iter().cloned());
    let mut h = spawn(&args, &[w.as_raw_fd()], &envs);
    drop(w);
    let stream = drain(r);
    // Before an exec only `log` comes; without one, `complete` ends the run.
    while let Some(m) = h.next() {
        if let Msg::Complete { .. } = m {
            h.reply(0);
            break;
        }
    }
    let (code, stderr, received) = h.wait();
    let argv = std::fs::read_to_string(&argv_file)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect::<Vec<_>>();
    let mut want = vec![stock.display().to_string()];
    want.extend(args);
    if !argv.is_empty() {
        assert_eq!(
            argv, want,
            "the stock helper must get libxl's argv unchanged"
        );
    }
    Handover {
        argv,
        stream: stream.join().unwrap(),
        logs: logs(&received),
        code,
        stderr,
    }
}

#[test]
fn remus_colo_and_debug_streams_go_to_the_stock_helper() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("--save-domain", &["3", "1", "184", "1"], "Remus"),
        ("--save-domain", &["3", "1", "248", "2"], "COLO"),
        ("--save-domain", &["3", "3", "136", "0"], "VERIFY"),
        (
            "--restore-domain",
            &["4", "1", "0", "2", "0", "768", "2"],
            "COLO",
        ),
    ];
    for (mode, tail, why) in cases {
        let Handover {
            argv,
            stream,
            logs,
            code,
            stderr,
        } = handover(mode, tail, &[], true);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            !argv.is_empty(),
            "{mode} {tail:?}: stock helper not run; {logs:?} {stderr}"
        );
        assert_eq!(
            stream, b"stock-stream",
            "the stream fd must reach the stock helper untouched"
        );
        assert!(
            logs.iter().any(|(l, t)| *l == 5
                && t.contains(why)
                && t.contains("handing over to the stock helper")),
            "{logs:?}"
        );
    }
}

#[test]
fn without_a_usable_backend_the_stock_helper_takes_over() {
    // No Xen backend in this build: `xen` is unavailable.
    let Handover {
        argv,
        stream,
        logs,
        code,
        ..
    } = handover(
        "--save-domain",
        &["3", "1", "136", "0"],
        &[("RXMIGRATE_HV", "xen".into())],
        true,
    );
    assert_eq!(code, Some(0));
    assert!(!argv.is_empty());
    assert_eq!(stream, b"stock-stream");
    assert!(
        logs.iter()
            .any(|(l, t)| *l == 7 && t.contains("cannot use hypervisor \"xen\"")),
        "{logs:?}"
    );

    // fallback = fail: a clear failure through `complete` instead.
    let Handover {
        argv,
        stream,
        logs,
        code,
        ..
    } = handover(
        "--save-domain",
        &["3", "1", "136", "0"],
        &[
            ("RXMIGRATE_HV", "xen".into()),
            ("RXMIGRATE_FALLBACK", "fail".into()),
        ],
        true,
    );
    assert_eq!(code, Some(0));
    assert!(argv.is_empty(), "stock helper ran despite fallback = fail");
    assert!(stream.is_empty());
    assert!(
        logs.iter()
            .any(|(l, t)| *l == 8 && t.contains("hypervisor")),
        "{logs:?}"
    );
}

#[test]
fn missing_stock_helper_is_reported_through_complete() {
    let Handover {
        argv, logs, code, ..
    } = handover(
        "--save-domain",
        &["3", "1", "184", "1"],
        &[(
            "RXMIGRATE_STOCK_HELPER",
            "/nonexistent/libxl-save-helper".into(),
        )],
        false,
    );
    assert_eq!(code, Some(0));
    assert!(argv.is_empty());
    assert!(
        logs.iter()
            .any(|(l, t)| *l == 8 && t.contains("/nonexistent/libxl-save-helper")),
        "{logs:?}"
    );
}

#[test]
fn failures_reach_libxl_as_log_and_complete() {
    let d = tempfile::tempdir().unwrap();
    let sim = format!("sim:{}", d.path().display());
    // fd 250 is not open; domain 1 does not exist either.
    let mut h = spawn(
        &["--save-domain", "250", "-1", "1", "1", "136", "0"].map(String::from),
        &[],
        &[("RXMIGRATE_HV", sim.clone())],
    );
    let mut complete = None;
    while let Some(m) = h.next() {
        if let Msg::Complete { retval, errnoval } = m {
            h.reply(0);
            complete = Some((retval, errnoval));
            break;
        }
    }
    let (code, _, received) = h.wait();
    assert_eq!(code, Some(0));
    let (retval, errnoval) = complete.expect("complete");
    assert_eq!(retval, -1);
    assert!(errnoval > 0);
    let errs: Vec<String> = logs(&received)
        .into_iter()
        .filter(|(l, _)| *l == 8)
        .map(|x| x.1)
        .collect();
    assert!(errs.iter().any(|t| t.contains("io_fd 250")), "{errs:?}");

    // A bad setting names where it is; restore still sends its results first.
    let (r, w) = pipe();
    let mut h = spawn(
        &[
            "--restore-domain",
            &r.as_raw_fd().to_string(),
            "-1",
            "1",
            "1",
            "0",
            "2",
            "0",
            "768",
            "0",
        ]
        .map(String::from),
        &[r.as_raw_fd()],
        &[
            ("RXMIGRATE_HV", sim),
            ("RXMIGRATE_MAX_ROUNDS", "lots".into()),
        ],
    );
    drop(w);
    let mut seen = Vec::new();
    while let Some(m) = h.next() {
        let done = matches!(m, Msg::Complete { .. });
        seen.push(m);
        if done {
            h.reply(0);
            break;
        }
    }
    let (code, _, received) = h.wait();
    assert_eq!(code, Some(0));
    let n = seen.len();
    assert_eq!(
        seen[n - 2],
        Msg::RestoreResults {
            store: 0,
            console: 0
        }
    );
    assert!(matches!(seen[n - 1], Msg::Complete { retval: -1, .. }));
    assert!(
        logs(&received)
            .iter()
            .any(|(_, t)| t.contains("environment RXMIGRATE_MAX_ROUNDS") && t.contains("lots")),
        "{received:?}"
    );
    let mut rest = Vec::new();
    std::fs::File::from(r).read_to_end(&mut rest).unwrap();
}

/// Run a save of a domain that does not exist on an empty simulated host
/// with `env`; the `complete` it reports and its error-level log lines.
fn failed_save(env: &[(&str, String)]) -> ((i32, i32), Vec<String>) {
    let d = tempfile::tempdir().unwrap();
    let (r, w) = pipe();
    let mut envs = vec![("RXMIGRATE_HV", format!("sim:{}", d.path().display()))];
    envs.extend(env.iter().cloned());
    let mut h = spawn(
        &[
            "--save-domain".to_string(),
            w.as_raw_fd().to_string(),
            "-1".into(),
            "7".into(),
            "0".into(),
            "136".into(),
            "0".into(),
        ],
        &[w.as_raw_fd()],
        &envs,
    );
    drop(w);
    let stream = drain(r);
    let mut complete = None;
    while let Some(m) = h.next() {
        if let Msg::Complete { retval, errnoval } = m {
            h.reply(0);
            complete = Some((retval, errnoval));
            break;
        }
    }
    let (code, stderr, received) = h.wait();
    assert_eq!(code, Some(0), "{stderr}");
    stream.join().unwrap();
    let errors = logs(&received)
        .into_iter()
        .filter(|(l, _)| *l == 8)
        .map(|x| x.1)
        .collect();
    (complete.expect("complete"), errors)
}

#[test]
fn a_stock_helper_others_can_write_is_not_executed() {
    let d = tempfile::tempdir().unwrap();
    let stock = fake_stock(d.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stock, std::fs::Permissions::from_mode(0o775)).unwrap();
    let Handover {
        argv, logs, code, ..
    } = handover(
        "--save-domain",
        &["3", "1", "184", "1"],
        &[("RXMIGRATE_STOCK_HELPER", stock.display().to_string())],
        false,
    );
    assert_eq!(code, Some(0));
    assert!(argv.is_empty(), "a group-writable helper was executed");
    assert!(
        logs.iter().any(|(l, t)| *l == 8
            && t.contains("refusing to execute the stock helper")
            && t.contains("writable by group or others (mode 0775)")),
        "{logs:?}"
    );
}

#[test]
fn a_settings_file_others_can_write_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("rxmigrate.conf");
    std::fs::write(&conf, "policy = xen4\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ((retval, errnoval), errors) =
        failed_save(&[("RXMIGRATE_CONF", conf.display().to_string())]);
    assert_eq!((retval, errnoval), (-1, libc::EINVAL));
    assert!(
        errors
            .iter()
            .any(|t| t.contains(&conf.display().to_string())
                && t.contains("refused: it is writable by group or others")),
        "{errors:?}"
    );
}

#[test]
fn a_stats_file_behind_a_link_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("created-through-the-link");
    let link = d.path().join("stats.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let ((retval, errnoval), errors) =
        failed_save(&[("RXMIGRATE_STATS", link.display().to_string())]);
    assert_eq!((retval, errnoval), (-1, libc::EPERM));
    assert!(
        errors
            .iter()
            .any(|t| t.contains("stats file") && t.contains("is a symbolic link")),
        "{errors:?}"
    );
    assert!(!target.exists(), "the link was followed");
}
