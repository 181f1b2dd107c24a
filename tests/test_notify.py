"""Change notifications: version(), wait(), wait_any(), wait_async().

The multi-process scenarios run in drivers (fresh interpreters in their own
process group, see _proc.py) that fork the workers. A lost wake-up shows as
a wait that sleeps its whole timeout although what it waited for had
happened: the handshake workers sleep in one long slice (the test hook
slice_ms), so that the periodic re-check of a wait cannot hide a lost
wake-up, and the
meta-test shows that with the writers' FUTEX_WAKE disabled the handshake
test fails.
"""
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import dshared
from dshared import _codec, _heap

from _proc import Children, Popen, fork_call, run_driver, test_seed, wait_pid, watchdog

TESTS = os.path.dirname(os.path.abspath(__file__))


def bucket(d, key=None):
    """The wait word (bucket) of a container or one of its keys."""
    return _codec._nt_target(d, key, key is not None)[4]


def other_bucket_keys(d, key, n, same=False):
    """n keys "x<i>" whose bucket differs from (same=True: equals) the bucket of `key`."""
    b = bucket(d, key)
    out = []
    i = 0
    while len(out) < n:
        k = "x%d" % i
        if (bucket(d, k) == b) == same and k != key:
            out.append(k)
        i += 1
    return out


def wait_stats(seg):
    return _heap._nt_stats(seg)


# =====================================================================================
# API, in one process
# =====================================================================================

def test_version_changes_with_every_kind_of_write(segment):
    d = segment.col()
    d["lst"] = []
    lst = d["lst"]
    vl = lst.version()
    for write in (lambda: lst.append(1), lambda: lst.__setitem__(0, 2), lambda: lst.insert(0, 3),
                  lambda: lst.pop(), lambda: lst.extend([4, 5]), lst.reverse, lst.sort,
                  lambda: lst.__delitem__(0), lambda: lst.__iadd__([1, 2]), lst.clear):
        write()
        assert lst.version() != vl, write
        vl = lst.version()
    v0, vk = d.version(), d.version("k")
    for write in (lambda: d.__setitem__("k", 1), lambda: d.__setitem__("k", 2),
                  lambda: d.update({"k": 3}), lambda: d.pop("k"), lambda: d.setdefault("k", 4),
                  lambda: d.__delitem__("k"), lambda: d.update({"k": 5, "other": 6}),
                  lambda: d.update({"k%d" % i: i for i in range(100)}), d.popitem, d.clear):
        write()
        assert d.version() != v0, write
        if getattr(write, "__name__", "") != "popitem":     # it removes another key
            assert d.version("k") != vk, write
        v0, vk = d.version(), d.version("k")


def test_version_of_a_key_ignores_other_keys(segment):
    d = segment.col()
    d["k"] = 0
    quiet = other_bucket_keys(d, "k", 20)
    v = d.version("k")
    for i, k in enumerate(quiet):
        d[k] = i
        del d[k]
    assert d.version("k") == v
    assert d.wait("k", version=v, timeout=0.01) is None
    d["k"] = 1
    assert d.version("k") != v
    assert d.wait("k", version=v, timeout=5) == d.version("k")


def test_nested_containers_have_their_own_versions(segment):
    d = segment.col()
    # a name and a nested dict whose four words differ; the dicts tried are
    # kept, so that each try gets a block of its own (a deleted one's block
    # came back at the same offset, with the same two words, every time)
    for i in range(1000):
        name = "inner%d" % i
        d[name] = {"a": 1}
        inner = d[name]
        words = {bucket(d), bucket(d, name), bucket(inner), bucket(inner, "a")}
        if len(words) == 4:
            break
    assert len(words) == 4
    vd, vk, vi, via = d.version(), d.version(name), inner.version(), inner.version("a")
    inner["a"] = 2
    assert inner.version() != vi and inner.version("a") != via
    assert d.version(name) == vk and d.version() == vd


def test_timeout(segment):
    d = segment.col()
    lst = d.setdefault("l", [])
    t0 = time.monotonic()
    assert d.wait("k", timeout=0.05) is None
    assert d.wait(timeout=0) is None
    assert lst.wait(timeout=0.02) is None
    assert dshared.wait_any([d, (d, "k"), lst], timeout=0.02) == []
    assert time.monotonic() - t0 >= 0.05
    assert wait_stats(segment)["nwaiters"] == 0


def test_wait_returns_at_once_when_the_version_already_moved(segment):
    d = segment.col()
    v = d.version("k")
    d["k"] = 1
    assert d.wait("k", version=v, timeout=5) == d.version("k") != v


def test_wait_wakes_on_a_write_from_another_thread(segment):
    d = segment.col()
    lst = d.setdefault("l", [])
    v = d.version("k")
    threading.Timer(0.05, d.__setitem__, ("k", 1)).start()
    assert d.wait("k", version=v, timeout=10) is not None
    assert d["k"] == 1
    vl = lst.version()
    threading.Timer(0.05, lst.append, (1,)).start()
    assert lst.wait(version=vl, timeout=10) is not None
    assert list(lst) == [1]


def test_wait_any_returns_what_changed(segment):
    d = segment.col()
    lst = d.setdefault("l", [])
    other = d.setdefault("o", {})
    targets = [(d, "a"), (d, "b"), lst, other] + [(d, "k%d" % i) for i in range(124)]
    assert len(targets) == 128
    vs = dshared.versions(targets)
    threading.Timer(0.05, d.__setitem__, ("b", 1)).start()
    got = dshared.wait_any(targets, versions=vs, timeout=10)
    # a target is reported when its version moved: the list's moves only if
    # its word is the one "b" or d shares (one chance in 256)
    assert (d, "b") in got
    assert (lst in got) == (dshared.versions([lst]) != [vs[2]])
    vs = dshared.versions(targets)
    threading.Timer(0.05, lst.append, (1,)).start()
    assert lst in dshared.wait_any(targets, versions=vs, timeout=10)
    with pytest.raises(TypeError):
        dshared.wait_any(["not a target"])
    with pytest.raises(ValueError):
        dshared.wait_any([d], versions=[1, 2])


def test_wait_any_with_more_than_128_words(segment):
    d = segment.col()
    targets = [(d, "k%d" % i) for i in range(300)]
    vs = dshared.versions(targets)
    threading.Timer(0.05, d.__setitem__, ("k299", 1)).start()
    assert (d, "k299") in dshared.wait_any(targets, versions=vs, timeout=10)


def test_wait_inside_lock_raises(segment):
    d = segment.col()
    lst = d.setdefault("l", [])
    with segment.lock():
        with pytest.raises(RuntimeError, match="lock"):
            d.wait("k", timeout=1)
        with pytest.raises(RuntimeError, match="lock"):
            lst.wait(timeout=1)
        with pytest.raises(RuntimeError, match="lock"):
            dshared.wait_any([d], timeout=1)
    assert d.wait("k", timeout=0) is None


def test_container_deleted_while_waiting(segment):
    d = segment.col()
    for key in (None, "a"):
        d["inner"] = {"a": 1}
        inner = d["inner"]
        threading.Timer(0.05, d.__delitem__, ("inner",)).start()
        assert inner.wait(key, timeout=10) is not None
        with pytest.raises(dshared.StaleReferenceError):
            inner.wait(key, timeout=0)
        with pytest.raises(dshared.StaleReferenceError):
            inner.version(key)
    d["lst"] = [1]
    lst = d["lst"]
    threading.Timer(0.05, d.__setitem__, ("lst", None)).start()
    assert lst.wait(timeout=10) is not None
    with pytest.raises(dshared.StaleReferenceError):
        len(lst)


def test_segment_closed_by_another_thread_while_waiting(shm_name):
    seg = dshared.Segment(shm_name, 1 << 20, create=True)
    try:
        d = seg.col()
        d.version("k")
        threading.Timer(0.05, seg.close).start()
        with pytest.raises(ValueError):
            d.wait("k", timeout=10)
    finally:
        seg.close()
        seg.unlink()
    seg = dshared.Segment(shm_name, 1 << 20, create=True)       # no count left behind by the closed wait's
    try:
        seg.col().version("k")
        assert wait_stats(seg)["nwaiters"] == 0
    finally:
        seg.close()
        seg.unlink()


def test_asyncio_waits_in_two_event_loops(segment):
    d = segment.col()
    results = {}

    def loop_thread(key):
        async def main():
            ticks = 0
            task = asyncio.ensure_future(d.wait_async(key, timeout=10))
            while not task.done():          # the loop is not blocked by the wait
                ticks += 1
                await asyncio.sleep(0.001)
            return await task, ticks
        results[key] = asyncio.run(main())

    threads = [threading.Thread(target=loop_thread, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    time.sleep(0.1)
    d["a"] = 1
    d["b"] = 2
    for t in threads:
        t.join(15)
    assert results["a"][0] is not None and results["b"][0] is not None
    assert results["a"][1] > 1 and results["b"][1] > 1

    async def timeouts():
        lst = d.setdefault("l", [])
        r1 = await lst.wait_async(timeout=0.05)
        r2 = await dshared.wait_any_async([(d, "zz")], timeout=0.05)
        return r1, r2
    assert asyncio.run(timeouts()) == (None, [])

    async def cancelled():
        task = asyncio.ensure_future(d.wait_async("never"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(cancelled())
    deadline = time.monotonic() + 5
    while wait_stats(segment)["nwaiters"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert wait_stats(segment)["nwaiters"] == 0      # the cancelled wait's thread let go


def test_check_reports_a_bucket_count_below_its_waiters(segment):
    import mmap as _mmap
    d = segment.col()
    t = threading.Thread(target=lambda: d.wait("k", timeout=10))
    t.start()
    deadline = time.monotonic() + 5
    while not wait_stats(segment)["nwaiters"] and time.monotonic() < deadline:
        time.sleep(0.001)
    assert segment.check().ok
    # the bucket's waiter count, zeroed behind the waiter's back: a wake could be lost
    with open("/dev/shm/" + segment.name, "r+b") as f:
        m = _mmap.mmap(f.fileno(), 0)
    try:
        at = wait_stats(segment)["area"] + 64 + 64 * bucket(d, "k") + 4
        assert m[at:at + 4] == (1).to_bytes(4, "little")
        m[at:at + 4] = (0).to_bytes(4, "little")
        report = segment.check()
        assert not report.ok and any("wait bucket" in p for p in report.problems), report.problems
        m[at:at + 4] = (1).to_bytes(4, "little")
    finally:
        m.close()
    d["k"] = 1
    t.join(10)
    assert not t.is_alive()
    assert segment.check().ok


# =====================================================================================
# writes with nobody waiting: no futex system call
# =====================================================================================

def test_writes_with_nobody_waiting_make_no_wake_call(segment):
    d = segment.col()
    lst = d.setdefault("l", [])
    d.version("k")                  # the wait area exists
    _heap._nt_hooks()
    for i in range(2000):
        d["k"] = i
        lst.append(i)
    del lst[:]
    assert _heap._nt_hooks() == 0
    # a waiter on another bucket: still no wake for these writes
    quiet = other_bucket_keys(d, "k", 1)[0]
    t = threading.Thread(target=lambda: d.wait(quiet, timeout=10))
    t.start()
    deadline = time.monotonic() + 5
    while not wait_stats(segment)["nwaiters"] and time.monotonic() < deadline:
        time.sleep(0.001)
    _heap._nt_hooks()
    for i in range(100):
        d["k"] = i
    assert _heap._nt_hooks() == 0
    d[quiet] = 1                    # and one for a write it waits for
    t.join(10)
    assert _heap._nt_hooks() >= 1


STRACE_CHILD = r"""
import sys, dshared
seg = dshared.Segment(sys.argv[1])
d = seg.col()
lst = d["l"]
d.version("k")
n = int(sys.argv[2])
for i in range(n):
    d["k"] = i
    d["k%d" % (i % 50)] = i
    lst.append(i)
    lst.pop()
seg.close()
"""


def _strace_futex_calls(name, n):
    out = subprocess.run(["strace", "-f", "-c", "-e", "trace=futex", sys.executable, "-c", STRACE_CHILD,
                          name, str(n)], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    for line in out.stderr.splitlines():
        parts = line.split()
        if parts and parts[-1] == "futex":
            return int(parts[3])
    return 0


def test_strace_counts_no_futex_call_per_write(segment):
    if shutil.which("strace") is None:
        # test_writes_with_nobody_waiting_make_no_wake_call counts the calls
        # too; CI installs strace and requires this one
        if os.environ.get("DSHARED_REQUIRE_STRACE") == "1":
            pytest.fail("DSHARED_REQUIRE_STRACE=1 but strace is not installed (apt-get install strace)")
        pytest.skip("strace is not installed here (apt-get install strace): futex calls counted by a test hook only")
    d = segment.col()
    d["l"] = []
    # the calls of the interpreter itself (start, exit) are the same for 10 and 5,000 writes
    few = _strace_futex_calls(segment.name, 10)
    many = _strace_futex_calls(segment.name, 5000)
    assert many - few <= 2, (few, many)
    # with a waiter on the written key, they show (the count can see them)
    t = threading.Thread(target=lambda: [d.wait("k", timeout=0.5) for _ in range(20)])
    t.start()
    try:
        woken = _strace_futex_calls(segment.name, 5000)
    finally:
        t.join(15)
    assert woken - few > 10, (few, woken)


# =====================================================================================
# Ctrl-C, fork
# =====================================================================================

CTRL_C_CHILD = r"""
import signal, sys, time, dshared
# Ctrl-C raises KeyboardInterrupt, as in an interactive process, whatever the
# launcher left (a shell's background job starts with SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
seg = dshared.Segment(sys.argv[1])
d = seg.col()
print("waiting", flush=True)
try:
    d.wait("never")
except KeyboardInterrupt:
    print("interrupted %.6f" % time.monotonic(), flush=True)
    print("left", dshared._heap._nt_stats(seg)["nwaiters"], flush=True)
"""


def test_ctrl_c_interrupts_a_wait(segment):
    segment.col().version("never")
    with Popen(CTRL_C_CHILD, segment.name) as p:
        assert p.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    lines = out.split("\n")
    assert lines[0].startswith("interrupted"), (out, err)
    print("KeyboardInterrupt %.1f ms after SIGINT" % ((float(lines[0].split()[1]) - sent) * 1000))
    assert lines[1] == "left 0"
    assert p.returncode == 0


def drive_fork_while_waiting(name):
    import dshared
    seg = dshared.Segment(name)
    d = seg.col()
    out = {}
    v = d.version("k")

    def waiter():
        out["got"] = d.wait("k", version=v, timeout=20)
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)

    def child():
        # the waiting thread is not in the child; waits and writes work
        assert d.wait("other", timeout=0.01) is None
        v2 = d.version("k2")
        d["k2"] = 1
        assert d.wait("k2", version=v2, timeout=5) is not None
        d["k"] = "from the child"
    pid = fork_call(child)
    code = wait_pid(pid, 30)
    t.join(20)
    res = {"child": code, "got": out.get("got") is not None, "value": d.get("k"),
           "alive": t.is_alive()}
    seg.close()
    return res


def test_fork_while_another_thread_waits(segment):
    res = run_driver("test_notify", "drive_fork_while_waiting", segment.name, timeout=60)
    assert res == {"child": 0, "got": True, "value": "from the child", "alive": False}


# =====================================================================================
# no lost wake-up: handshakes between waiters and writers
# =====================================================================================

def _handshake_waiter(name, i, nwriters, rounds, wait_timeout, res_key):
    watchdog(600)
    seg = dshared.Segment(name)
    _heap._nt_hooks(slice_ms=600_000)       # one sleep per wait: a lost wake-up is a timeout
    d = seg.col()
    lost = 0
    seen = 0
    expect = [1] * nwriters
    keys = [(d, "w%d" % j) for j in range(nwriters)]
    while min(expect) <= rounds:
        vs = dshared.versions(keys)
        progressed = False
        for j in range(nwriters):
            if expect[j] <= rounds and d.get("w%d" % j) == expect[j]:
                d["a%d_%d" % (i, j)] = expect[j]
                expect[j] += 1
                seen += 1
                progressed = True
        if progressed:
            continue
        t0 = time.monotonic()
        dshared.wait_any(keys, versions=vs, timeout=wait_timeout)
        if time.monotonic() - t0 >= 0.9 * wait_timeout:
            # it slept (about: the last slice may end a little early) its whole
            # timeout, and a wait re-checks once at its end: had a writer's value
            # arrived meanwhile, its wake-up was lost (a wake comes in microseconds)
            if any(expect[j] <= rounds and d.get("w%d" % j) == expect[j] for j in range(nwriters)):
                lost += 1
            if lost >= 1 or d.get("stop"):
                d["stop"] = True
                break
    d[res_key] = {"lost": lost, "seen": seen}
    seg.close()


def _handshake_writer(name, j, nwaiters, rounds, wait_timeout, res_key, pause):
    watchdog(600)
    seg = dshared.Segment(name)
    _heap._nt_hooks(slice_ms=600_000)
    d = seg.col()
    lost = 0
    for r in range(1, rounds + 1):
        if pause:
            time.sleep(pause)       # the waiters are asleep when the value arrives
        d["w%d" % j] = r
        for i in range(nwaiters):
            k = "a%d_%d" % (i, j)
            v = d.version(k)
            while d.get(k) != r:
                t0 = time.monotonic()
                d.wait(k, version=v, timeout=wait_timeout)
                if time.monotonic() - t0 >= 0.9 * wait_timeout:
                    if d.get(k) == r:
                        lost += 1
                    if lost >= 1 or d.get("stop"):
                        d["stop"] = True
                        d[res_key] = {"lost": lost, "rounds": r}
                        seg.close()
                        return
                v = d.version(k)
                if d.get(k) == r:
                    break
        if lost >= 3:
            break
    d[res_key] = {"lost": lost, "rounds": rounds}
    seg.close()


def _noise(name, keys, stop_key):
    seg = dshared.Segment(name)
    d = seg.col()
    n = 0
    while not d.get(stop_key):
        d[keys[n % len(keys)]] = n
        n += 1
        if n % 8 == 0:
            time.sleep(0.0002)      # busy, but leaves the 2-core CI machine to the handshake
    d["noise_" + keys[0]] = n
    seg.close()


def _plain(v):
    return None if v is None else v.to_python()


def drive_handshake(name, nwaiters, nwriters, rounds, wait_timeout, noisy, no_wake):
    seg = dshared.Segment(name)
    d = seg.col()
    d.version("w0")
    if no_wake:
        _heap._nt_hooks(no_wake=True)       # inherited by the forked workers
    noise_keys = []
    with Children() as ch:
        if noisy:
            # busy writers of unrelated keys that share the writers' wait words
            for j in range(nwriters):
                noise_keys.append(other_bucket_keys(d, "w%d" % j, 3, same=True))
            for ks in noise_keys:
                ch.add(fork_call(_noise, name, ks, "stop"))
        waiters = [fork_call(_handshake_waiter, name, i, nwriters, rounds, wait_timeout, "rw%d" % i)
                   for i in range(nwaiters)]
        # without the wake (the meta-test) the writers pause before each round,
        # so that the waiters are asleep when a value arrives: on a loaded
        # machine a waiter can otherwise find every value there before it sleeps
        pause = 0.02 if no_wake else 0
        writers = [fork_call(_handshake_writer, name, j, nwaiters, rounds, wait_timeout, "rv%d" % j,
                             pause)
                   for j in range(nwriters)]
        for p in waiters + writers:
            ch.add(p)
        codes = []
        for p in writers:
            codes.append(ch.wait(p, 3000))
        d["stop"] = True
        for p in waiters:
            codes.append(ch.wait(p, 60))
        for p in list(ch.pids):     # the noise
            codes.append(ch.wait(p, 60))
    res = {"codes": codes,
           "waiters": [_plain(d.get("rw%d" % i)) for i in range(nwaiters)],
           "writers": [_plain(d.get("rv%d" % j)) for j in range(nwriters)],
           "noise": sum(d.get("noise_" + ks[0], 0) for ks in noise_keys),
           "check": seg.check().ok, "nwaiters": _heap._nt_stats(seg)["nwaiters"]}
    seg.close()
    return res


def _assert_handshake(res, nwaiters, nwriters, rounds):
    assert all(c == 0 for c in res["codes"]), res
    for w in res["waiters"]:
        assert w == {"lost": 0, "seen": rounds * nwriters}, res
    for w in res["writers"]:
        assert w == {"lost": 0, "rounds": rounds}, res
    assert res["check"] and res["nwaiters"] == 0, res


@pytest.mark.parametrize("noisy", [False, True], ids=["quiet", "shared-buckets"])
def test_no_lost_wakeup_handshake(segment, noisy):
    res = run_driver("test_notify", "drive_handshake", segment.name, 8, 4, 150, 5.0, noisy, False,
                     timeout=300)
    _assert_handshake(res, 8, 4, 150)
    if noisy:
        assert res["noise"] > 0


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("noisy", [False, True], ids=["quiet", "shared-buckets"])
def test_no_lost_wakeup_handshake_100000_rounds(segment, noisy):
    rounds = int(os.environ.get("DSHARED_NOTIFY_ROUNDS", 100_000))
    res = run_driver("test_notify", "drive_handshake", segment.name, 8, 4, rounds, 5.0, noisy, False,
                     timeout=7000)
    _assert_handshake(res, 8, 4, rounds)
    if noisy:
        assert res["noise"] > 0


def test_meta_handshake_fails_without_the_wake(segment):
    """The lost wake-up test can fail: with the writers' FUTEX_WAKE switched
    off, waiters sleep through the changes and time out."""
    res = run_driver("test_notify", "drive_handshake", segment.name, 2, 2, 20, 0.2, False, True,
                     timeout=300)
    lost = sum(w["lost"] for w in res["waiters"] + res["writers"] if w)
    assert lost > 0, res


# =====================================================================================
# waiters killed at random while writers run
# =====================================================================================

def _killable_waiter(name, seed):
    seg = dshared.Segment(name)
    d = seg.col()
    rnd = random.Random(seed)
    lst = d["l"]
    while True:
        kind = rnd.randrange(3)
        if kind == 0:
            d.wait("k%d" % rnd.randrange(8), timeout=rnd.random() * 0.05)
        elif kind == 1:
            lst.wait(timeout=0.02)
        else:
            dshared.wait_any([(d, "k%d" % i) for i in range(rnd.randrange(1, 40))], timeout=0.03)


def _busy_writer(name, wid, n):
    seg = dshared.Segment(name)
    d = seg.col()
    lst = d["l"]
    worst = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        d["k%d" % (i % 8)] = i
        lst.append(i)
        if len(lst) > 100:
            del lst[:50]
        worst = max(worst, time.perf_counter() - t0)
    d["worst%d" % wid] = worst
    seg.close()


def drive_kill_waiters(name, kills, seed):
    rnd = random.Random(seed)
    seg = dshared.Segment(name)
    d = seg.col()
    d["l"] = []
    d.version("k0")
    killed_waiting = 0
    with Children() as ch:
        writers = [ch.add(fork_call(_busy_writer, name, w, 20_000 + kills * 200)) for w in range(2)]
        waiters = [ch.add(fork_call(_killable_waiter, name, rnd.randrange(1 << 30))) for _ in range(6)]
        for _ in range(kills):
            time.sleep(rnd.random() * 0.01)
            victim = rnd.randrange(len(waiters))
            if _heap._nt_stats(seg)["nwaiters"]:
                killed_waiting += 1
            ch.kill(waiters[victim])
            waiters[victim] = ch.add(fork_call(_killable_waiter, name, rnd.randrange(1 << 30)))
        for p in waiters:
            ch.kill(p)
        codes = [ch.wait(p, 600) for p in writers]
    before = _heap._nt_stats(seg)
    report = seg.check()
    after = _heap._nt_stats(seg)
    res = {"codes": codes, "ok": report.ok, "problems": report.problems[:5],
           "before": [before["nwaiters"], before["bucket_waiters"], len(before["records"])],
           "after": [after["nwaiters"], after["bucket_waiters"], len(after["records"])],
           "killed_waiting": killed_waiting,
           "worst_write": max(d["worst0"], d["worst1"])}
    seg.close()
    return res


def _assert_killed(res):
    assert res["codes"] == [0, 0], res
    assert res["ok"], res
    assert res["after"] == [0, 0, 0], res           # exact once the dead are repaired
    assert res["killed_waiting"] > 0, res
    assert res["before"][2] > 0, res                # dead waiters' records were there to repair
    print("worst write %.1f ms" % (res["worst_write"] * 1000))


def test_waiters_killed_at_random(segment):
    _assert_killed(run_driver("test_notify", "drive_kill_waiters", segment.name, 25, test_seed(),
                              timeout=300))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_waiters_killed_at_random_200_times(segment):
    _assert_killed(run_driver("test_notify", "drive_kill_waiters", segment.name, 200, test_seed(),
                              timeout=1100))


def _die_while_waiting(name, step, nkeys):
    """Wait on nkeys keys of the root, SIGKILLing this process at `step` of
    registering (1-3) or, after the wait times out, unregistering (4-6)."""
    seg = dshared.Segment(name)
    d = seg.col()
    _heap._nt_hooks(die_at=step)
    if nkeys == 1:
        d.wait("k0", timeout=0.01)
    else:
        dshared.wait_any([(d, "k%d" % i) for i in range(nkeys)], timeout=0.01)
    _heap._nt_hooks(die_at=0)
    seg.close()


def drive_die_at_every_step(name, recount):
    """A waiter is killed at each step of registering and unregistering a
    wait on one key and on 30 keys; returns, per case, how it ended and the
    wait counts before and after check()."""
    seg = dshared.Segment(name)
    d = seg.col()
    d.version("k0")                         # the wait area exists before the children fork
    _heap._nt_hooks(no_recount=not recount)
    out = []
    for nkeys in (1, 30):
        for step in range(1, 7):
            start = wait_stats(seg)
            code = wait_pid(fork_call(_die_while_waiting, name, step, nkeys), 60)
            before = wait_stats(seg)
            report = seg.check()
            after = wait_stats(seg)
            words = len({bucket(d, "k%d" % i) for i in range(nkeys)})
            out.append({"step": step, "keys": nkeys, "code": code, "ok": report.ok,
                        "held": 1 if step <= 2 else words,       # steps 1-2: at the first word
                        "records_before": len(before["records"]),
                        "after": [after["nwaiters"], after["bucket_waiters"], len(after["records"])],
                        "left": [after["nwaiters"] - start["nwaiters"],
                                 after["bucket_waiters"] - start["bucket_waiters"]]})
    seg.close()
    return out


def test_a_waiter_killed_at_any_step_leaves_exact_counts(segment):
    """Whatever instant a waiter dies at, registering or unregistering, on
    one word or many, check() leaves no record and no count of it: a count
    left too high would cost every later write to its bucket a FUTEX_WAKE
    (and with nwaiters above 0, the check of every bucket it changed)."""
    for case in run_driver("test_notify", "drive_die_at_every_step", segment.name, True, timeout=300):
        assert case["code"] == -signal.SIGKILL, case         # it died at that step
        assert case["records_before"] == case["held"], case  # ... holding its records
        assert case["ok"], case
        assert case["after"] == [0, 0, 0], case


def test_killed_at_any_step_meta_without_the_recount(segment):
    """Meta-test: without the recount, a waiter killed between changing a
    count and marking its record leaves counts too high (steps 2-5; and 6
    on many words, where the first word's count is down and the others are
    not), so the test above depends on the recount."""
    high = set()
    for case in run_driver("test_notify", "drive_die_at_every_step", segment.name, False, timeout=300):
        assert case["code"] == -signal.SIGKILL, case
        assert case["ok"], case             # too high is not a problem to check()
        assert case["after"][2] == 0, case
        if case["left"] != [0, 0]:
            high.add((case["keys"], case["step"]))
    assert high == {(1, 2), (1, 3), (1, 4), (1, 5), (30, 2), (30, 3), (30, 4), (30, 5), (30, 6)}, high


def test_a_stale_repairer_word_delays_waits_and_check_clears_it(segment):
    """The repairer word (a repair's pid while it recounts) left set by a
    repair that died, or damaged: a waiter's registration goes on (after a
    bounded wait while the pid is alive, paid once per process; at once
    when it is dead), wakes still arrive, and check() takes the word back."""
    import mmap as _mmap
    d = segment.col()
    d.version("k")
    at = wait_stats(segment)["area"] + 12
    with open("/dev/shm/" + segment.name, "r+b") as f:
        m = _mmap.mmap(f.fileno(), 0)
    try:
        for holder in (1, _dead_pid()):            # init: alive (and never repairing); then a dead pid
            m[at:at + 4] = holder.to_bytes(4, "little")
            assert wait_stats(segment)["repairer"] == holder
            if holder == 1:
                # a wait on 40 words pays the bound once (the word given up
                # on is remembered), not on each of its 80 steps (8 s)
                gave_up = wait_stats(segment)["settle_gave_up"]
                assert dshared.wait_any([(d, "x%d" % i) for i in range(40)], timeout=0) == []
                assert wait_stats(segment)["settle_gave_up"] - gave_up <= 1
            got = []
            t = threading.Thread(target=lambda: got.append(d.wait("k", timeout=10)))
            t.start()
            deadline = time.monotonic() + 5
            while not wait_stats(segment)["nwaiters"] and time.monotonic() < deadline:
                time.sleep(0.001)
            assert wait_stats(segment)["nwaiters"] == 1
            d["k"] = holder
            t.join(10)
            assert got and got[0] is not None, got
            if holder == 1:
                assert wait_stats(segment)["repairer"] == 1      # a live pid: only check() clears it
            report = segment.check()
            assert report.ok, report
            assert wait_stats(segment)["repairer"] == 0
            assert wait_stats(segment)["nwaiters"] == 0
    finally:
        m.close()


def _dead_pid():
    pid = fork_call(lambda: None)
    assert wait_pid(pid, 30) == 0
    return pid


def _churning_waiter(name, seed):
    seg = dshared.Segment(name)
    d = seg.col()
    rnd = random.Random(seed)
    while d.get("stop") is None:
        if rnd.randrange(2):
            d.wait("k%d" % rnd.randrange(8), timeout=rnd.random() * 0.002)
        else:
            dshared.wait_any([(d, "k%d" % i) for i in range(rnd.randrange(1, 40))], timeout=0.002)
    seg.close()


def drive_check_while_waiters_churn(name, seconds, seed):
    """Six waiters register and unregister without pause, a writer writes,
    and this process runs check() (which recounts) over and over; then the
    waiters stop on their own."""
    rnd = random.Random(seed)
    seg = dshared.Segment(name)
    d = seg.col()
    d.version("k0")
    checks = problems = 0
    with Children() as ch:
        waiters = [ch.add(fork_call(_churning_waiter, name, rnd.randrange(1 << 30))) for _ in range(6)]
        writer = ch.add(fork_call(_busy_writer, name, 0, 1 << 30))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            report = seg.check()
            checks += 1
            problems += len(report.problems)
        d["stop"] = 1
        codes = [ch.wait(p, 60) for p in waiters]
        ch.kill(writer)
    seg.check()
    after = wait_stats(seg)
    seg.close()
    return {"codes": codes, "checks": checks, "problems": problems,
            "after": [after["nwaiters"], after["bucket_waiters"], len(after["records"])]}


def test_check_while_waiters_churn_keeps_counts_exact(segment):
    """check()'s recount runs while live waiters change their counts: no
    count ever falls below its registered waiters (check() would report it),
    and once they have all left, every count is 0 (a recount that overwrote
    a change made during its pass would leave one off)."""
    res = run_driver("test_notify", "drive_check_while_waiters_churn", segment.name, 3.0, test_seed(),
                     timeout=120)
    assert res["codes"] == [0] * 6, res
    assert res["checks"] > 10, res
    assert res["problems"] == 0, res
    assert res["after"] == [0, 0, 0], res


def test_import_does_not_load_asyncio():
    """asyncio is loaded by the first wait_async(), not by `import dshared`
    (it would double the import time of every worker and command)."""
    r = subprocess.run([sys.executable, "-c", "import sys, dshared; print('asyncio' in sys.modules)"],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "False", (r.stdout, r.stderr)
