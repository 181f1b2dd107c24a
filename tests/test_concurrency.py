"""Concurrency: no lost update, no torn read, no deadlock when a process dies.

The suites of RELIABILITY.md that need several processes, numbered as in the
brief: 1 counter, 2 concurrent history, 4 random kills, 5 holder death, 6 fork
and threads, 7 lock-free reads (3, crash points, is test_crash.py). Each
scenario runs in a driver (a fresh single-threaded interpreter in its own
process group, see _proc.py) that forks or spawns the workers; the test
asserts on what the driver reports. Every scenario also asserts that the
events it is about actually happened (contention, interleaving, repairs,
interrupts): a run that observed nothing fails.
"""
import json
import mmap
import multiprocessing as mp
import os
import random
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

import _corrupt
import dshared
from dshared import _heap

from _proc import Children, Popen, exit_code, fork_call, kill_pid, run_driver, test_seed, wait_pid, watchdog

WAIT_LIMIT = 2.0            # the longest a lock wait may take, anywhere

# Library bug found by these suites (see test_readers_racing_table_replacement_never_fault):
def assert_no_segv(codes, what):
    """Every other assertion of a test has passed; no process may have died
    of a signal (a lock-free reader racing a writer must retry, never fault)."""
    assert -signal.SIGSEGV not in codes, "%s died of SIGSEGV" % what


# =====================================================================================
# 1. counter: 4 processes x 25,000 increments, fork and spawn
# =====================================================================================

N_PROCS = 4
N_INCR = 25_000


def _start_line(seg, wid, deadline=60):
    """All workers start together: each checks in, then waits for 'go'.
    (Through the segment itself: a multiprocessing Barrier would put named
    semaphores in /dev/shm, which other software on the machine may clean.
    Each worker overwrites its own existing flag, which is safe even with
    the lock switched off.)"""
    flags = seg.col('start')
    flags['r%d' % wid] = 1
    t_end = time.monotonic() + deadline
    while not flags.get('go'):
        if time.monotonic() > t_end:
            raise TimeoutError("no start signal")
        time.sleep(0.0002)


def _counter_worker(name, target, n, wid, seconds):
    """n increments of the target (fewer if `seconds` runs out first)."""
    watchdog(60)
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    _start_line(seg, wid)
    jumps = 0                           # increments of others seen between two of ours
    last = None
    done = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    for done in range(1, n + 1):
        if target == "root":
            with seg.lock():
                v = d['c']
                d['c'] += 1
        elif target == "busy":
            # the same, with a busy section between the read and the write
            with seg.lock():
                v = d['c']
                x = 0
                for _ in range(40):
                    x += 1
                d['c'] = v + x - 39
        elif target == "nested":
            with seg.lock():
                v = d['x']['y']
                d['x']['y'] += 1
        elif target == "list":
            with seg.lock():
                v = d['l'][0]
                d['l'][0] += 1
        else:
            v = d.incr('i') - 1
        if last is not None and v != last + 1:
            jumps += 1
        last = v
        if not done % 256 and time.monotonic() > deadline:
            break
    t1 = time.monotonic()
    # report under the real lock even in the no-lock meta-test: unlocked
    # writers that allocate at once can corrupt the heap, which is not what
    # that test measures (it measures lost increments)
    _heap.test_hooks(no_lock=False)
    seg.col('results')[str(wid)] = [jumps, t0, t1, done]
    seg.close()


def _drive_counter(name, method, target, n, seconds=600):
    seg = dshared.Segment(name, 16 << 20, create=True)
    try:
        d = seg.col()
        d['c'] = 0
        d['x'] = {'y': 0, 'other': 'o' * 40}
        d['l'] = [0, 'after']
        d['i'] = 0
        start = seg.col('start')
        start.update({'r%d' % w: 0 for w in range(N_PROCS)})
        start['go'] = 0
        ctx = mp.get_context(method)
        procs = [ctx.Process(target=_counter_worker, args=(name, target, n, w, seconds))
                 for w in range(N_PROCS)]
        try:
            for p in procs:
                p.start()
            t_end = time.monotonic() + 60
            while sum(start.values()) < N_PROCS:
                if time.monotonic() > t_end or not all(p.is_alive() for p in procs):
                    raise AssertionError("the workers did not start: %r" % [p.exitcode for p in procs])
                time.sleep(0.001)
            start['go'] = 1
            t0 = time.monotonic()
            for p in procs:
                p.join(70)
            elapsed = time.monotonic() - t0
            codes = [p.exitcode for p in procs]
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(10)
        value = {"root": lambda: d['c'], "busy": lambda: d['c'], "nested": lambda: d['x']['y'], "list": lambda: d['l'][0],
                 "incr": lambda: d['i']}[target]()
        res = seg.col('results').to_python()
        return {"codes": codes, "value": value, "results": res, "elapsed": elapsed,
                "seq": seg.stats()["seq"], "problems": seg.check().problems,
                "rest": [d['x']['other'], d['l'][1]]}
    finally:
        seg.close()
        seg.unlink()


def _overlap(results):
    """Seconds during which at least two workers ran at once."""
    spans = sorted((r[1], r[2]) for r in results.values())
    total = 0.0
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        total += max(0.0, min(a1, b1) - b0)
    return total


# spawned workers (each starts a Python, ~1 s) in the default run on the
# 'busy' and incr() targets; the other three under -m slow (forked ones run
# every target)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("method,target", [
    pytest.param(m, t, marks=[pytest.mark.slow] if m == "spawn" and t in ("root", "nested", "list") else [])
    for m in ("fork", "spawn") for t in ("root", "busy", "nested", "list", "incr")])
def test_counter_is_exact(shm_name, method, target):
    r = run_driver("test_concurrency", "_drive_counter", shm_name, method, target, N_INCR, timeout=110)
    jumps = sum(v[0] for v in r["results"].values())
    overlap = _overlap(r["results"])
    print("%s/%s: %d in %.2f s; workers overlapped %.3f s, %d interleavings"
          % (method, target, r["value"], r["elapsed"], overlap, jumps))
    assert r["codes"] == [0] * N_PROCS
    assert sorted(v[3] for v in r["results"].values()) == [N_INCR] * N_PROCS
    assert r["value"] == N_PROCS * N_INCR
    assert r["problems"] == []
    assert r["rest"] == ['o' * 40, 'after']
    # the workers really contended: their lock-hammering loops ran at the same time
    assert overlap > 0.005, "the workers ran one after the other: nothing was tested"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_meta_counter_without_lock_loses_updates(shm_name, method):
    """DSHARED_TEST_NO_LOCK=1: the 'busy' workload (d['c'] += 1 with a short
    busy section between read and write, so that a race is likely even on 2
    cores) loses updates, so its exact count above is the lock's doing. (Without the lock the write sequence
    itself is bumped racily and may stay odd, which sends every read through
    its 64 retries: the workers stop after a few seconds and the count is
    compared with the increments they did.)"""
    r = run_driver("test_concurrency", "_drive_counter", shm_name, method, "busy", N_INCR, 4.0, timeout=100,
                   env={"DSHARED_TEST_NO_LOCK": "1"})
    assert r["codes"] == [0] * N_PROCS
    done = sum(v[3] for v in r["results"].values())
    print("%d of %d increments lost (seq %d)" % (done - r["value"], done, r["seq"]))
    assert done >= 1000
    assert r["value"] < done, "without the lock no update was lost: the counter test proves nothing"


# =====================================================================================
# 2. concurrent history: 4 writers x 5,000 keys, 2 readers polling
# =====================================================================================

H_WRITERS = 4
H_KEYS = 5_000
H_VERSIONS = 8
H_READERS = 2
_TAG = re.compile(r"k(\d+)/v(\d+)/")


def hist_key(i):
    return "k%05d" % i


def hist_value(i, ver):
    """The value of key i at version ver: its shape changes with the version
    (inline str, str block, list, dict, tuple, int), so that an overwrite
    replaces one kind of block by another."""
    tag = "k%d/v%d/" % (i, ver)
    pad = tag * ((i * 7 + ver * 3) % 11)
    kind = (i + ver) % 6
    if kind == 0:
        return tag + pad
    if kind == 1:
        return [i, ver, pad, {'i': i, 'v': ver}]
    if kind == 2:
        return {'i': i, 'v': ver, 'pad': pad, 'l': list(range(ver % 5))}
    if kind == 3:
        return (i, ver, pad.encode())
    if kind == 4:
        return i * 1000 + ver
    return [tag, [tag, [tag]]]


def hist_parse(v):
    """(i, ver) that value v claims to be."""
    if isinstance(v, str):
        m = _TAG.match(v)
        return (int(m.group(1)), int(m.group(2))) if m else None
    if isinstance(v, int):
        return divmod(v, 1000)
    if isinstance(v, dict):
        return v.get('i'), v.get('v')
    if isinstance(v, (list, tuple)) and v:
        if isinstance(v[0], str):
            return hist_parse(v[0])
        if len(v) > 1:
            return v[0], v[1]
    return None


def _hist_writer(name, wid, seed, go):
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    rng = random.Random(seed * 31 + wid)
    keys = list(range(wid * H_KEYS, (wid + 1) * H_KEYS))
    go.wait(60)
    for ver in range(H_VERSIONS):
        rng.shuffle(keys)
        for i in keys:
            d[hist_key(i)] = hist_value(i, ver)
    d.incr('writers_done')


def _hist_reader(name, rid, seed, go, out_fd):
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    rng = random.Random(seed * 17 + rid)
    seen = {}                           # key -> highest version seen
    bad = []
    stats = {"gets": 0, "stale": 0, "newer": 0, "len_polls": 0, "iter_items": 0, "iter_aborted": 0,
             "first_len": None, "polls_while_writing": 0}
    last_len = 0
    go.wait(60)

    def look(k, v, where):
        if isinstance(v, (dshared.SharedDict, dshared.SharedList)):
            try:
                v = v.to_python()
            except dshared.StaleReferenceError:
                stats["stale"] += 1     # overwritten since: a newer version exists
                return
        iv = hist_parse(v)
        if iv is None or hist_key(iv[0]) != k or iv[1] not in range(H_VERSIONS) or v != hist_value(*iv):
            bad.append("%s: torn value for %s: %r" % (where, k, v))
            return
        if iv[1] < seen.get(k, -1):
            bad.append("%s: %s went back from version %d to %d" % (where, k, seen[k], iv[1]))
        elif iv[1] > seen.get(k, -1) and k in seen:
            stats["newer"] += 1
        seen[k] = max(seen.get(k, -1), iv[1])

    while len(bad) < 20:
        writing = d.get('writers_done', 0) < H_WRITERS
        n = len(d)
        if stats["first_len"] is None:
            stats["first_len"] = n
        if n < last_len:
            bad.append("len went down from %d to %d" % (last_len, n))
        last_len = n
        stats["len_polls"] += 1
        # point reads: keys seen before must still be there, others may appear
        for _ in range(200):
            i = rng.randrange(H_WRITERS * H_KEYS)
            k = hist_key(i)
            v = d.get(k)
            stats["gets"] += 1
            if v is None:
                if k in seen:
                    bad.append("%s vanished after version %d was seen" % (k, seen[k]))
                continue
            look(k, v, "get")
        # a stretch of iteration (it may stop: the dict changes under it)
        try:
            for j, (k, v) in enumerate(d.items()):
                if k == 'writers_done':
                    continue
                look(k, v, "items")
                stats["iter_items"] += 1
                if j > 300:
                    break
        except RuntimeError:
            stats["iter_aborted"] += 1
        # once while writing, and once at the end: the whole dict in one
        # consistent read (slow while writes go on: its optimistic passes
        # fail until it falls back to the lock)
        if (rid == 1 and stats["len_polls"] == 4) or not writing:
            t = time.monotonic()
            snap = d.to_python()
            stats["snapshot_s"] = max(stats.get("snapshot_s", 0), time.monotonic() - t)
            stats["snapshots"] = stats.get("snapshots", 0) + 1
            if writing:
                stats["snapshots_while_writing"] = stats.get("snapshots_while_writing", 0) + 1
            gone = [k for k in seen if k not in snap]
            if gone:
                bad.append("snapshot lacks %d keys seen before, e.g. %s" % (len(gone), gone[0]))
            for k, v in snap.items():
                if k != 'writers_done':
                    look(k, v, "snapshot")
        if writing:
            stats["polls_while_writing"] += 1
        else:
            break
    # the end: every key at its last version
    for i in range(H_WRITERS * H_KEYS):
        k = hist_key(i)
        v = d.get(k)
        if v is None:
            bad.append("%s missing at the end" % k)
        else:
            look(k, v, "final")
            if seen.get(k) != H_VERSIONS - 1:
                bad.append("%s ends at version %r" % (k, seen.get(k)))
        if len(bad) > 20:
            break
    stats["seen"] = len(seen)
    os.write(out_fd, json.dumps({"bad": bad, "stats": stats}).encode())


def _drive_history(name, seed):
    seg = dshared.Segment(name, 64 << 20, create=True)
    ctx = mp.get_context("fork")
    go = ctx.Event()
    try:
        with Children() as ch:
            pipes = []
            for rid in range(H_READERS):
                r, w = os.pipe()
                ch.fork(_hist_reader, name, rid, seed, go, w)
                os.close(w)
                pipes.append(r)
            writers = [ch.fork(_hist_writer, name, wid, seed, go) for wid in range(H_WRITERS)]
            time.sleep(0.2)
            t0 = time.monotonic()
            go.set()
            codes = [ch.wait(p, 120) for p in writers]
            t_write = time.monotonic() - t0
            readers = []
            for r in pipes:
                ready, _, _ = select.select([r], [], [], 120)
                data = b""
                while ready:
                    chunk = os.read(r, 1 << 20)
                    if not chunk:
                        break
                    data += chunk
                os.close(r)
                readers.append(json.loads(data) if data else None)
            for pid in list(ch.pids):
                codes.append(ch.wait(pid, 60))
        return {"codes": codes, "readers": readers, "write_seconds": t_write, "len": len(seg.col()),
                "problems": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.timeout(150)
def test_concurrent_history(shm_name):
    seed = test_seed()
    r = run_driver("test_concurrency", "_drive_history", shm_name, seed, timeout=140)
    assert r["codes"][:H_WRITERS] == [0] * H_WRITERS, r["codes"]
    assert all(c in (0, -signal.SIGSEGV) for c in r["codes"]), r["codes"]
    assert r["problems"] == []
    assert r["len"] == H_WRITERS * H_KEYS + 1
    for rd in r["readers"]:
        if rd is None:
            continue                    # it died: see assert_no_segv below
        st = rd["stats"]
        print("reader: %r" % st)
        assert not rd["bad"], "\n".join(rd["bad"])
        # the reader really raced the writers
        assert st["polls_while_writing"] >= 3
        assert st["seen"] == H_WRITERS * H_KEYS
    readers = [rd for rd in r["readers"] if rd is not None]
    if len(readers) == H_READERS:
        assert readers[0]["stats"]["newer"] >= 100, "the reader saw too few overwrites happen"
        assert readers[1]["stats"].get("snapshots_while_writing") == 1
    print("writes took %.2f s" % r["write_seconds"])
    assert_no_segv(r["codes"], "a reader")
    assert None not in r["readers"]


def _race_writer(name, w, grow):
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    t = d['t']
    i = 0
    while True:
        i += 1
        if grow:
            # one key (one item) at a time: the table (the list's items)
            # grows in place where the room above it is free, else into a
            # new block
            lst = d['L%d' % w]          # one writer per list: item n is n
            for j in range(len(t), i % 300 + 5):
                t['k%d' % j] = j
                lst.append(len(lst))
            d['ext%d' % w] = _heap.extend_counters()
        else:
            t.update({'k%d' % j: j for j in range(i % 40 + 5)})    # > 4 pairs: a new table, the old one freed
        d['s%d' % w] = 'x' * ((i * 37) % 3000)                 # str blocks reuse the freed tables
        if i % 7 == 0:
            t.clear()
            if grow:
                lst.clear()


def _race_reader(name, r):
    seg = dshared.Segment(name, create=False)
    t = seg.col()['t']
    lists = [seg.col()['L0'], seg.col()['L1']]
    while True:
        if r % 3 == 0:
            for j in range(200):
                v = t.get('k%d' % j)
                if v is not None and v != j:
                    os._exit(3)                 # a torn value
            for lst in lists:
                items = lst.to_python()
                if items != list(range(len(items))):
                    os._exit(3)                 # appends: item n is n
        elif r % 3 == 1:
            try:
                for k, v in t.items():
                    if v != int(k[1:]):
                        os._exit(3)
            except RuntimeError:
                pass                            # changed during iteration: dict's rule
        else:
            for k, v in t.to_python().items():
                if v != int(k[1:]):
                    os._exit(3)


def _drive_table_race(name, seconds, grow=False):
    seg = dshared.Segment(name, 64 << 20, create=True)
    seg.col()['t'] = {}
    seg.col()['L0'] = []
    seg.col()['L1'] = []
    dead = {}
    try:
        with Children() as ch:
            writers = [ch.fork(_race_writer, name, w, grow) for w in range(2)]
            readers = [ch.fork(_race_reader, name, r) for r in range(8)]
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds and not dead:
                time.sleep(0.02)
                for i, pid in enumerate(readers + writers):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        ch.pids.discard(pid)
                        dead[("reader %d" % i) if i < 8 else "writer"] = exit_code(status)
            alive_for = time.monotonic() - t0
        root = seg.col()
        return {"dead": dead, "seconds": alive_for, "problems": seg.check().problems,
                "extends": sum(root.get('ext%d' % w, 0) for w in range(2))}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seconds", [1.5, pytest.param(6.0, marks=pytest.mark.slow)])
def test_readers_racing_table_replacement_never_fault(shm_name, seconds):
    """Minimal reproduction. Two writers keep replacing a dict's table
    (update with > 4 pairs builds a new one; clear drops it) and reusing the
    freed blocks for strings; eight lock-free readers get, iterate and copy
    the dict. A racing reader may see stale bytes and retry, but must never
    fault nor return a value that was never stored."""
    r = run_driver("test_concurrency", "_drive_table_race", shm_name, seconds, timeout=50)
    print(r)
    assert r["dead"] == {}, "after %.2f s: %r" % (r["seconds"], r["dead"])
    assert r["problems"] == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seconds", [1.5, pytest.param(6.0, marks=pytest.mark.slow)])
def test_readers_racing_in_place_table_growth_never_fault(shm_name, seconds):
    """As above, but the writers grow the dict one key at a time, so that its
    table mostly grows in place (its block extended over the free room above
    it) while eight lock-free readers get, iterate and copy it."""
    r = run_driver("test_concurrency", "_drive_table_race", shm_name, seconds, True, timeout=50)
    print(r)
    assert r["dead"] == {}, "after %.2f s: %r" % (r["seconds"], r["dead"])
    assert r["problems"] == []
    assert r["extends"] > 0, "no table grew in place: the race this test is for did not happen"


# =====================================================================================
# 4. random kills: 4 workers with mixed operations, 200 kill -9
# =====================================================================================

RK_WORKERS = 4
RK_KILLS = 200
RK_CRASHES = 60                 # deaths at a random crash point (inside a write), besides the kills
RK_CRASH_SPAN = 60              # ... among the next this many crash points
RK_KEYS = 12
RK_LISTS = 3
RK_NESTED = 6
ABSENT = "<absent>"


def canon(v):
    """A hashable form of a plain value that keeps types and order."""
    if isinstance(v, dict):
        return ("d", tuple((canon(k), canon(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("l", tuple(canon(x) for x in v))
    if isinstance(v, tuple):
        return ("t", tuple(canon(x) for x in v))
    return (type(v).__name__, v)


def rk_value(s):
    kind = s % 6
    if kind == 0:
        return s
    if kind == 1:
        return ("v%d-" % s) * (s % 7 + 1)
    if kind == 2:
        return [s, "x" * (s % 50)]
    if kind == 3:
        return {'s': s, 'in': [s, ('t', s)]}
    if kind == 4:
        return b"b%d" % s * (s % 5)
    return {'a': [s, {'b': 'x' * (s % 100)}], 'c': {'d': (s, 'e' * (s % 30))}}


def rk_keys(wid):
    p = "w%d:" % wid
    return ([p + "k%d" % j for j in range(RK_KEYS)], [p + "L%d" % j for j in range(RK_LISTS)],
            p + "N", p + "C")


def rk_cycle(s):
    c = [s, 'cycle %d' % s]
    c.append(c)
    return c


def rk_uncycle(v):
    """A cycle made by rk_cycle(s) as read back: ("cycle", s); anything else as is."""
    if isinstance(v, list) and len(v) == 3 and v[2] is v:
        return ("cycle", v[0])
    return v


def _rk_worker(name, wid, inc, seed, logpath):
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    rng = random.Random(seed * 1000003 + wid * 10007 + inc)
    crash_rng = random.Random(rng.random())
    # SIGUSR1: die (exit CRASH_EXIT_CODE) at a random one of the next crash points
    signal.signal(signal.SIGUSR1, lambda *_: _heap.test_hooks(crash_at=crash_rng.randint(1, RK_CRASH_SPAN)))
    keys, lists, nkey, ckey = rk_keys(wid)
    fd = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    s = inc << 32                       # the order of intents: incarnation, then count
    while not d.get('stop'):
        t0 = time.monotonic()
        acks = []
        collect = False
        # the lock() block is crash-atomic: what it wrote is acknowledged once
        # it has ended, under the lock still (acquire), so that nobody sees
        # the block committed and not acknowledged by a live worker
        seg.acquire()
        with seg.lock():
            os.write(fd, b"W %.6f\n" % (time.monotonic() - t0))
            for _ in range(rng.randint(1, 4)):
                s += 1
                r = rng.random()
                if r < 0.25:
                    op = ["set", rng.choice(keys), s]
                elif r < 0.35:
                    op = ["del", rng.choice(keys)]
                elif r < 0.55:
                    L = rng.choice(lists)
                    op = ["reset" if len(d[L]) > 40 else rng.choice(["append", "append", "extend"]), L, s]
                elif r < 0.65:
                    op = ["update", rng.sample(keys, 6), s]
                elif r < 0.8:
                    op = ["nset", "n%d" % rng.randrange(RK_NESTED), s]
                elif r < 0.85:
                    op = ["ndel", "n%d" % rng.randrange(RK_NESTED)]
                elif r < 0.9:
                    op = ["cycle", rng.choice(keys), s]      # the value it replaces may be a cycle: garbage
                elif r < 0.91:
                    op = ["collect"]
                else:
                    op = ["incr", ckey]
                os.write(fd, ("I %d %s\n" % (s, json.dumps(op))).encode())
                kind = op[0]
                if kind == "set":
                    d[op[1]] = rk_value(s)
                elif kind == "del":
                    d.pop(op[1], None)
                elif kind == "append":
                    d[op[1]].append(s)
                elif kind == "extend":
                    d[op[1]].extend([s, str(s)])
                elif kind == "reset":
                    d[op[1]] = [s]
                elif kind == "update":
                    d.update({k: rk_value(s + j) for j, k in enumerate(op[1])})
                elif kind == "nset":
                    d[nkey]['sub'][op[1]] = rk_value(s)
                elif kind == "ndel":
                    d[nkey]['sub'].pop(op[1], None)
                elif kind == "cycle":
                    d[op[1]] = rk_cycle(s)
                elif kind == "collect":
                    collect = True          # not inside a block that has written: after it
                else:
                    d.incr(op[1])
                acks.append(b"A %d\n" % s)
        if collect:
            seg.collect()
        if acks:
            os.write(fd, b"".join(acks))
        seg.release()


def _rk_apply(op, s, key, v):
    """The value of `key` after `op` (intent number s) if it was v before."""
    kind = op[0]
    if kind in ("set", "nset"):
        return rk_value(s)
    if kind == "cycle":
        return ("cycle", s)
    if kind in ("del", "ndel"):
        return ABSENT
    if kind == "update":
        return rk_value(s + op[1].index(key))
    if kind == "reset":
        return [s]
    if kind == "incr":
        return v + 1
    if not isinstance(v, list):
        return None                     # impossible: the lists always exist
    return v + ([s] if kind == "append" else [s, str(s)])


class _RkModel:
    """One worker's keys: the values each may hold, from its logs (intent,
    then ack, of every operation), read as they grow. An acked intent fixes
    the value; an unacked one of a dead incarnation (its worker was killed)
    may or may not have happened. After each check of the segment the
    possibilities are narrowed to what it holds, so that every later check
    is exact."""

    def __init__(self, wid):
        self.wid = wid
        keys, lists, nkey, ckey = rk_keys(wid)
        self.nkey = nkey
        self.poss = {k: {canon(ABSENT): ABSENT} for k in keys}
        self.poss.update({k: {canon([]): []} for k in lists})
        self.poss.update({nkey + "/" + "n%d" % j: {canon(ABSENT): ABSENT} for j in range(RK_NESTED)})
        self.poss[ckey] = {canon(0): 0}
        self.counts = {"intents": 0, "acked": 0, "unacked": 0, "collects": 0}
        self.max_wait = 0.0
        self.logs = []              # [path, bytes read, pending intent, worker dead]

    def add_log(self, path):
        if self.logs:
            self.logs[-1][3] = True      # the incarnation before is dead
        self.logs.append([path, 0, None, False])

    def dead(self):
        if self.logs:
            self.logs[-1][3] = True

    def read(self):
        """Apply what the logs gained since the last read: complete lines
        only (a line cut by the kill is ignored); an intent left without
        its ack counts as unacked once its worker is dead."""
        for log in self.logs:
            path, done, pending, dead = log
            pending = list(pending or [])   # intents of the block in flight, oldest first
            try:
                with open(path, "rb") as f:
                    f.seek(done)
                    text = f.read()
            except FileNotFoundError:       # killed before it opened its log
                text = b""
            text = text[:text.rfind(b"\n") + 1]
            log[1] = done + len(text)
            for ln in text.decode().split("\n")[:-1]:
                tag, _, rest = ln.partition(" ")
                if tag == "W":
                    self.max_wait = max(self.max_wait, float(rest))
                elif tag == "I":
                    s, _, op = rest.partition(" ")
                    pending.append((int(s), json.loads(op)))
                elif tag == "A":
                    # a lock() block is crash-atomic: its acks come once it has ended
                    assert pending and int(rest) == pending[0][0], "log out of order: %r" % ln
                    self._apply(pending.pop(0), True)
            if pending and dead:
                for intent in pending:
                    self._apply(intent, False)
                pending = []
            log[2] = pending

    def _apply(self, intent, acked):
        s, op = intent
        self.counts["intents"] += 1
        self.counts["acked" if acked else "unacked"] += 1
        if op[0] == "collect":
            self.counts["collects"] += 1
            return
        if op[0] == "update":
            targets = op[1]
        elif op[0] in ("nset", "ndel"):
            targets = [self.nkey + "/" + op[1]]
        else:
            targets = [op[1]]
        for k in targets:
            new = {}
            for v in self.poss[k].values():
                nv = _rk_apply(op, s, k, v)
                if nv is not None:
                    new[canon(nv)] = nv
            if acked:
                self.poss[k] = new
            else:
                self.poss[k].update(new)

    def match(self, snap):
        """What of `snap` (the root, as to_python() gives it) the model does
        not allow; then the model holds what the snapshot holds."""
        nkey = self.nkey
        wrong = []
        for k, allowed in self.poss.items():
            if k.startswith(nkey + "/"):
                actual = snap[nkey]['sub'].get(k[len(nkey) + 1:], ABSENT)
            else:
                actual = snap.get(k, ABSENT)
            actual = rk_uncycle(actual)
            if canon(actual) not in allowed:
                wrong.append("%s = %r, expected one of %r" % (k, actual, list(allowed.values())[:4]))
            self.poss[k] = {canon(actual): actual}
        stray = [k for k in snap if k.startswith("w%d:" % self.wid) and k not in self.poss and k != nkey]
        stray += ["%s/%s" % (nkey, j) for j in snap[nkey]['sub'] if "%s/%s" % (nkey, j) not in self.poss]
        return wrong + ["a key nobody wrote: %r" % k for k in stray]


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "?"


OWNER_DIED = 0x40000000         # glibc's robust mutex word: the owner died holding it


def _lock_word(fd):
    """The futex word of the segment's mutex (its first int on glibc): the
    owner's TID, OWNER_DIED once the kernel found its owner dead."""
    return struct.unpack("<I", os.pread(fd, 4, _corrupt.H_MUTEX))[0]


def _stop(pid):
    """SIGSTOP a worker and wait until it is stopped; its exit code if it
    ended instead, else None."""
    os.kill(pid, signal.SIGSTOP)
    _, status = os.waitpid(pid, os.WUNTRACED)
    return None if os.WIFSTOPPED(status) else exit_code(status)


def _header_word(mm, at):
    return struct.unpack_from("<Q", mm, at)[0]


def _rk_verify(seg, d, models, mm):
    """Under the lock, right after it was taken (and the repair, if the
    holder died, ran), before anything else writes: the journal is empty
    (undone), check() is clean and every worker's keys are what the model
    allows. Returns the problems."""
    bad = ["journal count %d" % _header_word(mm, _corrupt.H_JCOUNT)] if _header_word(mm, _corrupt.H_JCOUNT) else []
    bad += ["check(): %s" % p for p in seg.check().problems]
    try:
        snap = d.to_python()
    except dshared.CorruptSegmentError as e:     # what a heap left unrepaired gives
        return bad + ["to_python(): %s" % e]
    for m in models.values():
        m.read()
        bad += ["worker %d: %s" % (m.wid, w) for w in m.match(snap)]
    return bad


def _drive_random_kills(name, seed, logdir, kills, crashes):
    """4 workers write under the lock and log intent and ack of each
    operation; `kills` times, a random one (preferably one on a CPU: more
    kills hit a holder) is killed while the others are stopped. Besides
    the kills, `crashes` times a worker dies at a random crash point of its
    next writes (SIGUSR1 makes it arm DSHARED_TEST_CRASH_AT's hook with a
    random count): inside a write, the journal of its publication included,
    which a SIGKILL at a random time almost never hits (a few microseconds),
    and where only the repair's journal undo makes the write whole or
    absent. After each death the driver takes the lock itself: if the dead
    worker held it, the driver is the one that repairs, and it checks the
    segment and the model at once, before any other process can write (a
    next writer would tidy a journal that a broken repair left behind)."""
    seg = dshared.Segment(name, 64 << 20, create=True)
    rng = random.Random(seed)
    d = seg.col()
    for wid in range(RK_WORKERS):
        keys, lists, nkey, ckey = rk_keys(wid)
        for L in lists:
            d[L] = []
        d[nkey] = {'sub': {}}
        d[ckey] = 0
    models = {wid: _RkModel(wid) for wid in range(RK_WORKERS)}
    incarnations = {wid: 0 for wid in range(RK_WORKERS)}
    errors = []
    died = []
    after_repair = []           # [death number, problems, at a crash point] of each check right after a repair
    bad = []                    # what any check found
    counted = []                # repairs counted by each repair (stats()['repairs'] after - before)
    verified = 0
    crashed = 0                 # deaths at a crash point
    fd = os.open("/dev/shm/" + name, os.O_RDONLY)
    mm = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
    try:
        with Children() as ch:
            running = {}

            def start(wid):
                path = os.path.join(logdir, "w%d-%d.log" % (wid, incarnations[wid]))
                incarnations[wid] += 1
                models[wid].add_log(path)
                running[wid] = ch.fork(_rk_worker, name, wid, incarnations[wid] - 1, seed, path)

            for wid in range(RK_WORKERS):
                start(wid)
            t0 = time.monotonic()
            k = n_kill = 0
            while n_kill < kills or crashed < crashes:
                k += 1
                time.sleep(rng.uniform(0.003, 0.04))
                busy = [w for w in range(RK_WORKERS) if _proc_state(running[w]) == "R"]
                wid = rng.choice(busy or list(range(RK_WORKERS)))
                others = [w for w in range(RK_WORKERS) if w != wid]
                for w in others:
                    code = _stop(running[w])
                    if code is not None:
                        died.append(code)
                        errors.append("worker %d ended by itself (exit %r)" % (w, code))
                if errors:
                    break
                holder = _lock_word(fd) & 0x3FFFFFFF
                pid = running.pop(wid)
                crash = crashed < crashes and (n_kill >= kills or rng.random() < (crashes - crashed) / (
                    kills + crashes - n_kill - crashed))
                # (a worker told to crash must get the lock: not while a stopped one holds it)
                if crash and holder not in [running[w] for w in others]:
                    os.kill(pid, signal.SIGUSR1)            # die at a crash point soon
                    try:
                        code = ch.wait(pid, 10)
                    except TimeoutError:
                        code = ch.kill(pid)
                    models[wid].dead()
                    if code != _heap.CRASH_EXIT_CODE:
                        died.append(code)
                        errors.append("worker %d, told to crash, ended with %r" % (wid, code))
                        break
                    crashed += 1
                else:
                    crash = False
                    n_kill += 1
                    code = ch.kill(pid)
                    models[wid].dead()
                    if code != -signal.SIGKILL:
                        died.append(code)
                        errors.append("worker %d ended by itself (exit %r) before its kill" % (wid, code))
                        break
                held = bool(_lock_word(fd) & OWNER_DIED)
                r0 = seg.stats()["repairs"]
                try:
                    seg.acquire(0)          # the repair runs here if the killed worker held the lock
                except dshared.LockTimeout:
                    assert not held
                else:                       # (a stopped worker holds it: nothing to repair, nothing to see)
                    try:
                        found = _rk_verify(seg, d, models, mm)
                        verified += 1
                        if held:
                            counted.append(seg.stats()["repairs"] - r0)
                            after_repair.append([k, found, crash])
                        bad += ["after death %d (%s, %s): %s" % (k, "at a crash point" if crash else "SIGKILL",
                                                                 "a holder" if held else "not the holder", p)
                                for p in found]
                    finally:
                        seg.release()
                if bad:
                    break                   # the segment is damaged: what follows would not tell more
                for w in others:
                    os.kill(running[w], signal.SIGCONT)
                start(wid)
            t_kills = time.monotonic() - t0
            if not bad and not errors:      # else the stopped workers are killed on leaving `with`
                for w in running:
                    os.kill(running[w], signal.SIGCONT)
                d['stop'] = True
                for wid, pid in running.items():
                    code = ch.wait(pid, 30)
                    if code != 0:
                        died.append(code)
                        if code != -signal.SIGSEGV:
                            errors.append("worker %d exit %r at the end" % (wid, code))
        if not bad and not errors:
            for m in models.values():
                m.dead()
            with seg.lock():
                seg.collect()
                bad += ["at the end: %s" % p for p in _rk_verify(seg, d, models, mm)]
        stats = seg.stats()
    finally:
        mm.close()
        os.close(fd)
        seg.close()
        seg.unlink()
    report = {"errors": errors, "died": died, "bad": bad[:20], "after_repair": after_repair, "counted": counted,
              "verified": verified, "repairs": stats["repairs"], "kill_seconds": t_kills, "kills": n_kill,
              "crashed": crashed,
              "workers": {}}
    for wid, m in models.items():
        report["workers"][wid] = {"counts": m.counts, "max_wait": m.max_wait, "incarnations": incarnations[wid]}
    return report


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kills,crashes", [(RK_KILLS // 4, RK_CRASHES // 3),
                                           pytest.param(RK_KILLS, RK_CRASHES, marks=pytest.mark.slow)])
def test_random_kills(shm_name, tmp_path, kills, crashes):
    """The default run: 50 kills and 20 deaths at a crash point; -m slow:
    200 and 60. The counts each worker must reach scale with them."""
    seed = test_seed()
    r = run_driver("test_concurrency", "_drive_random_kills", shm_name, seed, str(tmp_path), kills,
                   crashes, timeout=140)
    print("%d kills and %d deaths at a crash point in %.1f s, %d repairs, %d checks of the segment and the model "
          "under the lock right after a death" % (r["kills"], r["crashed"], r["kill_seconds"], r["repairs"],
                                                  r["verified"]))
    for wid, w in sorted(r["workers"].items()):
        print("worker %s: %r, %d incarnations, longest lock wait %.3f s"
              % (wid, w["counts"], w["incarnations"], w["max_wait"]))
    assert not r["errors"], r["errors"]
    assert not r["bad"], "\n".join(r["bad"])
    assert r["kills"] >= kills and r["crashed"] == crashes
    for wid, w in sorted(r["workers"].items()):
        assert w["max_wait"] <= WAIT_LIMIT, "worker %s waited %.2f s for the lock" % (wid, w["max_wait"])
        assert w["counts"]["acked"] >= kills // 2
        assert w["incarnations"] >= (kills + crashes) // 26
    assert sum(w["counts"]["unacked"] for w in r["workers"].values()) >= kills // 40, "no kill hit an operation"
    # each holder killed was repaired once, by the driver, which checked
    # the segment and the model before anything else wrote
    assert r["counted"] == [1] * len(r["after_repair"]), r["counted"]
    assert r["repairs"] == len(r["after_repair"])
    assert sum(1 for _, _, crash in r["after_repair"] if crash) == crashes      # each one a holder's death
    assert sum(1 for _, _, crash in r["after_repair"] if not crash) >= kills * 3 // 20, \
        "the kills rarely hit a lock holder"
    assert_no_segv(r["died"], "a worker (in its lock-free d.get('stop'))")


@pytest.mark.timeout(150)
def test_meta_random_kills_without_repair_fail(shm_name, tmp_path):
    """DSHARED_TEST_NO_REPAIR in the driver, the process that finds each
    dead holder (its mutex is made consistent, nothing is repaired): the
    check right after a holder's death must find the damage."""
    seed = test_seed()
    r = run_driver("test_concurrency", "_drive_random_kills", shm_name, seed, str(tmp_path), RK_KILLS,
                   RK_CRASHES, timeout=140, env={"DSHARED_TEST_NO_REPAIR": "1"})
    print("%d kills, %d deaths at a crash point, %d holders dead; found: %s"
          % (r["kills"], r["crashed"], len(r["after_repair"]), r["bad"][:5]))
    assert not r["errors"], r["errors"]
    assert r["repairs"] == 0, "a repair ran although the hook switched it off"
    caught = [k for k, found, _ in r["after_repair"] if found]
    assert caught, "without repair every holder's death still looked sound"


# =====================================================================================
# 5. holder death: a holder killed while 8 waiters block; a stopped holder
# =====================================================================================

HD_WAITERS = 8
HD_ROUNDS = 100


def _send(fd, obj):
    os.write(fd, (json.dumps(obj) + "\n").encode())


class _Lines:
    """Newline-separated JSON messages from a pipe, with a deadline."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""

    def get(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError("no message within %s s" % timeout)
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("the other end closed its pipe")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)


def _hd_waiter(name, cmd_fd, out_fd):
    """Wait for a command, then block on the lock; report the times."""
    seg = dshared.Segment(name, create=False)
    hfd = os.open("/dev/shm/" + name, os.O_RDONLY)         # for the journal count
    cmds = _Lines(cmd_fd)
    while True:
        cmd = cmds.get(600)
        if cmd == "quit":
            return
        timeout = cmd
        t0 = time.monotonic()
        _send(out_fd, ["waiting", t0])
        try:
            seg.acquire(timeout)
        except dshared.LockTimeout:
            _send(out_fd, ["timeout", t0, time.monotonic()])
            continue
        t1 = time.monotonic()
        # before any write of its own (which would tidy what a broken repair
        # left): the segment checks clean and a holder's big write is whole
        problems = seg.check().problems[:10]
        jcount = struct.unpack("<Q", os.pread(hfd, 8, _corrupt.H_JCOUNT))[0]
        if jcount:
            problems.append("journal count %d" % jcount)
        whole = _hd_whole(seg.col())
        seg.col()['last_waiter'] = os.getpid()      # a write under the lock
        seg.release()
        _send(out_fd, ["got", t0, t1, problems, whole])


def _hd_big(rnd, i):
    """The i-th value a holder of round rnd writes while it is killed: big
    enough (nested lists and dicts, 200 items) that the kill lands inside
    the write most of the time."""
    return {'r': rnd, 'i': i, 'items': [[i, 'x' * (j % 40), {'j': j}] for j in range(200)], 'last': [rnd, i]}


def _hd_whole(d):
    """True if d['w'] is absent or one of the values _hd_big makes, whole."""
    try:
        v = d.get('w')
        if v is None:
            return True
        v = v.to_python()
        return v == _hd_big(v['r'], v['i'])
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)


def _hd_holder(name, rnd, out_fd, cmd_fd, mid_write=False, crash_at=0):
    """Take the lock, write under it, report, then wait (to be killed, or
    told to finish); with mid_write, write big values until killed, so that
    the kill lands in the middle of a write; with crash_at, wait for a
    command, then write them until the crash_at-th crash point (inside a
    write, its publication included) ends the process."""
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    # the plain lock (acquire), not a lock() block, which a death rolls back whole
    seg.acquire()
    try:
        d['round'] = rnd                    # committed before the death: must survive
        d['rounds'].append(rnd)
        _send(out_fd, ["locked", time.monotonic()])
        if crash_at:
            _Lines(cmd_fd).get(600)
            _heap.test_hooks(crash_at=crash_at)
        if mid_write:
            for i in range(10 ** 9):
                d['w'] = _hd_big(rnd, i)
        if cmd_fd is None:
            time.sleep(600)
        _Lines(cmd_fd).get(600)            # blocks here; SIGSTOP may freeze it here
        d['finished'] = rnd                 # the rest of the critical section
        t_end = time.monotonic()            # its last moment
    finally:
        seg.release()
    _send(out_fd, ["released", t_end])


def _start_waiters(ch, name):
    waiters = []
    for _ in range(HD_WAITERS):
        c_r, c_w = os.pipe()
        o_r, o_w = os.pipe()
        pid = ch.fork(_hd_waiter, name, c_r, o_w)
        os.close(c_r)
        os.close(o_w)
        waiters.append((pid, c_w, _Lines(o_r)))
    return waiters


HD_MODES = ["committed", "in a write", "committed", "at a crash point"]


def _drive_holder_death(name, rounds, seed):
    """`rounds` holders die while 8 waiters block: by SIGKILL after their
    write committed (half the rounds), by SIGKILL in the middle of big
    writes, or at a random crash point of a big write (_heap.test_hooks)."""
    rng = random.Random(seed)
    seg = dshared.Segment(name, 16 << 20, create=True)
    d = seg.col()
    d['rounds'] = []
    out = {"rounds": [], "errors": []}
    try:
        with Children() as ch:
            waiters = _start_waiters(ch, name)
            for rnd in range(rounds):
                r0 = seg.stats()['repairs']
                mode = HD_MODES[rnd % len(HD_MODES)]
                h_r, h_w = os.pipe()
                g_r, g_w = os.pipe()
                holder = ch.fork(_hd_holder, name, rnd, h_w, g_r, mode != "committed",
                                 rng.randint(1, 40) if mode == "at a crash point" else 0)
                os.close(h_w)
                os.close(g_r)
                hl = _Lines(h_r)
                hl.get(30)                           # it holds the lock
                for _, c_w, _ in waiters:
                    _send(c_w, None)                 # block without timeout
                starts = [ol.get(30)[1] for _, _, ol in waiters]
                time.sleep(0.015)                    # let them reach the futex
                t_kill = time.monotonic()
                if mode == "at a crash point":
                    _send(g_w, "go")
                    code = ch.wait(holder, 30)
                else:
                    code = ch.kill(holder)
                os.close(h_r)
                os.close(g_w)
                got = []
                for _, _, ol in waiters:
                    try:
                        got.append(ol.get(30))
                    except (TimeoutError, EOFError) as e:
                        got.append(["lost", repr(e)])
                ends = [g[2] for g in got if g[0] == "got"]
                first = min((g for g in got if g[0] == "got"), key=lambda g: g[2], default=None)
                info = {"code": code, "acquired": len(ends), "mode": mode,
                        "first_problems": first[3] if first else None, "first_whole": first[4] if first else None,
                        "all_problems": [p for g in got if g[0] == "got" for p in g[3]],
                        "all_whole": all(g[4] is True for g in got if g[0] == "got"),
                        "latest": max(ends) - t_kill if ends else None,
                        "earliest": min(ends) - t_kill if ends else None,
                        "started_before_kill": all(t < t_kill for t in starts),
                        "repairs": seg.stats()['repairs'] - r0}
                out["rounds"].append(info)
                if info["acquired"] != HD_WAITERS:
                    out["errors"].append("round %d: %r" % (rnd, got))
                    break
                if info["all_problems"] or not info["all_whole"]:
                    out["damaged"] = rnd            # what follows would not tell more
                    break
                info["round_kept"] = d['round'] == rnd and d['rounds'][-1] == rnd
            for pid, c_w, _ in waiters:
                _send(c_w, "quit")
                ch.wait(pid, 30)
        if "damaged" not in out:
            out["problems"] = seg.check().problems
            out["rounds_list"] = len(d['rounds'])
    finally:
        seg.close()
        seg.unlink()
    return out


@pytest.mark.timeout(150)
@pytest.mark.parametrize("n_rounds", [HD_ROUNDS // 4, pytest.param(HD_ROUNDS, marks=pytest.mark.slow)])
def test_holder_killed_while_8_waiters_block(shm_name, n_rounds):
    """Each waiter, once it has the lock and before it writes, runs check()
    and looks at the value the holder was writing: the first of them does
    so right after the repair. The default run: 25 holders (each way of
    dying 6 times or more); -m slow: 100."""
    seed = test_seed()
    r = run_driver("test_concurrency", "_drive_holder_death", shm_name, n_rounds, seed, timeout=140)
    assert not r["errors"], r["errors"]
    rounds = r["rounds"]
    for i, x in enumerate(rounds):
        assert not x["all_problems"], "round %d (died %s): check() after the repair: %r" % (
            i, x["mode"], x["all_problems"][:5])
        assert x["all_whole"], "round %d: the value written when the holder died is not whole: %r" % (i, x)
    assert len(rounds) == n_rounds
    latest = max(x["latest"] for x in rounds)
    print("%d holders killed; all %d waiters had the lock at most %.3f s after each kill"
          % (len(rounds), HD_WAITERS, latest))
    for i, x in enumerate(rounds):
        assert x["code"] == (_heap.CRASH_EXIT_CODE if x["mode"] == "at a crash point" else -signal.SIGKILL), (i, x)
        assert x["acquired"] == HD_WAITERS, (i, x)
        assert x["started_before_kill"], (i, x)
        assert x["earliest"] > 0, "round %d: a waiter got the lock while the holder lived: %r" % (i, x)
        assert x["latest"] < WAIT_LIMIT, "round %d: %r" % (i, x)
        assert x["repairs"] == 1, "round %d: %r" % (i, x)
        assert x["round_kept"], "round %d: a write committed before the death was lost" % i
    assert r["rounds_list"] == n_rounds
    assert r["problems"] == []


@pytest.mark.timeout(150)
def test_meta_holder_killed_in_a_write_without_repair_fails(shm_name):
    """DSHARED_TEST_NO_REPAIR in the waiters (the mutex is made consistent,
    nothing is repaired): the first waiter's check after a holder died in
    the middle of a write finds the damage."""
    r = run_driver("test_concurrency", "_drive_holder_death", shm_name, 20, test_seed(), timeout=140,
                   env={"DSHARED_TEST_NO_REPAIR": "1"})
    rounds = r["rounds"]
    print("damaged in round %s: %r" % (r.get("damaged"), rounds[-1]))
    assert all(x["repairs"] == 0 for x in rounds), "a repair ran although the hook switched it off"
    assert r.get("damaged") is not None, "without repair every holder's death still looked sound"
    assert rounds[-1]["mode"] != "committed"
    assert rounds[-1]["first_problems"] or rounds[-1]["first_whole"] is not True, rounds[-1]


def _drive_stopped_holder(name):
    seg = dshared.Segment(name, 16 << 20, create=True)
    d = seg.col()
    d['rounds'] = []
    out = {}
    try:
        with Children() as ch:
            waiters = _start_waiters(ch, name)
            h_r, h_w = os.pipe()
            c_r, c_w = os.pipe()
            holder = ch.fork(_hd_holder, name, 1, h_w, c_r)
            os.close(h_w)
            os.close(c_r)
            hl = _Lines(h_r)
            hl.get(30)
            os.kill(holder, signal.SIGSTOP)
            t_stop = time.monotonic()
            # six waiters with a timeout, two without
            for i, (_, cw, _) in enumerate(waiters):
                _send(cw, 0.5 if i < 6 else None)
            got = [ol.get(30) for _, _, ol in waiters]          # "waiting"
            timed = [ol.get(30) for _, _, ol in waiters[:6]]    # each one's LockTimeout
            out["timeouts"] = [[g[0], g[2] - g[1]] for g in timed]
            time.sleep(2.5)                                     # stopped for 3 s in all
            out["blocked_still"] = [ready for ready in
                                    (bool(select.select([ol.fd], [], [], 0)[0]) for _, _, ol in waiters[6:])]
            try:
                seg.acquire(0.2)
                out["driver_got_lock"] = True
                seg.release()
            except dshared.LockTimeout:
                out["driver_got_lock"] = False
            out["stopped_for"] = time.monotonic() - t_stop
            os.kill(holder, signal.SIGCONT)
            t_cont = time.monotonic()
            _send(c_w, "finish")
            msg = hl.get(30)
            out["holder_released_after_cont"] = msg[0] == "released" and msg[1] >= t_cont
            out["holder_exit"] = ch.wait(holder, 30)
            late = [ol.get(30) for _, _, ol in waiters[6:]]
            out["late"] = [[g[0], g[2] - t_cont] for g in late]
            out["late_after_release"] = all(g[2] >= msg[1] for g in late)
            for pid, cw, _ in waiters:
                _send(cw, "quit")
                ch.wait(pid, 30)
            os.close(c_w)
            os.close(h_r)
        out["finished"] = d.get('finished')
        out["repairs"] = seg.stats()['repairs']
        out["problems"] = seg.check().problems
    finally:
        seg.close()
        seg.unlink()
    return out


@pytest.mark.timeout(60)
def test_stopped_holder_is_never_robbed(shm_name):
    r = run_driver("test_concurrency", "_drive_stopped_holder", shm_name, timeout=50)
    print(r)
    assert r["stopped_for"] >= 2.5
    assert [t[0] for t in r["timeouts"]] == ["timeout"] * 6
    assert all(0.45 <= t[1] < WAIT_LIMIT for t in r["timeouts"]), r["timeouts"]
    assert r["blocked_still"] == [False, False], "a waiter got the lock from a stopped holder"
    assert r["driver_got_lock"] is False
    assert r["holder_released_after_cont"]
    assert r["holder_exit"] == 0
    assert r["finished"] == 1, "the stopped holder did not complete its critical section"
    assert [t[0] for t in r["late"]] == ["got", "got"]
    assert r["late_after_release"]
    assert r["repairs"] == 0
    assert r["problems"] == []


_EXIT_HOLDERS = {
    "killed": ("import sys, time, dshared\ns = dshared.Segment(sys.argv[1], create=False)\ns.acquire()\n"
               "print('held', flush=True)\ntime.sleep(60)\n"),
    "os._exit": ("import os, sys, dshared\ns = dshared.Segment(sys.argv[1], create=False)\ns.acquire()\n"
                 "print('held', flush=True)\nos._exit(0)\n"),
    "daemon thread at exit": (
        "import sys, time, threading, dshared\ns = dshared.Segment(sys.argv[1], create=False)\n"
        "ev = threading.Event()\ndef hold():\n    with s.lock():\n        ev.set()\n        time.sleep(60)\n"
        "threading.Thread(target=hold, daemon=True).start()\nev.wait()\nprint('held', flush=True)\n"),
    "end of script": ("import sys, dshared\ns = dshared.Segment(sys.argv[1], create=False)\ns.acquire()\n"
                      "print('held', flush=True)\n"),
    "handle freed, then exit": ("import sys, dshared\ns = dshared.Segment(sys.argv[1], create=False)\n"
                                "s.acquire()\nprint('held', flush=True)\ndel s\n"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", [
    "killed", "os._exit", "daemon thread at exit",
    "end of script",
    "handle freed, then exit",
])
def test_holder_that_exits_without_release(segment, shm_name, how):
    """However a holding process ends, the next locker gets the lock (with
    one repair) within the wait limit."""
    with Popen(_EXIT_HOLDERS[how], shm_name) as holder:
        assert holder.stdout.readline() == "held\n"
        if how == "killed":
            holder.kill()
        assert holder.wait(20) in (0, -signal.SIGKILL)
    t = time.monotonic()
    try:
        segment.acquire(timeout=WAIT_LIMIT)
    except dshared.LockTimeout:
        pytest.fail("the lock of a dead holder (%s) was never freed" % how)
    segment.release()
    print("%s: lock after %.3f s" % (how, time.monotonic() - t))
    assert segment.stats()['repairs'] == 1
    assert segment.check().ok


@pytest.mark.timeout(30)
def test_reentry_in_one_thread_never_hangs(segment, shm_name):
    """Re-entry by the holding thread, through the same handle, a second
    handle of the same segment, or the cached one, nests (it does not hang
    and does not time out); another thread still waits."""
    d = segment.col()
    second = dshared.Segment(shm_name, create=False)
    try:
        t = time.monotonic()
        with segment.lock(timeout=1):
            with segment.lock(timeout=1):
                d['a'] = 1
                with second.lock(timeout=1):
                    second.col()['b'] = 2
                    assert segment.acquire(timeout=0)
                    d['c'] = d['a'] + second.col()['b']
                    segment.release()
                cached = dshared.attach(shm_name)
                with cached.lock(timeout=1):
                    cached.col()['d'] = 4
            # still held here: another thread must wait
            seen = []

            def other():
                try:
                    with segment.lock(timeout=0.3):
                        seen.append("got")
                except dshared.LockTimeout:
                    seen.append("timeout")
            th = threading.Thread(target=other)
            th.start()
            th.join(10)
            assert seen == ["timeout"]
        assert time.monotonic() - t < 5
        cached.close()
        # released for real: another thread gets it now
        seen.clear()
        th = threading.Thread(target=other)
        th.start()
        th.join(10)
        assert seen == ["got"]
        assert d.to_python() == {'a': 1, 'b': 2, 'c': 3, 'd': 4}
        with pytest.raises(RuntimeError):
            segment.release()           # not held: an error, not a silent unlock
        assert segment.check().ok
    finally:
        second.close()


# =====================================================================================
# 6. fork and threads
# =====================================================================================

def _fork_child_locks(name, out_fd):
    seg = dshared.Segment(name, create=False)
    t0 = time.monotonic()
    with seg.lock(timeout=10):
        t1 = time.monotonic()
        seg.col()['child'] = seg.col().get('child', 0) + 1
    _send(out_fd, [t0, t1, seg.check().problems])


def _fork_child_inherited(seg, out_fd):
    """Uses the handle inherited from the parent (no new attach)."""
    t0 = time.monotonic()
    with seg.lock(timeout=10):
        t1 = time.monotonic()
        seg.col()['child'] = seg.col().get('child', 0) + 1
    _send(out_fd, [t0, t1, seg.check().problems])


def _drive_fork_while_locked(name, reps):
    seg = dshared.Segment(name, 16 << 20, create=True)
    d = seg.col()
    out = []
    try:
        for variant in ("other thread holds", "other thread holds, inherited handle",
                        "forking thread holds", "one thread holds, another waits"):
            for rep in range(reps):
                r, w = os.pipe()
                holding = threading.Event()
                released = []
                threads = []

                def hold():
                    with seg.lock():
                        d['holder'] = rep
                        holding.set()
                        time.sleep(0.2)
                        released.append(time.monotonic())

                def wait_for_it():
                    holding.wait(10)
                    with seg.lock(timeout=10):
                        d['waiter'] = rep

                if variant == "forking thread holds":
                    with seg.lock():
                        pid = fork_call(_fork_child_locks, name, w)
                        time.sleep(0.2)
                        released.append(time.monotonic())
                else:
                    threads.append(threading.Thread(target=hold))
                    if variant.startswith("one thread holds"):
                        threads.append(threading.Thread(target=wait_for_it))
                    for th in threads:
                        th.start()
                    holding.wait(10)
                    time.sleep(0.01)
                    if variant.endswith("inherited handle"):
                        pid = fork_call(_fork_child_inherited, seg, w)
                    else:
                        pid = fork_call(_fork_child_locks, name, w)
                os.close(w)
                try:
                    for th in threads:
                        th.join(20)
                    msg = _Lines(r).get(20)
                    code = wait_pid(pid, 20)
                finally:
                    kill_pid(pid)
                    os.close(r)
                out.append({"variant": variant, "code": code, "waited": msg[1] - msg[0],
                            "after_release": msg[1] >= released[0], "problems": msg[2]})
        out_d = {"runs": out, "child": d['child'], "problems": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()
    return out_d


@pytest.mark.timeout(90)
@pytest.mark.parametrize("reps", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_fork_while_another_thread_holds_the_lock(shm_name, reps):
    r = run_driver("test_concurrency", "_drive_fork_while_locked", shm_name, reps, timeout=80)
    for run in r["runs"]:
        print(run)
        assert run["code"] == 0, run
        assert run["after_release"], "the child got the lock while the parent's thread held it: %r" % run
        assert run["waited"] < 0.2 + WAIT_LIMIT, run
        assert run["waited"] > 0.05, "the child did not wait for the parent's thread: %r" % run
        assert run["problems"] == []
    assert r["child"] == len(r["runs"])
    assert r["problems"] == []


_PROBE = """
import sys, dshared
s = dshared.Segment(sys.argv[1], create=False)
try:
    s.acquire(0.3)
    print('acquired', s.stats()['repairs'])
    s.release()
except dshared.LockTimeout:
    print('timeout')
"""


def _drive_thread_exit(name):
    seg = dshared.Segment(name, 1 << 20, create=True)
    idents = []
    seen = []
    try:
        def leaver():
            idents.append(threading.get_ident())
            seg.acquire()

        def locker():
            idents.append(threading.get_ident())
            with seg.lock(timeout=5):
                seg.col()['x'] = 1
                with Popen(_PROBE, name) as probe:
                    out, err = probe.communicate(timeout=20)
                seen.append(out.strip() or err[-500:])

        for target in (leaver, locker):
            th = threading.Thread(target=target)
            th.start()
            th.join(30)
            time.sleep(0.1)             # let the thread end for good: its stack (and ident) is reused
        return {"idents": idents, "seen": seen, "repairs": seg.stats()['repairs'],
                "problems": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.timeout(60)
def test_thread_that_ends_holding_the_lock(shm_name):
    """A thread takes the lock and ends without releasing it: its death is
    a holder death like a process's (the robust mutex reports it). The next
    thread that locks must repair and really own the mutex: another process
    trying meanwhile must time out."""
    r = run_driver("test_concurrency", "_drive_thread_exit", shm_name, timeout=50)
    print(r)
    assert r["seen"] == ["timeout"], "another process got the lock while a thread held it: %r" % r
    assert r["repairs"] == 1
    assert r["problems"] == []


FT_PROCS = 2
FT_THREADS = 4
FT_SECONDS = 5.0


def _ft_thread(seg, name, p, t, seed, deadline, res):
    own = t >= 2                        # threads 2, 3 open their own handle
    if own:
        seg = dshared.Segment(name, create=False)
    d = seg.col()
    me = "%d-%d" % (p, t)
    rng = random.Random(seed * 7919 + p * 31 + t)
    lkey = 'l-' + me
    model_l = []
    model_k = {}
    n = {"incr": 0, "locked": 0, "ops": 0, "jumps": 0, "read_races": 0}
    last = None
    i = 0
    try:
        while time.monotonic() < deadline:
            i += 1
            r = rng.random()
            if r < 0.2:
                d.incr('total')
                n["incr"] += 1
            elif r < 0.4:
                with seg.lock():
                    v = d['locked']
                    d['locked'] = v + 1
                n["locked"] += 1
                if last is not None and v != last + 1:
                    n["jumps"] += 1
                last = v
            elif r < 0.55:
                d[lkey].append(i)
                model_l.append(i)
                if len(model_l) > 60:
                    del d[lkey][:30]
                    del model_l[:30]
            elif r < 0.7:
                k = "k-%s-%d" % (me, rng.randrange(8))
                v = [i, "v" * (i % 40)] if i % 3 else "s%d" % i * (i % 9)
                d[k] = v
                model_k[k] = v
            elif r < 0.75:
                k = "k-%s-%d" % (me, rng.randrange(8))
                d.pop(k, None)
                model_k.pop(k, None)
            elif r < 0.85:
                d['nested'][me] = {'i': i, 'l': [i, {'deep': i}]}
            else:
                other = "%d-%d" % (rng.randrange(FT_PROCS), rng.randrange(FT_THREADS))
                d.get('k-%s-%d' % (other, rng.randrange(8)))
                len(d)
                try:
                    sum(1 for _ in d['nested'].items())
                except RuntimeError:
                    n["read_races"] += 1    # changed during iteration: dict's own rule
            n["ops"] += 1
        got_l = d[lkey].to_python()
        got_k = {k: v for k, v in d.to_python().items() if k.startswith("k-%s-" % me)}
        if got_l != model_l:
            n["error"] = "list of %s differs: %r vs %r" % (me, got_l[-5:], model_l[-5:])
        elif got_k != model_k:
            n["error"] = "keys of %s differ" % me
        elif d['nested'][me]['l'][1]['deep'] != d['nested'][me]['i']:
            n["error"] = "nested value of %s torn" % me
    except BaseException as e:
        n["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if own:
            seg.close()
    res[t] = n


def _ft_process(name, p, seed, start_at, seconds, out_fd):
    seg = dshared.Segment(name, create=False)
    res = {}
    while time.monotonic() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    threads = [threading.Thread(target=_ft_thread, args=(seg, name, p, t, seed, deadline, res))
               for t in range(FT_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + 60)
    _send(out_fd, res)


def _drive_fork_threads(name, seed, seconds):
    seg = dshared.Segment(name, 64 << 20, create=True)
    d = seg.col()
    d.update({'total': 0, 'locked': 0, 'nested': {}})
    for p in range(FT_PROCS):
        for t in range(FT_THREADS):
            d['l-%d-%d' % (p, t)] = []
    try:
        with Children() as ch:
            start_at = time.monotonic() + 0.3
            pipes = []
            pids = []
            for p in range(FT_PROCS):
                r, w = os.pipe()
                pids.append(ch.fork(_ft_process, name, p, seed, start_at, seconds, w))
                os.close(w)
                pipes.append(r)
            res = []
            for r in pipes:
                res.append(_Lines(r).get(seconds + 90))
                os.close(r)
            codes = [ch.wait(pid, 30) for pid in pids]
        return {"codes": codes, "res": res, "total": d['total'], "locked": d['locked'],
                "problems": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seconds", [FT_SECONDS / 2.5, pytest.param(FT_SECONDS, marks=pytest.mark.slow)])
def test_two_processes_four_threads_exact(shm_name, seconds):
    seed = test_seed()
    r = run_driver("test_concurrency", "_drive_fork_threads", shm_name, seed, seconds, timeout=110)
    assert r["codes"] == [0] * FT_PROCS
    threads = [n for proc in r["res"] for n in proc.values()]
    assert len(threads) == FT_PROCS * FT_THREADS
    errors = [n["error"] for n in threads if "error" in n]
    assert not errors, errors
    incr = sum(n["incr"] for n in threads)
    locked = sum(n["locked"] for n in threads)
    ops = sum(n["ops"] for n in threads)
    jumps = sum(n["jumps"] for n in threads)
    print("%d operations by %d threads; total %d, locked %d, %d interleavings"
          % (ops, len(threads), incr, locked, jumps))
    assert r["total"] == incr
    assert r["locked"] == locked
    assert r["problems"] == []
    assert all(n["ops"] >= 1000 for n in threads)
    assert jumps >= 100, "the threads never contended"


KI_SIGNALS = 150


def _ki_worker(name, out_fd):
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sigint = {signal.SIGINT}
    done = 0
    big_done = want_big = 0
    stages = {}
    bad = []
    exits_skipped = []
    stage = "start"
    while True:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, sigint)
            # not `while not d.get('stop'):`: on Python 3.13 an interrupt on
            # that loop's back edge escapes the try (cpython#130279)
            while True:
                if d.get('stop'):
                    break
                stage = "acquire"
                with seg.lock():
                    stage = "locked"
                    c = d['c']
                    m = d['m_w']
                    d.update({'c': c + 1, 'm_w': m + 1})
                    stage = "locked, after the increment"
                    d['w_last'] = [done, 'x' * (done % 50)]
                stage = "released"
                done += 1
                stage = "unlocked write"
                want_big = done % 500
                d['w_big'] = list(range(want_big))
                big_done = want_big
            break
        except KeyboardInterrupt:
            caught = time.monotonic()
            signal.pthread_sigmask(signal.SIG_BLOCK, sigint)   # no second one while we look
            stages[stage] = stages.get(stage, 0) + 1
            try:
                seg.release()       # RuntimeError unless this thread still holds the lock
                held = True
            except RuntimeError:
                held = False
            if held:
                # CPython before 3.10 can skip a with block's __exit__ when
                # the interrupt lands after the body's last statement and
                # before __exit__ is called (bpo-29988): then, and only then,
                # the body is complete (its last write done) and the lock is
                # still held. Anything else is dshared's fault.
                w_last = d.get('w_last')
                w_last = w_last.to_python() if w_last is not None else None
                if (sys.version_info < (3, 10) and stage == "locked, after the increment"
                        and w_last == [done, 'x' * (done % 50)]):
                    exits_skipped.append(done)
                else:
                    bad.append("after an interrupt at %r this process still held the lock (w_last %r, %d done)"
                               % (stage, w_last and w_last[0], done))
            actual = d['m_w']
            if actual not in (done, done + 1):
                bad.append("after an interrupt at %r: %d increments done, %d counted" % (stage, done, actual))
            done = actual
            if stage == "unlocked write":
                # the write was interrupted before it began or after it ended, never inside
                big = d['w_big'].to_python() if 'w_big' in d else []
                if big not in (list(range(big_done)), list(range(want_big))):
                    bad.append("w_big holds %d items; %d or %d expected" % (len(big), big_done, want_big))
                # before 3.10 the interrupt can land after the write ended but
                # before big_done = want_big ran: go on from what it holds
                big_done = len(big)
            probe = []

            def take():
                try:
                    with seg.lock(timeout=WAIT_LIMIT):
                        probe.append(True)
                except dshared.LockTimeout:
                    probe.append(False)
            th = threading.Thread(target=take)
            th.start()
            th.join(10)
            if probe != [True]:
                bad.append("after an interrupt at %r this process still held the lock" % stage)
            problems = seg.check().problems
            if problems:
                bad.append("after an interrupt at %r: %s" % (stage, problems[:3]))
            _send(out_fd, ["handled", stage, caught])
    _send(out_fd, ["end", done, stages, bad, exits_skipped])


def _ki_contender(name, seed, out_fd):
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    rng = random.Random(seed)
    done = 0
    max_wait = 0.0
    while not d.get('stop'):
        t0 = time.monotonic()
        with seg.lock():
            max_wait = max(max_wait, time.monotonic() - t0)
            c = d['c']
            m = d['m_c']
            d.update({'c': c + 1, 'm_c': m + 1})
            if rng.random() < 0.02:
                # hold it longer than one wait slice: the worker blocks, and
                # is interrupted while blocked
                time.sleep(0.08)
        done += 1
        time.sleep(0.0002)
    _send(out_fd, [done, max_wait])


def _drive_keyboard_interrupt(name, seed, signals):
    seg = dshared.Segment(name, 16 << 20, create=True)
    d = seg.col()
    d.update({'c': 0, 'm_w': 0, 'm_c': 0})
    rng = random.Random(seed)
    try:
        with Children() as ch:
            wr, ww = os.pipe()
            cr, cw = os.pipe()
            worker = ch.fork(_ki_worker, name, ww)
            contender = ch.fork(_ki_contender, name, seed, cw)
            os.close(ww)
            os.close(cw)
            wl = _Lines(wr)
            time.sleep(0.2)
            handled = 0
            blocked = 0
            latency = {}
            for _ in range(signals):
                time.sleep(rng.uniform(0.0005, 0.02))
                sent = time.monotonic()
                os.kill(worker, signal.SIGINT)
                msg = wl.get(10)            # a hang here is a deadlock
                assert msg[0] == "handled", msg
                latency[msg[1]] = max(latency.get(msg[1], 0), msg[2] - sent)
                if msg[2] - sent > 0.01:
                    blocked += 1            # it arrived while the worker was blocked on the lock
                handled += 1
            d['stop'] = True
            end = wl.get(30)
            cont = _Lines(cr).get(30)
            codes = [ch.wait(worker, 30), ch.wait(contender, 30)]
            os.close(wr)
            os.close(cr)
        return {"codes": codes, "handled": handled, "worker": end, "contender": cont, "latency": latency, "blocked": blocked,
                "c": d['c'], "m_w": d['m_w'], "m_c": d['m_c'], "problems": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signals", [KI_SIGNALS // 3, pytest.param(KI_SIGNALS, marks=pytest.mark.slow)])
def test_keyboard_interrupt_at_random_points(shm_name, signals):
    seed = test_seed()
    r = run_driver("test_concurrency", "_drive_keyboard_interrupt", shm_name, seed, signals, timeout=110)
    _, done, stages, bad, exits_skipped = r["worker"]
    c_done, c_wait = r["contender"]
    print("%d interrupts handled, by stage: %r; worker %d, contender %d increments; contender's longest "
          "wait %.3f s; longest delay from SIGINT to KeyboardInterrupt by stage: %r"
          % (r["handled"], stages, done, c_done, c_wait, r["latency"]))
    assert r["codes"] == [0, 0]
    assert not bad, bad
    assert r["handled"] == signals
    assert sum(stages.values()) == signals
    assert r["m_w"] == done and r["m_c"] == c_done
    assert r["c"] == done + c_done
    assert c_wait < WAIT_LIMIT
    assert r["problems"] == []
    # Ctrl-C works while blocked on the lock: within a wait slice or two
    assert max(r["latency"].values()) < 0.5, r["latency"]
    # the interrupts landed at different points, some while blocked on the lock
    # (in the wait slices of lock() or of a write: they take up to one slice)
    print("%d interrupts arrived while the worker was blocked on the lock" % r["blocked"])
    assert r["blocked"] >= 5, r["blocked"]
    assert len(stages) >= 3, stages
    if exits_skipped:       # only ever set before 3.10; everything else above held
        pytest.xfail("CPython %s skipped a with block's __exit__ when KeyboardInterrupt landed as the block "
                     "ended (bpo-29988, fixed in 3.10) %d time(s): the lock stayed with the interrupted thread, "
                     "which released it" % (sys.version.split()[0], len(exits_skipped)))


# =====================================================================================
# 7. lock-free reads
# =====================================================================================

HOLD_SECONDS = 4.0          # the reads must end well within this (the holder holds until told)

_HOLDER = """
import sys, dshared
seg = dshared.Segment(sys.argv[1], create=False)
d = seg.col()
with seg.lock():
    d['s'] = 'written by the holder'        # committed; the lock stays held
    print('locked', flush=True)
    sys.stdin.readline()                    # until the test has read
print('released', flush=True)
"""


@pytest.mark.timeout(60)
def test_reader_progresses_while_another_process_holds_the_lock(segment, shm_name):
    d = segment.col()
    d['s'] = 'before'
    d['l'] = list(range(100))
    d['n'] = {'a': {'b': [1, 2, 3]}, 't': ('x', 2)}
    d.update({'k%d' % i: 'v%d' % i for i in range(1000)})
    with Popen(_HOLDER, shm_name, stdin=subprocess.PIPE) as holder:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(dshared.LockTimeout):
            segment.acquire(timeout=0.05)           # the lock is held
        t0 = time.monotonic()
        worst = 0.0
        for i in range(2000):
            t = time.monotonic()
            assert d['s'] == 'written by the holder'
            assert d['l'][i % 100] == i % 100
            assert len(d) == 1003
            assert ('k%d' % (i % 1000)) in d
            assert d['k%d' % (i % 1000)] == 'v%d' % (i % 1000)
            assert d['n']['a']['b'][2] == 3
            if i % 50 == 0:
                assert d['n'].to_python() == {'a': {'b': [1, 2, 3]}, 't': ('x', 2)}
                assert sum(1 for _ in d['l']) == 100
                assert len(list(d.items())) == 1003
            worst = max(worst, time.monotonic() - t)
        elapsed = time.monotonic() - t0
        with pytest.raises(dshared.LockTimeout):
            segment.acquire(timeout=0.05)           # still held: the reads never waited for it
        print("2000 read rounds in %.3f s while the lock was held (slowest %.4f s)" % (elapsed, worst))
        assert elapsed < HOLD_SECONDS / 4
        assert worst < 0.2
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "released\n"
        assert holder.wait(10) == 0
    assert segment.stats()['repairs'] == 0
    assert segment.check().ok


def test_a_write_turns_the_sequence_odd_only_to_change_what_readers_reach(segment):
    """Lock-free readers restart when the write sequence moves. A write moves
    it (by two) only if it changes reachable memory: its lookups, allocations
    and filling of new blocks happen before, so readers overlapping them are
    not restarted; a write that changes nothing leaves it alone."""
    d = segment.col()
    d['a'] = 'x' * 100
    seq = segment.stats()['seq']
    assert seq % 2 == 0
    d.setdefault('a', 'other')                  # found: nothing to change
    assert d.get('missing') is None
    d.pop('missing', None)
    assert segment.stats()['seq'] == seq
    d['b'] = 'y' * 100                          # a real change
    assert segment.stats()['seq'] == seq + 2
    with pytest.raises(dshared.UnsupportedTypeError):
        d['c'] = object()                       # refused before the lock: nothing changed
    assert segment.stats()['seq'] == seq + 2
    assert d.to_python() == {'a': 'x' * 100, 'b': 'y' * 100}


# -- what a write does before it publishes: readers never see it ------------------

def _publish_race_reader(name, seconds, out_path):
    """Reads lists, dicts and views of containers that only a cycle keeps
    alive, while the writer allocates, rolls back, collects and publishes."""
    seg = dshared.Segment(name, create=False)
    r = seg.col()
    L, D, C = r['L'], r['D'], r['C']
    bad, held = [], []
    stats = {"iterations": 0, "stale": 0, "cycle_reads": 0}
    end = time.monotonic() + seconds
    # until the writer has seen enough of both sides (or a hard deadline)
    while not r.get('stop') and time.monotonic() < end and len(bad) < 10:
        if stats["iterations"] % 25 == 0:
            r['progress'] = [stats["iterations"], stats["cycle_reads"], stats["stale"]]
        s = L[:]
        if s != list(range(len(s))):
            bad.append("list: %r" % s[:12])
        for k, v in D._snapshot():
            if k == 'big':
                continue
            unit = 'v' + k[1:]
            if v != unit * (len(v) // len(unit)) or not v:
                bad.append("dict: %r -> %r" % (k, v[:40]))
        c = C.get('c')
        if c is not None:
            held = (held + [c])[-20:]
        for h in held:
            try:
                i = h['id']
                lst = h['lst'][:]
                if lst[:2] != [i, i] or h['self']['id'] != i or (len(lst) == 3 and lst[2]['id'] != i):
                    bad.append("cycle %r: %r" % (i, lst[:2]))
                stats["cycle_reads"] += 1
            except dshared.StaleReferenceError:
                stats["stale"] += 1             # collect() freed it: the view says so
            except (KeyError, IndexError):
                pass                            # caught between two steps of the writer
        stats["iterations"] += 1
    with open(out_path, "w") as f:
        json.dump({"bad": bad, "stats": stats}, f)


def _publish_race_done(ev, progress_view):
    try:
        iterations, cycle_reads, stale = progress_view
    except dshared.StaleReferenceError:
        return False                    # the reader replaced its progress list meanwhile
    return (ev["rollbacks"] >= 3 and ev["collected"] >= 3 and ev["cycles"] >= 100
            and iterations >= 100 and cycle_reads >= 100 and stale >= 1)


def _drive_publish_race(name, seconds, out_path):
    seg = dshared.Segment(name, 4 << 20, create=True)
    try:
        r = seg.col()
        r['L'] = [0]
        r['D'] = {}
        r['C'] = {}
        L, D, C = r['L'], r['D'], r['C']
        rnd = random.Random(test_seed())
        ev = {"ops": 0, "rollbacks": 0, "collected": 0, "cycles": 0}
        r['progress'] = [0, 0, 0]
        with Children() as ch:
            pid = ch.fork(_publish_race_reader, name, 10 * seconds, out_path)
            start = time.monotonic()
            # at least `seconds`, then until both sides saw the events the
            # test is about (a loaded machine needs longer), at most 10x
            while time.monotonic() - start < 10 * seconds and (
                    time.monotonic() - start < seconds or not _publish_race_done(ev, r['progress'])):
                op = rnd.randrange(11)
                if op == 0 and len(L) < 3000:
                    L.append(len(L))                        # into spare room, then the length
                elif op == 1 and len(L) > 1:
                    L.pop()
                elif op == 2 and len(L) < 3000:
                    L.extend(range(len(L), len(L) + rnd.randrange(1, 7)))
                elif op == 3 and len(L) > 4:
                    del L[len(L) - rnd.randrange(1, 4):]
                elif op == 4:
                    i = rnd.randrange(200)
                    D['k%d' % i] = ('v%d' % i) * rnd.randrange(1, 6)
                elif op == 5:
                    D.pop('k%d' % rnd.randrange(200), None)
                elif op == 6:
                    i = rnd.randrange(200)
                    D.setdefault('k%d' % i, 'v%d' % i)          # present or not
                elif op == 7:
                    D.update({'k%d' % i: ('v%d' % i) * 3 for i in rnd.sample(range(200), 6)})
                elif op == 8:
                    x = rnd.randrange(10 ** 9)                  # a cycle, then only views keep it
                    C['c'] = {'id': x, 'lst': [x, x]}
                    c = C['c']
                    c['self'] = c
                    c['lst'].append(c)
                    C['again'] = c                              # an existing container stored again
                    del C['again']
                    del C['c']
                    ev["cycles"] += 1
                elif op == 9 and rnd.random() < 0.2:
                    ev["collected"] += seg.collect() > 0
                elif op == 10 and rnd.random() < 0.1:
                    try:                                        # allocations rolled back
                        D['big'] = [str(j) * (1 << 20) for j in range(5)]
                    except dshared.SegmentFullError:
                        ev["rollbacks"] += 1
                    D.pop('big', None)
                ev["ops"] += 1
                if ev["ops"] % 20 == 0:
                    time.sleep(0.0002)                          # long reads get their turn too
            r['stop'] = True
            code = ch.wait(pid, 60)
        return {"code": code, "events": ev, "problems": seg.check().problems,
                "repairs": seg.stats()["repairs"]}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.parametrize("seconds", [1.0, pytest.param(4.0, marks=pytest.mark.slow)])
def test_readers_never_see_what_a_write_does_before_it_publishes(shm_name, tmp_path, seconds):
    """A write turns the sequence odd only at its first change to reachable
    memory. Everything it does before (lookups, allocations from free blocks
    that views of dead containers may still point into, rolled-back
    allocations, entries and cells past the live ones) must stay invisible:
    a reader checks lists, dict values and views of cycle-only containers
    while collect() frees them."""
    out = str(tmp_path / "reader.json")
    r = run_driver("test_concurrency", "_drive_publish_race", shm_name, seconds, out, timeout=120)
    assert r["code"] == 0
    with open(out) as f:
        rd = json.load(f)
    print("writer %r, reader %r" % (r["events"], rd["stats"]))
    assert rd["bad"] == []
    assert r["problems"] == [] and r["repairs"] == 0
    # the race really happened
    ev, st = r["events"], rd["stats"]
    assert ev["rollbacks"] >= 3 and ev["collected"] >= 3 and ev["cycles"] >= 100
    assert st["iterations"] >= 100 and st["cycle_reads"] >= 100 and st["stale"] >= 1


# -- frees run outside the odd window: a view of a freed container says so ------------

ITEMS = 2048     # a read of the whole list takes microseconds: frees land inside it


def _stale_view_reader(name, seconds, out_path):
    """Holds views of lists that the writer deletes, and reads them whole:
    each read is the list as it was (ITEMS equal ints) or StaleReferenceError,
    never bytes of a block being freed or reused."""
    seg = dshared.Segment(name, create=False)
    r = seg.col()
    bad, held = [], []
    stats = {"reads": 0, "stale": 0, "whole": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(bad) < 10:
        try:
            held = (held + [r['x']['v']])[-4:]
        except (KeyError, dshared.StaleReferenceError):
            pass
        for h in held:
            stats["reads"] += 1
            try:
                items = h[:]
            except dshared.StaleReferenceError:
                stats["stale"] += 1
                continue
            if len(items) != ITEMS or len(set(items)) != 1 or type(items[0]) is not int:
                bad.append("%d items, first %r" % (len(items), items[:4]))
            else:
                stats["whole"] += 1
    with open(out_path, "w") as f:
        json.dump({"bad": bad, "stats": stats}, f)


def _drive_stale_views(name, seconds, out_path):
    seg = dshared.Segment(name, 16 << 20, create=True)
    try:
        r = seg.col()
        writes = 0
        with Children() as ch:
            pid = ch.fork(_stale_view_reader, name, seconds, out_path)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                # 'v' is released last, after the 3,000 small lists: readers
                # holding a view of it read it while the release runs
                r['x'] = {'v': [writes] * ITEMS, 'big': [[i] for i in range(3000)]}
                del r['x']
                r['junk'] = [str(writes)] * ITEMS       # reuses the freed blocks with other bytes
                writes += 1
            code = ch.wait(pid, 60)
        return {"code": code, "writes": writes, "problems": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.parametrize("seconds", [1.5, pytest.param(4.0, marks=pytest.mark.slow)])
def test_a_view_of_a_container_freed_during_a_read_raises_stale(shm_name, tmp_path, seconds):
    """A write frees what it left unreachable after it has published, outside
    the write sequence's odd window; a view that outlived its list may be
    reading the list just then. The free changes the block's generation
    before anything else and the read checks it at its end: the reader gets
    the whole list or StaleReferenceError, never the bytes of the block being
    freed or of what reuses it."""
    out = str(tmp_path / "reader.json")
    r = run_driver("test_concurrency", "_drive_stale_views", shm_name, seconds, out, timeout=120)
    assert r["code"] == 0
    with open(out) as f:
        rd = json.load(f)
    print("writes %d, reader %r" % (r["writes"], rd["stats"]))
    assert rd["bad"] == []
    assert r["problems"] == []
    st = rd["stats"]
    assert r["writes"] >= 20 and st["stale"] >= 20 and st["whole"] >= 100
