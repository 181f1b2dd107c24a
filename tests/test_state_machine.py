"""Stateful test: random operations on a shared segment against a plain model.

A hypothesis ``RuleBasedStateMachine`` (in the style of PyRoaringBitMap's
test_state_machine.py) keeps a segment and, next to it, a model made of plain
Python dicts, lists and tuples. Every rule applies one operation to both: the
shared side through a view reached from the root by a path of keys and
indices, read through one of two handles (the creating ``Segment`` and a
second one attached by name), and the model side to the model object at the
same path. Exceptions must match, and returned values must match.

After every step both handles must show exactly the model, *including its
shape*: containers are compared through a one-to-one map, so an object the
model reaches twice (an alias, a shared sub-structure, a cycle) must be one
shared object reached twice, and two distinct model objects must be two shared
objects. ``to_python()`` must give the same shape in plain objects.

Deliberate differences from dict and list are modelled:
* pop, popitem and list pop return removed containers as plain copies;
* update() is atomic, and a value or key of an unsupported type stores nothing;
* a view of a removed object raises StaleReferenceError (views of garbage
  cycles are left alone until the next collect());
* SegmentFullError (in the near-full machine) leaves everything unchanged.

Other invariants: ``check()`` every few steps and at teardown, ``collect()``
frees nothing while no garbage cycle exists, a failed operation does not
change ``stats()['used']``, and at teardown, after deleting everything and
collecting, ``used`` is back to its value right after creation.
"""
import copy
import itertools
import math
import os
import struct
import sys
import uuid
from collections import deque

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import dshared
from dshared import SegmentFullError, SharedDict, SharedList, StaleReferenceError, UnsupportedTypeError

SHM_DIR = "/dev/shm"
PREFIX = "dsh-test-sm-%d-" % os.getpid()
_names = itertools.count()

CHECK_EVERY = 4         # run seg.check() after every CHECK_EVERY-th step

SETTINGS = settings(
    max_examples=25,                # the default run's; SLOW_SETTINGS under -m slow
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,     # shrink one failure, not every distinct one
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)
SLOW_SETTINGS = settings(SETTINGS, max_examples=600, derandomize=False)   # other sequences each run


# -------------------------------------------------------------- strategies --

# printable ASCII, control characters, Latin-1, other planes, lone surrogates, the
# last code point: short strings live inline in a cell (up to 14 bytes of
# UTF-8), longer ones in blocks
_ALPHABET = ("abcxyzABZ019 _-.:/'\"\\{}()[]" + "\x00\x01\n\t\x7f" + "\xe9\xdf\xff\u0100\u03a9"
             + "\u20ac\u4e2d\uffff\U0001f600\U00010000\ud800\udfff\U0010ffff")
texts = st.one_of(st.text(_ALPHABET, max_size=8), st.text(_ALPHABET, min_size=10, max_size=60))

_EDGE_INTS = [0, 1, -1, 2 ** 31, 2 ** 63 - 1, 2 ** 63, -2 ** 63, -2 ** 63 - 1,
              2 ** 64 - 1, 2 ** 64, -2 ** 64, 2 ** 100, -2 ** 100]
ints = st.one_of(st.integers(-100, 100), st.sampled_from(_EDGE_INTS),
                 st.integers(-2 ** 130, 2 ** 130))
_EDGE_FLOATS = [0.0, -0.0, 0.5, 1.0, math.inf, -math.inf, 2.0 ** 53, 5e-324, -2.0 ** 63]
plain_floats = st.one_of(st.floats(allow_nan=False), st.sampled_from(_EDGE_FLOATS))
floats = st.one_of(plain_floats, st.just(math.nan), st.floats())

# no NaN keys (dshared never finds one by lookup), and no integral floats from
# 2**63 up (they come back as int): both documented
key_floats = st.one_of(st.floats(min_value=-2.0 ** 63, max_value=2.0 ** 63, exclude_max=True),
                       st.sampled_from(_EDGE_FLOATS))
scalar_keys = st.one_of(texts, st.binary(max_size=20), ints, key_floats, st.booleans(), st.none(),
                        st.sampled_from([0, 1, 0.0, -0.0, 1.0, True, False, "", b""]))
keys = st.recursive(scalar_keys, lambda c: st.lists(c, max_size=3).map(tuple), max_leaves=4)

# scalars with no NaN: safe for ==, sorting and remove()
plain_scalars = st.one_of(st.none(), st.booleans(), ints, plain_floats, texts, st.binary(max_size=30))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, st.binary(max_size=30))


def _containers_of(children):
    return st.one_of(st.lists(children, max_size=4),
                     st.dictionaries(keys, children, max_size=4),
                     st.lists(children, max_size=3).map(tuple))


values = st.recursive(scalars, _containers_of, max_leaves=8)
# what a rule stores: often a list, so that the list rules find targets
top_values = st.one_of(values, st.lists(values, max_size=5))

# bigger values for the near-full machine
big_scalars = st.one_of(scalars, st.binary(min_size=200, max_size=8000),
                        st.text(_ALPHABET, min_size=100, max_size=2000), st.integers(-2 ** 4000, 2 ** 4000))
big_values = st.recursive(big_scalars, _containers_of, max_leaves=8)
big_top_values = st.one_of(st.binary(min_size=500, max_size=8000), big_values, st.lists(big_values, max_size=5),
                           st.lists(st.integers(), min_size=10, max_size=200))

# each call gives a fresh object dshared cannot store
BAD_VALUES = [set, frozenset, object, lambda: bytearray(b"x"), lambda: 1j, lambda: range(3),
              lambda: {frozenset([1]): 1}, lambda: [(1, {2})]]
BAD_KEYS = [lambda: [1], lambda: {}, lambda: frozenset(), lambda: object(), lambda: (1, [2]),
            lambda: (1, frozenset())]


# ------------------------------------------------------------------ helpers --

def _float_same(a, b):
    return struct.pack("<d", a) == struct.pack("<d", b)


def _scalar_same(a, b):
    """a and b are the same immutable value: same types all the way down,
    floats bit for bit (NaN and -0.0 too)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return _float_same(a, b)
    if type(a) is tuple:
        return len(a) == len(b) and all(_scalar_same(x, y) for x, y in zip(a, b))
    return a == b


def _fmt(where):
    """Where a value sits, as in root['a'][0]; ``where`` is a chain of
    (parent, key) pairs ending in (None, label)."""
    parts = []
    while where[0] is not None:
        where, step = where
        parts.append("[%r]" % (step,))
    return where[1] + "".join(reversed(parts))


class Same:
    """Compares a shared structure (views, ``shared=True``) or a plain one
    (``shared=False``: to_python() results, pop results) with a model
    structure: equal scalars of the same type, same key order and key types,
    and a one-to-one map between containers, so that aliases, shared
    sub-structures and cycles must match too."""

    def __init__(self, shared):
        self.shared = shared
        self.m2s = {}       # id(model container) -> identity of the other side
        self.s2m = {}
        self.objs = {}      # id(model container) -> model container
        self.keep = []      # keeps plain objects alive, so their ids stay unique

    def run(self, s, m, where="root"):
        stack = [(s, m, (None, where))]
        while stack:
            s, m, where = stack.pop()
            tm = type(m)
            if tm is dict or tm is list:
                if self.shared:
                    want = SharedDict if tm is dict else SharedList
                    assert isinstance(s, want), "%s: %r is not a %s" % (_fmt(where), s, want.__name__)
                    ident = s._identity()
                else:
                    assert type(s) is tm, "%s: %r is not a %s" % (_fmt(where), s, tm.__name__)
                    ident = id(s)
                seen = self.m2s.get(id(m))
                if seen is not None:
                    assert seen == ident, ("%s: the model reaches the same object here and before, "
                                           "the shared side another one" % _fmt(where))
                    continue
                assert ident not in self.s2m, ("%s: the shared side reaches the same object here "
                                               "and before, the model another one" % _fmt(where))
                self.m2s[id(m)] = ident
                self.s2m[ident] = id(m)
                self.objs[id(m)] = m
                self.keep.append(s)
                if tm is dict:
                    items = list(s.items())
                    assert len(s) == len(m) == len(items), \
                        "%s: %d items, model %d" % (_fmt(where), len(items), len(m))
                    for (sk, sv), (mk, mv) in zip(items, m.items()):
                        assert _scalar_same(sk, mk), "%s: key %r, model %r" % (_fmt(where), sk, mk)
                        stack.append((sv, mv, (where, mk)))
                else:
                    items = list(s)
                    assert len(s) == len(m) == len(items), \
                        "%s: %d items, model %d" % (_fmt(where), len(items), len(m))
                    for i, (sv, mv) in enumerate(zip(items, m)):
                        stack.append((sv, mv, (where, i)))
            elif tm is tuple:
                assert type(s) is tuple and len(s) == len(m), "%s: %r, model %r" % (_fmt(where), s, m)
                for i, (sv, mv) in enumerate(zip(s, m)):
                    stack.append((sv, mv, (where, i)))
            else:
                assert _scalar_same(s, m), "%s: %r, model %r" % (_fmt(where), s, m)
        return self


def _children(obj):
    """The containers obj refers to directly (looking through tuples)."""
    out = []
    stack = list(obj.values()) if type(obj) is dict else list(obj)
    while stack:
        x = stack.pop()
        t = type(x)
        if t is dict or t is list:
            out.append(x)
        elif t is tuple:
            stack.extend(x)
    return out


def _model_containers(root):
    """[(path, container)] for every dict and list reachable from root, each
    once, with the shortest path of keys and indices (tuples included)."""
    out = []
    seen = set()
    queue = deque([((), root)])
    while queue:
        path, obj = queue.popleft()
        t = type(obj)
        if t is dict or t is list:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            out.append((path, obj))
            items = obj.items() if t is dict else enumerate(obj)
        elif t is tuple:
            items = enumerate(obj)
        else:
            continue
        for k, v in items:
            if type(v) in (dict, list, tuple):
                queue.append((path + (k,), v))
    return out


def _to_shared(mv, aliases):
    """The value to hand to dshared for the model value mv: a parallel copy
    with the same sharing and cycles, where every model container whose id is
    in ``aliases`` is replaced by the live view standing for it."""
    memo = {}

    def conv(x):
        t = type(x)
        if t is not dict and t is not list and t is not tuple:
            return x
        i = id(x)
        if i in aliases:
            return aliases[i]
        if i in memo:
            return memo[i]
        if t is list:
            out = []
            memo[i] = out
            out.extend(conv(y) for y in x)
        elif t is dict:
            out = {}
            memo[i] = out
            for k, v in x.items():
                out[k] = conv(v)
        else:
            out = tuple(conv(y) for y in x)
            memo[i] = out
        return out

    return conv(mv)


def _plain_scalar(x):
    """x is a scalar, or a tuple of them, with no NaN (safe for ==, sort, remove)."""
    t = type(x)
    if t is tuple:
        return all(_plain_scalar(y) for y in x)
    if t is float:
        return not math.isnan(x)
    return t is not dict and t is not list


def _eq_safe(m, limit=200):
    """m can be compared with == without recursing forever: no cycle, no NaN,
    and small."""
    count = 0
    stack = [(m, frozenset())]
    while stack:
        x, above = stack.pop()
        count += 1
        if count > limit:
            return False
        t = type(x)
        if t is float and math.isnan(x):
            return False
        if t is dict or t is list or t is tuple:
            if id(x) in above:
                return False
            inner = above | {id(x)}
            for y in (x.values() if t is dict else x):
                stack.append((y, inner))
    return True


def _sort_key(x):
    """A total order on anything a list may hold, shared or plain."""
    if isinstance(x, (bool, int)):
        return (0, x)
    if isinstance(x, float):
        return (1, 0) if math.isnan(x) else (0, x)
    if isinstance(x, str):
        return (2, x)
    if isinstance(x, bytes):
        return (3, x)
    if x is None:
        return (4, 0)
    if isinstance(x, tuple):
        return (5, len(x))
    if isinstance(x, (list, SharedList)):
        return (6, len(x))
    return (7, len(x))


def _equal_variants(k):
    """Keys equal to k, of other types (1, 1.0 and True are one key)."""
    out = [k]
    t = type(k)
    if t is bool:
        out += [int(k), float(k)]
    elif t is int:
        if abs(k) < 2 ** 53:
            out.append(float(k))
        if k in (0, 1):
            out.append(bool(k))
    elif t is float and k.is_integer() and abs(k) < 2 ** 63:
        out.append(int(k))
    elif t is tuple and k:
        for v in _equal_variants(k[0])[1:]:
            out.append((v,) + k[1:])
    return out


def _slice_len(sl, n):
    return len(range(*sl.indices(n)))


# ----------------------------------------------------------------- machine --

class SharedStateMachine(RuleBasedStateMachine):
    SIZE = 4 << 20
    MAY_BE_FULL = False
    VALUES = top_values

    def __init__(self):
        super().__init__()
        self.name = "%s%d-%s" % (PREFIX, next(_names), uuid.uuid4().hex[:8])
        self.segs = [dshared.Segment(self.name, self.SIZE, create=True)]
        try:
            self.segs.append(dshared.Segment(self.name, create=False))
            self.used0 = self.segs[0].stats()["used"]
            self.roots = [seg.col() for seg in self.segs]
        except BaseException:
            for seg in self.segs:
                seg.close()
            dshared.unlink(self.name)
            raise
        self.model = {}
        self.known = {}         # id -> every model container ever stored (until collected)
        self.held = []          # [(handle, view, model container)]
        self.steps = 0
        self.full_errors = 0
        self._cache = None
        self._fresh = []        # model values drawn for the current step

    # -- plumbing ------------------------------------------------------------

    def _containers(self):
        if self._cache is None:
            self._cache = _model_containers(self.model)
        return self._cache

    def _changed(self):
        self._cache = None

    def _follow(self, h, path):
        obj = self.roots[h]
        for k in path:
            obj = obj[k]
        return obj

    def _pick(self, data, kind, label="target"):
        """(path, handle, shared view, model container) of a random container
        of type ``kind`` (dict or list)."""
        paths = [p for p, o in self._containers() if type(o) is kind]
        path = data.draw(st.sampled_from(paths), label=label + " path")
        h = data.draw(st.integers(0, 1), label=label + " handle")
        m = self.model
        for k in path:
            m = m[k]
        return path, h, self._follow(h, path), m

    def _has_list(self):
        return any(type(o) is list for _, o in self._containers())

    def _key(self, data, m):
        """A key for dict m: mostly one already there (or an equal key of
        another type), else a new one."""
        existing = list(m)
        how = data.draw(st.sampled_from(["old", "equal", "new"] if existing else ["new"]), label="key from")
        if how == "new":
            return data.draw(keys, label="key")
        k = data.draw(st.sampled_from(existing), label="key")
        if how == "equal":
            k = data.draw(st.sampled_from(_equal_variants(k)), label="equal key")
        return k

    def _alias_view(self, data, h, aliases):
        """A model container to alias, and the view standing for it, read
        through handle h (the one the store goes through)."""
        path = data.draw(st.sampled_from([p for p, _ in self._containers()]), label="alias path")
        m = self.model
        for k in path:
            m = m[k]
        aliases[id(m)] = self._source(data, h, path)
        return m

    def _source(self, data, h, path):
        """The view at path, to be stored (or its items stored) through handle h."""
        # either handle: a view read through one and stored through the other
        # binds the same shared object
        hv = data.draw(st.integers(0, 1), label="source handle")
        return self._follow(hv, path)

    def _mv(self, data, h, aliases):
        """A model value to store: plain, with internal sharing or cycles, an
        alias of a container already stored, or a plain value holding such
        aliases. Aliased containers are registered in ``aliases``."""
        how = data.draw(st.sampled_from(["plain", "plain", "plain", "shaped", "alias", "embed"]),
                        label="value kind")
        if how == "alias":
            return self._alias_view(data, h, aliases)
        mv = data.draw(self.VALUES, label="value")
        self._fresh.append(mv)
        if how == "plain":
            return mv
        if type(mv) is not list and type(mv) is not dict:
            mv = [mv]
            self._fresh.append(mv)
        conts = [o for _, o in _model_containers(mv)]
        for _ in range(data.draw(st.integers(1, 3), label="links")):
            a = conts[data.draw(st.integers(0, len(conts) - 1), label="link from")]
            if how == "embed":
                b = self._alias_view(data, h, aliases)
            else:
                b = conts[data.draw(st.integers(0, len(conts) - 1), label="link to")]
            if data.draw(st.booleans(), label="in a tuple"):
                b = (b,)
            if type(a) is list:
                a.insert(data.draw(st.integers(0, len(a)), label="at"), b)
            else:
                a[data.draw(keys, label="link key")] = b
        return mv

    def _value(self, data, h):
        """(shared value, model value)."""
        aliases = {}
        mv = self._mv(data, h, aliases)
        return _to_shared(mv, aliases), mv

    def _values(self, data, h, n=None):
        """(shared list, model list) of values, converted together so that an
        object repeated among them is one object on both sides."""
        if n is None:
            n = data.draw(st.integers(0, 4), label="count")
        aliases = {}
        mvs = []
        for _ in range(n):
            if mvs and data.draw(st.integers(0, 4), label="repeat") == 0:
                mvs.append(mvs[data.draw(st.integers(0, len(mvs) - 1), label="repeat which")])
            else:
                mvs.append(self._mv(data, h, aliases))
        return _to_shared(mvs, aliases), mvs

    def _used(self):
        return self.segs[0].stats()["used"]

    def _garbage_alive(self, reachable):
        """ids of unreachable model containers a garbage cycle may still keep
        alive in the segment (until the next collect)."""
        garbage = {i: o for i, o in self.known.items() if i not in reachable}
        if not garbage:
            return set()
        edges = {i: [id(c) for c in _children(o) if id(c) in garbage] for i, o in garbage.items()}
        cyclic = []
        for i in garbage:
            seen = set()
            todo = list(edges[i])
            while todo:
                j = todo.pop()
                if j == i:
                    cyclic.append(i)
                    break
                if j not in seen:
                    seen.add(j)
                    todo.extend(edges[j])
        alive = set()
        while cyclic:
            j = cyclic.pop()
            if j not in alive:
                alive.add(j)
                cyclic.extend(edges[j])
        return alive

    def _do(self, shared_op, model_op, result=None):
        """Apply one operation to both sides. The model side runs only if the
        shared side did not report SegmentFullError (after which nothing may
        have changed). Exceptions must be of the same type; a failed
        operation must leave ``used`` unchanged. ``result``: how to compare
        what both returned: None (ignore), "view" (shared views) or "plain"
        (plain copies, as pop returns)."""
        used = self._used()
        self._changed()
        try:
            got = shared_op()
        except SegmentFullError:
            if not self.MAY_BE_FULL:
                raise
            self.full_errors += 1
            after = self._used()
            # the automatic collect() may have freed garbage cycles, nothing else
            if self._maybe_garbage():
                assert after <= used, (used, after)
            else:
                assert after == used, "SegmentFullError changed used: %d -> %d" % (used, after)
            return
        except Exception as e:  # compared with the model's below
            got_exc = e
        else:
            got_exc = None
        try:
            want = model_op()
        except Exception as e:
            assert got_exc is not None and type(got_exc) is type(e), \
                "model raised %r, shared %s" % (e, "raised %r" % got_exc if got_exc else "did not")
            assert self._used() == used, "failed operation changed used: %d -> %d" % (used, self._used())
            return
        if got_exc is not None:
            raise AssertionError("shared raised %r, the model did not" % (got_exc,)) from got_exc
        # a value stored and dropped again by the same operation (update() with
        # one key twice) may be a garbage cycle the invariant never saw
        for mv in self._fresh:
            self.known.update((id(o), o) for _, o in _model_containers(mv))
        if result == "view":
            Same(shared=True).run(got, want, "result")
        elif result == "plain":
            Same(shared=False).run(got, want, "result")

    # -- invariants ----------------------------------------------------------

    @invariant()
    def same_through_both_handles(self):
        self._changed()
        self._fresh = []
        walks = [Same(shared=True).run(root, self.model) for root in self.roots]
        # a plain deep copy, with the same shape (aliases and cycles kept)
        plain = self.roots[self.steps % 2].to_python()
        Same(shared=False).run(plain, self.model, "to_python()")
        reachable = walks[0].objs
        self.known.update(reachable)
        alive = self._garbage_alive(reachable)
        for i in [i for i in self.known if i not in reachable and i not in alive]:
            del self.known[i]       # freed for good: cannot come back
        for h, view, m in self.held:
            if id(m) in reachable:
                assert walks[h].m2s[id(m)] == view._identity(), "a held view moved"
                Same(shared=True).run(view, m, "held view")
            elif id(m) not in alive:
                self._assert_stale(view)
        self.steps += 1
        if self.steps % CHECK_EVERY == 0:
            self._check_heap()

    def _assert_stale(self, view):
        with pytest.raises(StaleReferenceError):
            len(view)
        with pytest.raises(StaleReferenceError):
            view.to_python()
        with pytest.raises(StaleReferenceError):
            list(view)
        used = self._used()
        with pytest.raises(StaleReferenceError):
            if isinstance(view, SharedList):
                view.append([1])
            else:
                view["stale"] = [1]
        assert self._used() == used

    def _maybe_garbage(self):
        """Some removed container may still be kept by a garbage cycle."""
        return bool(self.known.keys() - self.walk_ids())

    def _check_heap(self):
        report = self.segs[self.steps % 2].check()
        assert not report.problems, report.problems
        if not self._maybe_garbage():
            assert report.garbage == 0, report

    def walk_ids(self):
        return {id(o) for _, o in self._containers()}

    def _size(self):
        """How many items the reachable containers hold together."""
        return sum(len(o) for _, o in self._containers())

    # -- dict rules ----------------------------------------------------------

    @initialize(data=st.data())
    def seed(self, data):
        """Start with a few entries, one of them a list."""
        n = data.draw(st.integers(1, 3), label="count")
        ks = [data.draw(keys, label="key") for _ in range(n)]
        svs, mvs = self._values(data, 0, n)
        lsv, lmv = self._values(data, 0)
        self._do(lambda: self.roots[0].update(list(zip(ks, svs)) + [("list", lsv)]),
                 lambda: self.model.update(list(zip(ks, mvs)) + [("list", lmv)]))

    @rule(data=st.data())
    def dict_set_list(self, data):
        """d[k] = [values]: keeps lists around for the list rules."""
        path, h, s, m = self._pick(data, dict)
        k = self._key(data, m)
        sv, mv = self._values(data, h)

        def model():
            m[k] = mv
        self._do(lambda: s.__setitem__(k, sv), model)

    @rule(data=st.data())
    def dict_set(self, data):
        path, h, s, m = self._pick(data, dict)
        k = self._key(data, m)
        if data.draw(st.integers(0, 9), label="value is the key") == 0:
            sv = mv = k     # one str object as key and value
        else:
            sv, mv = self._value(data, h)

        def model():
            m[k] = mv
        self._do(lambda: s.__setitem__(k, sv), model)

    @rule(data=st.data())
    def dict_del(self, data):
        path, h, s, m = self._pick(data, dict)
        k = self._key(data, m)
        self._do(lambda: s.__delitem__(k), lambda: m.__delitem__(k))

    @rule(data=st.data())
    def dict_pop(self, data):
        path, h, s, m = self._pick(data, dict)
        k = self._key(data, m)
        default = data.draw(st.booleans(), label="with default")

        def model():
            if k not in m:
                return m.pop(k, "<default>") if default else m.pop(k)
            # a plain copy of the value as it was while still in the dict
            v = copy.deepcopy(m[k])
            del m[k]
            return v
        self._do(lambda: s.pop(k, "<default>") if default else s.pop(k), model, "plain")

    @rule(data=st.data())
    def dict_popitem(self, data):
        path, h, s, m = self._pick(data, dict)

        def model():
            if not m:
                return m.popitem()
            k = next(reversed(m))
            v = copy.deepcopy(m[k])
            del m[k]
            return k, v
        self._do(s.popitem, model, "plain")

    @rule(data=st.data())
    def dict_setdefault(self, data):
        path, h, s, m = self._pick(data, dict)
        k = self._key(data, m)
        if data.draw(st.booleans(), label="with default"):
            sv, mv = self._value(data, h)
            self._do(lambda: s.setdefault(k, sv), lambda: m.setdefault(k, mv), "view")
        else:
            self._do(lambda: s.setdefault(k), lambda: m.setdefault(k), "view")

    @rule(data=st.data())
    def dict_update(self, data):
        path, h, s, m = self._pick(data, dict)
        how = data.draw(st.sampled_from(["dict", "pairs", "kwargs", "view", "self", "ior"]), label="update from")
        if how in ("view", "self"):
            if how == "self":
                opath, om = path, m
            else:
                opath, _, _, om = self._pick(data, dict, "source")
            src = self._source(data, h, opath)
            self._do(lambda: s.update(src), lambda: m.update(om))
            return
        n = data.draw(st.integers(0, 4), label="count")
        if how == "kwargs":
            ks = [data.draw(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=3),
                            label="kwarg") for _ in range(n)]
        else:
            ks = [self._key(data, m) for _ in range(n)]
        svs, mvs = self._values(data, h, n)
        if how == "pairs":
            self._do(lambda: s.update(list(zip(ks, svs))), lambda: m.update(list(zip(ks, mvs))))
        elif how == "kwargs":
            self._do(lambda: s.update(**dict(zip(ks, svs))), lambda: m.update(**dict(zip(ks, mvs))))
        elif how == "ior":
            def shared():
                v = s
                v |= dict(zip(ks, svs))

            def model():
                v = m
                v |= dict(zip(ks, mvs))
            self._do(shared, model)
        else:
            self._do(lambda: s.update(dict(zip(ks, svs))), lambda: m.update(dict(zip(ks, mvs))))

    @precondition(lambda self: self._size() >= 8)
    @rule(data=st.data())
    def dict_clear(self, data):
        path, h, s, m = self._pick(data, dict)
        self._do(s.clear, m.clear)

    @rule(data=st.data())
    def dict_incr(self, data):
        path, h, s, m = self._pick(data, dict)
        k = self._key(data, m)
        number = st.one_of(st.integers(-3, 3), ints, st.floats(allow_nan=False))
        delta = data.draw(number, label="delta")
        default = data.draw(st.one_of(st.just(0), number), label="default")

        def model():
            new = m.get(k, default) + delta
            m[k] = new
            return new
        self._do(lambda: s.incr(k, delta, default), model, "plain")

    # -- list rules ----------------------------------------------------------

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_append(self, data):
        path, h, s, m = self._pick(data, list)
        if data.draw(st.integers(0, 7), label="append itself") == 0:
            self._do(lambda: s.append(s), lambda: m.append(m))
            return
        sv, mv = self._value(data, h)
        self._do(lambda: s.append(sv), lambda: m.append(mv))

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_extend(self, data):
        path, h, s, m = self._pick(data, list)
        how = data.draw(st.sampled_from(["values", "self", "view", "iadd", "generator"]), label="extend with")
        if how == "self" and len(m) <= 32:
            self._do(lambda: s.extend(s), lambda: m.extend(m))
        elif how == "view":
            opath, _, _, om = self._pick(data, list, "source")
            src = self._source(data, h, opath)
            if len(om) <= 32:
                self._do(lambda: s.extend(src), lambda: m.extend(om))
        else:
            svs, mvs = self._values(data, h)
            if how == "iadd":
                def shared():
                    v = s
                    v += svs

                def model():
                    v = m
                    v += mvs
                self._do(shared, model)
            elif how == "generator":
                self._do(lambda: s.extend(x for x in svs), lambda: m.extend(mvs))
            else:
                self._do(lambda: s.extend(svs), lambda: m.extend(mvs))

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_insert(self, data):
        path, h, s, m = self._pick(data, list)
        i = data.draw(st.integers(-len(m) - 3, len(m) + 3), label="index")
        sv, mv = self._value(data, h)
        self._do(lambda: s.insert(i, sv), lambda: m.insert(i, mv))

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_pop(self, data):
        path, h, s, m = self._pick(data, list)
        if data.draw(st.booleans(), label="default index"):
            i = None
        else:
            i = data.draw(st.integers(-len(m) - 2, len(m) + 1), label="index")

        def model():
            j = -1 if i is None else i
            if not -len(m) <= j < len(m):
                return m.pop() if i is None else m.pop(i)
            v = copy.deepcopy(m[j])
            del m[j]
            return v
        self._do(lambda: s.pop() if i is None else s.pop(i), model, "plain")

    def _slice(self, data, n):
        """A slice of a list of length n: simple or extended, some out of range."""
        bound = st.one_of(st.none(), st.integers(-n - 2, n + 2))
        steps = [None, 1, 2, 3, -1, -2, 0]
        return slice(data.draw(bound, label="start"), data.draw(bound, label="stop"),
                     data.draw(st.sampled_from(steps), label="step"))

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_delitem(self, data):
        path, h, s, m = self._pick(data, list)
        if data.draw(st.booleans(), label="slice"):
            sl = self._slice(data, len(m))
            self._do(lambda: s.__delitem__(sl), lambda: m.__delitem__(sl))
        else:
            i = data.draw(st.integers(-len(m) - 2, len(m) + 1), label="index")
            self._do(lambda: s.__delitem__(i), lambda: m.__delitem__(i))

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_setitem(self, data):
        path, h, s, m = self._pick(data, list)
        i = data.draw(st.integers(-len(m) - 2, len(m) + 1), label="index")
        if data.draw(st.integers(0, 7), label="store itself") == 0:
            sv, mv = s, m
        else:
            sv, mv = self._value(data, h)
        self._do(lambda: s.__setitem__(i, sv), lambda: m.__setitem__(i, mv))

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_setslice(self, data):
        path, h, s, m = self._pick(data, list)
        sl = self._slice(data, len(m))
        how = data.draw(st.sampled_from(["values", "values", "self", "view"]), label="assign from")
        if how == "self":
            self._do(lambda: s.__setitem__(sl, s), lambda: m.__setitem__(sl, m))
            return
        if how == "view":
            opath, _, _, om = self._pick(data, list, "source")
            src = self._source(data, h, opath)
            self._do(lambda: s.__setitem__(sl, src), lambda: m.__setitem__(sl, om))
            return
        n = _slice_len(sl, len(m)) if sl.step not in (None, 0) else 0
        if sl.step in (None, 1) or data.draw(st.integers(0, 5), label="wrong length") == 0:
            n = data.draw(st.integers(0, 4), label="count")
        svs, mvs = self._values(data, h, n)
        self._do(lambda: s.__setitem__(sl, svs), lambda: m.__setitem__(sl, mvs))

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_reverse(self, data):
        path, h, s, m = self._pick(data, list)
        self._do(s.reverse, m.reverse)

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_sort(self, data):
        path, h, s, m = self._pick(data, list)
        reverse = data.draw(st.booleans(), label="reverse")
        # a plain sort only where comparisons cannot recurse into containers
        # (they may still raise TypeError: then nothing changes on either side)
        key = None if all(_plain_scalar(x) for x in m) and data.draw(st.booleans(), label="no key") else _sort_key

        def model():
            m[:] = sorted(m, key=key, reverse=reverse)
        self._do(lambda: s.sort(key=key, reverse=reverse), model)

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_remove(self, data):
        path, h, s, m = self._pick(data, list)
        present = [x for x in m if _plain_scalar(x)]
        if present and data.draw(st.booleans(), label="present"):
            x = data.draw(st.sampled_from(present), label="value")
        else:
            x = data.draw(plain_scalars, label="value")
        self._do(lambda: s.remove(x), lambda: m.remove(x))

    @precondition(lambda self: self._has_list() and self._size() >= 8)
    @rule(data=st.data())
    def list_clear(self, data):
        path, h, s, m = self._pick(data, list)
        self._do(s.clear, m.clear)

    @precondition(lambda self: self._has_list())
    @rule(data=st.data())
    def list_imul(self, data):
        path, h, s, m = self._pick(data, list)
        n = data.draw(st.integers(-1, 3), label="times")
        if len(m) * n > 40:
            n = 1

        def shared():
            v = s
            v *= n

        def model():
            v = m
            v *= n
        self._do(shared, model)

    # -- errors, views, collection --------------------------------------------

    @rule(data=st.data())
    def store_unsupported(self, data):
        """A value (or key) dshared cannot store, anywhere in what is stored:
        the operation raises and stores nothing, on either side."""
        path, h, s, m = self._pick(data, dict)
        bad_key = data.draw(st.integers(0, 4), label="bad key") == 0
        if bad_key:
            bad = data.draw(st.sampled_from(BAD_KEYS), label="bad key kind")()
        else:
            bad = data.draw(st.sampled_from(BAD_VALUES), label="bad value kind")()
        sv, _ = self._value(data, h)
        where = [o for _, o in _model_containers(sv)]     # plain containers of sv only, never views
        if bad_key or not where or data.draw(st.integers(0, 3), label="at top") == 0:
            holder = None
        else:
            holder = where[data.draw(st.integers(0, len(where) - 1), label="holder")]
            if type(holder) is list:
                holder.insert(data.draw(st.integers(0, len(holder)), label="at"), bad)
            else:
                holder[data.draw(keys, label="bad at key")] = bad
            bad = sv
        expected = TypeError if bad_key else UnsupportedTypeError
        op = data.draw(st.sampled_from(["set", "setdefault", "update", "list"]), label="operation")
        k = data.draw(keys.filter(lambda k: k not in m), label="new key")
        used = self._used()
        self._changed()
        if bad_key:
            def nested():
                try:
                    hash(bad)
                except TypeError:
                    s[bad] = sv         # cannot sit in a plain dict
                else:
                    s[k] = [sv, {bad: 1}]
            ops = {"set": lambda: s.__setitem__(bad, sv), "setdefault": lambda: s.setdefault(bad, sv),
                   "update": lambda: s.update([(k, sv), (bad, 1)]), "list": nested}
        else:
            # setdefault with a key already there: see the report (UnsupportedTypeError, while
            # dict would return the value), so only new keys here
            ops = {"set": lambda: s.__setitem__(k, bad), "setdefault": lambda: s.setdefault(k, bad),
                   "update": lambda: s.update([(k, sv), ("bad", bad)]),
                   "list": None}
        if op == "list" and not bad_key and self._has_list():
            lpath, lh, ls, lm = self._pick(data, list, "list")
            how = data.draw(st.sampled_from(["append", "insert", "extend", "setitem", "setslice"]),
                            label="list operation")
            if how == "setitem" and not lm:
                how = "append"
            ops["list"] = {"append": lambda: ls.append(bad),
                           "insert": lambda: ls.insert(0, bad),
                           "extend": lambda: ls.extend([1, sv, bad]),
                           "setitem": lambda: ls.__setitem__(-1, bad),
                           "setslice": lambda: ls.__setitem__(slice(0, 1), [sv, bad])}[how]
        elif op == "list" and not bad_key:
            op = "set"
        try:
            ops[op]()
        except expected:
            pass
        else:
            raise AssertionError("storing %r did not raise %s" % (bad, expected.__name__))
        assert self._used() == used, "failed store changed used: %d -> %d" % (used, self._used())

    @rule(data=st.data())
    def hold_view(self, data):
        """Keep a view across steps: while its object is reachable it must
        show it, once the object is removed it must raise StaleReferenceError."""
        kind = data.draw(st.sampled_from([dict, list] if self._has_list() else [dict]), label="kind")
        path, h, s, m = self._pick(data, kind)
        self.held.append((h, s, m))
        del self.held[:-4]

    @rule(h=st.integers(0, 1))
    def collect(self, h):
        reachable = self.walk_ids()
        garbage = self._garbage_alive(reachable)
        freed = self.segs[h].collect()
        if not garbage:
            # refcounting already freed everything else: a leak if not
            assert freed == 0, "collect() freed %d bytes with no garbage cycle" % freed
        for i in [i for i in self.known if i not in reachable]:
            del self.known[i]

    @rule()
    def reattach(self):
        """Close the second handle and attach again by name."""
        self.held = [x for x in self.held if x[0] != 1]
        self.roots.pop()
        self.segs.pop().close()
        self.segs.append(dshared.Segment(self.name, create=False))
        self.roots.append(self.segs[1].col())

    @rule(data=st.data())
    def query(self, data):
        """Read-only operations give what the model gives."""
        kind = data.draw(st.sampled_from([dict, list] if self._has_list() else [dict]), label="kind")
        path, h, s, m = self._pick(data, kind)
        if kind is dict:
            k = self._key(data, m)
            assert (k in s) == (k in m)
            Same(shared=True).run(s.get(k, "<none>"), m.get(k, "<none>"), "get")
            rs, rm = list(reversed(s)), list(reversed(m))
            assert len(rs) == len(rm) and all(_scalar_same(a, b) for a, b in zip(rs, rm))
            assert s.keys() == m.keys()
            if k in m:
                Same(shared=True).run(s[k], m[k], "getitem")
            else:
                with pytest.raises(KeyError):
                    s[k]
        else:
            i = data.draw(st.integers(-len(m) - 2, len(m) + 1), label="index")
            if -len(m) <= i < len(m):
                Same(shared=True).run(s[i], m[i], "getitem")
            else:
                with pytest.raises(IndexError):
                    s[i]
            sl = self._slice(data, len(m))
            if sl.step == 0:
                with pytest.raises(ValueError):
                    s[sl]
            else:
                got, want = s[sl], m[sl]
                assert type(got) is list and len(got) == len(want)
                for a, b in zip(got, want):
                    Same(shared=True).run(a, b, "slice")
            present = [x for x in m if _plain_scalar(x)]
            x = data.draw(st.sampled_from(present) if present else plain_scalars, label="value")
            assert (x in s) == (x in m)
            assert s.count(x) == m.count(x)
            if x in m:
                assert s.index(x) == m.index(x)
            else:
                with pytest.raises(ValueError):
                    s.index(x)
            rs = list(reversed(s))
            assert len(rs) == len(m)
        if _eq_safe(m):
            assert s == m and not (s != m)

    # -- teardown ------------------------------------------------------------

    def teardown(self):
        failing = sys.exc_info()[0] is not None
        try:
            if not failing:
                self.steps = 0
                self._check_heap()
                self.held = []
                self.roots[1].clear()
                self.model.clear()
                self.segs[0].collect()
                report = self.segs[0].check()
                assert report.ok, report.problems
                assert self._used() == self.used0, "leak: used %d, %d after creation" % (
                    self._used(), self.used0)
        finally:
            self.held = []
            self.roots = []
            for seg in self.segs:
                seg.close()
            dshared.unlink(self.name)


class NearFullMachine(SharedStateMachine):
    """The same rules on a 64 KiB segment kept near full: any operation may
    raise SegmentFullError, and then nothing changes. The filling is ballast
    in a named top-level dict outside the root (so outside the model), which
    the rules below grow and shrink."""
    SIZE = 64 << 10
    MAY_BE_FULL = True
    VALUES = big_top_values
    full_total = 0

    def __init__(self):
        super().__init__()
        self.ballast = self.segs[0].col("ballast")
        self.used0 = self._used()
        self.pieces = 0

    def _add_ballast(self, left):
        n = max(0, self.segs[0].stats()["free"] - left - 128)
        try:
            self.ballast[self.pieces] = b"\xab" * n
        except SegmentFullError:
            pass
        self.pieces += 1

    @initialize(left=st.integers(0, 16000))
    def fill(self, left):
        self._add_ballast(left)

    @rule(left=st.integers(0, 4000))
    def fill_up(self, left):
        """Leave only ``left`` bytes or so free."""
        self._add_ballast(left)

    @precondition(lambda self: len(self.ballast) > 1)
    @rule()
    def drain(self):
        self.ballast.popitem()

    def teardown(self):
        if sys.exc_info()[0] is None:
            # the sizes drawn must actually fill the segment now and then
            type(self).full_total += self.full_errors
            assert all(set(v) <= {0xab} for v in self.ballast.values())
            self.ballast.clear()
        super().teardown()


# -------------------------------------------------------------------- tests --

@pytest.fixture
def no_leftovers():
    yield
    left = sorted(n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX))
    for n in left:
        os.unlink(os.path.join(SHM_DIR, n))
    assert not left, "segments left in /dev/shm: %r" % left


# a passing run takes well under a minute; the longer limit leaves hypothesis
# time to shrink a failure (it gives up shrinking after five minutes)
@pytest.mark.timeout(600)
def test_shared_state_machine(no_leftovers):
    run_state_machine_as_test(SharedStateMachine, settings=SETTINGS)


@pytest.mark.timeout(600)
def test_near_full_state_machine(no_leftovers):
    NearFullMachine.full_total = 0
    run_state_machine_as_test(NearFullMachine, settings=SETTINGS)
    assert NearFullMachine.full_total > 0, "the near-full machine never filled its segment"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_shared_state_machine_long(no_leftovers):
    run_state_machine_as_test(SharedStateMachine, settings=SLOW_SETTINGS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_near_full_state_machine_long(no_leftovers):
    NearFullMachine.full_total = 0
    run_state_machine_as_test(NearFullMachine, settings=SLOW_SETTINGS)
    assert NearFullMachine.full_total > 0, "the near-full machine never filled its segment"
