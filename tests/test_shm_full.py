"""The memory behind a segment (issue 5): a /dev/shm too small for the
segment gives a clean exception, never SIGBUS; capacity is reserved lazily,
in chunks; a segment that grew and shrank gives its pages back."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import dshared
from _helpers import run_killed_on_timeout

MiB = 1 << 20

# Runs in a private mount namespace whose /dev/shm is an 8 MiB tmpfs: a
# 64 MiB segment is filled until the tmpfs cannot back it any more.
CHILD = r"""
import json, os, sys
import dshared

out = {}
st = os.statvfs("/dev/shm")
out["tmpfs_size"] = st.f_blocks * st.f_frsize
seg = dshared.Segment("dsh-full-a", 64 << 20, create=True)
root = seg.col()
root["l"] = []
lst = root["l"]
model = {"l": []}
i = 0
try:
    while True:
        # mixed writes: big and small values, dict and list
        if i % 3 == 0:
            root[i] = b"x" * 100000
            model[i] = b"x" * 100000
        elif i % 3 == 1:
            root["k%d" % i] = ["v" * 3000, {"n": i}]
            model["k%d" % i] = ["v" * 3000, {"n": i}]
        else:
            lst.append("item %d " % i * 50)
            model["l"].append("item %d " % i * 50)
        i += 1
except (dshared.SegmentFullError, OSError) as e:
    out["caught"] = type(e).__name__
    out["message"] = str(e)
out["writes"] = i
out["stats_at_full"] = seg.stats()
out["model_equal"] = root.to_python() == model
out["check_ok"] = seg.check().ok
# reads of everything still work (no page of the heap is unbacked)
out["sum_lengths"] = sum(len(v) for v in root.values() if isinstance(v, bytes))
# a write that fits in what is already reserved still works
root["after"] = 1
root[0] = b"y" * 10
out["small_write_ok"] = root["after"] == 1 and root[0] == b"y" * 10

# something else fills the tmpfs: the segment cannot grow, but stays sound
with open("/dev/shm/hog", "wb") as f:
    try:
        while True:
            f.write(b"h" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        out["hog_errno"] = e.errno
root.clear()
out["cleared_check_ok"] = seg.check().ok
i = 0
try:
    while True:
        root[i] = "z" * 200000
        i += 1
except (dshared.SegmentFullError, OSError) as e:
    out["caught_2"] = type(e).__name__
    out["message_2"] = str(e)
out["writes_2"] = i
out["check_ok_2"] = seg.check().ok
out["stats_2"] = seg.stats()

# no room for a new segment's first chunk: OSError, and nothing left behind
try:
    dshared.Segment("dsh-full-b", 64 << 20, create=True)
    out["create_b"] = "created"
except (dshared.SegmentFullError, OSError) as e:
    out["create_b"] = type(e).__name__
out["left_behind_b"] = os.path.exists("/dev/shm/dsh-full-b") or \
    any(n.startswith(".dsh-full-b.") for n in os.listdir("/dev/shm"))   # its temporary file
os.unlink("/dev/shm/hog")
seg.close()
seg.unlink()
print(json.dumps(out))
"""


def run_in_small_shm(script, tmpfs_size="8m", timeout=120):
    """Run `script` as root in a private mount namespace with a small tmpfs
    over /dev/shm. Fails (never skips) if that cannot be set up."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is required for the /dev/shm-full test"
    assert os.geteuid() == 0, "the /dev/shm-full test needs root to mount a tmpfs (uid %d)" % os.geteuid()
    cmd = [unshare, "--mount", "--propagation", "private", "sh", "-c",
           'mount -t tmpfs -o size="$1" tmpfs /dev/shm && exec "$2" -c "$3"',
           "sh", tmpfs_size, sys.executable, script]
    return run_killed_on_timeout(cmd, timeout)      # the installed dshared, as the tests use


def test_dev_shm_too_small_gives_a_clean_exception_not_sigbus():
    rc, out, err = run_in_small_shm(textwrap.dedent(CHILD))
    assert rc >= 0, "the child died by signal %s:\n%s" % (signal.Signals(-rc).name, err)
    assert rc == 0, "the child failed (rc %d):\n%s\n%s" % (rc, out, err)
    r = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(r, indent=1))
    assert r["tmpfs_size"] == 8 * MiB
    # the segment ran out of /dev/shm, not of capacity
    assert r["caught"] == "SegmentFullError", r
    assert "/dev/shm" in r["message"] and "No space left" in r["message"], r["message"]
    st = r["stats_at_full"]
    assert st["reserved"] <= 8 * MiB < st["capacity"]
    assert st["top"] <= st["reserved"]
    assert r["writes"] > 10
    assert r["model_equal"] and r["check_ok"] and r["small_write_ok"]
    assert r["sum_lengths"] > 0
    # with the tmpfs taken by another file
    assert r["hog_errno"] == 28                 # ENOSPC
    assert r["cleared_check_ok"]
    assert r["caught_2"] == "SegmentFullError" and r["check_ok_2"]
    assert "/dev/shm could not back" in r["message_2"], r["message_2"]
    assert r["stats_2"]["top"] <= r["stats_2"]["reserved"]
    assert r["create_b"] == "OSError" and not r["left_behind_b"]


def test_a_full_dev_shm_never_kills_an_attached_reader():
    """A second process attached to the segment reads and writes while the
    first one fills it past what /dev/shm holds."""
    script = textwrap.dedent(r"""
        import json, os, sys, dshared
        seg = dshared.Segment("dsh-full-c", 64 << 20, create=True)
        root = seg.col()
        pid = os.fork()
        if pid == 0:
            try:
                other = dshared.attach("dsh-full-c").col()
                n = 0
                while "done" not in other:
                    for k in list(other.keys())[:50]:
                        other.get(k)
                    try:
                        other["reader-%d" % (n % 10)] = b"r" * 5000
                    except dshared.SegmentFullError:
                        pass
                    n += 1
            finally:
                os._exit(0)
        caught = None
        i = 0
        try:
            while True:
                root[i] = b"w" * 50000
                i += 1
        except dshared.SegmentFullError as e:
            caught = type(e).__name__
        root["done"] = True
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"caught": caught, "writes": i, "reader_status": status,
                          "check_ok": seg.check().ok}))
        seg.close()
        seg.unlink()
    """)
    rc, out, err = run_in_small_shm(script)
    assert rc == 0, "the child failed (rc %d):\n%s\n%s" % (rc, out, err)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["caught"] == "SegmentFullError" and r["writes"] > 10
    assert r["reader_status"] == 0, "the reader died: status %d" % r["reader_status"]
    assert r["check_ok"]


# ---------------------------------------------------------------------------------
# 5. backing pages


def backed(name):
    """Bytes of memory behind the segment's file."""
    return os.stat("/dev/shm/" + name).st_blocks * 512


def grow_and_shrink(seg, name):
    """Fill 32 MiB, then delete everything; returns the figures."""
    root = seg.col()
    fig = {"created": (seg.stats()["reserved"], backed(name))}
    for i in range(4096):
        root[i] = bytes([i % 251]) * (8 << 10)
    st = seg.stats()
    fig["peak"] = (st["reserved"], backed(name))
    fig["peak_used"] = st["used"]
    fig["peak_top"] = st["top"]
    root.clear()
    assert seg.collect() == 0
    st = seg.stats()
    fig["shrunk"] = (st["reserved"], backed(name))
    fig["shrunk_used"] = st["used"]
    fig["shrunk_top"] = st["top"]
    return fig


def test_capacity_is_reserved_lazily_and_reused(segment, shm_name):
    fig = grow_and_shrink(segment, shm_name)
    print(fig)
    created_reserved, created_backed = fig["created"]
    peak_reserved, peak_backed = fig["peak"]
    # a 64 MiB segment starts with one chunk (header + 1 MiB), not its capacity
    assert created_reserved == 4096 + MiB
    assert created_backed <= created_reserved + 64 * 1024
    # grown in chunks as the heap top rises: never far above what is used
    assert fig["peak_used"] >= 32 * MiB
    assert fig["peak_top"] <= peak_reserved <= fig["peak_top"] + MiB + peak_reserved // 8 + 4096
    assert peak_backed >= fig["peak_used"]
    # everything deleted: the heap is empty again
    assert fig["shrunk_used"] == 64 and fig["shrunk_top"] == 4096 + 64
    assert dshared.Segment.check(segment).ok
    # the same amount again: reserved again in growth steps (the pages went
    # back in between), never far above the peak
    root = segment.col()
    for i in range(4096):
        root[i] = b"again" * 1600
    assert segment.stats()["reserved"] <= peak_reserved + peak_reserved // 8 + MiB
    assert backed(shm_name) <= peak_backed + peak_backed // 8 + MiB


def test_a_segment_that_shrank_gives_its_pages_back(segment, shm_name):
    fig = grow_and_shrink(segment, shm_name)
    print(fig)
    peak_reserved, peak_backed = fig["peak"]
    shrunk_reserved, shrunk_backed = fig["shrunk"]
    assert peak_backed >= 32 * MiB
    assert shrunk_backed <= 4 * MiB, "%d bytes still backed after shrinking from %d" % (shrunk_backed, peak_backed)
    assert shrunk_reserved <= 4 * MiB, "stats()['reserved'] stays at %d" % shrunk_reserved


# Page return races lock-free readers: a reader may follow an offset into the
# region being given back before it validates the read. It reads zeros there
# (tmpfs backs a page again on such a read) and retries, so pages go back
# whoever else is attached: another process, a forked child, a read in flight
# in this process (tests/test_memory.py hammers this with a reader running).

HOLDER = r"""
import sys
import dshared
seg = dshared.Segment(sys.argv[1])
assert seg.col()["probe"] == 1       # attached and reading
print("attached", flush=True)
sys.stdin.readline()
seg.close()
"""


def assert_given_back(fig):
    shrunk_reserved, shrunk_backed = fig["shrunk"]
    assert shrunk_reserved <= 4 * MiB and shrunk_backed <= 4 * MiB, fig


def test_pages_go_back_while_another_process_is_attached(segment, shm_name):
    segment.col()["probe"] = 1
    child = subprocess.Popen([sys.executable, "-c", HOLDER, shm_name], cwd="/",
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "attached"
        assert_given_back(grow_and_shrink(segment, shm_name))
    finally:
        child.stdin.close()
        child.stdout.close()
        assert child.wait(30) == 0
    # alone again: the same
    assert_given_back(grow_and_shrink(segment, shm_name))


def test_pages_go_back_while_a_forked_child_holds_the_segment(segment, shm_name):
    segment.col()["probe"] = 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                        # the child inherits the parent's handle
        try:
            os.close(w)
            assert segment.col()["probe"] == 1
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    try:
        assert_given_back(grow_and_shrink(segment, shm_name))
    finally:
        os.close(w)
        _, status = os.waitpid(pid, 0)
        assert status == 0
    assert_given_back(grow_and_shrink(segment, shm_name))


class _ShrinkOnCollect:
    """Garbage whose finalizer empties the segment when the cyclic GC runs."""
    reads_in_flight = None

    def __init__(self, root):
        self.root = root
        self.me = self                  # a cycle: only the GC frees it

    def __del__(self):
        _ShrinkOnCollect.reads_in_flight = self.root.segment._reads_in_flight
        self.root.clear()


def test_pages_go_back_while_a_read_is_in_flight_in_this_process(segment, shm_name):
    """Up to Python 3.11 the cyclic GC runs inside the allocation that
    triggers it, so a finalizer can write in the middle of a read; from 3.12
    it runs between bytecodes, after the read."""
    import gc
    root = segment.col()
    for i in range(4096):
        root[i] = bytes([i % 251]) * (8 << 10)
    root["t"] = (1, 2, 3)
    peak = segment.stats()["reserved"]
    old = gc.get_threshold()
    gc.collect()
    _ShrinkOnCollect(root)
    gc.set_threshold(1)
    try:
        got = root.get("t")             # decoding the tuple allocates a tracked object
    finally:
        gc.set_threshold(*old)
    gc.collect()
    st = segment.stats()
    assert st["top"] == 4096 + 64, st   # the finalizer did empty the segment
    assert _ShrinkOnCollect.reads_in_flight == (1 if sys.version_info < (3, 12) else 0)
    assert st["reserved"] <= 4 * MiB < peak, st     # the pages went back all the same
    assert got in ((1, 2, 3), None), got    # the read retried over the pages given back
    assert dshared.Segment.check(segment).ok
