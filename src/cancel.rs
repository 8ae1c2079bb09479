//! Cancellation by signal: SIGINT, SIGTERM and SIGHUP during a save,
//! restore or migration ask the operation to stop at its next safe point,
//! where its ordinary failure path runs (the source resumed, a half-built
//! domain destroyed). The handler only records the signal; the engines poll
//! [`requested`] between batches and records, and the transport's waits
//! (which poll their file descriptor) poll it too.

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked us to stop (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);

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

/// The signal that asked for cancellation, if one did.
pub fn requested() -> Option<Signal> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
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
