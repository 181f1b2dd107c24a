"""Blocks: 1,000 small sets in a transaction() against the same sets under lock()
and one by one; a transaction of 1,000 sets that rolls back against its forward
time; what a snapshot() reader holding the lock costs a writer; lmdb's write
transaction of 1,000 puts beside them. Ratios go to extra_info (see
bench/results.md); `python bench/test_bench_txn.py` prints them directly."""
import os
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dshared  # noqa: E402
import _dshbench as B  # noqa: E402

N = 1000


class Boom(Exception):
    pass


def _segment():
    name = B.unique_name("txn")
    seg = dshared.Segment(name, 64 << 20, create=True)
    d = seg.col()
    for i in range(N):
        d["k%d" % i] = 0
    return seg, d


def _sets(d, r):
    for i in range(N):
        d["k%d" % i] = r + i


def _str_sets(d, r):
    for i in range(N):
        d["k%d" % i] = "a string of %d, in a block of its own" % (r + i)


def run_plain(seg, d, r):
    _sets(d, r)


def run_lock(seg, d, r):
    with seg.lock():
        _sets(d, r)


def run_txn(seg, d, r):
    with seg.transaction():
        _sets(d, r)


def run_rollback(seg, d, r):
    try:
        with seg.transaction():
            _sets(d, r)
            raise Boom()
    except Boom:
        pass


def run_lock_str(seg, d, r):
    with seg.lock():
        _str_sets(d, r)


def run_txn_str(seg, d, r):
    with seg.transaction():
        _str_sets(d, r)


def run_rollback_str(seg, d, r):
    try:
        with seg.transaction():
            _str_sets(d, r)
            raise Boom()
    except Boom:
        pass


RUNS = {"plain": run_plain, "lock": run_lock, "transaction": run_txn, "rollback": run_rollback,
        "lock_str": run_lock_str, "transaction_str": run_txn_str, "rollback_str": run_rollback_str}


@pytest.mark.parametrize("mode", list(RUNS))
def test_txn_1000_sets(benchmark, mode):
    seg, d = _segment()
    fn = RUNS[mode]
    try:
        it = iter(range(1 << 30))
        benchmark.group = "txn_1000_sets"
        benchmark(lambda: fn(seg, d, next(it)))
        benchmark.extra_info.update(n_ops=N, mode=mode)
        assert seg.check().ok
    finally:
        seg.close()
        seg.unlink()


def test_txn_1000_puts_lmdb(benchmark):
    import lmdb                     # in the bench extras
    with tempfile.TemporaryDirectory() as tmp:
        env = lmdb.open(tmp, map_size=256 << 20, sync=False, metasync=False)
        keys = [b"k%d" % i for i in range(N)]
        it = iter(range(1 << 30))

        def run():
            r = next(it)
            with env.begin(write=True) as txn:
                for i, k in enumerate(keys):
                    txn.put(k, str(r + i).encode())
        benchmark.group = "txn_1000_sets"
        benchmark(run)
        benchmark.extra_info.update(n_ops=N, mode="lmdb write txn (sync off)")
        env.close()


def _timed_sets(d, n=20000):
    t0 = time.perf_counter()
    for i in range(n):
        d["k%d" % (i % N)] = i
    return time.perf_counter() - t0


def measure(repeats=30):
    """Interleaved medians (s) of each mode, and the ratios the issue asks for."""
    seg, d = _segment()
    try:
        times = {m: [] for m in RUNS}
        r = 0
        for _ in range(repeats):
            for m, fn in RUNS.items():
                t0 = time.perf_counter()
                fn(seg, d, r)
                times[m].append(time.perf_counter() - t0)
                r += N
        med = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
        # a snapshot reader in another process holding the lock 1 ms of every 2
        alone = _timed_sets(d)
        pid = os.fork()
        if pid == 0:
            try:
                end = time.monotonic() + 30
                while time.monotonic() < end:
                    with seg.snapshot():
                        time.sleep(0.001)
                    time.sleep(0.001)
            finally:
                os._exit(0)
        try:
            time.sleep(0.05)
            shared = _timed_sets(d)
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        return {
            "median_s": med,
            "txn_over_lock": med["transaction"] / med["lock"],
            "rollback_over_forward": med["rollback"] / med["transaction"],
            "txn_over_lock_str": med["transaction_str"] / med["lock_str"],
            "rollback_over_forward_str": med["rollback_str"] / med["transaction_str"],
            "lock_over_plain": med["lock"] / med["plain"],
            "writer_slowdown_with_snapshot_reader_50pct_duty": shared / alone,
        }
    finally:
        seg.close()
        seg.unlink()


def test_txn_ratios(bench_cfg):
    r = measure(3 if bench_cfg.smoke else 30)
    print(r)
    assert r["median_s"]["transaction"] > 0


if __name__ == "__main__":
    import pprint
    pprint.pprint(measure())
