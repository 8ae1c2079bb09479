//! Issue 12, findings 1 and 2, through the binary: who may send a receiver a
//! migration, and how long anybody may make either end wait.
//! - a peer without credentials is refused before its stream is read, and
//!   a peer with the wrong key (either side) during the handshake, each
//!   logged with its address (and key);
//! - `receive --listen` without keys does not start; `--insecure` binds
//!   loopback only;
//! - a silent peer, a peer that stops half-way and a sender that never
//!   gives permission to go all end in a timeout that leaves nothing behind;
//!   a receiver that never answers READY gives the sender its guest back;
//! - a second peer is told the receiver is busy;
//! - a signal ends a blocked wait, and the receiver cleans up;
//! - save images and stats files are 0600.

mod cli_util;

use cli_util::{ok, rx, trust, Host, Receiver};
use rxmigrate::transport::keys::PublicKey;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const HANG: Duration = Duration::from_secs(30);

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s
}

fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

const BANNER: &[u8] = b"xl migration receiver ready, send binary domain data.\n";
const READY: &[u8] = b"domain received, ready to unpause\0";

#[test]
fn refused_peers_then_the_authorized_sender_migrates() {
    let (a, b, c) = (Host::new(), Host::new(), Host::new());
    let (_ka, kb) = trust(&a, &b);
    let img = a.image("plain", "pv");
    a.create("web", "pv");
    let recv = Receiver::start(
        &b,
        &[
            "--key-dir",
            b.keys().to_str().unwrap(),
            "--accept-timeout",
            "60",
        ],
    );
    let addr = recv.addr();

    // 1. Plain TCP with a valid xl stream: dropped at its first two bytes.
    let mut plain = connect(&addr);
    let me = plain.local_addr().unwrap().to_string();
    let _ = plain.write_all(&img); // the receiver may close before the end
    recv.wait_for(&me);
    let log = recv.log();
    assert!(log.contains("did not start a Noise handshake"), "{log}");
    assert!(
        log.contains("dropped before reading any of its stream"),
        "{log}"
    );
    drop(plain);
    assert!(b.domains().is_empty(), "a domain from a plain stream");

    // 2. A sender whose key the receiver does not know: refused, both say so.
    c.create("web", "pv");
    let kc = c.keygen();
    std::fs::write(c.keys().join("known_hosts"), format!("127.0.0.1 {kb}\n")).unwrap();
    let o = rx(c.path())
        .args([
            "migrate",
            "web",
            &addr,
            "--key-dir",
            c.keys().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the receiver refused us"), "{err}");
    let fp_c = PublicKey::parse(&kc).unwrap().fingerprint();
    recv.wait_for(&fp_c);
    assert!(
        recv.log().contains("refused sender with key"),
        "{}",
        recv.log()
    );
    assert!(b.domains().is_empty());
    assert_eq!(c.domains(), ["web"], "the refused sender keeps its guest");

    // 3. The right sender pinning another key for the receiver: it sends
    // nothing and names the key it was shown.
    let o = rx(a.path())
        .args([
            "migrate",
            "web",
            &addr,
            "--key-dir",
            a.keys().to_str().unwrap(),
        ])
        .args(["--peer-key", &kc])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the receiver presented key"), "{err}");
    assert!(err.contains(&kb) && err.contains(&addr), "{err}");
    assert!(b.domains().is_empty());

    // 4. And the authorized sender with the right pin migrates: the refused
    // peers did not end the receiver's run.
    ok(
        rx(a.path())
            .args([
                "migrate",
                "web",
                &addr,
                "--key-dir",
                a.keys().to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "migrate",
    );
    let (st, log) = recv.finish(HANG);
    assert!(st.success(), "{log}");
    assert!(log.contains("receiving from"), "{log}");
    b.check("web");
    assert!(!a.domains().contains(&"web".to_string()));
}

#[test]
fn listen_without_keys_does_not_start_and_insecure_is_loopback_only() {
    let b = Host::new();
    let t0 = Instant::now();
    let o = rx(b.path())
        .args(["receive", "--listen", "127.0.0.1:0", "--key-dir"])
        .arg(b.keys())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no usable keys") && err.contains("--insecure"),
        "{err}"
    );
    assert!(err.contains(&b.keys().display().to_string()), "{err}");

    // Keys but no authorized_peers: still no.
    b.keygen();
    let o = rx(b.path())
        .args(["receive", "--listen", "127.0.0.1:0", "--key-dir"])
        .arg(b.keys())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("authorized_peers"),
        "{err}"
    );

    // A private key others can read is refused, with the fix.
    let key = b.keys().join("key");
    std::fs::write(b.keys().join("authorized_peers"), "").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = rx(b.path())
        .args(["receive", "--listen", "127.0.0.1:0", "--key-dir"])
        .arg(b.keys())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("chmod 600"), "{err}");

    for addr in ["0.0.0.0:0", "[::]:0"] {
        let o = rx(b.path())
            .args(["receive", "--listen", addr, "--insecure"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("loopback only"),
            "{err}"
        );
    }
    assert!(t0.elapsed() < HANG, "refusals must be immediate");
}

#[test]
fn a_silent_peer_and_a_stalled_stream_time_out_and_leave_nothing() {
    let (a, b) = (Host::new(), Host::new());
    let img = a.image("half", "pv");

    // Connects to a secured receiver and says nothing: dropped after the
    // handshake limit, and the receiver goes on waiting for a real sender.
    let kb = b.keygen();
    std::fs::write(b.keys().join("authorized_peers"), format!("{kb}\n")).unwrap();
    let recv = Receiver::start(
        &b,
        &[
            "--key-dir",
            b.keys().to_str().unwrap(),
            "--handshake-timeout",
            "1",
            "--accept-timeout",
            "4",
        ],
    );
    let silent = connect(&recv.addr());
    let me = silent.local_addr().unwrap().to_string();
    recv.wait_for(&me);
    let (st, log) = recv.finish(HANG);
    assert!(!st.success());
    assert!(log.contains("--handshake-timeout"), "{log}");
    assert!(log.contains("--accept-timeout"), "{log}");
    drop(silent);

    // Sends half a stream (the domain exists by then) and stalls: the
    // receiver times out and destroys what it built.
    let recv = Receiver::start(&b, &["-v", "--insecure", "--timeout", "2"]);
    let mut s = connect(&recv.addr());
    assert_eq!(read_exactly(&mut s, BANNER.len()), BANNER);
    s.write_all(&img[..img.len() * 3 / 4]).unwrap();
    let t0 = Instant::now();
    let (st, log) = recv.finish(HANG);
    assert!(!st.success(), "{log}");
    assert!(
        log.contains("nothing received within 2 s while receiving the migration stream"),
        "{log}"
    );
    assert!(log.contains("destroyed half-built domain"), "{log}");
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    assert!(b.domains().is_empty(), "left {:?}", b.domains());
}

#[test]
fn no_permission_to_go_times_out_and_destroys_the_received_domain() {
    let (a, b) = (Host::new(), Host::new());
    let img = a.image("held", "hvm");
    let recv = Receiver::start(&b, &["--insecure", "--timeout", "2"]);
    let mut s = connect(&recv.addr());
    assert_eq!(read_exactly(&mut s, BANNER.len()), BANNER);
    s.write_all(&img).unwrap();
    assert_eq!(read_exactly(&mut s, READY.len()), READY);
    assert_eq!(b.domains(), ["held--incoming"], "the paused copy is there");
    // ... and we hold the connection without a word.
    let (st, log) = recv.finish(HANG);
    assert!(!st.success(), "{log}");
    assert!(log.contains("waiting for permission to go"), "{log}");
    assert!(log.contains("the source keeps the guest"), "{log}");
    assert!(b.domains().is_empty(), "left {:?}", b.domains());
    drop(s);
}

#[test]
fn a_second_peer_is_told_the_receiver_is_busy() {
    let b = Host::new();
    let recv = Receiver::start(&b, &["--insecure", "--timeout", "30"]);
    let addr = recv.addr();
    let mut first = connect(&addr);
    assert_eq!(read_exactly(&mut first, BANNER.len()), BANNER);
    let mut second = connect(&addr);
    let mut line = String::new();
    second.read_to_string(&mut line).unwrap();
    assert!(line.starts_with("rxmigrate: busy:"), "{line:?}");
    let me = second.local_addr().unwrap().to_string();
    recv.wait_for(&format!("refused {me}"));
    drop(first);
    let (st, log) = recv.finish(HANG);
    assert!(!st.success(), "an empty stream is no migration: {log}");
}

#[test]
fn sigterm_ends_a_blocked_wait_and_the_receiver_cleans_up() {
    let (a, b) = (Host::new(), Host::new());
    let img = a.image("sig", "pv");
    // Default limits: only the signal can end this wait soon.
    let recv = Receiver::start(&b, &["--insecure"]);
    let mut s = connect(&recv.addr());
    assert_eq!(read_exactly(&mut s, BANNER.len()), BANNER);
    s.write_all(&img).unwrap();
    assert_eq!(read_exactly(&mut s, READY.len()), READY);
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(recv.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (st, log) = recv.finish(HANG);
    assert!(!st.success(), "{log}");
    assert!(
        log.contains("interrupted by SIGTERM while waiting for permission to go"),
        "{log}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(b.domains().is_empty(), "left {:?}", b.domains());
    drop(s);
}

#[test]
fn a_receiver_that_never_answers_ready_gives_the_sender_its_guest_back() {
    let a = Host::new();
    a.create("kept", "pv");
    // A fake receiver: banner, then it reads everything and never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(BANNER).unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        sink.len()
    });
    let t0 = Instant::now();
    let o = rx(a.path())
        .args([
            "migrate",
            "kept",
            &addr,
            "--insecure",
            "--ready-timeout",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--ready-timeout"), "{err}");
    assert!(err.contains("before the destination took over"), "{err}");
    assert!(t0.elapsed() < HANG);
    // Round 0 of a PV stream lists each of the 32 MiB guest's 8 192 pfns
    // (8 bytes each, more with data): however little the guest wrote.
    assert!(fake.join().unwrap() > 8192 * 8, "the stream was sent");
    let list = ok(rx(a.path()).args(["sim", "list"]).output().unwrap(), "list");
    assert!(list.contains("kept") && list.contains("running"), "{list}");
    a.check("kept");
}

#[test]
fn save_images_and_stats_are_created_private() {
    let a = Host::new();
    a.create("p", "pv");
    let img = a.path().join("p.img");
    let stats = a.path().join("p.jsonl");
    // An older, world-readable file in the way is replaced, not reused.
    std::fs::write(&img, b"old").unwrap();
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(
        rx(a.path())
            .args(["save", "p"])
            .arg(&img)
            .arg("--stats")
            .arg(&stats)
            .output()
            .unwrap(),
        "save",
    );
    for f in [&img, &stats] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
    // The save, not the old file: an xl save file, bigger than the PV
    // stream's pfn list alone (see above).
    let saved = std::fs::read(&img).unwrap();
    assert!(
        saved.starts_with(rxmigrate::stream::XL_MAGIC),
        "not an xl save"
    );
    assert!(saved.len() > 8192 * 8, "{} bytes", saved.len());
}
