"""Cache mode: a bounded, shared cache (SharedCache) and @memoize.

The lookups and the writes are in C (class CacheCore, dshared/codec/cache*.pxi);
this module names caches, waits for other processes' computations
(get_or_set) and builds memoize's keys.
"""

import functools
import os
import time
from collections import namedtuple
from collections.abc import MutableMapping

import weakref

from dshared._codec import CACHE_REGISTRY, CacheCore, MemoCore, _forget_marker, _key_error, cache_state_bytes
from dshared._errors import SegmentFullError, UnsupportedTypeError

__all__ = ["SharedCache", "CacheInfo", "cache_for", "memoize"]

CacheInfo = namedtuple("CacheInfo", ["hits", "misses", "maxsize", "currsize"])

_MISS = object()

# get_or_set: a waiter polls with these sleeps (doubling), for at most
# WAIT_TIMEOUT seconds before it computes the value itself
WAIT_FIRST = 0.0005
WAIT_MAX = 0.05
WAIT_TIMEOUT = 60.0
_NO_PENDING = False     # test hook: every caller computes (no stampede protection)


def _start_time(pid):
    """The start time of process pid (clock ticks since boot), or None if it
    is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return None         # exited, not yet reaped by its parent: dead all the same
        return int(fields[19])
    except (ValueError, IndexError):
        return None


_me = None
_caches = weakref.WeakValueDictionary()     # id -> every SharedCache of this process


def _after_fork():
    # a forked child starts with its parent's uncounted reads: not its own
    global _me
    _me = None
    _forget_marker()
    for c in list(_caches.values()):
        c._forget_counts()


os.register_at_fork(after_in_child=_after_fork)


def _marker():
    """This process as one int: its pid and start time (a pid reused by
    another process has another start time)."""
    global _me
    if _me is None:
        pid = os.getpid()
        _me = (pid << 40) | ((_start_time(pid) or 0) & ((1 << 40) - 1))
    return _me


def _alive(marker):
    if not isinstance(marker, int) or marker <= 0:
        return False
    pid, start = marker >> 40, marker & ((1 << 40) - 1)
    t = _start_time(pid)
    return t is not None and (t & ((1 << 40) - 1)) == start


def _bound(value, what):
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int or None, not %s" % (what, type(value).__name__))
    if value <= 0:
        raise ValueError("%s must be > 0, not %d" % (what, value))
    return value


def _ttl_us(ttl):
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl != ttl:
        raise TypeError("ttl must be a number of seconds or None, not %r" % (ttl,))
    if ttl <= 0:
        raise ValueError("ttl must be > 0, not %r" % (ttl,))
    return max(1, int(min(float(ttl), 1e11) * 1e6))


class SharedCache(CacheCore, MutableMapping):
    """A named, bounded cache shared by every process attached to the segment
    (see dshared.cache). Reads return plain copies; a full cache evicts (CLOCK
    with a TinyLFU admission filter); expired values are never returned."""

    def __init__(self, seg, name, max_entries=None, max_bytes=None, ttl=None, admission=True):
        if not isinstance(name, str):
            raise TypeError("cache name must be a str, not %s" % type(name).__name__)
        maxe = _bound(max_entries, "max_entries")
        maxb = _bound(max_bytes, "max_bytes")
        ttl_us = _ttl_us(ttl)
        reg = seg.col(CACHE_REGISTRY)
        entry = reg.get(name)
        if entry is None:
            entry = reg.setdefault(name, {"d": {}, "p": {},
                                          "s": cache_state_bytes(maxe, maxb, ttl_us, bool(admission),
                                                                seg.capacity)})
        self._attach(seg, name, entry["d"], entry)
        self._pending = entry["p"]
        self._seg = seg
        _caches[id(self)] = self
        have = self._settings()
        asked = (maxe, maxb, ttl_us)
        if any(x is not None for x in (max_entries, max_bytes, ttl)) and have[:3] != asked:
            raise ValueError("cache %r exists with max_entries=%r, max_bytes=%r, ttl=%r; asked for "
                             "max_entries=%r, max_bytes=%r, ttl=%r"
                             % (name, have[0] or None, have[1] or None, have[2] / 1e6 if have[2] else None,
                                max_entries, max_bytes, ttl))

    @property
    def segment(self):
        """The segment holding the cache."""
        return self._seg

    @property
    def max_entries(self):
        return self._settings()[0] or None

    @property
    def max_bytes(self):
        return self._settings()[1] or None

    @property
    def ttl(self):
        """The default time to live in seconds, or None."""
        t = self._settings()[2]
        return t / 1e6 if t else None

    def __setitem__(self, k, v):
        self.set(k, v)

    def pop(self, k, *default):
        """c.pop(k[, default]): remove k and return its value (an expired one
        counts as absent), else default, else KeyError."""
        if len(default) > 1:
            raise TypeError("pop expected at most 2 arguments, got %d" % (len(default) + 1))
        return CacheCore.pop(self, k, *default)

    def __iter__(self):
        """The keys stored now (a snapshot; expired ones not yet reclaimed included)."""
        return iter(self._keys())

    def __repr__(self):
        return "<SharedCache %r in segment %r: %d entries>" % (self.name, self._seg.name, len(self))

    def stats(self):
        """hits, misses, evictions, expirations, entries, bytes, max_entries,
        max_bytes, and oversize (values not stored: larger than max_bytes, or
        no room in the segment), rejected (declined by the admission filter),
        sets (values stored). Hits and misses of other processes count from
        their next write, every 1024 reads, or their next stats()."""
        return self._stats()

    def get_or_set(self, k, factory, ttl=None):
        """The value cached under k, or factory()'s result, stored and returned.
        Across processes one caller runs factory for a key at a time; the others
        wait (polling, up to 60 s) for its result. If that process dies or its
        factory raises, one waiter takes over. Returns a plain copy."""
        r = self.get(k, _MISS)
        if r is not _MISS:
            return r
        return self._compute(k, factory, ttl, None)

    def _compute(self, k, factory, ttl, call):
        me = _marker()
        deadline = None
        delay = WAIT_FIRST
        expect = 0
        while True:
            try:
                state, got = self._claim(self._pending, k, me, expect)
            except SegmentFullError:
                break               # no room even for the claim: compute without one
            if state == 1:
                return got
            if state == 0 or _NO_PENDING:
                break
            # another process computes k: wait for it, or take over if it died
            expect = 0 if _alive(got) else got
            if expect:
                continue
            if deadline is None:
                deadline = time.monotonic() + WAIT_TIMEOUT
            elif time.monotonic() > deadline:
                # the computing process is alive but slow: compute here too
                return factory() if call is None else call()
            time.sleep(delay)
            delay = min(delay * 2, WAIT_MAX)
        done = False
        try:
            value = factory() if call is None else call()
            self._set_release(k, value, ttl, self._pending, me)     # stores, then drops the claim
            done = True
        finally:
            if not done:
                self._release(self._pending, k, me)
        return value


class _Memoized(MemoCore):
    """A function memoized in a SharedCache (see dshared.memoize)."""

    def __init__(self, func, name, max_entries, max_bytes, ttl, typed, segment):
        functools.update_wrapper(self, func)
        self.__wrapped__ = func
        self._name = name
        self._opts = (max_entries, max_bytes, ttl)
        self._typed = bool(typed)
        self._segment = segment
        self._cache = None

    def _get_cache(self):
        c = self._cache
        if c is None or c.segment.closed:
            from dshared import default_segment
            seg = self._segment if self._segment is not None else default_segment()
            maxe, maxb, ttl = self._opts
            c = self._cache = SharedCache(seg, self._name, maxe, maxb, ttl)
        return c

    @property
    def cache(self):
        """The SharedCache holding the results."""
        return self._get_cache()

    def _key(self, args, kwargs):
        if not kwargs and not self._typed and len(args) == 1:
            a = args[0]
            t = type(a)
            if t is str or t is int:
                return a
            return (a,)
        key = args
        if kwargs:
            key = key + (_KWMARK,) + tuple(kwargs.items())
        if self._typed:
            key = key + tuple(type(v).__qualname__ for v in args)
            if kwargs:
                key = key + tuple(type(v).__qualname__ for v in kwargs.values())
        return key

    def _call(self, args, kwargs):
        c = self._get_cache()
        key = self._key(args, kwargs)
        try:
            r = c.get(key, _MISS)
        except (TypeError, UnsupportedTypeError) as e:
            raise TypeError("%s(): argument %s cannot be a cache key: %s"
                            % (self.__qualname__, _culprit(c, args, kwargs), e)) from None
        if r is not _MISS:
            return r
        self._check_key(key, args, kwargs)
        return self._miss(key, args, kwargs)

    def _check_key(self, key, args, kwargs):
        """A lookup matches no key of a type dshared does not store; storing it
        would raise: TypeError naming the argument."""
        e = _key_error(self._cache, key)
        if e is not None:
            raise TypeError("%s(): argument %s cannot be a cache key: %s"
                            % (self.__qualname__, _culprit(self._cache, args, kwargs), e)) from None

    _marker = staticmethod(_marker)

    def _miss(self, key, args, kwargs):
        func = self.__wrapped__
        return self._cache._compute(key, None, None, lambda: func(*args, **kwargs))

    def cache_info(self):
        """hits, misses, maxsize (max_entries), currsize, as functools.lru_cache's."""
        s = self._get_cache().stats()
        return CacheInfo(s["hits"], s["misses"], s["max_entries"], s["entries"])

    def cache_clear(self):
        """Empty the cache and zero its counters (for every process)."""
        c = self._get_cache()
        c.clear()
        c.reset_stats()

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return functools.partial(self, obj)

    def __repr__(self):
        return "<dshared.memoize %s>" % self._name


_KWMARK = "\x00kw"


def _culprit(cache, args, kwargs):
    """Which argument cannot be a key: its position or name."""
    for i, a in enumerate(args):
        if _key_error(cache, (a,)) is not None:
            return "%d (%s)" % (i, type(a).__name__)
    for k, v in kwargs.items():
        if _key_error(cache, (v,)) is not None:
            return "%r (%s)" % (k, type(v).__name__)
    return "?"


def default_name(func):
    mod = getattr(func, "__module__", None) or "?"
    if mod == "__mp_main__":
        mod = "__main__"
    return "%s.%s" % (mod, getattr(func, "__qualname__", getattr(func, "__name__", "?")))


def memoize(name=None, *, max_entries=None, max_bytes=None, ttl=None, typed=False, segment=None):
    """Decorator: cache a function's results in a SharedCache shared by every
    process attached to the segment (see docs/caching.md)."""
    if callable(name) and not isinstance(name, str):
        # @memoize without parentheses
        return memoize()(name)
    if name is not None and not isinstance(name, str):
        raise TypeError("memoize name must be a str or None, not %s" % type(name).__name__)
    _bound(max_entries, "max_entries")
    _bound(max_bytes, "max_bytes")
    _ttl_us(ttl)

    def decorate(func):
        return _Memoized(func, name or default_name(func), max_entries, max_bytes, ttl, typed, segment)
    return decorate


def cache_for(seg, name, max_entries=None, max_bytes=None, ttl=None):
    return SharedCache(seg, name, max_entries, max_bytes, ttl)
