"""Hostile values (RELIABILITY.md): keys whose __hash__ / __eq__ raise or
re-enter dshared, 100,000-deep nesting, values from 0 bytes to one byte
more than the segment. Supported values round-trip exactly; the rest raise
before anything changes; user code never runs while the segment lock is
held; no RecursionError.

User classes, sets, complex, big ints, nan, -0.0, lone surrogates and NUL
are in test_values_roundtrip.py."""
import threading

import pytest

import dshared


def _state(seg):
    st = seg.stats()
    return st["used"], st["free"], st["blocks"], st["top"]


class Probe:
    """Tells whether another thread can take the segment lock right now,
    i.e. whether the calling thread holds it (the lock is reentrant, so the
    caller itself cannot tell)."""

    def __init__(self, seg):
        self.seg = seg

    def lock_held_by_caller(self):
        out = []

        def other():
            try:
                with self.seg.lock(timeout=0.2):
                    out.append(False)
            except dshared.LockTimeout:
                out.append(True)

        th = threading.Thread(target=other)
        th.start()
        th.join()
        return out[0]


def _hostile_classes(root, probe, calls):
    """Key classes whose __hash__ / __eq__ record whether the lock was held,
    then raise or re-enter (write to the segment)."""

    def note(what):
        calls.append((what, probe.lock_held_by_caller()))

    def reenter():
        root["reentered"] = root.get("reentered", 0) + 1

    class Raising:
        def __hash__(self):
            note("hash")
            raise ZeroDivisionError("__hash__")

        def __eq__(self, other):
            note("eq")
            raise ZeroDivisionError("__eq__")

    class Reentering:
        def __hash__(self):
            note("hash")
            reenter()
            return 1

        def __eq__(self, other):
            note("eq")
            reenter()
            return False

    class RaisingStr(str):
        __hash__ = Raising.__hash__
        __eq__ = Raising.__eq__

    class ReenteringStr(str):
        __hash__ = Reentering.__hash__
        __eq__ = Reentering.__eq__

    class ReenteringInt(int):
        __hash__ = Reentering.__hash__
        __eq__ = Reentering.__eq__

    class RaisingTuple(tuple):
        __hash__ = Raising.__hash__
        __eq__ = Raising.__eq__

    return Raising, Reentering, RaisingStr, ReenteringStr, ReenteringInt, RaisingTuple


def test_the_lock_probe_sees_a_held_lock(segment):
    """The probe the tests below rely on does see the lock when it is held."""
    probe = Probe(segment)
    assert not probe.lock_held_by_caller()
    with segment.lock():
        assert probe.lock_held_by_caller()
    assert not probe.lock_held_by_caller()


@pytest.mark.parametrize("kind", ["Raising", "Reentering"])
def test_keys_of_user_classes_raise_before_any_change(segment, root, kind):
    """A key of a user class is refused (UnsupportedTypeError) and a lookup
    misses, without dshared calling its __hash__ or __eq__ and without any
    change to the segment. (A plain dict does call them.)"""
    calls = []
    classes = dict(zip(["Raising", "Reentering"], _hostile_classes(root, Probe(segment), calls)[:2]))
    K = classes[kind]
    root.update({"a": 1, "d": {"x": [1]}})
    before, model = _state(segment), root.to_python()
    for op in (lambda: root.__setitem__(K(), 1),
               lambda: root.setdefault(K(), 1),
               lambda: root["d"].update([("new", 1), (K(), 2)]),
               lambda: root.__setitem__(("t", K()), 1),
               lambda: root.__setitem__("v", [1, {"k": K()}]),
               lambda: root["d"]["x"].append(K())):
        with pytest.raises(dshared.UnsupportedTypeError):
            op()
        assert root.to_python() == model
        assert _state(segment) == before
    assert root.get(K()) is None
    assert K() not in root
    with pytest.raises(KeyError):
        root[K()]
    # pop and del miss too, as for any absent key
    assert root.pop(K(), "default") == "default"
    with pytest.raises(KeyError):
        root.pop(K())
    with pytest.raises(KeyError):
        del root[K()]
    assert root.to_python() == model
    assert _state(segment) == before
    assert calls == [], calls
    assert segment.check().ok
    # the control: a plain dict does run them
    if kind == "Raising":
        with pytest.raises(ZeroDivisionError):
            {K(): 1}
    else:
        {K(): 1}
        assert root["reentered"] == 1
    assert calls == [("hash", False)]


@pytest.mark.parametrize("kind", ["RaisingStr", "ReenteringStr", "ReenteringInt", "RaisingTuple"])
def test_keys_of_builtin_subclasses_are_stored_by_value(segment, root, kind):
    """A str / int / tuple subclass whose __hash__ and __eq__ raise or write
    to the segment is used by its value: dshared hashes and compares the
    canonical bytes and never runs them."""
    calls = []
    classes = dict(zip(["RaisingStr", "ReenteringStr", "ReenteringInt", "RaisingTuple"],
                       _hostile_classes(root, Probe(segment), calls)[2:]))
    K = classes[kind]
    make = {"RaisingStr": lambda: K("key"), "ReenteringStr": lambda: K("key"),
            "ReenteringInt": lambda: K(7), "RaisingTuple": lambda: K(("t", 1))}[kind]
    plain = {"RaisingStr": "key", "ReenteringStr": "key", "ReenteringInt": 7, "RaisingTuple": ("t", 1)}[kind]
    root[make()] = "first"
    root["d"] = {}
    root["d"][make()] = [1]                 # ({make(): [1]} would hash it in Python)
    root.update([(make(), "second")])
    assert root[make()] == "second"
    assert make() in root and plain in root
    assert root.get(make()) == "second"
    assert root["d"][plain] == [1]
    stored = [k for k in root if k == plain]
    assert len(stored) == 1 and type(stored[0]) is type(plain)
    assert root.pop(make()) == "second"
    assert make() not in root
    assert calls == [], calls
    assert "reentered" not in root
    assert segment.check().ok


def test_list_methods_run_eq_outside_the_lock_and_propagate_it(segment, root):
    """in / index / count / remove / == compare the argument with each item,
    which runs its __eq__: never with the lock held, its exception comes
    out unchanged, and the list is left as it was."""
    calls = []
    Raising, Reentering = _hostile_classes(root, Probe(segment), calls)[:2]
    root["l"] = [1, "two", 3.5, [4], {"five": 5}, None]
    model = root["l"].to_python()
    lst = root["l"]
    for op in (lambda: Raising() in lst, lambda: lst.index(Raising()), lambda: lst.count(Raising()),
               lambda: lst.remove(Raising()), lambda: lst == [Raising()] * 6):
        with pytest.raises(ZeroDivisionError):
            op()
        assert root["l"].to_python() == model
    assert calls and not any(held for _, held in calls), calls
    assert segment.check().ok


def test_list_methods_survive_an_eq_that_writes(segment, root):
    """An __eq__ that writes to the segment while a list method compares:
    no deadlock, the writes all land (none lost), check() stays clean."""
    calls = []
    Raising, Reentering = _hostile_classes(root, Probe(segment), calls)[:2]
    root["l"] = [1, "two", 3.5, [4], {"five": 5}, None]
    lst = root["l"]
    assert Reentering() not in lst
    with pytest.raises(ValueError):
        lst.index(Reentering())
    assert lst.count(Reentering()) == 0
    with pytest.raises(ValueError):
        lst.remove(Reentering())
    assert not any(held for _, held in calls), calls
    assert root["reentered"] == len(calls) > 0
    assert root["l"].to_python() == [1, "two", 3.5, [4], {"five": 5}, None]
    assert segment.check().ok


def test_an_eq_that_changes_the_list_it_is_compared_with(segment, root):
    """remove() with an __eq__ that inserts into the same list: the insert is
    kept and exactly one item goes, as with a plain list."""
    class X:
        done = False

        def __init__(self, target):
            self.target = target

        def __eq__(self, other):
            if not X.done:
                X.done = True
                self.target.insert(0, "NEW")
            return other == "b"

    plain = ["a", "b", "c"]
    plain.remove(X(plain))
    X.done = False
    root["m"] = ["a", "b", "c"]
    root["m"].remove(X(root["m"]))
    assert root["m"].to_python() == plain == ["NEW", "a", "c"]
    assert segment.check().ok


def test_sort_key_that_writes_to_the_list(segment, root):
    """sort(key=f) runs f outside the lock; an f that appends to the list
    being sorted does not deadlock, and the append is not lost."""
    probe = Probe(segment)
    held = []
    root["l"] = [3, 1, 2]

    def key(x):
        held.append(probe.lock_held_by_caller())
        if len(held) == 1:
            root["l"].append(0)
        return x

    try:
        root["l"].sort(key=key)
    except ValueError:
        pass                                # "list modified during sort", as list.sort may say
    assert sorted(root["l"].to_python()) == [0, 1, 2, 3]
    assert held and not any(held)
    assert segment.check().ok


# -- 100,000-deep nesting ----------------------------------------------------------------

DEPTH = 100_000


def _deep(kind):
    v = []
    for i in range(DEPTH):
        if kind == "list":
            v = [v]
        elif kind == "dict":
            v = {"n": v}
        else:
            v = [i, v] if i % 3 == 0 else ({"n": v, "i": i} if i % 3 == 1 else [v, (i, "t")])
    return v


def _same(a, b):
    """a == b for nested lists / dicts / tuples, iteratively (== on 100,000
    levels would itself overflow the C stack)."""
    todo = [(a, b)]
    n = 0
    while todo:
        x, y = todo.pop()
        n += 1
        if type(x) is not type(y):
            return False
        if isinstance(x, (list, tuple)):
            if len(x) != len(y):
                return False
            todo.extend(zip(x, y))
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            todo.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return n > DEPTH


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["list", "dict", "mixed"])
def test_100000_deep_nesting_round_trips(make_segment, kind):
    seg = make_segment(256 << 20)
    root = seg.col()
    base = seg.stats()["used"]
    value = _deep(kind)
    root["deep"] = value
    assert _same(root["deep"].to_python(), value)
    assert _same(root.to_python()["deep"], value)
    # walk down through live views, a few thousand levels
    v = root["deep"]
    for _ in range(3000):
        if isinstance(v, dshared.SharedDict):
            v = v["n"]
        else:
            v = v[1] if isinstance(v[0], int) else v[0]
    assert isinstance(v, (dshared.SharedList, dshared.SharedDict)) and len(v)
    assert seg.check().ok
    root["copy"] = root["deep"]             # a view assigned: shared, not copied
    del root["deep"]
    del root["copy"]
    assert seg.stats()["used"] == base
    assert seg.collect() == 0
    assert seg.check().ok


def test_100000_deep_tuples_are_refused_before_any_change(segment, root):
    """Tuples are stored by value and nested at most 1,000 deep: deeper ones
    raise UnsupportedTypeError, with nothing changed, and no RecursionError."""
    v = ()
    for _ in range(DEPTH):
        v = (v,)
    root["k"] = "old"
    before = _state(segment)
    with pytest.raises(dshared.UnsupportedTypeError, match="deeper"):
        root["k"] = v
    with pytest.raises(dshared.UnsupportedTypeError, match="deeper"):
        root["k"] = [1, {"t": v}]
    assert root["k"] == "old"
    assert _state(segment) == before
    assert segment.check().ok


# -- sizes from 0 bytes to the segment plus one --------------------------------------------

def test_values_from_empty_to_one_byte_over_the_segment(make_segment):
    seg = make_segment(64 << 10)
    root = seg.col()
    cap = seg.capacity
    for n in (0, 1, 14, 15, 16, 1000, 20000):
        for v in (b"b" * n, "s" * n):
            root["v"] = v
            assert root["v"] == v and type(root["v"]) is type(v)
    root["v"] = "old"
    before = _state(seg)
    for n in (cap - 4096, cap, cap + 1):
        for v in (b"b" * n, "s" * n, [b"b" * n]):
            with pytest.raises(dshared.SegmentFullError):
                root["v"] = v
            assert root["v"] == "old"
            assert _state(seg) == before
    root.clear()
    big = b"x" * ((cap - 4096) * 9 // 10)     # 90% of the heap fits once the rest is free
    root["v"] = big
    assert root["v"] == big
    assert seg.check().ok


# -- methods called on the wrong kind of object ------------------------------

_WRONG_SELF = r"""
import dshared
from dshared import _codec, _heap

classes = [dshared.Segment, dshared.SharedDict, dshared.SharedList,
           _codec.DictNode, _codec.ListNode, _codec.Node]
called = 0
for cls in classes:
    for klass in cls.__mro__:
        if klass is object or not klass.__module__.startswith("dshared"):
            continue
        for attr, member in vars(klass).items():
            if attr in ("__new__", "__init_subclass__", "__subclasshook__", "__class_getitem__"):
                continue
            fn = getattr(cls, attr, None)
            if not callable(fn) or isinstance(fn, type):
                continue
            for self in ("x", 1, None, b"x", [1], {"k": 1}):
                for args in ((), (1,), ("k", 2)):
                    called += 1
                    try:
                        fn(self, *args)
                    except Exception:
                        pass
print("called", called)
"""


def test_methods_called_with_a_wrong_self_raise_instead_of_crashing():
    # SharedDict.get("x", 1), Segment.close("x") and the like: every method of
    # the C types checks the type of self (a str read as a Segment would crash)
    from _helpers import run_python
    r = run_python(_WRONG_SELF, timeout=120)
    called = int(r.stdout.split()[-1])
    assert called > 1000, r.stdout


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, "text", None, (1,)])
def test_incr_of_a_value_that_is_not_a_number_raises_and_runs_nothing_under_the_lock(
        segment, monkeypatch, value):
    """incr() on a list, dict, str, None or tuple is a TypeError, as d[k] + 1
    is, with the value unchanged; a list or dict value comes back as a view
    whose __add__ / __radd__ is Python code, which must not run under the lock."""
    probe = Probe(segment)
    calls = []

    def spy(self, other):
        calls.append(probe.lock_held_by_caller())
        return NotImplemented

    for cls in (dshared.SharedList, dshared.SharedDict):
        monkeypatch.setattr(cls, "__add__", spy, raising=False)
        monkeypatch.setattr(cls, "__radd__", spy, raising=False)
    d = segment.col()
    d["v"] = value
    with pytest.raises(TypeError):
        d.incr("v", 1)
    assert True not in calls, "Python code ran while incr() held the segment lock"
    got = d["v"]
    assert (got.to_python() if hasattr(got, "to_python") else got) == value
    assert d.incr("n", 2) == 2 and d.incr("n", 0.5) == 2.5
