//! What encryption costs: moves the same bytes over loopback TCP through
//! the stack `migrate` uses (timed socket halves, 1 MiB buffered writes),
//! plain and through the Noise channel, in one run, and prints MB/s both
//! ways and their ratio.
//!
//!   cargo run --release --example transport_throughput -- [GIB] [REPEATS]
//!
//! (defaults 1 GiB, 3 repeats; each repeat runs both, alternating which
//! goes first; the median is reported).

use rxmigrate::transport::keys::{AuthorizedPeers, Keypair, Pin};
use rxmigrate::transport::secure;
use rxmigrate::transport::timed::{set_nonblocking, Timed, Timer};
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Instant;

type Halves = (Box<dyn Read + Send>, Box<dyn Write + Send>);

fn socket_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    for s in [&a, &b] {
        s.set_nodelay(true).expect("nodelay");
        set_nonblocking(s.as_fd()).expect("nonblocking");
    }
    (a, b)
}

fn timed(s: &TcpStream, peer: &str) -> (Timed<TcpStream>, Timed<TcpStream>) {
    let t = Timer::default();
    (
        Timed::new(s.try_clone().expect("clone"), t.clone(), peer.to_string()),
        Timed::new(s.try_clone().expect("clone"), t, peer.to_string()),
    )
}

/// Both ends of one connection, plain or encrypted.
fn connection(noise: bool) -> (Halves, Halves) {
    let (a, b) = socket_pair();
    let (ar, aw) = timed(&a, "receiver");
    let (br, bw) = timed(&b, "sender");
    if !noise {
        return ((Box::new(ar), Box::new(aw)), (Box::new(br), Box::new(bw)));
    }
    let (ks, kr) = (
        Keypair::generate().expect("key"),
        Keypair::generate().expect("key"),
    );
    let allowed = AuthorizedPeers::parse(
        std::path::Path::new("authorized_peers"),
        &format!("{}\n", ks.public()),
    )
    .expect("authorized");
    let pin = Pin {
        keys: vec![kr.public()],
        source: "bench".into(),
    };
    let t = std::thread::spawn(move || {
        let s = secure::respond(br, bw, &kr, &allowed, "sender").expect("respond");
        let h: Halves = (Box::new(s.reader), Box::new(s.writer));
        h
    });
    let s = secure::initiate(ar, aw, &ks, &pin, "receiver").expect("initiate");
    let sender: Halves = (Box::new(s.reader), Box::new(s.writer));
    (sender, t.join().expect("responder"))
}

/// MB/s (10^6 bytes per second) moving `total` bytes sender → receiver.
fn run(noise: bool, total: u64) -> f64 {
    let ((sr, sw), (mut rr, _rw)) = connection(noise);
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match rr.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) => panic!("read: {e}"),
            }
        }
        got
    });
    // Page-like data that is not all zeros.
    let chunk: Vec<u8> = (0..1usize << 20).map(|i| (i * 131 % 251) as u8).collect();
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(1 << 20, sw);
    let mut sent = 0u64;
    while sent < total {
        w.write_all(&chunk).expect("write");
        sent += chunk.len() as u64;
    }
    w.flush().expect("flush");
    // Close both of the sender's descriptors: the receiver sees the end.
    drop(w);
    drop(sr);
    let got = reader.join().expect("reader");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, sent);
    sent as f64 / secs / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let gib: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let repeats: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let total = (gib * (1u64 << 30) as f64) as u64;
    let (mut plain, mut noise) = (Vec::new(), Vec::new());
    for i in 0..repeats.max(1) {
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for enc in order {
            let r = run(enc, total);
            println!(
                "run {}: {:<5} {:>8.1} MB/s",
                i + 1,
                if enc { "noise" } else { "plain" },
                r
            );
            if enc {
                noise.push(r)
            } else {
                plain.push(r)
            }
        }
    }
    let (p, n) = (median(plain), median(noise));
    println!(
        "{gib} GiB over loopback TCP, median of {repeats}: plain {p:.0} MB/s, \
         {} {n:.0} MB/s, ratio {:.2} (encrypted/plain)",
        secure::PATTERN,
        n / p
    );
}
