"""SharedDict and SharedList: the dict and list API on top of the C node
types in _codec, which already implement the hot methods (lookup, store,
len, iteration) and every atomic mutation."""

import sys
import threading
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

    def update(self, other=(), /, **kwds):
        """d.update([other, ]**kwds): store every pair, in one atomic step."""
        if isinstance(other, Mapping):
            pairs = list(other.items()) if not isinstance(other, dict) else list(dict.items(other))
        elif hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in other.keys()]
        else:
            pairs = []
            for i, item in enumerate(other):
                try:
                    n = len(item)
                except TypeError:
                    raise TypeError("cannot convert dictionary update sequence element #%d to a sequence"
                                    % i) from None
                if n != 2:
                    raise ValueError("dictionary update sequence element #%d has length %d; 2 is required"
                                     % (i, n))
                k, v = item
                pairs.append((k, v))
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

    def remove(self, value):
        """Remove the first item equal to value; ValueError if none. Atomic."""
        while True:
            version, items = self._snapshot()
            try:
                i = items.index(value)
            except ValueError:
                raise ValueError("list.remove(x): x not in list") from None
            if self._delete_if(version, i):
                return

    def reverse(self):
        """Reverse in place. Atomic."""
        self._reverse()

    def sort(self, *, key=None, reverse=False):
        """Stable sort in place, as list.sort; the comparisons run outside the
        lock on a snapshot, and the permutation is applied atomically."""
        while True:
            version, items = self._snapshot()
            keys = items if key is None else [key(x) for x in items]
            order = sorted(range(len(items)), key=keys.__getitem__, reverse=bool(reverse))
            if self._reorder(version, order):
                return

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
