//! `log` records to libxl as `log` messages, so the engine's messages (and
//! the per-round statistics) appear in xl's output and logs, filtered there
//! by xl's own verbosity (`xl -v`). The filter here is `RXMIGRATE_LOG` (or
//! `RUST_LOG`), default `info`.

use crate::proto::{fit_log_text, level, Libxl, Message};
use std::sync::Arc;

/// Context string of our messages (the stock helper uses "libxl-save-helper").
pub const CONTEXT: &str = "rxmigrate";
/// The `errnoval` of a log line that carries no errno: -1, as xentoollog
/// reads the field (an int), and as Xen's own helper sends it.
pub const NO_ERRNO: u32 = u32::MAX;

struct LibxlLogger {
    libxl: Arc<Libxl>,
    filter: env_filter::Filter,
}

/// log's levels on xentoollog's.
pub fn xtl_level(l: log::Level) -> u32 {
    match l {
        log::Level::Error => level::ERROR,
        log::Level::Warn => level::WARN,
        log::Level::Info => level::INFO,
        log::Level::Debug => level::VERBOSE,
        log::Level::Trace => level::DEBUG,
    }
}

impl log::Log for LibxlLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let text = record.args().to_string();
        let m = Message::Log {
            level: xtl_level(record.level()),
            // No errno: libxl's logger appends strerror() of any value
            // >= 0 (0 printed ": Success" after every line in xl's log).
            errnoval: NO_ERRNO,
            context: CONTEXT,
            formatted: fit_log_text(CONTEXT, &text),
        };
        if let Err(e) = self.libxl.send(&m) {
            // libxl is gone; stderr is xl's, which may still be read.
            eprintln!("rxmigrate-save-helper: {text} (and {e})");
        }
    }

    fn flush(&self) {}
}

/// Install the logger (once per process).
pub fn init(libxl: Arc<Libxl>) {
    let spec = std::env::var("RXMIGRATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let mut b = env_filter::Builder::new();
    if b.try_parse(&spec).is_err() {
        b = env_filter::Builder::new();
        b.filter_level(log::LevelFilter::Info);
        eprintln!("rxmigrate-save-helper: ignoring bad log filter {spec:?}; using info");
    }
    let filter = b.build();
    let max = filter.filter();
    if log::set_boxed_logger(Box::new(LibxlLogger { libxl, filter })).is_ok() {
        log::set_max_level(max);
    }
}
