//! Auto-converge's mechanism: the throttle a policy asks for
//! ([`crate::precopy::Policy::throttle`]) becomes the domain's scheduler
//! cap ([`Hypervisor::set_cpu_cap`]), and the cap the domain had before is
//! put back when the rounds end — on success, on failure, on a signal
//! (cancellation returns through the ordinary failure path) and, after a
//! panic, from [`Drop`]. Only SIGKILL escapes; docs/ARCHITECTURE.md says
//! how to restore the cap by hand (`xl sched-credit -d DOM -c 0`, or
//! `xl sched-credit2 -d DOM -c 0`).
//!
//! A throttle of `t` % leaves the guest `100 − t` % of what it could use
//! before: of its old cap if it had one, else of all its vCPUs (a cap is
//! in percent of one physical CPU, up to 100 × vCPUs).

use crate::hv::{DomId, HvError, Hypervisor};

/// The cap that leaves a guest with `old` cap (0: none) and `vcpus` vCPUs
/// `100 − pct` % of its CPU time; at least 1 (0 would mean no cap).
pub fn cap_for(old: u32, vcpus: u32, pct: u8) -> u32 {
    let full = 100 * vcpus.max(1);
    let base = if old == 0 { full } else { old.min(full) };
    let keep = 100 - u32::from(pct.min(100));
    ((base * keep + 50) / 100).max(1)
}

/// The throttle on one domain, and the cap to put back.
pub struct Throttle<'a> {
    hv: &'a dyn Hypervisor,
    dom: DomId,
    vcpus: u32,
    /// The cap before the first throttle; `Some` while there is one to
    /// put back.
    old: Option<u32>,
    in_force: u8,
    /// Throttling failed once (e.g. a scheduler without caps): the save
    /// goes on without it.
    broken: bool,
}

impl<'a> Throttle<'a> {
    pub fn new(hv: &'a dyn Hypervisor, dom: DomId, vcpus: u32) -> Self {
        Throttle {
            hv,
            dom,
            vcpus,
            old: None,
            in_force: 0,
            broken: false,
        }
    }

    /// Apply `pct` (a throttle only rises; a lower value is ignored) and
    /// return the throttle in force. A hypervisor that cannot cap the
    /// domain is reported once and the save goes on unthrottled.
    pub fn apply(&mut self, pct: u8) -> u8 {
        if pct <= self.in_force || self.broken {
            return self.in_force;
        }
        match self.try_apply(pct) {
            Ok(()) => self.in_force = pct,
            Err(e) => {
                log::warn!(
                    "auto-converge: cannot throttle domain {}: {e}; going on without it",
                    self.dom
                );
                self.broken = true;
            }
        }
        self.in_force
    }

    fn try_apply(&mut self, pct: u8) -> Result<(), HvError> {
        let old = match self.old {
            Some(c) => c,
            None => {
                let c = self.hv.cpu_cap(self.dom)?;
                self.old = Some(c);
                c
            }
        };
        let cap = cap_for(old, self.vcpus, pct);
        log::info!(
            "auto-converge: domain {} throttled to {pct} % (cap {cap} %, was {old})",
            self.dom
        );
        self.hv.set_cpu_cap(self.dom, cap)
    }

    /// Put the old cap back (once; later calls do nothing).
    pub fn restore(&mut self) -> Result<(), HvError> {
        let Some(old) = self.old.take() else {
            return Ok(());
        };
        self.in_force = 0;
        self.hv.set_cpu_cap(self.dom, old).map_err(|e| {
            e.reworded(|m| {
                format!(
                    "{m}; the domain is still throttled: put its cap back by hand with \
                     `xl sched-credit -d DOM -c {old}` (credit2: `xl sched-credit2 -d DOM -c {old}`)"
                )
            })
        })
    }
}

impl Drop for Throttle<'_> {
    /// After a panic: the cap goes back all the same.
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            log::error!("auto-converge: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cap_for;

    #[test]
    fn the_cap_leaves_the_guest_the_rest_of_what_it_had() {
        // No cap: a share of all vCPUs.
        assert_eq!(cap_for(0, 1, 0), 100);
        assert_eq!(cap_for(0, 1, 95), 5);
        assert_eq!(cap_for(0, 4, 50), 200);
        // An administrator's cap stays the base.
        assert_eq!(cap_for(80, 4, 50), 40);
        // A cap above the vCPUs' total counts as the total.
        assert_eq!(cap_for(1000, 2, 50), 100);
        // Never 0, which would lift the cap.
        assert_eq!(cap_for(10, 1, 99), 1);
        assert_eq!(cap_for(0, 1, 100), 1);
    }
}
