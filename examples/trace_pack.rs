//! Pack the raw files `ci/trace-shim` wrote into one trace (docs/TRACES.md).
//!
//! ```sh
//! cargo run --release --example trace_pack -- OUT.rxtrace "NOTE" RAW... \
//!     [--start-ns N] [--seconds S]
//! ```
//!
//! The raw files of one run (the program and the children it exec'd) are
//! merged on their common clock into samples of the recording interval;
//! pages of different processes stay distinct. `--start-ns` drops what came
//! before that CLOCK_MONOTONIC time (a load generator's warm-up), `--seconds`
//! keeps that much after it. Pages are renumbered densely, in address order,
//! over the pages written in what is kept.

use anyhow::{bail, Context, Result};
use rxmigrate::hv::sim::trace::{Sample, Trace};
use std::collections::{BTreeMap, BTreeSet};

/// One raw record: time, and the (first vpn, count) runs written.
struct Record {
    t_ns: u64,
    runs: Vec<(u64, u64)>,
}

fn parse_raw(path: &str) -> Result<(u64, Vec<Record>)> {
    let b = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let word = |o: usize| -> Option<u64> {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
    };
    if b.get(..8) != Some(b"RXMRAW01".as_slice()) {
        bail!("{path}: at byte 0: not a raw trace (no RXMRAW01 magic)");
    }
    let interval = word(8).with_context(|| format!("{path}: at byte 8: no header"))?;
    let mut recs = Vec::new();
    let mut o = 24;
    'records: while let Some(t_ns) = word(o) {
        let mut runs = Vec::new();
        let mut p = o + 8;
        loop {
            let (Some(first), Some(n)) = (word(p), word(p + 8)) else {
                // The process ended while the shim wrote: drop the record.
                eprintln!("{path}: last record (byte {o}) incomplete, dropped");
                break 'records;
            };
            p += 16;
            if first == u64::MAX {
                break;
            }
            runs.push((first, n));
        }
        recs.push(Record { t_ns, runs });
        o = p;
    }
    Ok((interval, recs))
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opt = |name: &str| -> Result<Option<u64>> {
        match args.iter().position(|a| a == name) {
            Some(i) if i + 1 < args.len() => {
                let v = args.remove(i + 1);
                args.remove(i);
                Ok(Some(
                    v.parse::<f64>().with_context(|| format!("{name} {v}"))? as u64,
                ))
            }
            Some(_) => bail!("{name} needs a value"),
            None => Ok(None),
        }
    };
    let start_ns = opt("--start-ns")?;
    let seconds = opt("--seconds")?;
    if args.len() < 3 {
        bail!("usage: trace_pack OUT NOTE RAW... [--start-ns N] [--seconds S]");
    }
    let (out, note, raws) = (&args[0], &args[1], &args[2..]);
    let mut interval = 0;
    let mut all: Vec<(usize, Record)> = Vec::new();
    for (i, r) in raws.iter().enumerate() {
        let (iv, recs) = parse_raw(r)?;
        interval = interval.max(iv);
        all.extend(recs.into_iter().map(|rec| (i, rec)));
    }
    if interval == 0 || all.is_empty() {
        bail!("no records in {raws:?}");
    }
    let t_first = all.iter().map(|(_, r)| r.t_ns).min().expect("non-empty");
    let t0 = start_ns.unwrap_or(t_first.saturating_sub(interval));
    let t_end = seconds.map_or(u64::MAX, |s| t0.saturating_add(s * 1_000_000_000));
    // Bucket b holds the writes seen by scans in (t0 + b·interval, t0 + (b+1)·interval].
    let mut buckets: BTreeMap<u64, BTreeSet<(usize, u64)>> = BTreeMap::new();
    for (i, r) in &all {
        if r.t_ns <= t0 || r.t_ns > t_end {
            continue;
        }
        let b = (r.t_ns - t0 - 1) / interval;
        let set = buckets.entry(b).or_default();
        for &(first, n) in &r.runs {
            set.extend((first..first + n).map(|v| (*i, v)));
        }
    }
    let pages: BTreeSet<(usize, u64)> = buckets.values().flatten().copied().collect();
    let index: BTreeMap<(usize, u64), u32> = pages
        .iter()
        .enumerate()
        .map(|(k, &p)| (p, k as u32))
        .collect();
    let last = *buckets
        .keys()
        .next_back()
        .context("nothing recorded in the window")?;
    let samples: Vec<Sample> = (0..=last)
        .map(|b| Sample {
            dt_us: interval / 1000,
            pages: buckets
                .get(&b)
                .map(|s| s.iter().map(|p| index[p]).collect())
                .unwrap_or_default(),
        })
        .collect();
    let trace = Trace {
        footprint: pages.len() as u32,
        note: note.clone(),
        samples,
    };
    trace.validate().map_err(anyhow::Error::msg)?;
    let bytes = trace.encode();
    std::fs::write(out, &bytes).with_context(|| format!("writing {out}"))?;
    let writes: usize = trace.samples.iter().map(|s| s.pages.len()).sum();
    println!(
        "{out}: {} samples of {} ms, footprint {} pages ({} MiB), {writes} page writes, {} bytes",
        trace.samples.len(),
        interval / 1_000_000,
        trace.footprint,
        trace.footprint / 256,
        bytes.len()
    );
    Ok(())
}
