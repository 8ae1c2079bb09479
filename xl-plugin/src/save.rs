//! `--save-domain`: xc_domain_save's place, run by the rxmigrate engine.
//!
//! libxl has written its header and the LIBXC_CONTEXT record to the stream
//! fd; we write exactly one libxc stream after them, asking libxl over the
//! pipes to suspend the guest and (HVM) to switch QEMU's dirty tracking, and
//! report with `complete`. libxl then appends its own records.

use crate::args::{SaveArgs, XCFLAGS_LIVE};
use crate::proto::{cbflag, msg, Libxl, Message};
use rxmigrate::hv::{DomId, Hypervisor};
use rxmigrate::save::{self, SaveError, SaveHooks, SaveOptions};
use rxmigrate::stats::{RoundStats, StatsWriter, Summary};
use rxmigrate::transport::Counting;
use rxmigrate::trust::files::open_append_private;
use std::fs::File;
use std::io::{BufWriter, Write};

/// The engine's callbacks, answered by libxl.
pub struct LibxlSaveHooks<'a> {
    pub libxl: &'a Libxl,
    pub cbflags: u32,
    pub stats: Option<StatsWriter>,
}

impl LibxlSaveHooks<'_> {
    fn has(&self, m: u16) -> bool {
        self.cbflags & cbflag(m) != 0
    }
}

impl SaveHooks for LibxlSaveHooks<'_> {
    fn suspend(&mut self, _hv: &dyn Hypervisor, dom: DomId) -> Result<(), SaveError> {
        if !self.has(msg::SUSPEND) {
            return Err(SaveError::Hook(format!(
                "libxl offers no suspend callback (cbflags {:#x}); cannot stop domain {dom}",
                self.cbflags
            )));
        }
        log::debug!("asking libxl to suspend domain {dom}");
        match self.libxl.call(&Message::Suspend) {
            // libxl's suspend callback answers 1 for success.
            Ok(1) => Ok(()),
            Ok(r) => Err(SaveError::Suspend(format!(
                "libxl could not suspend domain {dom} (suspend callback returned {r})"
            ))),
            Err(e) => Err(SaveError::Hook(e.to_string())),
        }
    }

    fn switch_qemu_logdirty(&mut self, dom: DomId, enable: bool) -> Result<(), SaveError> {
        if !self.has(msg::SWITCH_QEMU_LOGDIRTY) {
            return Err(SaveError::Hook(format!(
                "libxl offers no switch_qemu_logdirty callback (cbflags {:#x}) for HVM domain {dom}",
                self.cbflags
            )));
        }
        match self
            .libxl
            .call(&Message::SwitchQemuLogdirty { domid: dom, enable })
        {
            Ok(0) => Ok(()),
            Ok(r) => Err(SaveError::Hook(format!(
                "libxl could not {} QEMU's dirty tracking for domain {dom} (returned {r})",
                if enable { "enable" } else { "disable" }
            ))),
            Err(e) => Err(SaveError::Hook(e.to_string())),
        }
    }

    fn round_done(&mut self, r: &RoundStats) {
        log::info!("{}", round_line(r));
        let doing = format!(
            "Memory, round {}{}",
            r.round,
            if r.last { " (final)" } else { "" }
        );
        let m = Message::Progress {
            context: crate::logger::CONTEXT,
            doing_what: &doing,
            done: r.pages_sent,
            total: r.dirty_pages.max(r.pages_sent),
        };
        if let Err(e) = self.libxl.send(&m) {
            log::warn!("{e}");
        }
        if let Some(w) = &mut self.stats {
            if let Err(e) = w.round(r) {
                log::warn!("writing the stats file: {e}");
            }
        }
    }
}

/// One round, for xl's log.
pub fn round_line(r: &RoundStats) -> String {
    format!(
        "round {}{}: {} dirty, {} hot, {} sent, {} skipped, {:.1} MiB in {:.0} ms \
         ({:.1} MiB/s), expected downtime {:.0} ms",
        r.round,
        if r.last { " (final)" } else { "" },
        r.dirty_pages,
        r.hot_pages,
        r.pages_sent,
        r.pages_skipped,
        r.bytes as f64 / 1048576.0,
        r.duration_ms,
        r.bandwidth / 1048576.0,
        r.expected_downtime_ms
    )
}

/// Write domain `a.domid` as one libxc stream on `io`. The guest is left
/// suspended on success; on failure libxl decides (it resumes it).
pub fn run(
    hv: &dyn Hypervisor,
    a: &SaveArgs,
    io: File,
    libxl: &Libxl,
    cfg: &crate::config::Config,
) -> Result<Summary, crate::PluginError> {
    let live = a.xcflags & XCFLAGS_LIVE != 0;
    let mut policy = cfg.policy()?;
    if live {
        log::info!(
            "live save of domain {} with {}",
            a.domid,
            cfg.describe_policy()
        );
    } else {
        log::info!("non-live save of domain {}", a.domid);
    }
    // We run as root: appended to only if it is a regular file of root's,
    // created 0600, never through a link.
    let stats = match &cfg.stats {
        Some(p) => Some(StatsWriter::new(Box::new(
            open_append_private(p).map_err(crate::PluginError::Stats)?,
        ))),
        None => None,
    };
    let mut hooks = LibxlSaveHooks {
        libxl,
        cbflags: a.cbflags,
        stats,
    };
    let out = BufWriter::with_capacity(1 << 20, Counting::new(io));
    let (outcome, out) = save::save(
        hv,
        a.domid,
        out,
        policy.as_mut(),
        SaveOptions { live },
        &mut hooks,
    )?;
    // Everything must be on the fd before libxl hears `complete`.
    let counting = out
        .into_inner()
        .map_err(|e| crate::PluginError::Flush(e.into_error()))?;
    let mut summary = outcome.summary;
    summary.total_bytes = counting.bytes();
    // The downtime so far: the guest is still suspended until libxl resumes it.
    log::info!("save done, {summary}");
    if let Some(w) = &mut hooks.stats {
        if let Err(e) = w.summary(&summary) {
            log::warn!("writing the stats file: {e}");
        }
    }
    let mut file = counting.into_inner();
    file.flush().map_err(crate::PluginError::Flush)?;
    Ok(summary)
}
