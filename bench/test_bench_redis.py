"""The Redis backend, side by side with the clients it competes with, on one
loopback redis-server started for the run (tests/_redis.py):

  near-cache hit d[k]  vs  redis-py HGET, redis-py's client-side cache hit
                           (where the installed redis-py and server allow it),
                           a raw hiredis HGET (socket + hiredis.Reader)
  miss (one round trip)     vs  the raw hiredis HGET
  invalidation latency      a write by one process -> another process's
                            near-cache drops the entry (p50, p99), stale
                            reads after it; vs a lone raw hiredis HGET (one
                            started as a write is: after an idle wait) and
                            vs a raw hiredis HSET as the write (the floor)
  incr, lock() read-modify-write throughput

Smoke mode (the default addopts) runs small counts once; with
--benchmark-enable the counts are large and bench/results_redis.md is
written. Run alone: python bench/test_bench_redis.py
"""
import os
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))


@pytest.fixture(scope="module")
def redis_url():
    """A redis-server of this benchmark's own on a free 127.0.0.1 port (tests/_redis.py)."""
    import _redis
    binary = _redis.redis_server_binary()
    if binary is None:
        pytest.fail("redis-server is not installed here (apt-get install redis-server): the benchmark needs it")
    srv = _redis.RedisServer(binary)
    try:
        yield srv.url
    finally:
        srv.close()


def _per_op(fn, n):
    t = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t) / n


def _interleaved(fns, n, rounds=7):
    """Per-op time of each fn, run in alternating rounds, the median round
    of each (a shared host slows whole stretches of a run)."""
    got = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            got[k].append(_per_op(fn, max(n // rounds, 20)))
    return {k: sorted(v)[len(v) // 2] for k, v in got.items()}


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


_READER = r"""
import importlib, sys, threading, time
RedisSegment = importlib.import_module(sys.argv[4]).RedisSegment
seg = RedisSegment(sys.argv[2], server=sys.argv[1])
d = seg.col()
nc = seg._nc
ev = threading.Event()
dropped = [0.0]

def note():
    # called by the invalidation thread right after it dropped the entry:
    # from here on the near-cache no longer serves the old value
    dropped[0] = time.perf_counter()
    ev.set()

nc.notify = note
d["k"]
print("ready", flush=True)
for i in range(int(sys.argv[3])):
    d["k"]
    ev.clear()
    print("armed", flush=True)
    ev.wait()
    t1 = time.perf_counter()
    print(dropped[0], t1, d["k"], flush=True)
"""


def measure(url, scale=1.0, impl="dshared.redis"):
    """The figures; impl: the module of the backend measured (a copy of an
    earlier version, for a before/after comparison)."""
    import importlib
    mod = importlib.import_module(impl)
    RedisSegment, unlink = mod.RedisSegment, mod.unlink
    from dshared.redis._client import Config
    import hiredis
    out = {}
    name = "dsh-bench-redis-%d" % os.getpid()
    seg = RedisSegment(name, server=url)
    cold = RedisSegment(name, server=url + "?near_cache=0")
    try:
        d = seg.col()
        d["k"] = "v" * 16
        key, field = d._key, b"sk"
        n_hit = int(200000 * scale) or 1000
        n_rt = int(5000 * scale) or 200
        d["k"]

        def hits(n):
            for _ in range(n):
                d["k"]
        out["near-cache hit d[k]"] = _per_op(hits, n_hit)

        c = cold.col()

        def miss(n):
            for _ in range(n):
                c["k"]
        rt_fns = {"miss d[k] (one round trip)": miss}

        cfg = Config(url)
        s = socket.create_connection((cfg.host, cfg.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rd = hiredis.Reader()
        pack = hiredis.pack_command(("HGET", key, field))

        def raw(n):
            for _ in range(n):
                s.sendall(pack)
                r = rd.gets()
                while r is False:
                    rd.feed(s.recv(65536))
                    r = rd.gets()
        rt_fns["raw hiredis HGET"] = raw

        try:
            import redis
            rp = redis.Redis.from_url(url)

            def rpy(n):
                for _ in range(n):
                    rp.hget(key, field)
            rt_fns["redis-py HGET"] = rpy
            try:
                from redis.cache import CacheConfig
                rc = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig())
                rc.hget(key, field)

                def rcache(n):
                    for _ in range(n):
                        rc.hget(key, field)
                rt_fns["redis-py client-side cache hit"] = rcache
            except Exception as e:      # older server or client: reported, not measured
                out["redis-py client-side cache hit"] = "unavailable: %s" % str(e).splitlines()[0][:90]
        except ImportError:
            out["redis-py HGET"] = "redis-py not installed"
        out.update(_interleaved(rt_fns, n_rt))
        s.close()

        # from here one handle without a near-cache writes (process B) and one
        # reads (process A): the first handle's invalidation thread stops
        seg.close()
        d = cold.col()
        # invalidation: this process writes (no near-cache here), another
        # process (A, with its near-cache) reports when the invalidation
        # arrived (CLOCK_MONOTONIC is one clock for every process) and the
        # value it then reads
        trials = int(15000 * scale) or 150
        # the reader imports the dshared this interpreter has (installed, or the
        # checkout through the caller's PYTHONPATH), from "/": never the checkout
        # as such, which has no built extensions when dshared is installed
        child = subprocess.Popen([sys.executable, "-c", _READER, url, name, str(trials), impl], cwd="/",
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        # Trials in turn: (0) the write d["k"] = i, timed; (1) a raw hiredis
        # HGET timed instead, started as a write is (just woken by the
        # reader's "armed" line: a round trip after an idle wait costs 2-4x
        # one in a tight loop, cold caches and idle CPUs woken), then the
        # write; (2) the write made by a raw hiredis HSET of the same field
        # (what no script-checked write can beat: the floor of the writer's part)
        lat = []
        woke = []
        iso = []
        floor = []
        stale = 0
        s = socket.create_connection((cfg.host, cfg.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hset = rd.__class__()
        try:
            assert child.stdout.readline().strip() == "ready"
            for i in range(trials):
                assert child.stdout.readline().strip() == "armed"
                kind = i % 3
                t0 = time.perf_counter()
                if kind == 1:
                    raw(1)
                    iso.append(time.perf_counter() - t0)
                    d["k"] = i
                elif kind == 2:
                    s.sendall(hiredis.pack_command(("HSET", key, field, i)))
                    r = hset.gets()
                    while r is False:
                        hset.feed(s.recv(65536))
                        r = hset.gets()
                else:
                    d["k"] = i
                t1, t2, v = child.stdout.readline().split()
                if kind == 0:
                    lat.append(float(t1) - t0)
                    woke.append(float(t2) - t0)
                elif kind == 2:
                    floor.append(float(t1) - t0)
                stale += int(v) != i
        finally:
            s.close()
            child.kill()
            child.wait()
            child.stdout.close()
        out["invalidation p50"] = _pct(lat, 0.5)
        out["invalidation p99"] = _pct(lat, 0.99)
        out["invalidation, reader's main thread woken by it, p50"] = _pct(woke, 0.5)
        out["raw hiredis HGET, lone (as a trial's write starts), p50"] = _pct(iso, 0.5)
        out["raw hiredis HGET, lone, p99"] = _pct(iso, 0.99)
        out["invalidation after a raw hiredis HSET (floor of the writer's part), p50"] = _pct(floor, 0.5)
        out["stale reads after invalidation"] = "%d of %d" % (stale, trials)

        def incr(n):
            for _ in range(n):
                d.incr("n")

        d["m"] = 0

        def locked(n):
            for _ in range(n):
                with cold.lock():
                    d["m"] = d["m"] + 1

        s = socket.create_connection((cfg.host, cfg.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        w = _interleaved({"raw hiredis HGET, second run": raw, "incr": incr, "lock() read-modify-write": locked},
                         n_rt)
        s.close()
        out.update(w)
    finally:
        for x in (seg, cold):
            x.close()
        unlink(name, server=url)
    return out


def report(out):
    def us(v):
        return "%.2f us" % (v * 1e6) if isinstance(v, float) else v
    lines = ["| figure | measured |", "| --- | --- |"]
    for k, v in out.items():
        lines.append("| %s | %s |" % (k, us(v)))
    hit = out["near-cache hit d[k]"]
    rt = out["raw hiredis HGET"]
    ratios = [("redis-py HGET / near-cache hit", out.get("redis-py HGET"), hit),
              ("redis-py cache hit / near-cache hit", out.get("redis-py client-side cache hit"), hit),
              ("miss / raw hiredis HGET", out["miss d[k] (one round trip)"], rt),
              ("invalidation p50 / raw round trip (tight loop)", out["invalidation p50"], rt),
              ("invalidation p99 / raw round trip (tight loop)", out["invalidation p99"], rt),
              ("invalidation p50 / lone raw round trip p50", out["invalidation p50"],
               out["raw hiredis HGET, lone (as a trial's write starts), p50"]),
              ("invalidation p99 / lone raw round trip p99", out["invalidation p99"],
               out["raw hiredis HGET, lone, p99"]),
              ("invalidation p50 / invalidation after a raw HSET p50", out["invalidation p50"],
               out["invalidation after a raw hiredis HSET (floor of the writer's part), p50"]),
              ("invalidation after a raw HSET p50 / lone raw round trip p50",
               out["invalidation after a raw hiredis HSET (floor of the writer's part), p50"],
               out["raw hiredis HGET, lone (as a trial's write starts), p50"]),
              ("incr / raw round trip (same rounds)", out["incr"], out["raw hiredis HGET, second run"]),
              ("lock() step / raw round trip (same rounds)", out["lock() read-modify-write"],
               out["raw hiredis HGET, second run"])]
    lines += ["", "| ratio | value |", "| --- | --- |"]
    for label, a, b in ratios:
        lines.append("| %s | %s |" % (label, "%.2fx" % (a / b) if isinstance(a, float) else "n/a"))
    return "\n".join(lines) + "\n"


def test_redis_figures(redis_url, request):
    smoke = bool(request.config.getoption("benchmark_disable", False)) and not request.config.getoption(
        "benchmark_enable", False)
    out = measure(redis_url, 0.02 if smoke else 1.0)
    assert out["stale reads after invalidation"].startswith("0 of")
    text = report(out)
    print("\n" + text)
    if not smoke:
        with open(os.path.join(HERE, "results_redis.md"), "w") as f:
            f.write("# Redis backend (loopback, one run)\n\n" + text)


if __name__ == "__main__":
    import _redis
    srv = _redis.RedisServer(_redis.redis_server_binary())
    try:
        text = report(measure(srv.url))
        print(text)
        with open(os.path.join(HERE, "results_redis.md"), "w") as f:
            f.write("# Redis backend (loopback, one run)\n\n" + text)
    finally:
        srv.close()
