#!/usr/bin/env python3
"""One perf-TYPE migration's log on the downtime probe's clock.

    ci/lab/perf_timeline.py OUT/TYPE/perf-TYPE.VARIANT.K [--all]

perf-TYPE stamps each line of a migration's log (BASE.log) with dom0's
clock when it arrived (seconds since the epoch); the downtime probe
(BASE.probe) gives its own start (t0_epoch) and, relative to it, the
moment Xen showed the source suspended (suspend_s) and the moment a new
domain ran (resume_s). This prints the log's lines in milliseconds
relative to the suspend, with the suspend and the resume among them, so
the pause can be cut into what xl, libxl and the helpers did in it.
Without --all only the lines from 2 s before the suspend to 2 s after the
resume are printed.

Where the stats files hold them (BASE.stats.jsonl: the sender's summary
with `suspended_ms` and, for xl, the receiving helper's restore line;
BASE.recv.jsonl: `rxmigrate receive`'s), it then prints both sides' marks
on the host's monotonic clock, in ms from the sender's own suspend: the
sender's `tx:` parts and the receiver's `rx:` marks, merged.
"""

import json
import os
import sys


def stats_lines(*paths):
    out = []
    for path in paths:
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    return out


def both_sides(base):
    """The sender's parts and the receiver's marks from the sender's suspend."""
    lines = stats_lines(base + ".stats.jsonl", base + ".recv.jsonl")
    summary = next((x["summary"] for x in lines if "summary" in x), None)
    restore = next((x["restore"] for x in lines if "restore" in x), None)
    if not summary or not summary.get("suspended_ms"):
        return
    start = summary["suspended_ms"]
    rows = []
    at = 0.0
    for part in summary.get("downtime_parts", []):
        at += part["ms"]
        rows.append((at, part["what"]))
    for m in (restore or {}).get("marks", []):
        rows.append((m["at_ms"] - start, m["what"]))
    rows.sort()
    print("both sides, ms from the sender's suspend (host's monotonic clock):")
    prev = 0.0
    for at, what in rows:
        print(f"{at:+10.1f} ms  {what:<18} (+{at - prev:.1f})")
        prev = at


def probe_fields(path):
    with open(path) as f:
        words = f.read().split()
    return {k: v for k, _, v in (w.partition("=") for w in words) if v}


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    base = args[0]
    p = probe_fields(base + ".probe")
    try:
        t0 = float(p["t0_epoch"])
        suspend = t0 + float(p["suspend_s"])
        resume = t0 + float(p["resume_s"])
    except (KeyError, ValueError):
        print(f"{base}.probe: no suspend and resume recorded", file=sys.stderr)
        return 1
    events = [(suspend, "== source suspended (probe)"), (resume, "== destination runs (probe)")]
    with open(base + ".log", errors="replace") as f:
        for line in f:
            stamp, _, text = line.rstrip("\n").partition(" ")
            try:
                events.append((float(stamp), text))
            except ValueError:
                print(f"{base}.log: an unstamped line: {line.strip()!r}", file=sys.stderr)
                return 1
    events.sort(key=lambda e: e[0])
    every = "--all" in argv
    for t, text in events:
        if every or suspend - 2 <= t <= resume + 2:
            print(f"{(t - suspend) * 1000:+10.0f} ms  {text}")
    print(f"downtime {(resume - suspend) * 1000:.0f} ms (probe)")
    both_sides(base)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
