//! Hand-written SVG plots: pages sent per round (one chart per guest size and
//! workload, a line per policy) and totals per policy (bars, relative to the
//! baseline the paper compares with).

use super::results::{BenchResults, CaseResult};
use std::fmt::Write as _;

const W: f64 = 720.0;
/// Text attributes; the size defaults to 12 from the root element.
const FONT: &str = "font-family=\"sans-serif\"";

fn colour(policy: &str) -> &'static str {
    match policy {
        "xen33" => "#d62728",
        "xen4" => "#1f77b4",
        "hotpage" | "paper" => "#2ca02c",
        "hotpeek" => "#9467bd",
        _ => "#7f7f7f",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn header(h: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" \
         viewBox=\"0 0 {W} {h}\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" {FONT} font-size=\"14\">{}</text>",
        W / 2.0,
        esc(title)
    );
    s
}

/// Pages sent per round for each policy, log scale (round 0 sends all of
/// memory, later rounds orders of magnitude less).
pub fn rounds(r: &BenchResults, size: u64, workload: &str) -> String {
    let cases = r.cases_of(size, workload);
    let (h, left, right, top, bottom) = (360.0, 70.0, 175.0, 40.0, 50.0);
    let (pw, ph) = (W - left - right, h - top - bottom);
    let max_rounds = cases
        .iter()
        .map(|c| c.pages_per_round.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let max_pages = cases
        .iter()
        .flat_map(|c| c.pages_per_round.iter().copied())
        .max()
        .unwrap_or(1)
        .max(10);
    let decades = (max_pages as f64).log10().ceil().max(1.0);
    // Zero pages plot on the axis (log scale has no zero).
    let y = |p: u64| top + ph - ((p.max(1) as f64).log10() / decades) * ph;
    let x = |i: usize| left + i as f64 / (max_rounds - 1) as f64 * pw;
    let mut s = header(
        h,
        &format!("Pages sent per round — {size} MiB, {workload} (median-time run)"),
    );
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>"
    );
    for d in 0..=decades as u32 {
        let yy = top + ph - d as f64 / decades * ph;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" {FONT}>{}</text>",
            left + pw,
            left - 6.0,
            yy + 4.0,
            10u64.pow(d)
        );
    }
    let step = (max_rounds / 15).max(1);
    for i in (0..max_rounds).step_by(step) {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" {FONT}>{i}</text>",
            x(i),
            top + ph + 16.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" {FONT}>round (last = stop-and-copy)</text>\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" {FONT} transform=\"rotate(-90 16 {})\">pages sent</text>",
        left + pw / 2.0,
        h - 12.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (k, c) in cases.iter().enumerate() {
        let col = colour(&c.policy);
        let pts: Vec<String> = c
            .pages_per_round
            .iter()
            .enumerate()
            .map(|(i, &p)| format!("{:.1},{:.1}", x(i), y(p)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{col}\" stroke-width=\"2\"/>",
            pts.join(" ")
        );
        for (i, &p) in c.pages_per_round.iter().enumerate() {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{col}\"><title>{} round {i}: {p} pages</title></circle>",
                x(i),
                y(p),
                esc(&c.policy)
            );
        }
        let ly = top + 10.0 + k as f64 * 20.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{col}\" stroke-width=\"3\"/>\
             <text x=\"{}\" y=\"{}\" {FONT}>{} ({} rounds)</text>",
            left + pw + 10.0,
            left + pw + 30.0,
            left + pw + 35.0,
            ly + 4.0,
            esc(&c.policy),
            c.pages_per_round.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One panel of bars: per (size, workload) group a bar per policy, the
/// value divided by the group's `baseline` policy (or the group's largest
/// value when that policy is absent).
fn panel(
    s: &mut String,
    r: &BenchResults,
    top: f64,
    title: &str,
    baseline: &str,
    value: fn(&CaseResult) -> f64,
    target: Option<f64>,
) {
    // Room on the right for the paper's target label.
    let (left, ph, pw) = (60.0, 150.0, W - 60.0 - 75.0);
    let groups = r.groups();
    let bars: Vec<Vec<(String, f64, f64)>> = groups
        .iter()
        .map(|(size, wl)| {
            let cs = r.cases_of(*size, wl);
            let base = cs
                .iter()
                .find(|c| c.policy == baseline)
                .map(|c| value(c))
                .unwrap_or_else(|| cs.iter().map(|c| value(c)).fold(0.0, f64::max));
            cs.iter()
                .map(|c| {
                    let v = value(c);
                    let rel = if base > 0.0 { v / base } else { 0.0 };
                    (c.policy.clone(), rel, v)
                })
                .collect()
        })
        .collect();
    let ymax = bars
        .iter()
        .flatten()
        .map(|b| b.1)
        .fold(1.0_f64, f64::max)
        .min(10.0)
        * 1.1;
    let y = |v: f64| top + ph - (v.min(ymax) / ymax) * ph;
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"{}\" {FONT} font-weight=\"bold\">{}</text>\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>",
        top - 8.0,
        esc(title),
        top + ph,
        left + pw,
        top + ph
    );
    for t in [0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0] {
        if t < ymax {
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" {FONT}>{t}</text>",
                left + pw,
                left - 4.0,
                y(t) + 4.0,
                yy = y(t)
            );
        }
    }
    if let Some(t) = target {
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#2ca02c\" \
             stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" {FONT} fill=\"#2ca02c\">paper {t}</text>",
            left + pw,
            left + pw + 4.0,
            y(t) + 4.0,
            yy = y(t)
        );
    }
    let gw = pw / groups.len().max(1) as f64;
    for (g, ((size, wl), bs)) in groups.iter().zip(&bars).enumerate() {
        let bw = (gw * 0.8) / bs.len().max(1) as f64;
        let gx = left + g as f64 * gw + gw * 0.1;
        for (k, (pol, rel, abs)) in bs.iter().enumerate() {
            let bx = gx + k as f64 * bw;
            let _ = writeln!(
                s,
                "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{} {size} MiB {}: {rel:.3} ({abs:.1})</title></rect>",
                y(*rel),
                bw * 0.9,
                top + ph - y(*rel),
                colour(pol),
                esc(pol),
                esc(wl)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" {FONT} font-size=\"10\">{size} MiB</text>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" {FONT} font-size=\"10\">{}</text>",
            top + ph + 13.0,
            top + ph + 25.0,
            esc(wl),
            x = gx + gw * 0.4
        );
    }
}

/// Totals per policy: bytes and time against xen33, downtime against xen4.
pub fn totals(r: &BenchResults) -> String {
    let h = 3.0 * 210.0 + 60.0;
    let mut s = header(h, "Totals per policy (median), relative to the baseline");
    let policies: Vec<String> = {
        let mut p: Vec<String> = Vec::new();
        for c in &r.cases {
            if !p.contains(&c.policy) {
                p.push(c.policy.clone());
            }
        }
        p
    };
    for (k, p) in policies.iter().enumerate() {
        let x = 60.0 + k as f64 * 110.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"32\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"43\" {FONT}>{}</text>",
            colour(p),
            x + 16.0,
            esc(p)
        );
    }
    panel(
        &mut s,
        r,
        80.0,
        "total bytes / xen33",
        "xen33",
        |c| c.total_bytes,
        Some(0.66),
    );
    panel(
        &mut s,
        r,
        290.0,
        "total time / xen33",
        "xen33",
        |c| c.total_time_ms,
        Some(0.675),
    );
    panel(
        &mut s,
        r,
        500.0,
        "downtime / xen4",
        "xen4",
        |c| c.downtime_ms,
        None,
    );
    s.push_str("</svg>\n");
    s
}
