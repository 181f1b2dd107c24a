"""Lifecycle (RELIABILITY.md): the creator exits first while 7 attachers
keep working, and they are unaffected (nobody unlinks, nothing is lost);
1,000 open/close cycles under -W error bring file descriptors and mappings
back to the baseline, with no warning; use after close raises, iterators
included, never a crash.

Double close and use after close of views: test_foundation.py."""
import json
import os
import subprocess
import textwrap
import time

import pytest

import dshared
from _proc import Children, Popen, read_all, run_driver, test_seed

# -W error -X dev, for the interpreters these tests start
STRICT = {"PYTHONWARNINGS": "error", "PYTHONDEVMODE": "1"}
ATTACHERS = 7
AFTER_CREATOR = 1.5             # seconds the attachers go on after the creator is gone

CREATOR = r"""
import sys
import dshared
seg = dshared.init(sys.argv[1], 8 << 20)
root = dshared.col()
root.update({"counter": 0, "creator": {"made": [1, "two", 3.0], "by": "creator"}, "gone": False})
for i in range(100):
    root["c%d" % i] = "creator value %d" % i
print("ready", flush=True)
sys.stdin.readline()
root["last"] = "the creator's last write"
# exits without close(): the interpreter's shutdown frees the handle
"""


def _attacher(name, idx, ready_w, out_w):
    seg = dshared.Segment(name, create=False)
    d = seg.col()
    os.write(ready_w, b"r")
    os.close(ready_w)
    model = {}
    res = {"ops": 0, "after": 0, "incr": 0, "errors": []}
    gone_at = None
    n = 0
    while gone_at is None or time.monotonic() < gone_at + AFTER_CREATOR:
        try:
            k = "a%d-%d" % (idx, n % 40)
            v = [n, "v" * (n % 30), {"n": n}]
            d[k] = v
            model[k] = v
            with seg.lock():
                d["counter"] += 1
            res["incr"] += 1
            if d[k].to_python() != v:
                res["errors"].append("%s read back %r" % (k, d[k].to_python()))
            if d["c%d" % (n % 100)] != "creator value %d" % (n % 100):
                res["errors"].append("creator's c%d changed" % (n % 100))
            if n % 7 == 0:
                d.pop("a%d-%d" % (idx, (n + 20) % 40), None)
                model.pop("a%d-%d" % (idx, (n + 20) % 40), None)
            res["ops"] += 1
            if gone_at is not None:
                res["after"] += 1
            elif d["gone"]:
                gone_at = time.monotonic()
        except Exception as e:
            res["errors"].append("%s: %s" % (type(e).__name__, e))
            break
        n += 1
    got = {k: v for k, v in d.to_python().items() if k.startswith("a%d-" % idx)}
    if got != model:
        res["errors"].append("attacher %d's keys differ from its model" % idx)
    res["check"] = seg.check().problems
    res["last"] = d.get("last")
    seg.close()
    os.write(out_w, json.dumps(res).encode())
    os.close(out_w)


def _drive_creator_exits_first(name):
    out = {}
    creator = Popen(textwrap.dedent(CREATOR), name, env=STRICT, stdin=subprocess.PIPE)
    with creator, Children() as ch:
        assert creator.stdout.readline().strip() == "ready", creator.stderr.read()
        ctl = dshared.Segment(name, create=False)       # the driver's own handle
        ready_r, ready_w = os.pipe()
        pipes = []
        for i in range(ATTACHERS):
            r, w = os.pipe()
            ch.fork(_attacher, name, i, ready_w, w)
            os.close(w)
            pipes.append(r)
        os.close(ready_w)
        assert len(read_all(ready_r)) == ATTACHERS
        time.sleep(0.3)                     # all of them at work
        creator.stdin.write("exit\n")
        creator.stdin.close()
        out["creator_rc"] = creator.wait(30)
        out["creator_stderr"] = creator.stderr.read()
        out["exists_after_creator"] = os.path.exists("/dev/shm/" + name)
        ctl.col()["gone"] = True
        out["attachers"] = [json.loads(read_all(r)) for r in pipes]
        out["codes"] = [ch.wait(pid, 30) for pid in list(ch.pids)]
    out["exists_after_all"] = os.path.exists("/dev/shm/" + name)
    out["counter"] = ctl.col()["counter"]
    out["check"] = ctl.check().problems
    ctl.close()
    ctl.unlink()
    return out


@pytest.mark.timeout(60)
def test_creator_exits_first_while_7_attachers_keep_working(shm_name):
    r = run_driver("test_lifecycle", "_drive_creator_exits_first", shm_name, timeout=50)
    assert r["creator_rc"] == 0 and r["creator_stderr"] == "", r["creator_stderr"]
    assert r["exists_after_creator"], "the creator's exit unlinked the segment"
    assert r["exists_after_all"], "an attacher unlinked the segment"
    assert r["codes"] == [0] * ATTACHERS
    att = r["attachers"]
    assert [a["errors"] for a in att] == [[]] * ATTACHERS
    assert all(a["check"] == [] for a in att) and r["check"] == []
    assert all(a["last"] == "the creator's last write" for a in att)
    assert r["counter"] == sum(a["incr"] for a in att)
    # they did work after the creator was gone
    assert all(a["after"] >= 20 for a in att), [a["after"] for a in att]
    print("ops per attacher:", [a["ops"] for a in att], "after the creator:", [a["after"] for a in att])


CYCLES = r"""
import gc, json, os, sys
import dshared

name = sys.argv[1]
CYCLES = int(sys.argv[2])


def fds():
    return sorted(os.listdir("/proc/self/fd"))


def maps():
    with open("/proc/self/maps") as f:
        return [ln for ln in f if "/dev/shm/" in ln]


keeper = dshared.Segment(name, 1 << 20, create=True)
keeper.col()["k"] = {"v": [1, 2, 3]}
for _ in range(3):                                  # warm up: imports, caches
    with dshared.Segment(name, create=False) as s:
        s.col()["k"]["v"][0]
gc.collect()
base_fds, base_maps = fds(), maps()
closed_views = 0
for i in range(CYCLES):
    how = i % 4
    if how == 0:
        s = dshared.Segment(name, create=False)
        s.col()["i"] = i
        view = s.col()["k"]
        s.close()
        try:
            view["v"]
        except ValueError:
            closed_views += 1
    elif how == 1:
        with dshared.Segment(name, create=False) as s:
            assert s.col()["k"]["v"].to_python() == [1, 2, 3]
            it = iter(s.col())
            next(it)
    elif how == 2:
        with dshared.Segment("%s-%d" % (name, i), 64 << 10, create=True) as s:
            s.col()["x"] = [i]
            s.unlink()
    else:
        s = dshared.Segment(name)                   # create-or-attach
        with s.lock():
            s.col()["i"] += 1
        s.close()
        s.close()
    del s
gc.collect()
left = sorted(n for n in os.listdir("/dev/shm") if n.startswith(name + "-"))
print(json.dumps({"base_fds": base_fds, "fds": fds(), "base_maps": len(base_maps), "maps": len(maps()),
                  "left": left, "closed_views": closed_views, "i": keeper.col()["i"],
                  "check": keeper.check().problems}))
keeper.close()
keeper.unlink()
"""


@pytest.mark.timeout(120)
def test_1000_open_close_cycles_leave_no_fd_map_or_warning(shm_name):
    """Under -W error -X dev: 1,000 cycles of attach / use / close (views made
    before close raise after it; context managers; create + unlink of other
    segments; create-or-attach with the lock): the same open fds and shared
    mappings at the end as before, nothing left in /dev/shm, nothing on
    stderr."""
    with Popen(textwrap.dedent(CYCLES), shm_name, 1000, env=STRICT) as proc:
        out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    assert err == "", err
    r = json.loads(out.strip().splitlines()[-1])
    extra = sorted(set(r["fds"]) - set(r["base_fds"]), key=int)
    assert r["fds"] == r["base_fds"], "%d fds open after the cycles, %d before: %s..." % (
        len(r["fds"]), len(r["base_fds"]), extra[:10])
    assert r["maps"] == r["base_maps"] == 1, "%d mappings of /dev/shm after, %d before" % (r["maps"], r["base_maps"])
    assert r["left"] == []
    assert r["closed_views"] == 250
    assert r["check"] == []


AFTER_CLOSE = r"""
import json, sys
import dshared

name = sys.argv[1]
seg = dshared.Segment(name, 1 << 20, create=True)
seg.unlink()
root = seg.col()
root.update({"a": 1, "l": [1, 2, 3], "d": {"x": 1, "y": 2}})
lst, d = root["l"], root["d"]
iters = [iter(root), iter(root.keys()), iter(root.values()), iter(root.items()), reversed(root),
         iter(lst), reversed(lst), iter(d.items())]
for it in iters:
    next(it)
seg.close()
ops = [lambda it=it: next(it) for it in iters]
ops += [lambda: len(root), lambda: root["a"], lambda: root.get("a"), lambda: "a" in root,
        lambda: root.__setitem__("b", 2), lambda: root.pop("a"), lambda: root.to_python(),
        lambda: repr(root), lambda: list(root.items()), lambda: lst[0], lambda: lst.append(4),
        lambda: len(lst), lambda: lst.to_python(), lambda: d.update({"z": 3}), lambda: seg.check(),
        lambda: seg.collect(), lambda: seg.stats(), lambda: seg.col(), lambda: seg.lock().__enter__()]
raised = {}
for i, op in enumerate(ops):
    try:
        op()
        raised[i] = "no error"
    except ValueError as e:
        raised[i] = "closed" if "closed" in str(e) else str(e)
    except Exception as e:
        raised[i] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(raised))
"""


def test_use_after_close_raises_for_views_and_live_iterators(shm_name):
    """Iterators advanced once, views of every kind, the segment's own
    methods: after close() each raises ValueError("... closed"), in a child
    so that a crash would show as a signal."""
    with Popen(textwrap.dedent(AFTER_CLOSE), shm_name, env=STRICT) as proc:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, "child ended with %d:\n%s" % (proc.returncode, err)
    assert err == "", err
    raised = json.loads(out.strip().splitlines()[-1])
    assert len(raised) == 27
    assert set(raised.values()) == {"closed"}, raised


def _attach_and_write(name, w):
    seg = dshared.Segment(name, create=False)
    os.write(w, b"a")
    d = seg.col()
    i = 0
    while True:
        d["k%d" % (i % 50)] = [i, "attacher"]
        d.get("base")
        i += 1


def _drive_attacher_kills(name, seed, rounds):
    import random
    rng = random.Random(seed)
    seg = dshared.Segment(name, 8 << 20, create=True)
    try:
        root = seg.col()
        root["base"] = {"kept": [1, 2, 3]}
        attached = slow = 0
        with Children() as ch:
            for i in range(rounds):
                r, w = os.pipe()
                pid = ch.fork(_attach_and_write, name, w)
                os.close(w)
                time.sleep(rng.uniform(0, 0.004))
                ch.kill(pid)
                attached += len(read_all(r))
                t = time.monotonic()
                with seg.lock(timeout=2):           # LockTimeout fails the test
                    root["round"] = i
                slow += time.monotonic() - t > 1
        return {"attached": attached, "slow": slow, "base": root["base"].to_python(), "round": root["round"],
                "repairs": seg.stats()["repairs"], "problems": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.timeout(60)
def test_attachers_killed_while_attaching_or_writing(shm_name):
    """100 processes SIGKILLed at random moments from the start of
    Segment(create=False) into their first writes: the segment stays
    usable (the lock within 2 s, a repair where a writer died holding it)
    and checks clean."""
    seed = test_seed()
    r = run_driver("test_lifecycle", "_drive_attacher_kills", shm_name, seed, 100, timeout=50)
    print(r)
    assert r["problems"] == [] and r["slow"] == 0
    assert r["base"] == {"kept": [1, 2, 3]} and r["round"] == 99
    # the kills landed both before and after attaching finished, and some
    # while the lock was held
    assert 0 < r["attached"] < 100, r
    assert r["repairs"] >= 1, r


def _close_in_child(name, w):
    seg = dshared.attach(name)          # the handle the parent holds locked, inherited
    try:
        seg.close()
        os.write(w, b"closed")
    except BaseException as e:          # noqa: BLE001: the parent reports it
        os.write(w, repr(e).encode())


def _drive_close_after_fork_under_lock(name):
    seg = dshared.init(name, 1 << 20)
    try:
        seg.col()["x"] = 1
        with seg.lock():
            with Children() as ch:
                r, w = os.pipe()
                pid = ch.fork(_close_in_child, name, w)
                os.close(w)
                got = read_all(r).decode()
                ch.wait(pid, 10)
        seg.col()["x"] = 2                  # the parent's lock and mapping are intact
        return {"child": got, "x": seg.col()["x"], "problems": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.timeout(60)
def test_child_forked_under_the_parents_lock_can_close_its_handle(shm_name):
    """A child forked while the parent held the lock does not hold it: its
    close() unmaps instead of refusing as if it were the lock's holder."""
    r = run_driver("test_lifecycle", "_drive_close_after_fork_under_lock", shm_name, timeout=50)
    assert r == {"child": "closed", "x": 2, "problems": []}, r
