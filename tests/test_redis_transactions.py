"""transaction(), crash-atomic lock() and snapshot() on the Redis backend,
with the random blocks of tests/test_transactions.py (rand_block, apply,
setup_state: sets, deletes, nested sets, list edits, updates, incr, clears,
containers created, aliased, dropped, cycles).

* Exceptions at every operation of random blocks restore the exact
  before-state (order, types, aliasing, cycles), the container count, and a
  clean check(); a meta-test shows the check fails with the rollback off.
* Savepoints and lock()/transaction() nesting as on shared memory; collect()
  inside a block; the dshared-level API with server=.
* Crashes: children SIGKILL themselves before each operation of a block,
  after its commit, and in the middle of a rollback; the next locker, once
  the lease expires, leaves exactly the before- or the after-state (meta:
  with the repair off, states in between are seen).
* snapshot() readers see the writers' invariant while writers are killed
  inside their transactions.
Forks happen only in drivers (tests/_proc.py).
"""
import os
import random
import signal
import time

import pytest

import dshared
from _proc import Children, run_driver, test_seed
from test_transactions import Boom, apply, rand_block, setup_state, state
from test_transactions import _exception_rounds as _shm_exception_rounds
from test_transactions import (
    test_lock_keeps_and_transaction_rolls_back as _shm_lock_keeps_and_transaction_rolls_back)

LEASE = "lease_ms=300"


def run_block(seg, ops, raise_at=None, kind="transaction", die_at=None):
    d = seg.col()
    cm = seg.transaction() if kind == "transaction" else seg.lock()
    with cm:
        for i, op in enumerate(ops):
            if i == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if i == raise_at:
                raise Boom(i)
            apply(d, op)
        if die_at == len(ops):
            os.kill(os.getpid(), signal.SIGKILL)   # every operation done, not yet committed
        if raise_at == len(ops):
            raise Boom(len(ops))


def _open(url, name, create):
    from dshared.redis import RedisSegment
    return RedisSegment(name, create=create, server=url)


@pytest.fixture
def rseg(redis_url, shm_name):
    seg = _open(redis_url, shm_name, True)
    yield seg
    seg.unlink()
    seg.close()


def _exception_rounds(seg, rng, rounds):
    # Redis counts containers, not bytes: the same rounds with that figure
    return _shm_exception_rounds(seg, rng, rounds, max_ops=12, size_stat="containers")


def test_exceptions_roll_back_exactly(rseg):
    setup_state(rseg.col())
    bad, tried = _exception_rounds(rseg, random.Random(test_seed()), 6)
    assert not bad, bad[:3]
    assert tried > 20
    assert rseg.stats()["rollbacks"] == tried
    rep = rseg.check()
    assert rep.ok, rep
    rseg.collect()
    assert rseg.check().ok


def test_meta_exceptions_without_rollback_fail(rseg):
    from dshared.redis import _hooks
    setup_state(rseg.col())
    _hooks["no_rollback"] = True
    try:
        bad, tried = _exception_rounds(rseg, random.Random(1), 3)
    finally:
        _hooks["no_rollback"] = False
    assert len(bad) > tried // 3


def test_a_large_block_rolls_back_in_bounded_steps(rseg):
    from dshared.redis import _hooks
    d = rseg.col()
    d["l"] = list(range(50))
    d.update({"k%d" % i: i for i in range(300)})
    before, n = state(rseg), rseg.stats()["containers"]
    steps = []
    _hooks["undo_budget"], _hooks["on_undo_step"] = 100, lambda: steps.append(1)
    try:
        with pytest.raises(Boom):
            with rseg.transaction():
                for i in range(300):
                    d["k%d" % i] = {"v": [i]}
                    if i % 10 == 0:
                        del d["l"][0]
                raise Boom()
    finally:
        _hooks["undo_budget"], _hooks["on_undo_step"] = 2000, None
    assert len(steps) > 10                  # thousands of records, 100 a call
    assert state(rseg) == before and rseg.stats()["containers"] == n
    assert rseg.check().ok


def test_nested_transactions_are_savepoints(rseg):
    root = rseg.col()
    with rseg.transaction():
        root["a"] = 1
        with pytest.raises(Boom):
            with rseg.transaction():
                root["a"] = 2
                root["b"] = [1, 2]
                raise Boom()
        assert root["a"] == 1 and "b" not in root       # the block reads its own state
        with rseg.transaction():
            root["c"] = 3
    assert dict(root) == {"a": 1, "c": 3}
    with pytest.raises(Boom):
        with rseg.transaction():
            root["d"] = 4
            with rseg.transaction():
                root["e"] = 5
            raise Boom()
    assert dict(root) == {"a": 1, "c": 3}
    assert rseg.check().ok and rseg.stats()["containers"] == 1


def test_lock_keeps_and_transaction_rolls_back(rseg):
    # the shared-memory test, on Redis: the same nesting, the same outcomes
    _shm_lock_keeps_and_transaction_rolls_back(rseg.col(), rseg)


def test_collect_inside_a_block(rseg):
    d = rseg.col()
    d["cyc"] = {"pad": 1}
    d["cyc"]["me"] = d["cyc"]
    del d["cyc"]
    with rseg.transaction():
        d["a"] = 1
        with pytest.raises(RuntimeError, match="collect"):
            rseg.collect()
    with rseg.lock():
        assert rseg.collect() == 1          # nothing written yet in this block
        d["b"] = 2
    assert d["a"] == 1 and d["b"] == 2 and rseg.check().ok


def test_dshared_level_api(redis_url, shm_name):
    seg = dshared.init(shm_name, server=redis_url)
    try:
        shm = dshared.col()
        with pytest.raises(Boom):
            with dshared.transaction():
                shm["a"] = {"x": [1]}
                raise Boom()
        assert "a" not in shm
        with dshared.transaction(timeout=5):
            shm["a"] = 1
            assert seg.in_transaction()
        assert not seg.in_transaction()
        with dshared.snapshot():
            assert shm["a"] == 1
    finally:
        dshared.unlink(shm_name, server=redis_url)


# -- crashes -------------------------------------------------------------------------------

def _crash_child(url, name, ops, die_at, kind, in_undo):
    from dshared.redis import _hooks
    seg = _open(url, name, False)
    if in_undo:
        _hooks["undo_budget"] = 2
        _hooks["on_undo_step"] = lambda: os.kill(os.getpid(), signal.SIGKILL)
        run_block(seg, ops, raise_at=len(ops), kind="transaction")
    run_block(seg, ops, kind=kind, die_at=die_at)
    os._exit(0)


def drive_crashes(url, prefix, seed, nblocks, kind, no_repair):
    """For each random block: a child dies before each of its operations,
    after its commit, and (transactions) in the middle of its rollback; the
    next locker must leave exactly the before- or the after-state."""
    from dshared.redis import _hooks
    _hooks["no_rollback"] = no_repair
    rng = random.Random(seed)
    out = {"points": 0, "before": 0, "after": 0, "repairs": 0, "bad": []}
    with Children() as ch:
        for b in range(nblocks):
            name = "%s-%d" % (prefix, b)
            while True:
                ops = rand_block(rng, rng.randint(2, 10))
                seg = _open(url, name, True)
                setup_state(seg.col())
                before = state(seg)
                run_block(seg, ops)
                after = state(seg)
                seg.unlink()
                seg.close()
                if after != before:
                    break               # (a random block may undo itself: then no case could tell)
            cases = [(n, False) for n in range(len(ops) + 1)] + [(None, False)]
            if kind == "transaction":
                cases.append((None, True))
            for die_at, in_undo in cases:
                seg = _open(url, name, True)
                setup_state(seg.col())
                pid = ch.fork(_crash_child, url, name, ops, die_at, kind, in_undo)
                code = ch.wait(pid, 60)
                crashed = die_at is not None or in_undo
                if code != (-signal.SIGKILL if crashed else 0):
                    out["bad"].append("block %d point %r: exit %r" % (b, die_at, code))
                with seg.lock(timeout=30):          # the repair, once the lease expired
                    pass
                got = state(seg)
                rep = seg.check()
                if not rep.ok:
                    out["bad"].append("block %d point %r: %s" % (b, die_at, rep))
                if got == before:
                    out["before"] += 1
                elif got == after:
                    out["after"] += 1
                else:
                    out["bad"].append("block %d point %r: neither before nor after" % (b, die_at))
                out["repairs"] += seg.stats()["repairs"]
                out["points"] += 1
                seg.unlink()
                seg.close()
                if no_repair and any("neither before nor after" in m for m in out["bad"]):
                    return out          # what the meta-test looks for: the other points would only wait
    return out


@pytest.mark.parametrize("kind", ["transaction", "lock"])
def test_killed_inside_a_block_is_rolled_back_by_the_next_locker(redis_url, shm_name, kind):
    url = redis_url + "?" + LEASE
    r = run_driver("test_redis_transactions", "drive_crashes", url, shm_name, test_seed(), 1, kind, False,
                   timeout=300)
    print(r)
    assert not r["bad"], r["bad"][:5]
    assert r["points"] >= 4 and r["before"] > 0 and r["after"] > 0
    assert r["repairs"] > 0


def test_meta_killed_inside_a_block_without_repair_fails(redis_url, shm_name):
    url = redis_url + "?" + LEASE
    r = run_driver("test_redis_transactions", "drive_crashes", url, shm_name, 7, 1, "transaction", True,
                   timeout=300)
    assert any("neither before nor after" in m for m in r["bad"]), r


# -- snapshot() while writers are killed inside their transactions --------------------------

ACCOUNTS = 6
TOTAL = 600


def _writer(url, name, seed):
    seg = _open(url, name, False)
    d = seg.col()
    rng = random.Random(seed)
    while True:
        with seg.transaction():
            p = d["P"] + 1
            d["P"] = p
            a, b = rng.sample(range(ACCOUNTS), 2)
            amt = rng.randrange(50)
            d["acc"][a] -= amt
            time.sleep(0.002)               # the invariant is broken here, inside the block
            d["acc"][b] += amt
            d["Q"] = p


def drive_snapshot(url, name, seed, kills):
    rng = random.Random(seed)
    seg = _open(url, name, True)
    d = seg.col()
    d["P"] = d["Q"] = 0
    d["acc"] = [TOTAL // ACCOUNTS] * ACCOUNTS
    out = {"reads": 0, "bad": [], "kills": 0}
    with Children() as ch:
        # one writer, so that it holds the lease most of the time: kills land inside its blocks
        writers = [ch.fork(_writer, url, name, seed)]
        for i in range(kills):
            for _ in range(5):
                time.sleep(rng.random() * 0.01)
                with seg.snapshot():
                    p, q, acc = d["P"], d["Q"], list(d["acc"])
                out["reads"] += 1
                if p != q or sum(acc) != TOTAL:
                    out["bad"].append("snapshot saw P=%d Q=%d sum=%d" % (p, q, sum(acc)))
            time.sleep(0.015 + rng.random() * 0.01)    # past the writer's backoff: it is in a block again
            ch.kill(writers[0])
            out["kills"] += 1
            writers[0] = ch.fork(_writer, url, name, seed + 100 + i)
        for pid in writers:
            ch.kill(pid)
    with seg.snapshot():
        p, q, acc = d["P"], d["Q"], list(d["acc"])
    if p != q or sum(acc) != TOTAL:
        out["bad"].append("at the end P=%d Q=%d sum=%d" % (p, q, sum(acc)))
    out["repairs"] = seg.stats()["repairs"]
    out["P"] = p
    rep = seg.check()
    if not rep.ok:
        out["bad"].append(str(rep))
    seg.unlink()
    seg.close()
    return out


def test_snapshot_sees_committed_states_while_writers_are_killed(redis_url, shm_name):
    r = run_driver("test_redis_transactions", "drive_snapshot", redis_url + "?" + LEASE, shm_name,
                   test_seed(), 5, timeout=180)
    print(r)
    assert not r["bad"], r["bad"][:5]
    assert r["reads"] == 25 and r["P"] > 5 and r["repairs"] > 0
