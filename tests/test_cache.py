"""Cache mode: dshared.cache / SharedCache / @dshared.memoize.

Semantics against a dict model and functools.lru_cache, bounds under
several processes, kills at every crash point of a set that evicts and of
an expiry, stampede protection (get_or_set), TTL."""

import functools
import os
import random
import signal
import time

import pytest

import dshared
from dshared import _cache, _codec, _heap
from _proc import Children, fork_call, kill_pid, wait_pid


@pytest.fixture
def hooks():
    yield _codec._cache_hooks
    _codec._cache_hooks(plain_counters=False, no_evict=False, no_expiry=False, no_claim=False)
    _cache._NO_PENDING = False


def _value(rng):
    r = rng.random()
    if r < 0.3:
        return "v" * rng.randrange(0, 300)
    if r < 0.5:
        return rng.randrange(-10 ** 20, 10 ** 20)
    if r < 0.7:
        return {"a": [1, 2.5, None, "x" * rng.randrange(40)], "b": {"c": (1, "t")}}
    if r < 0.8:
        return (rng.random(), "tuple", [1, 2])
    if r < 0.9:
        return [rng.randrange(100) for _ in range(rng.randrange(10))]
    return b"\x00" * rng.randrange(50)


def test_semantics_against_dict(segment):
    rng = random.Random(16)
    c = segment.cache("model")
    model = {}
    for _ in range(3000):
        op = rng.random()
        k = rng.choice(["k%d" % rng.randrange(60), rng.randrange(60), ("t", rng.randrange(5)),
                        "long key %s" % ("x" * rng.randrange(30))])
        if op < 0.4:
            v = _value(rng)
            c[k] = v
            model[k] = v
        elif op < 0.7:
            got = c.get(k, "absent")
            assert got == model.get(k, "absent")
            assert type(got) is type(model.get(k, "absent"))     # plain copies, never views
        elif op < 0.8:
            assert c.pop(k, "absent") == model.pop(k, "absent")
        elif op < 0.85:
            assert (k in c) == (k in model)
        elif op < 0.9:
            if k in model:
                del c[k]
                del model[k]
            else:
                with pytest.raises(KeyError):
                    del c[k]
        elif op < 0.99:
            assert len(c) == len(model)
            assert sorted(map(repr, c)) == sorted(map(repr, model))
        else:
            c.clear()
            model.clear()
    with pytest.raises(KeyError):
        c["never"]
    s = c.stats()
    assert s["entries"] == len(model)
    # bytes counts what the entries hold: after a clear it is 0 again
    c.clear()
    assert c.stats()["bytes"] == 0 and len(c) == 0
    assert segment.check().ok


def test_values_are_copies(segment):
    c = segment.cache("copies")
    c["d"] = {"x": [1, 2]}
    got = c["d"]
    assert type(got) is dict and type(got["x"]) is list
    got["x"].append(3)
    assert c["d"] == {"x": [1, 2]}


def test_bounds_fixed_at_creation(segment):
    segment.cache("b", max_entries=10, ttl=5)
    assert segment.cache("b").max_entries == 10        # no bounds asked: attach
    with pytest.raises(ValueError, match=r"max_entries=10.*max_entries=20"):
        segment.cache("b", max_entries=20)
    with pytest.raises(ValueError):
        segment.cache("bad", max_entries=0)
    with pytest.raises(TypeError):
        segment.cache("bad", max_bytes="1k")


@pytest.mark.parametrize("evict", [True, False])
def test_max_entries_holds(segment, hooks, evict):
    hooks(no_evict=not evict)
    c = segment.cache("me", max_entries=50)
    rng = random.Random(3)
    over = 0
    for i in range(1000):
        c.set(rng.randrange(400), _value(rng))
        c.get(rng.randrange(400))
        over = max(over, len(c))
    if not evict:
        assert over > 50               # the bound is what eviction keeps
        return
    assert over <= 50
    s = c.stats()
    assert s["entries"] == len(c) <= 50
    assert s["evictions"] > 0 and s["hits"] + s["misses"] == 1000
    assert segment.check().ok


def test_max_bytes_and_oversize(segment):
    c = segment.cache("mb", max_bytes=20000)
    for i in range(300):
        c[i] = "x" * 300
        assert c.stats()["bytes"] <= 20000
    assert 0 < len(c) < 300
    big = "y" * 50000
    assert c.set("big", big) is False           # larger than the bound: not stored
    assert "big" not in c
    assert c.get_or_set("big2", lambda: big) == big      # returned all the same
    s = c.stats()
    assert s["oversize"] == 2 and s["bytes"] <= 20000
    assert segment.check().ok


def test_bounded_cache_evicts_instead_of_segment_full(make_segment):
    seg = make_segment(1 << 20)
    c = seg.cache("full", max_entries=100000)
    for i in range(3000):
        c[i] = "z" * 2000            # 6 MB into a 1 MiB segment
    assert 0 < len(c) < 3000
    assert c.stats()["evictions"] > 0
    assert seg.check().ok


@pytest.mark.parametrize("expiry", [True, False])
def test_ttl_never_returns_expired(segment, hooks, expiry):
    hooks(no_expiry=not expiry)
    c = segment.cache("ttl", ttl=0.05)
    late = 0
    for i in range(20):
        c["k%d" % i] = i
        c.set("long%d" % i, i, ttl=100)
    time.sleep(0.06)
    for i in range(20):
        if c.get("k%d" % i) is not None:
            late += 1
        assert c.get("long%d" % i) == i
    if not expiry:
        assert late == 20
        return
    assert late == 0
    assert "k0" not in c
    s = c.stats()
    assert s["expirations"] == 20 and s["entries"] == 20
    # a value is never returned past its expiry, whatever the timing
    for i in range(300):
        t0 = time.time()
        c.set("x", t0, ttl=0.002)
        t1 = time.time()            # the value expires before t1 + ttl
        while True:
            before = time.time()
            got = c.get("x")
            if got is None:
                break
            assert got == t0 and before < t1 + 0.002 + 1e-5
    assert segment.check().ok


def test_expired_reclaimed_without_reads(segment):
    c = segment.cache("reclaim", ttl=0.01)
    for i in range(200):
        c[i] = i
    time.sleep(0.02)
    for i in range(200, 400):
        c.set(i, i, ttl=100)      # each set reclaims a few expired entries the hand passes
    assert c.stats()["expirations"] >= 200
    assert len(c) == 200


def _worker(seg_name, seed, seconds, out_name):
    seg = dshared.Segment(seg_name)
    c = seg.cache("mp")
    cb = seg.cache("mpb")
    rng = random.Random(seed)
    gets = 0
    stored = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(50):
            k = rng.randrange(500)
            r = rng.random()
            cc = c if rng.random() < 0.7 else cb
            if r < 0.5:
                cc.get(k)
                gets += 1
            elif r < 0.8:
                cc.set(k, "v" * rng.randrange(200), ttl=rng.choice([None, 0.01, 1]))
            elif r < 0.9:
                cc.pop(k, None)
            else:
                # keys of this worker only: it knows when each value was stored
                # (stored before t1, so it expires before t1 + ttl)
                before = time.time()
                v = cc.get(("t", seed, k))
                gets += 1
                if v is not None:
                    assert before < stored[v] + 0.02 + 1e-5, "an expired value was returned"
                t0 = time.time()
                cc.set(("t", seed, k), t0, ttl=0.02)
                stored[t0] = time.time()
    c.flush()
    cb.flush()
    seg.col(out_name).incr("gets", gets)
    seg.close()


def _run_bounds(segment, seconds):
    c = segment.cache("mp", max_entries=100)
    cb = segment.cache("mpb", max_bytes=30000)
    worst = 0
    worst_b = 0
    with Children() as ch:
        pids = [ch.fork(_worker, segment.name, i, seconds, "out") for i in range(4)]
        running = set(pids)
        while running:
            worst = max(worst, len(c))
            worst_b = max(worst_b, cb._stats()["bytes"])
            time.sleep(0.005)
            for p in list(running):
                done, status = os.waitpid(p, os.WNOHANG)
                if done:
                    assert status == 0
                    running.discard(p)
                    ch.pids.discard(p)
    assert worst <= 100 + 4          # ± one entry per process in flight
    assert worst_b <= 30000
    s, sb = c.stats(), cb.stats()
    assert s["hits"] + s["misses"] + sb["hits"] + sb["misses"] == segment.col("out")["gets"]
    assert s["entries"] <= 100 and sb["bytes"] <= 30000
    assert segment.check().ok


def test_bounds_four_processes(segment):
    _run_bounds(segment, 1.5)


@pytest.mark.slow
def test_bounds_four_processes_long(segment):
    _run_bounds(segment, 10)


# -- kills at every crash point

def _kill_at_each_point(segment, c, op, maxe):
    """Run op in a child killed at its 1st, 2nd, ... crash point, until one
    completes; after each, the cache's counts and bounds hold."""
    for i in range(1, 500):
        def child():
            _heap.test_hooks(crash_at=i)
            op()
        pid = fork_call(child)
        code = wait_pid(pid, 30)
        assert code in (0, 77)
        s = c.stats()            # the next lock repairs; stats recounts after a repair
        assert s["entries"] == len(c) <= maxe
        rep = segment.check()
        assert rep.ok, rep.problems
        total = sum(_codec._cache_entry_bytes(c, k) for k in c)
        assert s["bytes"] == total, (i, s["bytes"], total)
        if code == 0:
            return i
    raise AssertionError("op never completed")


@pytest.mark.parametrize("journaled", [True, False])
def test_kill_during_set_evict_expire(segment, hooks, journaled):
    hooks(plain_counters=not journaled)
    c = segment.cache("kill", max_entries=20, ttl=60)
    for i in range(20):
        c[i] = "x" * 100
    seq = iter(range(1000, 10 ** 6))

    def set_evict():
        k = next(seq)
        for _ in range(4):
            c.get(k)            # seen often: the admission filter lets it in
        assert c.set(k, {"big": "y" * (100 + 37 * (k % 20))})

    def expire():
        c.set(next(seq), "e", ttl=0.000001)
        time.sleep(0.001)
        c.get("nothing")
        c.set(next(seq), "f")

    if not journaled:
        # counters stored apart from the write they count (and not recounted
        # after a repair) drift when the write is undone
        with pytest.raises(AssertionError):
            _kill_at_each_point(segment, c, set_evict, 20)
        return
    assert _kill_at_each_point(segment, c, set_evict, 20) > 10
    assert _kill_at_each_point(segment, c, expire, 20) > 10


# -- stampede

def _stamp_worker(seg_name, die_first):
    seg = dshared.Segment(seg_name)
    c = seg.cache("st")
    counts = seg.col("counts")

    def factory():
        n = counts.incr("runs")
        if die_first and n == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.3)
        return {"value": 42}

    r = c.get_or_set("key", factory)
    assert r == {"value": 42}
    counts.incr("done")
    seg.close()


@pytest.mark.parametrize("protect", [True, False])
@pytest.mark.parametrize("die_first", [False, True])
def test_stampede(segment, hooks, protect, die_first):
    _cache._NO_PENDING = not protect
    segment.cache("st")
    with Children() as ch:
        pids = [ch.fork(_stamp_worker, segment.name, die_first) for _ in range(8)]
        codes = [ch.wait(p, 60) for p in pids]
    counts = segment.col("counts")
    if not protect:
        assert counts["runs"] > 1 + die_first
        return
    if die_first:
        assert sorted(codes) == [-9] + [0] * 7
        assert counts["runs"] == 2          # exactly one took over
        assert counts["done"] == 7
    else:
        assert codes == [0] * 8
        assert counts["runs"] == 1
        assert counts["done"] == 8
    assert segment.check().ok


def test_get_or_set_factory_raises(segment):
    c = segment.cache("raise")

    def bad():
        raise RuntimeError("no")
    with pytest.raises(RuntimeError):
        c.get_or_set("k", bad)
    assert c.get_or_set("k", lambda: 5) == 5       # the next caller computes
    assert c.get_or_set("k", bad) == 5


# -- memoize

def test_memoize_against_lru_cache(segment):
    calls = []

    def f(a, b=0, *rest, **kw):
        calls.append((a, b, rest, kw))
        return [a, b, rest, sorted(kw.items())]

    ref = functools.lru_cache(maxsize=None)(f)
    mine = dshared.memoize("t.f", segment=segment)(f)
    rng = random.Random(7)
    for _ in range(600):
        args = [rng.choice([1, 1.0, True, "s", b"b", None, (1, 2), 2 ** 70])
                for _ in range(rng.randrange(1, 3))]
        kw = {"k": rng.randrange(3)} if rng.random() < 0.3 else {}
        del calls[:]
        want = ref(*args, **kw)
        n_ref = len(calls)
        got = mine(*args, **kw)
        assert got == want
        assert len(calls) == 2 * n_ref     # computed exactly when lru_cache computed
    ri, mi = ref.cache_info(), mine.cache_info()
    assert (mi.hits, mi.misses, mi.currsize) == (ri.hits, ri.misses, ri.currsize)
    assert mine.__wrapped__ is f and mine.__name__ == "f"
    mine.cache_clear()
    assert mine.cache_info() == dshared.CacheInfo(0, 0, None, 0)


def test_memoize_typed(segment):
    ref = functools.lru_cache(maxsize=None, typed=True)(lambda x: type(x).__name__)
    mine = dshared.memoize("t.typed", typed=True, segment=segment)(lambda x: type(x).__name__)
    for x in [1, 1.0, True, 1, 1.0, "a"]:
        assert mine(x) == ref(x)
    assert mine.cache_info()[:2] == ref.cache_info()[:2]
    untyped = dshared.memoize("t.untyped", segment=segment)(lambda x: type(x).__name__)
    ref = functools.lru_cache(maxsize=None)(lambda x: type(x).__name__)
    assert [untyped(x) for x in [1, 1.0, True, 1.0]] == [ref(x) for x in [1, 1.0, True, 1.0]]


def test_memoize_bad_argument(segment):
    @dshared.memoize(segment=segment)
    def f(a, b):
        return 1
    with pytest.raises(TypeError, match=r"argument 1 \(list\)"):
        f(1, [2])
    with pytest.raises(TypeError, match=r"argument 'b' \(set\)"):
        f(1, b={2})


def test_memoize_default_name():
    def g():
        pass
    g.__module__ = "__mp_main__"
    g.__qualname__ = "g"
    assert _cache.default_name(g) == "__main__.g"
    assert _cache.default_name(test_memoize_default_name).endswith("test_cache.test_memoize_default_name")


def test_memoize_bounded_and_default_segment(shm_name):
    seg = dshared.init(shm_name, 8 << 20)
    try:
        @dshared.memoize(max_entries=10)
        def sq(x):
            return x * x
        assert [sq(i % 30) for i in range(100)] == [(i % 30) ** 2 for i in range(100)]
        assert sq.cache_info().currsize <= 10 and sq.cache_info().maxsize == 10
        assert dshared.cache(_cache.default_name(sq)) is not None
    finally:
        seg.close()
        dshared.unlink(shm_name)


def _memo_worker(seg_name):
    seg = dshared.Segment(seg_name)
    counts = seg.col("counts")

    @dshared.memoize("t.slow", segment=seg)
    def slow(x):
        counts.incr("runs")
        time.sleep(0.3)
        return [x, x]

    assert slow(7) == [7, 7]
    seg.close()


@pytest.mark.parametrize("claim", [True, False])
def test_memoize_stampede(segment, hooks, claim):
    hooks(no_claim=not claim)
    with Children() as ch:
        pids = [ch.fork(_memo_worker, segment.name) for _ in range(8)]
        assert [ch.wait(p, 60) for p in pids] == [0] * 8
    if not claim:
        assert segment.col("counts")["runs"] > 1
        return
    assert segment.col("counts")["runs"] == 1
    info = dshared.memoize("t.slow", segment=segment)(lambda x: None).cache_info()
    assert info.currsize == 1
