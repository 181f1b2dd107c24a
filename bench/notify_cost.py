"""Instructions a write spends in dshared's own code, counted by callgrind:
the extra cost of change notifications when nobody waits, free of the
timing noise of a shared host.

    python bench/notify_cost.py [N] [--base DIR]

runs N (default 20000) overwrites `d["k"] = i` under `valgrind
--tool=callgrind` three ways: on a segment that never had a waiter (no
wait area: a write tests one header field), on one with a wait area and
nobody waiting, and (with --base DIR: a build of dshared without
notifications, e.g. `git archive <commit> | tar -x -C DIR` and an in-place
build there) on the code before notifications. Prints the instructions
per write spent in dshared's extension modules and in libc (the robust
mutex), and the difference; timings on a quiet host are in
test_bench_notify.py (n_a_write_cost).
"""
import os
import re
import subprocess
import sys
import tempfile

CHILD = r"""
import os, sys
import dshared
mode, n = sys.argv[1], int(sys.argv[2])
name = "dshb-notify-cost-%d" % os.getpid()
seg = dshared.Segment(name, 1 << 22, create=True)
try:
    d = seg.col()
    d["k"] = 0
    if mode == "area":
        d.version("k")
    for i in range(n):
        d["k"] = i
finally:
    seg.close()
    dshared.unlink(name)
"""


def instructions(pythonpath, mode, n):
    """Instructions (Ir) in dshared's .so files and in libc, for n writes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONPATH=pythonpath)
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, sys.executable,
                        "-c", CHILD, mode, str(n)], env=env, check=True, capture_output=True,
                       cwd=tmp)     # not the checkout: `-c` puts the working directory first on sys.path
        ann = subprocess.run(["callgrind_annotate", "--threshold=100", out], capture_output=True,
                             text=True, check=True).stdout
    if not ann:
        raise RuntimeError("callgrind_annotate printed nothing")
    own = libc = 0
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        if re.search(r"dshared/_(heap|codec)\.cpython", line):
            own += ir
        elif "libc.so" in line:
            libc += ir
    return own, libc


def per_write(pythonpath, mode, n):
    own0, libc0 = instructions(pythonpath, mode, 0)
    own1, libc1 = instructions(pythonpath, mode, n)
    return (own1 - own0) / n, (libc1 - libc0) / n


def main(argv):
    n = int(argv[0]) if argv and argv[0].isdigit() else 20000
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = [("no wait area (never waited on)", per_write(here, "none", n)),
            ("wait area, nobody waiting", per_write(here, "area", n))]
    if "--base" in argv:
        base = argv[argv.index("--base") + 1]
        rows.insert(0, ("before notifications (%s)" % base, per_write(base, "none", n)))
    print("| writes d[k] = i | dshared code, instructions per write | libc |")
    print("| --- | --- | --- |")
    for label, (own, libc) in rows:
        print("| %s | %.1f | %.1f |" % (label, own, libc))
    ref = rows[0][1][0]
    for label, (own, _) in rows[1:]:
        print("%s: %+.1f instructions per write vs. %s" % (label, own - ref, rows[0][0]))


if __name__ == "__main__":
    main(sys.argv[1:])
