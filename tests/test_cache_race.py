"""A cache hit reads without the lock: a write of another process may rewrite
the entry it reads, in place, at any moment. The hit must follow no offset it
did not check (a value cell read again after its check may hold an inline
string's or an int's bytes, which as an offset point outside the mapping).

The hook `mid_read` runs a write in the middle of a hit, right after the hit
read the expiry of a (value, expiry) entry: the interleaving that once ended
a worker of test_cache.py::test_bounds_four_processes with SIGSEGV."""
import pytest

from dshared import _codec
from _proc import fork_call, wait_pid

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
@pytest.mark.parametrize("new", REPLACEMENTS, ids=repr)
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
