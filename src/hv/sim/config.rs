//! What a simulated guest is made of: size, flavour, workload, seed, rate.
//!
//! The config is what `sim create` takes and what the toolstack's
//! `domain_config` carries as JSON (the `rxmigrate` section of the xl
//! config). A guest never needs it to run: everything it needs to continue is
//! in its RAM (the workload descriptor page) and its vCPU context.

use crate::hv::{GuestType, HvError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Largest simulated guest (64 GiB): keeps frame numbers and the host's
/// per-domain tables small.
pub const MAX_MEM_MIB: u64 = 64 * 1024;
/// Most vCPUs a simulated guest may have (Xen's PV limit is higher; the
/// workload runs on vCPU 0, the others idle).
pub const MAX_VCPUS: u32 = 64;

/// The deterministic workloads a sim guest can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Writes nothing.
    Idle,
    /// One line of a uniformly random data page per step.
    Uniform,
    /// A small hot set written constantly (Zipf-like), the rest rarely.
    HotSet,
    /// A memtester-like sweep: each step rewrites the next page entirely.
    Streaming,
    /// Mostly reads of random pages; a few writes to a small hot set.
    ReadMostly,
    /// Like `HotSet`, but the hot set moves every `phase_steps` steps.
    PhaseChange,
    /// A recorded program's page writes, replayed (`trace:FILE[@Nx]`, the
    /// file in [`GuestConfig::trace`]).
    Trace,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 6] = [
        WorkloadKind::Idle,
        WorkloadKind::Uniform,
        WorkloadKind::HotSet,
        WorkloadKind::Streaming,
        WorkloadKind::ReadMostly,
        WorkloadKind::PhaseChange,
    ];
    pub fn code(self) -> u32 {
        match self {
            WorkloadKind::Idle => 0,
            WorkloadKind::Uniform => 1,
            WorkloadKind::HotSet => 2,
            WorkloadKind::Streaming => 3,
            WorkloadKind::ReadMostly => 4,
            WorkloadKind::PhaseChange => 5,
            WorkloadKind::Trace => 6,
        }
    }
    pub fn from_code(c: u32) -> Option<Self> {
        (c == 6)
            .then_some(WorkloadKind::Trace)
            .or_else(|| WorkloadKind::ALL.into_iter().find(|k| k.code() == c))
    }
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Idle => "idle",
            WorkloadKind::Uniform => "uniform",
            WorkloadKind::HotSet => "hot-set",
            WorkloadKind::Streaming => "streaming",
            WorkloadKind::ReadMostly => "read-mostly",
            WorkloadKind::PhaseChange => "phase-change",
            WorkloadKind::Trace => "trace",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadKind {
    type Err = HvError;
    fn from_str(s: &str) -> Result<Self> {
        WorkloadKind::ALL
            .into_iter()
            .find(|k| k.name() == s || k.name().replace('-', "_") == s)
            .ok_or_else(|| HvError::Invalid {
                op: "workload",
                msg: format!(
                    "unknown workload {s:?} (one of: {})",
                    WorkloadKind::ALL.map(|k| k.name()).join(", ")
                ),
            })
    }
}

/// A recorded trace to replay: its file (absolute, so the guest process
/// and the oracle find it from anywhere) and the speed, in per mille of the
/// recorded rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSpec {
    pub path: std::path::PathBuf,
    pub speed_permille: u32,
}

/// Fastest and slowest replay: 1000× and 0.001× the recorded rate.
pub const MAX_TRACE_SPEED_PERMILLE: u32 = 1_000_000;

impl TraceSpec {
    /// `FILE`, `FILE@2x` or `FILE@0.25x` (the part after `trace:`).
    pub fn parse(s: &str) -> Result<TraceSpec> {
        let bad = |msg: String| HvError::Invalid {
            op: "workload",
            msg,
        };
        // The part after the last '@', unless it is a directory's name.
        let (file, speed) = match s.rsplit_once('@') {
            Some((f, x)) if !x.contains('/') => {
                let v: f64 = x
                    .strip_suffix('x')
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad(format!("trace:{s}: speed {x:?} is not like 2x or 0.5x")))?;
                let pm = (v * 1000.0).round();
                if !(1.0..=MAX_TRACE_SPEED_PERMILLE as f64).contains(&pm) {
                    return Err(bad(format!(
                        "trace:{s}: speed {x} out of range 0.001x..=1000x"
                    )));
                }
                (f, pm as u32)
            }
            _ => (s, 1000),
        };
        if file.is_empty() {
            return Err(bad(
                "trace: needs a file (trace:FILE or trace:FILE@2x)".into()
            ));
        }
        let path = std::fs::canonicalize(file)
            .map_err(|e| HvError::io(format!("trace file {file}"), e))?;
        Ok(TraceSpec {
            path,
            speed_permille: speed,
        })
    }

    /// `trace:FILE-STEM` plus `@Nx` when not 1×: a short name for tables.
    pub fn label(&self) -> String {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem.strip_suffix(".rxtrace").unwrap_or(&stem).to_string();
        if self.speed_permille == 1000 {
            format!("trace:{stem}")
        } else {
            format!("trace:{stem}@{}x", self.speed_permille as f64 / 1000.0)
        }
    }
}

/// A workload as the command line names it: a kind, or `trace:FILE[@Nx]`.
pub fn parse_workload(s: &str) -> Result<(WorkloadKind, Option<TraceSpec>)> {
    match s.strip_prefix("trace:") {
        Some(rest) => Ok((WorkloadKind::Trace, Some(TraceSpec::parse(rest)?))),
        None if s == "trace" => Err(HvError::Invalid {
            op: "workload",
            msg: "trace needs a file: trace:FILE or trace:FILE@2x".into(),
        }),
        None => Ok((s.parse()?, None)),
    }
}

/// Tuning of the workloads; zero means "the default for this guest size".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkloadParams {
    /// Pages in the hot set (hot-set, read-mostly, phase-change).
    pub hot_pages: u64,
    /// Per mille of steps that write the hot set (hot-set, phase-change).
    pub hot_permille: u32,
    /// Per mille of steps that write (read-mostly).
    pub write_permille: u32,
    /// Steps per phase (phase-change).
    pub phase_steps: u64,
}

/// How the simulated host tracks the guest's writes for log-dirty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackingMode {
    /// userfaultfd async write-protect + PAGEMAP_SCAN (Linux 6.7+).
    Uffd,
    /// A software dirty bitmap in shared memory, set by the guest.
    Soft,
}

impl TrackingMode {
    pub fn code(self) -> u32 {
        match self {
            TrackingMode::Uffd => 1,
            TrackingMode::Soft => 2,
        }
    }
    pub fn from_code(c: u32) -> Option<Self> {
        match c {
            1 => Some(TrackingMode::Uffd),
            2 => Some(TrackingMode::Soft),
            _ => None,
        }
    }
}

impl fmt::Display for TrackingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrackingMode::Uffd => "uffd",
            TrackingMode::Soft => "soft",
        })
    }
}

impl FromStr for TrackingMode {
    type Err = HvError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uffd" => Ok(TrackingMode::Uffd),
            "soft" => Ok(TrackingMode::Soft),
            _ => Err(HvError::Invalid {
                op: "tracking",
                msg: format!("unknown tracking mode {s:?} (uffd or soft)"),
            }),
        }
    }
}

/// A simulated guest as `create_guest` builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestConfig {
    pub name: String,
    pub guest_type: GuestType,
    pub mem_mib: u64,
    pub vcpus: u32,
    pub workload: WorkloadKind,
    #[serde(default)]
    pub params: WorkloadParams,
    pub seed: u64,
    /// Steps (page writes) per second; 0 = as fast as it can.
    #[serde(default)]
    pub rate: u64,
    /// Force a tracking mode for this guest (else env
    /// `RXMIGRATE_SIM_TRACKING`, else probe the kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingMode>,
    /// Start paused at step 0 (`xl create -p`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// The recorded trace of a `Trace` workload (its rate, not `rate`,
    /// sets the guest's speed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceSpec>,
}

impl GuestConfig {
    /// A small guest with defaults, for tests and examples.
    pub fn new(name: &str, guest_type: GuestType, mem_mib: u64, workload: WorkloadKind) -> Self {
        GuestConfig {
            name: name.to_string(),
            guest_type,
            mem_mib,
            vcpus: 1,
            workload,
            params: WorkloadParams::default(),
            seed: 1,
            rate: 0,
            tracking: None,
            paused: false,
            trace: None,
        }
    }

    pub fn pages(&self) -> u64 {
        self.mem_mib * 256
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(HvError::Invalid { op: "create", msg });
        if self.name.is_empty() || self.name.len() > 64 {
            return bad(format!("domain name {:?} must be 1..=64 bytes", self.name));
        }
        if self.name.chars().any(|c| c.is_control() || c == '/') || self.name.parse::<u32>().is_ok()
        {
            return bad(format!(
                "domain name {:?} must not be a number or contain '/' or control characters",
                self.name
            ));
        }
        if self.mem_mib == 0 || self.mem_mib > MAX_MEM_MIB {
            return bad(format!(
                "memory {} MiB out of range 1..={MAX_MEM_MIB}",
                self.mem_mib
            ));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return bad(format!("vcpus {} out of range 1..={MAX_VCPUS}", self.vcpus));
        }
        if (self.workload == WorkloadKind::Trace) != self.trace.is_some() {
            return bad("a trace workload needs a trace file, and only it takes one".into());
        }
        if self.params.hot_permille > 1000 || self.params.write_permille > 1000 {
            return bad("per-mille parameters must be at most 1000".into());
        }
        Ok(())
    }
}
