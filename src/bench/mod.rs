//! `rxmigrate bench`: the paper's comparison, measured side by side.
//!
//! A suite is (guest size × workload scenario × policy) live migrations
//! between two simulated hosts in one process, the stream going through the
//! sender's rate limiter. Every policy of a case gets the same guest, seed
//! and workload; each case repeats and the report takes the median.
//!
//! Module map: `suite` (what runs), `run` (one migration), `results`
//! (medians, ratios), `report` (table.md, CSV, JSON), `svg` (plots);
//! `throughput` is the unthrottled suite (engine against a plain socket copy).

pub mod contents;
pub mod netns;
pub mod report;
pub mod results;
pub mod run;
pub mod suite;
pub mod svg;
pub mod throughput;

pub use results::{BenchResults, CaseResult, Ratio, RunResult};
pub use suite::{parse_size_mib, scenario, scenarios, BenchConfig, Scenario, ScenarioClass};

use crate::hv::sim::{probe_tracking, SimHost};
use crate::hv::HvError;
use crate::stats::RoundStats;
use run::RunSpec;
use std::path::PathBuf;

/// Errors of the bench layer.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bad {what}: {msg}")]
    Config { what: &'static str, msg: String },
    #[error(transparent)]
    Hv(#[from] HvError),
    #[error("{case}: {msg}")]
    Run { case: String, msg: String },
    #[error("writing {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a front end shows while the suite runs.
pub trait Observer {
    /// Run `index` (0-based) of `total` starts.
    fn run_started(&mut self, _index: usize, _total: usize, _label: &str) {}
    fn round_done(&mut self, _stats: &RoundStats) {}
    fn run_done(&mut self, _result: &RunResult) {}
    fn run_failed(&mut self, _label: &str, _error: &str) {}
}

/// An observer that shows nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Removes the hosts' directory however the suite ends.
struct WorkDir(PathBuf);
impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            log::warn!("bench: removing {}: {e}", self.0.display());
        }
    }
}

/// Run the suite. A failed migration is recorded in `failures` and the
/// suite goes on; only a setup error ends it.
pub fn run_suite(cfg: &BenchConfig, obs: &mut dyn Observer) -> Result<BenchResults, BenchError> {
    cfg.validate()?;
    // A fresh directory of our own under work_dir: only it is removed.
    let dir = cfg
        .work_dir
        .join(format!("rxmigrate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Config {
        what: "work directory",
        msg: format!("creating {}: {e}", dir.display()),
    })?;
    let work = WorkDir(dir);
    let src_dir = work.0.join("src");
    let dst_dir = work.0.join("dst");
    let src = SimHost::open(&src_dir)?;
    SimHost::open(&dst_dir)?;
    let link = if cfg.netns {
        Some(netns::NetnsLink::create(cfg.bandwidth)?)
    } else {
        None
    };
    let setup = results::Setup {
        link: match &link {
            Some(l) => format!("veth pair into network namespace {}, tc tbf", l.ns),
            None => "sender rate limit".into(),
        },
        bandwidth_bytes_per_s: cfg.bandwidth,
        seed: cfg.seed,
        repeats: cfg.repeats,
        guest_type: cfg.guest_type.to_string(),
        warmup_ms: cfg.warmup.as_millis() as u64,
        contents: cfg.contents.name().to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        tracking: std::env::var("RXMIGRATE_SIM_TRACKING")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| probe_tracking().to_string()),
        workloads: cfg
            .scenarios
            .iter()
            .map(|s| results::WorkloadNote {
                name: s.name.to_string(),
                class: s.class.name().to_string(),
                about: s.about.to_string(),
            })
            .collect(),
    };
    let total = cfg.total_runs();
    let mut runs = Vec::with_capacity(total);
    let mut failures = Vec::new();
    let mut index = 0;
    for &size_mib in &cfg.sizes_mib {
        for scenario in &cfg.scenarios {
            for repeat in 0..cfg.repeats {
                // Rotate the policy order per repeat so that no policy always
                // runs first (cold caches) or last.
                let n = cfg.policies.len();
                for k in 0..n {
                    let policy = &cfg.policies[(k + repeat as usize) % n];
                    let spec = RunSpec {
                        size_mib,
                        scenario,
                        policy,
                        repeat,
                        seed: cfg.seed,
                        guest_type: cfg.guest_type,
                        bandwidth: cfg.bandwidth,
                        warmup: cfg.warmup,
                        contents: cfg.contents,
                        link: link.as_ref(),
                    };
                    let label = spec.label();
                    obs.run_started(index, total, &label);
                    index += 1;
                    match run::run_one(&src, &dst_dir, &spec, obs) {
                        Ok(r) => {
                            obs.run_done(&r);
                            runs.push(r);
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            log::error!("bench: {msg}");
                            obs.run_failed(&label, &msg);
                            failures.push(msg);
                        }
                    }
                }
            }
        }
    }
    drop(src);
    drop(link);
    drop(work);
    // Keep the suite's order of policies in the report.
    runs.sort_by_key(|r| {
        (
            cfg.sizes_mib.iter().position(|&s| s == r.size_mib),
            cfg.scenarios.iter().position(|s| s.name == r.workload),
            cfg.policies.iter().position(|p| *p == r.policy),
            r.repeat,
        )
    });
    Ok(BenchResults::from_runs(setup, runs, failures))
}
