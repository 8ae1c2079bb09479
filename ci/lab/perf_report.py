#!/usr/bin/env python3
"""The lab benchmark's report: perf-TYPE scenario JSONs -> table, JSON, SVG.

  perf_report.py OUT_DIR [SCENARIO...]

For each perf scenario and variant: the median and min-max of every figure
over its K migrations, and each median's ratio to stock's in the same run.
Writes OUT_DIR/perf.md, OUT_DIR/perf.json, OUT_DIR/perf.svg and prints the
table.
"""
import json
import os
import statistics
import sys

FIGURES = [("bytes", "MiB", 1 / 2**20), ("total_s", "total s", 1),
           ("downtime_ms", "downtime ms", 1), ("guest_stall_ms", "guest stall ms", 1),
           ("cpu_s", "CPU s", 1), ("recv_cpu_s", "recv CPU s", 1), ("rounds", "rounds", 1),
           ("work_ratio", "guest work", 1)]
# The default variants, in this order; others (plugin-POLICY, rx-POLICY) follow
# in the order the run lists them.
VARIANTS = ["stock", "plugin-xen4", "plugin-hotpage", "rx"]
COLOURS = ["#888888", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]


def variants_of(sc):
    """The run's variants: its meta record's list, else the default ones."""
    named = sc.get("variants")
    listed = named.split() if isinstance(named, str) else []
    return VARIANTS + [v for v in listed if v not in VARIANTS]


def summarise(runs):
    out = {}
    for key, _, _ in FIGURES:
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        if vals:
            out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                        "n": len(vals)}
    return out


def build(out_dir, names):
    report = {}
    for name in names:
        path = os.path.join(out_dir, name + ".json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            sc = json.load(f)
        runs = sc.get("perf", [])
        by = {v: summarise([r for r in runs if r.get("variant") == v]) for v in variants_of(sc)}
        stock = by.get("stock", {})
        for v, figs in by.items():
            for key, fig in figs.items():
                base = stock.get(key, {}).get("median")
                if base and v != "stock":
                    fig["ratio_to_stock"] = fig["median"] / base
        report[name] = {"status": sc.get("status"), "reason": sc.get("reason"),
                        "workload": sc.get("workload"), "memory_mib": sc.get("memory_mib"),
                        "k": sc.get("perf_k"), "variants": by}
    return report


def fmt(key, fig, scale):
    m, lo, hi = fig["median"] * scale, fig["min"] * scale, fig["max"] * scale
    digits = 0 if key in ("rounds",) else 1 if m >= 10 else 2
    if key == "work_ratio":
        # already a ratio (to the guest's own rate before the migration)
        return f"{m:.2f}× ({lo:.2f}–{hi:.2f})"
    text = f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"
    if "ratio_to_stock" in fig:
        text += f" **{fig['ratio_to_stock']:.2f}×**"
    return text


def table(report):
    lines = []
    for name, sc in report.items():
        lines.append(f"### {name}: {sc['memory_mib']} MiB, workload {sc['workload']}, "
                     f"K = {sc['k']} ({sc['status']}{': ' + sc['reason'] if sc['reason'] else ''})")
        lines.append("")
        lines.append("| variant | " + " | ".join(label for _, label, _ in FIGURES) + " |")
        lines.append("|---|" + "---|" * len(FIGURES))
        for v in sc["variants"]:
            figs = sc["variants"].get(v, {})
            if not figs:
                continue
            cells = [fmt(k, figs[k], s) if k in figs else "-" for k, _, s in FIGURES]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Medians with min–max over K migrations; **ratio** of the median to "
                 "stock's in the same run. Guest work: the guest's work rate during the "
                 "migration over its rate in the seconds before (1.0 = no cost).")
    return "\n".join(lines) + "\n"


def svg(report):
    """Ratios to stock (bytes, total time, downtime, CPU) per scenario and variant."""
    keys = [("bytes", "bytes"), ("total_s", "time"), ("downtime_ms", "downtime"), ("cpu_s", "CPU")]
    rows = [(n, v) for n, sc in report.items() for v in sc["variants"]
            if v != "stock" and sc["variants"].get(v)]
    names = sorted({v for _, v in rows}, key=lambda v: (v not in VARIANTS, VARIANTS.index(v)
                                                        if v in VARIANTS else 0, v))
    colours = {v: COLOURS[i % len(COLOURS)] for i, v in enumerate(names)}
    w, bar, gap, left, top = 760, 14, 10, 190, 40
    h = top + len(rows) * (len(keys) * bar + gap) + 40
    scale = (w - left - 40) / 2.0  # 0..2x
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="20" font-size="13">ratio to stock xl (median; 1.0 = stock, '
           'left is better)</text>']
    x1 = left + scale
    out.append(f'<line x1="{x1}" y1="{top - 5}" x2="{x1}" y2="{h - 30}" stroke="black"/>')
    y = top
    for name, v in rows:
        figs = report[name]["variants"][v]
        out.append(f'<text x="5" y="{y + bar * 2}">{name} {v}</text>')
        for key, label in keys:
            r = figs.get(key, {}).get("ratio_to_stock")
            if r is not None:
                ln = min(r, 2.0) * scale
                out.append(f'<rect x="{left}" y="{y}" width="{ln:.1f}" height="{bar - 2}" '
                           f'fill="{colours[v]}"/>')
                out.append(f'<text x="{left + ln + 4:.1f}" y="{y + bar - 4}">{label} '
                           f'{r:.2f}</text>')
            y += bar
        y += gap
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: perf_report.py OUT_DIR [SCENARIO...]")
    out_dir = sys.argv[1]
    names = sys.argv[2:] or sorted(f[:-5] for f in os.listdir(out_dir)
                                   if f.startswith("perf-") and f.endswith(".json"))
    report = build(out_dir, names)
    with open(os.path.join(out_dir, "perf.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    text = table(report)
    with open(os.path.join(out_dir, "perf.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out_dir, "perf.svg"), "w", encoding="utf-8") as f:
        f.write(svg(report))
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
