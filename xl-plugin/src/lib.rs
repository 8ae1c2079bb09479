//! `rxmigrate-save-helper`: a drop-in replacement for Xen's
//! `libxl-save-helper`. libxl runs it (from `$LIBXL_SAVE_HELPER` or the
//! stock path) for the libxc part of every `xl save`, `xl restore` and both
//! ends of `xl migrate`; it runs the rxmigrate engine with the configured
//! pre-copy policy (hot pages by default) and speaks libxl's helper protocol
//! byte for byte. Streams it does not handle (Remus, COLO, the `--debug`
//! VERIFY pass) go to the stock helper, exec'd in place.
//!
//! Modules: `args` (the command line), `proto` (the message protocol),
//! `logger` (log records as libxl `log` messages), `config` (settings),
//! `iofd` (the stream fd, SIGTERM), `stock` (handing over), `save`,
//! `restore` (the two runs), and [`run`] tying them together.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod args;
pub mod config;
pub mod iofd;
pub mod logger;
pub mod proto;
pub mod restore;
pub mod save;
pub mod stock;

use args::{Mode, StreamType, XCFLAGS_DEBUG};
use proto::{Libxl, Message};
use rxmigrate::hv::{open_hv, Host, HvError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can end a helper run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Args(#[from] args::ArgError),
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Proto(#[from] proto::ProtoError),
    #[error(transparent)]
    Stock(#[from] stock::StockError),
    #[error(transparent)]
    Fd(#[from] iofd::FdError),
    #[error("hypervisor: {0}")]
    Hv(#[from] HvError),
    #[error("save failed: {0}")]
    Save(#[from] rxmigrate::save::SaveError),
    #[error("restore failed: {0}")]
    Restore(#[from] rxmigrate::restore::RestoreError),
    #[error("flushing the stream to libxl: {0}")]
    Flush(#[source] std::io::Error),
    #[error("stats file {0}")]
    Stats(#[source] rxmigrate::trust::files::UntrustedFile),
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
}

impl PluginError {
    /// The errno to report in `complete`: the first error number in the
    /// chain (an OS error, or the one a hypervisor failure carries), else
    /// EINVAL for bad input, else EIO.
    pub fn errno(&self) -> i32 {
        // The engines' errors wrap the hypervisor's transparently, which
        // hides it from the source chain: look inside them too.
        let hv = match self {
            PluginError::Hv(h)
            | PluginError::Save(rxmigrate::save::SaveError::Hv(h))
            | PluginError::Restore(rxmigrate::restore::RestoreError::Hv(h)) => Some(h),
            _ => None,
        };
        if let Some(code) = hv.and_then(HvError::errno) {
            return code as i32;
        }
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(x) = e {
            if let Some(code) = x
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
            {
                return code;
            }
            if let Some(code) = x.downcast_ref::<HvError>().and_then(HvError::errno) {
                return code as i32;
            }
            e = x.source();
        }
        match self {
            PluginError::Args(_) | PluginError::Config(_) | PluginError::NotUtf8(_) => libc::EINVAL,
            // A file refused by the ownership rules.
            PluginError::Stats(_) | PluginError::Stock(stock::StockError::Untrusted(_)) => {
                libc::EPERM
            }
            _ => libc::EIO,
        }
    }
}

/// Why a run goes to the stock helper, if it does.
pub fn handover_reason(mode: &Mode) -> Option<String> {
    match mode.stream_type() {
        StreamType::Plain => {}
        t => {
            return Some(format!(
                "{t} checkpointed streams are not supported by rxmigrate"
            ))
        }
    }
    if let Mode::Save(a) = mode {
        if a.xcflags & XCFLAGS_DEBUG != 0 {
            return Some(
                "the debug VERIFY pass (xl migrate --debug) is not supported by rxmigrate".into(),
            );
        }
    }
    None
}

/// Hand the run to the stock helper; returns only if that fails.
fn hand_over(why: &str, cfg_helper: Option<&Path>, argv0: &Path, rest: &[OsString]) -> PluginError {
    match stock::locate(cfg_helper, argv0) {
        Ok(p) => {
            log::info!("{why}: handing over to the stock helper {}", p.display());
            stock::exec(&p, rest).into()
        }
        Err(e) => {
            log::error!("{why}, and the stock helper cannot take over: {e}");
            e.into()
        }
    }
}

/// Report the end of a run to libxl as the stock helper does: restore
/// results first (restore only; zeros on failure), then `complete`.
fn finish(libxl: &Libxl, mode: &Mode, result: Result<(u64, u64), PluginError>) -> i32 {
    let (retval, errnoval, results) = match result {
        Ok(r) => (0, 0, r),
        Err(e) => {
            log::error!("{e}");
            (-1, e.errno(), (0, 0))
        }
    };
    if let Mode::Restore(_) = mode {
        let m = Message::RestoreResults {
            store_gfn: results.0,
            console_gfn: results.1,
        };
        if let Err(e) = libxl.send(&m) {
            eprintln!("rxmigrate-save-helper: {e}");
            return 1;
        }
    }
    match libxl.call(&Message::Complete { retval, errnoval }) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("rxmigrate-save-helper: {e}");
            1
        }
    }
}

/// Run the helper with this process's argv; the exit status.
pub fn run(argv: Vec<OsString>) -> i32 {
    let argv0 = PathBuf::from(argv.first().cloned().unwrap_or_default());
    let rest: Vec<OsString> = argv.into_iter().skip(1).collect();
    if rest.first().is_some_and(|a| a == "--version") {
        println!("rxmigrate-save-helper {}", *rxmigrate::version::LONG);
        return 0;
    }
    if rest.first().is_some_and(|a| a == "--check-config") {
        let path = rest
            .get(1)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONF));
        return match config::Config::check_file(&path) {
            Ok(c) => {
                println!(
                    "{}: valid (policy {}, fallback {})",
                    path.display(),
                    c.policy,
                    if c.fallback == config::Fallback::Stock {
                        "stock"
                    } else {
                        "fail"
                    }
                );
                0
            }
            Err(e) => {
                println!("{e}");
                1
            }
        };
    }
    let strings: Result<Vec<String>, PluginError> = rest
        .iter()
        .map(|a| a.clone().into_string().map_err(PluginError::NotUtf8))
        .collect();
    let mode = match strings.and_then(|s| Ok(args::parse(&s)?)) {
        Ok(m) => m,
        Err(e) => {
            // Without a valid command line we cannot know libxl's protocol
            // version: report on stderr (xl's) only.
            eprintln!("rxmigrate-save-helper: {e}");
            return 2;
        }
    };
    let libxl = match Libxl::from_stdio() {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("rxmigrate-save-helper: {e}");
            return 2;
        }
    };
    logger::init(libxl.clone());
    log::info!("rxmigrate-save-helper {}", *rxmigrate::version::LONG);
    log::debug!("starting: {mode:?}");

    let cfg = match config::Config::load() {
        Ok(c) => c,
        Err(e) => return finish(&libxl, &mode, Err(e.into())),
    };
    if let Some(why) = handover_reason(&mode) {
        let e = hand_over(&why, cfg.stock_helper.as_deref(), &argv0, &rest);
        return finish(&libxl, &mode, Err(e));
    }
    let spec = cfg.hv.clone().unwrap_or_else(|| "xen".into());
    let opening = std::time::Instant::now();
    let hv = match open_hv(Some(&spec)) {
        Ok(h) => {
            log::debug!("hypervisor opened in {} ms", opening.elapsed().as_millis());
            h
        }
        Err(HvError::Unavailable(msg)) if cfg.fallback == config::Fallback::Stock => {
            let why = format!("rxmigrate cannot use hypervisor {spec:?} ({msg})");
            log::warn!("{why}");
            let e = hand_over(&why, cfg.stock_helper.as_deref(), &argv0, &rest);
            return finish(&libxl, &mode, Err(e));
        }
        Err(e) => return finish(&libxl, &mode, Err(e.into())),
    };
    let result = run_engine(hv.host(), &mode, &libxl, &cfg);
    finish(&libxl, &mode, result)
}

fn run_engine(
    host: Host<'_>,
    mode: &Mode,
    libxl: &Libxl,
    cfg: &config::Config,
) -> Result<(u64, u64), PluginError> {
    log::debug!("hypervisor {}", host.hv.describe());
    match mode {
        Mode::Save(a) => {
            let io = iofd::take(a.io_fd, "io_fd")?;
            iofd::abort_writes_on_sigterm(a.io_fd)?;
            save::run(host.hv, a, io, libxl, cfg)?;
            Ok((0, 0))
        }
        Mode::Restore(a) => {
            let mut io = iofd::take(a.io_fd, "io_fd")?;
            let out = restore::run(host, a, &mut io, libxl, cfg)?;
            Ok((out.store_gfn, out.console_gfn))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PluginError;
    use rxmigrate::hv::{Errno, HvError};

    #[test]
    fn complete_reports_the_hypervisor_errno() {
        let hv = || HvError::os(3, "populate", Errno::ENOMEM);
        assert_eq!(PluginError::Hv(hv()).errno(), libc::ENOMEM);
        let save = rxmigrate::save::SaveError::Hv(hv());
        assert_eq!(PluginError::Save(save).errno(), libc::ENOMEM);
        let restore = rxmigrate::restore::RestoreError::Hv(HvError::io(
            "write",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ));
        assert_eq!(PluginError::Restore(restore).errno(), libc::ENOSPC);
        let none = HvError::op(3, "suspend", "the guest did not answer");
        assert_eq!(PluginError::Hv(none).errno(), libc::EIO);
    }
}
