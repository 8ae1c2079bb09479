//! The lab benchmark's downtime clock (ci/lab): one measurement for every
//! migration tool, taken in dom0 from Xen's own view of the domains.
//!
//!   downtime_probe SRC_DOMID [LIMIT_S]
//!
//! Polls `xc_domain_getinfolist` every 5 ms (the dom0 of one emulated vCPU
//! it runs in is shared with the migration). The pause starts at the
//! first sample where domain SRC_DOMID is shut down for suspend (every tool
//! measured suspends the guest for the final round) and ends at the first sample
//! after that where a domain that did not exist when the probe started is
//! running (neither paused, shut down nor dying): the destination unpaused.
//! Prints `t0_epoch=… suspend_s=… resume_s=… downtime_ms=…` (the probe's
//! start in seconds since the epoch, then seconds since it) and exits 0; exits 1 if either is not seen within LIMIT_S
//! (default 900), or when the source comes back before any destination runs
//! (`resumed_source=1`: a failed migration).

use std::collections::HashSet;
use std::time::{Duration, Instant};
use xen_sys::*;

const POLL: Duration = Duration::from_millis(5);
const MAX_DOMAINS: usize = 256;

#[derive(Clone, Copy)]
struct Dom {
    id: u32,
    flags: u32,
}

impl Dom {
    fn shutdown_reason(&self) -> Option<u32> {
        (self.flags & XEN_DOMINF_shutdown != 0)
            .then_some((self.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask)
    }
    fn suspended(&self) -> bool {
        self.shutdown_reason() == Some(SHUTDOWN_suspend)
    }
    fn running(&self) -> bool {
        self.flags & (XEN_DOMINF_paused | XEN_DOMINF_shutdown | XEN_DOMINF_dying) == 0
    }
}

struct Xc<'a> {
    lib: &'a xenctrl::XenCtrl,
    xch: *mut xc_interface,
    buf: Vec<xc_domaininfo_t>,
}

impl Xc<'_> {
    fn domains(&mut self) -> Result<Vec<Dom>, String> {
        // SAFETY: buf holds MAX_DOMAINS entries, the count passed.
        let n = unsafe {
            self.lib
                .xc_domain_getinfolist(self.xch, 0, MAX_DOMAINS as u32, self.buf.as_mut_ptr())
        };
        if n < 0 {
            return Err(format!(
                "xc_domain_getinfolist: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(self.buf[..n as usize]
            .iter()
            .map(|d| Dom {
                id: u32::from(d.domain),
                flags: d.flags,
            })
            .collect())
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: downtime_probe SRC_DOMID [LIMIT_S]";
    let Some(src) = args.get(1).and_then(|s| s.parse::<u32>().ok()) else {
        eprintln!("{usage}");
        return std::process::ExitCode::from(2);
    };
    let limit = Duration::from_secs(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(900));
    let libs = match XenLibs::open() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("downtime_probe: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // SAFETY: null logger and flags 0 are xc_interface_open's defaults.
    let xch = unsafe {
        libs.ctrl
            .xc_interface_open(std::ptr::null_mut(), std::ptr::null_mut(), 0)
    };
    if xch.is_null() {
        eprintln!("downtime_probe: xc_interface_open failed");
        return std::process::ExitCode::from(2);
    }
    let mut xc = Xc {
        lib: &libs.ctrl,
        xch,
        buf: vec![xc_domaininfo_t::default(); MAX_DOMAINS],
    };
    let t0 = Instant::now();
    let t0_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let result = watch(&mut xc, src, limit, t0);
    // SAFETY: xch came from xc_interface_open and is not used after this.
    unsafe { libs.ctrl.xc_interface_close(xch) };
    match result {
        Ok((s, r)) => {
            println!(
                "t0_epoch={t0_epoch:.4} suspend_s={:.4} resume_s={:.4} downtime_ms={:.1}",
                s.as_secs_f64(),
                r.as_secs_f64(),
                (r - s).as_secs_f64() * 1000.0
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// (suspend, resume) as offsets from `t0`.
fn watch(
    xc: &mut Xc<'_>,
    src: u32,
    limit: Duration,
    t0: Instant,
) -> Result<(Duration, Duration), String> {
    let before: HashSet<u32> = xc.domains()?.iter().map(|d| d.id).collect();
    if !before.contains(&src) {
        return Err(format!("error=no_domain_{src}"));
    }
    let mut suspended: Option<Duration> = None;
    while t0.elapsed() < limit {
        let doms = xc.domains()?;
        let now = t0.elapsed();
        let source = doms.iter().find(|d| d.id == src);
        match suspended {
            None => {
                if source.is_some_and(Dom::suspended) {
                    suspended = Some(now);
                }
            }
            Some(s) => {
                if doms.iter().any(|d| !before.contains(&d.id) && d.running()) {
                    return Ok((s, now));
                }
                if source.is_some_and(Dom::running) {
                    return Err(format!("resumed_source=1 suspend_s={:.4}", s.as_secs_f64()));
                }
            }
        }
        std::thread::sleep(POLL);
    }
    Err(match suspended {
        None => "error=no_suspend_seen".into(),
        Some(_) => "error=no_destination_ran".into(),
    })
}
