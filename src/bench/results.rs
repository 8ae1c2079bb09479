//! Measurements: one record per migration, the median per case, and the
//! ratios of hotpage to the baselines computed from those medians.

use super::run::RunSpec;
use crate::migrate::MigrateOutcome;
use crate::stats::{DowntimePart, RoundStats};
use serde::{Deserialize, Serialize};

/// One migration as measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub size_mib: u64,
    pub workload: String,
    pub policy: String,
    pub repeat: u32,
    pub total_bytes: u64,
    pub total_time_ms: f64,
    pub downtime_ms: f64,
    /// All rounds including the final stop-and-copy round.
    pub rounds: u32,
    pub total_pages_sent: u64,
    pub pages_per_round: Vec<u64>,
    /// Pages in the final (stop-and-copy) round.
    pub final_round_pages: u64,
    /// Pages the policy held back for the final round (hotpage's hot set).
    pub hot_pages_final: u64,
    /// Largest hot set over the rounds.
    pub hot_pages_max: u64,
    /// Guest steps per second asked for, and achieved during the migration.
    pub guest_rate: u64,
    pub guest_rate_achieved: f64,
    /// Auto-converge: the highest throttle applied, percent (0: none).
    #[serde(default)]
    pub throttle_max_pct: u8,
    /// The downtime in parts, both ends on one clock (see
    /// [`crate::stats::downtime_parts`]); empty in older results.
    #[serde(default)]
    pub downtime_parts: Vec<DowntimePart>,
}

impl RunResult {
    pub fn new(spec: &RunSpec<'_>, rate: u64, out: &MigrateOutcome, achieved: f64) -> Self {
        let s = &out.summary;
        RunResult {
            size_mib: spec.size_mib,
            workload: spec.scenario.name.to_string(),
            policy: spec.policy.to_string(),
            repeat: spec.repeat,
            total_bytes: s.total_bytes,
            total_time_ms: s.total_time_ms,
            downtime_ms: s.downtime_ms,
            rounds: s.rounds,
            total_pages_sent: s.total_pages_sent,
            pages_per_round: out.rounds.iter().map(|r| r.pages_sent).collect(),
            final_round_pages: s.final_round_pages,
            hot_pages_final: s.hot_pages_final,
            hot_pages_max: out
                .rounds
                .iter()
                .map(|r: &RoundStats| r.hot_pages)
                .max()
                .unwrap_or(0),
            guest_rate: rate,
            guest_rate_achieved: achieved,
            throttle_max_pct: s.throttle_max_pct,
            downtime_parts: s.downtime_parts.clone(),
        }
    }
}

/// The median of a case's repeats.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseResult {
    pub size_mib: u64,
    pub workload: String,
    pub policy: String,
    pub repeats: u32,
    pub total_bytes: f64,
    pub total_time_ms: f64,
    pub downtime_ms: f64,
    pub rounds: f64,
    pub hot_pages_final: f64,
    pub hot_pages_max: f64,
    pub guest_rate: u64,
    pub guest_rate_achieved: f64,
    /// Auto-converge: the highest throttle over the repeats, percent.
    #[serde(default)]
    pub throttle_max_pct: u8,
    /// Spread of the repeats (min, max) for time and downtime.
    pub total_time_ms_range: (f64, f64),
    pub downtime_ms_range: (f64, f64),
    /// Pages sent per round in the run whose total time is the median.
    pub pages_per_round: Vec<u64>,
}

/// hotpage's median over a baseline's, per metric.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ratio {
    pub size_mib: u64,
    pub workload: String,
    /// `hotpage/xen33` or `hotpage/xen4`.
    pub against: String,
    pub bytes: f64,
    pub time: f64,
    pub downtime: f64,
    pub rounds: f64,
}

/// Median of a non-empty list (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// The median over the runs of one case (all the same size, workload and
/// policy). `None` for no runs.
pub fn case_of(runs: &[&RunResult]) -> Option<CaseResult> {
    let first = runs.first()?;
    let get = |f: fn(&RunResult) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
    let times = get(|r| r.total_time_ms);
    let downs = get(|r| r.downtime_ms);
    let mt = median(&times);
    // The representative run: closest to the median time.
    let rep = runs.iter().min_by(|a, b| {
        (a.total_time_ms - mt)
            .abs()
            .total_cmp(&(b.total_time_ms - mt).abs())
    })?;
    Some(CaseResult {
        size_mib: first.size_mib,
        workload: first.workload.clone(),
        policy: first.policy.clone(),
        repeats: runs.len() as u32,
        total_bytes: median(&get(|r| r.total_bytes as f64)),
        total_time_ms: mt,
        downtime_ms: median(&downs),
        rounds: median(&get(|r| r.rounds as f64)),
        hot_pages_final: median(&get(|r| r.hot_pages_final as f64)),
        hot_pages_max: median(&get(|r| r.hot_pages_max as f64)),
        guest_rate: first.guest_rate,
        guest_rate_achieved: median(&get(|r| r.guest_rate_achieved)),
        throttle_max_pct: runs.iter().map(|r| r.throttle_max_pct).max().unwrap_or(0),
        total_time_ms_range: range(&times),
        downtime_ms_range: range(&downs),
        pages_per_round: rep.pages_per_round.clone(),
    })
}

/// A policy measured against the baselines (every one but xen33 and xen4).
pub fn is_candidate(policy: &str) -> bool {
    !matches!(policy, "xen33" | "xen4")
}

/// A candidate against `base` from two case medians of the same size and workload.
pub fn ratio(hot: &CaseResult, base: &CaseResult) -> Ratio {
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    Ratio {
        size_mib: hot.size_mib,
        workload: hot.workload.clone(),
        against: format!("{}/{}", hot.policy, base.policy),
        bytes: div(hot.total_bytes, base.total_bytes),
        time: div(hot.total_time_ms, base.total_time_ms),
        downtime: div(hot.downtime_ms, base.downtime_ms),
        rounds: div(hot.rounds, base.rounds),
    }
}

/// Everything a bench run produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchResults {
    /// How the suite was run (bandwidth, seed, machine notes).
    pub setup: Setup,
    pub runs: Vec<RunResult>,
    pub cases: Vec<CaseResult>,
    pub ratios: Vec<Ratio>,
    /// Runs that failed, with why.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Setup {
    /// How the link was made (absent in older results: the rate limiter).
    #[serde(default)]
    pub link: String,
    pub bandwidth_bytes_per_s: u64,
    pub seed: u64,
    pub repeats: u32,
    pub guest_type: String,
    pub warmup_ms: u64,
    /// The guests' memory at the start: `filled` or `fresh` (absent in
    /// results made before the choice existed: fresh guests, whose zero
    /// pages then travelled with their data).
    #[serde(default)]
    pub contents: String,
    pub cpus: usize,
    pub tracking: String,
    pub workloads: Vec<WorkloadNote>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadNote {
    pub name: String,
    pub class: String,
    pub about: String,
}

impl BenchResults {
    /// Build cases (medians) and ratios from the runs, in run order.
    pub fn from_runs(setup: Setup, runs: Vec<RunResult>, failures: Vec<String>) -> Self {
        let mut keys: Vec<(u64, String, String)> = Vec::new();
        for r in &runs {
            let k = (r.size_mib, r.workload.clone(), r.policy.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let cases: Vec<CaseResult> = keys
            .iter()
            .filter_map(|(s, w, p)| {
                let of: Vec<&RunResult> = runs
                    .iter()
                    .filter(|r| r.size_mib == *s && &r.workload == w && &r.policy == p)
                    .collect();
                case_of(&of)
            })
            .collect();
        let mut ratios = Vec::new();
        for hot in cases.iter().filter(|c| is_candidate(&c.policy)) {
            for base in ["xen33", "xen4"] {
                if let Some(b) = cases.iter().find(|c| {
                    c.policy == base && c.size_mib == hot.size_mib && c.workload == hot.workload
                }) {
                    ratios.push(ratio(hot, b));
                }
            }
        }
        BenchResults {
            setup,
            runs,
            cases,
            ratios,
            failures,
        }
    }

    /// The (size, workload) groups in order.
    pub fn groups(&self) -> Vec<(u64, String)> {
        let mut g: Vec<(u64, String)> = Vec::new();
        for c in &self.cases {
            let k = (c.size_mib, c.workload.clone());
            if !g.contains(&k) {
                g.push(k);
            }
        }
        g
    }

    pub fn cases_of(&self, size: u64, workload: &str) -> Vec<&CaseResult> {
        self.cases
            .iter()
            .filter(|c| c.size_mib == size && c.workload == workload)
            .collect()
    }

    pub fn ratio_of(
        &self,
        size: u64,
        workload: &str,
        policy: &str,
        against: &str,
    ) -> Option<&Ratio> {
        self.ratios.iter().find(|r| {
            r.size_mib == size
                && r.workload == workload
                && r.against == format!("{policy}/{against}")
        })
    }

    /// The policies measured against the baselines, in suite order.
    pub fn candidates(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for c in &self.cases {
            if is_candidate(&c.policy) && !v.contains(&c.policy) {
                v.push(c.policy.clone());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: &str, repeat: u32, bytes: u64, time: f64, down: f64) -> RunResult {
        RunResult {
            size_mib: 16,
            workload: "hot-set".into(),
            policy: policy.into(),
            repeat,
            total_bytes: bytes,
            total_time_ms: time,
            downtime_ms: down,
            rounds: 3,
            total_pages_sent: bytes / 4096,
            pages_per_round: vec![repeat as u64, 2, 1],
            final_round_pages: 1,
            hot_pages_final: 0,
            hot_pages_max: 0,
            guest_rate: 10,
            guest_rate_achieved: 10.0,
            throttle_max_pct: 0,
            downtime_parts: Vec::new(),
        }
    }

    fn setup() -> Setup {
        Setup {
            link: String::new(),
            bandwidth_bytes_per_s: 1,
            seed: 1,
            repeats: 3,
            guest_type: "pv".into(),
            warmup_ms: 0,
            contents: "filled".into(),
            cpus: 2,
            tracking: "uffd".into(),
            workloads: vec![],
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn cases_take_medians_and_ratios_divide_them() {
        let runs = vec![
            run("xen33", 0, 300, 30.0, 3.0),
            run("xen33", 1, 100, 10.0, 1.0),
            run("xen33", 2, 200, 20.0, 2.0),
            run("hotpage", 0, 100, 12.0, 4.0),
            run("hotpage", 1, 100, 8.0, 1.0),
            run("hotpage", 2, 130, 10.0, 2.0),
        ];
        let r = BenchResults::from_runs(setup(), runs, vec![]);
        assert_eq!(r.cases.len(), 2);
        let x = &r.cases[0];
        assert_eq!(
            (x.policy.as_str(), x.total_bytes, x.total_time_ms),
            ("xen33", 200.0, 20.0)
        );
        assert_eq!(x.pages_per_round[0], 2, "the median-time run's rounds");
        assert_eq!(x.total_time_ms_range, (10.0, 30.0));
        let h = &r.cases[1];
        assert_eq!(
            (h.total_bytes, h.total_time_ms, h.downtime_ms),
            (100.0, 10.0, 2.0)
        );
        assert_eq!(r.ratios.len(), 1, "no xen4 runs, no xen4 ratio");
        let q = r.ratio_of(16, "hot-set", "hotpage", "xen33").unwrap();
        assert_eq!(
            (q.bytes, q.time, q.downtime, q.rounds),
            (0.5, 0.5, 1.0, 1.0)
        );
        assert!(r.ratio_of(16, "hot-set", "hotpage", "xen4").is_none());
    }
}
