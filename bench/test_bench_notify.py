"""Change notifications (n_*): what they cost writers, and how fast and idle waiters are.

| group | what |
|---|---|
| n_a_write_cost | `d[k] = i` on a segment that never had a waiter (no wait area: the notify path off) vs. one with a wait area and nobody waiting vs. a waiter on an unrelated word; interleaved batches, the median difference per write; the anchor is one unconditional FUTEX_WAKE |
| n_b_wake_latency | a write in one process -> wait() returns in another (ping-pong through two keys), p50/p99; polling (a busy get loop) as the comparison |
| n_c_wait_any_128 | the same with the waiter in wait_any() over 128 keys (the writer changes one at random) |
| n_d_idle_cpu | CPU used by 16 processes waiting on keys nobody writes, over DSHARED_BENCH_IDLE_S seconds (default 3, smoke 0.5; 10 for the report), vs. one polling process |
| n_e_false_wakes | a waiter on one key while other keys of its dict are written: wake-ups that found nothing changed, per write |

Timing figures go to extra_info and are printed; nothing is asserted on them.
"""
import ctypes
import multiprocessing
import os
import random
import resource
import statistics
import time

import pytest

import _dshbench as B
import dshared

CTX = multiprocessing.get_context("fork")


def _name(tag):
    return B.unique_name("notify-" + tag)


class _Seg:
    def __init__(self, tag, size=1 << 24):
        self.name = _name(tag)
        self.seg = dshared.Segment(self.name, size, create=True)

    def close(self):
        self.seg.close()
        dshared.unlink(self.name)


def _futex_wake_ns(n=20000):
    """The cost of one FUTEX_WAKE nobody waits for (the anchor): the
    system call, less the cost of a ctypes call of a C function (labs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    word = ctypes.c_uint32(0)
    SYS_futex = 202 if os.uname().machine == "x86_64" else 98
    wake, base = [], []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            libc.syscall(SYS_futex, ctypes.byref(word), 1, 1, None, None, 0)
        wake.append((time.perf_counter_ns() - t0) / n)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            libc.labs(ctypes.byref(word), 1, 1, None, None, 0)
        base.append((time.perf_counter_ns() - t0) / n)
    return min(wake) - min(base)


def _time_writes(d, n):
    t0 = time.perf_counter_ns()
    for i in range(n):
        d["k"] = i
    return (time.perf_counter_ns() - t0) / n


def test_n_a_write_cost(benchmark, bench_cfg):
    rounds = 5 if bench_cfg.smoke else 60
    n = 2000 if bench_cfg.smoke else 20000
    off, on, other = _Seg("off"), _Seg("on"), _Seg("other")
    box = {}
    try:
        d_off, d_on, d_other = off.seg.col(), on.seg.col(), other.seg.col()
        d_on.version("k")               # a wait area, nobody waiting
        for d in (d_off, d_on, d_other):
            d["k"] = 0
        # a waiter on another word of the third segment: writers then check the words they changed
        quiet = next(k for k in ("q%d" % i for i in range(10000))
                     if _dshared_bucket(d_other, k) != _dshared_bucket(d_other, "k")
                     and _dshared_bucket(d_other, k) != _dshared_bucket(d_other))
        import threading
        stop = threading.Event()

        def waiter():
            while not stop.is_set():
                d_other.wait(quiet, timeout=0.2)
        t = threading.Thread(target=waiter)
        t.start()

        def experiment():
            a, b, c = [], [], []
            for _ in range(rounds):
                order = [(a, d_off), (b, d_on), (c, d_other)]
                random.shuffle(order)
                for out, d in order:
                    out.append(_time_writes(d, n))
            box.update(a=a, b=b, c=c)
        benchmark.group = "n_a_write_cost"
        benchmark.pedantic(experiment, rounds=1, iterations=1)
        stop.set()
        d_other[quiet] = 1
        t.join(5)
        wake_ns = _futex_wake_ns(2000 if bench_cfg.smoke else 50000)
    finally:
        off.close()
        on.close()
        other.close()
    a, b, c = box["a"], box["b"], box["c"]
    diff_on = statistics.median(y - x for x, y in zip(a, b))
    diff_other = statistics.median(z - x for x, z in zip(a, c))
    fig = {"write_ns_no_area": statistics.median(a), "write_ns_area_nobody_waits": statistics.median(b),
           "write_ns_waiter_elsewhere": statistics.median(c),
           "extra_ns_nobody_waits": diff_on, "extra_ns_waiter_elsewhere": diff_other,
           "futex_wake_ns": wake_ns, "rounds": rounds, "writes_per_round": n}
    print("\nn_a_write_cost:", {k: round(v, 1) for k, v in fig.items()})
    B.record(benchmark, n, workload="extra cost of d[k] = v when nobody waits (ns)", **fig)


def _dshared_bucket(d, key=None):
    from dshared import _codec
    return _codec._nt_target(d, key, key is not None)[4]


# -- latency ------------------------------------------------------------------------------

def _lat_waiter(name, samples, mode, nkeys, q):
    seg = dshared.Segment(name)
    d = seg.col()
    keys = [(d, "t%d" % i) for i in range(nkeys)]
    lat = []
    polls = 0
    d["ready"] = 1
    for i in range(1, samples + 1):
        if mode == "wait":
            v = d.version("ping")
            t_ret = None
            while d.get("ping") != i:
                v = d.wait("ping", version=v, timeout=10)
                t_ret = time.perf_counter_ns()          # the moment wait returned
            lat.append((t_ret or time.perf_counter_ns()) - d["sent"])
        elif mode == "wait_any":
            vs = dshared.versions(keys)
            t_ret = None
            while d.get("ping") != i:
                dshared.wait_any(keys, versions=vs, timeout=10)
                t_ret = time.perf_counter_ns()          # the moment wait_any returned
                if d.get("ping") == i:
                    break
                vs = dshared.versions(keys)
            lat.append((t_ret or time.perf_counter_ns()) - d["sent"])
        else:
            while d.get("ping") != i:
                polls += 1
            lat.append(time.perf_counter_ns() - d["sent"])
        d["pong"] = i
    q.put((lat, polls))
    seg.close()


def _latency(bench_cfg, mode, nkeys=1):
    samples = 50 if bench_cfg.smoke else 3000
    s = _Seg("lat-" + mode)
    try:
        d = s.seg.col()
        d.update(ping=0, pong=0, sent=0)
        d.version("ping")
        q = CTX.Queue()
        p = CTX.Process(target=_lat_waiter, args=(s.name, samples, mode, nkeys, q))
        p.start()
        while not d.get("ready"):
            time.sleep(0.001)
        rnd = random.Random(1)
        for i in range(1, samples + 1):
            time.sleep(0.0002)
            # the waiter is asleep by now (or polling); send
            with s.seg.lock():
                d["sent"] = time.perf_counter_ns()
                d["ping"] = i
                if mode == "wait_any":
                    d["t%d" % rnd.randrange(nkeys)] = i
            v = d.version("pong")
            while d["pong"] != i:
                v = d.wait("pong", version=v, timeout=10)
        lat, polls = q.get(timeout=60)
        p.join(30)
    finally:
        s.close()
    lat = sorted(x / 1000 for x in lat)
    return {"p50_us": lat[len(lat) // 2], "p90_us": lat[int(0.9 * len(lat))],
            "p99_us": lat[min(len(lat) - 1, int(0.99 * len(lat)))], "max_us": lat[-1], "samples": samples}


@pytest.mark.parametrize("mode", ["wait", "poll"])
def test_n_b_wake_latency(benchmark, bench_cfg, mode):
    box = {}
    benchmark.group = "n_b_wake_latency"
    benchmark.pedantic(lambda: box.update(r=_latency(bench_cfg, mode)), rounds=1, iterations=1)
    print("\nn_b_wake_latency %s:" % mode, {k: round(v, 1) for k, v in box["r"].items()})
    B.record(benchmark, 1, workload="write in one process -> %s returns in another (us)" % mode,
             mode=mode, **box["r"])


def test_n_c_wait_any_128(benchmark, bench_cfg):
    box = {}
    benchmark.group = "n_c_wait_any_128"
    benchmark.pedantic(lambda: box.update(r=_latency(bench_cfg, "wait_any", 128)), rounds=1, iterations=1)
    print("\nn_c_wait_any_128:", {k: round(v, 1) for k, v in box["r"].items()})
    B.record(benchmark, 1, workload="write -> wait_any over 128 keys returns in another process (us)",
             **box["r"])


# -- idle CPU -----------------------------------------------------------------------------

def _idle_waiter(name, i, seconds):
    seg = dshared.Segment(name)
    d = seg.col()
    d.wait("idle%d" % i, timeout=seconds)
    seg.close()


def _idle_poller(name, seconds):
    seg = dshared.Segment(name)
    d = seg.col()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        d.get("idle-poll")
    seg.close()


def _children_cpu(fn, nproc, seconds, name):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [CTX.Process(target=fn, args=(name, i, seconds) if fn is _idle_waiter else (name, seconds))
             for i in range(nproc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def test_n_d_idle_cpu(benchmark, bench_cfg):
    seconds = float(os.environ.get("DSHARED_BENCH_IDLE_S", 0.5 if bench_cfg.smoke else 3))
    s = _Seg("idle")
    box = {}
    try:
        s.seg.col().version("x")

        def experiment():
            # process start-up and import cost the same with a zero-length wait: subtract it
            base = _children_cpu(_idle_waiter, 16, 0.0, s.name)
            waiting = _children_cpu(_idle_waiter, 16, seconds, s.name)
            polling = _children_cpu(_idle_poller, 1, seconds, s.name)
            box.update(waiters_cpu_s=max(0.0, waiting - base), start_cpu_s=base, poller_cpu_s=polling)
        benchmark.group = "n_d_idle_cpu"
        benchmark.pedantic(experiment, rounds=1, iterations=1)
    finally:
        s.close()
    fig = {"seconds": seconds, "waiters": 16,
           "waiters_cpu_percent_of_a_core": 100 * box["waiters_cpu_s"] / seconds,
           "poller_cpu_percent_of_a_core": 100 * box["poller_cpu_s"] / seconds,
           "start_cpu_s": box["start_cpu_s"]}
    print("\nn_d_idle_cpu:", {k: round(v, 3) for k, v in fig.items()})
    B.record(benchmark, 1, workload="CPU of 16 idle waiters vs one polling process", **fig)


# -- false wake-ups -----------------------------------------------------------------------

def _counting_waiter(name, q):
    seg = dshared.Segment(name)
    d = seg.col()
    wakes = 0
    d["ready"] = 1
    v = d.version("watched")
    while not d.get("stop"):
        nv = d.wait("watched", version=v, timeout=0.5)
        if nv is not None:
            wakes += 1
            v = nv
    q.put(wakes)
    seg.close()


def test_n_e_false_wakes(benchmark, bench_cfg):
    writes = 2000 if bench_cfg.smoke else 100000
    s = _Seg("false")
    box = {}
    try:
        d = s.seg.col()
        d.version("watched")
        q = CTX.Queue()

        def experiment():
            p = CTX.Process(target=_counting_waiter, args=(s.name, q))
            p.start()
            while not d.get("ready"):
                time.sleep(0.001)
            for i in range(writes):
                d["other%d" % (i % 5000)] = i      # 5,000 distinct other keys of the same dict
                if i % 500 == 0:
                    time.sleep(0.0005)              # let the waiter get back to sleep
            d["stop"] = 1
            box["wakes"] = q.get(timeout=60)
            p.join(30)
        benchmark.group = "n_e_false_wakes"
        benchmark.pedantic(experiment, rounds=1, iterations=1)
    finally:
        s.close()
    fig = {"writes_to_other_keys": writes, "wakes": box["wakes"],
           "false_wakes_per_write": box["wakes"] / writes}
    print("\nn_e_false_wakes:", fig)
    B.record(benchmark, 1, workload="wake-ups of a key's waiter that found nothing changed", **fig)
