#!/usr/bin/env python3
"""Prints the results table of a lab run and writes results.json beside it.

    table.py [--xen RELEASE] OUT_DIR RUN_SECONDS SCENARIO...

Exit status 1 when a scenario failed ("not available" and "not supported",
a PV live migration on a hypervisor without shadow paging refused as
expected, are not failures).
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
    args = sys.argv[1:]
    xen = None
    if args[:1] == ["--xen"] and len(args) > 1:
        xen, args = args[1], args[2:]
    if len(args) < 2:
        sys.exit("usage: table.py [--xen RELEASE] OUT_DIR RUN_SECONDS SCENARIO...")
    out, run_secs, names = args[0], args[1], args[2:]
    results = []
    for name in names:
        path = os.path.join(out, name + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                results.append(json.load(f))
        except (OSError, ValueError) as e:
            results.append({"scenario": name, "status": "fail", "reason": f"{path}: {e}"})
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"xen": xen, "run_seconds": int(run_secs), "scenarios": results}, f, indent=2)

    head = ["scenario", "status", "try", "secs", "MiB", "rounds", "downtime_ms",
            "verify", "alive", "note"]
    rows = [row(r) for r in results]
    widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head) - 1)]
    for r in [head] + rows:
        cells = [str(c).ljust(w) for c, w in zip(r, widths)]
        print("  ".join(cells + [str(r[-1])[:100]]).rstrip())
    failed = sum(r["status"] == "fail" for r in results)
    passed = sum(r["status"] == "pass" for r in results)
    unsupported = sum(r["status"] == "not supported" for r in results)
    other = len(results) - passed - failed - unsupported
    print(f"\n{passed} passed, {failed} failed, {unsupported} not supported by this hypervisor,"
          f" {other} not available ({run_secs} s{', Xen ' + xen if xen else ''});"
          f" details in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
