"""The operations API: dshared.segments(), Segment.collections(),
Segment.attached(), the warning of init() on a smaller existing segment,
dshared.to_python for json, and the records on logging.getLogger("dshared")."""
import json
import logging
import mmap
import os
import struct
import sys
import threading

import pytest

import dshared
from _helpers import run_python
from _proc import Children, Popen, run_driver

SHM = "/dev/shm/"
# header fields the tests poke at (dshared/_heap.pxd: Header)
OFF_CAPACITY = 56
OFF_FLAGS = 80
FLAG_POISONED = 1


def _poke_flags(name, capacity, bits):
    """Set `bits` in the header's flags word of segment `name`, checking
    first that the capacity field is where these tests expect it."""
    with open(SHM + name, "r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
        assert struct.unpack_from("<Q", m, OFF_CAPACITY)[0] == capacity
        flags = struct.unpack_from("<Q", m, OFF_FLAGS)[0]
        struct.pack_into("<Q", m, OFF_FLAGS, flags | bits)


def _remove(*names):
    for n in names:
        try:
            os.unlink(SHM + n)
        except FileNotFoundError:
            pass


# -- segments() ----------------------------------------------------------------------

def test_segments_describes_a_segment(segment, shm_name):
    root = segment.col()
    root["d"] = {"k": "v" * 100}
    segment.col("users")["bob"] = 1
    segment.col("jobs")
    found = dshared.segments(shm_name)
    assert [s["name"] for s in found] == [shm_name]
    s = found[0]
    st = os.stat(SHM + shm_name)
    stats = segment.stats()
    assert s["uid"] == os.getuid() and s["mode"] == "600"
    assert s["capacity"] == 64 << 20 == segment.capacity
    assert s["used"] == stats["used"] and s["reserved"] == stats["reserved"]
    assert s["backed"] == st.st_blocks * 512 > 0
    assert s["collections"] == 2
    assert os.getpid() in s["pids"] and s["attached"] == len(s["pids"])
    assert s["repairs"] == 0
    assert (s["state"], s["problem"]) == ("ok", None)
    # a pattern that matches nothing
    assert dshared.segments(shm_name + "-nothing*") == []


def test_segments_lists_only_dshared_files(shm_name):
    plain = shm_name + "-plain"
    truncated = shm_name + "-magic"
    temp = "." + shm_name + ".dsh-new-0123456789abcdef"
    try:
        with open(SHM + plain, "wb") as f:
            f.write(os.urandom(65536))
        with open(SHM + truncated, "wb") as f:         # dshared's magic, then nothing valid
            f.write((0x3144455241485344).to_bytes(8, "little") + bytes(65536 - 8))
        with open(SHM + temp, "wb") as f:              # a dead creator's temporary file
            f.write(bytes(4096))
        for n in (plain, truncated, temp):
            os.chmod(SHM + n, 0o600)
        found = {s["name"]: s for s in dshared.segments(shm_name + "*")}
        assert set(found) == {truncated, temp}
        assert found[truncated]["state"] == "not-a-segment"
        assert "version" in found[truncated]["problem"] or "magic" in found[truncated]["problem"]
        assert found[temp]["state"] == "half-created"
        assert "died" in found[temp]["problem"] and found[temp]["attached"] == 0
    finally:
        _remove(plain, truncated, temp)


def test_segments_reports_a_poisoned_segment(make_segment, shm_name):
    seg = make_segment(1 << 20)
    seg.col()["x"] = 1
    _poke_flags(shm_name, 1 << 20, FLAG_POISONED)
    assert seg.poisoned
    (s,) = dshared.segments(shm_name)
    assert s["state"] == "poisoned" and "corrupt" in s["problem"]
    assert s["collections"] is None


def test_segment_magic_is_what_segments_looks_for(segment, shm_name):
    with open(SHM + shm_name, "rb") as f:
        assert f.read(8) == dshared._ops.MAGIC


# -- collections() and attached() --------------------------------------------------------

def test_collections_lists_the_named_collections(segment):
    assert segment.collections() == []
    segment.col()["not-named"] = {}
    segment.col("users")["a"] = 1
    segment.col("jobs")
    assert segment.collections() == ["users", "jobs"]
    assert "not-named" not in segment.collections()


def test_attached_sees_an_unrelated_process(segment, shm_name):
    code = """
import sys, dshared
seg = dshared.attach(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""
    assert segment.attached() == [os.getpid()]
    with Popen(code, shm_name, stdin=-1) as child:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        assert sorted(segment.attached()) == sorted([os.getpid(), child.pid])
        child.stdin.close()
        assert child.wait(30) == 0
    assert segment.attached() == [os.getpid()]


def drv_forked_child_attached(name):
    """Driver: a forked child (which inherits the mapping) is seen by
    attached() in its parent."""
    seg = dshared.attach(name)
    r, w = os.pipe()
    with Children() as ch:
        pid = ch.fork(lambda: os.read(r, 1))
        os.close(r)
        # the child opens its own description of the segment after fork
        seen = seg.attached()
        os.write(w, b"x")
        os.close(w)
        code = ch.wait(pid, 30)
    after = seg.attached()
    seg.close()
    return {"child": pid, "me": os.getpid(), "seen": seen, "after": after, "code": code}


def test_attached_sees_a_forked_child(segment, shm_name):
    res = run_driver("test_ops_api", "drv_forked_child_attached", shm_name, timeout=60)
    assert res["code"] == 0
    assert res["child"] in res["seen"] and res["me"] in res["seen"]
    assert res["child"] not in res["after"]


# -- init() on a smaller existing segment ---------------------------------------------------

def test_init_warns_when_the_existing_segment_is_smaller(make_segment, shm_name, caplog):
    make_segment(1 << 20)
    caplog.set_level(logging.WARNING, logger="dshared")
    with pytest.warns(ResourceWarning, match=r"capacity 1048576 < requested size 8388608; "
                                             r"dshared.unlink\('%s'\) to recreate" % shm_name):
        seg = dshared.init(shm_name, 8 << 20)
    try:
        assert seg.capacity == 1 << 20
        recs = [r for r in caplog.records if r.name == "dshared"]
        assert len(recs) == 1 and recs[0].levelno == logging.WARNING
        assert "capacity 1048576 < requested size 8388608" in recs[0].getMessage()
    finally:
        seg.close()
    # no warning (the suite turns warnings into errors) when it is big enough
    caplog.clear()
    for size in (None, 1 << 20, 4096):
        dshared.init(shm_name, size).close()
    assert not [r for r in caplog.records if r.name == "dshared"]


def test_init_warning_as_error_fails_the_call(make_segment, shm_name):
    make_segment(1 << 20)
    with pytest.raises(ResourceWarning):          # filterwarnings = error
        dshared.init(shm_name, 2 << 20)


# -- to_python and json -------------------------------------------------------------------

def test_to_python_serves_json(root):
    plain = {"a": {"x": [1, 2.5, {"y": None}], "t": (1, "two"), "s": "é"}, "n": [True, False]}
    root.update(plain)
    want = json.dumps(plain)
    assert json.dumps(root, default=dshared.to_python) == want
    # a plain container holding views
    assert json.dumps({"v": root["a"], "l": [root["n"]]}, default=dshared.to_python) == \
        json.dumps({"v": plain["a"], "l": [plain["n"]]})
    assert type(dshared.to_python(root)) is dict and type(dshared.to_python(root["n"])) is list
    mixed = dshared.to_python([root["a"], (root["n"],)])
    assert mixed == [plain["a"], ([True, False],)] and type(mixed[1][0]) is list
    assert not isinstance(root, dict)


def test_to_python_keeps_cycles_and_rejects_what_json_cannot_hold(root):
    cyc = []
    cyc.append(cyc)
    root["c"] = cyc
    got = dshared.to_python(root["c"])
    assert got[0] is got
    root["b"] = {"raw": b"\x00\xff"}
    assert dshared.to_python(root["b"]) == {"raw": b"\x00\xff"}
    with pytest.raises(TypeError, match="bytes is not JSON serializable"):
        json.dumps(root["b"], default=dshared.to_python)
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        dshared.to_python({1, 2})
    assert dshared.to_python("s") == "s" and dshared.to_python(None) is None


# -- logging ----------------------------------------------------------------------------------

DIE_HOLDING_LOCK = """
import os, sys, dshared
seg = dshared.attach(sys.argv[1])
seg.col()["before"] = 1
with seg.lock():
    os._exit(0)
"""


def test_repair_is_logged_after_the_lock_is_released(segment, shm_name, caplog):
    caplog.set_level(logging.WARNING, logger="dshared")
    lock_free_at_emit = []

    class Probe(logging.Handler):
        def emit(self, record):
            # from another thread: the lock must be free while records are emitted
            def probe():
                try:
                    segment.acquire(timeout=0)
                except dshared.LockTimeout:
                    lock_free_at_emit.append(False)
                else:
                    segment.release()
                    lock_free_at_emit.append(True)
            t = threading.Thread(target=probe)
            t.start()
            t.join()

    probe = Probe(logging.WARNING)
    log = logging.getLogger("dshared")
    log.addHandler(probe)
    try:
        run_python(DIE_HOLDING_LOCK, shm_name, check=False)
        assert not caplog.records
        with segment.lock():
            assert not caplog.records          # not while the lock is held
        recs = [r for r in caplog.records if r.name == "dshared"]
        assert len(recs) == 1, [r.getMessage() for r in caplog.records]
        assert recs[0].levelno == logging.WARNING
        assert "repair" in recs[0].getMessage() and shm_name in recs[0].getMessage()
        assert lock_free_at_emit == [True]
        assert segment.stats()["repairs"] == 1
        assert segment.col()["before"] == 1
    finally:
        log.removeHandler(probe)


def test_repair_through_a_write_is_logged(segment, shm_name, caplog):
    caplog.set_level(logging.WARNING, logger="dshared")
    run_python(DIE_HOLDING_LOCK, shm_name, check=False)
    segment.col()["after"] = 2               # the write's lock acquire repairs
    assert [r.getMessage() for r in caplog.records if "repair" in r.getMessage()]
    assert segment.col()["after"] == 2


def test_poisoning_is_logged_once(make_segment, shm_name, caplog):
    caplog.set_level(logging.WARNING, logger="dshared")
    seg = make_segment(1 << 20)
    seg.col()["x"] = 1
    _poke_flags(shm_name, 1 << 20, FLAG_POISONED)
    with pytest.raises(dshared.CorruptSegmentError):
        seg.col()["y"] = 2
    with pytest.raises(dshared.CorruptSegmentError):     # a block cannot open either
        with seg.lock():
            pass
    with pytest.raises(dshared.CorruptSegmentError):
        seg.col()["y"] = 3
    recs = [r for r in caplog.records if r.name == "dshared"]
    assert len(recs) == 1 and recs[0].levelno == logging.WARNING
    assert "poisoned" in recs[0].getMessage() and shm_name in recs[0].getMessage()


def test_dead_creators_temp_file_removal_is_logged(shm_name, caplog):
    caplog.set_level(logging.WARNING, logger="dshared")
    temp = "." + shm_name + ".dsh-new-00112233445566ff"
    with open(SHM + temp, "wb") as f:
        f.write(bytes(4096))
    try:
        seg = dshared.Segment(shm_name, 1 << 20, create=True)
    finally:
        _remove(temp)
    try:
        assert not os.path.exists(SHM + temp)
        recs = [r for r in caplog.records if r.name == "dshared"]
        assert len(recs) == 1 and recs[0].levelno == logging.WARNING
        assert temp in recs[0].getMessage() and "died" in recs[0].getMessage()
    finally:
        seg.close()
        seg.unlink()


def test_nothing_is_printed_in_normal_use(shm_name):
    r = run_python("""
        import logging, sys, dshared
        assert logging.getLogger("dshared").handlers == []
        seg = dshared.init(sys.argv[1], 1 << 20)
        shm = dshared.col()
        for i in range(200):
            shm["k%d" % i] = {"v": [i] * 3}
        cyc = []; cyc.append(cyc); shm["c"] = cyc; del shm["c"]
        dshared.collect(); assert dshared.check().ok
        dshared.init(sys.argv[1], 1 << 20)     # same size: no warning
        seg.close(); dshared.unlink(sys.argv[1])
    """, shm_name)
    assert (r.stdout, r.stderr) == ("", "")
