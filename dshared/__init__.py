"""dshared: Python dicts and lists in POSIX shared memory, read and written
directly by many processes, with no pickling, no server and no round trip.

    import dshared
    dshared.init("mymem", 2**30)     # create or attach the segment "mymem"
    shm = dshared.col()              # its root SharedDict
    shm['d'] = {'key': 'val'}        # visible at once in every attached process
"""

import logging
import os
import sys
import warnings

if not sys.platform.startswith("linux"):  # pragma: no cover
    raise ImportError("dshared supports Linux only for now (robust process-shared mutexes, "
                      "/dev/shm, posix_fallocate); %s is not supported yet" % sys.platform)

from dshared._errors import (
    CorruptSegmentError,
    DsharedError,
    LockTimeout,
    SegmentFullError,
    StaleReferenceError,
    UnsupportedTypeError,
)
from dshared._heap import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, Segment
from dshared._heap import unlink as _unlink, _round_capacity
from dshared._heap import attach_cached as _attach_cached, remember as _remember
from dshared._collections import SharedDict, SharedList
from dshared._ops import segments, to_python
from dshared._cache import CacheInfo, SharedCache, memoize
from dshared._notify import versions, wait_any, wait_any_async

__version__ = "0.1.0"

__all__ = [
    "init", "attach", "col", "unlink", "lock", "transaction", "snapshot", "stats", "collect", "check",
    "default_segment", "segments", "to_python", "cache", "memoize", "SharedCache", "CacheInfo",
    "versions", "wait_any", "wait_any_async",
    "Segment", "SharedDict", "SharedList",
    "DsharedError", "SegmentFullError", "UnsupportedTypeError", "CorruptSegmentError",
    "StaleReferenceError", "LockTimeout",
    "DEFAULT_SIZE", "MIN_SIZE", "MAX_SIZE",
]

_default = None
_log = logging.getLogger("dshared")


def _server(server):
    """The server a call means: its `server` argument, else the
    DSHARED_SERVER environment variable; None for shared memory."""
    if server is None:
        server = os.environ.get("DSHARED_SERVER") or None
    return server


def init(name, size=None, *, server=None):
    """Create the segment `name` with a capacity of `size` bytes, or attach to
    it if it exists (then `size` is ignored), and make it this process's
    default segment. Sizes below MIN_SIZE (64 KiB) are rounded up; the
    default capacity is DEFAULT_SIZE (256 MiB, backed only as it fills).

    An existing segment whose capacity is smaller than `size` is attached as
    it is, with a ResourceWarning and a WARNING on logging.getLogger("dshared").

    With `server` ("redis://host:port/db", "rediss://...", "unix:///path"),
    or else the DSHARED_SERVER environment variable, the segment lives in
    that Redis server and a dshared.redis.RedisSegment is returned (see the
    docs page "More than one host")."""
    global _default
    server = _server(server)
    if server is not None:
        from dshared.redis import open_segment
        _default = open_segment(name, size, server=server)
        return _default
    seg = Segment(name, size)
    if size is not None and not seg.created and seg.capacity < _round_capacity(size):
        msg = ("attached to existing segment %r with capacity %d < requested size %d; "
               "dshared.unlink(%r) to recreate it" % (name, seg.capacity, size, name))
        _log.warning(msg)
        try:
            warnings.warn(msg, ResourceWarning, stacklevel=2)
        except BaseException:       # warnings turned into errors: init() failed
            seg.close()
            raise
    _remember(seg)
    _default = seg
    return seg


def attach(name, *, server=None):
    """Attach to the existing segment `name` (FileNotFoundError if there is
    none) and make it the default segment. `server` as in init()."""
    global _default
    server = _server(server)
    if server is not None:
        from dshared.redis import open_segment
        _default = open_segment(name, server=server, create=False)
        return _default
    seg = _attach_cached(name)
    _default = seg
    return seg


def default_segment():
    """The segment set by the last init() or attach()."""
    if _default is None or _default.closed:
        raise DsharedError("no segment: call dshared.init(name) first")
    return _default


def col(name=None):
    """The root SharedDict of the default segment; with `name`, a top-level
    SharedDict of that name, created empty on first use."""
    return default_segment().col(name)


def unlink(name, *, server=None):
    """Remove segment `name` from /dev/shm. Processes that have it mapped keep
    working; nobody new can attach. With `server` (or DSHARED_SERVER), delete
    the segment's keys from that Redis server."""
    server = _server(server)
    if server is not None:
        from dshared.redis import unlink as _redis_unlink
        _redis_unlink(name, server=server)
        return
    _unlink(name)


def lock(timeout=None):
    """A context manager holding the default segment's lock (reentrant): the
    block is one step for every other writer and, if the process dies inside
    it, is rolled back whole; on an exception it keeps what it wrote."""
    return default_segment().lock(timeout)


def transaction(timeout=None):
    """A context manager for an all-or-nothing block on the default segment:
    like lock(), and an exception leaving it rolls back everything it wrote
    (see Segment.transaction)."""
    return default_segment().transaction(timeout)


def snapshot(timeout=None):
    """A context manager within which this process's reads of the default
    segment see one committed state (see Segment.snapshot)."""
    return default_segment().snapshot(timeout)


def stats(probes=False):
    """Counters of the default segment: capacity, used, free, ...; with
    `probes`, also the probe lengths of its dict tables (see Segment.stats)."""
    return default_segment().stats(probes)


def collect():
    """Free the default segment's unreachable objects (cycles included);
    returns the number of bytes freed. Runs by itself before SegmentFullError."""
    return default_segment().collect()


def check():
    """Verify the default segment's whole heap; returns a report with `ok`
    and `problems`."""
    return default_segment().check()


def cache(name, *, max_entries=None, max_bytes=None, ttl=None):
    """The SharedCache `name` of the default segment, created on first use
    with these bounds (fixed then: a later call with other bounds raises
    ValueError). max_entries bounds the entries, max_bytes the bytes they
    take in the segment, ttl (seconds) is the default time to live. See
    docs/caching.md."""
    return SharedCache(default_segment(), name, max_entries, max_bytes, ttl)
