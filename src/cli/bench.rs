//! `rxmigrate bench`: arguments, progress bar, and where the results go.

use crate::bench::{self, BenchConfig, Observer, RunResult};
use crate::hv::sim::WorkloadKind;
use crate::hv::GuestType;
use crate::stats::RoundStats;
use crate::transport::parse_bandwidth;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A small suite that runs in seconds (CI smoke test): 16 MiB guests,
    /// hot-set, idle and streaming, one repeat. Options below override it.
    #[arg(long)]
    pub quick: bool,
    /// Run the throughput suite instead of the policies: unthrottled
    /// migrations of an idle guest over loopback TCP against a plain socket
    /// copy of the same bytes, with CPU seconds per GiB (honours --sizes
    /// [default: 1G], --repeats [default: 3], --type, --seed, --work-dir, --out).
    #[arg(long)]
    pub throughput: bool,
    /// Do not run anything: rewrite the table, CSV and plots from a
    /// results.json of an earlier run into --out.
    #[arg(long, value_name = "RESULTS_JSON")]
    pub from_json: Option<PathBuf>,
    /// Output directory for table.md, results.csv, results.json and the SVG plots.
    #[arg(long, short, default_value = "bench-results")]
    pub out: PathBuf,
    /// Guest sizes, comma-separated (e.g. 256M,1G) [default: 256M,1G].
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<String>,
    /// Workload scenarios, comma-separated: hot-set, read-mostly, idle,
    /// uniform-low, streaming, or trace:FILE[@Nx] (a recorded trace at N
    /// times its recorded rate) [default: all but traces].
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Policies, comma-separated [default: xen33,xen4,paper,hotpeek; hotpage is the paper's policy under its first name].
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Runs per case; the report takes the median [default: 3].
    #[arg(long)]
    pub repeats: Option<u32>,
    /// Link rate through the sender's rate limiter (1G = 1 Gbit/s, 100M, 50MB).
    #[arg(long, default_value = "1G")]
    pub bandwidth: String,
    /// Override a scenario's write rate, as a fraction of the link's page
    /// rate: WORKLOAD=FACTOR (e.g. hot-set=2), repeatable.
    #[arg(long, value_name = "WORKLOAD=FACTOR")]
    pub write_load: Vec<String>,
    /// Override a scenario's hot set, as a fraction of guest memory:
    /// WORKLOAD=FRACTION (e.g. read-mostly=0.0625), repeatable.
    #[arg(long, value_name = "WORKLOAD=FRACTION")]
    pub hot_fraction: Vec<String>,
    /// Override the per mille of read-mostly steps that write.
    #[arg(long)]
    pub write_permille: Option<u32>,
    /// Workload seed, the same for every policy and repeat.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Guest flavour.
    #[arg(long = "type", value_enum, default_value = "pv")]
    pub guest_type: super::sim::TypeArg,
    /// How long each guest runs before its migration starts, ms [default:
    /// 500, quick 100].
    #[arg(long)]
    pub warmup_ms: Option<u64>,
    /// What the guests' memory holds when their workload starts: `filled`
    /// (every data page written with non-zero bytes first, as in a guest
    /// that has been running a while) or `fresh` (zero pages, which the
    /// engine sends without data, until the workload writes them).
    #[arg(long, value_parser = ["filled", "fresh"], default_value = "filled")]
    pub contents: String,
    /// Run over a veth pair into a network namespace of its own, shaped with
    /// `tc` to --bandwidth, instead of the sender's rate limiter (root only).
    #[arg(long)]
    pub netns: bool,
    /// Directory under which the two simulated hosts live while the suite
    /// runs (guest RAM itself is in /dev/shm) [default: the temp dir].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

impl BenchArgs {
    /// The suite these arguments ask for.
    pub fn config(&self) -> Result<BenchConfig> {
        let work = self.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        let mut c = if self.quick {
            BenchConfig::quick(work)
        } else {
            BenchConfig::full(work)
        };
        if !self.sizes.is_empty() {
            c.sizes_mib = self
                .sizes
                .iter()
                .map(|s| bench::parse_size_mib(s))
                .collect::<Result<_, _>>()?;
        }
        if !self.workloads.is_empty() {
            c.scenarios = self
                .workloads
                .iter()
                .map(|w| bench::scenario(w.trim()))
                .collect::<Result<_, _>>()?;
        }
        for o in &self.write_load {
            let (name, v) = o
                .split_once('=')
                .with_context(|| format!("--write-load {o:?}: expected WORKLOAD=FACTOR"))?;
            let v: f64 = v
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .with_context(|| format!("--write-load {o:?}: FACTOR must be a positive number"))?;
            let sc = c
                .scenarios
                .iter_mut()
                .find(|s| s.name == name)
                .with_context(|| {
                    format!("--write-load {o:?}: workload {name:?} is not in the suite")
                })?;
            if sc.write_load.is_none() {
                bail!("--write-load {o:?}: {name} writes nothing");
            }
            sc.write_load = Some(v);
        }
        for o in &self.hot_fraction {
            let (name, v) = o
                .split_once('=')
                .with_context(|| format!("--hot-fraction {o:?}: expected WORKLOAD=FRACTION"))?;
            let v: f64 = v
                .parse()
                .ok()
                .filter(|v: &f64| *v > 0.0 && *v <= 1.0)
                .with_context(|| format!("--hot-fraction {o:?}: FRACTION must be in (0, 1]"))?;
            let sc = c
                .scenarios
                .iter_mut()
                .find(|s| s.name == name)
                .with_context(|| {
                    format!("--hot-fraction {o:?}: workload {name:?} is not in the suite")
                })?;
            sc.hot_fraction = Some(v);
        }
        if let Some(pm) = self.write_permille {
            if pm == 0 || pm > 1000 {
                bail!("--write-permille {pm}: must be in 1..=1000");
            }
            for sc in c
                .scenarios
                .iter_mut()
                .filter(|s| s.kind == WorkloadKind::ReadMostly)
            {
                sc.params.write_permille = pm;
            }
        }
        if !self.policies.is_empty() {
            c.policies = self.policies.iter().map(|p| p.trim().to_string()).collect();
        }
        if let Some(r) = self.repeats {
            c.repeats = r;
        }
        c.bandwidth = parse_bandwidth(&self.bandwidth).map_err(anyhow::Error::msg)?;
        c.seed = self.seed;
        c.netns = self.netns;
        c.contents = bench::contents::Contents::parse(&self.contents)
            .ok_or_else(|| anyhow::anyhow!("--contents {}: filled or fresh", self.contents))?;
        c.guest_type = match self.guest_type {
            super::sim::TypeArg::Pv => GuestType::Pv,
            super::sim::TypeArg::Hvm => GuestType::Hvm,
        };
        if let Some(ms) = self.warmup_ms {
            c.warmup = Duration::from_millis(ms);
        }
        c.validate()?;
        Ok(c)
    }
}

/// A bar over the suite's migrations; the message shows the current run's
/// last round. indicatif hides it when stderr is not a terminal.
struct Bar {
    bar: ProgressBar,
    label: String,
}

impl Observer for Bar {
    fn run_started(&mut self, index: usize, _total: usize, label: &str) {
        self.bar.set_position(index as u64);
        self.label = label.to_string();
        self.bar.set_message(self.label.clone());
        if self.bar.is_hidden() {
            log::info!(
                "bench: run {} of {}: {label}",
                index + 1,
                self.bar.length().unwrap_or(0)
            );
        }
    }
    fn round_done(&mut self, r: &RoundStats) {
        self.bar.set_message(format!(
            "{}: round {}{} {} pages",
            self.label,
            r.round,
            if r.last { " (final)" } else { "" },
            r.pages_sent
        ));
    }
    fn run_done(&mut self, r: &RunResult) {
        self.bar.inc(1);
        let line = format!(
            "{}: {:.1} MiB in {:.2} s, downtime {:.1} ms, {} rounds",
            self.label,
            r.total_bytes as f64 / 1048576.0,
            r.total_time_ms / 1e3,
            r.downtime_ms,
            r.rounds
        );
        if self.bar.is_hidden() {
            log::info!("bench: {line}");
        } else {
            self.bar.println(line);
        }
    }
    fn run_failed(&mut self, label: &str, error: &str) {
        self.bar.inc(1);
        self.bar.println(format!("{label}: FAILED: {error}"));
    }
}

pub fn run(hv_spec: Option<&str>, a: &BenchArgs) -> Result<()> {
    if let Some(s) = hv_spec {
        bail!("`rxmigrate bench` runs its own pair of simulated hosts; --hv {s:?} does not apply");
    }
    if let Some(p) = &a.from_json {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let results: bench::BenchResults = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a bench results.json", p.display()))?;
        let files = bench::report::write_all(&results, &a.out)
            .with_context(|| format!("writing results into {}", a.out.display()))?;
        print!("{}", bench::report::table_md(&results));
        eprintln!(
            "rxmigrate bench: wrote {} files into {}",
            files.len(),
            a.out.display()
        );
        return Ok(());
    }
    if a.throughput {
        return run_throughput(a);
    }
    let cfg = a.config()?;
    let total = cfg.total_runs();
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut obs = Bar {
        bar,
        label: String::new(),
    };
    let results = bench::run_suite(&cfg, &mut obs)?;
    obs.bar.finish_and_clear();
    let files = bench::report::write_all(&results, &a.out)
        .with_context(|| format!("writing results into {}", a.out.display()))?;
    print!("{}", bench::report::table_md(&results));
    eprintln!(
        "rxmigrate bench: wrote {} files into {}",
        files.len(),
        a.out.display()
    );
    if !results.failures.is_empty() {
        bail!(
            "{} of {total} migrations failed (see {})",
            results.failures.len(),
            a.out.join("table.md").display()
        );
    }
    Ok(())
}

/// `--throughput`: the unthrottled suite; table on stdout, JSON in --out.
fn run_throughput(a: &BenchArgs) -> Result<()> {
    let sizes_mib = if a.sizes.is_empty() {
        vec![1024]
    } else {
        a.sizes
            .iter()
            .map(|s| bench::parse_size_mib(s))
            .collect::<Result<_, _>>()?
    };
    let repeats = a.repeats.unwrap_or(3);
    if repeats == 0 {
        bail!("--repeats: must be at least 1");
    }
    let cfg = bench::throughput::ThroughputConfig {
        sizes_mib,
        guest_type: match a.guest_type {
            super::sim::TypeArg::Pv => GuestType::Pv,
            super::sim::TypeArg::Hvm => GuestType::Hvm,
        },
        repeats,
        seed: a.seed,
        work_dir: a.work_dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    let results = bench::throughput::run_throughput(&cfg, &mut |line| eprintln!("bench: {line}"))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join("throughput.json");
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    print!("{}", bench::throughput::table_md(&results));
    eprintln!("rxmigrate bench: wrote {}", path.display());
    if !results.failures.is_empty() {
        bail!("{} throughput runs failed", results.failures.len());
    }
    Ok(())
}
