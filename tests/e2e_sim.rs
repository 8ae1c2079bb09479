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
use std::io::{self, Read, Write};
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
fn migrate_pair<RW: Read + Write + Send + 'static>(
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
        migrate::receive(&host, data, s2, false)
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
        },
    );
    drop(rw);
    let got = recv.join().expect("receiver thread");
    (sent, got)
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
        assert_eq!(b.host.domain_info(out.domid).unwrap().name, "s");
        b.host.unpause(out.domid).expect("unpause");
        // It runs on from where it stopped.
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
        assert!(err.to_string().contains("marker") || err.to_string().contains("header"), "{err}");
        assert_eq!(b.host.list_domains().unwrap().len(), 1);
        b.host.destroy(out.domid).expect("destroy");
    }
}

/// A writer that breaks after `limit` bytes, as a dropped connection does.
struct CutAfter<W> {
    inner: W,
    left: usize,
}

impl<W: Write> Write for CutAfter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            let _ = self.flush();
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "connection cut (test)"));
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

impl<W> Read for CutAfter<W> {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

#[test]
fn cut_connection_leaves_source_running_and_no_destination_domain() {
    // Cut in the headers, in round 0, and late (in the final round of a
    // 16 MiB guest, after the suspend).
    for (t, cut) in [
        (GuestType::Pv, 100usize),
        (GuestType::Pv, 3 << 20),
        (GuestType::Hvm, 12 << 20),
        (GuestType::Pv, 17 << 20),
    ] {
        let mut a = TestHost::new();
        let b = TestHost::new();
        let dom = a.create(&guest("c", t, WorkloadKind::HotSet, 77));
        let (sent, got) = migrate_pair(&a.host, dom, &b.host, "hotpage", move |s| CutAfter {
            inner: s,
            left: cut,
        });
        let err = sent.expect_err("a cut migration must fail");
        assert!(
            matches!(err, MigrateError::Save { .. } | MigrateError::BeforeGo { .. }),
            "cut at {cut}: {err}"
        );
        assert!(got.is_err(), "receiver accepted a cut stream");
        // The source runs on, with its memory intact.
        let info = a.host.domain_info(dom).expect("source exists");
        assert!(info.shutdown.is_none() && !info.paused, "source left {info:?}");
        assert_eq!(info.name, "c");
        let s0 = a.host.step(dom).unwrap();
        a.host.run_until(dom, s0 + 200).unwrap();
        assert_matches_reference(&a.host, dom);
        assert!(b.host.list_domains().unwrap().is_empty(), "destination kept a domain");
    }
}

#[test]
fn receiver_that_never_says_ready_leaves_source_running() {
    let mut a = TestHost::new();
    let dom = a.create(&guest("r", GuestType::Pv, WorkloadKind::Idle, 3));
    // Banner, then silence: the "receiver" reads and discards the stream.
    let (s1, s2) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let mut s2 = s2;
        s2.write_all(rxmigrate::stream::handshake::BANNER).unwrap();
        let _ = io::copy(&mut s2, &mut io::sink());
    });
    let mut p = policy("xen4");
    let data = s1.try_clone().unwrap();
    let acks = io::BufReader::new(s1.try_clone().unwrap());
    // Close our write side after the stream so the reader thread ends.
    let err = migrate::send(
        &a.host,
        dom,
        ReadThenShutdown { r: acks, s: s1 },
        data,
        SendOptions {
            policy: p.as_mut(),
            hooks: &mut DirectHooks,
        },
    )
    .expect_err("no READY");
    assert!(matches!(err, MigrateError::BeforeGo { .. }), "{err}");
    t.join().unwrap();
    let info = a.host.domain_info(dom).unwrap();
    assert!(info.shutdown.is_none() && !info.paused);
    assert_eq!(info.name, "r");
}

/// Reads acks; the first read after the banner shuts the socket's write side
/// so the peer sees the end of the stream and closes.
struct ReadThenShutdown<R> {
    r: R,
    s: UnixStream,
}
impl<R: Read> Read for ReadThenShutdown<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        if n == 0 {
            return Ok(0);
        }
        Ok(n)
    }
}
impl<R> Drop for ReadThenShutdown<R> {
    fn drop(&mut self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
    }
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
    assert!(b.host.list_domains().unwrap().is_empty(), "half-built domain left");

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
    assert!(b.host.list_domains().unwrap().is_empty(), "half-built domain left");
}
