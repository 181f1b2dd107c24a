"""SharedList must behave exactly like the builtin list.

Every test here runs twice through the ``mk`` fixture: once against Python's
``list`` (the reference: those runs check that the expectations written below
are right) and once against a ``SharedList`` view stored in a fresh segment.
The slice tests compare against a plain list that gets the same operations.
"""
import collections.abc
import copy
import functools
import operator
import pickle
import sys

import pytest

from _helpers import BuiltinMaker, SharedMaker
from _redis import mark_difference


# ---------------------------------------------------------------- fixtures --

# the Redis copies run under -m slow (tests/test_backends.py and tests/test_redis*.py
# cover the Redis backend in the default run)
@pytest.fixture(params=["builtin", "shared", pytest.param("redis", marks=pytest.mark.slow)])
def mk(request):
    """mk(init) -> a list (builtin) or a SharedList view (shared) equal to list(init)."""
    if request.param == "builtin":
        return BuiltinMaker(list)
    if request.param == "redis":        # the Redis backend (tests/conftest.py)
        mark_difference(request)
        return SharedMaker(request.getfixturevalue("redis_root"), list)
    return SharedMaker(request.getfixturevalue("root"), list)


def kind(x):
    """The type of x, with shared views counted as the list or dict they stand for."""
    if isinstance(x, (list, tuple, dict)) or not isinstance(
            x, (collections.abc.MutableSequence, collections.abc.MutableMapping)):
        return type(x)
    return list if isinstance(x, collections.abc.MutableSequence) else dict


def assert_content(mk, lst, expected):
    """lst holds exactly ``expected`` (same values and types), also when read again."""
    assert len(lst) == len(expected)
    assert list(lst) == expected
    again = mk.fresh(lst)
    assert list(again) == expected
    assert [kind(x) for x in again] == [kind(x) for x in expected]


class Idx:
    """An object usable as an index through __index__."""

    def __init__(self, i):
        self.i = i

    def __index__(self):
        return self.i


# ------------------------------------------------------------------- basics --

def test_is_a_mutable_sequence(mk):
    lst = mk([1])
    assert isinstance(lst, collections.abc.MutableSequence)
    assert isinstance(lst, collections.abc.Sequence)


def test_len_and_bool(mk):
    assert len(mk([])) == 0
    assert not mk([])
    assert bool(mk([])) is False
    assert len(mk([None])) == 1
    assert mk([None])
    assert mk([0])
    assert mk([[]])


def test_getitem_positive_and_negative(mk):
    lst = mk([10, "a", None, (1,), [2], {"k": 3}])
    assert lst[0] == 10
    assert lst[1] == "a"
    assert lst[2] is None
    assert lst[3] == (1,) and type(lst[3]) is tuple
    assert lst[4] == [2]
    assert lst[5] == {"k": 3}
    assert lst[-1] == {"k": 3}
    assert lst[-6] == 10
    assert lst[-3] == (1,)
    assert lst[True] == "a"
    assert lst[Idx(1)] == "a"
    assert lst[Idx(-2)] == [2]


def test_getitem_keeps_value_types(mk):
    lst = mk([1, True, 1.0, "s", b"b", None, 2 ** 100, -0.0])
    assert [type(x) for x in lst] == [int, bool, float, str, bytes, type(None), int, float]
    assert lst[1] is True
    assert lst[6] == 2 ** 100


@pytest.mark.parametrize("i", [3, 4, 100, -4, -5, -100, 2 ** 62, -(2 ** 62)])
def test_getitem_out_of_range(mk, i):
    lst = mk([1, 2, 3])
    with pytest.raises(IndexError, match="index out of range"):
        lst[i]
    assert_content(mk, lst, [1, 2, 3])


def test_getitem_huge_index_raises_indexerror(mk):
    lst = mk([1])
    with pytest.raises(IndexError):
        lst[2 ** 100]
    with pytest.raises(IndexError):
        lst[-(2 ** 100)]


def test_getitem_empty(mk):
    with pytest.raises(IndexError, match="index out of range"):
        mk([])[0]
    with pytest.raises(IndexError, match="index out of range"):
        mk([])[-1]


@pytest.mark.parametrize("i", ["0", 1.0, None, (0,), [0]], ids=["str", "float", "none", "tuple", "list"])
def test_bad_index_type_raises_typeerror(mk, i):
    lst = mk([1, 2])
    with pytest.raises(TypeError, match="indices must be integers or slices"):
        lst[i]
    with pytest.raises(TypeError, match="indices must be integers or slices"):
        lst[i] = 0
    with pytest.raises(TypeError, match="indices must be integers or slices"):
        del lst[i]
    assert_content(mk, lst, [1, 2])


def test_setitem(mk):
    lst = mk([1, 2, 3, 4])
    lst[0] = "a"
    lst[-1] = [4]
    lst[1] = {"x": (1,)}
    lst[Idx(2)] = None
    assert_content(mk, lst, ["a", {"x": (1,)}, None, [4]])
    lst[-1].append(5)
    lst[1]["y"] = 2
    assert mk.fresh(lst) == ["a", {"x": (1,), "y": 2}, None, [4, 5]]


@pytest.mark.parametrize("i", [3, 100, -4, -100])
def test_setitem_out_of_range(mk, i):
    lst = mk([1, 2, 3])
    with pytest.raises(IndexError, match="assignment index out of range"):
        lst[i] = 0
    assert_content(mk, lst, [1, 2, 3])


def test_delitem(mk):
    lst = mk([1, 2, 3, 4, 5])
    del lst[0]
    del lst[-1]
    del lst[1]
    assert_content(mk, lst, [2, 4])
    del lst[Idx(-1)]
    assert_content(mk, lst, [2])


@pytest.mark.parametrize("i", [3, 100, -4, -100])
def test_delitem_out_of_range(mk, i):
    lst = mk([1, 2, 3])
    with pytest.raises(IndexError, match="assignment index out of range"):
        del lst[i]
    assert_content(mk, lst, [1, 2, 3])


def test_delitem_empty(mk):
    lst = mk([])
    with pytest.raises(IndexError):
        del lst[0]
    assert len(lst) == 0


# ------------------------------------------------------------------- slices --

BOUNDS = [None, 0, 2, -2, 7, 15, -15]
STEPS = [None, 1, 2, 3, -1, -3]
SLICES = [slice(a, b, c) for a in BOUNDS for b in BOUNDS for c in STEPS]
BASE = list(range(10))


def test_slice_get(mk):
    lst = mk(BASE)
    for s in SLICES:
        got = lst[s]
        assert type(got) is list, s
        assert got == BASE[s], s
    assert lst[:] == BASE
    assert lst[::-1] == BASE[::-1]
    assert lst[Idx(1):Idx(5):Idx(2)] == [1, 3]
    assert mk([])[1:5] == []
    assert mk([])[::-1] == []
    assert_content(mk, lst, BASE)


def test_slice_get_of_containers_gives_equal_values(mk):
    lst = mk([[1], {"a": 2}, (3, [4]), "s"])
    got = lst[1:]
    assert got == [{"a": 2}, (3, [4]), "s"]
    assert type(got[1]) is tuple
    got[0]["b"] = 5  # the elements are the stored containers (shallow, like list)
    assert lst[1] == {"a": 2, "b": 5}


def test_slice_set(mk):
    for s in SLICES:
        lst = mk(BASE)
        ref = list(BASE)
        n = len(ref[s])
        if s.step in (None, 1):
            values = ["a", "b", "c"]
        else:
            values = ["v%d" % i for i in range(n)]
        ref[s] = values
        lst[s] = values
        assert list(lst) == ref, s
        assert list(mk.fresh(lst)) == ref, s


def test_slice_set_with_various_iterables(mk):
    lst = mk([0, 1, 2, 3, 4])
    lst[1:3] = (x * 10 for x in range(4))
    assert_content(mk, lst, [0, 0, 10, 20, 30, 3, 4])
    lst[::2] = "abcd"
    assert_content(mk, lst, ["a", 0, "b", 20, "c", 3, "d"])
    lst[:2] = {"k": 1}
    assert_content(mk, lst, ["k", "b", 20, "c", 3, "d"])
    lst[4:] = range(2)
    assert_content(mk, lst, ["k", "b", 20, "c", 0, 1])
    lst[:] = ()
    assert_content(mk, lst, [])
    lst[:] = [[1], (2,), {"a": None}]
    assert_content(mk, lst, [[1], (2,), {"a": None}])


def test_slice_set_inserts_and_appends(mk):
    lst = mk([1, 2, 3])
    lst[1:1] = ["x", "y"]
    assert_content(mk, lst, [1, "x", "y", 2, 3])
    lst[len(lst):] = [4]
    assert_content(mk, lst, [1, "x", "y", 2, 3, 4])
    lst[100:200] = [5]
    assert_content(mk, lst, [1, "x", "y", 2, 3, 4, 5])
    lst[:0] = [0]
    assert_content(mk, lst, [0, 1, "x", "y", 2, 3, 4, 5])
    lst[5:2] = ["z"]  # an empty slice: inserts at its start
    assert_content(mk, lst, [0, 1, "x", "y", 2, "z", 3, 4, 5])
    lst[-100:1] = []
    assert_content(mk, lst, [1, "x", "y", 2, "z", 3, 4, 5])


def test_slice_set_from_itself(mk):
    lst = mk([1, 2, 3])
    lst[1:2] = lst
    assert_content(mk, lst, [1, 1, 2, 3, 3])
    lst[:] = lst
    assert_content(mk, lst, [1, 1, 2, 3, 3])
    lst[::-1] = lst
    assert_content(mk, lst, [3, 3, 2, 1, 1])
    lst[::2] = lst[:3]
    assert_content(mk, lst, [3, 3, 3, 1, 2])


@pytest.mark.parametrize("s, size, expected_size", [
    (slice(None, None, 2), 2, 3),
    (slice(None, None, 2), 4, 3),
    (slice(None, None, -1), 0, 5),
    (slice(1, 4, 2), 3, 2),
    (slice(4, 0, -2), 1, 2),
])
def test_extended_slice_set_wrong_length_raises_valueerror(mk, s, size, expected_size):
    lst = mk([0, 1, 2, 3, 4])
    with pytest.raises(ValueError) as exc:
        lst[s] = list(range(size))
    assert str(exc.value) == "attempt to assign sequence of size %d to extended slice of size %d" % (
        size, expected_size)
    assert_content(mk, lst, [0, 1, 2, 3, 4])


def test_slice_set_non_iterable_raises_typeerror(mk):
    lst = mk([1, 2, 3])
    with pytest.raises(TypeError):
        lst[0:1] = 5
    with pytest.raises(TypeError):
        lst[::2] = None
    assert_content(mk, lst, [1, 2, 3])


def test_slice_step_zero_raises_valueerror(mk):
    lst = mk([1, 2, 3])
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        lst[::0]
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        lst[::0] = []
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        del lst[::0]
    assert_content(mk, lst, [1, 2, 3])


def test_slice_delete(mk):
    for s in SLICES:
        lst = mk(BASE)
        ref = list(BASE)
        del ref[s]
        del lst[s]
        assert list(lst) == ref, s
        assert list(mk.fresh(lst)) == ref, s


def test_slice_delete_containers(mk):
    lst = mk([[0], {"a": 1}, (2,), [3], "x"])
    del lst[::2]
    assert_content(mk, lst, [{"a": 1}, [3]])
    lst[1].append(4)
    assert lst == [{"a": 1}, [3, 4]]
    del lst[:]
    assert_content(mk, lst, [])


# ---------------------------------------------------------- growing methods --

def test_append(mk):
    lst = mk([])
    assert lst.append(1) is None
    lst.append("s")
    lst.append([2, (3,)])
    lst.append({"k": [4]})
    lst.append(None)
    lst.append((5, [6]))
    assert_content(mk, lst, [1, "s", [2, (3,)], {"k": [4]}, None, (5, [6])])
    lst[2].append(7)
    assert mk.fresh(lst)[2] == [2, (3,), 7]


EXTEND_SOURCES = {
    # factories, so that one-shot iterators are made afresh for each run
    "list": (lambda: [4, 5], [4, 5]),
    "tuple": (lambda: (4, 5), [4, 5]),
    "str": (lambda: "ab", ["a", "b"]),
    "bytes": (lambda: b"ab", [97, 98]),
    "dict": (lambda: {"k": 1, "j": 2}, ["k", "j"]),
    "range": (lambda: range(3), [0, 1, 2]),
    "iterator": (lambda: iter([7]), [7]),
    "generator": (lambda: (x * 2 for x in range(3)), [0, 2, 4]),
    "empty": (lambda: [], []),
    "containers": (lambda: [[1], {"a": 2}], [[1], {"a": 2}]),
}


@pytest.mark.parametrize("name", sorted(EXTEND_SOURCES))
def test_extend(mk, name):
    make_source, added = EXTEND_SOURCES[name]
    lst = mk([1])
    assert lst.extend(make_source()) is None
    assert_content(mk, lst, [1] + added)


def test_extend_with_itself_and_other_shared(mk):
    lst = mk([1, 2])
    lst.extend(lst)
    assert_content(mk, lst, [1, 2, 1, 2])
    other = mk([[3]])
    lst.extend(other)
    assert_content(mk, lst, [1, 2, 1, 2, [3]])
    other[0].append(4)  # extend copies references, like list
    assert lst[4] == [3, 4]


def test_extend_non_iterable_raises_typeerror(mk):
    lst = mk([1])
    with pytest.raises(TypeError):
        lst.extend(5)
    with pytest.raises(TypeError):
        lst.extend(None)
    assert_content(mk, lst, [1])


@pytest.mark.parametrize("i, expected", [
    (0, ["x", 0, 1, 2]),
    (1, [0, "x", 1, 2]),
    (3, [0, 1, 2, "x"]),
    (100, [0, 1, 2, "x"]),
    (2 ** 62, [0, 1, 2, "x"]),
    (-1, [0, 1, "x", 2]),
    (-3, ["x", 0, 1, 2]),
    (-100, ["x", 0, 1, 2]),
    (-(2 ** 62), ["x", 0, 1, 2]),
])
def test_insert(mk, i, expected):
    lst = mk([0, 1, 2])
    assert lst.insert(i, "x") is None
    assert_content(mk, lst, expected)


def test_insert_into_empty_and_containers(mk):
    lst = mk([])
    lst.insert(5, [1])
    lst.insert(-5, {"a": 1})
    lst.insert(1, (2,))
    assert_content(mk, lst, [{"a": 1}, (2,), [1]])


def test_insert_bad_index_raises_typeerror(mk):
    lst = mk([1])
    with pytest.raises(TypeError):
        lst.insert("0", 2)
    with pytest.raises(TypeError):
        lst.insert(1.0, 2)
    assert_content(mk, lst, [1])


# ---------------------------------------------------------- removing methods --

def test_pop(mk):
    lst = mk([0, 1, 2, 3, 4, 5])
    assert lst.pop() == 5
    assert lst.pop(0) == 0
    assert lst.pop(-1) == 4
    assert lst.pop(1) == 2
    assert lst.pop(-2) == 1
    assert_content(mk, lst, [3])
    assert lst.pop() == 3
    assert_content(mk, lst, [])


def test_pop_container_returns_its_content(mk):
    lst = mk([[1, [2]], {"k": (3,)}, (4, [5])])
    t = lst.pop()
    assert t == (4, [5]) and type(t) is tuple
    assert lst.pop(0) == [1, [2]]
    assert lst.pop() == {"k": (3,)}
    assert len(lst) == 0


def test_pop_empty_raises_indexerror(mk):
    lst = mk([])
    with pytest.raises(IndexError, match="pop from empty list"):
        lst.pop()
    with pytest.raises(IndexError):
        lst.pop(0)
    assert len(lst) == 0


@pytest.mark.parametrize("i", [3, 100, -4, -100])
def test_pop_out_of_range_raises_indexerror(mk, i):
    lst = mk([1, 2, 3])
    with pytest.raises(IndexError, match="pop index out of range"):
        lst.pop(i)
    assert_content(mk, lst, [1, 2, 3])


def test_remove(mk):
    lst = mk([1, 2, "a", 2, [3], 1.0])
    assert lst.remove(2) is None
    assert_content(mk, lst, [1, "a", 2, [3], 1.0])
    lst.remove([3])
    assert_content(mk, lst, [1, "a", 2, 1.0])
    lst.remove(1.0)  # equal to the first 1
    assert_content(mk, lst, ["a", 2, 1.0])
    lst.remove(True)
    assert_content(mk, lst, ["a", 2])


@pytest.mark.parametrize("x", [3, "1", b"a", None, [1], (1,)], ids=["int", "str", "bytes", "none", "list", "tuple"])
def test_remove_missing_raises_valueerror(mk, x):
    lst = mk([1, "a", [2]])
    with pytest.raises(ValueError, match="not in list"):
        lst.remove(x)
    assert_content(mk, lst, [1, "a", [2]])


def test_remove_from_empty(mk):
    with pytest.raises(ValueError, match="not in list"):
        mk([]).remove(0)


def test_clear(mk):
    lst = mk([1, [2], {"a": 3}])
    assert lst.clear() is None
    assert_content(mk, lst, [])
    assert not lst
    lst.append(1)
    assert_content(mk, lst, [1])
    empty = mk([])
    empty.clear()
    assert_content(mk, empty, [])


# ------------------------------------------------------------- search methods --

def test_index(mk):
    lst = mk([1, 2, 3, 2, [4], "s"])
    assert lst.index(2) == 1
    assert lst.index(2, 2) == 3
    assert lst.index(2, -3) == 3
    assert lst.index(2, 1, -2) == 1
    assert lst.index(2, 2, 100) == 3
    assert lst.index(1, -100) == 0
    assert lst.index(2.0) == 1
    assert lst.index(True) == 0
    assert lst.index([4]) == 4
    assert lst.index("s", 0, 6) == 5


@pytest.mark.parametrize("args", [
    (9,),
    (1, 1),
    (2, 0, 1),
    (2, 4),
    (2, 100),
    (2, -1),
    (2, 3, 2),
    (2, 0, -5),
    ("2",),
    ([5],),
])
def test_index_missing_raises_valueerror(mk, args):
    lst = mk([1, 2, 3, 2, [4]])
    with pytest.raises(ValueError, match="not in list"):
        lst.index(*args)
    assert_content(mk, lst, [1, 2, 3, 2, [4]])


def test_count(mk):
    lst = mk([1, True, 1.0, 2, "1", [1], [1], (1,), None])
    assert lst.count(1) == 3
    assert lst.count(True) == 3
    assert lst.count(2) == 1
    assert lst.count("1") == 1
    assert lst.count([1]) == 2
    assert lst.count((1,)) == 1
    assert lst.count(None) == 1
    assert lst.count(3) == 0
    assert mk([]).count(None) == 0


def test_contains(mk):
    lst = mk([1, "a", [2, 3], {"k": 1}, (4,), b"b", None])
    assert 1 in lst and 1.0 in lst and True in lst
    assert "a" in lst
    assert [2, 3] in lst
    assert {"k": 1} in lst
    assert (4,) in lst
    assert b"b" in lst
    assert None in lst
    assert "b" not in lst
    assert [4] not in lst
    assert (2, 3) not in lst
    assert [2] not in lst
    assert 0 not in mk([])


# ------------------------------------------------------------ order methods --

def test_reverse(mk):
    lst = mk([1, "a", [2], None])
    assert lst.reverse() is None
    assert_content(mk, lst, [None, [2], "a", 1])
    empty = mk([])
    empty.reverse()
    assert_content(mk, empty, [])


def test_reversed(mk):
    lst = mk([1, 2, [3]])
    it = reversed(lst)
    assert next(it) == [3]
    assert list(it) == [2, 1]
    assert list(reversed(mk([]))) == []


@pytest.mark.parametrize("init, kwargs, expected", [
    ([3, 1, 2], {}, [1, 2, 3]),
    ([3, 1, 2], {"reverse": True}, [3, 2, 1]),
    (["b", "C", "a"], {}, ["C", "a", "b"]),
    (["b", "C", "a"], {"key": str.lower}, ["a", "b", "C"]),
    (["b", "C", "a"], {"key": str.lower, "reverse": True}, ["C", "b", "a"]),
    ([3, 1.5, True, -2], {}, [-2, True, 1.5, 3]),
    ([[2], [1, 5], [1]], {}, [[1], [1, 5], [2]]),
    ([(2, "a"), (1, "b")], {}, [(1, "b"), (2, "a")]),
    ([b"b", b"a"], {}, [b"a", b"b"]),
    ([], {}, []),
    ([5], {"reverse": True}, [5]),
    ([3, 1, 2], {"key": None, "reverse": False}, [1, 2, 3]),
    (["ccc", "a", "bb"], {"key": len}, ["a", "bb", "ccc"]),
])
def test_sort(mk, init, kwargs, expected):
    lst = mk(init)
    assert lst.sort(**kwargs) is None
    assert_content(mk, lst, expected)


def test_sort_is_stable(mk):
    data = [(1, "a"), (0, "b"), (1, "c"), (0, "d"), (2, "e"), (1, "f")]
    lst = mk(data)
    lst.sort(key=lambda t: t[0])
    assert_content(mk, lst, [(0, "b"), (0, "d"), (1, "a"), (1, "c"), (1, "f"), (2, "e")])
    lst = mk(data)
    lst.sort(key=lambda t: t[0], reverse=True)  # reverse keeps equal items in order
    assert_content(mk, lst, [(2, "e"), (1, "a"), (1, "c"), (1, "f"), (0, "b"), (0, "d")])


def test_sort_dicts_by_key(mk):
    lst = mk([{"n": 2, "i": 0}, {"n": 1, "i": 1}, {"n": 2, "i": 2}])
    lst.sort(key=lambda d: d["n"])
    assert [d["i"] for d in lst] == [1, 0, 2]
    assert [d["i"] for d in mk.fresh(lst)] == [1, 0, 2]


def test_sort_incomparable_raises_typeerror(mk):
    lst = mk([1, "a"])
    with pytest.raises(TypeError, match="not supported between instances of"):
        lst.sort()
    assert sorted(lst, key=str) == [1, "a"]
    lst2 = mk([{"a": 1}, {"b": 2}])
    with pytest.raises(TypeError):
        lst2.sort()
    assert len(lst2) == 2


def test_sort_key_error_leaves_list_unchanged(mk):
    lst = mk([3, 1, 2])
    with pytest.raises(ZeroDivisionError):
        lst.sort(key=lambda x: 1 // (x - 2))
    assert_content(mk, lst, [3, 1, 2])


def test_sort_takes_no_positional_arguments(mk):
    lst = mk([2, 1])
    with pytest.raises(TypeError):
        lst.sort(None)
    with pytest.raises(TypeError):
        lst.sort(None, True)
    assert_content(mk, lst, [2, 1])


# ---------------------------------------------------------- copy and operators --

def test_copy_is_a_plain_list(mk):
    lst = mk([1, [2], {"a": 3}, (4,)])
    c = lst.copy()
    assert type(c) is list
    assert c == [1, [2], {"a": 3}, (4,)]
    c.append(5)
    del c[0]
    assert_content(mk, lst, [1, [2], {"a": 3}, (4,)])
    c[0].append(9)  # shallow, like list.copy
    assert lst[1] == [2, 9]
    assert mk([]).copy() == [] and type(mk([]).copy()) is list


def test_add(mk):
    lst = mk([1, [2]])
    r = lst + [3, (4,)]
    assert type(r) is list
    assert r == [1, [2], 3, (4,)]
    r = [0] + lst
    assert type(r) is list
    assert r == [0, 1, [2]]
    r = lst + lst
    assert type(r) is list
    assert r == [1, [2], 1, [2]]
    r = lst + mk(["x"])
    assert r == [1, [2], "x"] and type(r) is list
    assert lst + [] == [1, [2]]
    assert_content(mk, lst, [1, [2]])


@pytest.mark.parametrize("other", [(3,), "ab", None, 1, range(2), {"a": 1}],
                         ids=["tuple", "str", "none", "int", "range", "dict"])
def test_add_non_list_raises_typeerror(mk, other):
    lst = mk([1])
    with pytest.raises(TypeError):
        lst + other
    with pytest.raises(TypeError):
        other + lst
    assert_content(mk, lst, [1])


def test_iadd_extends_in_place(mk):
    lst = mk([1])
    before = lst
    lst += [2]
    assert lst is before
    lst += (3,)  # += takes any iterable, unlike +
    lst += "ab"
    lst += range(1)
    lst += lst
    assert lst is before
    assert_content(mk, lst, [1, 2, 3, "a", "b", 0, 1, 2, 3, "a", "b", 0])


def test_iadd_non_iterable_raises_typeerror(mk):
    lst = mk([1])
    before = lst
    with pytest.raises(TypeError):
        lst += 5
    assert lst is before
    assert_content(mk, lst, [1])


@pytest.mark.parametrize("n, expected", [
    (0, []),
    (1, [1, "a"]),
    (3, [1, "a", 1, "a", 1, "a"]),
    (-1, []),
    (-100, []),
    (True, [1, "a"]),
])
def test_mul(mk, n, expected):
    lst = mk([1, "a"])
    r = lst * n
    assert type(r) is list and r == expected
    r = n * lst
    assert type(r) is list and r == expected
    assert_content(mk, lst, [1, "a"])


def test_mul_repeats_references(mk):
    lst = mk([[1]])
    r = lst * 2
    r[0].append(2)
    assert r[1] == [1, 2]
    assert lst[0] == [1, 2]


@pytest.mark.parametrize("other", ["2", 2.0, None, [2]], ids=["str", "float", "none", "list"])
def test_mul_non_int_raises_typeerror(mk, other):
    lst = mk([1])
    with pytest.raises(TypeError):
        lst * other
    with pytest.raises(TypeError):
        other * lst
    assert_content(mk, lst, [1])


@pytest.mark.parametrize("n, expected", [
    (0, []),
    (1, [1, "a"]),
    (3, [1, "a", 1, "a", 1, "a"]),
    (-1, []),
    (-5, []),
])
def test_imul_in_place(mk, n, expected):
    lst = mk([1, "a"])
    before = lst
    lst *= n
    assert lst is before
    assert_content(mk, lst, expected)


def test_imul_repeats_references(mk):
    lst = mk([[1]])
    lst *= 3
    lst[0].append(2)
    assert lst == [[1, 2], [1, 2], [1, 2]]
    assert mk.fresh(lst) == [[1, 2], [1, 2], [1, 2]]


def test_imul_non_int_raises_typeerror(mk):
    lst = mk([1])
    with pytest.raises(TypeError):
        lst *= 2.0
    assert_content(mk, lst, [1])


# -------------------------------------------------------------- comparisons --

@pytest.mark.parametrize("init, other", [
    ([], []),
    ([1, 2], [1, 2]),
    ([1, 2], [1.0, True + 1]),
    ([[1], {"a": (2,)}], [[1], {"a": (2,)}]),
    (["s", b"b", None], ["s", b"b", None]),
])
def test_eq(mk, init, other):
    lst = mk(init)
    assert lst == other
    assert other == lst
    assert not (lst != other)
    assert not (other != lst)
    assert lst == mk(other)
    assert lst == lst
    assert lst <= other and lst >= other
    assert not (lst < other) and not (lst > other)


@pytest.mark.parametrize("init, other", [
    ([], [0]),
    ([1, 2], [1, 3]),
    ([1, 2], [1, 2, 0]),
    ([1, 2], [1]),
    ([[1]], [(1,)]),
    ([(1,)], [[1]]),
    (["1"], [1]),
    ([b"a"], ["a"]),
    ([{"a": 1}], [{"a": 2}]),
])
def test_ne(mk, init, other):
    lst = mk(init)
    assert lst != other
    assert other != lst
    assert not (lst == other)
    assert not (other == lst)
    assert lst != mk(other)


@pytest.mark.parametrize("other", [(1, 2), "12", None, 1, {1: 2}, {1, 2}, range(1, 3)],
                         ids=["tuple", "str", "none", "int", "dict", "set", "range"])
def test_eq_with_non_lists_is_false(mk, other):
    lst = mk([1, 2])
    assert not (lst == other)
    assert lst != other
    assert not (other == lst)
    assert other != lst


def test_ordering(mk):
    lst = mk([1, 2, 3])
    assert lst < [1, 2, 4]
    assert lst < [1, 2, 3, 0]
    assert lst < [2]
    assert not (lst < [1, 2, 3])
    assert lst <= [1, 2, 3]
    assert lst <= [1, 3]
    assert lst > [1, 2]
    assert lst > [1, 1, 9]
    assert lst > []
    assert lst >= [1, 2, 3]
    assert not (lst >= [1, 2, 3, 0])
    # with the list on the left
    assert [1, 2] < lst
    assert [1, 2, 4] > lst
    assert [1, 2, 3] <= lst
    assert [1, 2, 3] >= lst
    # nested
    assert mk([[1, 2], "b"]) < [[1, 3], "a"]
    assert mk([[1, 2], "b"]) > [[1, 2], "a"]
    assert mk([(1, 2)]) < [(1, 3)]
    # between two shared lists
    assert mk([1, 2]) < mk([1, 3])
    assert mk([1, 3]) >= mk([1, 3])


def test_ordering_with_non_lists_raises_typeerror(mk):
    lst = mk([1, 2])
    with pytest.raises(TypeError):
        lst < (1, 3)
    with pytest.raises(TypeError):
        lst >= (1, 2)
    with pytest.raises(TypeError):
        (1, 3) > lst
    with pytest.raises(TypeError):
        lst < None
    with pytest.raises(TypeError):
        lst <= "12"


def test_ordering_with_incomparable_elements_raises_typeerror(mk):
    lst = mk([1, "a"])
    with pytest.raises(TypeError):
        lst < [1, 2]
    assert lst < [2, 2]  # decided by the first element


def test_unhashable(mk):
    lst = mk([1])
    with pytest.raises(TypeError):
        hash(lst)
    with pytest.raises(TypeError):
        {lst: 1}


# ------------------------------------------------------------- iteration --

def test_iter(mk):
    lst = mk([1, [2], "c"])
    it = iter(lst)
    assert iter(it) is it
    assert next(it) == 1
    assert list(it) == [[2], "c"]
    with pytest.raises(StopIteration):
        next(it)
    assert list(mk([])) == []


def test_iteration_sees_removals(mk):
    lst = mk([1, 2, 3, 4])
    seen = []
    for x in lst:
        seen.append(x)
        if x == 2:
            lst.remove(x)
    assert seen == [1, 2, 4]
    assert_content(mk, lst, [1, 3, 4])


def test_iteration_sees_appends(mk):
    lst = mk([1, 2])
    seen = []
    for x in lst:
        seen.append(x)
        if len(lst) < 4:
            lst.append(x * 10)
    assert seen == [1, 2, 10, 20]
    assert_content(mk, lst, [1, 2, 10, 20])


def test_conversions(mk):
    lst = mk([3, [1], "a", (2,)])
    assert list(lst) == [3, [1], "a", (2,)]
    assert tuple(lst) == (3, [1], "a", (2,))
    a, b, c, d = lst
    assert (a, b, c, d) == (3, [1], "a", (2,))
    assert sorted(mk([3, 1, 2])) == [1, 2, 3]
    assert sum(mk([1, 2, 3])) == 6
    assert max(mk([1, 5, 2])) == 5
    assert list(enumerate(mk(["x", "y"]))) == [(0, "x"), (1, "y")]
    assert [*mk([1, 2]), 3] == [1, 2, 3]


# --------------------------------------------------------------------- repr --

def test_repr_equals_list_repr(mk):
    lst = mk([1, "a", [2, 3], {"k": None}, (1,), b"x", 1.5, None, True, -0.0, 2 ** 70,
              ("t",), "it's", "\u00e9\U0001f600", (), [], {}])
    expected = ("[1, 'a', [2, 3], {'k': None}, (1,), b'x', 1.5, None, True, -0.0, "
                "1180591620717411303424, ('t',), \"it's\", '\u00e9\U0001f600', (), [], {}]")
    assert repr(lst) == expected
    assert str(lst) == expected
    assert repr(mk([])) == "[]"


def test_repr_of_list_containing_itself(mk):
    lst = mk([1])
    lst.append(lst)
    assert repr(lst) == "[1, [...]]"
    assert len(lst) == 2
    assert len(lst[1]) == 2
    assert lst[1][0] == 1
    assert repr(mk.fresh(lst)) == "[1, [...]]"


def test_repr_of_list_containing_itself_two_levels_down(mk):
    lst = mk([1])
    lst.append({"back": lst})
    assert repr(lst) == "[1, {'back': [...]}]"
    assert repr(lst[1]) == "{'back': [1, {...}]}"
    lst[1]["back"].append(2)
    assert len(lst) == 3


# ------------------------------------------- families from CPython's protocol --
# Subclass arguments, length hints, keys that mutate, huge indices, __init__,
# iterators (length hints, pickling) and attribute parity with list.

class IterList(list):
    """A list subclass whose own __iter__ disagrees with its items."""

    def __iter__(self):
        return iter(["it", "er"])


class IterTuple(tuple):
    def __iter__(self):
        return iter(["t-it"])


class IterDict(dict):
    def __iter__(self):
        return iter(["d-it"])


class LenRaises(list):
    def __len__(self):
        raise ValueError("len")


SUBCLASS_SOURCES = {
    # name: (factory, what list.extend takes from it)
    "list-subclass": (lambda: IterList([1, 2, 3]), ["it", "er"]),
    "tuple-subclass": (lambda: IterTuple((1, 2)), ["t-it"]),
    "dict-subclass": (lambda: IterDict({"k": 1}), ["d-it"]),
    "plain-list-subclass": (lambda: type("L", (list,), {})([4, 5]), [4, 5]),
    "empty-list-subclass": (lambda: IterList(), ["it", "er"]),
}
SEQUENCE_SUBCLASSES = sorted(n for n in SUBCLASS_SOURCES if n != "dict-subclass")


@pytest.mark.parametrize("name", sorted(SUBCLASS_SOURCES))
def test_extend_and_iadd_iterate_subclasses_through_their_own_iter(mk, name):
    make, added = SUBCLASS_SOURCES[name]
    lst = mk([0])
    lst.extend(make())
    assert_content(mk, lst, [0] + added)
    lst = mk([0])
    lst += make()
    assert_content(mk, lst, [0] + added)
    lst = mk([0])
    lst[1:1] = make()
    assert_content(mk, lst, [0] + added)


def test_extend_consults_a_subclass_len_as_list_does(mk):
    lst = mk([0])
    with pytest.raises(ValueError, match="len"):
        lst.extend(LenRaises([1]))
    assert_content(mk, lst, [0])


@pytest.mark.parametrize("name", sorted(SUBCLASS_SOURCES))
def test_init_takes_subclasses_as_list_does(mk, name):
    make, added = SUBCLASS_SOURCES[name]
    lst = mk([9])
    lst.__init__(make())
    assert_content(mk, lst, added)


@pytest.mark.parametrize("name", SEQUENCE_SUBCLASSES)
def test_stored_sequence_subclasses_are_what_list_or_tuple_of_them_gives(mk, name):
    # (dict subclasses: tests/test_dict_behaviour.py)
    make, added = SUBCLASS_SOURCES[name]
    holder = mk([None])
    holder[0] = make()
    # builtin holds the object itself: list() of it goes through its __iter__;
    # dshared stores list(x) / tuple(x) / dict(x)
    assert list(holder[0]) == added
    holder.append(make())
    assert list(holder[1]) == added


class Hinted:
    """An empty iterator with a chosen __length_hint__ (a value, or an
    exception to raise)."""

    def __init__(self, hint, items=()):
        self.hint = hint
        self.items = iter(items)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.items)

    def __length_hint__(self):
        if isinstance(self.hint, BaseException):
            raise self.hint
        return self.hint


@pytest.mark.parametrize("hint, exc", [
    (sys.maxsize, None),                 # list.extend ignores a hint that overflows its size
    (0, None),
    (-1, ValueError),
    (TypeError("no hint"), None),        # a TypeError means "no hint"
    (ValueError("bad"), ValueError),
    (1.5, TypeError),
    (2 ** 70, OverflowError),
    (NotImplemented, None),              # NotImplemented means "no hint" too
], ids=["maxsize", "zero", "negative", "raises-typeerror", "raises-valueerror", "float",
        "beyond-ssize", "notimplemented"])
def test_extend_length_hints(mk, hint, exc):
    lst = mk([1, 2, 3, 4])
    if exc is None:
        lst.extend(Hinted(hint, [5, 6]))
        assert_content(mk, lst, [1, 2, 3, 4, 5, 6])
    else:
        with pytest.raises(exc):
            lst.extend(Hinted(hint, [5, 6]))
        assert_content(mk, lst, [1, 2, 3, 4])


@pytest.mark.parametrize("hint", [sys.maxsize, sys.maxsize // 2, 2 ** 40])
@pytest.mark.parametrize("init", [[], [1]])
def test_huge_length_hint_is_only_a_hint(root, hint, init):
    """list.extend preallocates from a hint it can add to its size, and then
    raises MemoryError for a huge one; dshared never allocates from a hint
    (README: deliberate difference)."""
    root["l"] = init
    lst = root["l"]
    lst.extend(Hinted(hint, [7]))
    lst += Hinted(hint, [8])
    lst.__init__(Hinted(hint, [9]))
    root["l2"] = []
    root["l2"].extend(Hinted(hint, []))
    assert list(lst) == [9] and list(root["l2"]) == []


HUGE = [10 ** 30, -(10 ** 30), 2 ** 63, -(2 ** 63) - 1]


@pytest.mark.parametrize("i", HUGE)
def test_huge_indices_on_every_index_taking_method(mk, i):
    lst = mk([1, 2, 3])
    with pytest.raises(OverflowError):
        lst.insert(i, "x")
    with pytest.raises(OverflowError):
        lst.insert(Idx(i), "x")
    with pytest.raises(OverflowError):
        lst.pop(i)
    with pytest.raises(IndexError, match="cannot fit 'int' into an index-sized integer"):
        lst[i]
    with pytest.raises(IndexError, match="cannot fit 'int' into an index-sized integer"):
        lst[i] = 0
    with pytest.raises(IndexError, match="cannot fit 'int' into an index-sized integer"):
        del lst[i]
    # index() clamps its bounds, as slices do
    if i > 0:
        with pytest.raises(ValueError):
            lst.index(1, i)
        assert lst.index(3, 0, i) == 2
    else:
        assert lst.index(1, i) == 0
        with pytest.raises(ValueError):
            lst.index(1, 0, i)
    assert lst[i:] == ([] if i > 0 else [1, 2, 3])
    assert lst[:i] == ([1, 2, 3] if i > 0 else [])
    assert lst[::i] == ([1] if i > 0 else [3])
    assert_content(mk, lst, [1, 2, 3])


def test_insert_and_pop_index_errors_read_as_lists(mk):
    lst = mk([1])
    with pytest.raises(TypeError, match="'str' object cannot be interpreted as an integer"):
        lst.insert("0", 2)
    # (Python 3.9 words it "integer argument expected, got float")
    with pytest.raises(TypeError, match="'float' object cannot be interpreted as an integer|"
                                        "integer argument expected, got float"):
        lst.pop(0.0)
    with pytest.raises(OverflowError, match="Python int too large to convert to C ssize_t"):
        lst.insert(10 ** 30, 2)
    assert_content(mk, lst, [1])


def test_sort_key_that_appends_raises_list_modified(mk):
    lst = mk([3, 1, 2])

    def key(x):
        lst.append(0)
        return x
    with pytest.raises(ValueError, match="list modified during sort"):
        lst.sort(key=key)
    # a key that changes another list is fine
    lst = mk([3, 1, 2])
    other = mk([])
    lst.sort(key=lambda x: other.append(x) or x)
    assert_content(mk, lst, [1, 2, 3])
    assert sorted(other) == [1, 2, 3]


def test_sort_comparison_that_appends_raises_list_modified(mk):
    # as test.list_tests.CommonTest.test_sort
    lst = mk(list(range(20)))

    def cmp(x, y):
        lst.append(1)
        return (x > y) - (x < y)
    with pytest.raises(ValueError, match="list modified during sort"):
        lst.sort(key=functools.cmp_to_key(cmp))


@pytest.mark.parametrize("mutation", ["append", "insert", "extend", "iadd", "setslice"])
def test_sort_key_that_modifies_any_way_raises(mk, mutation):
    lst = mk([3, 1, 2])
    done = []

    def key(x):
        if not done:
            done.append(1)
            if mutation == "append":
                lst.append(0)
            elif mutation == "insert":
                lst.insert(0, 0)
            elif mutation == "extend":
                lst.extend([0])
            elif mutation == "iadd":
                lst.__iadd__([0])
            else:
                lst[:] = [0]
        return x
    with pytest.raises(ValueError, match="list modified during sort"):
        lst.sort(key=key)


@pytest.mark.parametrize("mutation", ["pop", "clear", "setitem", "delitem", "reverse", "sort", "remove",
                                      "other-view"])
def test_sort_key_that_changes_a_shared_list_raises(root, mutation):
    """list.sort shows the key an empty list, so only a change that adds
    items is seen; a SharedList cannot hide its items from the key (README),
    so any change it makes is refused."""
    root["l"] = [3, 1, 2]
    lst = root["l"]
    done = []

    def key(x):
        if not done:
            done.append(1)
            if mutation == "pop":
                lst.pop()
            elif mutation == "clear":
                lst.clear()
            elif mutation == "setitem":
                lst[0] = 9
            elif mutation == "delitem":
                del lst[0]
            elif mutation == "reverse":
                lst.reverse()
            elif mutation == "sort":
                lst.sort()
            elif mutation == "remove":
                lst.remove(1)
            else:
                root["l"].append(5)         # another view of the same list
        return x
    with pytest.raises(ValueError, match="list modified during sort"):
        lst.sort(key=key)
    lst.sort()                              # and the next sort is unaffected
    assert list(lst) == sorted(lst)


def test_sort_reverse_is_converted_as_list_does(mk):
    # as the running Python's list: before 3.12 `reverse` is an int (TypeError
    # for None, 1.5 or "1", OverflowError past a C int), from 3.12 any truth value
    for v in [Idx(1), Idx(0), None, 1.5, "1", "", 2 ** 70, 0, 1]:
        ref = [1, 3, 2]
        try:
            ref.sort(reverse=v)
            want = None
        except Exception as e:
            want = type(e)
        lst = mk([1, 3, 2])
        if want is None:
            lst.sort(reverse=v)
        else:
            with pytest.raises(want):
                lst.sort(reverse=v)
        assert_content(mk, lst, ref)


def test_init_replaces_the_items_as_list_init(mk):
    lst = mk([1, 2, 3])
    assert lst.__init__([4, 5, 6]) is None
    assert_content(mk, lst, [4, 5, 6])
    lst.__init__()
    assert_content(mk, lst, [])
    lst.extend([7, 8])
    lst.__init__(x * 2 for x in range(2))
    assert_content(mk, lst, [0, 2])
    lst.__init__(lst)                   # list.__init__ clears first: nothing left to copy
    assert_content(mk, lst, [])
    lst.__init__((1,))
    with pytest.raises(TypeError):
        lst.__init__([1], [2])
    with pytest.raises(TypeError):
        lst.__init__(iterable=[1])
    assert_content(mk, lst, [1])


def test_init_with_a_bad_iterable(mk):
    """list.__init__ clears, then extends item by item: a bad iterable
    leaves the items before the error. SharedList.__init__ is one atomic
    step, as extend() (README): it leaves the list as it was."""
    lst = mk([1])
    with pytest.raises(TypeError):
        lst.__init__(5)
    assert_content(mk, lst, [] if mk.kind == "builtin" else [1])

    def gen():
        yield 7
        raise KeyError("midway")
    lst = mk([1])
    with pytest.raises(KeyError):
        lst.__init__(gen())
    assert_content(mk, lst, [7] if mk.kind == "builtin" else [1])


def test_iterator_length_hint(mk):
    lst = mk([1, 2, 3])
    it = iter(lst)
    assert operator.length_hint(it) == 3
    next(it)
    assert it.__length_hint__() == 2
    lst.append(4)
    assert it.__length_hint__() == 3
    del lst[:]
    assert it.__length_hint__() == 0
    lst.extend([1, 2, 3])
    r = reversed(lst)
    assert r.__length_hint__() == 3
    next(r)
    assert r.__length_hint__() == 2
    lst.pop()
    lst.pop()
    assert r.__length_hint__() == 0     # its position is past the end now
    assert list(r) == []
    assert r.__length_hint__() == 0


@pytest.mark.parametrize("rev", [False, True])
@pytest.mark.parametrize("taken", [0, 1, 3, 4])
def test_iterators_pickle_and_copy_as_list_iterators(mk, rev, taken):
    lst = mk([1, [2], "3"])
    expected = list(reversed([1, [2], "3"]) if rev else [1, [2], "3"])
    it = reversed(lst) if rev else iter(lst)
    for _ in range(taken):
        next(it, None)
    rest = expected[taken:]
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(it, proto))
        assert list(again) == rest
    assert list(copy.copy(it)) == rest
    assert list(it) == rest


def _setstate_story(lst, rev, steps):
    """What an iterator of lst does under steps: ("set", i) calls
    __setstate__(i), "next" takes one item (None at the end), "hint" reads
    __length_hint__; the items left at the end close the story."""
    it = reversed(lst) if rev else iter(lst)
    seen = []
    for step in steps:
        if step == "next":
            seen.append(next(it, None))
        elif step == "hint":
            seen.append(it.__length_hint__())
        else:
            it.__setstate__(step[1])
    return seen + [list(it)]


@pytest.mark.parametrize("rev", [False, True], ids=["iter", "reversed"])
@pytest.mark.parametrize("steps", [
    [("set", -5), "hint"], [("set", -1), "hint"], [("set", 0), "hint"], [("set", 2), "hint"],
    [("set", 10), "hint"],
    # a position set below the start, then a valid one (Python 3.13 keeps the list)
    [("set", -5), ("set", 1)], [("set", -1), "next", ("set", 1)],
    # an iterator run to its end stays exhausted
    ["next", "next", "next", "next", ("set", 0)],
])
def test_iterator_setstate_clamps_as_list_iterators(mk, rev, steps):
    # as the running Python's list iterators (3.13 changed negative positions)
    assert _setstate_story(mk([1, 2, 3]), rev, steps) == _setstate_story([1, 2, 3], rev, steps)


def test_iterator_setstate_rejects_what_list_iterators_reject(mk):
    lst = mk([1, 2, 3])
    for bad, exc in [(10 ** 30, OverflowError), ("1", TypeError), (1.0, TypeError)]:
        with pytest.raises(exc):
            iter(lst).__setstate__(bad)


# Attributes of list and its iterators that SharedList and its iterators do
# not have, each a deliberate difference (README).
LIST_ATTRIBUTE_DIFFERENCES = {
    "list": set(),
    "iterator": set(),
    "reversed": set(),
}


def _public(obj):
    return {n for n in dir(obj) if not n.startswith("__") or n.endswith("__")}


def test_every_list_attribute_exists_on_shared(root):
    root["l"] = [1, 2]
    sl = root["l"]
    pairs = {
        "list": ([1, 2], sl),
        "iterator": (iter([1]), iter(sl)),
        "reversed": (reversed([1]), reversed(sl)),
    }
    for name, (plain, shared) in pairs.items():
        missing = _public(plain) - _public(shared) - LIST_ATTRIBUTE_DIFFERENCES[name]
        assert not missing, "%s lacks %s" % (name, sorted(missing))
    for name in ["append", "clear", "copy", "count", "extend", "index", "insert", "pop",
                 "remove", "reverse", "sort"]:
        assert callable(getattr(sl, name))
