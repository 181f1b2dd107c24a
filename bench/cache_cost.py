"""Instructions per cache hit, by function: dshared's c.get and @memoize
against functools.lru_cache (issue 16: the hit target of 1.2x lru_cache);
then per miss that stores and evicts, @memoize against a full lru_cache.

    python3 bench/cache_cost.py [CHECKOUT]

Runs each contender under callgrind, N and then 2N hits of one key (a
200-char str value) in a function's loop, in one process (one hash seed),
profiles dumped after each, and takes the difference: the instructions one more
hit costs, the loop that calls it included (as in the timed benchmark),
and by function (self cost). Instruction counts do not depend on the load
of the host, so they say where the time of a hit goes when timings are
noisy."""
import os
import re
import subprocess
import sys

SCRIPT = r"""
import os, sys, functools, dshared
name = "dsh-bench-cachecg-%d" % os.getpid()
seg = dshared.Segment(name, 16 << 20, create=True)
dshared.unlink(name)
V = "v" * 200
c = seg.cache("c", max_entries=10000)
@functools.lru_cache(maxsize=None)
def lru(k):
    return V
@dshared.memoize("m", max_entries=10000, segment=seg)
def memo(k):
    return V
keys = ["key%d" % i for i in range(100)]
for k in keys:
    lru(k); memo(k); c[k] = V
@functools.lru_cache(maxsize=1000)
def lru_b(k):
    return V
@dshared.memoize("mb", max_entries=1000, segment=seg)
def memo_b(k):
    return V
f = {"lru_cache": lru, "c.get": c.get, "memoize": memo, "lru_cache miss": lru_b, "memoize miss": memo_b}[sys.argv[1]]
def run(f, k, n):
    for _ in range(n):
        f(k)
def run_miss(f, it, n):
    for _ in range(n):
        f(next(it))             # a new key: miss, store, evict (the cache is full)
n = int(sys.argv[2])
if sys.argv[1].endswith("miss"):
    run, k = run_miss, iter(range(10 ** 9))
    run(f, k, 1100)
else:
    k = keys[5]
    run(f, k, 100)
os.getppid()            # callgrind dumps here: the setup
run(f, k, n)
os.getppid()            # and here: n calls
run(f, k, 2 * n)
os.getppid()            # and here: 2n calls
"""
N = 20000
CONTENDERS = ("lru_cache", "c.get", "memoize")
MISSES = ("lru_cache miss", "memoize miss")


def _annotate(out):
    ann = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", out],
                         capture_output=True, text=True, check=True).stdout
    total, funcs = 0, {}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+):(\S+)", line)
        if m:
            fn = re.sub(r"__pyx_(f|pw|pf)_7dshared_6_codec_", "", m.group(3))
            funcs[fn] = funcs.get(fn, 0) + int(m.group(1).replace(",", ""))
    return total, funcs


def per_hit(path, which):
    """In one process (one hash seed, one segment): the cost of n more hits."""
    out = "/tmp/dsh-cache-cg-%d.out" % os.getpid()
    try:
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                        "--dump-before=os_getppid*", sys.executable, "-c", SCRIPT, which, str(N)],
                       env=dict(os.environ, PYTHONPATH=path, PYTHONHASHSEED="0"), cwd="/",
                       capture_output=True, check=True)
        t1, f1 = _annotate(out + ".2")      # n hits
        t2, f2 = _annotate(out + ".3")      # 2n hits
    finally:
        for part in range(6):
            name = out + (".%d" % part if part else "")
            if os.path.exists(name):
                os.unlink(name)
    by = {fn: (f2.get(fn, 0) - f1.get(fn, 0)) / N for fn in set(f1) | set(f2)}
    tot = (t2 - t1) / N
    # by function, self cost (the frames below the script's, which callgrind
    # dumps with their inclusive cost, left out)
    return tot, sorted(((v, fn) for fn, v in by.items() if 2 <= v < 0.9 * tot), reverse=True)


def main():
    path = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    for group, what in ((CONTENDERS, "hit"), (MISSES, "miss (store and evict)")):
        res = {w: per_hit(path, w) for w in group}
        base = res[group[0]][0]
        for w in group:
            tot, fns = res[w]
            print("%-15s %6.0f instructions per %s (%.2fx %s)" % (w, tot, what, tot / base, group[0]))
            for v, fn in fns[:25]:
                print("    %7.1f  %s" % (v, fn))


if __name__ == "__main__":
    main()
