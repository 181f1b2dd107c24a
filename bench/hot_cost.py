"""Instructions per operation on the hot paths, two builds side by side
(callgrind): for restructurings that must not slow anything (issue 13).

    python3 bench/hot_cost.py OLD_CHECKOUT NEW_CHECKOUT [OP ...]

Each checkout must be built in place. For each operation, each build runs
the loop R and 2R times under callgrind; (I(2R) - I(R)) / R is the cost of
one round, setup and import cancelling out. The segment's seed is fixed
(os.urandom is replaced in the child), so both builds probe the same slots
and the counts repeat to the instruction. Prints the table, NEW / OLD.
"""
import os
import subprocess
import sys

SETUP = r'''
import os, sys, random, gc
_r = random.Random(1234)
os.urandom = lambda n: bytes(_r.getrandbits(8) for _ in range(n))
import dshared
name = "dsh-bench-hot-%d" % os.getpid()
seg = dshared.Segment(name, 64 << 20, create=True)
dshared.unlink(name)
d = seg.col()
d.update({"k%07d" % i: i for i in range(10000)})
d.update({"s%07d" % i: "v%031d" % i for i in range(1000)})
d["a"] = {"b": 1}
d["L"] = list(range(1000))
d["big"] = {"k%05d" % i: [i, "x%d" % i] for i in range(10000)}
lst = d["L"]
big = d["big"]
keys = ["k%07d" % i for i in range(0, 10000, 10)]
skeys = ["s%07d" % i for i in range(1000)]
R = int(sys.argv[1])
gc.collect()
gc.disable()
'''
CACHE = r'''
c = seg.cache("hot", max_entries=10000)
@dshared.memoize("memo", max_entries=10000, segment=seg)
def memo(k):
    return "v" * 200
for k in skeys:
    c[k] = "v" * 200
    memo(k)
'''
# name: (loop, operations per round, rounds R)
OPS = {
    "d[k]": ("for _ in range(R):\n for k in keys: d[k]", 1000, 20),
    "k in d": ("for _ in range(R):\n for k in keys: k in d", 1000, 20),
    "d.get(k)": ("for _ in range(R):\n for k in keys: d.get(k)", 1000, 20),
    "d[k] = int": ("for _ in range(R):\n for k in keys: d[k] = 5", 1000, 20),
    "d[k] = str32": ("for _ in range(R):\n for k in skeys: d[k] = 'w%031d' % 7", 1000, 20),
    "lst[i]": ("for _ in range(R):\n for i in range(1000): lst[i]", 1000, 20),
    "d['a']['b']": ("for _ in range(R):\n for i in range(1000): d['a']['b']", 1000, 20),
    "del + insert": ("for _ in range(R):\n for k in skeys:\n  del d[k]\n  d[k] = 'w%031d' % 7", 1000, 10),
    "to_python() 10k": ("for _ in range(R):\n big.to_python()", 1, 2),
    # a dict filled one key at a time from empty: its table grows ~30 times
    "insert, growing": ("pkeys = ['p%07d' % i for i in range(20000)]\n"
                        "for _ in range(R):\n d['p'] = {}\n p = d['p']\n"
                        " for k in pkeys: p[k] = 'v%015d'\n del d['p']", 20000, 2),
    # cache mode: a hit of c.get, a store over a cached key, a memoized call's hit
    "c.get(k) hit": (CACHE + "for _ in range(R):\n for k in skeys: c.get(k)", 1000, 20),
    "c[k] = v": (CACHE + "for _ in range(R):\n for k in skeys: c[k] = 7", 1000, 10),
    "memo(k) hit": (CACHE + "for _ in range(R):\n for k in skeys: memo(k)", 1000, 20),
}


def instructions(path, op, rounds):
    out = "/tmp/dsh-bench-hot-%d.out" % os.getpid()
    try:
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, sys.executable, "-c",
                        SETUP + OPS[op][0], str(rounds)],
                       env=dict(os.environ, PYTHONPATH=path, PYTHONHASHSEED="0"), cwd="/",
                       capture_output=True, check=True)
        with open(out) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        raise RuntimeError("no totals in the callgrind output")
    finally:
        if os.path.exists(out):
            os.unlink(out)


def per_op(path, op):
    _, n, rounds = OPS[op]
    return (instructions(path, op, 2 * rounds) - instructions(path, op, rounds)) / (rounds * n)


def main():
    old, new = sys.argv[1], sys.argv[2]
    ops = sys.argv[3:] or list(OPS)
    print("| operation | old | new | new / old |")
    print("| --- | ---: | ---: | ---: |")
    for op in ops:
        a, b = per_op(old, op), per_op(new, op)
        print("| `%s` | %.1f | %.1f | %.3f |" % (op, a, b, b / a), flush=True)


if __name__ == "__main__":
    main()
