//! Whole operations on a domain: save to an image, restore from one, and
//! live migration speaking `xl migrate`'s handshake (reference §3) with xl's
//! ownership rules made strict:
//! - before permission-to-go the source owns the guest: any failure resumes it;
//! - the receiver destroys its copy on any failure;
//! - after permission-to-go a failure is reported with who owns the guest.

use crate::hv::{DomId, HvError, Hypervisor, ShutdownReason};
use crate::image::{self, ImageError};
use crate::precopy::Policy;
use crate::restore::{
    self, Limits, RestoreError, RestoreHooks, RestoreOutcome, RestoreParams, Target,
};
use crate::save::{self, SaveError, SaveHooks, SaveOptions, SaveOutcome};
use crate::stats::Summary;
use crate::stream::{handshake, LibxcReader, StreamError};
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

/// Write domain `dom` as an xl save image (xl header, libxl stream around the
/// libxc stream) into `out`. The guest is left suspended on success; on
/// failure it is resumed.
pub fn save_image<W: Write>(
    hv: &dyn Hypervisor,
    dom: DomId,
    out: W,
    policy: &mut dyn Policy,
    opts: SaveOptions,
    hooks: &mut dyn SaveHooks,
    raw: bool,
) -> Result<(SaveOutcome, W), MigrateError> {
    let mut w = Counting::new(out);
    let fail = |source: SaveError| MigrateError::Save {
        state: resume_source(hv, dom),
        source,
    };
    if !raw {
        let info = hv.domain_info(dom)?;
        let cfg = image::config_json(&info, hv.domain_config(dom)?);
        image::write_start(&mut w, &cfg)?;
    }
    let (mut outcome, mut w) = match save::save(hv, dom, w, policy, opts, hooks) {
        Ok(x) => x,
        Err(e) => return Err(fail(e)),
    };
    if !raw {
        // An HVM guest's device model goes after the libxc stream, as libxl
        // writes it (stock `xl restore` needs it to start QEMU again).
        let dm = hv.device_model_state(dom).map_err(|e| MigrateError::Save {
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
    if let Err(e) = w.flush() {
        return Err(MigrateError::Save {
            state: resume_source(hv, dom),
            source: SaveError::Hook(format!("flushing the output: {e}")),
        });
    }
    outcome.summary.total_bytes = w.bytes();
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
    /// What the image may make this host build (default: the host's).
    pub limits: Option<Limits>,
}

/// Restore an image into a new, paused domain. Reads exactly the image.
pub fn restore_image<R: Read>(
    hv: &dyn Hypervisor,
    input: &mut R,
    opts: &RestoreImageOptions,
    hooks: &mut dyn RestoreHooks,
) -> Result<RestoreOutcome, MigrateError> {
    let limits = opts.limits.clone().unwrap_or_else(|| Limits::for_host(hv));
    let config = if opts.raw {
        None
    } else {
        image::read_start_limited(input, &limits.image)?
    };
    if let Some(c) = &config {
        hv.check_restore_config(c)?;
    }
    let facts = config.as_ref().map(image::config_facts).unwrap_or_default();
    limits.check_config(&facts).map_err(RestoreError::from)?;
    let name = opts
        .name
        .clone()
        .or(facts.name)
        .unwrap_or_else(|| "restored".to_string());
    let target = Target::New {
        name: name.clone(),
        max_pfn: opts.max_pfn.or(facts.max_pfn),
        max_vcpu_id: facts.max_vcpu_id,
        config: facts.host_config,
        pvh: facts.pvh,
    };
    let mut reader = LibxcReader::new(&mut *input)?;
    let params = RestoreParams::default();
    let out = restore::restore_limited(hv, &mut reader, target, params, hooks, &limits)?;
    let dm = if opts.raw {
        Ok(None)
    } else {
        image::read_end_limited(input, &limits.image)
    };
    let started = dm.map_err(MigrateError::from).and_then(|dm| {
        let config = config.map(|c| named(c, &name));
        hv.start_platform(out.domid, dm.as_ref(), config.as_ref())
            .map_err(MigrateError::from)
    });
    if let Err(e) = started {
        if let Err(de) = hv.destroy(out.domid) {
            log::error!("destroying the half-restored domain {}: {de}", out.domid);
        }
        return Err(e);
    }
    Ok(out)
}

/// The image's config with the name the restored domain actually has.
fn named(mut config: serde_json::Value, name: &str) -> serde_json::Value {
    if config["c_info"].is_object() {
        config["c_info"]["name"] = serde_json::Value::from(name);
    }
    config
}

/// Sender options.
pub struct SendOptions<'a> {
    pub policy: &'a mut dyn Policy,
    pub hooks: &'a mut dyn SaveHooks,
}

/// What a finished migration reports.
#[derive(Debug, Clone)]
pub struct MigrateOutcome {
    pub summary: Summary,
    pub rounds: Vec<crate::stats::RoundStats>,
}

/// The sending side of `xl migrate`: `data` carries the stream to the
/// receiver, `acks` carries its answers back.
pub fn send<R: Read, W: Write>(
    hv: &dyn Hypervisor,
    dom: DomId,
    mut acks: R,
    data: W,
    opts: SendOptions<'_>,
) -> Result<MigrateOutcome, MigrateError> {
    let started = Instant::now();
    let info = hv.domain_info(dom)?;
    let name = info.name.clone();
    handshake::expect(&mut acks, handshake::BANNER, "receiver banner").map_err(|e| {
        MigrateError::BeforeGo {
            msg: e.to_string(),
            state: format!("domain {dom} still running on the source"),
        }
    })?;
    let (outcome, mut data) = save_image(
        hv,
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
    handshake::expect(&mut acks, handshake::READY, "receiver ready")
        .map_err(|e| before_go(format!("{e} (the receiver could not restore the guest)")))?;

    // Point of no return starts: rename, then permission to go.
    let away = format!("{name}--migratedaway");
    hv.rename(dom, &away)
        .map_err(|e| before_go(format!("renaming the source to {away}: {e}")))?;
    let after_go = |msg: String| MigrateError::AfterGo {
        msg,
        state: format!(
            "guest state undefined: the source copy is domain {dom} ({away}, suspended); \
             the destination may have a running copy — check it before resuming either"
        ),
    };
    data.write_all(handshake::PERMISSION_TO_GO)
        .and_then(|()| data.flush())
        .map_err(|e| after_go(format!("sending permission to go: {e}")))?;
    handshake::expect(&mut acks, handshake::REPORT, "receiver report")
        .map_err(|e| after_go(e.to_string()))?;
    let mut rc = [0u8; 1];
    acks.read_exact(&mut rc)
        .map_err(|e| after_go(format!("reading the receiver's status byte: {e}")))?;
    let mut summary = outcome.summary;
    summary.downtime_ms = outcome.suspended_at.elapsed().as_secs_f64() * 1e3;
    summary.total_time_ms = started.elapsed().as_secs_f64() * 1e3;
    if rc[0] == 0 {
        if let Err(e) = hv.destroy(dom) {
            log::warn!("migration done but destroying the source domain {dom} failed: {e}");
        }
        return Ok(MigrateOutcome {
            summary,
            rounds: outcome.rounds,
        });
    }
    // The receiver failed to start its copy: it destroys it and hands the
    // guest back.
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

/// The receiving side: `data` is the stream, `acks` goes back to the sender.
/// On any failure the half-received domain is destroyed.
pub fn receive<R: Read, W: Write>(
    hv: &dyn Hypervisor,
    data: R,
    acks: W,
    paused: bool,
) -> Result<RestoreOutcome, MigrateError> {
    receive_limited(hv, data, acks, paused, &Limits::for_host(hv))
}

/// As [`receive`], within `limits`.
pub fn receive_limited<R: Read, W: Write>(
    hv: &dyn Hypervisor,
    mut data: R,
    mut acks: W,
    paused: bool,
    limits: &Limits,
) -> Result<RestoreOutcome, MigrateError> {
    acks.write_all(handshake::BANNER)?;
    acks.flush()?;
    let config = image::read_start_limited(&mut data, &limits.image)?;
    if let Some(c) = &config {
        hv.check_restore_config(c)?;
    }
    let facts = config.as_ref().map(image::config_facts).unwrap_or_default();
    limits.check_config(&facts).map_err(RestoreError::from)?;
    let name = facts.name.clone().unwrap_or_else(|| "migrated".into());
    let target = Target::New {
        name: format!("{name}--incoming"),
        max_pfn: facts.max_pfn,
        max_vcpu_id: facts.max_vcpu_id,
        config: facts.host_config,
        pvh: facts.pvh,
    };
    let mut reader = LibxcReader::new(&mut data)?;
    let out = restore::restore_limited(
        hv,
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
    let config = config.map(|c| named(c, &format!("{name}--incoming")));
    if let Err(e) = hv.start_platform(dom, dm.as_ref(), config.as_ref()) {
        destroy(e.to_string());
        return Err(e.into());
    }
    if let Err(e) = acks.write_all(handshake::READY).and_then(|()| acks.flush()) {
        destroy(e.to_string());
        return Err(e.into());
    }
    if let Err(e) = handshake::expect(&mut data, handshake::PERMISSION_TO_GO, "permission to go") {
        destroy(e.to_string());
        return Err(MigrateError::BeforeGo {
            msg: e.to_string(),
            state: format!("destination copy (domain {dom}) destroyed; the source keeps the guest"),
        });
    }
    let started = hv
        .rename(dom, &name)
        .and_then(|()| if paused { Ok(()) } else { hv.unpause(dom) });
    acks.write_all(handshake::REPORT)?;
    match started {
        Ok(()) => {
            acks.write_all(&[0])?;
            acks.flush()?;
            Ok(out)
        }
        Err(e) => {
            acks.write_all(&[1])?;
            let _ = hv.destroy(dom);
            acks.write_all(handshake::PERMISSION_TO_GO)?;
            acks.flush()?;
            Err(MigrateError::AfterGo {
                msg: format!("starting the received guest: {e}"),
                state: "destination copy destroyed; the source was told to resume".into(),
            })
        }
    }
}
