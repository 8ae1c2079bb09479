//! Whole operations on a domain: save to an image, restore from one, and
//! live migration speaking `xl migrate`'s handshake (docs/REFERENCE.md §7) with xl's
//! ownership rules made strict:
//! - before permission-to-go the source owns the guest: any failure resumes
//!   it, and so does a permission-to-go that could not be sent whole;
//! - the receiver destroys its copy on any failure, and one that gives up
//!   while waiting for permission to go hands the guest back (report status
//!   1, then permission to go, as after a failed start) so that a sender
//!   that already sent it resumes rather than guess;
//! - after permission-to-go a failure is reported with who owns the guest;
//!   signals are held (`cancel::hold`) from just before the rename that
//!   precedes permission to go until the receiver's report, so SIGINT,
//!   SIGTERM or SIGHUP there finish the handover instead of leaving nobody
//!   owning the guest. See docs/FAULTS.md.

use crate::cancel;
use crate::hv::{DomId, DomainConfig, Host, HvError, Hypervisor, ShutdownReason, Toolstack};
use crate::image::{self, ImageError};
use crate::precopy::Policy;
use crate::restore::{
    self, Limits, RestoreError, RestoreHooks, RestoreOutcome, RestoreParams, Target,
};
use crate::save::{self, SaveError, SaveHooks, SaveOptions, SaveOutcome};
use crate::stats::{downtime_parts, instant_ms, Summary, Timeline};
use crate::stream::{handshake, LibxcReader, StreamError};
use crate::transport::timed::Waits;
use crate::transport::Counting;
use std::io::{Read, Write};
use std::time::Instant;

/// Errors of whole operations.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("save failed: {source}; {state}")]
    Save {
        #[source]
        source: SaveError,
        state: String,
    },
    #[error("restore failed: {0}")]
    Restore(RestoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Hv(#[from] HvError),
    #[error("migration failed before the destination took over: {msg}; {state}")]
    BeforeGo { msg: String, state: String },
    #[error("migration failed after permission to go: {msg}; {state}")]
    AfterGo { msg: String, state: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::trust::ConfigRefused),
}

// By hand, not `#[from]`: the restore error is part of this one's text and
// must not be reported again as its cause.
impl From<RestoreError> for MigrateError {
    fn from(e: RestoreError) -> Self {
        MigrateError::Restore(e)
    }
}

/// Resume a source guest after a failed save; says what happened for the
/// error message.
fn resume_source(hv: &dyn Hypervisor, dom: DomId) -> String {
    match hv.domain_info(dom) {
        Ok(info) if info.shutdown == Some(ShutdownReason::Suspend) => match hv.resume(dom, true) {
            Ok(()) => format!("domain {dom} resumed on the source"),
            Err(e) => format!("domain {dom} is suspended and resuming it FAILED: {e}"),
        },
        Ok(info) if info.paused => match hv.unpause(dom) {
            Ok(()) => format!("domain {dom} unpaused on the source"),
            Err(e) => format!("domain {dom} is paused and unpausing it FAILED: {e}"),
        },
        Ok(_) => format!("domain {dom} still running on the source"),
        Err(e) => format!("domain {dom}: state unknown ({e})"),
    }
}

/// The caller's hooks, plus what libxl does at `switch_qemu_logdirty` when
/// xl saves: the device model's own dirty tracking, through the toolstack.
/// Switching it off is left to [`DeviceModelTrackingOff`]: the guest is
/// suspended and the device model stopped by then, so it can wait until
/// the image is out, off the pause.
struct DeviceModelTracking<'a> {
    inner: &'a mut dyn SaveHooks,
    ts: &'a dyn Toolstack,
    /// Tracking is on and still to be switched off.
    on: Option<DomId>,
}

impl SaveHooks for DeviceModelTracking<'_> {
    fn suspend(&mut self, hv: &dyn Hypervisor, dom: DomId) -> Result<(), SaveError> {
        self.inner.suspend(hv, dom)
    }
    fn switch_qemu_logdirty(&mut self, dom: DomId, enable: bool) -> Result<(), SaveError> {
        self.inner.switch_qemu_logdirty(dom, enable)?;
        if enable {
            self.ts.device_model_dirty_log(dom, true)?;
            self.on = Some(dom);
        }
        Ok(())
    }
    fn round_done(&mut self, stats: &crate::stats::RoundStats) {
        self.inner.round_done(stats)
    }
    fn progress(&mut self, done: u64, total: u64) {
        self.inner.progress(done, total)
    }
}

/// Switches the device model's dirty tracking off when dropped: after the
/// image is written on success, before the error is returned on failure.
struct DeviceModelTrackingOff<'a> {
    ts: &'a dyn Toolstack,
    on: Option<DomId>,
}

impl Drop for DeviceModelTrackingOff<'_> {
    fn drop(&mut self) {
        if let Some(dom) = self.on.take() {
            // The image does not depend on it: a failure costs the device
            // model's tracking work while the guest lives on here, nothing
            // more, so it is reported, not returned.
            match self.ts.device_model_dirty_log(dom, false) {
                Ok(()) => log::debug!("domain {dom}: device model's dirty tracking off"),
                Err(e) => log::warn!("switching the device model's dirty tracking off: {e}"),
            }
        }
    }
}

/// Write domain `dom` as an xl save image (xl header, libxl stream around the
/// libxc stream) into `out`. The guest is left suspended on success; on
/// failure it is resumed.
pub fn save_image<'h, W: Write>(
    host: impl Into<Host<'h>>,
    dom: DomId,
    out: W,
    policy: &mut dyn Policy,
    opts: SaveOptions,
    hooks: &mut dyn SaveHooks,
    raw: bool,
) -> Result<(SaveOutcome, W), MigrateError> {
    let host = host.into();
    let (hv, ts) = (host.hv, host.ts);
    let mut w = Counting::new(out);
    let fail = |source: SaveError| MigrateError::Save {
        state: resume_source(hv, dom),
        source,
    };
    if !raw {
        image::write_start(&mut w, &ts.domain_config(dom)?)?;
    }
    let mut hooks = DeviceModelTracking {
        inner: hooks,
        ts,
        on: None,
    };
    let saved = save::save(hv, dom, w, policy, opts, &mut hooks);
    let _tracking_off = DeviceModelTrackingOff { ts, on: hooks.on };
    let (mut outcome, mut w) = match saved {
        Ok(x) => x,
        Err(e) => return Err(fail(e)),
    };
    if !raw {
        // An HVM guest's device model goes after the libxc stream, as libxl
        // writes it (stock `xl restore` needs it to start QEMU again).
        let dm = ts.device_model_state(dom).map_err(|e| MigrateError::Save {
            state: resume_source(hv, dom),
            source: SaveError::Hv(e),
        })?;
        if let Some(dm) = dm {
            if let Err(e) = image::write_device_model(&mut w, &dm) {
                return Err(MigrateError::Save {
                    state: resume_source(hv, dom),
                    source: SaveError::Hook(e.to_string()),
                });
            }
        }
        if let Err(e) = image::write_end(&mut w) {
            return Err(MigrateError::Save {
                state: resume_source(hv, dom),
                source: SaveError::Hook(e.to_string()),
            });
        }
    }
    outcome.timeline.mark("tx:libxl_end");
    if let Err(e) = w.flush() {
        return Err(MigrateError::Save {
            state: resume_source(hv, dom),
            source: SaveError::Hook(format!("flushing the output: {e}")),
        });
    }
    outcome.timeline.mark("tx:flushed");
    // A signal during the tail still stops the save: the image is not
    // handed over yet, so the guest is resumed as on any failure.
    if let Err(c) = cancel::check() {
        return Err(fail(c.into()));
    }
    outcome.summary.total_bytes = w.bytes();
    outcome.summary.downtime_parts =
        downtime_parts(instant_ms(outcome.suspended_at), &[&outcome.timeline]);
    Ok((outcome, w.into_inner()))
}

/// Options for restoring an image.
#[derive(Debug, Clone, Default)]
pub struct RestoreImageOptions {
    /// A bare libxc stream (no xl / libxl layers).
    pub raw: bool,
    /// Name for the new domain (default: the name in the config).
    pub name: Option<String>,
    /// Guest size for raw HVM streams, which carry no config.
    pub max_pfn: Option<u64>,
    /// Accept the image's choices of device-model program, QEMU arguments
    /// and paths (`--trust-config`; see [`crate::trust::check_config`]).
    pub trust_config: bool,
    /// What the image may make this host build (default: the host's).
    pub limits: Option<Limits>,
}

/// Restore an image into a new, paused domain. Reads exactly the image.
pub fn restore_image<'h, R: Read>(
    host: impl Into<Host<'h>>,
    input: &mut R,
    opts: &RestoreImageOptions,
    hooks: &mut dyn RestoreHooks,
) -> Result<RestoreOutcome, MigrateError> {
    let host = host.into();
    let (hv, ts) = (host.hv, host.ts);
    let limits = opts.limits.clone().unwrap_or_else(|| Limits::for_host(hv));
    let config = if opts.raw {
        None
    } else {
        image::read_start_limited(input, &limits.image)?
    };
    check_config(host, config.as_ref(), opts.trust_config, &limits)?;
    let name = opts
        .name
        .clone()
        .or_else(|| config.as_ref().and_then(|c| c.name().map(str::to_string)))
        .unwrap_or_else(|| "restored".to_string());
    let config = config.map(|c| c.named(&name));
    let target = Target::New {
        name: name.clone(),
        max_pfn: opts
            .max_pfn
            .or_else(|| config.as_ref().and_then(DomainConfig::max_pfn)),
        max_vcpu_id: config.as_ref().map_or(0, DomainConfig::max_vcpu_id),
        config: config.clone(),
    };
    let mut reader = LibxcReader::new(&mut *input)?;
    let params = RestoreParams::default();
    let out = restore::restore_limited(host, &mut reader, target, params, hooks, &limits)?;
    let dm = if opts.raw {
        Ok(None)
    } else {
        image::read_end_limited(input, &limits.image)
    };
    let started = dm.map_err(MigrateError::from).and_then(|dm| {
        ts.start_platform(out.domid, dm.as_ref(), config.as_ref())
            .map_err(MigrateError::from)?;
        // A signal while the device model came up: the half-built domain
        // goes, as on any failure.
        cancel::check().map_err(|c| RestoreError::from(c).into())
    });
    if let Err(e) = started {
        if let Err(de) = hv.destroy(out.domid) {
            log::error!("destroying the half-restored domain {}: {de}", out.domid);
        }
        return Err(e);
    }
    Ok(out)
}

/// Before anything is built: the image's config is data this receiver
/// accepts (`trust`), fits its limits, and the toolstack can give the guest
/// what it needs.
fn check_config(
    host: Host<'_>,
    config: Option<&DomainConfig>,
    trust: bool,
    limits: &Limits,
) -> Result<(), MigrateError> {
    if let Some(c) = config {
        crate::trust::check_config(c.raw(), trust)?;
        limits.check_config(c).map_err(RestoreError::from)?;
        host.ts.check_restore_config(c)?;
    }
    Ok(())
}

/// Sender options.
pub struct SendOptions<'a> {
    pub policy: &'a mut dyn Policy,
    pub hooks: &'a mut dyn SaveHooks,
    /// The limits of each wait, applied through the connection's timer
    /// (inert when the connection is not made of `transport::timed::Timed`).
    pub waits: Waits,
}

/// What a finished migration reports.
#[derive(Debug, Clone)]
pub struct MigrateOutcome {
    pub summary: Summary,
    pub rounds: Vec<crate::stats::RoundStats>,
    /// The suspend, on [`crate::stats::monotonic_ms`]'s clock.
    pub suspended_ms: f64,
    /// The sender's marks after the suspend.
    pub timeline: Timeline,
}

impl MigrateOutcome {
    /// Cut the summary's downtime at the receiver's marks too (its
    /// [`RestoreOutcome::timeline`]); meaningful when both ran on one host.
    pub fn merge_receiver(&mut self, rx: &Timeline) {
        self.summary.downtime_parts = downtime_parts(self.suspended_ms, &[&self.timeline, rx]);
    }
}

/// The sending side of `xl migrate`: `data` carries the stream to the
/// receiver, `acks` carries its answers back.
pub fn send<'h, R: Read, W: Write>(
    host: impl Into<Host<'h>>,
    dom: DomId,
    mut acks: R,
    data: W,
    opts: SendOptions<'_>,
) -> Result<MigrateOutcome, MigrateError> {
    let host = host.into();
    let hv = host.hv;
    let started = Instant::now();
    let info = hv.domain_info(dom)?;
    let name = info.name.clone();
    let waits = opts.waits;
    waits.handshake("waiting for the receiver's banner");
    handshake::expect(&mut acks, handshake::BANNER, "receiver banner").map_err(|e| {
        MigrateError::BeforeGo {
            msg: e.to_string(),
            state: format!("domain {dom} still running on the source"),
        }
    })?;
    waits.stream("sending the migration stream");
    let (outcome, mut data) = save_image(
        host,
        dom,
        data,
        opts.policy,
        SaveOptions { live: true },
        opts.hooks,
        false,
    )?;
    let before_go = |msg: String| MigrateError::BeforeGo {
        msg,
        state: resume_source(hv, dom),
    };
    data.flush()
        .map_err(|e| before_go(format!("sending the stream: {e}")))?;
    waits.ready("waiting for the receiver's READY (it restores the guest first)");
    handshake::expect(&mut acks, handshake::READY, "receiver ready")
        .map_err(|e| before_go(format!("{e} (the receiver could not restore the guest)")))?;
    let mut timeline = outcome.timeline;
    timeline.mark("tx:ready");

    // Point of no return. From here a signal waits until the handover is
    // settled (see `cancel::hold`): stopping between permission to go and
    // the receiver's report would leave nobody owning the guest. A signal
    // that came before is honoured now, while the source still owns it.
    let held = cancel::hold();
    if let Some(sig) = held.requested_before() {
        return Err(before_go(cancel::Cancelled(sig).to_string()));
    }
    let away = format!("{name}--migratedaway");
    hv.rename(dom, &away)
        .map_err(|e| before_go(format!("renaming the source to {away}: {e}")))?;
    waits.message("sending permission to go");
    let go = data
        .write_all(handshake::PERMISSION_TO_GO)
        .and_then(|()| data.flush());
    timeline.mark("tx:go");
    if let Err(e) = go {
        // Not all of the message left: the receiver cannot have it whole,
        // so it never unpauses its copy (it destroys it when the connection
        // drops). The source still owns the guest.
        let _ = hv.rename(dom, &name);
        return Err(MigrateError::BeforeGo {
            msg: format!("sending permission to go: {e} (the receiver did not get it)"),
            state: resume_source(hv, dom),
        });
    }
    let after_go = |msg: String| MigrateError::AfterGo {
        msg,
        state: format!(
            "guest state undefined: the source copy is domain {dom} ({away}, suspended); \
             the destination may have a running copy — check it before resuming either"
        ),
    };
    waits.message("waiting for the receiver's report");
    handshake::expect(&mut acks, handshake::REPORT, "receiver report")
        .map_err(|e| after_go(e.to_string()))?;
    let mut rc = [0u8; 1];
    acks.read_exact(&mut rc)
        .map_err(|e| after_go(format!("reading the receiver's status byte: {e}")))?;
    timeline.mark("tx:report");
    let mut summary = outcome.summary;
    summary.downtime_ms = outcome.suspended_at.elapsed().as_secs_f64() * 1e3;
    summary.total_time_ms = started.elapsed().as_secs_f64() * 1e3;
    let suspended_ms = instant_ms(outcome.suspended_at);
    summary.downtime_parts = downtime_parts(suspended_ms, &[&timeline]);
    if rc[0] == 0 {
        if let Err(e) = hv.destroy(dom) {
            log::warn!("migration done but destroying the source domain {dom} failed: {e}");
        }
        drop(held);
        if let Some(sig) = cancel::pending() {
            log::warn!(
                "{sig} arrived after permission to go, too late to stop: \
                 the guest runs on the destination"
            );
        }
        return Ok(MigrateOutcome {
            summary,
            rounds: outcome.rounds,
            suspended_ms,
            timeline,
        });
    }
    // The receiver failed to start its copy: it destroys it and hands the
    // guest back.
    waits.message("waiting for permission to resume");
    handshake::expect(
        &mut acks,
        handshake::PERMISSION_TO_GO,
        "permission to resume",
    )
    .map_err(|e| {
        after_go(format!(
            "destination reported failure {} and then {e}",
            rc[0]
        ))
    })?;
    let _ = hv.rename(dom, &name);
    let state = resume_source(hv, dom);
    Err(MigrateError::BeforeGo {
        msg: format!(
            "the destination failed to start the guest (status {})",
            rc[0]
        ),
        state,
    })
}

/// Receiver options.
#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions {
    /// Leave the received domain paused.
    pub paused: bool,
    /// The limits of each wait (see [`SendOptions::waits`]).
    pub waits: Waits,
    /// Accept the sender's choices of device-model program, QEMU arguments
    /// and paths (see [`crate::trust::check_config`]).
    pub trust_config: bool,
    /// What the stream may make this host build (default: the host's).
    pub limits: Option<Limits>,
}

/// The receiving side: `data` is the stream, `acks` goes back to the sender.
/// On any failure (a timeout or a signal included) the half-received domain
/// is destroyed.
pub fn receive<'h, R: Read, W: Write>(
    host: impl Into<Host<'h>>,
    mut data: R,
    mut acks: W,
    opts: &ReceiveOptions,
) -> Result<RestoreOutcome, MigrateError> {
    let host = host.into();
    let (hv, ts) = (host.hv, host.ts);
    let (paused, waits) = (opts.paused, &opts.waits);
    let limits = &opts.limits.clone().unwrap_or_else(|| Limits::for_host(hv));
    waits.handshake("sending the banner");
    acks.write_all(handshake::BANNER)?;
    acks.flush()?;
    waits.stream("receiving the migration stream");
    let config = image::read_start_limited(&mut data, &limits.image)?;
    check_config(host, config.as_ref(), opts.trust_config, limits)?;
    let name = config
        .as_ref()
        .and_then(DomainConfig::name)
        .unwrap_or("migrated")
        .to_string();
    let incoming = format!("{name}--incoming");
    let config = config.map(|c| c.named(&incoming));
    let target = Target::New {
        name: incoming,
        max_pfn: config.as_ref().and_then(DomainConfig::max_pfn),
        max_vcpu_id: config.as_ref().map_or(0, DomainConfig::max_vcpu_id),
        config: config.clone(),
    };
    let mut reader = LibxcReader::new(&mut data)?;
    let mut out = restore::restore_limited(
        host,
        &mut reader,
        target,
        RestoreParams::default(),
        &mut restore::NoHooks,
        limits,
    )?;
    let dom = out.domid;
    let destroy = |why: String| {
        let r = hv.destroy(dom);
        log::error!("receive failed ({why}); destroyed domain {dom}: {r:?}");
    };
    // The device model comes up before READY, as with xl: a guest that
    // cannot run here is refused while the source still owns it.
    let dm = match image::read_end_limited(&mut data, &limits.image) {
        Ok(dm) => dm,
        Err(e) => {
            destroy(e.to_string());
            return Err(e.into());
        }
    };
    out.timeline.mark("rx:libxl_end");
    if let Err(e) = ts.start_platform(dom, dm.as_ref(), config.as_ref()) {
        destroy(e.to_string());
        return Err(e.into());
    }
    out.timeline.mark("rx:device_model");
    if let Err(c) = cancel::check() {
        destroy(c.to_string());
        return Err(RestoreError::from(c).into());
    }
    waits.message("sending READY");
    if let Err(e) = acks.write_all(handshake::READY).and_then(|()| acks.flush()) {
        destroy(e.to_string());
        return Err(e.into());
    }
    out.timeline.mark("rx:ready");
    waits.message("waiting for permission to go");
    if let Err(e) = handshake::expect(&mut data, handshake::PERMISSION_TO_GO, "permission to go") {
        destroy(e.to_string());
        // Tell a sender that is still there to resume its copy, as after a
        // failed start (a sender waiting for our report reads this; one
        // that has not sent permission to go yet finds it before it does).
        // Even when a signal is why we stopped: without this message a
        // sender that sent permission to go cannot tell who owns the guest.
        let _held = cancel::hold();
        waits.message("handing the guest back");
        let handed_back = [handshake::REPORT, &[1], handshake::PERMISSION_TO_GO]
            .iter()
            .try_for_each(|m| acks.write_all(m))
            .and_then(|()| acks.flush());
        if let Err(we) = handed_back {
            log::debug!("telling the sender to resume: {we}");
        }
        return Err(MigrateError::BeforeGo {
            msg: e.to_string(),
            state: format!("destination copy (domain {dom}) destroyed; the source keeps the guest"),
        });
    }
    // Past permission to go this side owns the guest: a signal waits until
    // it runs and the sender has our report.
    let held = cancel::hold();
    out.timeline.mark("rx:go");
    let started = hv
        .rename(dom, &name)
        .and_then(|()| if paused { Ok(()) } else { hv.unpause(dom) });
    out.timeline.mark("rx:unpause");
    waits.message("sending the report");
    match started {
        Ok(()) => {
            let report = acks
                .write_all(handshake::REPORT)
                .and_then(|()| acks.write_all(&[0]))
                .and_then(|()| acks.flush());
            out.timeline.mark("rx:report");
            log::info!(
                "receiver's marks (ms on this host's monotonic clock): {}",
                out.timeline
                    .marks
                    .iter()
                    .map(|m| format!("{} {:.1}", m.what, m.at_ms))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Err(e) = report {
                // The guest is ours either way; the sender, not hearing
                // back, keeps its suspended copy and resumes nothing.
                log::warn!(
                    "domain {dom} runs here, but reporting that to the sender failed: {e}; \
                     the source keeps a suspended copy ({name}--migratedaway) to destroy"
                );
            }
            drop(held);
            if let Some(sig) = cancel::pending() {
                log::warn!(
                    "{sig} arrived after permission to go, too late to stop: \
                     domain {dom} runs here"
                );
            }
            Ok(out)
        }
        Err(e) => {
            let _ = hv.destroy(dom);
            let report = [handshake::REPORT, &[1], handshake::PERMISSION_TO_GO]
                .iter()
                .try_for_each(|m| acks.write_all(m))
                .and_then(|()| acks.flush());
            Err(MigrateError::AfterGo {
                msg: format!("starting the received guest: {e}"),
                state: match report {
                    Ok(()) => "destination copy destroyed; the source was told to resume".into(),
                    Err(we) => format!(
                        "destination copy destroyed, and telling the source to resume failed \
                         ({we}): its suspended copy ({name}--migratedaway) must be resumed by hand"
                    ),
                },
            })
        }
    }
}
