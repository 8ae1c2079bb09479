#!/usr/bin/env python3
"""Turns a scenario's record (tab-separated key=value lines) into its JSON.

Record lines, by their first field:
  meta    scenario facts (name, guest type, workload, ...)
  step    one timed operation: op, rc, secs
  file    a stream file written: op, bytes, writer
  stats   rxmigrate's --stats summary for an op: rounds, downtime_ms, ...
  alive   a liveness check: after, alive, heartbeat_before/after, boots, stall_ms
  check   a named assertion of a scenario: name, ok, detail (the evidence)
  perf    one migration of the perf benchmark: variant, k, bytes, total_s,
          downtime_ms, guest_stall_ms, cpu_s, recv_cpu_s, rounds
  result  status, reason, total_s

The JSON keeps every line (steps, files, stats, liveness, checks) and adds the
figures the results table shows: bytes, rounds, downtime_ms (and where it
came from), alive, heartbeat, boots and whether every verifier run passed.
"""
import json
import sys


def value(text):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"yes": True, "no": False}.get(text, text)


def parse(path):
    lines = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw:
                continue
            kind, *pairs = raw.split("\t")
            entry = {}
            for pair in pairs:
                key, sep, text = pair.partition("=")
                if sep:
                    entry[key] = value(text)
            lines.append((kind, entry))
    return lines


def build(lines):
    out = {"status": "fail", "reason": "the scenario ended without a result"}
    lists = {"step": [], "file": [], "stats": [], "alive": [], "check": [], "perf": []}
    for kind, entry in lines:
        if kind in ("meta", "result"):
            out.update(entry)
        elif kind in lists:
            lists[kind].append(entry)
    out["steps"], out["files"], out["stats"], out["liveness"] = (
        lists["step"], lists["file"], lists["stats"], lists["alive"])
    if lists["check"]:
        out["checks"] = lists["check"]
    if lists["perf"]:
        out["perf"] = lists["perf"]

    # the stream file's size, or for a migration what rxmigrate sent
    streamed = [s["stream_bytes"] for s in out["stats"] if "stream_bytes" in s]
    out["bytes"] = (out["files"][0]["bytes"] if out["files"]
                    else streamed[0] if streamed else None)
    # a migration's rounds say more than a (non-live) save's
    with_rounds = sorted((s for s in out["stats"] if "rounds" in s),
                         key=lambda s: s.get("op") not in ("rx-migrate", "migrate"))
    out["rounds"] = with_rounds[0]["rounds"] if with_rounds else None
    # Downtime: rxmigrate measures its own; for the others the longest stall
    # the guest saw after a migration is the best figure there is.
    out["downtime_ms"], out["downtime_source"] = None, None
    migrated = [s for s in out["stats"]
                if s.get("op") in ("rx-migrate", "migrate") and "downtime_ms" in s]
    if migrated:
        out["downtime_ms"], out["downtime_source"] = migrated[0]["downtime_ms"], "rxmigrate stats"
    else:
        after = [a for a in out["liveness"] if a.get("after") in ("migrate", "rx-migrate")]
        # An HVM guest's clock does not count the time it was stopped (seen
        # in the lab: a 1 s "stall" across a save and restore a minute
        # apart), so its stall says nothing there.
        if after and after[0].get("alive") and out.get("guest_type") != "hvm":
            out["downtime_ms"], out["downtime_source"] = after[0]["stall_ms"], "guest heartbeat stall"
    verifies = [s for s in out["steps"] if str(s.get("op", "")).endswith("verify-stream-v2")]
    out["verify_stream_v2"] = (None if not verifies
                               else all(s.get("rc") == 0 for s in verifies))
    if out["liveness"]:
        last = out["liveness"][-1]
        out["alive"] = all(a.get("alive") is True for a in out["liveness"])
        out["heartbeat"] = last.get("heartbeat_after")
        out["boots"] = last.get("boots")
    else:
        out["alive"], out["heartbeat"], out["boots"] = None, None, None
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RECORD")
    json.dump(build(parse(sys.argv[1])), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
