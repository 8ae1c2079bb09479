#!/usr/bin/env python3
"""Where rxmigrate's sender spent its time in a perf-TYPE run.

    ci/lab/perf_times.py OUT/STAGE [SCENARIO]

perf-TYPE keeps each migration's statistics (BASE.stats.jsonl, one line per
round, then the summary) in the stage's directory. Each round carries the
sender's milliseconds in page types (holes included), mapping, copying out,
stream writes (waiting for the link included), PEEKs and CLEANs. This prints,
per variant, the medians over its migrations of round 0 and of all rounds
together, and what of the round time none of them covers ("other": the
loop, the policy, the progress reports). Stock's helper keeps no such
statistics, so it has no row.
"""
import glob
import json
import os
import re
import statistics
import sys

PARTS = ["types_ms", "map_ms", "copy_ms", "write_ms", "peek_ms", "clean_ms"]


def rounds_of(path):
    rounds = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if "round" in rec:
                rounds.append(rec["round"])
    return rounds


def split(rounds):
    """Seconds per part (and the whole and "other") over these rounds."""
    out = {p: sum(r["times"][p] for r in rounds) / 1e3 for p in PARTS}
    out["round_ms"] = sum(r["duration_ms"] for r in rounds) / 1e3
    out["other"] = out["round_ms"] - sum(out[p] for p in PARTS)
    return out


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    stage = argv[1]
    scenario = argv[2] if len(argv) > 2 else "perf-*"
    by_variant = {}
    for path in sorted(glob.glob(os.path.join(stage, scenario + ".*.stats.jsonl"))):
        m = re.match(r".*?\.(.+)\.(\d+)\.stats\.jsonl$", os.path.basename(path))
        rounds = rounds_of(path)
        if not m or not rounds or "times" not in rounds[0]:
            continue
        runs = by_variant.setdefault(m.group(1), [])
        runs.append((split(rounds[:1]), split(rounds), rounds[0]["dirty_pages"]))
    cols = ["round_ms"] + PARTS + ["other"]
    head = ["round s", "types", "map", "copy", "write", "peek", "clean", "other"]
    print("| variant | n | pfns | which | " + " | ".join(head) + " |")
    print("|---|---|---|---|" + "---|" * len(head))
    for v, runs in by_variant.items():
        for which, i in (("round 0", 0), ("all rounds", 1)):
            med = [statistics.median(r[i][c] for r in runs) for c in cols]
            pfns = statistics.median(r[2] for r in runs)
            print(f"| {v} | {len(runs)} | {pfns:.0f} | {which} | "
                  + " | ".join(f"{x:.2f}" for x in med) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
