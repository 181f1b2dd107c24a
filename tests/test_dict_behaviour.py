"""SharedDict must behave exactly like the builtin dict.

Every test here runs twice through the ``mk`` fixture: once against Python's
``dict`` (the reference: those runs check that the expectations written below
are right) and once against a ``SharedDict`` view stored in a fresh segment.
Expected values are written out literally, so both runs are checked against
the same numbers, orders and exceptions.
"""
import collections
import collections.abc
import copy
import math
import pickle
import sys
import types

import pytest

from _helpers import BuiltinMaker, SharedMaker
from _redis import mark_difference


# ---------------------------------------------------------------- fixtures --

# the Redis copies run under -m slow (tests/test_backends.py and tests/test_redis*.py
# cover the Redis backend in the default run)
@pytest.fixture(params=["builtin", "shared", pytest.param("redis", marks=pytest.mark.slow)])
def mk(request):
    """mk(init) -> a dict (builtin) or a SharedDict view (shared) equal to dict(init)."""
    if request.param == "builtin":
        return BuiltinMaker(dict)
    if request.param == "redis":        # the Redis backend (tests/conftest.py)
        mark_difference(request)
        return SharedMaker(request.getfixturevalue("redis_root"), dict)
    return SharedMaker(request.getfixturevalue("root"), dict)


def assert_items(mk, d, expected):
    """d holds exactly the (key, value) pairs ``expected``, in that order,
    also when read again from the segment."""
    assert list(d.items()) == expected
    assert len(d) == len(expected)
    again = mk.fresh(d)
    assert list(again.items()) == expected
    assert [type(k) for k in again] == [type(k) for k, _ in expected]


# ------------------------------------------------------------------- basics --

def test_is_a_mutable_mapping(mk):
    d = mk({"a": 1})
    assert isinstance(d, collections.abc.MutableMapping)
    assert isinstance(d, collections.abc.Mapping)


def test_getitem_of_every_key_type(mk):
    d = mk({"a": 1, b"a": 2, 3: "three", 2.5: "f", None: "none", (1, "t"): "tuple",
            ((1, 2), (b"x", None)): "nested tuple"})
    assert d["a"] == 1
    assert d[b"a"] == 2
    assert d[3] == "three"
    assert d[2.5] == "f"
    assert d[None] == "none"
    assert d[(1, "t")] == "tuple"
    assert d[((1, 2), (b"x", None))] == "nested tuple"


def test_getitem_values_come_back_equal_and_typed(mk):
    d = mk({"i": 7, "b": True, "f": 1.0, "s": "x", "y": b"y", "n": None,
            "t": (1, (2,)), "l": [1, [2]], "d": {"k": [1]}, "big": 2 ** 70})
    assert d["i"] == 7 and type(d["i"]) is int
    assert d["b"] is True
    assert d["f"] == 1.0 and type(d["f"]) is float
    assert d["s"] == "x" and type(d["s"]) is str
    assert d["y"] == b"y" and type(d["y"]) is bytes
    assert d["n"] is None
    assert d["t"] == (1, (2,)) and type(d["t"]) is tuple and type(d["t"][1]) is tuple
    assert d["l"] == [1, [2]]
    assert d["d"] == {"k": [1]}
    assert d["big"] == 2 ** 70


@pytest.mark.parametrize("key", ["zz", b"a", 4, 2.25, None, (1, 2), ("a",), False])
def test_getitem_missing_raises_keyerror_with_key(mk, key):
    d = mk({"a": 1, 3: 3, (1,): 1})
    with pytest.raises(KeyError) as exc:
        d[key]
    assert exc.value.args == (key,)


def test_setitem_new_keys_append_and_overwrite_keeps_position(mk):
    d = mk({"a": 1, "b": 2, "c": 3})
    d["d"] = 4
    d["a"] = 10
    d["b"] = [20]
    assert_items(mk, d, [("a", 10), ("b", [20]), ("c", 3), ("d", 4)])


def test_setitem_overwrite_changes_value_type(mk):
    d = mk({"a": 1})
    d["a"] = {"x": [1]}
    d["a"] = "now a string"
    d["a"] = (1, 2)
    assert_items(mk, d, [("a", (1, 2))])
    assert type(d["a"]) is tuple


def test_nested_views_write_through(mk):
    d = mk({})
    d["n"] = {"a": 1}
    d["n"]["b"] = 2
    d["n"]["l"] = []
    d["n"]["l"].append(3)
    d["n"]["l"].append({"deep": 1})
    d["n"]["l"][1]["deep"] += 1
    assert d == {"n": {"a": 1, "b": 2, "l": [3, {"deep": 2}]}}
    assert mk.fresh(d) == {"n": {"a": 1, "b": 2, "l": [3, {"deep": 2}]}}


def test_assignment_copies_plain_values_in(mk):
    d = mk({})
    src = {"k": [1, 2]}
    d["v"] = src["k"]
    src["k"].append(3)
    # builtin keeps a reference to the same list, so both see the append
    assert d["v"] == ([1, 2, 3] if mk.kind == "builtin" else [1, 2])


def test_delitem(mk):
    d = mk({"a": 1, "b": 2, "c": 3})
    del d["b"]
    assert_items(mk, d, [("a", 1), ("c", 3)])
    assert "b" not in d


@pytest.mark.parametrize("key", ["zz", b"b", 7, None, (1, 2)])
def test_delitem_missing_raises_keyerror(mk, key):
    d = mk({"a": 1, "b": 2})
    with pytest.raises(KeyError) as exc:
        del d[key]
    assert exc.value.args == (key,)
    assert_items(mk, d, [("a", 1), ("b", 2)])


def test_delitem_twice_raises(mk):
    d = mk({"a": 1})
    del d["a"]
    with pytest.raises(KeyError) as exc:
        del d["a"]
    assert exc.value.args == ("a",)
    assert len(d) == 0


def test_contains(mk):
    d = mk({"a": 1, 2: "two", None: 0, (1, "x"): 1, b"b": 2})
    assert "a" in d
    assert 2 in d and 2.0 in d
    assert None in d
    assert (1, "x") in d and (1.0, "x") in d and (True, "x") in d
    assert b"b" in d
    assert "b" not in d
    assert b"a" not in d
    assert "2" not in d
    assert 3 not in d
    assert (1,) not in d
    assert 1 not in d  # the value 1 is not a key


def test_len_and_bool(mk):
    empty = mk({})
    assert len(empty) == 0
    assert not empty
    assert bool(empty) is False
    d = mk({"a": 1, "b": None})
    assert len(d) == 2
    assert d
    d["c"] = 3
    assert len(d) == 3
    del d["a"]
    del d["b"]
    del d["c"]
    assert len(d) == 0
    assert not d


def test_iter(mk):
    d = mk({"b": 1, "a": 2, 3: 3, None: 4})
    it = iter(d)
    assert iter(it) is it
    assert next(it) == "b"
    assert list(it) == ["a", 3, None]
    with pytest.raises(StopIteration):
        next(it)
    assert list(d) == ["b", "a", 3, None]


def test_iter_empty(mk):
    assert list(mk({})) == []


def test_reversed(mk):
    d = mk({"a": 1, "b": 2, "c": 3})
    del d["a"]
    d["a"] = 4
    assert list(reversed(d)) == ["a", "c", "b"]
    assert list(reversed(mk({}))) == []


def test_insertion_order_after_deletes_and_reinserts(mk):
    d = mk({k: i for i, k in enumerate("abcdef")})
    del d["b"]
    del d["e"]
    d["b"] = "B"
    d["a"] = "A"  # overwrite keeps position
    d["z"] = "Z"
    del d["a"]
    d["a"] = "A2"
    assert_items(mk, d, [("c", 2), ("d", 3), ("f", 5), ("b", "B"), ("z", "Z"), ("a", "A2")])


def test_many_keys_order_and_lookup(mk):
    d = mk({})
    for i in range(300):
        d["k%d" % i] = i
    for i in range(0, 300, 3):
        del d["k%d" % i]
    for i in range(0, 300, 6):
        d["k%d" % i] = -i
    expected = [("k%d" % i, i) for i in range(300) if i % 3] + \
               [("k%d" % i, -i) for i in range(0, 300, 6)]
    assert_items(mk, d, expected)
    assert all(d[k] == v for k, v in expected)


# ------------------------------------------------------------- key semantics --

def test_one_and_one_point_zero_and_true_are_one_key(mk):
    d = mk({})
    d[1] = "int"
    d[1.0] = "float"
    d[True] = "bool"
    assert len(d) == 1
    assert d[1] == d[1.0] == d[True] == "bool"
    (key,) = list(d)
    assert key == 1 and type(key) is int  # the first key object is kept
    assert_items(mk, d, [(1, "bool")])


def test_first_inserted_key_type_is_kept(mk):
    d = mk({True: "a", 0.0: "b"})
    d[1] = "c"
    d[0] = "d"
    assert_items(mk, d, [(True, "c"), (0.0, "d")])
    assert [type(k) for k in d] == [bool, float]


def test_false_zero_and_negative_zero_are_one_key(mk):
    d = mk({})
    d[-0.0] = "neg"
    d[0] = "int"
    d[False] = "bool"
    d[0.0] = "pos"
    assert len(d) == 1
    (key,) = list(d)
    assert type(key) is float and math.copysign(1.0, key) == -1.0
    assert d[0] == "pos"
    assert mk.fresh(d)[False] == "pos"


def test_large_int_and_float_keys(mk):
    d = mk({})
    d[2 ** 53] = "a"
    d[2 ** 53 + 1] = "b"
    d[2 ** 64] = "c"
    d[-(2 ** 100)] = "d"
    assert d[2.0 ** 53] == "a"
    assert d[float(2 ** 64)] == "c"
    assert d[-(2.0 ** 100)] == "d"
    assert float(2 ** 53 + 1) in d  # rounds to 2**53
    d[float(2 ** 53)] = "a2"
    assert_items(mk, d, [(2 ** 53, "a2"), (2 ** 53 + 1, "b"), (2 ** 64, "c"), (-(2 ** 100), "d")])
    assert 0.5 not in d


def test_str_and_bytes_keys_are_distinct(mk):
    d = mk({"a": 1, b"a": 2, "": 3, b"": 4})
    assert len(d) == 4
    assert d["a"] == 1 and d[b"a"] == 2 and d[""] == 3 and d[b""] == 4
    del d["a"]
    assert b"a" in d and "a" not in d


def test_tuple_keys(mk):
    d = mk({(1, "a"): 1, (): 2, ((1,), (2, (3,))): 3, (None, b"x", 1.5): 4})
    assert d[(1.0, "a")] == 1
    assert d[(True, "a")] == 1
    assert d[()] == 2
    assert d[((1,), (2, (3,)))] == 3
    assert d[(None, b"x", 1.5)] == 4
    assert (1, "a", None) not in d
    assert (1,) not in d
    d[(1, "a")] = "over"
    assert_items(mk, d, [((1, "a"), "over"), ((), 2), (((1,), (2, (3,))), 3), ((None, b"x", 1.5), 4)])
    assert all(type(k) is tuple for k in mk.fresh(d))


def test_keys_that_look_alike_stay_apart(mk):
    d = mk({})
    d["1"] = "str"
    d[1] = "int"
    d[(1,)] = "tuple"
    d[b"1"] = "bytes"
    d[None] = "none"
    d["None"] = "str none"
    assert len(d) == 6
    assert [d[k] for k in ["1", 1, (1,), b"1", None, "None"]] == \
        ["str", "int", "tuple", "bytes", "none", "str none"]


UNHASHABLE_KEYS = [[1], {"a": 1}, {1}, (1, [2]), ([],)]


@pytest.mark.parametrize("key", UNHASHABLE_KEYS, ids=["list", "dict", "set", "tuple-with-list", "tuple-of-list"])
@pytest.mark.parametrize("op", ["getitem", "setitem", "delitem", "contains", "get", "pop", "setdefault"])
def test_unhashable_key_raises_typeerror(mk, key, op):
    d = mk({"a": 1})
    ops = {
        "getitem": lambda: d[key],
        "setitem": lambda: d.__setitem__(key, 1),
        "delitem": lambda: d.__delitem__(key),
        "contains": lambda: key in d,
        "get": lambda: d.get(key),
        "pop": lambda: d.pop(key, None),
        "setdefault": lambda: d.setdefault(key, 1),
    }
    with pytest.raises(TypeError, match="unhashable"):
        ops[op]()
    assert_items(mk, d, [("a", 1)])


# -------------------------------------------------------------------- views --

def test_keys_view_is_live(mk):
    d = mk({"a": 1, "b": 2})
    k = d.keys()
    assert len(k) == 2
    assert list(k) == ["a", "b"]
    d["c"] = 3
    del d["a"]
    assert len(k) == 2
    assert "c" in k and "a" not in k
    assert list(k) == ["b", "c"]
    d.clear()
    assert len(k) == 0
    assert list(k) == []


def test_values_view_is_live(mk):
    d = mk({"a": 1, "b": [2]})
    v = d.values()
    assert len(v) == 2
    assert list(v) == [1, [2]]
    assert 1 in v and [2] in v and 1.0 in v
    assert 2 not in v and "a" not in v
    d["a"] = "x"
    d["c"] = None
    assert list(v) == ["x", [2], None]
    assert None in v and 1 not in v
    assert len(v) == 3


def test_items_view_is_live(mk):
    d = mk({"a": 1})
    it = d.items()
    assert list(it) == [("a", 1)]
    d["b"] = (2,)
    assert list(it) == [("a", 1), ("b", (2,))]
    assert ("b", (2,)) in it
    assert ("a", 1.0) in it
    assert ("a", 2) not in it
    assert ("z", 1) not in it
    assert len(it) == 2
    del d["a"]
    assert ("a", 1) not in it
    assert len(it) == 1


def test_items_contains_non_pairs_is_false(mk):
    d = mk({1: 2, "a": "b"})
    items = d.items()
    assert 1 not in items
    assert (1,) not in items
    assert (1, 2, 3) not in items
    assert [1, 2] not in items
    assert (1, 2) in items


def test_items_contains_with_unhashable_value_and_missing_key(mk):
    d = mk({"a": [1]})
    assert ("a", [1]) in d.items()
    assert ("a", [2]) not in d.items()
    assert ("b", [1]) not in d.items()


def test_views_reversed(mk):
    d = mk({"a": 1, "b": 2, "c": 3})
    assert list(reversed(d.keys())) == ["c", "b", "a"]
    assert list(reversed(d.values())) == [3, 2, 1]
    assert list(reversed(d.items())) == [("c", 3), ("b", 2), ("a", 1)]


def test_views_are_iterable_more_than_once(mk):
    d = mk({"a": 1, "b": 2})
    k, v, i = d.keys(), d.values(), d.items()
    assert list(k) == list(k) == ["a", "b"]
    assert list(v) == list(v) == [1, 2]
    assert list(i) == list(i) == [("a", 1), ("b", 2)]


def test_keys_set_operations(mk):
    d = mk({"a": 1, "b": 2, "c": 3})
    k = d.keys()
    r = k & {"a", "z"}
    assert r == {"a"} and type(r) is set
    r = k | {"z"}
    assert r == {"a", "b", "c", "z"} and type(r) is set
    r = k - {"a", "z"}
    assert r == {"b", "c"} and type(r) is set
    r = k ^ {"a", "z"}
    assert r == {"b", "c", "z"} and type(r) is set
    # with any iterable, and with the view on the right
    assert k & ["b", "q"] == {"b"}
    assert k | ("q",) == {"a", "b", "c", "q"}
    assert k - ["a"] == {"b", "c"}
    assert k ^ ["a", "q"] == {"b", "c", "q"}
    assert {"a", "z"} & k == {"a"}
    assert {"z"} | k == {"a", "b", "c", "z"}
    assert {"a", "z"} - k == {"z"}
    assert {"a", "z"} ^ k == {"b", "c", "z"}
    assert ["a", "z"] & k == {"a"}
    # between two views
    other = mk({"b": 0, "x": 0})
    assert k & other.keys() == {"b"}
    assert k | other.keys() == {"a", "b", "c", "x"}
    assert k - other.keys() == {"a", "c"}
    assert k ^ other.keys() == {"a", "c", "x"}


def test_keys_set_operations_with_numeric_keys(mk):
    d = mk({1: "a", 2.5: "b", (1, 2): "c"})
    assert d.keys() & {1.0, True, (1.0, 2)} == {1, (1, 2)}
    assert d.keys() - {True} == {2.5, (1, 2)}


def test_items_set_operations(mk):
    d = mk({"a": 1, "b": 2})
    i = d.items()
    r = i & {("a", 1), ("b", 3)}
    assert r == {("a", 1)} and type(r) is set
    assert i | {("c", 3)} == {("a", 1), ("b", 2), ("c", 3)}
    assert i - {("a", 1)} == {("b", 2)}
    assert i ^ {("a", 1), ("c", 3)} == {("b", 2), ("c", 3)}
    assert {("a", 1), ("z", 0)} & i == {("a", 1)}
    assert {("z", 0)} - i == {("z", 0)}
    assert i & [("b", 2)] == {("b", 2)}


def test_keys_and_items_compare_with_sets(mk):
    d = mk({"a": 1, "b": 2})
    assert d.keys() == {"a", "b"}
    assert {"a", "b"} == d.keys()
    assert d.keys() != {"a"}
    assert d.keys() == frozenset({"b", "a"})
    assert d.keys() != ["a", "b"]
    assert not (d.keys() == ["a", "b"])
    assert d.items() == {("a", 1), ("b", 2)}
    assert d.items() != {("a", 1), ("b", 3)}
    assert d.items() != [("a", 1), ("b", 2)]
    assert d.keys() == mk({"b": 0, "a": 0}).keys()
    assert d.items() == mk({"b": 2, "a": 1}).items()
    assert d.items() != mk({"b": 2, "a": 0}).items()


def test_keys_subset_comparisons(mk):
    d = mk({"a": 1, "b": 2})
    k = d.keys()
    assert k <= {"a", "b"}
    assert k < {"a", "b", "c"}
    assert not (k < {"a", "b"})
    assert k >= {"a"}
    assert k > {"a"}
    assert not (k > {"a", "b"})
    assert d.items() <= {("a", 1), ("b", 2), ("c", 3)}
    assert not (d.items() <= {("a", 1)})


def test_views_isdisjoint(mk):
    d = mk({"a": 1, "b": 2})
    assert d.keys().isdisjoint({"x", "y"})
    assert d.keys().isdisjoint(["x"])
    assert d.keys().isdisjoint([])
    assert not d.keys().isdisjoint({"x", "b"})
    assert not d.keys().isdisjoint(["a"])
    assert d.items().isdisjoint({("a", 2)})
    assert not d.items().isdisjoint([("a", 1)])
    assert mk({}).keys().isdisjoint({"a"})


# ----------------------------------------------------------------- methods --

def test_get(mk):
    d = mk({"a": 1, None: 0, 2: [3]})
    sentinel = object()
    assert d.get("a") == 1
    assert d.get("a", "dflt") == 1
    assert d.get(None) == 0
    assert d.get(2.0) == [3]
    assert d.get("zz") is None
    assert d.get("zz", "dflt") == "dflt"
    assert d.get("zz", sentinel) is sentinel
    assert d.get(None, sentinel) == 0
    assert_items(mk, d, [("a", 1), (None, 0), (2, [3])])


def test_pop(mk):
    d = mk({"a": 1, "b": "two", "c": 3.5})
    assert d.pop("b") == "two"
    assert_items(mk, d, [("a", 1), ("c", 3.5)])
    assert d.pop("c", "dflt") == 3.5
    assert_items(mk, d, [("a", 1)])


def test_pop_missing(mk):
    d = mk({"a": 1})
    with pytest.raises(KeyError) as exc:
        d.pop("zz")
    assert exc.value.args == ("zz",)
    sentinel = object()
    assert d.pop("zz", sentinel) is sentinel
    assert d.pop("zz", None) is None
    assert d.pop(1.5, 0) == 0
    assert_items(mk, d, [("a", 1)])


def test_pop_container_value_returns_its_content(mk):
    d = mk({"l": [1, [2]], "d": {"k": (1,)}, "t": (1, [2])})
    assert d.pop("l") == [1, [2]]
    assert d.pop("d") == {"k": (1,)}
    t = d.pop("t")
    assert t == (1, [2]) and type(t) is tuple
    assert len(d) == 0


def test_popitem_is_lifo(mk):
    d = mk({"a": 1, "b": 2, "c": 3})
    d["a"] = 10  # overwrite keeps position
    assert d.popitem() == ("c", 3)
    d["z"] = 26
    assert d.popitem() == ("z", 26)
    del d["b"]
    d["b"] = 20
    assert d.popitem() == ("b", 20)
    assert d.popitem() == ("a", 10)
    assert len(d) == 0


def test_popitem_empty_raises_keyerror(mk):
    d = mk({})
    with pytest.raises(KeyError, match="empty"):
        d.popitem()
    assert len(d) == 0
    d = mk({"a": 1})
    d.popitem()
    with pytest.raises(KeyError):
        d.popitem()
    assert list(d) == []


def test_popitem_container_value(mk):
    d = mk({"k": {"n": [1, 2]}})
    item = d.popitem()
    assert type(item) is tuple
    assert item == ("k", {"n": [1, 2]})


def test_setdefault(mk):
    d = mk({"a": 1})
    assert d.setdefault("a", 5) == 1
    assert d.setdefault("b", 5) == 5
    assert d.setdefault("c") is None
    assert d.setdefault("c", 7) is None
    assert d.setdefault(1.0, "x") == "x"
    assert d.setdefault(True, "y") == "x"
    assert_items(mk, d, [("a", 1), ("b", 5), ("c", None), (1.0, "x")])


def test_setdefault_returns_the_stored_container(mk):
    d = mk({})
    d.setdefault("l", []).append(1)
    d.setdefault("l", []).append(2)
    d.setdefault("m", {})["k"] = 1
    d.setdefault("m", {})["j"] = 2
    assert d == {"l": [1, 2], "m": {"k": 1, "j": 2}}
    assert mk.fresh(d) == {"l": [1, 2], "m": {"k": 1, "j": 2}}


def test_update_with_mapping(mk):
    d = mk({"a": 1, "b": 2})
    assert d.update({"b": 20, "c": 30}) is None
    assert_items(mk, d, [("a", 1), ("b", 20), ("c", 30)])
    d.update(collections.OrderedDict([("d", 4), ("a", 10)]))
    assert_items(mk, d, [("a", 10), ("b", 20), ("c", 30), ("d", 4)])
    d.update(types.MappingProxyType({"e": [5]}))
    assert d["e"] == [5]


def test_update_with_pairs(mk):
    d = mk({"a": 1})
    d.update([("b", 2), ("a", 10)])
    assert_items(mk, d, [("a", 10), ("b", 2)])
    d.update((k, i) for i, k in enumerate("cd"))
    d.update([["e", 5]])
    d.update(["fg"])  # a 2-character string is a pair
    d.update(iter([(1, 1)]))
    d.update(zip("hi", [7, 8]))
    assert_items(mk, d, [("a", 10), ("b", 2), ("c", 0), ("d", 1), ("e", 5), ("f", "g"),
                         (1, 1), ("h", 7), ("i", 8)])


def test_update_with_kwargs(mk):
    d = mk({"a": 1})
    d.update(b=2, a=10)
    assert_items(mk, d, [("a", 10), ("b", 2)])
    d.update({"c": 3}, d=4, c=30)
    assert_items(mk, d, [("a", 10), ("b", 2), ("c", 30), ("d", 4)])
    d.update([("e", 5)], f=6)
    assert_items(mk, d, [("a", 10), ("b", 2), ("c", 30), ("d", 4), ("e", 5), ("f", 6)])
    d.update()
    assert len(d) == 6


def test_update_with_object_having_keys(mk):
    class KeysOnly:
        def keys(self):
            return ["p", "q"]

        def __getitem__(self, k):
            return k * 2

    d = mk({"q": 0})
    d.update(KeysOnly())
    assert_items(mk, d, [("q", "qq"), ("p", "pp")])


def test_update_with_another_shared_or_itself(mk):
    d = mk({"a": 1})
    other = mk({"b": [2], "a": 3})
    d.update(other)
    assert_items(mk, d, [("a", 3), ("b", [2])])
    d.update(d)
    assert_items(mk, d, [("a", 3), ("b", [2])])
    assert other == {"b": [2], "a": 3}


BAD_UPDATES = [
    ("int", (1,), TypeError),
    ("none", (None,), TypeError),
    ("element-not-sequence", ([1],), TypeError),
    ("element-too-short", ([("a", 1), ("b",)],), ValueError),
    ("element-too-long", ([("a", 1, 2)],), ValueError),
    ("string-of-three", (["abc"],), ValueError),
    ("two-positional", ({}, {}), TypeError),
    ("unhashable-key", ([([1], 2)],), TypeError),
]


@pytest.mark.parametrize("args, exc_type", [b[1:] for b in BAD_UPDATES], ids=[b[0] for b in BAD_UPDATES])
def test_update_bad_input_raises(mk, args, exc_type):
    d = mk({"a": 1})
    with pytest.raises(exc_type):
        d.update(*args)
    assert_items(mk, d, [("a", 1)])


@pytest.mark.parametrize("arg, exc_type, message", [
    ([1], TypeError, "cannot convert dictionary update sequence element #0 to a sequence"),
    ([("a", 1), ("b",)], ValueError, "dictionary update sequence element #1 has length 1; 2 is required"),
    ([("a", 1, 2)], ValueError, "dictionary update sequence element #0 has length 3; 2 is required"),
], ids=["not-sequence", "too-short", "too-long"])
def test_update_bad_input_message_matches_dict(mk, arg, exc_type, message):
    d = mk({})
    with pytest.raises(exc_type) as exc:
        d.update(arg)
    assert str(exc.value) == message


def test_update_failing_midway(mk):
    # A deliberate difference: dict keeps the pairs before the bad one, while
    # SharedDict.update is one atomic step and stores none of them.
    d = mk({"a": 1})
    with pytest.raises(ValueError, match="element #2 has length 1"):
        d.update([("b", 2), ("a", 10), ("c",), ("d", 4)])
    if isinstance(d, dict):
        assert_items(mk, d, [("a", 10), ("b", 2)])
    else:
        assert_items(mk, d, [("a", 1)])


def test_clear(mk):
    d = mk({"a": 1, "b": [1], "c": {"d": 2}})
    k = d.keys()
    assert d.clear() is None
    assert len(d) == 0
    assert list(k) == []
    assert d == {}
    assert_items(mk, d, [])
    d["x"] = 1
    assert_items(mk, d, [("x", 1)])
    mk({}).clear()


def test_copy_is_a_plain_dict_of_the_top_level(mk):
    d = mk({"a": 1, "b": [1], 2: (3,)})
    c = d.copy()
    assert type(c) is dict
    assert c == {"a": 1, "b": [1], 2: (3,)}
    assert list(c) == ["a", "b", 2]
    c["new"] = 1
    del c["a"]
    assert_items(mk, d, [("a", 1), ("b", [1]), (2, (3,))])
    # shallow: the nested list is the same object (builtin) or a live view (shared)
    c["b"].append(2)
    assert d["b"] == [1, 2]


def test_copy_empty(mk):
    c = mk({}).copy()
    assert c == {} and type(c) is dict


# ----------------------------------------------------------------- operators --

def test_or_returns_new_plain_dict(mk):
    d = mk({"a": 1, "b": 2})
    r = d | {"b": 20, "c": 3}
    assert type(r) is dict
    assert list(r.items()) == [("a", 1), ("b", 20), ("c", 3)]
    assert_items(mk, d, [("a", 1), ("b", 2)])


def test_or_with_shared_on_both_sides(mk):
    d = mk({"a": 1})
    e = mk({"a": 2, "b": [3]})
    r = d | e
    assert type(r) is dict
    assert r == {"a": 2, "b": [3]}
    assert list(r) == ["a", "b"]


def test_ror_dict_on_the_left(mk):
    d = mk({"b": 20, "c": 3})
    r = {"a": 1, "b": 2} | d
    assert type(r) is dict
    assert list(r.items()) == [("a", 1), ("b", 20), ("c", 3)]
    assert_items(mk, d, [("b", 20), ("c", 3)])


@pytest.mark.parametrize("other", [[("a", 1)], 1, None, {"a"}, "ab"], ids=["pairs", "int", "none", "set", "str"])
def test_or_with_non_mapping_raises_typeerror(mk, other):
    d = mk({"a": 1})
    with pytest.raises(TypeError):
        d | other
    with pytest.raises(TypeError):
        other | d
    assert_items(mk, d, [("a", 1)])


def test_ior_updates_in_place(mk):
    d = mk({"a": 1, "b": 2})
    before = d
    d |= {"b": 20, "c": 3}
    assert d is before
    assert_items(mk, d, [("a", 1), ("b", 20), ("c", 3)])
    d |= [("d", 4), ("a", 10)]  # |= accepts pairs, like update
    assert d is before
    assert_items(mk, d, [("a", 10), ("b", 20), ("c", 3), ("d", 4)])
    d |= mk({"e": [5]})
    assert d is before
    assert d["e"] == [5]


def test_ior_bad_input_raises(mk):
    d = mk({"a": 1})
    with pytest.raises(TypeError):
        d |= 1
    with pytest.raises(ValueError):
        d |= [("a",)]
    assert_items(mk, d, [("a", 1)])


EQUAL_CASES = [
    ({}, {}),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    ({"a": 1}, {"a": 1.0}),
    ({"a": 1}, {"a": True}),
    ({1: "x"}, {1.0: "x"}),
    ({"a": [1, (2,)], "b": {"c": None}}, {"b": {"c": None}, "a": [1, (2,)]}),
    ({(1, 2): b"x"}, {(1, 2): b"x"}),
]


@pytest.mark.parametrize("init, other", EQUAL_CASES)
def test_eq_with_equal_dicts(mk, init, other):
    d = mk(init)
    assert d == other
    assert other == d
    assert not (d != other)
    assert not (other != d)
    assert d == collections.OrderedDict(other)
    assert collections.OrderedDict(other) == d
    assert d == types.MappingProxyType(other)
    assert d == mk(other)
    assert d == d


NOT_EQUAL_CASES = [
    ({"a": 1}, {}),
    ({}, {"a": 1}),
    ({"a": 1}, {"a": 2}),
    ({"a": 1}, {"b": 1}),
    ({"a": 1}, {"a": 1, "b": 2}),
    ({"a": 1}, {"a": "1"}),
    ({"a": (1,)}, {"a": [1]}),
    ({"a": [1]}, {"a": (1,)}),
    ({"a": {"b": 1}}, {"a": {"b": 2}}),
    ({"a": b"x"}, {"a": "x"}),
    ({"a": None}, {"a": 0}),
    ({"a": 1}, {b"a": 1}),
]


@pytest.mark.parametrize("init, other", NOT_EQUAL_CASES)
def test_ne_with_different_dicts(mk, init, other):
    d = mk(init)
    assert d != other
    assert other != d
    assert not (d == other)
    assert not (other == d)
    assert d != mk(other)


def test_eq_with_other_mapping_types(mk):
    d = mk({"a": 1, "b": [2]})
    assert d == collections.UserDict({"b": [2], "a": 1})
    assert collections.UserDict({"b": [2], "a": 1}) == d
    assert d != collections.UserDict({"a": 1})
    assert d == types.MappingProxyType({"a": 1, "b": [2]})
    assert types.MappingProxyType({"a": 1, "b": [2]}) == d


@pytest.mark.parametrize("other", [None, 1, "a", [("a", 1)], [["a", 1]], {"a"}, ("a",), b"a",
                                   object()],
                         ids=["none", "int", "str", "pairs", "lists", "set", "tuple", "bytes", "object"])
def test_eq_with_non_mappings_is_false(mk, other):
    d = mk({"a": 1})
    assert not (d == other)
    assert d != other
    assert not (other == d)
    assert other != d


def test_eq_empty_with_non_mappings(mk):
    d = mk({})
    assert d != []
    assert d != ()
    assert d != set()
    assert d != 0
    assert d == {}


def test_ordering_comparisons_raise_typeerror(mk):
    d = mk({"a": 1})
    with pytest.raises(TypeError):
        d < {"a": 2}
    with pytest.raises(TypeError):
        d <= {"a": 1}
    with pytest.raises(TypeError):
        d > mk({})
    with pytest.raises(TypeError):
        {} >= d


def test_unhashable(mk):
    d = mk({"a": 1})
    with pytest.raises(TypeError):
        hash(d)
    with pytest.raises(TypeError):
        {d: 1}


# --------------------------------------------------------------------- repr --

def test_repr_equals_dict_repr(mk):
    d = mk({"a": 1, "b": "x", "c": [1, (2,)], "d": {"e": None}, "f": b"\x00", 1.5: True,
            (1, 2): -0.0, None: 2 ** 70, "it's": "\u00e9\U0001f600", b"k": (), "g": ()})
    expected = ("{'a': 1, 'b': 'x', 'c': [1, (2,)], 'd': {'e': None}, 'f': b'\\x00', 1.5: True, "
                "(1, 2): -0.0, None: 1180591620717411303424, \"it's\": '\u00e9\U0001f600', "
                "b'k': (), 'g': ()}")
    assert repr(d) == expected
    assert str(d) == expected


def test_repr_empty(mk):
    assert repr(mk({})) == "{}"
    assert repr(mk({"a": {}})) == "{'a': {}}"
    assert repr(mk({"a": []})) == "{'a': []}"


def test_repr_of_dict_containing_itself(mk):
    d = mk({"a": 1})
    d["self"] = d
    assert repr(d) == "{'a': 1, 'self': {...}}"
    assert repr(d["self"]) == "{'a': 1, 'self': {...}}"
    assert repr(mk.fresh(d)) == "{'a': 1, 'self': {...}}"


def test_repr_of_dict_containing_itself_two_levels_down(mk):
    d = mk({"a": 1})
    d["l"] = [1]
    d["l"].append(d)
    assert repr(d) == "{'a': 1, 'l': [1, {...}]}"
    assert repr(d["l"]) == "[1, {'a': 1, 'l': [...]}]"


# ---------------------------------------------------- mutation during iteration --

def _adds(d, k):
    d[str(k) + "-new"] = 1


ITER_MUTATIONS = {
    "add": _adds,
    "delete": lambda d, k: d.__delitem__(k),
    "pop": lambda d, k: d.pop(k),
    "popitem": lambda d, k: d.popitem(),
    "clear": lambda d, k: d.clear(),
    "setdefault-new": lambda d, k: d.setdefault("fresh-key", 1),
    "update-new": lambda d, k: d.update({"fresh-key": 1}),
}


@pytest.mark.parametrize("mutation", sorted(ITER_MUTATIONS))
@pytest.mark.parametrize("over", ["dict", "keys", "values", "items"])
def test_changing_size_during_iteration_raises_runtimeerror(mk, mutation, over):
    d = mk({"a": 1, "b": 2, "c": 3})
    iterable = {"dict": d, "keys": d.keys(), "values": d.values(), "items": d.items()}[over]
    mutate = ITER_MUTATIONS[mutation]
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        for x in iterable:
            mutate(d, "a")
    assert len(d) != 3


def test_changing_size_during_reversed_iteration_raises_runtimeerror(mk):
    d = mk({"a": 1, "b": 2})
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        for k in reversed(d):
            d["c"] = 3
    assert len(d) == 3


def test_overwriting_values_during_iteration_is_allowed(mk):
    d = mk({"a": 1, "b": 2, "c": 3})
    seen = []
    for k in d:
        seen.append(k)
        d[k] = d[k] * 10
    assert seen == ["a", "b", "c"]
    assert_items(mk, d, [("a", 10), ("b", 20), ("c", 30)])
    for k, v in d.items():
        d[k] = [v]
    assert_items(mk, d, [("a", [10]), ("b", [20]), ("c", [30])])


def test_iteration_after_mutation_is_fine(mk):
    d = mk({"a": 1})
    with pytest.raises(RuntimeError):
        for k in d:
            d["b"] = 2
    assert list(d) == ["a", "b"]


# --------------------------------------------------------------- conversions --

def test_conversions(mk):
    d = mk({"b": 1, "a": [2], 3: None})
    assert dict(d) == {"b": 1, "a": [2], 3: None}
    assert list(dict(d)) == ["b", "a", 3]
    assert {**mk({"x": 1, "y": 2})} == {"x": 1, "y": 2}
    assert list(d) == ["b", "a", 3]
    assert tuple(d.values()) == (1, [2], None)
    assert sorted(mk({"b": 1, "a": 2, "c": 0})) == ["a", "b", "c"]
    assert dict(**mk({"x": 1, "y": 2})) == {"x": 1, "y": 2}
    assert collections.Counter(mk({"a": 2, "b": 1})) == collections.Counter(a=2, b=1)


@pytest.mark.parametrize("big", [2.0 ** 63, 1e19, 2.0 ** 64, -2.0 ** 64, 2.0 ** 200])
def test_whole_float_keys_beyond_int64_keep_their_type(root, big):
    """A whole float beyond int64 equals an int, as in dict: one key either
    way, found by both, and the key first stored keeps its type."""
    for d in ({}, root.setdefault("d", {})):
        d.clear()
        d[big] = "float"
        assert d[int(big)] == "float" and int(big) in d
        d[int(big)] = "int"                 # the same key: the float stays
        assert len(d) == 1
        (k, v), = d.items()
        assert type(k) is float and k == big and v == "int"
        del d[int(big)]
        d[int(big)] = "int first"
        assert type(next(iter(d))) is int and d[big] == "int first"
    assert dict(root["d"]) == {int(big): "int first"}


@pytest.mark.parametrize("default, delta", [(-0.0, 0), (-0.0, 0.0), (-0.0, -0.0), (0, -0.0),
                                            (-0.0, False), (1.5, 0), (2 ** 70, 0), (-0.0, 2 ** 70)])
def test_incr_adds_as_python_does(root, default, delta):
    """incr(k, delta, default) is d.get(k, default) + delta, stored: the
    sign of a zero and the type of the sum are Python's."""
    d = root.setdefault("incr", {})
    d.clear()
    want = default + delta
    for _ in range(2):
        got = d.incr("k", delta, default)
        assert type(got) is type(want) and repr(got) == repr(want)
        assert repr(d["k"]) == repr(want)
        want = want + delta


def test_whole_float_keys_beyond_int64_match_exactly_their_int(root):
    """Across the whole double range: a whole float key is found by the int of
    its value and by nothing next to it, both ways round (the comparison is
    done in C, on the integer's bytes)."""
    import random
    rnd = random.Random(5)
    floats = [2.0 ** 63, 2.0 ** 64, 1e19, 2.0 ** 1023, 1.7976931348623157e308, 2.0 ** 200 - 2.0 ** 148]
    floats += [math.ldexp(rnd.randint(2 ** 52, 2 ** 53 - 1), rnd.randint(11, 971)) for _ in range(300)]
    floats += [-f for f in floats]
    by_float, by_int = root.setdefault("by_float", {}), root.setdefault("by_int", {})
    for i, f in enumerate(floats):
        by_float.clear()
        by_int.clear()
        by_float[f] = i
        by_int[int(f)] = i
        for d in (by_float, by_int):
            assert d[f] == i and d[int(f)] == i
            assert int(f) + 1 not in d and int(f) - 1 not in d and -f not in d


# ------------------------------------------- families from CPython's protocol --
# Mapping arguments as dict(x) / dict.update(x) read them (OrderedDict order,
# dict subclasses with their own keys/__iter__/__getitem__, odd pairs),
# __init__, fromkeys, __missing__, views' .mapping, iterator pickling and
# attribute parity with dict, its views and iterators.

def _moved_ordereddict():
    od = collections.OrderedDict([("a", 1), ("b", 2), ("c", 3)])
    od.move_to_end("a")
    return od


class KeysOverridden(dict):
    """keys() alone overridden: dict.update / dict(x) read the dict directly."""

    def keys(self):
        return ["zz"]


class GetitemOverridden(dict):
    def __getitem__(self, k):
        return "overridden"


class IterOverridden(dict):
    """__iter__ overridden: dict.update / dict(x) go through keys() and []."""

    def __iter__(self):
        return iter(["b"])


class IterAndKeysOverridden(dict):
    def __iter__(self):
        return iter(["b"])

    def keys(self):
        return ["b", "a"]

    def __getitem__(self, k):
        return k * 3


class IterKeysGeneratorGetitem(dict):
    def __iter__(self):
        return iter([])

    def keys(self):
        return (k for k in ("a", "b"))

    def __getitem__(self, k):
        return dict.__getitem__(self, k) * 10


MAPPING_SOURCES = {
    # name: (factory, the pairs dict(x) takes from it, in order)
    "ordereddict-moved": (_moved_ordereddict, [("b", 2), ("c", 3), ("a", 1)]),
    "keys-overridden": (lambda: KeysOverridden(a=1, b=2), [("a", 1), ("b", 2)]),
    "getitem-overridden": (lambda: GetitemOverridden(a=1), [("a", 1)]),
    "iter-overridden": (lambda: IterOverridden(a=1, b=2), [("a", 1), ("b", 2)]),
    "iter-keys-getitem": (lambda: IterAndKeysOverridden(a=1, b=2), [("b", "bbb"), ("a", "aaa")]),
    "keys-generator": (lambda: IterKeysGeneratorGetitem(a=1, b=2), [("a", 10), ("b", 20)]),
    "counter": (lambda: collections.Counter("abca"), [("a", 2), ("b", 1), ("c", 1)]),
    "chainmap": (lambda: collections.ChainMap({"x": 1}, {"y": 2, "x": 3}), [("y", 2), ("x", 1)]),
    "userdict": (lambda: collections.UserDict(q=1), [("q", 1)]),
    "mappingproxy": (lambda: types.MappingProxyType({"m": 1}), [("m", 1)]),
}


def test_mapping_sources_are_what_dict_takes():
    for name, (make, pairs) in MAPPING_SOURCES.items():
        assert list(dict(make()).items()) == pairs, name


@pytest.mark.parametrize("name", sorted(MAPPING_SOURCES))
def test_update_reads_mappings_as_dict_update(mk, name):
    make, pairs = MAPPING_SOURCES[name]
    d = mk({"first": 0})
    d.update(make())
    assert_items(mk, d, [("first", 0)] + pairs)
    d = mk({"first": 0})
    d |= make()
    assert_items(mk, d, [("first", 0)] + pairs)
    d = mk({"first": 0})
    d.__init__(make())
    assert_items(mk, d, [("first", 0)] + pairs)


@pytest.mark.parametrize("name", sorted(n for n in MAPPING_SOURCES
                                         if n not in ("chainmap", "userdict", "mappingproxy")))
def test_stored_dict_subclasses_are_what_dict_of_them_gives(mk, name):
    # (a mapping that is not a dict is not a supported value type)
    make, pairs = MAPPING_SOURCES[name]
    d = mk({})
    d["v"] = make()
    d["nested"] = [make(), {"in": make()}]
    # builtin holds the object; dict() of it reads it as dshared stored it
    assert list(dict(d["v"]).items()) == pairs
    assert list(dict(d["nested"][0]).items()) == pairs
    assert list(dict(d["nested"][1]["in"]).items()) == pairs


def test_keys_that_are_not_iterable(mk):
    class BadKeys(dict):
        def __iter__(self):
            return iter([])

        def keys(self):
            return 5
    d = mk({})
    with pytest.raises(TypeError, match=r"BadKeys.keys\(\) returned a non-iterable \(type int\)"):
        d.update(BadKeys(a=1))


class PairTuple(tuple):
    def __iter__(self):
        return iter(("it", "er"))


class PairList(list):
    def __iter__(self):
        return iter(("li", "st"))


def test_update_pairs_read_as_dict_update(mk):
    d = mk({})
    d.update([iter(("g", 1))])              # any iterable of two is a pair
    d.update([PairTuple(("a", 1))])          # a subclass through its own __iter__
    d.update([PairList(["b", 2])])
    d.update([{"k": 1, "j": 2}])             # a dict: its two keys
    assert_items(mk, d, [("g", 1), ("it", "er"), ("li", "st"), ("k", "j")])
    with pytest.raises(TypeError, match="element #0 to a sequence"):
        d.update([5])

    def bad():
        yield "x"
        raise TypeError("inside")
    with pytest.raises(TypeError, match="element #0 to a sequence"):
        d.update([bad()])

    class NotCallable:
        keys = 5                            # any `keys` attribute makes it a mapping
    with pytest.raises(TypeError, match="'int' object is not callable"):
        d.update(NotCallable())


def test_init_updates_as_dict_init(mk):
    d = mk({"a": 1})
    assert d.__init__({"b": 2}, c=3) is None
    assert_items(mk, d, [("a", 1), ("b", 2), ("c", 3)])
    d.__init__([("a", 10)])
    d.__init__()
    d.__init__(a=11)
    assert_items(mk, d, [("a", 11), ("b", 2), ("c", 3)])
    with pytest.raises(TypeError):
        d.__init__({}, {})
    with pytest.raises(TypeError):
        d.__init__(5)
    assert_items(mk, d, [("a", 11), ("b", 2), ("c", 3)])


def test_fromkeys_on_the_class_and_an_instance(mk):
    d = mk({"x": 1})
    for fromkeys in (type(d).fromkeys, d.fromkeys):
        r = fromkeys("ab")
        assert r == {"a": None, "b": None} and type(r) is dict
        assert fromkeys((1, 2), [0]) == {1: [0], 2: [0]}
        assert fromkeys([]) == {}
        assert fromkeys(x for x in "c") == {"c": None}
        with pytest.raises(TypeError):
            fromkeys(3)
        with pytest.raises(TypeError):
            fromkeys()
        with pytest.raises(TypeError):
            fromkeys("a", 1, 2)
    assert_items(mk, d, [("x", 1)])


def test_has_no_missing(mk):
    d = mk({"a": 1})
    assert not hasattr(d, "__missing__")
    assert not hasattr(type(d), "__missing__")
    with pytest.raises(KeyError):
        d["zz"]


@pytest.mark.parametrize("view", ["keys", "values", "items"])
def test_views_have_a_readonly_live_mapping(mk, view):
    d = mk({"a": 1})
    v = getattr(d, view)()
    if type(d) is dict and sys.version_info < (3, 10):
        # dict views have .mapping from Python 3.10; dshared's have it on 3.9 too
        with pytest.raises(AttributeError):
            v.mapping
        return
    m = v.mapping
    assert type(m) is types.MappingProxyType
    assert dict(m) == {"a": 1} and m["a"] == 1 and len(m) == 1 and "a" in m
    d["b"] = [2]
    assert dict(m) == {"a": 1, "b": [2]}
    with pytest.raises(TypeError):
        m["c"] = 3
    with pytest.raises(AttributeError):
        v.mapping = {}


@pytest.mark.parametrize("kind", ["keys", "values", "items", "iter", "reversed", "reversed-items"])
@pytest.mark.parametrize("taken", [0, 1, 3])
def test_iterators_pickle_and_copy_as_dict_iterators(mk, kind, taken):
    d = mk({"a": 1, "b": [2], "c": "3"})
    make = {
        "keys": lambda: iter(d.keys()),
        "values": lambda: iter(d.values()),
        "items": lambda: iter(d.items()),
        "iter": lambda: iter(d),
        "reversed": lambda: reversed(d),
        "reversed-items": lambda: reversed(d.items()),
    }[kind]
    expected = list(make())
    it = make()
    for _ in range(taken):
        next(it, None)
    rest = expected[taken:]
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        assert list(pickle.loads(pickle.dumps(it, proto))) == rest
    assert list(copy.copy(it)) == rest
    assert list(it) == rest


def test_iterator_pickle_after_a_change_raises_as_dict(mk):
    d = mk({"a": 1})
    it = iter(d)
    d["b"] = 2
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        pickle.dumps(it)


# Attributes of dict, its views and iterators that the shared counterparts do
# not have, each a deliberate difference (README).
DICT_ATTRIBUTE_DIFFERENCES = {
    "dict": set(),
    "keys": set(),
    "values": set(),
    "items": set(),
    "iterator": set(),
}


def _public(obj):
    return {n for n in dir(obj) if not n.startswith("__") or n.endswith("__")}


def test_every_dict_attribute_exists_on_shared(root):
    root["d"] = {"a": 1}
    sd = root["d"]
    plain = {"a": 1}
    pairs = {
        "dict": (plain, sd),
        "keys": (plain.keys(), sd.keys()),
        "values": (plain.values(), sd.values()),
        "items": (plain.items(), sd.items()),
        "keys-iterator": (iter(plain), iter(sd)),
        "values-iterator": (iter(plain.values()), iter(sd.values())),
        "items-iterator": (iter(plain.items()), iter(sd.items())),
        "reversed-iterator": (reversed(plain), reversed(sd)),
        "reversed-values-iterator": (reversed(plain.values()), reversed(sd.values())),
        "reversed-items-iterator": (reversed(plain.items()), reversed(sd.items())),
    }
    for name, (p, s) in pairs.items():
        allowed = DICT_ATTRIBUTE_DIFFERENCES.get(name.split("-")[0] if "iterator" not in name else "iterator")
        missing = _public(p) - _public(s) - allowed
        assert not missing, "%s lacks %s" % (name, sorted(missing))
    for name in ["clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault",
                 "update", "values"]:
        assert callable(getattr(sd, name))
