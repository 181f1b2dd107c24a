"""SharedDict and SharedList: the dict and list API on top of the C node
types in _codec, which already implement the hot methods (lookup, store,
len, iteration) and every atomic mutation."""

import gc
import operator
import sys
import threading
from types import MappingProxyType
from collections.abc import ItemsView, KeysView, Mapping, MutableMapping, MutableSequence, ValuesView

from dshared import _codec, _notify

__all__ = ["SharedDict", "SharedList"]

_repr_state = threading.local()


def _recursive_repr(fill):
    """Like reprlib.recursive_repr, keyed by the shared object rather than the
    view (each read gives a new view of the same object)."""
    def deco(fn):
        def wrapper(self):
            active = getattr(_repr_state, "active", None)
            if active is None:
                active = _repr_state.active = set()
            key = self._identity()
            if key in active:
                return fill
            active.add(key)
            try:
                return fn(self)
            finally:
                active.discard(key)
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper
    return deco


class _ViewMixin:
    __slots__ = ()

    @property
    def mapping(self):
        """A read-only proxy of the SharedDict this view belongs to (as
        dict views' .mapping)."""
        return MappingProxyType(self._mapping)

    def __reversed__(self):
        return self._mapping._iter(self._mode | 4)

    def __iter__(self):
        return self._mapping._iter(self._mode)

    def __repr__(self):
        return "%s(%r)" % (self._name, list(self))


class SharedKeysView(_ViewMixin, KeysView):
    """d.keys(): a live, set-like view of a SharedDict's keys."""
    __slots__ = ()
    _mode = 0
    _name = "dict_keys"


class SharedValuesView(_ViewMixin, ValuesView):
    """d.values(): a live view of a SharedDict's values."""
    __slots__ = ()
    _mode = 1
    _name = "dict_values"


class SharedItemsView(_ViewMixin, ItemsView):
    """d.items(): a live, set-like view of a SharedDict's (key, value) pairs."""
    __slots__ = ()
    _mode = 2
    _name = "dict_items"

    def __contains__(self, item):
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        return super().__contains__(item)


class SharedDict(_codec.DictNode, MutableMapping):
    """A dict in shared memory. Every method behaves as dict's; single
    operations are atomic; nested dicts and lists come back as live views.
    Views pickle as a reference to the shared object, never its contents."""

    __slots__ = ()

    def keys(self):
        return SharedKeysView(self)

    def values(self):
        return SharedValuesView(self)

    def items(self):
        return SharedItemsView(self)

    def __init__(self, other=(), /, **kwds):
        """d.__init__(...) updates d, as dict.__init__ does (it does not clear)."""
        self.update(other, **kwds)

    @classmethod
    def fromkeys(cls, iterable, value=None, /):
        """A plain dict with the keys of iterable, each mapped to value.
        A SharedDict only exists inside a segment, so the result is a dict:
        store it (shm['k'] = SharedDict.fromkeys(...)) to share it."""
        return dict.fromkeys(iterable, value)

    def update(self, other=(), /, **kwds):
        """d.update([other, ]**kwds): store every pair, in one atomic step.
        `other` is read as dict.update reads it: a dict directly, a mapping
        (anything with keys()) through keys() and [], else (key, value)
        pairs."""
        # read in C (a Python loop cost ~100 ns per pair) into one flat list,
        # with the cyclic GC off until it is freed: the collector, back on
        # while the objects this made live, would traverse them all at its
        # next run (10 update()s of 100,000 pairs: ~115 ns a pair)
        was = gc.isenabled()
        gc.disable()
        try:
            if type(other) is SharedDict:
                flat = _codec.update_flat(other._copy(), True)      # one consistent read
            elif type(other) is tuple and not other:
                flat = _codec.update_flat(kwds, True)               # d.update(k=v), d.update()
                kwds = None
            else:
                flat = _codec.update_flat(other, isinstance(other, dict) or hasattr(other, "keys"))
            if kwds:
                flat += _codec.update_flat(kwds, True)
            self._update_pairs(flat)
            del flat
        finally:
            if was:
                gc.enable()

    def copy(self):
        """A plain dict of the top level (nested containers stay live views)."""
        return self._copy()

    def __eq__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        mine = self._copy()
        if isinstance(other, SharedDict):
            return mine == other._copy()
        return mine == dict(other.items())

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None

    def __or__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def __ror__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        new = dict(other)
        new.update(self._snapshot())
        return new

    def __ior__(self, other):
        self.update(other)
        return self

    @_recursive_repr("{...}")
    def __repr__(self):
        return "{%s}" % ", ".join("%r: %r" % kv for kv in self._snapshot())

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.to_python()


_SORT_OPTIMISTIC = 2     # sort(): rounds lost to other writers before keys are kept per item


def _sort_reverse(v):
    """`reverse` converted as the running Python's list.sort converts it: a
    C int before Python 3.12, any truth value since."""
    if sys.version_info >= (3, 12):
        return bool(v)
    v = operator.index(v)
    if not -2 ** 31 <= v < 2 ** 31:
        raise OverflowError("Python int too large to convert to C int")
    return bool(v)


class _ListOrder:
    """==, != and the order comparisons of a shared list (of either backend),
    by items, as list compares: with another shared list or a list."""

    __slots__ = ()

    def _cmp_items(self, other):
        if isinstance(other, _ListOrder):
            return other._items()
        if isinstance(other, list):
            return other
        return None

    def __eq__(self, other):
        o = self._cmp_items(other)
        return NotImplemented if o is None else self._items() == o

    def __ne__(self, other):
        o = self._cmp_items(other)
        return NotImplemented if o is None else self._items() != o

    def __lt__(self, other):
        o = self._cmp_items(other)
        return NotImplemented if o is None else self._items() < o

    def __le__(self, other):
        o = self._cmp_items(other)
        return NotImplemented if o is None else self._items() <= o

    def __gt__(self, other):
        o = self._cmp_items(other)
        return NotImplemented if o is None else self._items() > o

    def __ge__(self, other):
        o = self._cmp_items(other)
        return NotImplemented if o is None else self._items() >= o

    __hash__ = None


class SharedList(_codec.ListNode, _ListOrder, MutableSequence):
    """A list in shared memory. Every method behaves as list's; single
    operations are atomic; nested dicts and lists come back as live views."""

    __slots__ = ()

    def _items(self):
        return self._snapshot()[1]

    def copy(self):
        """A plain list of the top level (nested containers stay live views)."""
        return self._items()

    def __contains__(self, value):
        return value in self._items()

    def index(self, value, start=0, stop=sys.maxsize):
        """Index of the first item equal to value in [start, stop); ValueError if none."""
        return self._items().index(value, start, stop)

    def count(self, value):
        return self._items().count(value)

    def __init__(self, iterable=(), /):
        """sl.__init__(iterable) replaces the items, as list.__init__ (which
        clears, then extends) does, in one atomic step."""
        items = [] if iterable is self else _codec.as_list(iterable)
        self[:] = items

    def remove(self, value):
        """Remove the first item equal to value; ValueError if none. Atomic.

        __eq__ runs outside the lock, on a snapshot. If the list changed
        before the removal could be published, the result of each comparison
        is kept per item identity (its cell and block generation), and under
        the lock the first item known equal is removed if every item before
        it is known unequal. Items before it that are new are read under the
        lock and compared outside it, and the step is tried again: an
        appender never delays remove(). When value and the new items are
        plain (None, bool, int, float, str, bytes, tuples of them), they are
        compared under the lock, which runs no Python code: then the second
        round always ends it."""
        version, items = self._snapshot()
        try:
            i = items.index(value)
        except ValueError:
            raise ValueError("list.remove(x): x not in list") from None
        if self._delete_if(version, i):
            return
        equal = {}
        while True:
            r = self._remove_known(equal, value)
            if r == 1:
                return
            if r == -1:
                raise ValueError("list.remove(x): x not in list")
            for ident, x in r:          # new items, in order, up to the first equal one
                eq = equal[ident] = bool(x == value)
                if eq:
                    break

    def reverse(self):
        """Reverse in place. Atomic."""
        self._reverse()

    def sort(self, *, key=None, reverse=False):
        """Stable sort in place, as list.sort. The keys and comparisons run
        outside the lock on a snapshot; the permutation is published if the
        list did not change meanwhile.

        If this process changed the list while sorting (the key did),
        ValueError('list modified during sort'), as list.sort; the change
        stays. If another writer changed it, the sort tries again; after
        _SORT_OPTIMISTIC such rounds, when the keys are plain (None, bool,
        int, float, str, bytes, tuples of them), each key is kept per item
        identity (the item's cell and block generation), and the sort is
        done under the lock by those keys, which runs no Python code. Items
        without a key yet (added since) are read under the lock, keyed
        outside it and the step is tried again: each round keys only the
        items added during the previous one (the items that still match the
        last round's, from the start, are checked with a memcmp). Without a
        key function a plain item is its own key, so the first such round
        always ends the sort."""
        reverse = _sort_reverse(reverse)
        counter = self._sort_begin()
        try:
            for _ in range(_SORT_OPTIMISTIC):
                if self._sort_round(key, reverse, counter):
                    return
            # identities and keys of the items as last seen, and every key by identity
            ids, ks, keys = b"", [], {}
            while True:
                r = self._sort_known(ids, ks, keys, reverse, key is None)
                if r is True:
                    return
                p, tail = r
                tail_ids = []
                tail_ks = []
                for ident, x, known in tail:
                    if not known:
                        x = x if key is None else key(x)
                        if not _codec.is_plain(x):
                            return self._sort_optimistic(key, reverse, counter)
                        keys[ident] = x
                    tail_ids.append(ident)
                    tail_ks.append(x)
                if counter[0]:
                    raise ValueError("list modified during sort")
                ids = ids[:p * len(ident)] + b"".join(tail_ids)
                ks = ks[:p] + tail_ks
        finally:
            self._sort_end(counter)

    def _sort_round(self, key, reverse, counter):
        """One optimistic sort: key a snapshot outside the lock, publish the
        order if the list is unchanged; True when it was published."""
        version, items = self._snapshot()
        ks = items if key is None else [key(x) for x in items]
        order = sorted(range(len(items)), key=ks.__getitem__, reverse=reverse)
        if counter[0]:
            raise ValueError("list modified during sort")
        return self._reorder(version, order)

    def _sort_optimistic(self, key, reverse, counter):
        """Sort rounds until one publishes (keys that are not plain cannot be
        compared under the lock)."""
        while not self._sort_round(key, reverse, counter):
            pass

    def __iadd__(self, other):
        self.extend(other)
        return self

    def __add__(self, other):
        if isinstance(other, SharedList):
            return self._items() + other._items()
        if isinstance(other, list):
            return self._items() + other
        return NotImplemented

    def __radd__(self, other):
        if isinstance(other, list):
            return other + self._items()
        return NotImplemented

    def __mul__(self, n):
        if not hasattr(type(n), "__index__"):
            return NotImplemented
        return self._items() * n

    __rmul__ = __mul__

    def __imul__(self, n):
        if not hasattr(type(n), "__index__"):
            return NotImplemented
        n = n.__index__()
        with self.segment.lock():
            if n <= 0:
                self.clear()
            elif n > 1:
                self.extend(self._items() * (n - 1))
        return self

    __hash__ = None

    @_recursive_repr("[...]")
    def __repr__(self):
        return "[%s]" % ", ".join(repr(x) for x in self._items())

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.to_python()


_codec.register_types(SharedDict, SharedList)


# -- change notifications (dshared/_notify.py) ---------------------------------

def _dict_version(self, key=None):
    """An opaque int that changes whenever a write that changes this dict
    (with `key`: the value stored under that key) is published, by any
    process. Versions of different keys are not comparable. A change inside
    a nested container changes that container's version, not this one's."""
    return _notify.version(self, key, key is not None)


def _dict_wait(self, key=None, *, version=None, timeout=None):
    """Block until version(key) differs from `version` (by default: the
    version at the call); return the new version, or None when `timeout`
    seconds pass first. It may rarely return with nothing changed (another
    key shares the wait word): re-check in a loop, with the version read
    before the check::

        v = d.version("result")
        while "result" not in d:
            v = d.wait("result", version=v)

    Releases the GIL while waiting; Ctrl-C interrupts it. Raises RuntimeError
    inside a lock() or transaction() block of this segment. If the dict is
    deleted meanwhile it returns, and the next use raises StaleReferenceError."""
    return _notify.wait(self, key, key is not None, version, timeout)


async def _dict_wait_async(self, key=None, *, version=None, timeout=None):
    """The asyncio form of wait(): `await d.wait_async(key)`; the event loop
    is not blocked (the wait runs in a helper thread)."""
    return await _notify.wait_async(self, key, key is not None, version, timeout)


def _list_version(self):
    """An opaque int that changes whenever a write that changes this list is
    published, by any process."""
    return _notify.version(self)


def _list_wait(self, *, version=None, timeout=None):
    """Block until version() differs from `version` (by default: the version
    at the call); return the new version, or None when `timeout` seconds
    pass first (see SharedDict.wait)."""
    return _notify.wait(self, None, False, version, timeout)


async def _list_wait_async(self, *, version=None, timeout=None):
    """The asyncio form of wait(): the event loop is not blocked."""
    return await _notify.wait_async(self, None, False, version, timeout)


for _name, _fn in (("version", _dict_version), ("wait", _dict_wait), ("wait_async", _dict_wait_async)):
    _fn.__name__ = _name
    _fn.__qualname__ = "SharedDict." + _name
    setattr(SharedDict, _name, _fn)
for _name, _fn in (("version", _list_version), ("wait", _list_wait), ("wait_async", _list_wait_async)):
    _fn.__name__ = _name
    _fn.__qualname__ = "SharedList." + _name
    setattr(SharedList, _name, _fn)
del _name, _fn
