"""Two builds of dshared compared on the hot read and write paths (the key
hash, the lookup, the decoders, list indexing), in interleaved runs (old, new, old, new, ...): each run populates
100,000 keys per dict in a fresh segment and times batches of 1,000
operations in thread CPU time, the operations interleaved round by round;
its figure per operation is the median over rounds. The summary gives the
median over runs per build and the median of the paired new/old ratios.

    python3 bench/hash_interleaved.py OLD_TREE NEW_TREE [RUNS]

where each tree holds a built dshared/ (python3 setup.py build_ext --inplace).
(a) get hit of a 16-char str value, (b) get hit of an int value, (c) miss,
(d) overwrite with a 16-char str, (f) nested read m[k]['key'], (h) `k in d`
hit, (l) lst[i] of a 100,000-item list of ints; keys are the 8-char "k0000000"
of bench/; x: int keys, y: 16-char str keys.
"""
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import json, os, random, time
import dshared
N, BATCH, ROUNDS = 100_000, 1000, 200
key = lambda i: "k%07d" % i
sv = lambda i, t="v": "%s%015d" % (t, i)
order = list(range(N)); random.Random(42).shuffle(order)
name = "dshb-hash-%d" % os.getpid()
seg = dshared.Segment(name, 512 << 20, create=True)
try:
    r = seg.col()
    r["s"] = {key(i): sv(i) for i in range(N)}
    r["i"] = {key(i): i for i in range(N)}
    r["n"] = {key(i): {"key": sv(i)} for i in range(N)}
    r["ik"] = {i * 7919: i for i in range(N)}
    r["k16"] = {"key-%012d" % i: i for i in range(N)}
    r["l"] = list(range(N))
    ms, mi, mn, mik, mk16, ml = r["s"], r["i"], r["n"], r["ik"], r["k16"], r["l"]
    cut = lambda seq: [seq[j:j + BATCH] for j in range(0, len(seq), BATCH)]
    bk = cut([key(i) for i in order]); bm = cut(["x%07d" % i for i in order])
    bi = cut([i * 7919 for i in order]); b16 = cut(["key-%012d" % i for i in order])
    bv = cut([sv(i, "w") for i in order])
    def a(b):
        for k in b: ms[k]
    def b_(b):
        for k in b: mi[k]
    def c(b):
        for k in b: k in ms
    def f(b):
        for k in b: mn[k]["key"]
    def x(b):
        for k in b: mik[k]
    def y(b):
        for k in b: mk16[k]
    def h(b):
        for k in b: k in ms
    def l(b):
        for i in b: ml[i]
    ops = [("a_get_str16", a, bk), ("b_get_int", b_, bk), ("c_miss", c, bm),
           ("f_nested", f, bk), ("x_get_intkey", x, bi), ("y_get_key16", y, b16),
           ("h_contains", h, bk), ("l_list_index", l, cut(order))]
    res = {k: [] for k, _, _ in ops}
    res["d_overwrite"] = []
    for rnd in range(ROUNDS):
        for label, fn, src in ops:
            bb = src[rnd % len(src)]
            t = time.thread_time_ns(); fn(bb); res[label].append((time.thread_time_ns() - t) / len(bb))
        if rnd < 100:
            j = rnd % len(bk)
            t = time.thread_time_ns()
            for k, v in zip(bk[j], bv[j]):
                ms[k] = v
            res["d_overwrite"].append((time.thread_time_ns() - t) / BATCH)
    print(json.dumps({k: sorted(v)[len(v) // 2] for k, v in res.items()}))
finally:
    seg.close()
    seg.unlink()
'''


def run(tree):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd="/", check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return json.loads(out)


def main():
    old, new = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    rows = {"old": [], "new": []}
    for i in range(runs):
        for which, tree in (("old", old), ("new", new)):
            rows[which].append(run(tree))
            print(which, i + 1, json.dumps({k: round(v, 1) for k, v in rows[which][-1].items()}), flush=True)
    print("%-14s %9s %9s %7s %12s" % ("ns/op", "old", "new", "ratio", "paired med"))
    for k in rows["old"][0]:
        o = statistics.median(r[k] for r in rows["old"])
        n = statistics.median(r[k] for r in rows["new"])
        paired = statistics.median(b[k] / a[k] for a, b in zip(rows["old"], rows["new"]))
        print("%-14s %9.1f %9.1f %7.3f %12.3f" % (k, o, n, n / o, paired))


if __name__ == "__main__":
    main()
