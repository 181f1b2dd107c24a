"""One behaviour suite, run against both backends (shared memory and Redis)
through the backend_segment fixture: each SharedDict/SharedList operation is
compared with the same operation on a Python dict/list."""
import random

import pytest

import dshared
from _proc import test_seed

KEYS = ["a", "b", 1, 2.5, True, None, b"k", (1, "x"), -7, 2 ** 40]
VALUES = [0, 1, -3, 2 ** 62, 2 ** 70, 1.5, "s", "", b"\x00b", None, True, False, (1, (2, "x")),
          {"n": 1}, [1, 2], {"deep": {"x": [1, {"y": 2}]}}]


@pytest.fixture
def root(backend_segment):
    return backend_segment.col()


def test_scalars_round_trip(root):
    for i, v in enumerate(VALUES):
        root[i] = v
    for i, v in enumerate(VALUES):
        got = root[i]
        assert got == v and type(got) is type(v) or isinstance(v, (dict, list))
    assert root.to_python() == dict(enumerate(VALUES))


def test_dict_api(root):
    ref = {}
    for k in KEYS:
        root[k] = str(k)
        ref[k] = str(k)
    assert list(root) == list(ref)
    assert list(root.keys()) == list(ref.keys())
    assert list(root.values()) == list(ref.values())
    assert list(root.items()) == list(ref.items())
    assert list(reversed(root)) == list(reversed(ref))
    assert len(root) == len(ref) and root == ref
    assert root[1.0] == ref[1.0] and root[True] == ref[True]     # 1 == 1.0 == True: one key
    root[1.0] = "one"
    ref[1.0] = "one"
    assert list(root.items()) == list(ref.items())
    assert root.get("zz") is None and root.get("zz", 5) == 5
    assert "a" in root and "zz" not in root
    assert root.setdefault("a", 9) == "a" and root.setdefault("new", 9) == 9
    ref.setdefault("new", 9)
    assert root.pop("new") == 9 and ref.pop("new") == 9
    assert root.pop("nope", "d") == "d"
    with pytest.raises(KeyError):
        root.pop("nope")
    with pytest.raises(KeyError):
        root["nope"]
    with pytest.raises(KeyError):
        del root["nope"]
    with pytest.raises(TypeError):
        root[[1]] = 2
    assert root.popitem() == ref.popitem()
    del root["a"]
    del ref["a"]
    root["a"] = 1                    # re-inserted at the end
    ref["a"] = 1
    assert list(root) == list(ref)
    root.update({"u": 1}, v=2)
    ref.update({"u": 1}, v=2)
    root.update([("w", 3)])
    ref.update([("w", 3)])
    assert list(root.items()) == list(ref.items())
    assert root.copy() == ref and (root | {"x": 1}) == (ref | {"x": 1})
    root.clear()
    assert len(root) == 0 and root == {} and list(root) == []


def test_nested_live_views(root):
    root["d"] = {"key": "val", "inner": {"x": 1}, "l": [1, 2]}
    d = root["d"]
    d["inner"]["x"] = 2            # not a snapshot: the write lands
    d["l"].append(3)
    assert root["d"]["inner"]["x"] == 2
    assert root["d"]["l"] == [1, 2, 3]
    root["alias"] = d              # a second reference to the same dict
    root["alias"]["key"] = "changed"
    assert root["d"]["key"] == "changed"
    popped = root.pop("d")
    assert popped == {"key": "changed", "inner": {"x": 2}, "l": [1, 2, 3]}
    assert root["alias"]["inner"]["x"] == 2
    assert dshared.to_python(root["alias"]) == {"key": "changed", "inner": {"x": 2}, "l": [1, 2, 3]}
    assert root.setdefault("sd", {"a": 1})["a"] == 1


def test_incr(root):
    assert root.incr("c") == 1
    assert root.incr("c", 5) == 6
    assert root.incr("c", -10) == -4
    assert root.incr("f", 0.5) == 0.5
    assert root.incr("big", 2 ** 63 - 1) == 2 ** 63 - 1
    assert root.incr("big") == 2 ** 63           # past 64 bits: still exact
    assert root.incr("d", 1, default=10) == 11
    root["s"] = "x"
    with pytest.raises(TypeError):
        root.incr("s")
    with pytest.raises(TypeError):
        root.incr("c", "1")


def test_list_api(root):
    root["l"] = [3, 1, 2]
    lst = root["l"]
    ref = [3, 1, 2]
    for op in [lambda l: l.append(4), lambda l: l.extend([5, 6]), lambda l: l.insert(0, 0),
               lambda l: l.insert(-1, 9), lambda l: l.insert(100, 7), lambda l: l.insert(-100, 8),
               lambda l: l.pop(), lambda l: l.pop(0), lambda l: l.pop(2), lambda l: l.remove(9),
               lambda l: l.sort(), lambda l: l.reverse(), lambda l: l.sort(key=lambda x: -x, reverse=True),
               lambda l: l.__setitem__(1, "x"), lambda l: l.__delitem__(0), lambda l: l.__setitem__(slice(1, 3), [1, 2, 3]),
               lambda l: l.__delitem__(slice(None, None, 2)), lambda l: l.__iadd__([4]), lambda l: l.__imul__(2)]:
        a = op(lst)
        b = op(ref)
        if not isinstance(b, list):
            assert a == b or a is lst
        assert lst == ref and list(lst) == ref and len(lst) == len(ref)
    for i in range(-len(ref), len(ref)):
        assert lst[i] == ref[i]
    assert lst[1:3] == ref[1:3] and lst[::-1] == ref[::-1]
    assert lst.index(ref[1]) == ref.index(ref[1]) and lst.count(ref[0]) == ref.count(ref[0])
    with pytest.raises(IndexError):
        lst[100]
    with pytest.raises(IndexError):
        lst[100] = 1
    with pytest.raises(ValueError):
        lst.remove("absent")
    lst.clear()
    with pytest.raises(IndexError):
        lst.pop()
    assert lst == [] and len(lst) == 0


@pytest.mark.parametrize("steps", [300])
def test_random_operations_match_python(root, steps):
    """Random operations on a nested structure and on its Python twin."""
    rnd = random.Random(test_seed())
    root["t"] = {}
    ref = {}
    shared = root["t"]
    for _ in range(steps):
        k = rnd.choice(KEYS[:6])
        op = rnd.random()
        if op < 0.4:
            v = rnd.choice(VALUES)
            shared[k] = v
            ref[k] = v if not isinstance(v, (dict, list)) else __import__("copy").deepcopy(v)
        elif op < 0.55:
            assert shared.pop(k, "none") == ref.pop(k, "none")
        elif op < 0.7 and isinstance(ref.get(k), list):
            v = rnd.choice(VALUES[:8])
            shared[k].append(v)
            ref[k].append(v)
        elif op < 0.8 and isinstance(ref.get(k), dict):
            shared[k]["z"] = 1
            ref[k]["z"] = 1
        elif op < 0.9:
            assert shared.get(k, "no") == ref.get(k, "no")
        else:
            assert list(shared.items()) == list(ref.items())
    assert shared.to_python() == ref
    assert backend_check(root)


def backend_check(root):
    report = root.segment.check()
    assert report.ok, report.problems
    return True


# values as the Redis backend stores them: tuples of plain values only
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TEXT = st.text(max_size=12)
_INTS = st.one_of(st.integers(), st.sampled_from([2 ** 63, -(2 ** 63), 2 ** 63 - 1, -(2 ** 63) - 1, 2 ** 64]))
_KEYS = st.recursive(st.one_of(st.none(), st.booleans(), _INTS, st.floats(allow_nan=False), _TEXT,
                               st.binary(max_size=12)), lambda c: st.lists(c, max_size=3).map(tuple), max_leaves=4)
_PLAIN = st.recursive(st.one_of(st.none(), st.booleans(), _INTS, st.floats(allow_nan=False), _TEXT,
                                st.binary(max_size=20)), lambda c: st.lists(c, max_size=3).map(tuple), max_leaves=5)
_VALUES = st.recursive(_PLAIN, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(_KEYS, c, max_size=4)),
                       max_leaves=20)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=_VALUES)
def test_hypothesis_roundtrip_both_backends(root, value):
    root["k"] = value
    got = root["k"]
    got = got.to_python() if hasattr(got, "to_python") else got
    assert got == value and repr(got) == repr(value)
