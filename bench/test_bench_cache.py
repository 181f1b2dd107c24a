"""Cache mode, side by side: dshared.cache / @dshared.memoize against
functools.lru_cache, cachetools, diskcache's memoize and redis (a loopback
redis-server started here on a free port). Hit and miss+store+evict costs
(per op, p99 for the miss path), bytes per entry, and hit ratios on a
Zipf(1.1) trace, plain and polluted by one-off scans, against LRU.

Writes bench/cache_results.md (ratios to functools.lru_cache). One process:
the figures are per-call costs; run with `pytest bench/test_bench_cache.py -s`."""
import collections
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import dshared

VALUE = "v" * 200
RESULTS = os.path.join(os.path.dirname(__file__), "cache_results.md")
_rows = {}


def _per_op(fn, n):
    t0 = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t0) / n * 1e9


def _best(fn, n, rounds=5):
    return min(_per_op(fn, n) for _ in range(rounds))


@pytest.fixture
def seg():
    name = "dsh-bench-cache-%d" % os.getpid()
    s = dshared.init(name, 1 << 30)
    try:
        yield s
    finally:
        s.close()
        dshared.unlink(name)


@pytest.fixture(scope="module")
def redis_client():
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    try:
        import redis
    except ImportError:
        pytest.fail("the bench extra installs redis")
    if not os.path.exists(exe):
        pytest.fail("redis-server not found: the benchmark compares with it")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([exe, "--port", str(port), "--save", "", "--appendonly", "no",
                             "--maxmemory", "2gb", "--maxmemory-policy", "allkeys-lru"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        yield client
    finally:
        proc.kill()
        proc.wait()


def _keys(n):
    return ["key%d" % i for i in range(n)]


def test_hit(seg, bench_cfg, redis_client):
    import cachetools
    import diskcache
    n = 2000 if bench_cfg.smoke else 200000
    keys = _keys(1000)

    @functools.lru_cache(maxsize=None)
    def lru(k):
        return VALUE

    @dshared.memoize("bench.hit", max_entries=100000)
    def memo(k):
        return VALUE
    c = dshared.cache("bench.hitc", max_entries=100000)
    ct = cachetools.LRUCache(maxsize=100000)
    tmp = tempfile.mkdtemp()
    dc = diskcache.Cache(tmp)

    @dc.memoize()
    def dmemo(k):
        return VALUE
    for k in keys:
        lru(k)
        memo(k)
        c[k] = VALUE
        ct[k] = VALUE
        dmemo(k)
        redis_client.set(k, VALUE)
    k = keys[5]
    get, ctget, rget = c.get, ct.get, redis_client.get

    def run(f):
        def loop(n):
            for _ in range(n):
                f(k)
        return loop
    rows = {
        "functools.lru_cache hit": _best(run(lru), n),
        "dshared c.get hit": _best(run(get), n),
        "dshared @memoize hit": _best(run(memo), n),
        "cachetools LRUCache.get hit": _best(run(ctget), n),
        "diskcache memoize hit": _best(run(dmemo), max(200, n // 50)),
        "redis GET hit (loopback)": _best(run(rget), max(200, n // 100)),
    }
    dc.close()
    shutil.rmtree(tmp, ignore_errors=True)
    _rows.update(rows)
    _write()


def test_miss_store_evict(seg, bench_cfg, redis_client):
    import cachetools
    import diskcache
    n = 2000 if bench_cfg.smoke else 100000
    bound = 10000

    @functools.lru_cache(maxsize=bound)
    def lru(k):
        return VALUE

    @dshared.memoize("bench.miss", max_entries=bound)
    def memo(k):
        return VALUE
    c = dshared.cache("bench.missc", max_entries=bound)
    ct = cachetools.LRUCache(maxsize=bound)
    tmp = tempfile.mkdtemp()
    dc = diskcache.Cache(tmp, size_limit=bound * 300)

    @dc.memoize()
    def dmemo(k):
        return VALUE
    counter = iter(range(10 ** 9))

    def fill(f):
        for _ in range(bound + 10):
            f(next(counter))

    def timed(f, n):
        lat = []
        pc = time.perf_counter
        for _ in range(n):
            k = next(counter)
            t0 = pc()
            f(k)
            lat.append(pc() - t0)
        lat.sort()
        return sum(lat) / n * 1e9, lat[int(n * 0.99)] * 1e9

    def cset(k):
        c.set(k, VALUE)

    def ctset(k):
        ct[k] = VALUE

    def rset(k):
        redis_client.set(k, VALUE)
    out = {}
    for label, f, m in [("functools.lru_cache miss+store+evict", lru, n),
                        ("dshared @memoize miss+store+evict", memo, n),
                        ("dshared c.set (store+evict, admission)", cset, n),
                        ("cachetools LRUCache store+evict", ctset, n),
                        ("diskcache memoize miss+store", dmemo, max(200, n // 50)),
                        ("redis SET (loopback)", rset, max(200, n // 50))]:
        fill(f)
        mean, p99 = timed(f, m)
        out[label] = mean
        out[label + " p99"] = p99
    dc.close()
    shutil.rmtree(tmp, ignore_errors=True)
    st = c.stats()
    assert st["entries"] <= bound
    _rows.update(out)
    _write()


def test_bytes_per_entry(seg, bench_cfg):
    n = 20000 if bench_cfg.smoke else 200000
    c = dshared.cache("bench.bytes", max_entries=n)
    before = seg.stats()["used"]
    for i in range(n):
        c.set("key%08d" % i, VALUE)
    used = seg.stats()["used"] - before
    # the value's own bytes: a str block of 200 ASCII chars (header and length included)
    own = 16 + 16 + 200 + 16     # block header, length word, data, key block (13 chars: inline)
    _rows["dshared bytes per entry above the value (200-char str)"] = used / n - (16 + 16 + 208)
    _write()


def _zipf_trace(nkeys, length, scan, seed=1):
    import numpy as np
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, nkeys + 1) ** 1.1
    p /= p.sum()
    tr = rng.choice(nkeys, size=length, p=p)
    if scan:
        parts, nxt, step = [], nkeys + 1, scan
        for i in range(0, length, step):
            parts.append(tr[i:i + step])
            if (i // step) % 2 == 1:
                parts.append(np.arange(nxt, nxt + step // 2))
                nxt += step // 2
        tr = np.concatenate(parts)
    return tr.tolist()


@pytest.mark.parametrize("scan", [False, True])
def test_hit_ratio(seg, bench_cfg, scan):
    import cachetools
    if bench_cfg.smoke:
        nkeys, bound, length = 100000, 10000, 300000
    else:
        nkeys, bound, length = 1000000, 100000, 3000000
    tr = _zipf_trace(nkeys, length, bound if scan else 0)
    od = collections.OrderedDict()
    h = 0
    for k in tr:
        if k in od:
            od.move_to_end(k)
            h += 1
        else:
            od[k] = 1
            if len(od) > bound:
                od.popitem(last=False)
    lru = h / len(tr)
    ct = cachetools.LRUCache(maxsize=bound)
    h = 0
    for k in tr:
        if ct.get(k) is not None:
            h += 1
        else:
            ct[k] = 1
    ctr = h / len(tr)
    c = dshared.cache("bench.zipf%d" % scan, max_entries=bound)
    get, put = c.get, c.set
    h = 0
    for k in tr:
        if get(k) is not None:
            h += 1
        else:
            put(k, 1)
    mine = h / len(tr)
    tag = "scan-polluted " if scan else ""
    _rows["hit ratio %sZipf(1.1): LRU (= lru_cache)" % tag] = lru
    _rows["hit ratio %sZipf(1.1): cachetools LRU" % tag] = ctr
    _rows["hit ratio %sZipf(1.1): dshared" % tag] = mine
    _write()
    assert mine >= lru - 0.01


def _write():
    lru_hit = _rows.get("functools.lru_cache hit")
    lru_miss = _rows.get("functools.lru_cache miss+store+evict")
    lines = ["# Cache mode benchmarks (bench/test_bench_cache.py)", "",
             "| figure | value | vs functools.lru_cache |", "| --- | --- | --- |"]
    for k, v in _rows.items():
        if k.startswith("hit ratio"):
            lines.append("| %s | %.4f | |" % (k, v))
            continue
        if "bytes" in k:
            lines.append("| %s | %.0f B | |" % (k, v))
            continue
        base = lru_hit if "hit" in k else lru_miss
        ratio = "%.2fx" % (v / base) if base else ""
        lines.append("| %s | %.0f ns | %s |" % (k, v, ratio))
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines) + "\n")
