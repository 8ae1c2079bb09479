//! End to end on the simulated host: live migration between two hosts while
//! the workload runs, save → restore → the guest continues, cut connections
//! and corrupted streams. The oracle compares RAM bit for bit with a fresh
//! reference run to the same step.

mod sim_util;

use rxmigrate::hv::sim::{check, GuestConfig, SimHost, TrackingMode, WorkloadKind};
use rxmigrate::hv::{DomId, GuestType, Hypervisor, ShutdownReason};
use rxmigrate::migrate::{self, MigrateError, RestoreImageOptions, SendOptions};
use rxmigrate::precopy::{self, Policy};
use rxmigrate::restore::NoHooks;
use rxmigrate::save::{DirectHooks, SaveOptions};
use sim_util::TestHost;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::thread;

fn guest(name: &str, t: GuestType, w: WorkloadKind, seed: u64) -> GuestConfig {
    let mut c = GuestConfig::new(name, t, 16, w);
    c.seed = seed;
    c.rate = 0; // as fast as it can: the hardest case for pre-copy
    c
}

fn policy(name: &str) -> Box<dyn Policy> {
    precopy::by_name(name).expect("policy")
}

/// Live-migrate `dom` from `a` to `b` over a socket pair, the receiver in a
/// thread. Returns the sender's result and the receiver's.
fn migrate_pair<RW: Write + Send + 'static>(
    a: &SimHost,
    dom: DomId,
    b: &SimHost,
    policy_name: &str,
    wrap: impl FnOnce(UnixStream) -> RW,
) -> (
    Result<migrate::MigrateOutcome, MigrateError>,
    Result<rxmigrate::restore::RestoreOutcome, MigrateError>,
) {
    let (s1, s2) = UnixStream::pair().expect("socketpair");
    let bdir = b.dir().to_path_buf();
    let recv = thread::spawn(move || {
        let host = SimHost::open(&bdir).expect("open b");
        let data = io::BufReader::new(s2.try_clone().expect("clone"));
        migrate::receive(&host, data, s2, &migrate::ReceiveOptions::default())
    });
    let mut p = policy(policy_name);
    let mut rw = wrap(s1.try_clone().expect("clone"));
    let acks = s1;
    let sent = migrate::send(
        a,
        dom,
        acks,
        &mut rw,
        SendOptions {
            policy: p.as_mut(),
            hooks: &mut DirectHooks,
            waits: Default::default(),
        },
    );
    drop(rw);
    let got = recv.join().expect("receiver thread");
    (sent, got)
}

/// Let a running guest do `steps` more steps and stop there.
fn run_on(host: &SimHost, dom: DomId, steps: u64) {
    host.pause(dom).expect("pause");
    let s0 = host.step(dom).expect("step");
    host.run_until(dom, s0 + steps).expect("run on");
}

fn assert_matches_reference(host: &SimHost, dom: DomId) {
    let r = check(host, dom).expect("oracle");
    assert!(r.ok(), "{r}");
    assert!(r.step > 0, "the guest never ran");
}

#[test]
fn live_migration_every_workload_pv_and_hvm() {
    let policies = ["hotpage", "xen4", "xen33"];
    for (i, w) in WorkloadKind::ALL.into_iter().enumerate() {
        for t in [GuestType::Pv, GuestType::Hvm] {
            let mut a = TestHost::new();
            let b = TestHost::new();
            let dom = a.create(&guest("g", t, w, 100 + i as u64));
            let pol = policies[i % policies.len()];
            let (sent, got) = migrate_pair(&a.host, dom, &b.host, pol, |s| s);
            let out = sent.unwrap_or_else(|e| panic!("{w:?} {t} {pol}: {e}"));
            let got = got.unwrap_or_else(|e| panic!("{w:?} {t} receiver: {e}"));
            assert!(out.summary.rounds >= 1);
            // The source is gone, the destination runs under the old name.
            assert!(a.host.domain_info(dom).is_err(), "source still exists");
            a.doms.clear();
            let info = b.host.domain_info(got.domid).expect("destination");
            assert_eq!(info.name, "g");
            assert!(!info.paused && info.shutdown.is_none());
            assert_matches_reference(&b.host, got.domid);
            b.host.destroy(got.domid).expect("destroy");
        }
    }
}

#[test]
fn migration_with_both_tracking_modes() {
    for mode in [TrackingMode::Uffd, TrackingMode::Soft] {
        let mut a = TestHost::new();
        let b = TestHost::new();
        let mut c = guest("t", GuestType::Pv, WorkloadKind::HotSet, 9);
        c.tracking = Some(mode);
        let dom = a.create(&c);
        let (sent, got) = migrate_pair(&a.host, dom, &b.host, "hotpage", |s| s);
        sent.expect("send");
        a.doms.clear();
        let got = got.expect("receive");
        assert_matches_reference(&b.host, got.domid);
        b.host.destroy(got.domid).expect("destroy");
    }
}

/// The whole stack `migrate` / `receive --listen` use, in one process: Noise
/// over a socket pair, every read and write timed, the xl protocol inside.
#[test]
fn live_migration_through_the_encrypted_channel() {
    use rxmigrate::transport::keys::{AuthorizedPeers, Keypair, Pin};
    use rxmigrate::transport::secure;
    use rxmigrate::transport::timed::{set_nonblocking, Timed, Timeouts, Waits};
    use std::os::fd::AsFd;
    use std::time::Duration;

    for t in [GuestType::Pv, GuestType::Hvm] {
        let mut a = TestHost::new();
        let b = TestHost::new();
        let dom = a.create(&guest("n", t, WorkloadKind::HotSet, 21));
        let (sender_key, receiver_key) =
            (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let allowed = AuthorizedPeers::parse(
            std::path::Path::new("ap"),
            &format!("{}\n", sender_key.public()),
        )
        .unwrap();
        let pin = Pin {
            keys: vec![receiver_key.public()],
            source: "test".into(),
        };
        let limits = Timeouts {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(20),
            ready: Duration::from_secs(20),
            accept: None,
        };
        let (s1, s2) = UnixStream::pair().unwrap();
        for s in [&s1, &s2] {
            set_nonblocking(s.as_fd()).unwrap();
        }
        let bdir = b.host.dir().to_path_buf();
        let recv = thread::spawn(move || {
            let host = SimHost::open(&bdir).expect("open b");
            let opts = migrate::ReceiveOptions {
                waits: Waits::new(limits),
                ..Default::default()
            };
            let timed = |s: UnixStream| Timed::new(s, opts.waits.timer.clone(), "sender");
            opts.waits.handshake("the handshake");
            let sess = secure::respond(
                timed(s2.try_clone().unwrap()),
                timed(s2),
                &receiver_key,
                &allowed,
                "sender",
            )
            .expect("receiver handshake");
            migrate::receive(&host, io::BufReader::new(sess.reader), sess.writer, &opts)
        });
        let waits = Waits::new(limits);
        let timed = |s: UnixStream| Timed::new(s, waits.timer.clone(), "receiver");
        waits.handshake("the handshake");
        let sess = secure::initiate(
            timed(s1.try_clone().unwrap()),
            timed(s1),
            &sender_key,
            &pin,
            "receiver",
        )
        .expect("sender handshake");
        let mut p = policy("hotpage");
        let sent = migrate::send(
            &a.host,
            dom,
            io::BufReader::new(sess.reader),
            io::BufWriter::with_capacity(1 << 20, sess.writer),
            SendOptions {
                policy: p.as_mut(),
                hooks: &mut DirectHooks,
                waits,
            },
        );
        let got = recv.join().expect("receiver thread");
        sent.unwrap_or_else(|e| panic!("{t} sender: {e}"));
        let got = got.unwrap_or_else(|e| panic!("{t} receiver: {e}"));
        a.doms.clear();
        assert_matches_reference(&b.host, got.domid);
        b.host.destroy(got.domid).expect("destroy");
    }
}

#[test]
fn save_restore_the_guest_continues() {
    for t in [GuestType::Pv, GuestType::Hvm] {
        let mut a = TestHost::new();
        let b = TestHost::new();
        let dom = a.create(&guest("s", t, WorkloadKind::Uniform, 5));
        let mut img = Vec::new();
        let mut p = policy("hotpage");
        let (_, img2) = migrate::save_image(
            &a.host,
            dom,
            &mut img,
            p.as_mut(),
            SaveOptions { live: false },
            &mut DirectHooks,
            false,
        )
        .expect("save");
        let _ = img2;
        let step_at_save = a.host.step(dom).expect("step");
        a.host.destroy(dom).expect("destroy source");
        a.doms.clear();

        let out = migrate::restore_image(
            &b.host,
            &mut img.as_slice(),
            &RestoreImageOptions::default(),
            &mut NoHooks,
        )
        .expect("restore");
        let info = b.host.domain_info(out.domid).unwrap();
        assert_eq!(info.name, "s");
        assert!(
            info.paused,
            "restore leaves the guest paused (as xl restore -p)"
        );
        // It runs on from where it stopped (run_until unpauses it).
        b.host
            .run_until(out.domid, step_at_save + 500)
            .expect("run on");
        assert_matches_reference(&b.host, out.domid);

        // And the same image restores again as a raw stream is refused
        // (it is an xl image): a clear error, no domain left behind.
        let err = migrate::restore_image(
            &b.host,
            &mut img.as_slice(),
            &RestoreImageOptions {
                raw: true,
                ..Default::default()
            },
            &mut NoHooks,
        )
        .expect_err("xl image read as raw");
        assert!(
            err.to_string().contains("marker") || err.to_string().contains("header"),
            "{err}"
        );
        assert_eq!(b.host.list_domains().unwrap().len(), 1);
        b.host.destroy(out.domid).expect("destroy");
    }
}

/// A writer that breaks after `left` bytes, or at the first write once the
/// source is suspended (`watch`), as a dropped connection does.
struct CutAfter<W> {
    inner: W,
    left: usize,
    watch: Option<(SimHost, DomId)>,
}

impl<W: Write> Write for CutAfter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let suspended = self.watch.as_ref().is_some_and(|(h, d)| {
            h.domain_info(*d)
                .map(|i| i.shutdown.is_some())
                .unwrap_or(false)
        });
        if self.left == 0 || suspended {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection cut (test)",
            ));
        }
        let n = buf.len().min(self.left);
        let n = self.inner.write(&buf[..n])?;
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn cut_connection_leaves_source_running_and_no_destination_domain() {
    // Cut in the headers, in round 0, in a later round, and in the final
    // round after the source was suspended. The guests' memory is mostly
    // zero (sent as XALLOC entries without data): round 0 of a 16 MiB
    // guest is ~200-300 KB, the rounds after it are pages with data.
    for (t, cut, at_suspend) in [
        (GuestType::Pv, 100usize, false),
        (GuestType::Pv, 100_000, false),
        (GuestType::Hvm, 350_000, false),
        (GuestType::Pv, usize::MAX, true),
        (GuestType::Hvm, usize::MAX, true),
    ] {
        let mut a = TestHost::new();
        let b = TestHost::new();
        let dom = a.create(&guest("c", t, WorkloadKind::HotSet, 77));
        let watch = at_suspend.then(|| (SimHost::open(a.host.dir()).expect("open a"), dom));
        let (sent, got) = migrate_pair(&a.host, dom, &b.host, "hotpage", move |s| CutAfter {
            inner: s,
            left: cut,
            watch,
        });
        let err = sent.expect_err("a cut migration must fail");
        // Any error before the point of no return; never "state undefined".
        assert!(
            !matches!(err, MigrateError::AfterGo { .. }),
            "cut at {cut}: {err}"
        );
        assert!(got.is_err(), "receiver accepted a cut stream");
        // The source runs on, with its memory intact.
        let info = a.host.domain_info(dom).expect("source exists");
        assert!(
            info.shutdown.is_none() && !info.paused,
            "source left {info:?}"
        );
        assert_eq!(info.name, "c");
        run_on(&a.host, dom, 200);
        assert_matches_reference(&a.host, dom);
        assert!(
            b.host.list_domains().unwrap().is_empty(),
            "destination kept a domain"
        );
    }
}

#[test]
fn receiver_that_fails_before_ready_leaves_source_running() {
    let mut a = TestHost::new();
    let dom = a.create(&guest("r", GuestType::Pv, WorkloadKind::HotSet, 3));
    // A receiver that reads the whole stream, then fails (closes) instead of
    // answering READY, as one whose restore went wrong does.
    let (s1, s2) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let mut s2 = s2;
        s2.write_all(rxmigrate::stream::handshake::BANNER).unwrap();
        let mut data = io::BufReader::new(s2.try_clone().unwrap());
        rxmigrate::image::read_start(&mut data).expect("xl header");
        let mut r = rxmigrate::stream::LibxcReader::new(&mut data).expect("libxc header");
        while r.next_record().expect("record").is_some() {}
        rxmigrate::image::read_end(&mut data).expect("libxl end");
        // Dropping both ends closes the connection without READY.
    });
    let mut p = policy("hotpage");
    let data = s1.try_clone().unwrap();
    let err = migrate::send(
        &a.host,
        dom,
        io::BufReader::new(s1),
        data,
        SendOptions {
            policy: p.as_mut(),
            hooks: &mut DirectHooks,
            waits: Default::default(),
        },
    )
    .expect_err("no READY");
    assert!(matches!(err, MigrateError::BeforeGo { .. }), "{err}");
    t.join().unwrap();
    // The suspended source was resumed, under its own name, memory intact.
    let info = a.host.domain_info(dom).unwrap();
    assert!(
        info.shutdown.is_none() && !info.paused,
        "source left {info:?}"
    );
    assert_eq!(info.name, "r");
    run_on(&a.host, dom, 200);
    assert_matches_reference(&a.host, dom);
}

#[test]
fn corrupted_stream_is_refused_without_leaving_a_domain() {
    let mut a = TestHost::new();
    let b = TestHost::new();
    let dom = a.create(&guest("x", GuestType::Pv, WorkloadKind::Uniform, 11));
    let mut img = Vec::new();
    let mut p = policy("xen4");
    migrate::save_image(
        &a.host,
        dom,
        &mut img,
        p.as_mut(),
        SaveOptions { live: false },
        &mut DirectHooks,
        true,
    )
    .expect("save raw");
    assert_eq!(
        a.host.domain_info(dom).unwrap().shutdown,
        Some(ShutdownReason::Suspend)
    );
    // Find the first PAGE_DATA record (type 1) and break its count.
    let mut off = 24 + 16;
    loop {
        let ty = u32::from_le_bytes(img[off..off + 4].try_into().unwrap());
        let len = u32::from_le_bytes(img[off + 4..off + 8].try_into().unwrap()) as usize;
        if ty == 1 {
            img[off + 8..off + 12].copy_from_slice(&0u32.to_le_bytes());
            break;
        }
        off += 8 + len.div_ceil(8) * 8;
    }
    let err = migrate::restore_image(
        &b.host,
        &mut img.as_slice(),
        &RestoreImageOptions {
            raw: true,
            ..Default::default()
        },
        &mut NoHooks,
    )
    .expect_err("corrupt stream accepted");
    let msg = err.to_string();
    assert!(msg.contains("PAGE_DATA") && msg.contains("offset"), "{msg}");
    assert!(
        b.host.list_domains().unwrap().is_empty(),
        "half-built domain left"
    );

    // A stream truncated in the middle: same.
    let cut = &img[..img.len() / 2];
    let err = migrate::restore_image(
        &b.host,
        &mut &cut[..],
        &RestoreImageOptions {
            raw: true,
            ..Default::default()
        },
        &mut NoHooks,
    )
    .expect_err("truncated stream accepted");
    assert!(!err.to_string().is_empty());
    assert!(
        b.host.list_domains().unwrap().is_empty(),
        "half-built domain left"
    );
}
