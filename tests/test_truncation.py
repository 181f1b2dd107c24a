"""Faults on the mapping (issue 11, item 3; RELIABILITY.md promise 9).

Another process of the same user can truncate a segment's file; a page past
the new end of the mapping then raises SIGBUS on the next touch, which used to
kill every attached process. dshared's fault handler (include/dshared_fault.h)
turns such a fault into CorruptSegmentError in the process that met it, and
hands every other fault to the handler installed before it (faulthandler's,
or the default action). Each scenario runs in fresh interpreters; no process
may die of a signal unless the fault was not dshared's.
"""
import json
import os
import select
import signal
import time

import pytest

import dshared

from _helpers import run_python
from _proc import Children, run_driver, watchdog

N_KEYS = 3000


# =====================================================================================
# The segment file truncated while 3 processes read and write
# =====================================================================================

def _populate(seg):
    root = seg.col()
    for i in range(N_KEYS):
        root["k%d" % i] = "value %d " % i * 30
    root["l"] = list(range(2000))
    return root


def _walk(root):
    """Reads over the whole heap: every key, the list."""
    n = 0
    for i in range(N_KEYS):
        n += len(root["k%d" % i])
    n += len(root["l"])
    return n


def _trunc_worker(name, wid, ready_fd, seconds):
    """Read everything and write, in a loop, until CorruptSegmentError: exit 0
    if it came (and close() then works), 3 if it never came."""
    watchdog(60)
    seg = dshared.Segment(name, create=False)
    root = seg.col()
    n = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            _walk(root)
            root["w%d-%d" % (wid, n % 40)] = "w" * (100 + 97 * (n % 50))
            root["l"].append(n)
            if n % 10 == 9:
                del root["w%d-%d" % (wid, (n - 9) % 40)]
            n += 1
            if n == 1:
                os.write(ready_fd, b"r")
    except dshared.CorruptSegmentError as e:
        print("worker %d after %d loops: %s" % (wid, n, e), flush=True)
        seg.close()
        os._exit(0)
    os._exit(3)


def _drive_truncation(name, size):
    """Three workers loop over the segment; the file is truncated to `size`
    (an int, or "half": half of the used bytes); each worker's exit code and
    what this (the creating) process then gets."""
    seg = dshared.Segment(name, 64 << 20, create=True)
    try:
        root = _populate(seg)
        used = seg.stats()["used"]
        nbytes = used // 2 if size == "half" else size
        r, w = os.pipe()
        with Children() as ch:
            pids = [ch.fork(_trunc_worker, name, wid, w, 30) for wid in range(3)]
            got = b""
            deadline = time.monotonic() + 30
            while len(got) < 3 and time.monotonic() < deadline:
                if select.select([r], [], [], 1)[0]:
                    got += os.read(r, 3)
            assert len(got) == 3, "workers did not start"
            time.sleep(0.1)
            os.truncate("/dev/shm/" + name, nbytes)
            codes = [ch.wait(pid, 40) for pid in pids]
        size_after = os.stat("/dev/shm/" + name).st_size
        errors = []
        for op in ("walk", "write", "lock", "stats"):
            try:
                if op == "walk":
                    _walk(root)
                elif op == "write":
                    root["after"] = 1
                elif op == "lock":
                    with seg.lock():
                        pass
                else:
                    seg.stats()
                errors.append(None)
            except dshared.CorruptSegmentError as e:
                errors.append(str(e))
        seg.close()
        return {"codes": codes, "errors": errors, "truncated_to": nbytes, "used": used,
                "size_after": size_after}
    finally:
        dshared.unlink(name)


@pytest.mark.parametrize("size", [0, 4096, 65536, "half"])
def test_truncated_file_gives_corrupt_segment_error_to_every_process(shm_name, size):
    r = run_driver("test_truncation", "_drive_truncation", shm_name, size, timeout=120)
    assert r["used"] > 4 * 65536 and r["truncated_to"] < r["used"]
    # no process died by a signal, and each one met the truncation
    assert r["codes"] == [0, 0, 0], r
    # no writer grew the file back (a write caught between its fault and its
    # check once did, and the creator then read zeros: a stale view, not the fault)
    assert r["size_after"] == r["truncated_to"], r
    # the creator too: every operation raises, nothing crashes. (A writer that
    # faulted inside its write rolls it back over pages that are gone: that
    # repair fails and poisons the segment, which every process then reports.)
    assert all(e and ("truncated or damaged by another process" in e or "marked corrupt by a failed repair" in e)
               for e in r["errors"]), r


# =====================================================================================
# A write that faults is not committed and gives the lock back; lock waiters
# =====================================================================================

def _lock_probe(name, go_fd, out_fd):
    """Attached before the truncation: waits for `go`, then takes the lock."""
    watchdog(60)
    seg = dshared.Segment(name, create=False)
    os.read(go_fd, 1)
    try:
        ok = seg.acquire(timeout=10)
        seg.release()
        os.write(out_fd, b"locked" if ok else b"no")
    except dshared.LockTimeout:
        os.write(out_fd, b"timeout")
    os._exit(0)


def _drive_faulting_writer(name):
    seg = dshared.Segment(name, 64 << 20, create=True)
    try:
        root = _populate(seg)
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        with Children() as ch:
            pid = ch.fork(_lock_probe, name, go_r, out_w)
            time.sleep(0.2)
            os.truncate("/dev/shm/" + name, 65536)      # the header page stays
            res = {}
            try:
                # allocates past the new end of the file: faults while it fills its block
                root["big"] = "x" * (1 << 20)
                res["write"] = None
            except dshared.CorruptSegmentError as e:
                res["write"] = str(e)
            try:
                root.get("k0")
                res["read_after"] = None
            except dshared.CorruptSegmentError as e:
                res["read_after"] = str(e)
            # the other process can take the lock: the faulting writer gave it back
            os.write(go_w, b"g")
            res["code"] = ch.wait(pid, 30)
            res["probe"] = os.read(out_r, 16).decode()
        res["size_after"] = os.stat("/dev/shm/" + name).st_size
        seg.close()
        return res
    finally:
        dshared.unlink(name)


def test_writer_that_faults_raises_and_releases_the_lock(shm_name):
    r = run_driver("test_truncation", "_drive_faulting_writer", shm_name, timeout=90)
    assert r["write"] and "truncated" in r["write"], r
    assert r["read_after"] and "truncated" in r["read_after"], r   # poisoned for this process
    assert r["code"] == 0 and r["probe"] == "locked", r
    # backing the write's new pages did not extend the file again: the lost
    # pages would read as zeros in every other process, not as the fault
    assert r["size_after"] == 65536, r


def _waiter(name, go_fd, ready_fd, out_fd):
    watchdog(60)
    seg = dshared.Segment(name, create=False)
    os.read(go_fd, 1)
    os.write(ready_fd, b"w")
    t0 = time.monotonic()
    try:
        with seg.lock():
            os.write(out_fd, b"locked")
    except dshared.CorruptSegmentError:
        os.write(out_fd, b"corrupt %.3f" % (time.monotonic() - t0))
    seg.close()
    os._exit(0)


def _drive_lock_held(name):
    """The file is truncated to 0 (the mutex's page goes) while this process
    holds the lock and another waits for it."""
    seg = dshared.Segment(name, 64 << 20, create=True)
    res = {}
    try:
        root = _populate(seg)
        ready_r, ready_w = os.pipe()
        out_r, out_w = os.pipe()
        go_r, go_w = os.pipe()
        with Children() as ch:
            # forked before the lock is taken (a child forked under it inherits the lock state)
            pid = ch.fork(_waiter, name, go_r, ready_w, out_w)
            with seg.lock():
                os.write(go_w, b"g")
                os.read(ready_r, 1)
                time.sleep(0.3)
                os.truncate("/dev/shm/" + name, 0)
                try:
                    root["x"] = 1
                except dshared.CorruptSegmentError as e:
                    res["write"] = str(e)
            res["code"] = ch.wait(pid, 30)
            res["waiter"] = os.read(out_r, 64).decode()
        try:
            seg.acquire()
        except dshared.CorruptSegmentError as e:
            res["acquire"] = str(e)
        seg.close()
    finally:
        dshared.unlink(name)
    # this thread locked the mutex whose page went: other segments' mutexes
    # still lock and unlock (its robust list is intact)
    other = dshared.Segment(name + "-b", 1 << 20, create=True)
    try:
        for i in range(3):
            with other.lock():
                other.col()["i"] = i
        res["other"] = other.col()["i"]
        other.close()
    finally:
        dshared.unlink(name + "-b")
    return res


def test_truncated_under_a_held_lock_and_a_waiter(shm_name):
    r = run_driver("test_truncation", "_drive_lock_held", shm_name, timeout=90)
    assert "truncated" in r.get("write", ""), r
    assert "truncated" in r.get("acquire", ""), r
    assert r["code"] == 0 and r["waiter"].startswith("corrupt"), r
    assert r["other"] == 2, r


# =====================================================================================
# The handler takes only dshared's faults: every other one reaches the handler
# that was there before (faulthandler, a plain one, ignored, the default)
# =====================================================================================

# Each child first survives a truncation of a dshared segment (what the old
# code could not), then faults outside any dshared mapping.
CHILD_HEAD = r"""
import ctypes, faulthandler, mmap, os, signal, sys, tempfile
import dshared
setup, fault = sys.argv[1], sys.argv[2]
name = sys.argv[3]
if setup == "faulthandler_first":
    faulthandler.enable()
elif setup == "ignored":
    signal.signal(signal.SIGBUS, signal.SIG_IGN)
    signal.signal(signal.SIGSEGV, signal.SIG_IGN)
def caught(sig):
    with open("/proc/self/status") as f:
        mask = [int(ln.split()[1], 16) for ln in f if ln.startswith("SigCgt:")][0]
    return bool(mask >> (sig - 1) & 1)
assert caught(signal.SIGBUS) == (setup == "faulthandler_first")
seg = dshared.Segment(name, 16 << 20, create=True)
try:
    root = seg.col()
    for i in range(2000):
        root["k%d" % i] = "v" * 300
    assert caught(signal.SIGBUS) and caught(signal.SIGSEGV)    # dshared's handler
    if setup == "faulthandler_after":
        faulthandler.enable()
    os.truncate("/dev/shm/" + name, 0)
    try:
        root["k1999"]
        print("NO ERROR", flush=True)
    except dshared.CorruptSegmentError as e:
        print("dshared fault: CorruptSegmentError", flush=True)
    seg.close()
finally:
    dshared.unlink(name)
# an intact segment stays mapped (its name already gone) while the fault happens
keep = dshared.Segment(name + "-keep", 1 << 20, create=True)
keep.unlink()
keep.col()["x"] = 1
sys.stdout.flush(); sys.stderr.flush()
if fault == "segv":
    ctypes.string_at(0)
elif fault == "bus":
    fd, path = tempfile.mkstemp(dir="/dev/shm", prefix=name + "-plain")
    os.ftruncate(fd, 1 << 20)
    m = mmap.mmap(fd, 1 << 20)
    os.ftruncate(fd, 0)
    os.unlink(path)
    m[65536]
elif fault == "kill":
    os.kill(os.getpid(), signal.SIGBUS)
    import time; time.sleep(5)
print("STILL ALIVE", flush=True)
"""


@pytest.mark.parametrize("setup,fault,sig,dump", [
    ("faulthandler_first", "segv", signal.SIGSEGV, "Fatal Python error: Segmentation fault"),
    ("faulthandler_first", "bus", signal.SIGBUS, "Fatal Python error: Bus error"),
    ("default", "segv", signal.SIGSEGV, None),
    ("default", "bus", signal.SIGBUS, None),
    ("default", "kill", signal.SIGBUS, None),
    ("ignored", "bus", signal.SIGBUS, None),
    ("faulthandler_after", "segv", signal.SIGSEGV, "Fatal Python error: Segmentation fault"),
])
def test_other_faults_reach_the_previous_handler(shm_name, setup, fault, sig, dump):
    r = run_python(CHILD_HEAD, setup, fault, shm_name, timeout=60, check=False)
    assert "dshared fault: CorruptSegmentError" in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert "STILL ALIVE" not in r.stdout
    assert r.returncode == -sig, (r.returncode, r.stdout, r.stderr)
    if dump:
        # faulthandler saw the foreign fault and printed the Python stack
        assert dump in r.stderr and 'File "<string>"' in r.stderr, r.stderr
    if setup != "faulthandler_after":
        # the dshared fault itself printed nothing: no handler above dshared's saw it
        assert "Bus error" not in r.stderr or fault == "bus", r.stderr
        assert r.stderr.count("Fatal Python error") <= 1, r.stderr


def test_faulthandler_enabled_after_dshared_import(shm_name):
    """faulthandler.enable() after `import dshared`: a truncation gives
    CorruptSegmentError and no dump (dshared's handler sits above
    faulthandler's, so faulthandler never sees dshared's faults); a stray
    fault still gives faulthandler's dump and kills with its signal.
    (faulthandler enabled after a segment is mapped: see the
    "faulthandler_after" case above.)"""
    code = r"""
import ctypes, faulthandler, os, sys
import dshared
name = sys.argv[1]
faulthandler.enable()
for n in (name, name + "-b"):
    seg = dshared.Segment(n, 16 << 20, create=True)
    try:
        seg.col()["x"] = "a" * 100000
        os.truncate("/dev/shm/" + n, 4096)
        try:
            seg.col()["x"]
            print("NO ERROR")
        except dshared.CorruptSegmentError as e:
            print("ok")
        seg.close()
    finally:
        dshared.unlink(n)
sys.stdout.flush()
sys.stderr.write("FOREIGN FAULT\n")
sys.stderr.flush()
ctypes.string_at(0)
"""
    r = run_python(code, shm_name, timeout=60, check=False)
    assert r.stdout.split("\n")[:2] == ["ok", "ok"], (r.returncode, r.stdout, r.stderr)
    before, _, after = r.stderr.partition("FOREIGN FAULT\n")
    assert "Fatal Python error" not in before, r.stderr
    assert r.returncode == -signal.SIGSEGV, (r.returncode, r.stdout, r.stderr)
    assert "Fatal Python error: Segmentation fault" in after and 'File "<string>"' in after, r.stderr


# =====================================================================================
# A page /dev/shm cannot back: the same fault, the same error
# =====================================================================================

def test_a_page_dev_shm_cannot_back_gives_corrupt_segment_error():
    """A used page of the heap left without memory (punched out, as page
    return does) while /dev/shm is full: touching it raises SIGBUS, which
    dshared reports as CorruptSegmentError."""
    from test_shm_full import run_in_small_shm
    script = r"""
import ctypes, json, os, dshared
seg = dshared.Segment("dsh-fault-full", 64 << 20, create=True)
root = seg.col()
for i in range(2000):
    root["k%d" % i] = "v%d " % i * 100
fd = os.open("/dev/shm/dsh-fault-full", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
assert libc.fallocate(fd, 3, 512 << 10, 64 << 10) == 0       # PUNCH_HOLE | KEEP_SIZE
with open("/dev/shm/hog", "wb") as f:
    try:
        while True:
            f.write(b"h" * 65536)
            f.flush()
    except OSError as e:
        hog = e.errno
out = {"hog_errno": hog}
try:
    for i in range(2000):
        root["k%d" % i]
    out["read"] = None
except dshared.CorruptSegmentError as e:
    out["read"] = str(e)
seg.close()
os.unlink("/dev/shm/hog")
seg.unlink()
print(json.dumps(out))
"""
    rc, out, err = run_in_small_shm(script)
    assert rc == 0, "the child failed (rc %d):\n%s\n%s" % (rc, out, err)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["hog_errno"] == 28, r
    assert r["read"] and "truncated or damaged" in r["read"], r
