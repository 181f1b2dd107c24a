"""The cost of the fault check on the hot read path (issue 11, item 3).

Compares two builds of dshared, interleaved: `python3 -m timeit` runs of one
get of a 16-char str value from a 100,000-key dict, alternating A and B so that
a slow moment of the host hits both.

    python3 bench/fault_cost.py OLD_CHECKOUT NEW_CHECKOUT [ROUNDS]
    python3 bench/fault_cost.py --callgrind OLD_CHECKOUT NEW_CHECKOUT

Each checkout must be built in place. Prints each round and, per build, the
median and the best of the per-round figures (ns per get), and the median
of the per-round differences B - A. On a loaded host the spread of the times
is far larger than one load; --callgrind counts instead the instructions
that read_section itself (the sequence checks and the fault check, not the
lookup) executes per get, which does not depend on the load.
"""
import os
import re
import statistics
import subprocess
import sys

SETUP = r"""
import os, dshared
name = "dsh-bench-fault-%d" % os.getpid()
seg = dshared.Segment(name, 64 << 20, create=True)
dshared.unlink(name)
d = seg.col()
d.update({"k%07d" % i: "v%015d" % i for i in range(100000)})
get = d.get
k = "k0054321"
"""


def run(path, stmt):
    env = dict(os.environ, PYTHONPATH=path)
    out = subprocess.run([sys.executable, "-m", "timeit", "-n", "200000", "-r", "7", "-s", SETUP, stmt],
                         env=env, cwd="/", capture_output=True, text=True, check=True).stdout
    m = re.search(r"([\d.]+) (nsec|usec) per loop", out)
    v = float(m.group(1))
    return v * 1000 if m.group(2) == "usec" else v


CG_SCRIPT = r"""
import os, dshared
name = "dsh-bench-fault-cg-%d" % os.getpid()
seg = dshared.Segment(name, 16 << 20, create=True)
dshared.unlink(name)
d = seg.col()
d.update({"k%07d" % i: "v%015d" % i for i in range(10000)})
keys = ["k%07d" % i for i in range(0, 10000, 7)]
for _ in range(20):
    for k in keys:
        d[k]
"""
CG_GETS = 20 * len(range(0, 10000, 7))


def callgrind(path):
    """Instructions executed in read_section itself, per get."""
    out = "/tmp/dsh-fault-cg-%d.out" % os.getpid()
    try:
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, sys.executable,
                        "-c", CG_SCRIPT], env=dict(os.environ, PYTHONPATH=path), cwd="/",
                       capture_output=True, check=True)
        ann = subprocess.run(["callgrind_annotate", "--auto=no", out], capture_output=True, text=True, check=True).stdout
    finally:
        if os.path.exists(out):
            os.unlink(out)
    total = 0
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S+:__pyx_f_7dshared_6_codec_read_section( |$)", line)
        if m:
            total += int(m.group(1).replace(",", ""))
    return total / CG_GETS


def main():
    if sys.argv[1] == "--callgrind":
        for label, path in (("A", sys.argv[2]), ("B", sys.argv[3])):
            print("%s %s: read_section executes %.1f instructions per get" % (label, path, callgrind(path)))
        return
    a, b = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    for stmt in ("d[k]", "get(k)"):
        res = {a: [], b: []}
        for i in range(rounds):
            for path in ((a, b) if i % 2 == 0 else (b, a)):
                res[path].append(run(path, stmt))
            print("%s round %d: A %.1f ns  B %.1f ns" % (stmt, i, res[a][-1], res[b][-1]), flush=True)
        for label, path in (("A", a), ("B", b)):
            print("%-7s %s %s: median %.1f ns, best %.1f ns"
                  % (stmt, label, path, statistics.median(res[path]), min(res[path])))
        diffs = [y - x for x, y in zip(res[a], res[b])]
        print("%-7s B - A, paired by round: median %+.1f ns (min %+.1f, max %+.1f)"
              % (stmt, statistics.median(diffs), min(diffs), max(diffs)))


if __name__ == "__main__":
    main()
