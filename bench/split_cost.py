"""The instructions each hot operation executes in the compiled core, for
two builds side by side (issue 13: the split of _heap must not slow them).

    python3 bench/split_cost.py OLD_CHECKOUT NEW_CHECKOUT

Each checkout must be built in place. For each operation one process runs it
N times under callgrind; the figure is the instruction count inside the C entry
point of the operation in _codec and what it calls (callgrind's
--toggle-collect; the interpreter's own work around it is left out, so that
the comparison is not diluted), divided by N. It does
not depend on the load of the host, unlike a timing.
"""
import os
import re
import subprocess
import sys

N = 3000
SETUP = r"""
import os, sys, dshared
name = "dsh-bench-split-%d" % os.getpid()
seg = dshared.Segment(name, 16 << 20, create=True)
dshared.unlink(name)
d = seg.col()
d.update({"k%07d" % i: "v%015d" % i for i in range(10000)})
d["a"] = {"b": "nested value", "c": 1}
d["l"] = list(range(1000))
lst = d["l"]
a = d["a"]
keys = ["k%07d" % (i * 7 % 10000) for i in range(N)]
vals = ["w%031d" % i for i in range(N)]
"""
OPS = {
    # name: (statement run once per i, C entry points whose inclusive cost counts)
    "shm[k]": ("for k in keys: d[k]", ["__pyx_mp_subscript_7dshared_6_codec_DictNode"]),
    "k in shm": ("for k in keys: k in d", ["__pyx_pw_7dshared_6_codec_8DictNode_*__contains__"]),
    "shm[k] = v": ("for k, v in zip(keys, vals): d[k] = v",
                   ["__pyx_mp_ass_subscript_7dshared_6_codec_DictNode"]),
    "lst[i]": ("for i in range(N): lst[i % 1000]", ["__pyx_mp_subscript_7dshared_6_codec_ListNode"]),
    "shm['a']['b']": ("for i in range(N): d['a']['b']",
                      ["__pyx_mp_subscript_7dshared_6_codec_DictNode"]),
    "del + insert": ("for k, v in zip(keys, vals):\n    del d[k]\n    d[k] = v",
                     ["__pyx_mp_ass_subscript_7dshared_6_codec_DictNode"]),
}


def cost(path, op):
    stmt, funcs = OPS[op]
    script = "N = %d\n%s\n%s\n" % (N, SETUP, stmt)
    out = "/tmp/dsh-split-cg-%d.out" % os.getpid()
    try:
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
                       + ["--toggle-collect=" + f for f in funcs] + [sys.executable, "-c", script],
                       env=dict(os.environ, PYTHONPATH=path), cwd="/", capture_output=True, check=True)
        with open(out) as f:
            total = int(re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M).group(1))
    finally:
        if os.path.exists(out):
            os.unlink(out)
    return total / N


def main():
    a, b = sys.argv[1], sys.argv[2]
    ops = sys.argv[3:] or list(OPS)
    print("| operation | A instr/op | B instr/op | B / A |")
    print("|---|---:|---:|---:|")
    for op in ops:
        x, y = cost(a, op), cost(b, op)
        print("| `%s` | %.1f | %.1f | %.4f |" % (op, x, y, y / x if x else float("nan")), flush=True)


if __name__ == "__main__":
    main()
