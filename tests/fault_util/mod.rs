//! Shared helpers for the signal and fault tests: simulated hosts driven
//! through the `rxmigrate` binary, and the "nothing left behind" checks.
#![allow(dead_code)]

use rxmigrate::hv::sim::SimHost;
use rxmigrate::hv::{DomainInfo, Hypervisor};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

pub const RX: &str = env!("CARGO_BIN_EXE_rxmigrate");

/// `rxmigrate --hv sim:DIR`.
pub fn rx(host: &Path) -> Command {
    let mut c = Command::new(RX);
    c.arg("--hv").arg(format!("sim:{}", host.display()));
    c
}

/// A simulated host in a temporary directory; destroys what is left on it
/// when the test ends (a failed assertion must not leak guest processes).
pub struct Host(tempfile::TempDir);

impl Host {
    pub fn new() -> Self {
        Host(tempfile::tempdir().expect("tempdir"))
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    /// A fresh handle (no cached mappings of domains another process
    /// destroyed).
    pub fn open(&self) -> SimHost {
        SimHost::open(self.path()).expect("open sim host")
    }
    pub fn domains(&self) -> Vec<DomainInfo> {
        self.open().list_domains().expect("list domains")
    }
    /// The shared-memory files of this host's domains (RAM and hypervisor
    /// state), found by the host's tag and directory inode in their names.
    pub fn shm_files(&self) -> Vec<PathBuf> {
        shm_files_of(&self.open())
    }
    /// Run a sim subcommand, which must succeed; its stdout.
    pub fn sim(&self, args: &[&str]) -> String {
        let o = rx(self.path())
            .arg("sim")
            .args(args)
            .output()
            .expect("run rxmigrate sim");
        assert!(
            o.status.success(),
            "sim {args:?} failed: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// Create a running guest through the CLI; its domain id.
    pub fn create(&self, name: &str, ty: &str, mib: u64, rate: u64, seed: u64) -> u32 {
        let out = self.sim(&[
            "create",
            "--name",
            name,
            "--type",
            ty,
            "--mem",
            &mib.to_string(),
            "--workload",
            "hot-set",
            "--seed",
            &seed.to_string(),
            "--rate",
            &rate.to_string(),
        ]);
        out.trim().parse().expect("sim create prints the domain id")
    }
    /// `sim check NAME` passes: RAM equal to a reference run.
    pub fn assert_matches_reference(&self, name: &str) {
        let out = self.sim(&["check", name]);
        assert!(out.contains("matches the reference"), "{out}");
    }
    /// No domain and no shared memory left on this host.
    pub fn assert_empty(&self, what: &str) {
        let doms = self.domains();
        assert!(
            doms.is_empty(),
            "{what}: domains left: {:?}",
            doms.iter().map(|d| &d.name).collect::<Vec<_>>()
        );
        let files = self.shm_files();
        assert!(files.is_empty(), "{what}: shared memory left: {files:?}");
    }
    pub fn destroy_all(&self) {
        let h = self.open();
        for d in h.list_domains().unwrap_or_default() {
            let _ = h.destroy(d.domid);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.destroy_all();
    }
}

/// The host's shm files: `rxmigrate-sim-TAG-PID-INO-DOMID.{ram,xen}`.
pub fn shm_files_of(host: &SimHost) -> Vec<PathBuf> {
    let ino = std::fs::metadata(host.dir()).expect("host dir").ino();
    let tag = format!("{:03x}", host.tag());
    let ino = format!("{ino:x}");
    let mut out = Vec::new();
    for dir in [Path::new("/dev/shm"), host.dir()] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let f: Vec<&str> = name.split('-').collect();
            if f.len() == 6 && f[0] == "rxmigrate" && f[1] == "sim" && f[2] == tag && f[4] == ino {
                out.push(e.path());
            }
        }
    }
    out
}

/// Wait for a child, killing it (and failing the test) after `limit`.
pub fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `cond` every `every` until it holds; false after `limit`.
pub fn wait_for(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(every);
    }
    cond()
}

/// Pids of the running children of `pid` (from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(_state), Some(ppid)) = (f.next(), f.next()) else {
            continue;
        };
        if ppid.parse::<u32>().ok() == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// How often `needle` occurs in `hay`.
pub fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

pub mod framer;
pub mod relay;
