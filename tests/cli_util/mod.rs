//! Helpers for tests that run the rxmigrate binary on simulated hosts: the
//! command, hosts that clean up after themselves, host keys, and a receiver
//! whose log is read as it runs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub fn rx(host: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rxmigrate"));
    c.arg("--hv").arg(format!("sim:{}", host.display()));
    c
}

pub fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A simulated host in a temporary directory, with a key directory beside
/// it; destroys whatever is left on it when the test ends.
pub struct Host(tempfile::TempDir);

impl Host {
    pub fn new() -> Self {
        Host(tempfile::tempdir().unwrap())
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    pub fn keys(&self) -> PathBuf {
        self.0.path().join("keys")
    }
    /// `rxmigrate keygen` for this host; returns its public key.
    pub fn keygen(&self) -> String {
        let line = ok(
            rx(self.path())
                .arg("keygen")
                .arg("--key-dir")
                .arg(self.keys())
                .output()
                .unwrap(),
            "keygen",
        );
        line.split_whitespace().next().unwrap().to_string()
    }
    pub fn domains(&self) -> Vec<String> {
        let out = ok(
            rx(self.path()).args(["sim", "list"]).output().unwrap(),
            "list",
        );
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }
    pub fn create(&self, name: &str, ty: &str) {
        ok(
            rx(self.path())
                .args(["sim", "create", "--name", name, "--type", ty, "--mem", "32"])
                .args(["--workload", "hot-set", "--seed", "3", "--rate", "0"])
                .output()
                .unwrap(),
            "sim create",
        );
    }
    pub fn check(&self, name: &str) {
        let out = ok(
            rx(self.path())
                .args(["sim", "check", name])
                .output()
                .unwrap(),
            "sim check",
        );
        assert!(out.contains("matches the reference"), "{out}");
    }
    /// An xl save image of a new guest (the guest is gone afterwards).
    pub fn image(&self, name: &str, ty: &str) -> Vec<u8> {
        self.create(name, ty);
        let img = self.path().join(format!("{name}.img"));
        ok(
            rx(self.path())
                .args(["save", name])
                .arg(&img)
                .output()
                .unwrap(),
            "save",
        );
        std::fs::read(img).unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let Ok(o) = rx(self.path()).args(["sim", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&o.stdout).lines().skip(1) {
            if let Some(id) = line.split_whitespace().nth(1) {
                let _ = rx(self.path()).args(["sim", "destroy", id]).output();
            }
        }
    }
}

/// Keys for a sender `a` and a receiver `b` that trust each other: b
/// authorizes a's key, a pins b's key for 127.0.0.1.
pub fn trust(a: &Host, b: &Host) -> (String, String) {
    let (ka, kb) = (a.keygen(), b.keygen());
    std::fs::write(
        b.keys().join("authorized_peers"),
        format!("{ka} sender a\n"),
    )
    .unwrap();
    std::fs::write(a.keys().join("known_hosts"), format!("127.0.0.1 {kb}\n")).unwrap();
    (ka, kb)
}

/// The receiver's stderr so far (and whether it has closed), with a signal
/// for each change.
type Log = Arc<(Mutex<(String, bool)>, Condvar)>;

/// A running `receive --listen 127.0.0.1:0 ...`, its stderr collected.
pub struct Receiver {
    child: Child,
    log: Log,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start(host: &Host, args: &[&str]) -> Self {
        let mut child = rx(host.path())
            .args(["receive", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log: Log = Arc::new((Mutex::new((String::new(), false)), Condvar::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = sink.0.lock().unwrap();
                l.0.push_str(&line);
                l.0.push('\n');
                sink.1.notify_all();
            }
            // End of stderr: waiters fail now, not at their bound.
            sink.0.lock().unwrap().1 = true;
            sink.1.notify_all();
        });
        Receiver {
            child,
            log,
            reader: Some(reader),
        }
    }

    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().0.clone()
    }

    /// Wait until the log contains `text`: woken by each line the receiver
    /// writes; fails when its stderr closes without it (or, as a hang
    /// guard, after 20 s).
    pub fn wait_for(&self, text: &str) {
        let end = Instant::now() + Duration::from_secs(20);
        let (lock, cv) = &*self.log;
        let mut log = lock.lock().unwrap();
        while !log.0.contains(text) {
            let now = Instant::now();
            assert!(
                !log.1 && now < end,
                "receiver never logged {text:?} ({}):\n{}",
                if log.1 { "its stderr closed" } else { "20 s" },
                log.0
            );
            log = cv.wait_timeout(log, end - now).unwrap().0;
        }
    }

    /// The address it listens on, from its log.
    pub fn addr(&self) -> String {
        const AT: &str = "waiting for a migration on ";
        self.wait_for(AT);
        let log = self.log();
        let rest = &log[log.find(AT).unwrap() + AT.len()..];
        rest.split_whitespace().next().unwrap().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for it to exit (hang guard: `limit`); its status and log.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, String) {
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "receiver still running after {} s:\n{}",
                    limit.as_secs(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.log())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
