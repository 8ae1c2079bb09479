//! The written outputs: table.md, results.csv, results.json (and the plots,
//! from `svg`).

use super::results::{BenchResults, CaseResult, Ratio};
use super::{svg, BenchError};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the paper claims against xen33 (PAPER.md, "What better means").
pub const PAPER_BYTES: f64 = 0.66;
pub const PAPER_TIME: f64 = 0.675;
pub const PAPER_ROUNDS: f64 = 5.0;

fn write(path: PathBuf, text: &str) -> Result<PathBuf, BenchError> {
    std::fs::write(&path, text).map_err(|source| BenchError::Output {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Write every output into `dir` (created if needed); returns the files.
pub fn write_all(r: &BenchResults, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Output {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = vec![
        write(dir.join("table.md"), &table_md(r))?,
        write(dir.join("results.csv"), &results_csv(r))?,
    ];
    let json = serde_json::to_string_pretty(r).map_err(|e| BenchError::Output {
        path: dir.join("results.json"),
        source: e.into(),
    })?;
    files.push(write(dir.join("results.json"), &json)?);
    files.push(write(dir.join("totals.svg"), &svg::totals(r))?);
    for (size, wl) in r.groups() {
        let name = format!("rounds-{size}M-{wl}.svg");
        files.push(write(dir.join(name), &svg::rounds(r, size, &wl))?);
    }
    Ok(files)
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1048576.0)
}

fn ratio_str(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "–".into()
    }
}

/// Pages per round, shortened when there are many rounds.
pub fn rounds_str(p: &[u64]) -> String {
    let s = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    if p.len() <= 8 {
        s(p)
    } else {
        format!("{} … {}", s(&p[..5]), s(&p[p.len() - 2..]))
    }
}

fn size_str(mib: u64) -> String {
    if mib >= 1024 && mib % 1024 == 0 {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

fn verdict(x33: Option<&Ratio>, hot: Option<&CaseResult>) -> String {
    let (Some(x), Some(h)) = (x33, hot) else {
        return "–".into();
    };
    let bytes = x.bytes <= PAPER_BYTES;
    let time = x.time <= PAPER_TIME;
    let rounds = h.rounds - 1.0 <= PAPER_ROUNDS;
    match (bytes, time, rounds) {
        (true, true, true) => "yes".into(),
        _ => {
            let mut miss = Vec::new();
            if !bytes {
                miss.push("bytes");
            }
            if !time {
                miss.push("time");
            }
            if !rounds {
                miss.push("rounds");
            }
            format!("no ({})", miss.join(", "))
        }
    }
}

/// The markdown table: every case's medians, then each candidate's ratios.
pub fn table_md(r: &BenchResults) -> String {
    let mut t = String::new();
    let s = &r.setup;
    let _ = writeln!(
        t,
        "Link {:.0} Mbit/s ({}), {} guests{}, seed {}, median of {} run(s), \
         {} CPU(s), dirty tracking: {}.\n",
        s.bandwidth_bytes_per_s as f64 * 8.0 / 1e6,
        if s.link.is_empty() {
            "sender rate limit"
        } else {
            &s.link
        },
        s.guest_type.to_uppercase(),
        match s.contents.as_str() {
            "filled" => " (memory filled with data at the start)",
            "fresh" => " (memory zero at the start but for what the workload writes)",
            _ => "",
        },
        s.seed,
        s.repeats,
        s.cpus,
        s.tracking
    );
    t.push_str(
        "| guest | workload | policy | MiB sent | time s (min–max) | downtime ms (min–max) | rounds | hot set | \
         pages sent per round | guest steps/s (asked → got) | throttle % |\n\
         |---|---|---|---:|---:|---:|---:|---:|---|---|---:|\n",
    );
    for c in &r.cases {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.2} ({:.2}–{:.2}) | {:.0} ({:.0}–{:.0}) | {} | {} | {} | {} → {:.0} | {} |",
            size_str(c.size_mib),
            c.workload,
            c.policy,
            mib(c.total_bytes),
            c.total_time_ms / 1e3,
            c.total_time_ms_range.0 / 1e3,
            c.total_time_ms_range.1 / 1e3,
            c.downtime_ms,
            c.downtime_ms_range.0,
            c.downtime_ms_range.1,
            c.rounds,
            c.hot_pages_final,
            rounds_str(&c.pages_per_round),
            c.guest_rate,
            c.guest_rate_achieved,
            c.throttle_max_pct
        );
    }
    t.push_str(
        "\nMedians of the repeats, each column on its own; rounds count the final stop-and-copy round; the hot set is the pages the policy held \
         for the final round. Guest rates are workload steps per second, asked for and achieved during the migration. \
         Throttle: the largest share of the guest's CPU auto-converge took (`+ac` policies; 0: none).\n\n\
         | guest | workload | policy | bytes /xen33 | time /xen33 | live rounds | \
         paper's claim met | bytes /xen4 | time /xen4 | downtime /xen4 |\n\
         |---|---|---|---:|---:|---:|---|---:|---:|---:|\n",
    );
    for (size, wl) in r.groups() {
        for pol in r.candidates() {
            let x33 = r.ratio_of(size, &wl, &pol, "xen33");
            let x4 = r.ratio_of(size, &wl, &pol, "xen4");
            if x33.is_none() && x4.is_none() {
                continue;
            }
            let hot = r.cases_of(size, &wl).into_iter().find(|c| c.policy == pol);
            let f = |o: Option<&Ratio>, g: fn(&Ratio) -> f64| {
                o.map_or("–".into(), |x| ratio_str(g(x)))
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                size_str(size),
                wl,
                pol,
                f(x33, |x| x.bytes),
                f(x33, |x| x.time),
                hot.map_or("–".into(), |h| format!("{}", h.rounds - 1.0)),
                verdict(x33, hot),
                f(x4, |x| x.bytes),
                f(x4, |x| x.time),
                f(x4, |x| x.downtime),
            );
        }
    }
    let _ = writeln!(
        t,
        "\nThe paper's claim against xen33: bytes ≤ {PAPER_BYTES}, time ≤ {PAPER_TIME}, \
         at most {PAPER_ROUNDS} live rounds."
    );
    if !r.failures.is_empty() {
        t.push_str("\nFailed runs:\n");
        for f in &r.failures {
            let _ = writeln!(t, "- {f}");
        }
    }
    t
}

/// One CSV row per case (medians); candidates' rows carry the ratios.
pub fn results_csv(r: &BenchResults) -> String {
    let mut t = String::from(
        "size_mib,workload,policy,repeats,total_bytes,total_time_ms,downtime_ms,rounds,\
         hot_pages_final,hot_pages_max,guest_rate,guest_rate_achieved,pages_per_round,\
         bytes_vs_xen33,time_vs_xen33,downtime_vs_xen33,bytes_vs_xen4,time_vs_xen4,\
         downtime_vs_xen4,throttle_max_pct\n",
    );
    // Fixed precision: a value re-read from results.json may differ in
    // the last binary digit.
    let num = |x: f64| {
        if x.is_finite() {
            format!("{x:.6}")
        } else {
            String::new()
        }
    };
    for c in &r.cases {
        let rat = |base: &str| {
            let x = super::results::is_candidate(&c.policy)
                .then(|| r.ratio_of(c.size_mib, &c.workload, &c.policy, base))
                .flatten();
            match x {
                Some(x) => format!("{},{},{}", num(x.bytes), num(x.time), num(x.downtime)),
                None => ",,".into(),
            }
        };
        let _ = writeln!(
            t,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            c.size_mib,
            c.workload,
            c.policy,
            c.repeats,
            num(c.total_bytes),
            num(c.total_time_ms),
            num(c.downtime_ms),
            num(c.rounds),
            num(c.hot_pages_final),
            num(c.hot_pages_max),
            c.guest_rate,
            num(c.guest_rate_achieved),
            c.pages_per_round
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(";"),
            rat("xen33"),
            rat("xen4"),
            c.throttle_max_pct,
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_round_lists_are_shortened() {
        assert_eq!(rounds_str(&[3, 2, 1]), "3 2 1");
        let v: Vec<u64> = (0..30).rev().collect();
        assert_eq!(rounds_str(&v), "29 28 27 26 25 … 1 0");
    }
}
