//! What a suite is: guest sizes × workload scenarios × policies, and the
//! workload scenarios themselves.
//!
//! Write rates are given relative to the link (pages written per second as a
//! fraction of the pages per second the link carries), so a scenario means
//! the same thing — converging, not converging — at any `--bandwidth`.

use super::contents::Contents;
use super::BenchError;
use crate::hv::sim::{parse_workload, TraceSpec, WorkloadKind, WorkloadParams};
use crate::hv::GuestType;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Why a scenario is in the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioClass {
    /// A writable working set that does not shrink: what the paper targets.
    Paper,
    /// Plain pre-copy already converges.
    Converges,
    /// Nothing converges: writes near the link rate.
    NeverConverges,
    /// A real program's recorded page writes (`trace:FILE`).
    Recorded,
}

impl ScenarioClass {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioClass::Paper => "paper",
            ScenarioClass::Converges => "converges",
            ScenarioClass::NeverConverges => "never-converges",
            ScenarioClass::Recorded => "recorded",
        }
    }
}

/// One workload as the bench runs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    pub class: ScenarioClass,
    #[serde(serialize_with = "ser_kind")]
    pub kind: WorkloadKind,
    /// Page writes per second as a fraction of the link's pages per second;
    /// `None` for a workload that writes nothing.
    pub write_load: Option<f64>,
    #[serde(skip)]
    pub params: WorkloadParams,
    /// Hot set as a fraction of guest memory (else the sim's 1/64).
    pub hot_fraction: Option<f64>,
    pub about: &'static str,
    /// The recorded trace of a `trace:FILE[@Nx]` scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceScenario>,
}

/// A trace scenario: the file and speed, and the guest step rate they give.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceScenario {
    pub spec: TraceSpec,
    pub steps_per_s: u64,
}

fn ser_kind<S: serde::Serializer>(k: &WorkloadKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

/// Steps per second of an idle guest: it writes nothing, but an unthrottled
/// loop would take a whole core from the migration on a small machine.
const IDLE_STEPS_PER_S: u64 = 1000;

/// Per mille of read-mostly steps that write (the sim's default).
const READ_MOSTLY_WRITE_PERMILLE: u32 = 20;

impl Scenario {
    /// The workload parameters for a guest of `size_mib`.
    pub fn params_for(&self, size_mib: u64) -> WorkloadParams {
        let mut p = self.params;
        if let Some(f) = self.hot_fraction {
            p.hot_pages = ((size_mib * 256) as f64 * f).round().max(1.0) as u64;
        }
        p
    }

    /// Guest steps per second for a link of `bandwidth` bytes per second.
    pub fn steps_per_s(&self, bandwidth: u64) -> u64 {
        if let Some(t) = &self.trace {
            // Recorded rate (times the asked speed), whatever the link.
            return t.steps_per_s;
        }
        let Some(load) = self.write_load else {
            return IDLE_STEPS_PER_S;
        };
        let link_pages = bandwidth as f64 / 4096.0;
        let writes = load * link_pages;
        // Only some read-mostly steps write.
        let steps_per_write = match self.kind {
            WorkloadKind::ReadMostly => {
                let pm = match self.params.write_permille {
                    0 => READ_MOSTLY_WRITE_PERMILLE,
                    p => p,
                };
                1000.0 / pm as f64
            }
            _ => 1.0,
        };
        ((writes * steps_per_write).round() as u64).max(1)
    }
}

/// The scenarios `rxmigrate bench` knows, in suite order.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "hot-set",
            class: ScenarioClass::Paper,
            kind: WorkloadKind::HotSet,
            // Calibrated so that the writable working set does not shrink
            // (xen33 runs all its rounds); at 0.5 and 2 it still converges.
            write_load: Some(4.0),
            params: WorkloadParams::default(),
            hot_fraction: None,
            about: "90% of writes to a hot set of 1/64 of memory (Zipf-like), 10% anywhere; \
                    64-byte writes at 4x the link's page rate",
            trace: None,
        },
        Scenario {
            name: "read-mostly",
            class: ScenarioClass::Paper,
            kind: WorkloadKind::ReadMostly,
            // With the sim's defaults (2% writes, hot set 1/64) the writes
            // are so concentrated that pre-copy converges; this is the
            // non-shrinking variant. 2x, not more: the guest must reach its
            // step rate (5 steps per write) on a small shared machine.
            write_load: Some(2.0),
            params: WorkloadParams {
                write_permille: 200,
                ..WorkloadParams::default()
            },
            hot_fraction: Some(1.0 / 16.0),
            about: "random reads; 20% of steps write a hot set of 1/16 of memory (Zipf-like), \
                    64-byte writes at 2x the link's page rate",
            trace: None,
        },
        Scenario {
            name: "idle",
            class: ScenarioClass::Converges,
            kind: WorkloadKind::Idle,
            write_load: None,
            params: WorkloadParams::default(),
            hot_fraction: None,
            about: "writes nothing",
            trace: None,
        },
        Scenario {
            name: "uniform-low",
            class: ScenarioClass::Converges,
            kind: WorkloadKind::Uniform,
            write_load: Some(0.02),
            params: WorkloadParams::default(),
            hot_fraction: None,
            about: "uniformly random writes at 2% of the link's page rate",
            trace: None,
        },
        Scenario {
            name: "streaming",
            class: ScenarioClass::NeverConverges,
            kind: WorkloadKind::Streaming,
            write_load: Some(0.9),
            params: WorkloadParams::default(),
            hot_fraction: None,
            about: "memtester-like sweep rewriting whole pages at 90% of the link's page rate",
            trace: None,
        },
    ]
}

/// A `trace:FILE[@Nx]` scenario, its file loaded and checked now so a bad
/// file stops the bench before the first migration. Its name and note are
/// leaked: a handful per bench process, for its whole life.
fn trace_scenario(name: &str) -> Result<Scenario, BenchError> {
    let bad = |msg: String| BenchError::Config {
        what: "workload",
        msg,
    };
    let (kind, spec) = parse_workload(name).map_err(|e| bad(e.to_string()))?;
    let spec = spec.ok_or_else(|| bad(format!("{name:?} is not a trace")))?;
    let (replay, _) = crate::hv::sim::trace::load(&spec.path).map_err(|e| bad(e.to_string()))?;
    let steps_per_s =
        (replay.ticks_per_s as u128 * spec.speed_permille as u128 / 1000).max(1) as u64;
    let (trace, _) =
        crate::hv::sim::trace::Trace::read(&spec.path).map_err(|e| bad(e.to_string()))?;
    let about = format!(
        "recorded: {} ({} pages, {} page writes per pass of {:.1} s)",
        trace.note,
        replay.footprint,
        replay.writes(),
        replay.period() as f64 / replay.ticks_per_s as f64
    );
    Ok(Scenario {
        name: Box::leak(spec.label().into_boxed_str()),
        class: ScenarioClass::Recorded,
        kind,
        write_load: None,
        params: WorkloadParams::default(),
        hot_fraction: None,
        about: Box::leak(about.into_boxed_str()),
        trace: Some(TraceScenario { spec, steps_per_s }),
    })
}

/// Look a scenario up by name (`trace:FILE[@Nx]`: a recorded trace).
pub fn scenario(name: &str) -> Result<Scenario, BenchError> {
    if name.starts_with("trace:") {
        return trace_scenario(name);
    }
    scenarios()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| BenchError::Config {
            what: "workload",
            msg: format!(
                "unknown workload scenario {name:?} (one of: {})",
                scenarios()
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Parse a guest size such as `256M`, `1G`, `512MiB` or `64` (MiB) into MiB.
pub fn parse_size_mib(s: &str) -> Result<u64, BenchError> {
    let bad = |msg: String| BenchError::Config { what: "size", msg };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        bad(format!(
            "guest size {s:?}: expected a number of MiB or e.g. 256M, 1G"
        ))
    })?;
    let mib = match unit.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => n,
        "g" | "gb" | "gib" => n.saturating_mul(1024),
        other => {
            return Err(bad(format!(
                "guest size {s:?}: unknown unit {other:?} (M or G)"
            )))
        }
    };
    if mib == 0 {
        return Err(bad(format!("guest size {s:?}: must be at least 1 MiB")));
    }
    Ok(mib)
}

/// Everything a bench run needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub sizes_mib: Vec<u64>,
    pub scenarios: Vec<Scenario>,
    pub policies: Vec<String>,
    /// Runs per case; the report takes the median.
    pub repeats: u32,
    /// Link rate, bytes per second (the sender's rate limiter).
    pub bandwidth: u64,
    /// Workload seed: the same for every policy and repeat of a case.
    pub seed: u64,
    pub guest_type: GuestType,
    /// How long the guest runs before the migration starts.
    pub warmup: Duration,
    /// What the guest's memory holds when it starts.
    pub contents: Contents,
    /// Over a veth pair into a network namespace shaped with tc (root only)
    /// instead of the sender's rate limiter.
    pub netns: bool,
    /// Where the two simulated hosts keep their state, in a directory of
    /// their own made (and removed afterwards) under this one.
    pub work_dir: PathBuf,
}

impl BenchConfig {
    /// The default suite: the paper's cases, converging and non-converging
    /// ones, at 256 MiB and 1 GiB, three repeats, over 1 Gbit/s.
    pub fn full(work_dir: PathBuf) -> Self {
        BenchConfig {
            sizes_mib: vec![256, 1024],
            scenarios: scenarios(),
            policies: crate::precopy::POLICY_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            repeats: 3,
            bandwidth: 125_000_000,
            seed: 1,
            guest_type: GuestType::Pv,
            warmup: Duration::from_millis(500),
            contents: Contents::Filled,
            netns: false,
            work_dir,
        }
    }

    /// A smoke suite that runs in seconds: small guests, one repeat, one
    /// scenario of each class.
    pub fn quick(work_dir: PathBuf) -> Self {
        let keep = ["hot-set", "idle", "streaming"];
        BenchConfig {
            sizes_mib: vec![16],
            scenarios: scenarios()
                .into_iter()
                .filter(|s| keep.contains(&s.name))
                .collect(),
            repeats: 1,
            warmup: Duration::from_millis(100),
            ..BenchConfig::full(work_dir)
        }
    }

    /// Migrations the suite will run.
    pub fn total_runs(&self) -> usize {
        self.sizes_mib.len() * self.scenarios.len() * self.policies.len() * self.repeats as usize
    }

    /// Refuse a suite that cannot run, naming what is wrong.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |what, msg: String| Err(BenchError::Config { what, msg });
        if self.sizes_mib.is_empty() {
            return bad("size", "no guest sizes given".into());
        }
        if self.scenarios.is_empty() {
            return bad("workload", "no workloads given".into());
        }
        if self.policies.is_empty() {
            return bad("policy", "no policies given".into());
        }
        for p in &self.policies {
            crate::precopy::by_name(p).map_err(|e| BenchError::Config {
                what: "policy",
                msg: e.to_string(),
            })?;
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.policies {
            if !seen.insert(p) {
                return bad("policy", format!("policy {p:?} given twice"));
            }
        }
        if self.repeats == 0 {
            return bad("repeats", "must be at least 1".into());
        }
        if self.bandwidth == 0 {
            return bad("bandwidth", "must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size_mib("256M").unwrap(), 256);
        assert_eq!(parse_size_mib("1G").unwrap(), 1024);
        assert_eq!(parse_size_mib("64").unwrap(), 64);
        assert_eq!(parse_size_mib("2GiB").unwrap(), 2048);
        assert!(parse_size_mib("0").is_err());
        assert!(parse_size_mib("1T").is_err());
        assert!(parse_size_mib("big").is_err());
    }

    #[test]
    fn rates_follow_the_link() {
        let hot = scenario("hot-set").unwrap();
        // 1 Gbit/s carries 30517.6 pages/s; four times that.
        assert_eq!(hot.steps_per_s(125_000_000), 122_070);
        assert_eq!(hot.steps_per_s(12_500_000), 12_207);
        // Read-mostly writes on 20% of its steps.
        let rm = scenario("read-mostly").unwrap();
        assert_eq!(rm.steps_per_s(125_000_000), 305_176);
        assert_eq!(rm.params_for(256).hot_pages, 4096);
        assert_eq!(hot.params_for(256).hot_pages, 0, "the sim's default");
        assert_eq!(scenario("idle").unwrap().steps_per_s(1), IDLE_STEPS_PER_S);
        assert!(scenario("nope").is_err());
    }

    #[test]
    fn suites_are_valid_and_cover_every_class() {
        for cfg in [
            BenchConfig::full("/x".into()),
            BenchConfig::quick("/x".into()),
        ] {
            cfg.validate().unwrap();
            for class in [
                ScenarioClass::Paper,
                ScenarioClass::Converges,
                ScenarioClass::NeverConverges,
            ] {
                assert!(cfg.scenarios.iter().any(|s| s.class == class), "{class:?}");
            }
        }
        let full = BenchConfig::full("/x".into());
        assert_eq!(full.sizes_mib, [256, 1024]);
        assert_eq!(full.total_runs(), 2 * 5 * 4 * 3);
        let mut dup = full.clone();
        dup.policies.push("xen4".into());
        assert!(dup.validate().is_err());
    }
}
