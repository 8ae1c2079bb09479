"""A skewed load on redis-server (the process the trace records), over RESP.

usage: kv_zipf.py PORT START_FILE SECONDS [KEYS] [VALUE_BYTES]

Loads KEYS keys of VALUE_BYTES, writes CLOCK_MONOTONIC ns to START_FILE, then
for SECONDS sends pipelined batches of 64 commands: 90% GET, 10% SET, keys
drawn from a Zipf distribution (s = 0.99, as YCSB's), hottest keys spread
over the key space.
"""
import bisect
import random
import socket
import sys
import time

port, start_file, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
nkeys = int(sys.argv[4]) if len(sys.argv) > 4 else 150_000
vbytes = int(sys.argv[5]) if len(sys.argv) > 5 else 512

for _ in range(100):
    try:
        sock = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(f"redis on port {port} never answered")
rfile = sock.makefile("rb")


def cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_reply():
    line = rfile.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        if n >= 0:
            rfile.read(n + 2)
    elif line[:1] == b"-":
        raise RuntimeError(line)


def pipeline(cmds):
    sock.sendall(b"".join(cmds))
    for _ in cmds:
        read_reply()


rng = random.Random(1)
value = lambda: rng.randbytes(vbytes)
for base in range(0, nkeys, 1000):
    pipeline([cmd("SET", "key:%d" % k, value()) for k in range(base, min(nkeys, base + 1000))])

# Zipf(0.99) over ranks, ranks scattered over the keys.
weights = [1.0 / (r + 1) ** 0.99 for r in range(nkeys)]
cdf, acc = [], 0.0
for w in weights:
    acc += w
    cdf.append(acc)
perm = list(range(nkeys))
rng.shuffle(perm)

with open(start_file, "w") as f:
    f.write(str(time.monotonic_ns()))
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    batch = []
    for _ in range(64):
        k = perm[bisect.bisect_left(cdf, rng.random() * acc)]
        if rng.random() < 0.1:
            batch.append(cmd("SET", "key:%d" % k, value()))
        else:
            batch.append(cmd("GET", "key:%d" % k))
    pipeline(batch)
    n += 64
print(f"kv-zipf: {n} requests in {seconds:.0f} s ({n / seconds:.0f}/s), {nkeys} keys of {vbytes} B")
