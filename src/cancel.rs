//! Cancellation by signal: SIGINT, SIGTERM and SIGHUP during a save,
//! restore or migration ask the operation to stop at its next safe point,
//! where its ordinary failure path runs (the source resumed, a half-built
//! domain destroyed). The handler only records the signal; the engines poll
//! [`requested`] between batches and records, and the transport's waits
//! (which poll their file descriptor) poll it too.

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// The signal that asked us to stop (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);
/// Live [`Hold`]s: while there is one, a request is kept for later.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The signals that cancel an operation.
pub const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(sig, Ordering::SeqCst);
}

/// Route SIGINT, SIGTERM and SIGHUP to the cancellation flag. Without
/// SA_RESTART, so a blocking system call returns EINTR and its caller can
/// look at the flag.
pub fn install() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in SIGNALS {
        // SAFETY: the handler only stores into an atomic, which is
        // async-signal-safe; no other handler for these signals is replaced
        // that the program relies on.
        unsafe { signal::sigaction(sig, &action)? };
    }
    Ok(())
}

fn raw() -> Option<Signal> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// The signal that asked for cancellation, if one did (none while a
/// [`Hold`] lives).
pub fn requested() -> Option<Signal> {
    if HELD.load(Ordering::SeqCst) > 0 {
        return None;
    }
    raw()
}

/// Cancellation deferred: past the point of no return of a migration
/// (permission to go sent or received) stopping would leave nobody owning
/// the guest, so the handover is finished first. While a `Hold` lives,
/// [`requested`] and [`check`] report nothing; a signal that arrives is
/// remembered and reported once the last `Hold` is dropped.
#[must_use = "cancellation is deferred only while the Hold lives"]
pub struct Hold {
    before: Option<Signal>,
}

impl Hold {
    /// A signal that had already asked to stop when the hold was taken: the
    /// caller may still stop cleanly (it has not passed the point of no
    /// return yet) or must go on regardless.
    pub fn requested_before(&self) -> Option<Signal> {
        self.before
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Defer cancellation until the returned [`Hold`] is dropped.
pub fn hold() -> Hold {
    HELD.fetch_add(1, Ordering::SeqCst);
    // Read after counting the hold: a signal is either seen here or kept.
    Hold { before: raw() }
}

/// The signal that asked to stop, held or not (for a message once a held
/// handover is done).
pub fn pending() -> Option<Signal> {
    raw()
}

/// Ask for cancellation as a signal would (tests, and callers that stop an
/// operation for their own reasons).
pub fn request(sig: Signal) {
    REQUESTED.store(sig as i32, Ordering::SeqCst);
}

/// Forget a request (tests that run several operations in one process).
pub fn clear() {
    REQUESTED.store(0, Ordering::SeqCst);
}

/// Stopped by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {0}")]
pub struct Cancelled(pub Signal);

/// `Err(Cancelled)` once a signal asked to stop.
pub fn check() -> Result<(), Cancelled> {
    match requested() {
        Some(sig) => Err(Cancelled(sig)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The flag is process-wide: setting it here would cancel other unit
    // tests running beside this one; tests/signals.rs drives it in a child.
    #[test]
    fn names_the_signal() {
        assert_eq!(
            Cancelled(Signal::SIGTERM).to_string(),
            "interrupted by SIGTERM"
        );
    }
}
