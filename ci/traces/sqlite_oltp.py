"""A pgbench-like (TPC-B) load on SQLite, in this process: the trace records
this interpreter with SQLite's page cache in its heap.

usage: sqlite_oltp.py DB_DIR START_FILE SECONDS [SCALE]

SCALE 1 = 100 000 accounts (pgbench's scale). Builds the tables, warms the
cache, writes CLOCK_MONOTONIC ns to START_FILE, then runs transactions for
SECONDS: update an account, read it, update its teller and branch, insert a
history row — pgbench's default script, with uniform random accounts.
"""
import os
import random
import sqlite3
import sys
import time

db_dir, start_file, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
scale = int(sys.argv[4]) if len(sys.argv) > 4 else 4
path = os.path.join(db_dir, "bench.db")
if os.path.exists(path):
    os.remove(path)
con = sqlite3.connect(path, isolation_level=None)
con.execute("PRAGMA cache_size=-131072")  # 128 MiB of page cache, in the heap
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=NORMAL")
con.executescript(
    """
    CREATE TABLE branches (bid INTEGER PRIMARY KEY, bbalance INTEGER, filler TEXT);
    CREATE TABLE tellers (tid INTEGER PRIMARY KEY, bid INTEGER, tbalance INTEGER, filler TEXT);
    CREATE TABLE accounts (aid INTEGER PRIMARY KEY, bid INTEGER, abalance INTEGER, filler TEXT);
    CREATE TABLE history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime REAL, filler TEXT);
    """
)
naccounts, ntellers, nbranches = 100_000 * scale, 10 * scale, scale
con.execute("BEGIN")
con.executemany("INSERT INTO branches VALUES (?, 0, ?)", ((b, " " * 88) for b in range(1, nbranches + 1)))
con.executemany(
    "INSERT INTO tellers VALUES (?, ?, 0, ?)",
    ((t, (t - 1) // 10 + 1, " " * 84) for t in range(1, ntellers + 1)),
)
con.executemany(
    "INSERT INTO accounts VALUES (?, ?, 0, ?)",
    ((a, (a - 1) // 100_000 + 1, " " * 84) for a in range(1, naccounts + 1)),
)
con.execute("COMMIT")
con.execute("SELECT sum(abalance) FROM accounts").fetchone()  # warm the cache

rng = random.Random(1)
with open(start_file, "w") as f:
    f.write(str(time.monotonic_ns()))
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    aid = rng.randint(1, naccounts)
    tid = rng.randint(1, ntellers)
    bid = rng.randint(1, nbranches)
    delta = rng.randint(-5000, 5000)
    con.execute("BEGIN")
    con.execute("UPDATE accounts SET abalance = abalance + ? WHERE aid = ?", (delta, aid))
    con.execute("SELECT abalance FROM accounts WHERE aid = ?", (aid,)).fetchone()
    con.execute("UPDATE tellers SET tbalance = tbalance + ? WHERE tid = ?", (delta, tid))
    con.execute("UPDATE branches SET bbalance = bbalance + ? WHERE bid = ?", (delta, bid))
    con.execute(
        "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)", (tid, bid, aid, delta, time.time(), " " * 22)
    )
    con.execute("COMMIT")
    n += 1
print(f"sqlite-oltp: {n} transactions in {seconds:.0f} s ({n / seconds:.0f} tps), scale {scale}")
