//! The guest process of a simulated domain: starting it, watching its state
//! (and noticing when it died), commanding it through the shared state word,
//! and running it to a given workload step.

use super::ctl::{futex_wait, futex_wake, state, NO_LIMIT};
use super::dom::Dom;
use super::host::SimHost;
use crate::hv::{DomId, HvError, Hypervisor, Result};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) fn timeout() -> Duration {
    std::env::var("RXMIGRATE_SIM_TIMEOUT_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

/// (state char, start time) of a process from /proc/PID/stat.
pub(super) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let st = f.first()?.chars().next()?;
    let start = f.get(19)?.parse().ok()?;
    Some((st, start))
}

/// Start time of the calling process (so a later kill can check the pid).
pub fn own_start_time() -> u64 {
    proc_stat(std::process::id()).map(|(_, t)| t).unwrap_or(0)
}

pub(super) fn guest_exe() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("RXMIGRATE_EXE") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_exe().map_err(|e| HvError::io("find the rxmigrate executable", e))
}

impl SimHost {
    pub(super) fn start_guest(&self, d: &Dom) -> Result<()> {
        let domid = d.meta.domid;
        let log_path = self.dir.log_path(domid);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| HvError::io(format!("open {}", log_path.display()), e))?;
        let log2 = log.try_clone().map_err(|e| HvError::io("dup log", e))?;
        d.st.state()?.store(state::STARTING, Ordering::Release);
        let exe = guest_exe()?;
        let status = std::process::Command::new(&exe)
            .arg("sim-guest")
            .arg("--dir")
            .arg(self.dir())
            .arg("--dom")
            .arg(domid.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|e| HvError::io(format!("start {} sim-guest", exe.display()), e))?;
        if !status.success() {
            d.st.state()?.store(state::CRASHED, Ordering::Release);
            return Err(HvError::op(
                domid,
                "start",
                format!("sim-guest exited with {status}; see {}", log_path.display()),
            ));
        }
        self.wait_state(d, "start", "boot", |s| s != state::STARTING)?;
        match d.st.state()?.load(Ordering::Acquire) {
            state::CRASHED => Err(HvError::op(
                domid,
                "start",
                format!("guest crashed at boot: {}", d.st.message()?),
            )),
            _ => Ok(()),
        }
    }

    /// Is the domain's guest process alive (and the one we started)?
    pub(super) fn alive(&self, d: &Dom) -> Result<bool> {
        let pid = d.st.pid()?.load(Ordering::Acquire);
        if pid == 0 {
            return Ok(false);
        }
        Ok(match proc_stat(pid) {
            Some((st, start)) => {
                // The guest publishes its pid, then its start time: a zero
                // start time means it is between the two stores, not dead.
                let want = d.st.pid_start()?.load(Ordering::Acquire);
                st != 'Z' && st != 'X' && (want == 0 || start == want)
            }
            None => false,
        })
    }

    /// The guest's state, noticing a process that died behind our back.
    pub(super) fn guest_state(&self, d: &Dom) -> Result<u32> {
        let s = d.st.state()?.load(Ordering::Acquire);
        if matches!(
            s,
            state::RUNNING | state::PAUSED | state::SUSPENDED | state::STARTING
        ) && d.st.pid()?.load(Ordering::Acquire) != 0
            && !self.alive(d)?
        {
            // Re-check: the guest may have exited cleanly in between.
            let s2 = d.st.state()?.load(Ordering::Acquire);
            if s2 == s {
                if d.st.message()?.is_empty() {
                    d.st.set_message("guest process died")?;
                }
                d.st.state()?.store(state::CRASHED, Ordering::Release);
                return Ok(state::CRASHED);
            }
            return Ok(s2);
        }
        Ok(s)
    }

    pub(super) fn wait_state(
        &self,
        d: &Dom,
        op: &'static str,
        what: &str,
        done: impl Fn(u32) -> bool,
    ) -> Result<u32> {
        let deadline = Instant::now() + timeout();
        loop {
            let s = self.guest_state(d)?;
            if done(s) {
                return Ok(s);
            }
            if s == state::CRASHED || s == state::STOPPED {
                return Err(HvError::op(
                    d.meta.domid,
                    op,
                    format!(
                        "domain {} ({}) is {} while waiting for it to {what}: {}",
                        d.meta.domid,
                        d.meta.name,
                        state::name(s),
                        d.st.message()?
                    ),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HvError::op(d.meta.domid, op, format!("timed out after {:?} waiting for domain {} ({}) to {what} (it is {}; log {})", timeout(), d.meta.domid, d.meta.name, state::name(s), self.dir.log_path(d.meta.domid).display())));
            }
            futex_wait(
                d.st.state()?,
                s,
                (deadline - now).min(Duration::from_millis(100)),
            );
        }
    }

    pub(super) fn set_cmd(&self, d: &Dom, c: u32) -> Result<()> {
        let w = d.st.cmd()?;
        w.store(c, Ordering::Release);
        futex_wake(w);
        Ok(())
    }

    /// Let the guest run until it has completed `step` steps, then pause it
    /// there (at a step boundary). Returns when it has paused.
    pub fn run_until(&self, dom: DomId, step: u64) -> Result<()> {
        let d = self.dom(dom)?;
        let s = self.guest_state(&d)?;
        if s == state::SUSPENDED {
            return Err(HvError::op(dom, "run_until", "domain is suspended"));
        }
        let cur = d.st.step()?.load(Ordering::Acquire);
        if s == state::PAUSED && cur > step {
            return Err(HvError::op(
                dom,
                "run_until",
                format!("already at step {cur}, past {step}"),
            ));
        }
        d.st.run_until()?.store(step, Ordering::Release);
        if s == state::NEW || s == state::PAUSED {
            self.unpause(dom)?;
        }
        let deadline_ok = self.wait_state(&d, "run_until", &format!("reach step {step}"), |s| {
            s == state::PAUSED
        });
        // Waiting may have seen an unrelated pause; insist on the step.
        deadline_ok?;
        d.st.run_until()?.store(NO_LIMIT, Ordering::Release);
        let got = d.st.step()?.load(Ordering::Acquire);
        if got != step {
            return Err(HvError::op(
                dom,
                "run_until",
                format!("guest paused at step {got}, not {step} (paused by someone else?)"),
            ));
        }
        Ok(())
    }

    /// Steps the guest has completed (as it last published them).
    pub fn step(&self, dom: DomId) -> Result<u64> {
        Ok(self.dom(dom)?.st.step()?.load(Ordering::Acquire))
    }

    /// Guest state name ("running", "paused", …) for status displays.
    pub fn state_name(&self, dom: DomId) -> Result<&'static str> {
        let d = self.dom(dom)?;
        Ok(state::name(self.guest_state(&d)?))
    }

    /// The crash / status message the guest left, if any.
    pub fn message(&self, dom: DomId) -> Result<String> {
        self.dom(dom)?.st.message()
    }
}
