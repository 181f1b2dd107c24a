"""SharedDict and SharedList: the dict and list API on top of the C node
types in _codec, which already implement the hot methods (lookup, store,
len, iteration) and every atomic mutation."""

import operator
import sys
import threading
from types import MappingProxyType
from collections.abc import ItemsView, KeysView, Mapping, MutableMapping, MutableSequence, ValuesView

from dshared import _codec

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
        if type(other) is SharedDict:
            pairs = other._snapshot()           # one consistent read
        elif isinstance(other, dict) or hasattr(other, "keys"):
            pairs = _codec.mapping_items(other)
        else:
            pairs = []
            for i, item in enumerate(other):
                # as PySequence_Fast: a list or tuple as is, else what its iterator gives
                if type(item) is not list and type(item) is not tuple:
                    try:
                        item = list(iter(item))
                    except TypeError:
                        raise TypeError("cannot convert dictionary update sequence element #%d to a "
                                        "sequence" % i) from None
                n = len(item)
                if n != 2:
                    raise ValueError("dictionary update sequence element #%d has length %d; 2 is required"
                                     % (i, n))
                pairs.append((item[0], item[1]))
        pairs.extend(kwds.items())
        self._update_pairs(pairs)

    def copy(self):
        """A plain dict of the top level (nested containers stay live views)."""
        return dict(self._snapshot())

    def __eq__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        mine = dict(self._snapshot())
        if isinstance(other, SharedDict):
            return mine == dict(other._snapshot())
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


_SORT_OPTIMISTIC = 4     # sort(): rounds lost to other writers before keys are kept per item


def _as_int(v):
    """An int argument converted as list.sort converts `reverse`."""
    v = operator.index(v)
    if not -2 ** 31 <= v < 2 ** 31:
        raise OverflowError("Python int too large to convert to C int")
    return v


def _plain(k):
    """Whether comparing k with another plain value calls no Python code."""
    t = type(k)
    if t is tuple:
        return all(map(_plain, k))
    return t is int or t is str or t is float or t is bytes or t is bool or k is None


class SharedList(_codec.ListNode, MutableSequence):
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

        __eq__ runs outside the lock, on a snapshot; under the lock the
        first item found equal is removed if no item before it changed. Only
        items added or replaced since are compared in the next round, so a
        concurrent appender never delays remove()."""
        equal = {}
        first = True
        while True:
            _, items, ids = self._snapshot_ids()
            for x, ident in zip(items, ids):
                r = equal.get(ident)
                if r is None or first:
                    r = equal[ident] = bool(x == value)
                if r:
                    break
            first = False
            done = self._remove_known(equal)
            if done > 0:
                return
            if done < 0:
                raise ValueError("list.remove(x): x not in list")

    def reverse(self):
        """Reverse in place. Atomic."""
        self._reverse()

    def sort(self, *, key=None, reverse=False):
        """Stable sort in place, as list.sort. The keys and comparisons run
        outside the lock on a snapshot; the permutation is published if the
        list did not change meanwhile. If this process changed the list
        while sorting (the key did), ValueError('list modified during
        sort'), as list.sort. If another writer changed it, the sort tries
        again; after _SORT_OPTIMISTIC such rounds, when the keys are plain
        values (None, bool, int, float, str, bytes, tuples of them), it
        remembers each item's key and sorts under the lock by those keys, so
        a concurrent writer cannot starve it: each later round only computes
        the keys of items added since."""
        reverse = _as_int(reverse)
        counter = self._sort_begin()
        try:
            keys = None
            rounds = 0
            while True:
                version, items, ids = self._snapshot_ids()
                if keys is None:
                    ks = items if key is None else [key(x) for x in items]
                    order = sorted(range(len(items)), key=ks.__getitem__, reverse=bool(reverse))
                    if counter[0]:
                        raise ValueError("list modified during sort")
                    if self._reorder(version, order):
                        return
                    rounds += 1
                    if rounds >= _SORT_OPTIMISTIC and all(map(_plain, ks)):
                        keys = dict(zip(ids, ks))
                    continue
                for x, ident in zip(items, ids):
                    if ident not in keys:
                        k = x if key is None else key(x)
                        if not _plain(k):
                            keys = None         # not comparable under the lock
                            break
                        keys[ident] = k
                if counter[0]:
                    raise ValueError("list modified during sort")
                if keys is not None and self._sort_known(keys, bool(reverse)):
                    return
        finally:
            self._sort_end(counter)

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

    def _cmp_items(self, other):
        if isinstance(other, SharedList):
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

    @_recursive_repr("[...]")
    def __repr__(self):
        return "[%s]" % ", ".join(repr(x) for x in self._items())

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.to_python()


_codec.register_types(SharedDict, SharedList)
