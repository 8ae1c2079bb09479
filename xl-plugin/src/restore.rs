//! `--restore-domain`: xc_domain_restore's place, run by the rxmigrate engine.
//!
//! libxl has built the empty domain and read its own records up to the
//! LIBXC_CONTEXT record; we read the libxc stream up to and including END
//! (the fd is used unbuffered: libxl reads on after END), fill the domain,
//! and report the store and console frames with `restore_results`.

use crate::args::RestoreArgs;
use crate::proto::{cbflag, msg, Libxl, Message};
use rxmigrate::hv::Host;
use rxmigrate::restore::{self, RestoreError, RestoreHooks, RestoreOutcome, RestoreParams, Target};
use rxmigrate::stats::StatsWriter;
use rxmigrate::stream::LibxcReader;
use rxmigrate::trust::files::open_append_private;
use std::fs::File;

/// The engine's callbacks, answered by libxl.
pub struct LibxlRestoreHooks<'a> {
    pub libxl: &'a Libxl,
    pub cbflags: u32,
}

impl RestoreHooks for LibxlRestoreHooks<'_> {
    fn static_data_done(&mut self, missing: u32) -> Result<(), RestoreError> {
        if self.cbflags & cbflag(msg::STATIC_DATA_DONE) == 0 {
            return Ok(());
        }
        match self.libxl.call(&Message::StaticDataDone { missing }) {
            Ok(0) => Ok(()),
            Ok(r) => Err(RestoreError::Hook(format!(
                "libxl rejected the stream's static data (static_data_done({missing:#x}) \
                 returned {r})"
            ))),
            Err(e) => Err(RestoreError::Hook(e.to_string())),
        }
    }
}

/// Restore the libxc stream on `io` into domain `a.domid`, left paused.
pub fn run(
    host: Host<'_>,
    a: &RestoreArgs,
    io: &mut File,
    libxl: &Libxl,
    cfg: &crate::config::Config,
) -> Result<RestoreOutcome, crate::PluginError> {
    log::info!("restoring into domain {}", a.domid);
    // As the save's: root's regular file, appended to (a local `xl migrate`
    // has both helpers write the same one).
    let mut stats = match &cfg.stats {
        Some(p) => Some(StatsWriter::new(Box::new(
            open_append_private(p).map_err(crate::PluginError::Stats)?,
        ))),
        None => None,
    };
    let mut reader = LibxcReader::new(io).map_err(RestoreError::from)?;
    let mut hooks = LibxlRestoreHooks {
        libxl,
        cbflags: a.cbflags,
    };
    let out = restore::restore(
        host,
        &mut reader,
        Target::Existing(a.domid),
        RestoreParams {
            store_evtchn: a.store_evtchn,
            store_domid: a.store_domid,
            console_evtchn: a.console_evtchn,
            console_domid: a.console_domid,
        },
        &mut hooks,
    )?;
    log::info!(
        "restore done: {} pages into domain {} ({} bytes of stream), store gfn {:#x}, console gfn {:#x}",
        out.pages,
        out.domid,
        reader.offset(),
        out.store_gfn,
        out.console_gfn
    );
    if let Some(w) = &mut stats {
        if let Err(e) = w.restore(&out.stats, &out.timeline) {
            log::warn!("writing the stats file: {e}");
        }
    }
    Ok(out)
}
