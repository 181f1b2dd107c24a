"""A write's process-memory records (deferred frees and releases, a block's
allocation and incref records) that cannot grow: the operation raises
MemoryError with nothing changed, the process goes on, check() stays ok.

The test hook fail_realloc=n makes the n-th growth of those arrays fail as
if realloc returned NULL. Each scenario runs in a child process, so that a
process that dies (abort) fails the test rather than the test run."""
from _helpers import run_python

CHILD = r'''
import sys
import dshared
from dshared import _heap

name = sys.argv[1]
seg = dshared.Segment(name, 64 << 20, create=True)
try:
    d = seg.col()
    big = "x" * 40

    def fill():
        d.clear()
        d["L"] = ["s%d-%s" % (i, big) for i in range(3000)]
        d.update({"k%d" % i: "v%d-%s" % (i, big) for i in range(500)})

    def replace_many():
        d.update({"k%d" % i: "w%d-%s" % (i, big) for i in range(500)})

    def delete_list():
        del d["L"][:]

    def splice_list():
        del d["L"][10:2500]

    def txn_many():
        with seg.transaction():
            for i in range(200):
                d["t%d" % i] = {"a": [i, big], "b": "y%d-%s" % (i, big)}
            d["L2"] = d["L"]

    def txn_raises():
        with seg.transaction():
            for i in range(200):
                d["t%d" % i] = ["z%d-%s" % (i, big)]

    def other_handle_in_block():
        seg2 = dshared.Segment(name)
        try:
            d2 = seg2.col()
            with seg.transaction():
                d["o"] = 1
                for i in range(10):
                    d2["h%d" % i] = ["h%d-%s" % (i, big)]
        finally:
            seg2.close()

    def problems(op):
        return seg.check().problems

    def snap():
        return repr(sorted((k, d[k] if k != "L" else list(d[k])) for k in d))

    hit = 0
    for op in (replace_many, delete_list, splice_list, txn_many, txn_raises, other_handle_in_block):
        n = 1
        while True:
            fill()
            # a fresh handle: its record arrays start empty and grow
            seg.close()
            seg = dshared.Segment(name)
            d = seg.col()
            before = snap()
            _heap.test_hooks(fail_realloc=n)
            try:
                op()
            except MemoryError:
                hit += 1
                assert snap() == before, (op.__name__, n, "changed")
            else:
                _heap.test_hooks(fail_realloc=0)
                assert not problems(op), (op.__name__, n, problems(op)[:5])
                break
            _heap.test_hooks(fail_realloc=0)
            assert not problems(op), (op.__name__, n, problems(op)[:5])
            n += 1
        print(op.__name__, n - 1)
    print("hit", hit)
finally:
    _heap.test_hooks(fail_realloc=0)
    seg.close()
    seg.unlink()
'''


def test_record_growth_failure_raises_memoryerror(shm_name):
    res = run_python(CHILD, shm_name, timeout=120)
    counts = dict(line.split() for line in res.stdout.split("\n") if line)
    # every scenario met at least one failed growth (else the hook did not bite)
    for op in ("replace_many", "delete_list", "splice_list", "txn_many", "txn_raises",
               "other_handle_in_block"):
        assert int(counts[op]) >= 1, res.stdout
