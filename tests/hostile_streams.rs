//! Issue 12's acceptance check for bounded restore: hostile streams of every
//! class (tests/hostile/gen.rs says how they are made), each through the
//! `rxmigrate` binary (`restore` or `receive`) against a fresh simulated
//! host. Each must end within 10 s, in a clear error or, where the damage
//! is harmless (bytes inside guest pages), in a restore holding exactly the
//! damaged pages; its peak RSS within the guest's size + 256 MiB; and the
//! host left with no domain and no shared memory.
//!
//! CI runs the first 60 cases (every class, PV and HVM, both ways in);
//! `RXMIGRATE_HOSTILE_FULL=1` runs 1 000, `RXMIGRATE_HOSTILE_CASES=N` N;
//! `RXMIGRATE_HOSTILE_VERBOSE=1` prints each case and its outcome.

mod hostile;
mod sim_util;

use hostile::gen::{case, Bases, Case, Class, Expect};
use hostile::*;
use rxmigrate::hv::GuestType;
use std::collections::BTreeMap;
use std::time::Duration;

const GUEST_MIB: u64 = 16;
const GUEST: u64 = GUEST_MIB << 20;
const DEADLINE: Duration = Duration::from_secs(10);
const RSS_SLACK: u64 = 256 << 20;

struct Outcome {
    restored: bool,
    elapsed: Duration,
    rss: u64,
}

/// Runs one case; `Err` says what it broke.
fn run_case(c: &Case) -> Result<Outcome, String> {
    let sim = SimDir::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = stream_file(tmp.path(), &c.bytes, c.via);
    let run = run_child(&sim, c.via, &file, &["-p"], DEADLINE);
    let fail = |why: String| {
        Err(format!(
            "case {} ({:?}, {}, {}: {}): {why}\n  stderr: {}",
            c.index,
            c.class,
            c.guest,
            c.via.name(),
            c.what,
            run.stderr.trim()
        ))
    };
    if run.timed_out {
        return fail(format!("still running after {DEADLINE:?}"));
    }
    if run.max_rss > GUEST + RSS_SLACK {
        return fail(format!("peak RSS {} MiB", run.max_rss >> 20));
    }
    let restored = match &c.expect {
        Expect::Error => {
            if !run.clear_error() {
                return fail(format!(
                    "expected a clear error, got exit {:?} signal {:?}",
                    run.code, run.signal
                ));
            }
            let doms = sim.domains();
            if !doms.is_empty() {
                return fail(format!("domains left behind: {doms:?}"));
            }
            false
        }
        Expect::Restored(pages) => {
            if !run.ok() {
                return fail(format!("expected a restore, got exit {:?}", run.code));
            }
            let doms = sim.domains();
            if doms.len() != 1 {
                return fail(format!("expected one domain, found {doms:?}"));
            }
            {
                let host = sim.host();
                for (pfn, want) in pages {
                    if guest_page(&host, doms[0], *pfn).as_ref() != Some(want) {
                        return fail(format!("pfn {pfn:#x} differs from the stream's page"));
                    }
                }
            }
            sim.destroy_all();
            true
        }
    };
    let shm = sim.shm_files();
    if !shm.is_empty() {
        return fail(format!("shared memory left behind: {shm:?}"));
    }
    if std::env::var("RXMIGRATE_HOSTILE_VERBOSE").is_ok_and(|v| v == "1") {
        eprintln!(
            "case {} {:?} {} {} ({}): {:?}, {} MiB: {}",
            c.index,
            c.class,
            c.guest,
            c.via.name(),
            c.what,
            run.elapsed,
            run.max_rss >> 20,
            run.stderr.lines().last().unwrap_or("").trim()
        );
    }
    Ok(Outcome {
        restored,
        elapsed: run.elapsed,
        rss: run.max_rss,
    })
}

fn cases_to_run() -> u64 {
    if let Some(n) = std::env::var("RXMIGRATE_HOSTILE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return n;
    }
    if std::env::var("RXMIGRATE_HOSTILE_FULL").is_ok_and(|v| v == "1") {
        1000
    } else {
        60
    }
}

#[test]
fn hostile_streams_end_in_clear_errors_within_bounds_and_leave_nothing() {
    let n = cases_to_run();
    let bases = Bases {
        pv: Image::parse(&saved_image(GuestType::Pv, GUEST_MIB, 21)),
        hvm: Image::parse(&saved_image(GuestType::Hvm, GUEST_MIB, 22)),
        pages: GUEST_MIB * 256,
    };
    let mut by_class: BTreeMap<(Class, &str), u64> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut worst_time = (Duration::ZERO, 0u64);
    let mut worst_rss = (0u64, 0u64);
    let mut bytes_in = 0u64;
    for i in 0..n {
        let c = case(i, &bases);
        bytes_in += c.bytes.len() as u64;
        match run_case(&c) {
            Ok(o) => {
                let what = if o.restored { "restored" } else { "error" };
                *by_class.entry((c.class, what)).or_default() += 1;
                if o.elapsed > worst_time.0 {
                    worst_time = (o.elapsed, i);
                }
                if o.rss > worst_rss.0 {
                    worst_rss = (o.rss, i);
                }
            }
            Err(v) => {
                *by_class.entry((c.class, "VIOLATION")).or_default() += 1;
                violations.push(v);
            }
        }
    }
    eprintln!(
        "{n} hostile streams ({} MiB in all), guest {GUEST_MIB} MiB:",
        bytes_in >> 20
    );
    for ((class, what), k) in &by_class {
        eprintln!("  {class:?}: {k} {what}");
    }
    eprintln!(
        "  slowest: case {} in {:?}; largest peak RSS: case {} with {} MiB",
        worst_time.1,
        worst_time.0,
        worst_rss.1,
        worst_rss.0 >> 20
    );
    assert!(
        violations.is_empty(),
        "{} of {n} cases broke the bounds:\n{}",
        violations.len(),
        violations.join("\n")
    );
}
