//! The optional real link: a veth pair from the host's network namespace
//! into a namespace of our own, shaped with `tc` (token bucket) on the
//! sender's side. Needs root (CAP_NET_ADMIN) and iproute2.
//!
//! The receiver thread joins the namespace (network namespaces are per
//! thread) and listens on its end; the sender connects over TCP with no
//! rate limiter of its own.

use super::BenchError;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;

/// A namespace, the veth pair into it and the shaping; removed on drop.
#[derive(Debug)]
pub struct NetnsLink {
    pub ns: String,
    pub host_if: String,
    pub host_addr: Ipv4Addr,
    pub peer_addr: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), BenchError> {
    run("ip", args)
}

fn run(cmd: &str, args: &[&str]) -> Result<(), BenchError> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| BenchError::Config {
            what: "netns link",
            msg: format!("running {cmd}: {e} (iproute2 is needed for --netns)"),
        })?;
    if !out.status.success() {
        return Err(BenchError::Config {
            what: "netns link",
            msg: format!(
                "`{cmd} {}` failed: {} (--netns needs root)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

impl NetnsLink {
    /// Set up the namespace and a link of `bandwidth` bytes per second.
    pub fn create(bandwidth: u64) -> Result<NetnsLink, BenchError> {
        let id = std::process::id();
        // A /30 per process id, inside 10.231.0.0/16.
        let net = (id % 16384) * 4;
        let host_addr = Ipv4Addr::new(10, 231, (net >> 8) as u8, (net & 0xff) as u8 + 1);
        let peer_addr = Ipv4Addr::new(10, 231, (net >> 8) as u8, (net & 0xff) as u8 + 2);
        let link = NetnsLink {
            ns: format!("rxmbench{id}"),
            host_if: format!("rxmb{id}a"),
            host_addr,
            peer_addr,
        };
        let peer_if = format!("rxmb{id}b");
        ip(&["netns", "add", &link.ns])?;
        // From here on, drop removes what exists.
        ip(&[
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ])?;
        ip(&["link", "set", &peer_if, "netns", &link.ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{host_addr}/30"),
            "dev",
            &link.host_if,
        ])?;
        ip(&["link", "set", &link.host_if, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut a = vec!["netns", "exec", link.ns.as_str(), "ip"];
            a.extend_from_slice(args);
            ip(&a)
        };
        in_ns(&["addr", "add", &format!("{peer_addr}/30"), "dev", &peer_if])?;
        in_ns(&["link", "set", &peer_if, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        // Token bucket on the sender's egress; the burst must hold a whole
        // GSO packet (64 KiB) or the qdisc drops it.
        let rate = format!("{}bit", bandwidth.saturating_mul(8));
        let burst = format!("{}", (bandwidth / 100).max(256 * 1024));
        run(
            "tc",
            &[
                "qdisc",
                "add",
                "dev",
                &link.host_if,
                "root",
                "tbf",
                "rate",
                &rate,
                "burst",
                &burst,
                "latency",
                "100ms",
            ],
        )?;
        Ok(link)
    }

    /// Join the namespace on the calling thread (only this thread moves).
    pub fn enter(&self) -> Result<(), String> {
        let path = format!("/var/run/netns/{}", self.ns);
        let f = std::fs::File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
        // SAFETY: setns on a namespace fd we hold open; CLONE_NEWNET moves
        // only the calling thread's network namespace.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(format!(
                "joining network namespace {}: {}",
                self.ns,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Listen on the namespace's end (call after [`NetnsLink::enter`]).
    pub fn listen(&self) -> Result<TcpListener, String> {
        TcpListener::bind(SocketAddrV4::new(self.peer_addr, 0))
            .map_err(|e| format!("listening on {} in {}: {e}", self.peer_addr, self.ns))
    }
}

impl Drop for NetnsLink {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair (and the qdisc).
        if let Err(e) = ip(&["netns", "del", &self.ns]) {
            log::warn!("bench: removing network namespace {}: {e}", self.ns);
        }
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
