//! The stream fd libxl hands over by number, and the SIGTERM behaviour libxl
//! relies on to abort a save.

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum FdError {
    #[error("{what} {fd} is not an open file descriptor: {source}")]
    NotOpen {
        what: &'static str,
        fd: RawFd,
        #[source]
        source: nix::Error,
    },
    #[error("{what} must be above 2 (got {fd}); libxl never passes stdio")]
    Stdio { what: &'static str, fd: RawFd },
    #[error("setting up SIGTERM handling: {0}")]
    Signal(#[source] nix::Error),
}

/// Take ownership of an inherited fd named on the command line.
pub fn take(fd: RawFd, what: &'static str) -> Result<File, FdError> {
    if fd <= 2 {
        return Err(FdError::Stdio { what, fd });
    }
    fcntl(fd, FcntlArg::F_GETFD).map_err(|source| FdError::NotOpen { what, fd, source })?;
    // Children we might start (none in the engines today) must not keep
    // libxl's stream open.
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|source| FdError::NotOpen {
        what,
        fd,
        source,
    })?;
    // SAFETY: the fd is open (checked above), was inherited from libxl for
    // this purpose, and nothing else in this process owns or closes it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

static ABORT_FD: AtomicI32 = AtomicI32::new(-1);
static DEVNULL: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_: libc::c_int) {
    let (io, null) = (
        ABORT_FD.load(Ordering::Relaxed),
        DEVNULL.load(Ordering::Relaxed),
    );
    if io >= 0 && null >= 0 {
        // SAFETY: dup2 is async-signal-safe; both fds stay open for the life
        // of the process. errno is saved and restored around it.
        unsafe {
            let saved = *libc::__errno_location();
            libc::dup2(null, io);
            *libc::__errno_location() = saved;
        }
    }
}

/// On SIGTERM (libxl aborting a save) make the stream fd unwritable instead
/// of dying, as Xen's helper does: the next write fails, the engine takes
/// its error path (log-dirty off, QEMU told), and libxl gets `complete`.
pub fn abort_writes_on_sigterm(io_fd: RawFd) -> Result<(), FdError> {
    let null = File::open("/dev/null").map_err(|e| {
        FdError::Signal(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    })?;
    DEVNULL.store(null.into_raw_fd(), Ordering::Relaxed);
    ABORT_FD.store(io_fd, Ordering::Relaxed);
    let act = SigAction::new(
        SigHandler::Handler(on_sigterm),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only loads atomics and calls dup2, which is
    // async-signal-safe.
    unsafe { sigaction(Signal::SIGTERM, &act) }.map_err(FdError::Signal)?;
    Ok(())
}
