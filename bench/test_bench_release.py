"""(k) Reads of an unrelated key while another process releases big structures.

A writer process deletes and overwrites structures of many small blocks
(a list of `n` one-item lists) in a loop; a reader process reads one
unrelated key flat out and records the latency of every read. A write is
published in one short odd window of the write sequence; the blocks it left
unreachable are freed after that, in windows of a bounded number of frees
(RELEASE_STEP), so a reader waits for at most one step, not for the whole
release. Reported: read latency max, p99, p99.9 and median (ns), the reads
done during the releases, and how long each release took (ms), in
extra_info. The pytest-benchmark time is one round of the whole experiment.
"""
import multiprocessing
import os
import time

import pytest

import _dshbench as B
import dshared

CTX = multiprocessing.get_context("spawn")


def _reader(q, name, stop):
    try:
        seg = dshared.Segment(name, create=False)
        d = seg.col()
        get = d.__getitem__
        clock = time.perf_counter_ns
        lat = []
        q.put(("ready", None))
        while not stop.is_set():
            for _ in range(1000):
                t0 = clock()
                get("unrelated")
                lat.append(clock() - t0)
        seg.close()
        q.put(("reader", lat))
    except BaseException as e:          # reported to the parent
        q.put(("error", repr(e)))


def _writer(q, name, n, rounds):
    try:
        seg = dshared.Segment(name, create=False)
        d = seg.col()
        times = []
        for r in range(rounds):
            d["big"] = [[i] for i in range(n)]          # built before it is published
            t0 = time.perf_counter()
            if r % 2:
                del d["big"]                            # delete: n + 2 blocks released
            else:
                d["big"] = "overwritten"                # overwrite: the same release
            times.append((time.perf_counter() - t0) * 1e3)
        seg.close()
        q.put(("writer", times))
    except BaseException as e:
        q.put(("error", repr(e)))


def _pct(sorted_vals, p):
    return sorted_vals[min(len(sorted_vals) - 1, int(p * len(sorted_vals)))]


def test_k_read_latency_during_release(benchmark, bench_cfg):
    n = 2000 if bench_cfg.smoke else int(os.environ.get("DSHARED_BENCH_RELEASE_ITEMS", 1000000))
    rounds = 2 if bench_cfg.smoke else 6
    name = B.unique_name("rel")
    seg = dshared.Segment(name, 64 << 20 if bench_cfg.smoke else 2 << 30, create=True)
    try:
        seg.col()["unrelated"] = "v" * 16
        q = CTX.Queue()
        stop = CTX.Event()

        def run():
            reader = CTX.Process(target=_reader, args=(q, name, stop))
            writer = CTX.Process(target=_writer, args=(q, name, n, rounds))
            reader.start()
            try:
                assert q.get(timeout=120)[0] == "ready"
                writer.start()
                got = dict([q.get(timeout=600)])
                stop.set()
                got.update([q.get(timeout=120)])
            finally:
                stop.set()
                for p in (writer, reader):
                    p.join(timeout=60)
                    if p.is_alive():
                        p.kill()
                        p.join()
            assert "error" not in got, got["error"]
            return got

        got = benchmark.pedantic(run, rounds=1, iterations=1)
        lat = sorted(got["reader"])
        info = {
            "items": n,
            "releases": rounds,
            "release_ms": [round(t, 1) for t in got["writer"]],
            "reads": len(lat),
            "read_max_ns": lat[-1],
            "read_p999_ns": _pct(lat, 0.999),
            "read_p99_ns": _pct(lat, 0.99),
            "read_median_ns": _pct(lat, 0.5),
        }
        benchmark.extra_info.update(info)
        print("\n(k) %s" % info)
        assert len(lat) > 0
    finally:
        seg.close()
        dshared.unlink(name)
