//! The helper driven as libxl drives it, on the simulated host: a live save
//! and a restore of PV and HVM guests through the helper protocol, checked
//! byte for byte, the stream checked by rxmigrate's reader, the fd checked
//! for exactness, and the restored guest's RAM against a reference run.

mod libxl_side;

use libxl_side::*;
use rxmigrate::hv::sim::{check, GuestConfig, SimHost, WorkloadKind};
use rxmigrate::hv::{DomainSpec, GuestType, Hypervisor, ShutdownReason, Toolstack};
use rxmigrate::stream::{DomainType, LibxcReader};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

/// What libxl writes after the libxc stream on a restore fd (here: a libxl
/// END record, type 0 length 0, plus a marker): the helper must leave it.
const TRAILER: &[u8] = b"\0\0\0\0\0\0\0\0after-the-libxc-stream";

struct Saved {
    stream: Vec<u8>,
    received: Vec<Received>,
    step: u64,
    /// The JSON lines of RXMIGRATE_STATS.
    stats: Vec<serde_json::Value>,
}

/// `xl migrate`'s sender side (or `xl save`'s with `xcflags` 0): run
/// `--save-domain` on `dom`, answering
/// suspend by suspending the guest, as libxl does.
fn save(host: &SimHost, dom: u32, policy: &str, xcflags: u32) -> Saved {
    let (r, w) = pipe();
    let null = devnull();
    let stats_dir = tempfile::tempdir().expect("tempdir");
    let stats_file = stats_dir.path().join("stats.jsonl");
    let args: Vec<String> = [
        "--save-domain".to_string(),
        w.as_raw_fd().to_string(),
        null.as_raw_fd().to_string(),
        dom.to_string(),
        xcflags.to_string(), // 1: XCFLAGS_LIVE (xl migrate), 0: xl save
        "136".into(),        // suspend | switch_qemu_logdirty
        "0".into(),
    ]
    .to_vec();
    let mut h = spawn(
        &args,
        &[w.as_raw_fd(), null.as_raw_fd()],
        &[
            ("RXMIGRATE_HV", format!("sim:{}", host.dir().display())),
            ("RXMIGRATE_POLICY", policy.to_string()),
            ("RXMIGRATE_STATS", stats_file.display().to_string()),
        ],
    );
    drop(w);
    drop(null);
    let stream = drain(r);
    let mut step = 0;
    loop {
        let Some(m) = h.next() else {
            panic!("helper stdout ended before complete; logs: {:?}", h.logs())
        };
        match m {
            Msg::Suspend => {
                host.suspend(dom).expect("suspend as libxl would");
                step = host.step(dom).expect("step");
                h.reply(1);
            }
            Msg::SwitchQemuLogdirty { domid, .. } => {
                assert_eq!(domid, dom);
                h.reply(0);
            }
            Msg::Complete { .. } => {
                h.reply(0);
                break;
            }
            Msg::Log { .. } | Msg::Progress { .. } => {}
            other => panic!("unexpected message in a save: {other:?}"),
        }
    }
    let (code, stderr, received) = h.wait();
    assert_eq!(code, Some(0), "helper exit; stderr: {stderr}");
    let stats = std::fs::read_to_string(&stats_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("stats line is JSON"))
        .collect();
    Saved {
        stream: stream.join().expect("stream reader"),
        received,
        step,
        stats,
    }
}

struct Restored {
    received: Vec<Received>,
    after: Vec<u8>,
    code: Option<i32>,
    stderr: String,
    /// The JSON lines of RXMIGRATE_STATS.
    stats: Vec<serde_json::Value>,
}

/// `xl migrate-receive`'s side: run `--restore-domain` into the domain libxl
/// built, feeding the stream and what libxl has after it.
fn restore(host: &SimHost, dom: u32, stream: Vec<u8>, static_reply: i32) -> Restored {
    let (r, w) = pipe();
    let stats_dir = tempfile::tempdir().expect("tempdir");
    let stats_file = stats_dir.path().join("stats.jsonl");
    let args: Vec<String> = [
        "--restore-domain".to_string(),
        r.as_raw_fd().to_string(),
        "-1".into(),
        dom.to_string(),
        "1".into(), // store evtchn
        "0".into(),
        "2".into(), // console evtchn
        "0".into(),
        "768".into(), // static_data_done | restore_results
        "0".into(),
    ]
    .to_vec();
    let mut h = spawn(
        &args,
        &[r.as_raw_fd()],
        &[
            ("RXMIGRATE_HV", format!("sim:{}", host.dir().display())),
            ("RXMIGRATE_STATS", stats_file.display().to_string()),
        ],
    );
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::from(w);
        // The helper may stop reading early on a failure: ignore EPIPE.
        let _ = f.write_all(&stream).and_then(|()| f.write_all(TRAILER));
    });
    loop {
        let Some(m) = h.next() else {
            panic!("helper stdout ended before complete; logs: {:?}", h.logs())
        };
        match m {
            Msg::StaticDataDone { .. } => h.reply(static_reply),
            Msg::Complete { .. } => {
                h.reply(0);
                break;
            }
            Msg::Log { .. } | Msg::Progress { .. } | Msg::RestoreResults { .. } => {}
            other => panic!("unexpected message in a restore: {other:?}"),
        }
    }
    let (code, stderr, received) = h.wait();
    // The helper is gone: what is left in the pipe (read before joining, so
    // a writer stuck on a full pipe after a failure gets unstuck) is what it
    // did not read.
    let mut after = Vec::new();
    std::fs::File::from(r)
        .read_to_end(&mut after)
        .expect("rest of the fd");
    writer.join().expect("writer");
    let stats = std::fs::read_to_string(&stats_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("stats line is JSON"))
        .collect();
    Restored {
        received,
        after,
        code,
        stderr,
        stats,
    }
}

fn guest(name: &str, t: GuestType) -> GuestConfig {
    let mut c = GuestConfig::new(name, t, 16, WorkloadKind::HotSet);
    c.seed = 11;
    c.rate = 0; // as fast as it can: the hardest case for pre-copy
    c.paused = true;
    c
}

static EXE: std::sync::Once = std::sync::Once::new();

fn new_host() -> (tempfile::TempDir, SimHost) {
    // Sim guests started from this process run the rxmigrate binary.
    EXE.call_once(|| std::env::set_var("RXMIGRATE_EXE", rxmigrate_exe()));
    let d = tempfile::tempdir().expect("tempdir");
    let h = SimHost::open(d.path()).expect("sim host");
    (d, h)
}

fn ne32(v: u32) -> [u8; 4] {
    v.to_ne_bytes()
}

/// The whole stream parses, ends with END, and nothing follows it.
fn check_stream(stream: &[u8], t: GuestType) -> u64 {
    let mut input = stream;
    let mut r = LibxcReader::new(&mut input).expect("libxc headers");
    let want = match t {
        GuestType::Pv => DomainType::X86Pv,
        GuestType::Hvm => DomainType::X86Hvm,
    };
    assert_eq!(r.domain_header().domain_type, want);
    let mut records = 0;
    while let Some(_rec) = r.next_record().expect("record") {
        records += 1;
        if r.at_end() {
            break;
        }
    }
    assert!(r.at_end(), "stream without END");
    assert_eq!(
        r.offset(),
        stream.len() as u64,
        "bytes after the libxc END record"
    );
    records
}

fn save_then_restore(t: GuestType, live: bool) {
    let (_da, a) = new_host();
    let (_db, b) = new_host();
    let mut src = Doms {
        host: &a,
        ids: vec![],
    };
    let dom = a.create_guest(&guest("web", t)).expect("create");
    src.ids.push(dom);
    a.run_until(dom, 2000).expect("warm up");
    a.unpause(dom).expect("run");
    let info = a.domain_info(dom).expect("info");
    let config = Some(a.domain_config(dom).expect("config"));
    let params = match t {
        GuestType::Hvm => Some((a.hvm_param(dom, 1).unwrap(), a.hvm_param(dom, 17).unwrap())),
        GuestType::Pv => None,
    };

    let s = save(&a, dom, "hotpage", u32::from(live));
    let msgs: Vec<&Msg> = s.received.iter().map(|r| &r.msg).collect();

    // Suspend: exactly once, the four bytes of the reference.
    let susp: Vec<usize> = (0..msgs.len())
        .filter(|&i| *msgs[i] == Msg::Suspend)
        .collect();
    assert_eq!(susp.len(), 1, "{msgs:?}");
    assert_eq!(s.received[susp[0]].raw, [2, 0, 3, 0]);
    // QEMU's dirty tracking: HVM only, on before the suspend, off after it.
    let qemu: Vec<(usize, &Received)> = s
        .received
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.msg, Msg::SwitchQemuLogdirty { .. }))
        .collect();
    match t {
        GuestType::Pv => assert!(qemu.is_empty(), "{qemu:?}"),
        GuestType::Hvm => {
            assert_eq!(qemu.len(), 2, "{qemu:?}");
            let mut on = vec![10, 0, 7, 0];
            on.extend_from_slice(&ne32(dom));
            on.extend_from_slice(&ne32(1));
            let mut off = on.clone();
            off[8..].copy_from_slice(&ne32(0));
            assert_eq!(qemu[0].1.raw, on);
            assert_eq!(qemu[1].1.raw, off);
            assert!(qemu[0].0 < susp[0] && susp[0] < qemu[1].0);
        }
    }
    // complete(0, 0) last.
    let last = s.received.last().expect("messages");
    assert_eq!(last.raw, [10, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Logs: well formed (checked by the reader), and the per-round stats of
    // the hot-page policy reach libxl.
    let logs = logs(&s.received);
    eprintln!("helper log for the {t} save: {logs:#?}");
    assert!(logs.iter().all(|(l, _)| (1..=9).contains(l)), "{logs:?}");
    let rounds = logs.iter().filter(|(_, t)| t.starts_with("round ")).count();
    assert!(logs
        .iter()
        .any(|(_, t)| t.contains("round") && t.contains("(final)")));
    if live {
        assert!(
            logs.iter().any(|(_, t)| t.contains("policy hotpage")),
            "{logs:?}"
        );
        assert!(
            (2..=6).contains(&rounds),
            "live rounds plus the final one: {logs:?}"
        );
        assert!(
            logs.iter()
                .any(|(_, t)| t.starts_with("save done, hotpage:")),
            "{logs:?}"
        );
    } else {
        assert!(
            logs.iter().any(|(_, t)| t.starts_with("non-live save")),
            "{logs:?}"
        );
        assert_eq!(
            rounds, 1,
            "a non-live save is one stop-and-copy round: {logs:?}"
        );
    }
    assert!(s
        .received
        .iter()
        .any(|r| matches!(r.msg, Msg::Progress { .. })));
    // The stats file: a line per round, then the summary.
    let (last, round_lines) = s.stats.split_last().expect("stats lines");
    assert_eq!(round_lines.len(), rounds);
    assert!(round_lines
        .iter()
        .all(|l| l["round"]["pages_sent"].is_u64()));
    let policy = if live { "hotpage" } else { "non-live" };
    assert_eq!(last["summary"]["policy"], policy, "{last}");
    assert_eq!(last["summary"]["total_bytes"], s.stream.len() as u64);

    // The stream: one whole libxc stream, nothing more.
    let records = check_stream(&s.stream, t);
    assert!(records > 5);
    // As after libxc's save: the guest is suspended, libxl decides its fate.
    let after = a.domain_info(dom).expect("source");
    assert_eq!(after.shutdown, Some(ShutdownReason::Suspend));
    assert!(s.step >= 2000);

    // The receiving libxl has built an empty domain from the config.
    let mut dst = Doms {
        host: &b,
        ids: vec![],
    };
    let nd = b
        .build_domain(&DomainSpec {
            name: "web--incoming".into(),
            guest_type: t,
            // As libxl: the guest's memory size (an HVM P2M spans holes).
            max_pfn: a.meta(dom).expect("meta").pages() - 1,
            max_vcpu_id: info.max_vcpu_id,
            config,
        })
        .expect("build the domain")
        .domid;
    dst.ids.push(nd);
    let r = restore(&b, nd, s.stream.clone(), 0);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.after, TRAILER, "the helper read past END");
    let msgs: Vec<&Msg> = r.received.iter().map(|x| &x.msg).collect();
    // static_data_done once (the stream has both CPU policies: missing 0).
    let sdd: Vec<&Received> = r
        .received
        .iter()
        .filter(|x| matches!(x.msg, Msg::StaticDataDone { .. }))
        .collect();
    assert_eq!(sdd.len(), 1, "{msgs:?}");
    assert_eq!(sdd[0].raw, [6, 0, 8, 0, 0, 0, 0, 0]);
    // restore_results, then complete(0, 0), at the end.
    let n = r.received.len();
    assert!(n >= 2);
    let Msg::RestoreResults { store, console } = r.received[n - 2].msg.clone() else {
        panic!("restore_results must come right before complete: {msgs:?}")
    };
    assert_eq!(r.received[n - 2].raw.len(), 2 + 2 + 16);
    assert_eq!(
        r.received[n - 1].raw,
        [10, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // libxl unpauses the guest; it runs on from where it was suspended.
    let info = b.domain_info(nd).expect("restored");
    assert!(info.paused, "the helper must leave the domain paused");
    b.run_until(nd, s.step + 500).expect("runs on");
    match params {
        Some((s_pfn, c_pfn)) => assert_eq!((store, console), (s_pfn, c_pfn)),
        None => {
            // PV: machine frames of the new domain.
            let p2m = b.pv_p2m(nd).expect("p2m").p2m;
            assert!(store != console && p2m.contains(&store) && p2m.contains(&console));
        }
    }
    // Its RAM matches a reference run to the same step.
    let rep = check(&b, nd).expect("oracle");
    assert!(rep.ok(), "{rep}");
    // The restore's line in the stats file: the page data it applied.
    let [line] = r.stats.as_slice() else {
        panic!("one restore line expected: {:?}", r.stats)
    };
    let st = &line["restore"];
    assert!(st["page_records"].as_u64().unwrap() >= 1, "{line}");
    assert!(st["pages"].as_u64().unwrap() > 0, "{line}");
    assert!(st["times"]["copy_ms"].is_f64(), "{line}");
    assert!(
        libxl_side::logs(&r.received)
            .iter()
            .any(|(_, l)| l.starts_with("restore: ")),
        "the restore's times in libxl's log"
    );
}

#[test]
fn pv_guest_migrates_through_the_helper() {
    save_then_restore(GuestType::Pv, true);
}

#[test]
fn hvm_guest_migrates_through_the_helper() {
    save_then_restore(GuestType::Hvm, true);
}

#[test]
fn pv_and_hvm_guests_xl_save_and_restore_through_the_helper() {
    save_then_restore(GuestType::Pv, false);
    save_then_restore(GuestType::Hvm, false);
}

#[test]
fn restore_fails_cleanly_when_libxl_rejects_static_data() {
    let (_da, a) = new_host();
    let (_db, b) = new_host();
    let mut src = Doms {
        host: &a,
        ids: vec![],
    };
    let dom = a.create_guest(&guest("db", GuestType::Pv)).expect("create");
    src.ids.push(dom);
    let info = a.domain_info(dom).unwrap();
    let s = save(&a, dom, "xen4", 1);
    assert!(logs(&s.received)
        .iter()
        .any(|(_, t)| t.contains("policy xen4")));
    let mut dst = Doms {
        host: &b,
        ids: vec![],
    };
    let nd = b
        .build_domain(&DomainSpec {
            name: "db".into(),
            guest_type: GuestType::Pv,
            max_pfn: info.max_pfn,
            max_vcpu_id: info.max_vcpu_id,
            config: Some(a.domain_config(dom).unwrap()),
        })
        .unwrap()
        .domid;
    dst.ids.push(nd);
    let r = restore(&b, nd, s.stream, -1);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let n = r.received.len();
    // Results (zeros) still precede complete, which reports the failure.
    assert_eq!(
        r.received[n - 2].msg,
        Msg::RestoreResults {
            store: 0,
            console: 0
        }
    );
    let Msg::Complete { retval, errnoval } = r.received[n - 1].msg else {
        panic!("no complete")
    };
    assert_eq!(retval, -1);
    assert!(errnoval > 0);
    let errors: Vec<String> = logs(&r.received)
        .into_iter()
        .filter(|(l, _)| *l == 8)
        .map(|x| x.1)
        .collect();
    assert!(
        errors.iter().any(|t| t.contains("static_data_done")),
        "{errors:?}"
    );
    // The domain libxl built is libxl's to destroy: still there.
    assert!(b.domain_info(nd).is_ok());
}

/// libxl aborts a save with SIGTERM (e.g. `xl migrate` interrupted): the
/// helper must not die but fail the stream writes, unwind and report
/// through `complete`, as Xen's helper does.
#[test]
fn sigterm_during_a_save_is_reported_through_complete() {
    let (_da, a) = new_host();
    let mut src = Doms {
        host: &a,
        ids: vec![],
    };
    let dom = a
        .create_guest(&guest("abort", GuestType::Pv))
        .expect("create");
    src.ids.push(dom);
    a.unpause(dom).expect("run");
    let (r, w) = pipe();
    let args: Vec<String> = [
        "--save-domain".to_string(),
        w.as_raw_fd().to_string(),
        "-1".into(),
        dom.to_string(),
        "1".into(),
        "136".into(),
        "0".into(),
    ]
    .to_vec();
    let mut h = spawn(
        &args,
        &[w.as_raw_fd()],
        &[("RXMIGRATE_HV", format!("sim:{}", a.dir().display()))],
    );
    drop(w);
    let stream = drain(r);
    let mut complete = None;
    while let Some(m) = h.next() {
        match m {
            Msg::Suspend => {
                // The helper waits for this reply: the signal lands while
                // the final round is still to be written.
                let pid = nix::unistd::Pid::from_raw(h.child.id() as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
                a.suspend(dom).expect("suspend");
                h.reply(1);
            }
            Msg::Complete { retval, errnoval } => {
                complete = Some((retval, errnoval));
                h.reply(0);
                break;
            }
            _ => {}
        }
    }
    let (code, stderr, received) = h.wait();
    assert_eq!(
        code,
        Some(0),
        "the helper died instead of reporting: {stderr}"
    );
    assert_eq!(complete, Some((-1, libc::EBADF)));
    assert!(
        logs(&received).iter().any(|(l, _)| *l == 8),
        "no error logged: {received:?}"
    );
    // The stream stops short: no END.
    let stream = stream.join().unwrap();
    let mut input = stream.as_slice();
    let mut rd = LibxcReader::new(&mut input).expect("headers were written");
    let ended = loop {
        match rd.next_record() {
            Ok(Some(_)) if rd.at_end() => break true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break false,
        }
    };
    assert!(!ended, "a whole stream despite the abort");
}

/// The domain libxl built bounds what the stream may make the helper build:
/// a stream whose P2M runs past twice the domain's grant is refused before
/// anything is populated, and the domain stays libxl's.
#[test]
fn a_stream_larger_than_the_domain_libxl_built_is_refused() {
    let (_da, a) = new_host();
    let (_db, b) = new_host();
    let mut src = Doms {
        host: &a,
        ids: vec![],
    };
    let dom = a
        .create_guest(&guest("big", GuestType::Pv))
        .expect("create");
    src.ids.push(dom);
    let info = a.domain_info(dom).unwrap();
    let s = save(&a, dom, "xen4", 1);
    let mut dst = Doms {
        host: &b,
        ids: vec![],
    };
    // A quarter of the guest's memory granted: its pfns may reach half.
    let nd = b
        .build_domain(&DomainSpec {
            name: "big".into(),
            guest_type: GuestType::Pv,
            max_pfn: info.p2m_size() / 4 - 1,
            max_vcpu_id: info.max_vcpu_id,
            config: Some(a.domain_config(dom).unwrap()),
        })
        .unwrap()
        .domid;
    dst.ids.push(nd);
    let r = restore(&b, nd, s.stream, 0);
    let Some(Msg::Complete { retval, .. }) = r.received.last().map(|m| m.msg.clone()) else {
        panic!("no complete: {:?}", r.received)
    };
    assert_eq!(retval, -1, "{}", r.stderr);
    let errors: Vec<String> = logs(&r.received)
        .into_iter()
        .filter(|(l, _)| *l == 8)
        .map(|x| x.1)
        .collect();
    let want = format!(
        "X86_PV_P2M_FRAMES end_pfn is {:#x}, beyond the highest pfn",
        info.max_pfn
    );
    assert!(errors.iter().any(|t| t.contains(&want)), "{errors:?}");
    // Log lines carry no errno (-1): libxl would print ": Success" after 0.
    for m in &r.received {
        if let Msg::Log { errnoval, .. } = m.msg {
            assert_eq!(errnoval, u32::MAX, "{:?}", m.msg);
        }
    }
    assert!(b.domain_info(nd).is_ok());
}
