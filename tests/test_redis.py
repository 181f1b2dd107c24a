"""The Redis backend's own guarantees: no pickle, atomic counters and lock()
across processes, lease expiry and fencing, no orphans after collect(), an
exact near-cache, lost data and lost connections reported."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import dshared
from _proc import test_seed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def rseg(redis_url, shm_name):
    from dshared.redis import RedisSegment
    seg = RedisSegment(shm_name, create=True, server=redis_url)
    yield seg
    seg.unlink()
    seg.close()


def _children(code, n, *args, timeout=120):
    """n python processes running code (argv: index, *args); their outputs."""
    env = dict(os.environ)          # dshared as this process imports it (installed, or PYTHONPATH)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)] + [str(a) for a in args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
             for i in range(n)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def test_no_pickle_in_the_package():
    """The value encoding is closed: nothing in dshared imports pickle or
    calls its loaders (CI greps for it too)."""
    bad = []
    for d, _, files in os.walk(os.path.join(ROOT, "dshared")):
        for f in files:
            if f.endswith((".py", ".pyx", ".pxd", ".lua", ".pxi", ".h")):
                with open(os.path.join(d, f), encoding="utf-8") as fh:
                    for i, line in enumerate(fh, 1):
                        code = line.split("#")[0]
                        if "import pickle" in code or "pickle.load" in code or "cPickle" in code \
                                or "from pickle" in code or "marshal.load" in code:
                            bad.append("%s:%d: %s" % (f, i, line.strip()))
    assert bad == []


def test_layout_one_hash_per_container_under_the_hash_tag(rseg, redis_url):
    from dshared.redis._client import Client, Config
    r = rseg.col()
    r["d"] = {"x": [1, 2], "n": 5}
    c = Client(Config(redis_url))
    keys = c.call(b"KEYS", b"{dshared:%s}:*" % rseg.name.encode())
    types = {c.call(b"TYPE", k) for k in keys}
    assert types <= {b"hash", b"list"}
    d = r["d"]
    assert c.call(b"HGET", d._key, b"sn") == b"5"            # an int as digits: HINCRBY works on it
    assert c.call(b"HINCRBY", d._key, b"sn", 1) == 6
    assert r["d"]["n"] == 6
    assert c.call(b"HGET", d._key, b"sx")[:1] == b"L"        # a container reference
    c.close()


INCR = r"""
import sys, dshared
seg = dshared.init(sys.argv[2], server=sys.argv[3])
d = dshared.col()
for _ in range(int(sys.argv[4])):
    d.incr('n')
"""


@pytest.mark.parametrize("n", [500, pytest.param(100000, marks=[pytest.mark.slow, pytest.mark.timeout(1800)])])
def test_incr_exact_under_8_processes(rseg, redis_url, n):
    _children(INCR, 8, rseg.name, redis_url, n, timeout=1700)
    assert rseg.col()["n"] == 8 * n


LOCKED = r"""
import sys, dshared
seg = dshared.init(sys.argv[2], server=sys.argv[3])
d = dshared.col()
for _ in range(int(sys.argv[4])):
    with dshared.lock():
        d['n'] = d['n'] + 1     # read-modify-write: exact only under the lock
"""


def test_lock_read_modify_write_loses_nothing(rseg, redis_url):
    rseg.col()["n"] = 0
    _children(LOCKED, 8, rseg.name, redis_url, 60)
    assert rseg.col()["n"] == 8 * 60


HOLDER = r"""
import sys, time, dshared
seg = dshared.init(sys.argv[2], server=sys.argv[3])
seg.acquire()
dshared.col()['held'] = 1
print('held', flush=True)
time.sleep(600)
"""


def test_killed_lock_holder_lease_expires(rseg, redis_url):
    url = redis_url + "?lease_ms=600"
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-c", HOLDER, "0", rseg.name, url], env=env,
                         stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert p.stdout.readline().strip() == "held"
        from dshared.redis import RedisSegment
        other = RedisSegment(rseg.name, server=url)
        assert not other.acquire(timeout=0.05)        # held (renewed by its thread)
        p.send_signal(signal.SIGKILL)
        p.wait()
        with other.lock(timeout=30):                  # the lease expires: taken
            other.col()["after"] = 1
        # the dead holder's block is rolled back whole (lock() is crash-atomic)
        assert other.col()["after"] == 1 and "held" not in other.col()
        assert other.stats()["repairs"] == 1
        other.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_writes_with_an_expired_lease_are_fenced(rseg, redis_url):
    from dshared.redis import LeaseExpiredError
    from dshared.redis._client import Client, Config
    r = rseg.col()
    c = Client(Config(redis_url))
    r["a"] = 0
    with pytest.raises(LeaseExpiredError):
        with rseg.lock():
            r["a"] = 1
            c.call(b"DEL", rseg._prefix + b"lock")    # the lease ran out (the holder stalled)
            r["b"] = 2                                # refused: its token is no longer valid
    with rseg.lock():                                 # the next locker rolls the stalled block back
        pass
    assert "b" not in r and r["a"] == 0
    with pytest.raises(LeaseExpiredError):            # a block whose lease ran out does not commit
        with rseg.lock():
            r["a"] = 2
            c.call(b"DEL", rseg._prefix + b"lock")
    r["c"] = 3                                        # a plain write rolls the dead block back first
    assert r["a"] == 0 and r["c"] == 3 and rseg.stats()["repairs"] == 2
    c.close()


def test_writers_wait_while_another_holds_the_lock(rseg, redis_url):
    from dshared.redis import RedisSegment
    other = RedisSegment(rseg.name, server=redis_url)
    import threading
    done = []
    with rseg.lock():
        t = threading.Thread(target=lambda: (other.col().__setitem__("w", 1), done.append(1)))
        t.start()
        t.join(0.3)
        assert not done and "w" not in rseg.col()
    t.join(10)
    assert done and other.col()["w"] == 1        # (this handle's cache sees it once the invalidation arrives)
    other.close()


@pytest.mark.parametrize("steps", [400, pytest.param(100000, marks=[pytest.mark.slow, pytest.mark.timeout(1800)])])
def test_no_orphans_after_random_nested_aliasing_and_collect(rseg, steps):
    rnd = random.Random(test_seed())
    r = rseg.col()
    names = ["a", "b", "c", "d", "e"]
    for _ in range(steps):
        k = rnd.choice(names)
        op = rnd.random()
        if op < 0.3:
            r[k] = {"x": {"y": [1, {"z": 2}]}, "l": [[], {}]}
        elif op < 0.5 and k in r:
            r[rnd.choice(names)] = r[k]                    # alias
        elif op < 0.65 and k in r and isinstance(r[k], dshared.redis.RedisDict):
            other = rnd.choice(names)
            if other in r:
                r[k]["ref"] = r[other]                     # may close a cycle
        elif op < 0.8 and k in r and isinstance(r[k], dshared.redis.RedisDict):
            r[k]["x"] = [rnd.random()]
        else:
            r.pop(k, None)
    for k in names:
        r.pop(k, None)
    report = rseg.check()
    assert report.ok, report.problems
    before = report.garbage                                # cycles: not freed by refcounts
    freed = rseg.collect()
    assert freed == before
    report = rseg.check()
    assert report.ok and report.garbage == 0, report.problems
    assert rseg.stats()["containers"] == 1                 # the root only


def test_large_containers_are_freed_in_bounded_steps(rseg):
    """A dropped list of 3,000 dicts (and a dict of 3,000 fields) is freed a
    bounded number of fields per script call: queued, drained by the next
    writes, never left behind."""
    r = rseg.col()
    r["big"] = [{"i": i} for i in range(3000)]
    r["wide"] = {i: [i] for i in range(3000)}
    assert rseg.stats()["containers"] == 6003
    del r["big"]
    del r["wide"]
    assert rseg.stats()["pending_free"] > 0          # not all freed within one call
    report = rseg.check()
    assert report.ok, report.problems
    steps = 0
    while rseg.stats()["pending_free"]:
        r["tick"] = steps                            # each write drains about 256 fields
        steps += 1
        assert steps < 1000
    assert steps > 10
    assert rseg.stats()["containers"] == 1
    report = rseg.check()
    assert report.ok and report.garbage == 0, report.problems


def test_cycle_needs_collect(rseg):
    r = rseg.col()
    r["c"] = {"a": []}
    r["c"]["a"].append(r["c"])
    del r["c"]
    assert rseg.check().garbage == 2
    assert rseg.collect() == 2
    assert rseg.check().garbage == 0


def _wait(pred, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.001)
    return pred()


@pytest.mark.parametrize("trials", [300, pytest.param(10000, marks=pytest.mark.slow)])
def test_near_cache_no_stale_read_after_invalidation(rseg, redis_url, trials):
    """Two handles (two caches, two connections): once the reader's cache
    got the invalidation of a write, it never serves the old value."""
    from dshared.redis import RedisSegment
    reader = RedisSegment(rseg.name, server=redis_url)
    w = rseg.col()
    rd = reader.col()
    w["k"] = 0
    nc = reader._nc
    for i in range(1, trials):
        assert rd["k"] in (i - 1, i)
        assert rd["k"] in (i - 1, i)                    # the second read is a hit
        seen = nc.invalidations
        w["k"] = i
        assert _wait(lambda: nc.invalidations > seen)
        assert rd["k"] == i
    assert nc.misses < 2 * trials                        # hits happened
    reader.close()


def test_near_cache_dropped_when_its_connection_dies(rseg, redis_url):
    from dshared.redis._client import Client, Config
    r = rseg.col()
    r["k"] = 1
    assert r["k"] == 1 and r["k"] == 1
    nc = rseg._nc
    assert nc.enabled and nc.d
    c = Client(Config(redis_url))
    # the connection dies and a write lands in one step: nobody tells the cache of that write
    c.call(b"MULTI")
    c.call(b"CLIENT", b"KILL", b"TYPE", b"pubsub")
    c.call(b"HSET", r._key, b"sk", b"2")
    assert c.call(b"EXEC")[1] == 0
    assert _wait(lambda: nc.resets > 0, 2)
    assert r["k"] == 2                                   # the cache was dropped
    assert _wait(lambda: nc.enabled, 5)
    c.close()


def test_near_cache_invalidation_racing_a_read_is_not_lost(rseg, redis_url):
    """An invalidation that arrives while a read is in flight: the reply
    (the old value) must not be kept (the placeholder check)."""
    from dshared.redis import RedisSegment
    writer = RedisSegment(rseg.name, server=redis_url + "?writer=1")     # its own connections
    r = rseg.col()
    r["k"] = "old"
    nc = rseg._nc
    assert r["k"] == "old"                  # the near-cache is running
    nc.d.clear()
    client = rseg._client
    real = client.callp                     # the read's one command (packed)

    def racing(*args):
        reply = real(*args)                 # read the old value...
        seen = nc.invalidations
        writer.col()["k"] = "new"           # ...a write lands before the reply is kept
        assert _wait(lambda: nc.invalidations > seen)
        return reply
    client.callp = racing
    try:
        assert r["k"] == "old"              # the reply read before the write
    finally:
        client.callp = real
    assert r["k"] == "new"                  # not served from a stale entry
    writer.close()


def test_near_cache_dropped_when_its_connection_goes_silent(rseg, redis_url):
    """A connection that stops answering (no reset: the server is paused)
    drops the cache within 2 s (pings every 0.5 s, silence for 1.5 s)."""
    from dshared.redis._client import Client, Config
    r = rseg.col()
    r["k"] = 1
    assert r["k"] == 1 and r["k"] == 1
    nc = rseg._nc
    resets = nc.resets
    c = Client(Config(redis_url))
    t0 = time.monotonic()
    c.call(b"CLIENT", b"PAUSE", b"2500", b"ALL")
    try:
        assert _wait(lambda: nc.resets > resets, 2.4)
        assert time.monotonic() - t0 <= 2.4 and not nc.d
    finally:
        c.call(b"CLIENT", b"UNPAUSE")
        c.close()
    assert r["k"] == 1


def test_script_flushed_from_the_server_is_loaded_again(rseg, redis_url):
    from dshared.redis._client import Client, Config
    c = Client(Config(redis_url))
    assert c.call(b"SCRIPT", b"FLUSH") == b"OK"
    c.close()
    rseg.col()["after_flush"] = 1          # NOSCRIPT -> SCRIPT LOAD -> EVALSHA
    assert rseg.col()["after_flush"] == 1


def test_views_pickle_as_references(rseg):
    import pickle                           # the test's own use: views travel to spawned processes
    r = rseg.col()
    r["d"] = {"x": 1}
    v = pickle.loads(pickle.dumps(r["d"]))
    try:
        v["y"] = 2
        assert r["d"] == {"x": 1, "y": 2}
    finally:
        if v._seg is not rseg:
            v._seg.close()                  # the process's own handle, opened by the unpickling


def test_near_cache_is_bounded(redis_url, shm_name):
    from dshared.redis import RedisSegment
    seg = RedisSegment(shm_name, server=redis_url + "?near_cache_items=50")
    try:
        r = seg.col()
        r.update({i: i for i in range(200)})
        for _ in range(2):
            for i in range(200):
                assert r[i] == i
        assert seg._nc.items <= 50
    finally:
        seg.unlink()
        seg.close()


def test_server_restart_is_lost_data_not_an_empty_segment(shm_name):
    import _redis
    from dshared.redis import RedisSegment, SegmentLostError, ServerConnectionError
    binary = _redis.redis_server_binary()
    if binary is None:
        if _redis.required():
            pytest.fail(_redis.SKIP_REASON)
        pytest.skip(_redis.SKIP_REASON)
    srv = _redis.RedisServer(binary)
    try:
        seg = RedisSegment(shm_name, server=srv.url)
        r = seg.col()
        r["k"] = {"a": 1}
        srv.stop()
        with pytest.raises(ServerConnectionError):
            r["x"] = 1
        srv.start()                                      # same port, no data
        with pytest.raises(SegmentLostError):
            r["k"]
        with pytest.raises(SegmentLostError):
            r["x"] = 1
        with pytest.raises(SegmentLostError):
            len(r)
        seg.close()
        seg = RedisSegment(shm_name, server=srv.url)     # a new segment, stated as such
        assert seg.created and len(seg.col()) == 0
        seg.unlink()
        seg.close()
    finally:
        srv.close()


def test_views_of_removed_containers_are_stale(rseg):
    r = rseg.col()
    r["d"] = {"x": 1}
    d = r["d"]
    del r["d"]
    with pytest.raises(dshared.StaleReferenceError):
        d["y"] = 2
    with pytest.raises(dshared.StaleReferenceError):
        len(d)
    with pytest.raises(dshared.StaleReferenceError):
        r["again"] = d


def test_inside_a_removed_tree_views_stay_readable_until_the_queue_frees_them(rseg, redis_url):
    """Freeing is queued on Redis (about 256 fields per write script): the
    removed container is stale at once, a container inside it when the
    queue reaches its parent; drain() empties the queue. (Read through a
    handle without near-cache: each read asks the server.)"""
    from dshared.redis import RedisSegment
    seg = RedisSegment(rseg.name, server=redis_url + "?near_cache=0")
    try:
        r = seg.col()
        r["a"] = [[{"x%d" % i: [i] for i in range(50)} for _ in range(3)] for _ in range(10)]
        top, deep = r["a"], r["a"][9][2]["x7"]
        del r["a"]
        with pytest.raises(dshared.StaleReferenceError):
            len(top)
        assert deep == [7]                  # an ancestor waits in the queue
        assert seg.stats()["pending_free"] > 0
        assert seg.drain() == 0
        with pytest.raises(dshared.StaleReferenceError):
            len(deep)
        with pytest.raises(dshared.StaleReferenceError):
            deep.append(1)
    finally:
        seg.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_quickstart_runs_unchanged_on_redis(redis_url, shm_name, method, tmp_path):
    env = dict(os.environ, DSHARED_SERVER=redis_url, DSHARED_EXAMPLE_NAME=shm_name)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), method],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "val\n" and r.stderr == ""
    from dshared.redis._client import Client, Config
    c = Client(Config(redis_url))
    assert c.call(b"KEYS", b"{dshared:%s}:*" % shm_name.encode()) == []     # unlinked
    c.close()


@pytest.mark.parametrize("required", [False, True])
def test_without_redis_server_skipped_with_a_reason_or_failed_in_ci(required, tmp_path):
    """No redis-server: a user sees the Redis tests skipped with one reason
    line (and the run passes); under DSHARED_REQUIRE_REDIS=1 (CI) they fail."""
    env = dict(os.environ, DSHARED_REDIS_SERVER="none")
    env.pop("DSHARED_REQUIRE_REDIS", None)
    if required:
        env["DSHARED_REQUIRE_REDIS"] = "1"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                        os.path.join(ROOT, "tests", "test_redis.py") + "::test_layout_one_hash_per_container_under_the_hash_tag"],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    if required:
        assert r.returncode != 0 and "DSHARED_REQUIRE_REDIS=1 but redis-server is not installed here" in r.stdout, r.stdout
    else:
        assert r.returncode == 0, r.stdout
        assert "1 skipped" in r.stdout and "redis-server is not installed here" in r.stdout, r.stdout


def test_init_reuses_this_process_handle_until_the_segment_is_gone(redis_url, shm_name):
    a = dshared.init(shm_name, server=redis_url)
    try:
        assert dshared.init(shm_name, server=redis_url) is a          # one near-cache, one thread
        assert dshared.attach(shm_name, server=redis_url) is a
        dshared.col()["k"] = 1
        dshared.unlink(shm_name, server=redis_url)
        with pytest.raises(FileNotFoundError):
            dshared.attach(shm_name, server=redis_url)
        b = dshared.init(shm_name, server=redis_url)                  # a new segment, said so
        assert b is not a and b.created and "k" not in dshared.col()
    finally:
        dshared.unlink(shm_name, server=redis_url)


def test_lists_of_the_two_backends_compare_by_items(rseg, make_segment):
    """One set of list comparisons serves both backends (_collections._ListOrder):
    a Redis list and a shared-memory list compare by items, as two lists do."""
    r = rseg.col()
    r["l"] = [1, 2, 3]
    s = make_segment(1 << 20).col()
    s["l"] = [1, 2, 4]
    a, b = r["l"], s["l"]
    assert (a == b, a != b, a < b, a <= b, a > b, b > a) == (False, True, True, True, False, True)
    s["l"][2] = 3
    assert a == b and b == a and a == [1, 2, 3] and not (a < b)


def test_popped_values_keep_aliases_and_cycles(rseg):
    """pop/popitem/list pop return plain copies with the shape they had: a
    container reached twice is one object, a cycle a cycle (not a view of a
    freed container)."""
    r = rseg.col()
    r["x"] = [[], []]
    r["x"][1] = r["x"][0]
    r["c"] = {"n": 1}
    r["c"]["me"] = r["c"]
    r["l"] = [{"k": [1]}]
    r["l"][0]["again"] = r["l"][0]["k"]
    x = r.pop("x")
    assert type(x[0]) is list and x[0] is x[1]
    c = r.pop("c")
    assert type(c) is dict and c["me"] is c and c["n"] == 1
    v = r["l"].pop()
    assert type(v["k"]) is list and v["k"] is v["again"] and v["k"] == [1]
    k, w = r.popitem()
    assert k == "l" and w == []
    rseg.collect()
    assert rseg.check().ok and rseg.stats()["containers"] == 1


def test_a_view_through_another_handle_is_stored_as_a_reference(rseg, redis_url):
    """A view read through a second handle of the same segment (another URL
    for the same server) is stored as a reference, not copied."""
    from dshared.redis import RedisSegment
    other = RedisSegment(rseg.name, create=False, server=redis_url + "?near_cache=0")
    try:
        r = rseg.col()
        r["a"] = {"x": 1}
        r["b"] = other.col()["a"]
        r["b"]["x"] = 2
        assert r["a"]["x"] == 2 and r["a"]._identity() == r["b"]._identity()
    finally:
        other.close()


def test_update_that_drops_and_stores_a_container_again_keeps_it(rseg):
    """update() with one key several times: a container replaced, then
    stored again in the same call, must not be freed in between."""
    r = rseg.col()
    lst = [1]
    r.update([("k", lst), ("k", None), ("k", lst)])
    assert r["k"] == [1]
    r["k"].append(2)
    assert r["k"] == [1, 2] and rseg.check().ok


def test_unsupported_value_inside_a_cycle_is_reported(rseg):
    """A plain value with a cycle and something dshared cannot store raises
    UnsupportedTypeError naming where (it recursed without end)."""
    v = [1]
    v.append(v)
    v.append({"k": {1}})
    with pytest.raises(dshared.UnsupportedTypeError, match="set"):
        rseg.col()["x"] = v
    assert "x" not in rseg.col() and rseg.stats()["containers"] == 1


def test_what_waits_to_be_freed_is_not_reported_as_garbage(rseg):
    """Containers held only by a container queued to be freed are freed by
    the bounded steps: check() does not count them as garbage (collect()'s)."""
    r = rseg.col()
    r["big"] = [{"i": i} for i in range(600)]
    del r["big"]
    assert rseg.stats()["pending_free"] > 0
    rep = rseg.check()
    assert rep.ok and rep.garbage == 0, rep
    rseg.drain()
    assert rseg.stats()["containers"] == 1


def test_short_write_path_hands_what_it_cannot_do_to_the_full_script(rseg, redis_url):
    """d[k] = a plain value takes the script's short path ('ds'); where the
    old value is a container (its count drops), a lock is held elsewhere, or
    the segment was recreated, the full script must run instead."""
    from dshared.redis import RedisSegment, SegmentLostError
    r = rseg.col()
    full = []
    run = rseg._run
    rseg._run = lambda op, *a, **k: (full.append(op), run(op, *a, **k))[1]
    calls = _evalsha_calls(rseg)
    r["k"] = 1
    r["k"] = 2
    assert _evalsha_calls(rseg) - calls == 2 and full == []     # one short call each
    # a container replaced by a plain value is freed
    r["c"] = {"x": [1, 2]}
    inner = r["c"]
    r["c"] = 5
    assert r["c"] == 5 and full == [b"dset", b"dset"]          # the container, then the full path
    rseg.drain()
    with pytest.raises(dshared.StaleReferenceError):
        inner["x"]
    assert rseg.check().ok and rseg.stats()["containers"] == 1
    # new keys: insertion order, original key forms and the count kept
    r[1.0] = "a"
    r["z"] = "b"
    del r["k"]
    r["k"] = 3
    assert list(r) == ["c", 1.0, "z", "k"] and len(r) == 4
    # a recreated segment: the old handle's write is refused, not stored in the new one
    other = RedisSegment(rseg.name, server=redis_url + "?other=1")
    other.unlink()
    other.close()
    new = RedisSegment(rseg.name, server=redis_url + "?other=2")
    try:
        with pytest.raises(SegmentLostError):
            r["k"] = 4
        assert len(new.col()) == 0
    finally:
        new.close()


def _evalsha_calls(seg):
    for line in seg._client.call(b"INFO", b"commandstats").decode().splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_reads_without_the_near_cache(rseg, redis_url):
    """Each read one round trip: values, views, a missing key, and a view of
    a container already freed whose items are not yet dropped (inside a
    block: the free queue waits for its end)."""
    from dshared.redis import RedisSegment
    r = rseg.col()
    r.update({"s": "x", "i": 7, "n": None, "d": {"a": 1}, "l": [1], 3: b"b", "f": 0.5, "t": (1, "u")})
    cold = RedisSegment(rseg.name, server=redis_url + "?near_cache=0")
    try:
        c = cold.col()
        assert [c[k] for k in ("s", "i", "n", 3, "f", "t")] == ["x", 7, None, b"b", 0.5, (1, "u")]
        assert c["d"]["a"] == 1 and c["l"][0] == 1
        with pytest.raises(KeyError):
            c["missing"]
        inner = c["d"]
        with rseg.lock():
            del r["d"]
            assert cold._client.call(b"HGET", inner._key, b"sa") == b"1"     # still there...
            with pytest.raises(dshared.StaleReferenceError):
                inner["a"]                                                      # ...but freed
    finally:
        cold.close()


def test_an_interrupted_call_leaves_no_reply_to_the_next(rseg, redis_url):
    """A KeyboardInterrupt (or a signal handler's exception) between a
    command and its reply: the connection is dropped, so the next call
    does not read that reply as its own."""
    from dshared.redis import RedisSegment
    rseg.col().update({"a": 1, "b": 2})
    cold = RedisSegment(rseg.name, server=redis_url + "?near_cache=0")
    try:
        c = cold.col()
        conn = cold._client.conn()
        real = conn.sock

        class Interrupted:
            armed = True

            def recv_into(self, buf):
                if self.armed:
                    self.armed = False
                    raise KeyboardInterrupt
                return real.recv_into(buf)

            def __getattr__(self, name):
                return getattr(real, name)
        conn.sock = Interrupted()
        with pytest.raises(KeyboardInterrupt):
            c["a"]
        assert c["b"] == 2
        assert c["a"] == 1
    finally:
        cold.close()
