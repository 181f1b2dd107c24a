"""A cache hit reads without the lock: a write of another process may rewrite
the entry it reads, in place, at any moment. The hit must follow no offset it
did not check (a value cell read again after its check may hold an inline
string's or an int's bytes, which as an offset point outside the mapping).

The hook `mid_read` runs a write in the middle of a hit, right after the hit
read the expiry of a (value, expiry) entry: the interleaving that once ended
a worker of test_cache.py::test_bounds_four_processes with SIGSEGV."""
import pytest

from dshared import _codec
from _proc import Children, fork_call, wait_pid

BIG = 0x4141414141414141


@pytest.fixture
def hooks():
    yield _codec._cache_hooks
    _codec._cache_hooks(reread_cell=False, mid_read=False)


# the values another process may store over a (value, expiry) entry; as
# offsets, the bytes of the first three lie far outside the mapping
REPLACEMENTS = [
    BIG,                        # an int cell
    "v" * 14,                   # an inline str cell (with a str key: one packed entry)
    b"w" * 14,                  # inline bytes
    1.5e300,                    # a float
    "v" * 300,                  # a str block
    ("t", 1),                   # another (value, expiry) pair
    None,
]
IDS = ["int", "sstr", "sbytes", "float", "str", "pair", "none"]


def _hit_under_write(seg_name, key, new, reread):
    import faulthandler
    import dshared
    if reread:
        faulthandler.disable()      # the crash is expected: no traceback dump
    seg = dshared.Segment(seg_name)
    c = seg.cache("race")
    _codec._cache_hooks(reread_cell=reread, mid_read=lambda: c.set(key, new))
    r = c.get(key)
    # the hit read before the write (the old value) or after it (the new one)
    assert r in ("old", new), r
    assert c.get(key) == new
    seg.close()


@pytest.mark.parametrize("key", ["k", 7])
@pytest.mark.parametrize("new", REPLACEMENTS, ids=IDS)
def test_hit_while_entry_rewritten(segment, hooks, key, new):
    c = segment.cache("race")
    assert c.set(key, "old", ttl=3600)      # stored as the pair ("old", expiry)
    pid = fork_call(_hit_under_write, segment.name, key, new, False)
    assert wait_pid(pid, 30) == 0
    assert c.get(key) == new
    assert segment.check().ok


def test_reread_cell_crashes(segment, hooks):
    """With the hit reading the value cell again after its check (as it once
    did), the same write ends the reading process with SIGSEGV: the test
    above can fail."""
    c = segment.cache("race")
    assert c.set("k", "old", ttl=3600)
    pid = fork_call(_hit_under_write, segment.name, "k", BIG, True)
    code = wait_pid(pid, 30)
    assert code == -11, code
    assert segment.check().ok


# -- the segment closed in the middle of a hit (code run inside a read: a
# finalizer that the read's allocations set off, another thread)

def _close_mid_read(seg_name):
    import faulthandler
    import dshared
    faulthandler.disable()          # on a crash: no traceback dump
    seg = dshared.Segment(seg_name)
    c = seg.cache("race")
    refused = []

    def close():
        try:
            seg.close()
        except RuntimeError as e:
            refused.append(e)
    _codec._cache_hooks(mid_read=close)
    assert c.get("k") == "old"
    assert len(refused) == 1 and not seg.closed
    seg.close()
    assert seg.closed


def test_close_during_hit(segment, hooks):
    """Closing the handle while one of its reads runs is refused (before,
    the read went on through the unmapped memory: SIGSEGV)."""
    c = segment.cache("race")
    assert c.set("k", "old", ttl=3600)
    pid = fork_call(_close_mid_read, segment.name)
    assert wait_pid(pid, 30) == 0


# -- the state block's sketch width changed under an attached cache

def _widened_state(seg_name):
    import os
    import dshared
    seg = dshared.Segment(seg_name)
    c = seg.cache("race")
    assert c.get("k") == "old"
    # the sketch and the reference bytes are indexed by a hash cut to S_LOGW
    # bits: 40 would put them terabytes past the block
    path = "/dev/shm/" + seg_name.lstrip("/")
    with open(path, "r+b") as f:
        data = f.read()
        at = data.index(b"DSCACHE1")
        f.seek(at + 8 * 12)
        f.write((40).to_bytes(8, "little"))
    for op in (lambda: c.get("k"), lambda: c.get("absent"), lambda: c.set("k2", "v")):
        with pytest.raises(dshared.CorruptSegmentError):
            op()
    seg.close()


def test_state_width_changed(segment):
    """A cache whose state block's width word changed after it was attached
    raises CorruptSegmentError (before: it indexed its sketch with the new
    width, far outside the block: SIGSEGV)."""
    c = segment.cache("race")
    assert c.set("k", "old")
    pid = fork_call(_widened_state, segment.name)
    assert wait_pid(pid, 30) == 0


# -- the same race between real processes (no hook)

def _rewriter(seg_name):
    """Rewrite 8 int keys in place, in turn as ("old", expiry) pairs and as
    14-byte inline strings (whose bytes, as an offset, lie outside the mapping)."""
    import dshared
    seg = dshared.Segment(seg_name)
    c = seg.cache("race")
    i = 0
    while True:
        k = i % 8
        if (i // 8) % 2:
            c.set(k, "v" * 14)
        else:
            c.set(k, "old", ttl=3600)
        i += 1


def _reader(seg_name, n, reread):
    import faulthandler
    import dshared
    if reread:
        faulthandler.disable()
        _codec._cache_hooks(reread_cell=True)
    seg = dshared.Segment(seg_name)
    c = seg.cache("race")
    for i in range(n):
        r = c.get(i % 8)
        assert r in ("old", "v" * 14), r
    seg.close()


def _race(segment, n, reread):
    c = segment.cache("race")
    for k in range(8):
        c.set(k, "old", ttl=3600)
    with Children() as ch:
        ch.fork(_rewriter, segment.name)
        code = ch.wait(ch.fork(_reader, segment.name, n, reread), 120)
    return code


def test_hits_under_rewrites(segment):
    """Hits on entries that another process keeps rewriting: every one
    returns one of the values stored (before the fix, the reader died of
    SIGSEGV within a fraction of a second, see the next test)."""
    assert _race(segment, 200000, False) == 0
    assert segment.check().ok


@pytest.mark.slow
def test_hits_under_rewrites_reread_crashes(segment, hooks):
    """The same with the cell read again after its check: the reader dies of
    SIGSEGV (seen within 0.01-0.3 s on a 2-core machine; a reader that got
    through its 20 million hits unharmed would fail this test). Slow: on one
    core the race needs a preemption inside a window of a few instructions,
    and may take long to meet."""
    assert _race(segment, 20000000, True) == -11
