//! libxl's side of the save-helper protocol, written from the reference
//! (docs/REFERENCE.md §8), not from the helper: how libxl starts the helper
//! (argv, fds with CLOEXEC cleared, two pipes) and how it reads its messages
//! (native u16 length, u16 number, packed arguments) and answers (one native
//! int).
#![allow(dead_code)]

use rxmigrate::hv::sim::SimHost;
use rxmigrate::hv::{DomId, Hypervisor};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub const HELPER: &str = env!("CARGO_BIN_EXE_rxmigrate-save-helper");

/// The settings variables, cleared so the host's environment cannot leak in.
pub const SETTINGS: &[&str] = &[
    "RXMIGRATE_POLICY",
    "RXMIGRATE_MAX_ROUNDS",
    "RXMIGRATE_TARGET_DIRTY",
    "RXMIGRATE_MAX_FACTOR",
    "RXMIGRATE_HOT_THRESHOLD",
    "RXMIGRATE_HOT_RELEASE",
    "RXMIGRATE_DOWNTIME_TARGET_MS",
    "RXMIGRATE_HV",
    "RXMIGRATE_STATS",
    "RXMIGRATE_STOCK_HELPER",
    "RXMIGRATE_FALLBACK",
    "RXMIGRATE_LOG",
    "RUST_LOG",
];

/// The `rxmigrate` binary (sim guests run as `rxmigrate sim-guest`): built
/// beside the helper by `cargo build --workspace` (what ci/test does first).
pub fn rxmigrate_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("RXMIGRATE_EXE") {
        return PathBuf::from(p);
    }
    let p = Path::new(HELPER).with_file_name("rxmigrate");
    assert!(
        p.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// One decoded helper → libxl message and its exact bytes (length prefix included).
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Log {
        level: u32,
        errnoval: u32,
        context: String,
        text: String,
    },
    Progress {
        context: String,
        doing: String,
        done: u64,
        total: u64,
    },
    Suspend,
    SwitchQemuLogdirty {
        domid: u32,
        enable: u32,
    },
    StaticDataDone {
        missing: u32,
    },
    RestoreResults {
        store: u64,
        console: u64,
    },
    Complete {
        retval: i32,
        errnoval: i32,
    },
}

#[derive(Debug, Clone)]
pub struct Received {
    pub raw: Vec<u8>,
    pub msg: Msg,
}

/// Strict reader of one message body, as libxl's generated stub reads it.
struct Body<'a> {
    b: &'a [u8],
}

impl Body<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.b.len() >= n,
            "message body too short: wanted {n} more bytes"
        );
        let (h, t) = self.b.split_at(n);
        self.b = t;
        h
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take(4).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_ne_bytes(self.take(4).try_into().unwrap())
    }
    /// `unsigned long` / `xen_pfn_t` on x86_64.
    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take(8).try_into().unwrap())
    }
    /// STRING: u32 n (n > 0), n bytes ending in NUL.
    fn string(&mut self) -> String {
        let n = self.u32() as usize;
        assert!(n > 0, "STRING with length 0 (libxl rejects it)");
        let s = self.take(n);
        assert_eq!(
            s[n - 1],
            0,
            "STRING without its final NUL (libxl rejects it)"
        );
        String::from_utf8_lossy(&s[..n - 1]).into_owned()
    }
}

/// Read one message; None at a clean EOF between messages.
pub fn read_msg(r: &mut impl Read) -> Option<Received> {
    let mut len = [0u8; 2];
    match r.read(&mut len[..1]) {
        Ok(0) => return None,
        Ok(_) => {}
        Err(e) => panic!("reading the helper's stdout: {e}"),
    }
    r.read_exact(&mut len[1..]).expect("message length");
    let n = u16::from_ne_bytes(len) as usize;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).expect("message body");
    let mut raw = len.to_vec();
    raw.extend_from_slice(&body);
    let mut b = Body { b: &body };
    let num = u16::from_ne_bytes(b.take(2).try_into().unwrap());
    let msg = match num {
        1 => Msg::Log {
            level: b.u32(),
            errnoval: b.u32(),
            context: b.string(),
            text: b.string(),
        },
        2 => Msg::Progress {
            context: b.string(),
            doing: b.string(),
            done: b.u64(),
            total: b.u64(),
        },
        3 => Msg::Suspend,
        7 => Msg::SwitchQemuLogdirty {
            domid: b.u32(),
            enable: b.u32(),
        },
        8 => Msg::StaticDataDone { missing: b.u32() },
        9 => Msg::RestoreResults {
            store: b.u64(),
            console: b.u64(),
        },
        10 => Msg::Complete {
            retval: b.i32(),
            errnoval: b.i32(),
        },
        other => panic!("message number {other} is not one a plain save/restore sends"),
    };
    assert!(
        b.b.is_empty(),
        "{} trailing bytes after message {num}",
        b.b.len()
    );
    Some(Received { raw, msg })
}

/// A pipe whose ends are close-on-exec in this process.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

/// A started helper, as libxl holds it.
pub struct Helper {
    pub child: Child,
    pub replies: ChildStdin,
    pub messages: ChildStdout,
    pub received: Vec<Received>,
}

/// Start the helper with `args`, passing `fds` to it (CLOEXEC cleared in the
/// child only, as libxl's run_helper does) and the given environment on top
/// of a cleaned one.
pub fn spawn(args: &[String], fds: &[RawFd], env: &[(&str, String)]) -> Helper {
    let mut c = Command::new(HELPER);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in SETTINGS {
        c.env_remove(k);
    }
    // No host configuration file: an empty one.
    c.env("RXMIGRATE_CONF", "/dev/null");
    c.env("RXMIGRATE_EXE", rxmigrate_exe());
    for (k, v) in env {
        c.env(k, v);
    }
    let fds = fds.to_vec();
    // SAFETY: between fork and exec the closure only calls fcntl, which is
    // async-signal-safe, on fds that are open in the parent.
    unsafe {
        c.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = c.spawn().expect("start the helper");
    let replies = child.stdin.take().expect("stdin");
    let messages = child.stdout.take().expect("stdout");
    Helper {
        child,
        replies,
        messages,
        received: Vec::new(),
    }
}

impl Helper {
    /// Next message, remembered in `received`.
    pub fn next(&mut self) -> Option<Msg> {
        let r = read_msg(&mut self.messages)?;
        let m = r.msg.clone();
        self.received.push(r);
        Some(m)
    }
    pub fn reply(&mut self, v: i32) {
        self.replies.write_all(&v.to_ne_bytes()).expect("reply");
        self.replies.flush().expect("flush reply");
    }
    /// Wait for the exit; returns (status code, stderr).
    pub fn wait(mut self) -> (Option<i32>, String, Vec<Received>) {
        // libxl stops reading after `complete`; anything more would be lost.
        let mut rest = Vec::new();
        self.messages.read_to_end(&mut rest).expect("drain stdout");
        assert!(
            rest.is_empty(),
            "{} bytes on stdout after the last message",
            rest.len()
        );
        drop(self.replies);
        let out = self.child.wait_with_output().expect("wait");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            self.received,
        )
    }
    pub fn logs(&self) -> Vec<(u32, String)> {
        logs(&self.received)
    }
}

pub fn logs(received: &[Received]) -> Vec<(u32, String)> {
    received
        .iter()
        .filter_map(|r| match &r.msg {
            Msg::Log { level, text, .. } => Some((*level, text.clone())),
            _ => None,
        })
        .collect()
}

/// The fds a save gets: the stream and libxl's never-initialised recv_fd
/// (a dup of its stdin; here /dev/null).
pub fn devnull() -> std::fs::File {
    std::fs::File::open("/dev/null").expect("/dev/null")
}

/// Read all of `fd` until EOF in a thread.
pub fn drain(fd: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(fd);
        let mut v = Vec::new();
        f.read_to_end(&mut v).expect("read stream");
        v
    })
}

/// Destroys sim domains on drop (also when a test fails).
pub struct Doms<'a> {
    pub host: &'a SimHost,
    pub ids: Vec<DomId>,
}

impl Drop for Doms<'_> {
    fn drop(&mut self) {
        for d in self.ids.drain(..) {
            let _ = self.host.destroy(d);
        }
    }
}

pub fn fd_num(f: &impl AsRawFd) -> RawFd {
    f.as_raw_fd()
}
