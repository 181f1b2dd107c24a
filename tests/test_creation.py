"""Racing creators agree (RELIABILITY.md 8). A segment is built under a
private temporary name and link()ed into place, so a name in /dev/shm is
always a complete segment, and the decision between racing creators is that
one link().

* Races: 4 processes released together call dshared.init(name),
  Segment(name) or dshared.attach(name), then incr("n"), on every state of
  the name: absent; a temporary file left by a creator killed at one of its
  creation steps (crash-point hook), or at a random moment (SIGKILL); a
  creator stopped (SIGSTOP) at a random moment of its init(), resumed after
  the race; a complete segment. Each race: n == 4 afterwards, one initialisation (one
  creator, one hash seed, one file for all), no error, check() clean. The
  time from the release to the last racer attached is reported.
* A creator killed at each creation step leaves no name or a complete one;
  the next init() works, and the dead creator's temporary file goes.
* A file at the name that is not a complete segment (0 bytes, shorter than a
  header, no magic, the old "being created" marker) gives every one of 4
  racers the same CorruptSegmentError and is left as it was.
"""
import fcntl
import json
import os
import random
import signal
import statistics
import time

import pytest

import dshared
from dshared import _heap
from _proc import Children, read_all, run_driver, test_seed, unlink_quietly, wait_pid

RACERS = 4
SIZE = 8 << 20
SEED_AT = 64                    # Header.seed0, seed1: the hash seed made at initialisation
SHM = "/dev/shm/"


def _temps(name):
    """Every file in /dev/shm that looks like a temporary file of `name`."""
    return sorted(n for n in os.listdir(SHM) if n.startswith("." + name + "."))


def _seed(name):
    with open(SHM + name, "rb") as f:
        return f.read(SEED_AT + 16)[SEED_AT:].hex()


def _count_creation_points():
    _heap.test_hooks(crash_at=10 ** 9)
    name = "dsh-count-%d" % os.getpid()
    try:
        dshared.Segment(name, SIZE, create=True).close()
    finally:
        n = _heap.test_hooks(crash_at=0)
        unlink_quietly(name)
    return n


# -- children ---------------------------------------------------------------------------

def _creator(name, crash_at):
    if crash_at:
        _heap.test_hooks(crash_at=crash_at)
    dshared.Segment(name, SIZE, create=True)


def _racer(name, mode, go_r, out_w, hold_r=None):
    if go_r is not None:
        os.read(go_r, 1)                                # the barrier: all released at once
    res = {"mode": mode, "t0": time.monotonic()}
    try:
        if mode == "init":
            seg = dshared.init(name, SIZE)
        elif mode == "segment":
            seg = dshared.Segment(name, SIZE)
        else:
            seg = dshared.attach(name)
        res["t"] = time.monotonic()
        res["seed"] = _seed(name)                       # as found on attaching
        if hold_r is not None:
            # the stopped creator increments once resumed: stopped while it
            # held the segment lock, it would stop the racers too (a live
            # holder is never robbed), which is not what this state tests
            os.read(hold_r, 1)
        seg.col().incr("n")
        res["seed_after"] = _seed(name)
        res["created"] = bool(seg.created)
        res["file"] = list(seg._file_key())
    except Exception as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
    data = json.dumps(res).encode()
    while data:
        data = data[os.write(out_w, data):]
    os.close(out_w)


def _race(ch, name, modes, timeout=30):
    """Release len(modes) racers at once; their results, the release time."""
    go_r, go_w = os.pipe()
    outs = []
    for mode in modes:
        r, w = os.pipe()
        pid = ch.fork(_racer, name, mode, go_r, w)
        os.close(w)
        outs.append((pid, r))
    os.close(go_r)
    time.sleep(0.002)                                   # let them all reach the barrier
    t0 = time.monotonic()
    os.write(go_w, b"x" * len(modes))
    os.close(go_w)
    results = []
    for pid, r in outs:
        data = read_all(r)
        code = ch.wait(pid, timeout)
        res = json.loads(data) if data else {"error": "racer exit %s, no result" % code}
        res["exit"] = code
        results.append(res)
    return results, t0


# -- the driver -------------------------------------------------------------------------

STATES = ("absent", "killed at a step", "killed at random", "creator stopped", "complete")


def _drive_races(prefix, seed, races):
    rng = random.Random(seed)
    points = _count_creation_points()
    out = {"points": points, "races": 0, "lost": [], "errors": [], "inits": [], "problems": [],
           "temps_left": [], "creator_exits": {}, "found": {}, "ms": [], "call_ms": []}
    with Children() as ch:
        for i in range(races):
            name = "%s-%d" % (prefix, i)
            state = STATES[i % len(STATES)]
            try:
                if state == "complete":
                    dshared.Segment(name, SIZE, create=True).close()
                elif state == "killed at a step":
                    step = 1 + (i // len(STATES)) % max(points, 1)
                    code = ch.wait(ch.fork(_creator, name, step), 30)
                    key = "step %d: exit %s" % (step, code)
                    out["creator_exits"][key] = out["creator_exits"].get(key, 0) + 1
                elif state == "killed at random":
                    pid = ch.fork(_creator, name, 0)
                    time.sleep(rng.uniform(0, 0.002))
                    ch.kill(pid)
                elif state == "creator stopped":
                    # a creator alive but stopped somewhere in init(): the
                    # racers neither wait for it nor take its temporary file
                    stopped_r, w = os.pipe()
                    hold_r, hold_w = os.pipe()
                    stopped = ch.fork(_racer, name, "segment", None, w, hold_r)
                    os.close(w)
                    os.close(hold_r)
                    time.sleep(rng.uniform(0, 0.002))
                    os.kill(stopped, signal.SIGSTOP)
                exists = os.path.exists(SHM + name)
                temps = _temps(name)
                found = "%s: %s%s" % (state, "name" if exists else "no name", " + temp file" if temps else "")
                out["found"][found] = out["found"].get(found, 0) + 1
                modes = [rng.choice(("init", "segment", "attach") if exists else ("init", "segment"))
                         for _ in range(RACERS)]
                results, t0 = _race(ch, name, modes)
                n_want = RACERS
                if state == "creator stopped":
                    os.kill(stopped, signal.SIGCONT)
                    try:
                        os.write(hold_w, b"x")
                    except BrokenPipeError:
                        pass                    # it failed before: its result says how
                    os.close(hold_w)
                    data = read_all(stopped_r)
                    code = ch.wait(stopped, 30)
                    res = json.loads(data) if data else {"error": "creator exit %s, no result" % code}
                    res["exit"] = code
                    results.append(res)
                    n_want += 1
                out["races"] += 1
                errors = [r for r in results if "error" in r or r["exit"] != 0]
                out["errors"] += ["race %d (%s): %s %s" % (i, found, r["mode"], r.get("error", r["exit"]))
                                  for r in errors]
                if errors:
                    continue
                out["ms"].append(1000 * (max(r["t"] for r in results[:RACERS]) - t0))
                out["call_ms"].append(1000 * max(r["t"] - r["t0"] for r in results[:RACERS]))
                seg = dshared.Segment(name, create=False)
                try:
                    n = seg.col().get("n")
                    rep = seg.check()
                    key = list(seg._file_key())
                finally:
                    seg.close()
                if n != n_want:
                    out["lost"].append("race %d (%s): n == %r after %d incr()" % (i, found, n, n_want))
                if not rep.ok:
                    out["problems"].append("race %d (%s): %s" % (i, found, rep.problems[:3]))
                seeds = {r["seed"] for r in results} | {r["seed_after"] for r in results}
                files = {tuple(r["file"]) for r in results} | {tuple(key)}
                creators = sum(r["created"] for r in results)
                # the name was absent before the stopped creator began
                want_creators = 1 if state == "creator stopped" or not exists else 0
                if len(seeds) != 1 or len(files) != 1 or creators != want_creators:
                    out["inits"].append("race %d (%s): %d seeds, %d files, %d creators"
                                        % (i, found, len(seeds), len(files), creators))
            finally:
                try:
                    dshared.unlink(name)
                except FileNotFoundError:
                    pass
                left = _temps(name)
                if left:
                    out["temps_left"].append(left)
                    for t in left:
                        unlink_quietly(t)
    return out


def _report(r):
    print("%d races of %d racers, %d creation points; states found: %r" % (r["races"], RACERS, r["points"], r["found"]))
    for what, key in (("race time (release to the last racer attached)", "ms"),
                      ("slowest racer's own init()/Segment()/attach() call in each race", "call_ms")):
        ms = sorted(r[key])
        if ms:
            print("%s: median %.2f ms, p99 %.2f ms, max %.2f ms"
                  % (what, statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1]))
    print("creators killed at a step: %r" % r["creator_exits"])
    print("spurious errors %d, races with lost increments %d, races not initialised once %d, "
          "check() failures %d, temporary files left %d"
          % (len(r["errors"]), len(r["lost"]), len(r["inits"]), len(r["problems"]), len(r["temps_left"])))


def _check(r, races):
    _report(r)
    assert not r["errors"], "%d spurious errors, e.g. %s" % (len(r["errors"]), r["errors"][:5])
    assert not r["lost"], "%d races lost increments, e.g. %s" % (len(r["lost"]), r["lost"][:5])
    assert not r["inits"], "%d races did not initialise once, e.g. %s" % (len(r["inits"]), r["inits"][:5])
    assert not r["problems"], r["problems"][:5]
    assert not r["temps_left"], "temporary files left: %s" % r["temps_left"][:5]
    assert r["races"] == races
    # the crash-point hook covers every creation step, and a killed creator
    # left each of the two states: a temporary file only, a complete segment
    assert r["points"] >= 6
    assert all(k.endswith("exit 77") for k in r["creator_exits"]), r["creator_exits"]
    assert r["found"].get("killed at a step: no name + temp file")
    assert r["found"].get("killed at a step: name + temp file") or r["found"].get("killed at a step: name")


@pytest.mark.timeout(120)
def test_racing_init_on_every_state(shm_name):
    """150 races of 4 racers over absent, dead creator's leftover, a
    creator stopped mid-way, and complete names: one initialisation, no lost
    increment, no error (1,500 under -m slow)."""
    races = 150
    r = run_driver("test_creation", "_drive_races", shm_name, test_seed(), races, timeout=110)
    _check(r, races)


@pytest.mark.slow
@pytest.mark.timeout(270)
def test_racing_init_on_every_state_long(shm_name):
    """The same at 10 times the scale (kept under the run's faulthandler
    timeout even on a loaded 2-core host)."""
    races = 1500
    r = run_driver("test_creation", "_drive_races", shm_name, test_seed(), races, timeout=250)
    _check(r, races)


# -- a creator killed at each step ------------------------------------------------------

def _drive_step_kills(prefix):
    points = _count_creation_points()
    out = {"points": points, "steps": []}
    with Children() as ch:
        for step in range(1, points + 2):
            name = "%s-%d" % (prefix, step)
            res = {"step": step}
            try:
                res["exit"] = ch.wait(ch.fork(_creator, name, step), 30)
                res["name"] = os.path.exists(SHM + name)
                res["temps"] = len(_temps(name))
                if res["name"]:
                    with dshared.Segment(name, create=False) as seg:
                        res["complete"] = seg.check().ok and seg.col().to_python() == {}
                t = time.monotonic()
                with dshared.Segment(name, SIZE) as seg:           # init's way
                    seg.col().incr("n")
                    res["created"] = seg.created
                    res["ok"] = seg.check().ok and seg.col()["n"] == 1
                res["init_ms"] = 1000 * (time.monotonic() - t)
                res["temps_after_init"] = len(_temps(name))
                dshared.unlink(name)
                res["temps_after_unlink"] = _temps(name)
            except Exception as e:
                res["error"] = "%s: %s" % (type(e).__name__, e)
            finally:
                unlink_quietly(name)
                for t in _temps(name):
                    unlink_quietly(t)
            out["steps"].append(res)
    return out


def test_creator_killed_at_each_step(shm_name):
    """The crash-point hook kills the creator at each step of its creation:
    the name is then absent (a temporary file remains) or a complete
    segment; the next init() works at once; the temporary file goes at the
    next creation of the name, or at dshared.unlink(name)."""
    r = run_driver("test_creation", "_drive_step_kills", shm_name, timeout=110)
    for s in r["steps"]:
        print(s)
    assert r["points"] >= 6
    steps = r["steps"]
    assert not [s for s in steps if "error" in s], steps
    assert [s["exit"] for s in steps] == [77] * r["points"] + [0]
    for s in steps:
        assert s["ok"], s
        if s["name"]:
            assert s["complete"] and not s["created"], s
        else:
            assert s["created"] and s["temps"] == 1 and s["temps_after_init"] == 0, s
        assert s["temps_after_unlink"] == [], s
    # both outcomes occur: killed before the link (no name) and after it
    assert not steps[0]["name"] and steps[-1]["name"]


# -- what is at the name is not a segment -----------------------------------------------

def _bad_states():
    marker = b"DSHAREDc"        # what an older dshared wrote while creating
    return {
        "empty": b"",
        "short": b"\0" * 100,
        "old marker, short": marker + bytes(100),
        "zeros": bytes(65536),
        "old marker, sized": marker + bytes(65536 - 8),
        "text": b"not a dshared segment " * 3000,
    }


def _drive_bad_races(prefix, rounds):
    out = []
    with Children() as ch:
        for label, content in sorted(_bad_states().items()) + [("truncated segment", None)]:
            for i in range(rounds):
                name = "%s-%d-%d" % (prefix, len(out), i)
                try:
                    if content is None:
                        dshared.Segment(name, SIZE, create=True).close()
                        os.truncate(SHM + name, 0)
                        want = b""
                    else:
                        fd = os.open(SHM + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                        os.write(fd, content)
                        os.close(fd)
                        want = content
                    modes = ["init", "segment", "attach", "init"]
                    results, _ = _race(ch, name, modes)
                    with open(SHM + name, "rb") as f:
                        same = f.read() == want
                    out.append({"state": label, "results": results, "unchanged": same,
                                "temps": _temps(name)})
                finally:
                    unlink_quietly(name)
                    for t in _temps(name):
                        unlink_quietly(t)
    return out


def test_not_a_segment_at_the_name_is_an_error_for_every_racer(shm_name):
    """0 bytes, shorter than a header, no magic, an old creation marker, a
    segment truncated to 0: not a creation under way (creation is atomic),
    so every racer, init() included, gets the same CorruptSegmentError, and
    nobody re-creates the segment over it."""
    r = run_driver("test_creation", "_drive_bad_races", shm_name, 5, timeout=110)
    for race in r:
        for res in race["results"]:
            err = res.get("error", "")
            assert err.startswith("CorruptSegmentError") and "truncated or not a dshared segment" in err \
                and "dshared.unlink(" in err, (race["state"], res)
        assert race["unchanged"] and race["temps"] == [], race
    print("%d races, every racer refused: %s" % (len(r), sorted({x["state"] for x in r})))


def test_corrupt_name_message(shm_name):
    fd = os.open(SHM + shm_name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    try:
        for call in (lambda: dshared.init(shm_name), lambda: dshared.Segment(shm_name, create=False)):
            with pytest.raises(dshared.CorruptSegmentError) as ei:
                call()
            assert str(ei.value) == ("segment %r is only 0 bytes: truncated or not a dshared segment; "
                                     "dshared.unlink(%r) removes it" % (shm_name, shm_name))
        dshared.unlink(shm_name)
        with dshared.init(shm_name) as seg:
            assert seg.created
    finally:
        unlink_quietly(shm_name)


# -- temporary files --------------------------------------------------------------------

def _temp(name, hexpart="0123456789abcdef"):
    return "." + name + ".dsh-new-" + hexpart


def test_dead_creators_temporary_files_are_removed_live_ones_kept(shm_name):
    """A never-linked temporary file nobody holds a flock on is a dead
    creator's, and a temporary name that is a second link of a segment in
    place is a leftover too: the next creation of the name (or
    dshared.unlink) removes them. One whose creator holds its exclusive flock
    (building) or its shared one (about to link) stays; so do files that only
    look alike."""
    dead, live, linking, second = (_temp(shm_name, c * 16) for c in "0123")
    other = [_temp(shm_name, "notahexnumber!!!"), _temp(shm_name + "x", "4" * 16), _temp(shm_name, "5" * 15)]
    fds = []
    seg = None
    try:
        for t in [dead, live, linking] + other:
            fds.append(os.open(SHM + t, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        fcntl.flock(fds[1], fcntl.LOCK_EX)
        fcntl.flock(fds[2], fcntl.LOCK_SH)
        os.close(fds.pop(0))                    # the dead creator's: no flock left
        seg = dshared.Segment(shm_name, create=True)
        assert _temps(shm_name) == sorted([live, linking, other[0], other[2]])
        # a creator killed between its link() and removing its temporary
        # name: the segment is in place, and in use (seg holds LOCK_SH)
        os.link(SHM + shm_name, SHM + second)
        os.close(fds.pop(0))                    # the live creator is gone
        dshared.unlink(shm_name)
        assert _temps(shm_name) == sorted([linking, other[0], other[2]])
        assert seg.col().get("x") is None       # the segment still works
        os.close(fds.pop(0))
        with pytest.raises(FileNotFoundError):
            dshared.unlink(shm_name)            # no segment; its dead temporary file goes anyway
        assert _temps(shm_name) == sorted([other[0], other[2]])
    finally:
        if seg is not None:
            seg.close()
        for fd in fds:
            os.close(fd)
        for t in [dead, live, linking, second] + other:
            unlink_quietly(t)


def test_creation_keeps_0600_and_leaves_no_temporary_file(shm_name):
    """A creation, and one refused because the name exists, leave no
    temporary file of their own and remove a dead creator's; the segment is
    0600 whatever the umask."""
    old = os.umask(0o277)                       # even a umask that takes the owner's write bit
    try:
        with dshared.Segment(shm_name, create=True) as seg:
            assert seg.created
    finally:
        os.umask(old)
    dead = _temp(shm_name)
    try:
        assert _temps(shm_name) == []
        assert os.stat(SHM + shm_name).st_mode & 0o777 == 0o600
        os.close(os.open(SHM + dead, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        with pytest.raises(FileExistsError) as ei:
            dshared.Segment(shm_name, create=True)
        assert ei.value.filename == shm_name
        assert _temps(shm_name) == []
        with dshared.Segment(shm_name) as seg:
            assert not seg.created
    finally:
        unlink_quietly(dead)
        dshared.unlink(shm_name)
