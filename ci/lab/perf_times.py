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

Then the receivers' side: our receiving helper appends a {"restore": ...}
line to the same stats file, `rxmigrate receive --stats` writes one to
BASE.recv.jsonl. Per variant, the medians of the page data's seconds in
reading the stream (waiting for the sender included), populating, page
tables, mapping, copying, the P2M, and "other" (the rest of the page data's
time: the loop, entry checks, progress).
"""
import glob
import json
import os
import re
import statistics
import sys

PARTS = ["types_ms", "map_ms", "copy_ms", "write_ms", "peek_ms", "clean_ms"]
RECV_PARTS = ["read_ms", "populate_ms", "localise_ms", "map_ms", "copy_ms", "p2m_ms"]


def rounds_of(path):
    rounds = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if "round" in rec:
                rounds.append(rec["round"])
    return rounds


def restore_of(paths):
    """The first {"restore": ...} line of these files, or None."""
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if "restore" in rec:
                    return rec["restore"]
    return None


def recv_table(stage, scenario):
    by_variant = {}
    names = glob.glob(os.path.join(stage, scenario + ".*.stats.jsonl")) + glob.glob(
        os.path.join(stage, scenario + ".*.recv.jsonl"))
    bases = sorted({re.sub(r"\.(stats|recv)\.jsonl$", "", p) for p in names})
    for base in bases:
        m = re.match(r".*?\.(.+)\.(\d+)$", os.path.basename(base))
        r = restore_of([base + ".recv.jsonl", base + ".stats.jsonl"])
        if not m or not r:
            continue
        parts = {p: r["times"][p] / 1e3 for p in RECV_PARTS}
        parts["total"] = r["total_ms"] / 1e3
        parts["other"] = parts["total"] - sum(parts[p] for p in RECV_PARTS)
        parts["pages"] = r["pages"]
        parts["records"] = r["page_records"]
        by_variant.setdefault(m.group(1), []).append(parts)
    if not by_variant:
        return
    cols = ["total"] + RECV_PARTS + ["other"]
    head = ["page data s", "read", "populate", "page tables", "map", "copy", "p2m", "other"]
    print()
    print("| receiver | n | pages | records | " + " | ".join(head) + " |")
    print("|---|---|---|---|" + "---|" * len(head))
    for v, runs in by_variant.items():
        med = [statistics.median(r[c] for r in runs) for c in cols]
        pages = statistics.median(r["pages"] for r in runs)
        recs = statistics.median(r["records"] for r in runs)
        print(f"| {v} | {len(runs)} | {pages:.0f} | {recs:.0f} | "
              + " | ".join(f"{x:.2f}" for x in med) + " |")


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
    recv_table(stage, scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
