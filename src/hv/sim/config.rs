//! What a simulated guest is made of: size, flavour, workload, seed, rate.
//!
//! The config is what `sim create` takes and what `domain_config` returns as
//! JSON. A guest never needs it to run: everything it needs to continue is
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
        }
    }
    pub fn from_code(c: u32) -> Option<Self> {
        WorkloadKind::ALL.into_iter().find(|k| k.code() == c)
    }
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Idle => "idle",
            WorkloadKind::Uniform => "uniform",
            WorkloadKind::HotSet => "hot-set",
            WorkloadKind::Streaming => "streaming",
            WorkloadKind::ReadMostly => "read-mostly",
            WorkloadKind::PhaseChange => "phase-change",
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
        if self.params.hot_permille > 1000 || self.params.write_permille > 1000 {
            return bad("per-mille parameters must be at most 1000".into());
        }
        Ok(())
    }
}
