"""Crash points: every kind of write, killed at its 1st, 2nd, ... crash point
until it completes. After each crash a fresh process attaches and must see
exactly one repair after its first lock / write / read, a clean check() (no
leaks, refcounts right, journal empty, sequence even), and the state before
or after the operation, never anything else.

Each operation runs in a driver (a fresh interpreter in its own process
group, see _proc.py), which forks for every crash point:

* a calibration child: builds the before-state, runs the operation with the
  crash counter armed far away, and reports the number N of crash points the
  operation passes, the before- and after-states and a plain-Python model of
  the after-state (the same operation applied to a dict/list copy);
* for n = 1 .. N+1 a crash child (fresh segment, same before-state,
  DSHARED crash point n armed: it must _exit(77) for n <= N and complete for
  N+1), then a verify child that has never seen the segment (the driver
  never opens it, so the verifier's handle, lock state and mapping are new);
  it rotates its first access between lock(), a write and a plain read (a
  read meets the odd write sequence, falls back to the lock, and repairs).

Also here: a creator SIGKILLed at random moments inside Segment(create=True).

States are compared through a canonical form that keeps order, types,
aliasing and cycles (hashed, so a 1 MiB value travels as 40 bytes).
"""
import copy
import hashlib
import json
import os
import random
import re
import select
import time

import pytest

import dshared
from dshared import _heap

from _proc import Children, read_all, run_driver, test_seed, unlink_quietly

SIZE = 4 << 20
CRASH = _heap.CRASH_EXIT_CODE
MIN_POINTS = 3


# -- canonical form of a state ---------------------------------------------------------

def canon(obj):
    """A string that is equal for two plain values exactly when they have the
    same types, order, values, aliasing and cycles."""
    memo = {}

    def walk(o):
        if isinstance(o, (dict, list)):
            if id(o) in memo:
                return ("@", memo[id(o)])
            memo[id(o)] = len(memo)
            if isinstance(o, dict):
                return ("d", tuple((walk(k), walk(v)) for k, v in o.items()))
            return ("l", tuple(walk(x) for x in o))
        if isinstance(o, tuple):
            return ("t", tuple(walk(x) for x in o))
        return (type(o).__name__, o)

    return repr(walk(obj))


def digest(obj):
    c = canon(obj)
    return hashlib.sha1(c.encode("utf-8", "surrogatepass")).hexdigest() + ":" + c[:120]


# -- the operations --------------------------------------------------------------------------
#
# OPS[name] = (setup(root, seg) -> claims or None, op(d, seg), model(d) or None)
# `op` runs on the shared root; `model` (default: op itself with seg=None) on a
# plain deep copy of the before-state gives the expected after-state.

def base(d, seg):
    d['a'] = 1
    d['s'] = 'a string that is not inline ' * 3
    d['l'] = [1, 'two', [3], {'four': 4}, 'five' * 10]
    d['d'] = {'x': 1, 'y': 'why' * 10, 'z': [1, 2]}
    d['t'] = (1, 'tuple str' * 5, b'bytes' * 5)
    d['l2'] = [5, 3, 9, 1, 7, 2]


def _count_points(fn):
    """The number of crash points fn() passes (crash counter armed far away)."""
    _heap.test_hooks(crash_at=10 ** 9)
    try:
        fn()
    finally:
        n = _heap.test_hooks(crash_at=0)
    return n


def setup_t2(d, seg):
    base(d, seg)
    d['t2'] = {'only': 'v' * 30}    # deleting its one entry drops the whole table


def setup_update_room(d, seg):
    """A nested dict of 35 keys whose table has room for 6 more (grown in
    place to 41): an update() of more than 4 pairs inserts in place."""
    base(d, seg)
    d['g'] = {}
    for i in range(35):
        d['g']['k%d' % i] = i


# A dict filled one key at a time, its values in blocks: a table of 5
# entries (8 slots), copied at the 6th insert into one of 14 (32 slots),
# grown in place at the 15th to 23, copied at the 24th (the index is full).
GROWN_AT = (5, 14)


def setup_resize(d, seg):
    """A nested dict filled to its growth threshold, whose next size needs a
    bigger index: the next insert (the 24th) builds a new table and copies
    the entries. Returns the largest point count of the inserts that did not
    grow it."""
    base(d, seg)
    d['g'] = {}
    counts = [_count_points(lambda: d['g'].__setitem__('k%d' % i, 'v%d' % i * 10)) for i in range(23)]
    plain = [c for i, c in enumerate(counts) if i and i not in GROWN_AT]
    return {"points_gt": max(plain), "extends": 0, "note": "earlier inserts: %r" % counts}


def setup_resize_in_place(d, seg):
    """A nested dict filled to its growth threshold, with free room above its
    table and an index big enough for the next size: the next insert (the
    15th) grows the table's block in place."""
    base(d, seg)
    d['g'] = {}
    counts = [_count_points(lambda: d['g'].__setitem__('k%d' % i, 'v%d' % i * 10)) for i in range(14)]
    plain = [c for i, c in enumerate(counts) if i and i not in GROWN_AT]
    return {"points_gt": max(plain), "extends": 1, "note": "earlier inserts: %r" % counts}


def setup_resize_into_free_room(d, seg):
    """As resize_in_place, but the room above the table is a free block
    below a live one (not the top): the table grows over the free block's
    start and the rest stays free."""
    claims = setup_resize_in_place(d, seg)
    d['pad'] = 'x' * 4000           # allocated right above the table
    d['after'] = 'y' * 100          # keeps the pad's space below the top
    del d['pad']
    return dict(claims, top_same=True)         # the table takes free room, not the top


def setup_append_full(d, seg):
    """base: the list has no spare room and a live block right above its
    items: the next append builds a new items block."""
    base(d, seg)
    return {"extends": 0}


def setup_append_grow(d, seg):
    """A list without spare room whose items block has free room above it:
    the next append grows the block in place."""
    base(d, seg)
    d['g'] = [1, 2, 3]
    return {"extends": 1, "points_gt": _count_points(lambda: d['l2'].__setitem__(0, 5))}


def setup_append_room(d, seg):
    base(d, seg)
    d['l'].append(6)                # a fresh list has no spare room; the first append makes some
    probe = [1, 2, 3]
    d['probe'] = probe
    full = _count_points(lambda: d['probe'].append('x' * 30))   # no room: new items block
    del d['probe']
    return {"points_lt": full}


def setup_garbage(d, seg):
    base(d, seg)
    for i in range(3):
        c = [i, 'garbage ' * 20, {'k': 'v' * 30}]
        c.append(c)
        d['g'] = c
    del d['g']                       # three cycles nothing reaches: only collect() frees them
    return {"collect_frees": True, "garbage_before": True}


def setup_split(d, seg):
    base(d, seg)
    d['p1'] = 'x' * 4000
    d['p2'] = 'y' * 3000            # from the top too: keeps p1's block away from it
    top = seg.stats()['top']
    del d['p1']                     # a free block of ~4 KiB in the middle
    assert seg.stats()['top'] == top
    return {"top_same": True}


def setup_coalesce(d, seg):
    base(d, seg)
    d['p1'] = 'x' * 500
    d['p2'] = 'y' * 500
    d['p3'] = 'z' * 500
    d['p4'] = 'w' * 500
    del d['p1']                     # free below p2; p3 stays allocated above it
    return {"blocks_fewer": True}


def setup_big(d, seg):
    base(d, seg)
    d['big'] = 'x' * (1 << 20)


def make_cycle():
    c = [1, 'cycle ' * 10]
    c.append(c)
    return c


def make_dict_cycle():
    c = {'k': 'v' * 20, 'l': [1]}
    c['self'] = c
    c['l'].append(c)
    return c


def make_alias():
    x = {'shared': 'y' * 20}
    return [x, x, (x, 'tuple ' * 5)]


def model_incr(key, delta):
    def m(d):
        d[key] = d.get(key, 0) + delta
    return m


def setup_empty(d, seg):
    pass


def setup_big_release(d, seg):
    base(d, seg)
    d['many'] = [[i, 'item %d' % i] for i in range(300)]      # 601 blocks to free: several release steps
    return {"released_in_steps": True}


def setup_empty_list(d, seg):
    base(d, seg)
    d['e'] = []


OPS = {
    # dict writes
    'insert_first': (setup_empty, lambda d, s: d.__setitem__('first', 'the first value ' * 3), None),
    'insert': (base, lambda d, s: d.__setitem__('new', 'new value ' * 5), None),
    'insert_scalar': (base, lambda d, s: d.__setitem__('n', 42), None),
    'insert_object_key': (base, lambda d, s: d.__setitem__(('k', 1, 'long key string ' * 3), [1]), None),
    'overwrite': (base, lambda d, s: d.__setitem__('s', 'other ' * 20), None),
    'overwrite_scalar': (base, lambda d, s: d.__setitem__('a', 2), None),
    'overwrite_container': (base, lambda d, s: d.__setitem__('d', [1, {'q': 'x' * 40}]), None),
    'delete': (base, lambda d, s: d.__delitem__('s'), None),
    'delete_container': (base, lambda d, s: d.__delitem__('l'), None),
    'delete_big': (setup_big_release, lambda d, s: d.__delitem__('many'), None),
    'overwrite_big': (setup_big_release, lambda d, s: d.__setitem__('many', 'gone'), None),
    'delete_last_entry': (setup_t2, lambda d, s: d['t2'].__delitem__('only'), None),
    'pop': (base, lambda d, s: d.pop('d'), None),
    'popitem': (base, lambda d, s: d.popitem(), None),
    'clear_nested': (base, lambda d, s: d['d'].clear(), None),
    'clear_root': (base, lambda d, s: d.clear(), None),
    'resize': (setup_resize, lambda d, s: d['g'].__setitem__('k23', 'v23' * 10), None),
    'resize_in_place': (setup_resize_in_place, lambda d, s: d['g'].__setitem__('k14', 'v14' * 10), None),
    'resize_into_free_room': (setup_resize_into_free_room, lambda d, s: d['g'].__setitem__('k14', 'v14' * 10), None),
    'nested_create': (base, lambda d, s: d.__setitem__('nest', {
        'a': [1, {'b': 'x' * 50, 'c': (2, 'y' * 20)}], 'e': {'f': {'g': [b'h' * 30]}}}), None),
    'update_few': (base, lambda d, s: d.update({'a': 3, 'u1': 'one' * 10, 'u2': [2]}), None),
    'update_many': (base, lambda d, s: d.update(
        dict([('s', 'replaced ' * 5)] + [('u%d' % i, ['v%d' % i * 8, i]) for i in range(8)])), None),
    'update_in_place': (setup_update_room, lambda d, s: d['g'].update(
        [('u%d' % i, 'in place %d ' % i * 4) for i in range(6)] + [('u1', 'again ' * 9), ('k1', 7)]), None),
    'setdefault_new': (base, lambda d, s: d.setdefault('sd', {'a': [1, 2], 'b': 'bee' * 10}), None),
    'setdefault_existing': (base, lambda d, s: d.setdefault('s', 'ignored'), None),
    'incr_new': (base, lambda d, s: d.incr('cnt'), model_incr('cnt', 1)),
    'incr_existing': (base, lambda d, s: d.incr('a', 5), model_incr('a', 5)),
    'assign_view': (base, lambda d, s: d.__setitem__('m', d['d']), None),
    # list writes
    'append_room': (setup_append_room, lambda d, s: d['l'].append('x' * 30), None),
    'append_full': (setup_append_full, lambda d, s: d['l'].append('x' * 30), None),
    'append_in_place': (setup_append_grow, lambda d, s: d['g'].append(4), None),
    'append_empty': (setup_empty_list, lambda d, s: d['e'].append({'first': 'item' * 10}), None),
    'extend': (base, lambda d, s: d['l'].extend(['e' * 20, 7, {'k': 'v'}]), None),
    'list_insert': (base, lambda d, s: d['l'].insert(1, {'i': 'ins' * 10}), None),
    'list_delete': (base, lambda d, s: d['l'].__delitem__(1), None),
    'list_setitem': (base, lambda d, s: d['l'].__setitem__(0, 'replacement ' * 4), None),
    'list_pop': (base, lambda d, s: d['l'].pop(2), None),
    'list_remove': (base, lambda d, s: d['l'].remove('two'), None),
    'slice_assign': (base, lambda d, s: d['l'].__setitem__(slice(1, 3), ['s1' * 10, 's2', 's3', {'s4': 4}]),
                     None),
    'slice_delete': (base, lambda d, s: d['l'].__delitem__(slice(1, 3)), None),
    'ext_slice_assign': (base, lambda d, s: d['l'].__setitem__(slice(None, None, 2), ['e0' * 10, 'e2', 3]),
                         None),
    'ext_slice_delete': (base, lambda d, s: d['l'].__delitem__(slice(None, None, 2)), None),
    'list_clear': (base, lambda d, s: d['l'].clear(), None),
    'list_reverse': (base, lambda d, s: d['l'].reverse(), None),
    'list_sort': (base, lambda d, s: d['l2'].sort(), None),
    # shapes, sizes, the allocator, collect
    'cycle': (base, lambda d, s: d.__setitem__('cyc', make_cycle()), None),
    'dict_cycle': (base, lambda d, s: d.__setitem__('dc', make_dict_cycle()), None),
    'alias': (base, lambda d, s: d.__setitem__('al', make_alias()), None),
    'big_value': (base, lambda d, s: d.__setitem__('big', b'\xab' * (1 << 20)), None),
    'big_overwrite': (setup_big, lambda d, s: d.__setitem__('big', 'y' * (1 << 20)), None),
    'split': (setup_split, lambda d, s: d.__setitem__('n', 'z' * 500), None),
    'coalesce': (setup_coalesce, lambda d, s: d.__delitem__('p2'), None),
    'collect': (setup_garbage, lambda d, s: s.collect(), lambda d: None),
}


# -- children (forked by the driver) ------------------------------------------------------

def _make(name, op_name):
    setup = OPS[op_name][0]
    seg = dshared.Segment(name, SIZE, create=True)
    root = seg.col()
    claims = setup(root, seg) or {}
    return seg, root, claims


def _calibrate(name, op_name):
    _, op, model = OPS[op_name]
    seg, root, claims = _make(name, op_name)
    try:
        before_py = root.to_python()
        st0 = seg.stats()
        rep0 = seg.check()
        if claims.get("garbage_before"):
            assert rep0.garbage > 0, rep0   # the garbage is the point of this setup
        _heap.extend_counters(reset=True)
        passed = _count_points(lambda: op(root, seg))
        extends = _heap.extend_counters(reset=True)
        st1 = seg.stats()
        rep1 = seg.check()
        expected = copy.deepcopy(before_py)
        (model or (lambda d: op(d, None)))(expected)
        return {"points": passed, "before": digest(before_py), "after": digest(root.to_python()),
                "model_after": digest(expected), "claims": claims,
                "problems": rep0.problems + rep1.problems, "stats0": st0, "stats1": st1,
                "extends": extends}
    finally:
        seg.close()
        seg.unlink()


def _crash(name, op_name, n):
    _, op, _ = OPS[op_name]
    seg, root, _ = _make(name, op_name)
    _heap.test_hooks(crash_at=n)
    op(root, seg)
    passed = _heap.test_hooks(crash_at=0)
    seg.close()
    return {"completed": True, "passed": passed}


def _verify(name, mode, no_repair):
    """A fresh process: attach, first lock/write/read, then look."""
    if no_repair:
        _heap.test_hooks(no_repair=True)
    seg = dshared.Segment(name, create=False)
    out = {"mode": mode}
    try:
        st = seg.stats()
        out["repairs0"] = st["repairs"]
        out["seq_odd"] = st["seq"] & 1
        if mode == "lock":
            with seg.lock(timeout=10):
                pass
        elif mode == "write":
            seg.col("scratch")["w"] = 1
        else:
            out["first_read"] = digest(seg.col().to_python())
        out["repairs1"] = seg.stats()["repairs"]
        _heap.test_hooks(no_repair=False)
        out["problems"] = seg.check().problems
        out["repairs2"] = seg.stats()["repairs"]
        out["state"] = digest(seg.col().to_python())
        # the segment keeps working: a write, then a clean check again
        seg.col("scratch")["after"] = "x" * 100
        out["problems_after_write"] = seg.check().problems
    except Exception as e:          # reported, not raised: the driver goes on
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        seg.close()
        seg.unlink()
    return out


def _pipe_child(w, r, fn, args):
    os.close(r)
    data = json.dumps(fn(*args)).encode()
    while data:
        data = data[os.write(w, data):]
    os.close(w)


def _call(ch, fn, *args, timeout=60):
    """Run fn(*args) in a forked child; (exit code, its JSON result or None)."""
    r, w = os.pipe()
    pid = ch.fork(_pipe_child, w, r, fn, args)
    os.close(w)
    ready, _, _ = select.select([r], [], [], timeout)
    if not ready:
        os.close(r)
        raise AssertionError("child %s%r hangs" % (fn.__name__, args))
    data = read_all(r)
    code = ch.wait(pid, timeout)
    return code, (json.loads(data) if data else None)


# -- the driver ---------------------------------------------------------------------------------

def _drive_crash_points(prefix, op_name, no_repair):
    modes = ("lock", "write", "read")
    with Children() as ch:
        name = prefix + "-cal"
        try:
            code, cal = _call(ch, _calibrate, name, op_name)
        finally:
            unlink_quietly(name)
        if code != 0:
            raise AssertionError("calibration of %s failed (exit %d)" % (op_name, code))
        results = []
        for n in range(1, cal["points"] + 2):
            name = "%s-%d" % (prefix, n)
            try:
                code, done = _call(ch, _crash, name, op_name, n)
                res = {"n": n, "exit": code, "done": done}
                if os.path.exists("/dev/shm/" + name):
                    code_v, ver = _call(ch, _verify, name, modes[n % 3], no_repair)
                    res["verify_exit"] = code_v
                    res.update(ver or {})
                results.append(res)
            finally:
                unlink_quietly(name)
    return {"calib": cal, "results": results}


# -- the tests -------------------------------------------------------------------------------------

def _judge(r):
    """The list of failures (empty if every crash point behaved)."""
    cal, results = r["calib"], r["results"]
    before, after = cal["before"], cal["after"]
    n_points = cal["points"]
    bad = []
    if cal["problems"]:
        bad.append("check() of the uncrashed operation: %r" % cal["problems"])
    if cal["model_after"] != after:
        bad.append("the operation differs from the plain dict/list model: %s vs %s" % (after, cal["model_after"]))
    if len(results) != n_points + 1:
        bad.append("%d runs for %d points" % (len(results), n_points))
    for res in results:
        n = res["n"]
        last = n == n_points + 1
        want_exit = 0 if last else CRASH
        if res["exit"] != want_exit:
            bad.append("n=%d: exit %r, expected %d" % (n, res["exit"], want_exit))
            continue
        if last and res["done"]["passed"] != n_points:
            bad.append("n=%d: the completed run passed %d points, calibration %d"
                       % (n, res["done"]["passed"], n_points))
        if res.get("verify_exit") != 0 or "error" in res:
            bad.append("n=%d: the verifying process failed: exit %r, %s"
                       % (n, res.get("verify_exit"), res.get("error")))
            continue
        # a write makes the sequence odd at its first change to reachable memory
        # and even again once it is published, before it frees what it left
        # unreachable: a crash outside that window leaves a consistent state
        # (the before-state, or the after-state with blocks still to free),
        # which lock-free readers read without repairing; the first lock repairs
        early = not last and res["mode"] == "read" and not res["seq_odd"]
        want_repairs = 0 if last or early else 1
        if res["repairs1"] - res["repairs0"] != want_repairs:
            bad.append("n=%d (%s): %d repairs after the first %s, expected %d"
                       % (n, res["mode"], res["repairs1"] - res["repairs0"], res["mode"], want_repairs))
        if res["repairs2"] - res["repairs0"] != (0 if last else 1):
            bad.append("n=%d (%s): %d repairs in all, expected %d"
                       % (n, res["mode"], res["repairs2"] - res["repairs0"], 0 if last else 1))
        if early and res.get("first_read") != res.get("state"):
            bad.append("n=%d: a crash outside the write's odd window, yet the first (lock-free) "
                       "read differs from the repaired state" % n)
        if res["problems"]:
            bad.append("n=%d: check(): %s" % (n, "; ".join(res["problems"][:4])))
        if res["problems_after_write"]:
            bad.append("n=%d: check() after the next write: %s" % (n, "; ".join(res["problems_after_write"][:4])))
        allowed = (after,) if last else (before, after)
        for key in ("state", "first_read"):
            if key in res and res[key] not in allowed:
                bad.append("n=%d: %s is neither the before- nor the after-state: %s" % (n, key, res[key]))
    return bad


@pytest.mark.timeout(180)
@pytest.mark.parametrize("op_name", sorted(OPS))
def test_crash_points(shm_name, op_name):
    r = run_driver("test_crash", "_drive_crash_points", shm_name, op_name, False, timeout=170)
    cal, results = r["calib"], r["results"]
    n_points = cal["points"]
    print("%s: %d crash points" % (op_name, n_points))
    bad = _judge(r)
    assert not bad, "%s, %d crash points:\n  %s" % (op_name, n_points, "\n  ".join(bad[:30]))
    # the suite did something: enough points, each crash repaired, both outcomes seen
    assert n_points >= MIN_POINTS, "%s passes only %d crash points" % (op_name, n_points)
    crashed = [res for res in results if res["exit"] == CRASH]
    assert len(crashed) == n_points
    assert sum(res["repairs2"] - res["repairs0"] for res in crashed) == n_points
    # a crash at the first point leaves the state before; at the last one, after
    assert results[0]["state"] == cal["before"], "crash point 1 of %s did not roll back" % op_name
    assert results[n_points - 1]["state"] == cal["after"], "the last crash point of %s lost the write" % op_name
    if cal["before"] != cal["after"]:
        outcomes = {res["state"] for res in crashed}
        assert outcomes == {cal["before"], cal["after"]}
    claims = cal["claims"]
    if claims.get("released_in_steps"):
        # releasing what the write left unreachable runs outside its odd window:
        # crashes there leave the sequence even and the after-state readable
        between = [res for res in crashed if not res["seq_odd"] and res["state"] == cal["after"]]
        assert len(between) >= 3, "%d crash points while releasing, after publication" % len(between)
    if "points_gt" in claims:
        assert n_points > claims["points_gt"], (op_name, claims)
    if "points_lt" in claims:
        assert n_points < claims["points_lt"], (op_name, claims)
    if "extends" in claims:
        # the table grew the way the setup says: in place, or into a new block
        assert cal["extends"] == claims["extends"], (op_name, cal["extends"], claims)
    if claims.get("top_same"):
        assert cal["stats1"]["top"] == cal["stats0"]["top"], "the value did not go into the free block"
        assert cal["stats1"]["used"] > cal["stats0"]["used"]
    if claims.get("blocks_fewer"):
        assert cal["stats1"]["blocks"] < cal["stats0"]["blocks"]
    if claims.get("collect_frees"):
        assert cal["stats1"]["used"] < cal["stats0"]["used"], "collect() freed nothing"


META_OPS = ["insert", "append_full", "update_many", "delete", "nested_create", "list_insert"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("op_name", META_OPS)
def test_meta_crash_points_without_repair_fail(shm_name, op_name):
    """DSHARED_TEST_NO_REPAIR in the process that finds the dead holder: the
    mutex is made consistent but nothing is repaired. Some crash point must
    then leave check() failing or a state that is neither before nor after."""
    r = run_driver("test_crash", "_drive_crash_points", shm_name, op_name, True, timeout=110)
    cal, results = r["calib"], r["results"]
    crashed = [res for res in results if res["exit"] == CRASH]
    assert len(crashed) == cal["points"] >= MIN_POINTS
    assert all(res["repairs1"] == res["repairs0"] for res in crashed if "repairs1" in res), \
        "a repair ran although the hook switched it off"
    # (a verifying process that died, as the debug build's invariant checks
    # make it, caught the damage too)
    caught = [res["n"] for res in crashed
              if "error" in res or res.get("verify_exit") != 0 or res["problems"]
              or res["state"] not in (cal["before"], cal["after"])]
    structural = [res["n"] for res in crashed
                  if "error" in res or [p for p in res["problems"] if "sequence" not in p]
                  or res["state"] not in (cal["before"], cal["after"])]
    print("%s: %d/%d crash points caught without repair (%d beyond the odd sequence)"
          % (op_name, len(caught), len(crashed), len(structural)))
    assert caught, "without repair every crash point of %s still looked sound" % op_name
    assert structural, "without repair only the odd write sequence gave %s away" % op_name


# -- a creator killed while it creates the segment ----------------------------------------------

def _create(name):
    dshared.Segment(name, 8 << 20, create=True)


def _probe(name):
    """What a process finds under `name` after the creator died: 'missing',
    'ok' (then the segment works and checks clean) or the error."""
    t = time.monotonic()
    out = {}
    try:
        seg = dshared.Segment(name)           # init's way: create, or attach if it exists
    except Exception as e:
        out["outcome"] = "%s: %s" % (type(e).__name__, e)
    else:
        try:
            out["outcome"] = "created" if seg.created else "attached"
            seg.col()['x'] = [1, 'two']
            out["x"] = seg.col()['x'].to_python()
            out["problems"] = seg.check().problems
            out["repairs"] = seg.stats()['repairs']
        finally:
            seg.close()
    out["seconds"] = time.monotonic() - t
    return out


def _drive_create_kills(prefix, seed, rounds):
    rng = random.Random(seed)
    results = []
    with Children() as ch:
        for i in range(rounds):
            name = "%s-c%d" % (prefix, i)
            try:
                pid = ch.fork(_create, name)
                time.sleep(rng.uniform(0, 0.003))
                code = ch.kill(pid)
                existed = os.path.exists("/dev/shm/" + name)
                code_p, res = _call(ch, _probe, name, timeout=30)
                results.append({"kill": code, "existed": existed, "probe_exit": code_p, "probe": res})
                # the dead creator's temporary file (if any) goes with the name
                dshared.unlink(name)
                results[-1]["temps_left"] = [t for t in os.listdir("/dev/shm") if t.startswith("." + name + ".")]
            finally:
                unlink_quietly(name)
                for t in os.listdir("/dev/shm"):
                    if t.startswith("." + name + "."):
                        unlink_quietly(t)
    return results



@pytest.mark.timeout(120)
def test_creator_killed_while_creating(shm_name):
    """The creator is SIGKILLed at random moments of Segment(create=True).
    The next process to open the name (as init() does: create or attach)
    must end up with a working segment: never a hang, a signal, or an error
    that leaves the name unusable; and no temporary file of the dead creator
    outlives dshared.unlink(name). (Each step in turn: test_creation.py.)"""
    seed = test_seed()
    results = run_driver("test_crash", "_drive_create_kills", shm_name, seed, 100, timeout=110)
    outcomes = {}
    for r in results:
        found = r["probe"]["outcome"] if r["probe"] else "probe exit %r" % r["probe_exit"]
        key = "%s, %s" % ("existed" if r["existed"] else "absent", re.sub(r"'[^']*'", "NAME", found))
        outcomes[key] = outcomes.get(key, 0) + 1
    print("outcomes (name existed after the kill, what the next open found): %r" % outcomes)
    assert all(r["probe_exit"] == 0 and r["probe"]["seconds"] < 5 for r in results), results
    # the kills landed both before and after the segment appeared
    assert any(r["existed"] for r in results) and not all(r["existed"] for r in results)
    bad = [r for r in results if r["probe"]["outcome"] not in ("created", "attached")
           or r["probe"]["problems"] or r["probe"]["x"] != [1, 'two'] or r["temps_left"]]
    assert not bad, "%d of %d kills left the name unusable, e.g. %r" % (len(bad), len(results), bad[0]["probe"])
