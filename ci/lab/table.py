#!/usr/bin/env python3
"""Prints the results table of a lab run and writes results.json beside it.

    table.py OUT_DIR RUN_SECONDS SCENARIO...

Exit status 1 when a scenario failed ("not available" is not a failure).
"""
import json
import os
import sys


def fmt(v, unit="", digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def row(r):
    mib = r.get("bytes")
    alive = r.get("alive")
    return [
        r["scenario"],
        r["status"],
        fmt(r.get("attempt")),
        fmt(float(r["total_s"]) if "total_s" in r else None),
        fmt(mib / 1048576 if mib else None, digits=1),
        fmt(r.get("rounds")),
        fmt(r.get("downtime_ms")),
        {None: "-", True: "ok", False: "FAIL"}[r.get("verify_stream_v2")],
        "-" if alive is None else
        f"{'yes' if alive else 'NO'} hb={fmt(r.get('heartbeat'))} boots={fmt(r.get('boots'))}",
        r.get("reason") or "",
    ]


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: table.py OUT_DIR RUN_SECONDS SCENARIO...")
    out, run_secs, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    results = []
    for name in names:
        path = os.path.join(out, name + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                results.append(json.load(f))
        except (OSError, ValueError) as e:
            results.append({"scenario": name, "status": "fail", "reason": f"{path}: {e}"})
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"run_seconds": int(run_secs), "scenarios": results}, f, indent=2)

    head = ["scenario", "status", "try", "secs", "MiB", "rounds", "downtime_ms",
            "verify", "alive", "note"]
    rows = [row(r) for r in results]
    widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head) - 1)]
    for r in [head] + rows:
        cells = [str(c).ljust(w) for c, w in zip(r, widths)]
        print("  ".join(cells + [str(r[-1])[:100]]).rstrip())
    failed = sum(r["status"] == "fail" for r in results)
    passed = sum(r["status"] == "pass" for r in results)
    print(f"\n{passed} passed, {failed} failed, {len(results) - passed - failed} not available"
          f" ({run_secs} s); details in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
