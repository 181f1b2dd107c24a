"""Values stored into a segment come back exactly: types, bits, identity, cycles.

Also: values dshared cannot store are refused with UnsupportedTypeError
naming the type and where it was found, leaving the old value in place; views
of removed objects raise StaleReferenceError.
"""
import collections.abc
import math
import random
import struct

import pytest
from _redis import mark_difference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dshared



# ------------------------------------------------------------------ helpers --


# the Redis copies run under -m slow (tests/test_backends.py and tests/test_redis*.py
# cover the Redis backend in the default run)
@pytest.fixture(params=["shm", pytest.param("redis", marks=pytest.mark.slow)])
def root(request):
    """The root of a fresh segment on each backend (tests/conftest.py)."""
    if request.param == "redis":
        mark_difference(request)
        return request.getfixturevalue("redis_root")
    return request.getfixturevalue("segment").col()

def plain(x):
    """A deep plain copy of a value read back from a segment."""
    if hasattr(x, "to_python"):
        return x.to_python()
    if type(x) is tuple:
        return tuple(plain(i) for i in x)
    return x


def float_bits(f):
    return struct.pack("<d", f)


def assert_same(got, want, path="value"):
    """got and want are equal, with the same types all the way down, floats
    bit for bit and dict keys in the same order (acyclic values only)."""
    assert type(got) is type(want), "%s: %r is a %s, want %r (%s)" % (
        path, got, type(got).__name__, want, type(want).__name__)
    if type(want) is float:
        assert float_bits(got) == float_bits(want), "%s: %r != %r bitwise" % (path, got, want)
    elif type(want) in (list, tuple):
        assert len(got) == len(want), "%s: length %d != %d" % (path, len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, "%s[%d]" % (path, i))
    elif type(want) is dict:
        assert len(got) == len(want), "%s: length %d != %d" % (path, len(got), len(want))
        for i, (gk, wk) in enumerate(zip(got, want)):
            assert_same(gk, wk, "%s key #%d" % (path, i))
            assert_same(got[gk], want[wk], "%s[%r]" % (path, wk))
    else:
        assert got == want, "%s: %r != %r" % (path, got, want)


def nan_with_bits(bits):
    (f,) = struct.unpack("<d", struct.pack("<Q", bits))
    return f


# ------------------------------------------------------------------ scalars --

FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1e308, -1e-308, 5e-324, -5e-324, 1.7976931348623157e308,
          2.0 ** 53, 2.0 ** 53 + 2, math.pi, float("inf"), float("-inf"), float("nan"),
          -float("nan"), nan_with_bits(0x7FF8000000000001), nan_with_bits(0xFFF80000DEADBEEF)]

INTS = [0, 1, -1, 7, -7, 255, 256, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32,
        2 ** 62, -(2 ** 62), 2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1, 2 ** 64 - 1, 2 ** 64,
        -(2 ** 64), 2 ** 64 + 1, 10 ** 30, -(10 ** 30), 2 ** 1000, -(2 ** 1000), 3 ** 5000]

STRS = ["", "a", "hello, world", "x" * 13, "x" * 14, "x" * 15, "x" * 16, "x" * 17,
        "\u00e9" * 7, "\u00e9" * 8, "\u00e9" * 15, "\u4e2d" * 5, "\u4e2d" * 16, "\u20ac" * 16,
        "\U0001f600", "\U0001f600" * 4, "a\U0001f600b", "\U0010ffff",
        "\ud800", "\udfff", "a\ud800b", "\ud83d\ude00", "\udc00\ud800",
        "\x00", "a\x00b", "\x00" * 16, "\x00\u00e9\U0001f600\ud800",
        "line\nbreak\ttab\r", "x" * 100000, "\u00e9\u4e2d\U0001f600" * 5000]

_rng = random.Random(1234)
BYTES = [b"", b"\x00", b"a\x00b", b"\x00" * 15, b"\x00" * 16, b"x" * 14, b"x" * 15, b"x" * 16,
         b"x" * 17, bytes(range(256)), b"\xff" * 100,
         bytes(_rng.getrandbits(8) for _ in range(1 << 20))]

SCALARS = [None, True, False] + INTS + FLOATS + STRS + BYTES


def _scalar_id(v):
    r = repr(v)
    return "%s:%s" % (type(v).__name__, r if len(r) <= 24 else r[:16] + "..len%d" % len(r))


def assert_scalar_same(got, want):
    assert type(got) is type(want)
    if type(want) is float:
        assert float_bits(got) == float_bits(want)
    else:
        assert got == want


@pytest.mark.parametrize("value", SCALARS, ids=[_scalar_id(v) for v in SCALARS])
def test_scalar_roundtrip(root, value):
    root["k"] = value
    assert_scalar_same(root["k"], value)
    assert_scalar_same(root.to_python()["k"], value)


@pytest.mark.parametrize("value", SCALARS, ids=[_scalar_id(v) for v in SCALARS])
def test_scalar_roundtrip_inside_containers(root, value):
    root["l"] = [value, [value]]
    root["d"] = {"v": value, "t": (value,)}
    assert_scalar_same(root["l"][0], value)
    assert_scalar_same(root["l"][1][0], value)
    assert_scalar_same(root["d"]["v"], value)
    assert_scalar_same(root["d"]["t"][0], value)
    assert_same(root["l"].to_python(), [value, [value]])
    assert_same(root["d"].to_python(), {"v": value, "t": (value,)})


def test_bool_stays_bool_and_int_stays_int(root):
    root["t"] = True
    root["f"] = False
    root["one"] = 1
    root["zero"] = 0
    assert root["t"] is True
    assert root["f"] is False
    assert type(root["one"]) is int and root["one"] == 1
    assert type(root["zero"]) is int and root["zero"] == 0
    root["n"] = None
    assert root["n"] is None


KEYS = ["", "a", "x" * 16, "\ud800", "\U0001f600", b"", b"a\x00", 0, 1, -1, 2 ** 63, -(2 ** 63) - 1,
        2 ** 100, 0.5, -0.0, float("inf"), float("-inf"), None, True, False, (), (1,),
        (1, ("a", (b"b", None)), 2.5), ("\ud800", -0.0)]


@pytest.mark.parametrize("key", KEYS, ids=[_scalar_id(k) for k in KEYS])
def test_key_roundtrip(root, key):
    root[key] = "v"
    (got,) = list(root)
    assert_same(got, key)
    assert root[key] == "v"
    root["d"] = {key: [key]}
    (got,) = list(root["d"])
    assert_same(got, key)
    assert_same(root["d"][key].to_python(), [key])
    assert_same(root["d"].to_python(), {key: [key]})


# --------------------------------------------------------------- containers --

CONTAINERS = [
    [], {}, (), [[]], [{}], [()], {"": {}}, ((),), (((),),), (1, (2, (3, ()))),
    ([1], {"a": (2,)}), {"t": (1, 2), "l": [(3, [4])]},
    [None, True, 1, 1.5, "s", b"b", -0.0, 2 ** 70],
    {(): [], None: {}, 1: (), b"k": [()], 2.5: None, (1, "a"): "t"},
    {"a": 1, "b": 2, "c": 3, "z": 0, "y": -1},  # insertion order, not sorted
    list(range(1000)),
    {"k%d" % i: i for i in range(500)},
]


@pytest.mark.parametrize("value", CONTAINERS, ids=["c%d" % i for i in range(len(CONTAINERS))])
def test_container_roundtrip(root, value):
    root["k"] = value
    got = root["k"]
    if type(value) is tuple:
        assert type(got) is tuple
    elif type(value) is list:
        assert isinstance(got, collections.abc.MutableSequence)
        assert type(got.to_python()) is list
    else:
        assert isinstance(got, collections.abc.MutableMapping)
        assert type(got.to_python()) is dict
    assert_same(plain(got), value)
    assert_same(root.to_python()["k"], value)
    assert got == value


def test_deep_nesting_roundtrip(root):
    value = []
    for i in range(200):
        value = [i, value] if i % 2 else {"n": value, "t": (i,)}
    root["k"] = value
    assert_same(plain(root["k"]), value)


def test_nested_containers_read_back_as_live_views(root):
    root["k"] = {"l": [1, {"d": []}], "t": ([2],)}
    k = root["k"]
    assert isinstance(k, collections.abc.MutableMapping)
    assert not isinstance(k, dict)
    assert isinstance(k["l"], collections.abc.MutableSequence)
    assert not isinstance(k["l"], list)
    assert isinstance(k["l"][1], collections.abc.MutableMapping)
    assert type(k["t"]) is tuple
    assert isinstance(k["t"][0], collections.abc.MutableSequence)
    k["l"][1]["d"].append(3)
    k["t"][0].append(4)
    assert_same(root["k"].to_python(), {"l": [1, {"d": [3]}], "t": ([2, 4],)})


def test_to_python_is_a_plain_deep_copy(root):
    root["k"] = {"l": [1, {"d": [2]}], "t": ({"x": 1},)}
    copy = root["k"].to_python()
    assert_same(copy, {"l": [1, {"d": [2]}], "t": ({"x": 1},)})
    copy["l"][1]["d"].append(3)
    copy["new"] = 1
    assert_same(root["k"].to_python(), {"l": [1, {"d": [2]}], "t": ({"x": 1},)})
    assert_same(root["k"]["l"].to_python(), [1, {"d": [2]}])


def test_assignment_copies_the_value(root):
    value = {"l": [1]}
    root["k"] = value
    value["l"].append(2)
    value["x"] = 1
    assert_same(root["k"].to_python(), {"l": [1]})


def test_overwriting_with_smaller_and_larger_values(root):
    root["k"] = BYTES[-1]
    root["k"] = b"x"
    assert root["k"] == b"x"
    root["k"] = list(range(10000))
    root["k"] = "s"
    root["k"] = {"a": [1] * 1000}
    assert root["k"]["a"] == [1] * 1000


# --------------------------------------------------------------- hypothesis --

SPECIAL_STRS = st.sampled_from(["\ud800", "\udfff", "\x00", "\U0001f600", "\u00e9", "x" * 15])
TEXT = st.one_of(
    st.text(max_size=20),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), SPECIAL_STRS, st.text(max_size=5)),
)
INTEGERS = st.one_of(st.integers(), st.integers(min_value=-(2 ** 200), max_value=2 ** 200),
                     st.sampled_from([2 ** 63, -(2 ** 63), 2 ** 63 - 1, -(2 ** 63) - 1, 2 ** 64]))
KEY_LEAVES = st.one_of(st.none(), st.booleans(), INTEGERS, st.floats(allow_nan=False), TEXT,
                       st.binary(max_size=20))
KEY_STRATEGY = st.recursive(KEY_LEAVES, lambda c: st.lists(c, max_size=3).map(tuple), max_leaves=5)
LEAVES = st.one_of(st.none(), st.booleans(), INTEGERS, st.floats(), TEXT, st.binary(max_size=40))
VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(KEY_STRATEGY, children, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=VALUES)
# shared memory only: the values drawn hold containers inside tuples, which the
# Redis backend refuses (tests/test_backends.py draws its own on both backends)
@pytest.mark.parametrize("root", ["shm"], indirect=True)
def test_hypothesis_roundtrip(root, value):
    root["k"] = value
    assert_same(plain(root["k"]), value)
    root["w"] = [value]
    assert_same(plain(root["w"][0]), value)


# ----------------------------------------------------------------- identity --

def test_assigning_a_view_shares_the_dict(root):
    root["a"] = {"n": 1}
    x = root["a"]
    root["b"] = x
    root["b"]["new"] = 2
    assert x["new"] == 2
    x["n"] = 5
    assert root["b"]["n"] == 5
    root["c"] = {"inner": x}
    root["c"]["inner"]["z"] = 3
    assert root["a"].to_python() == {"n": 5, "new": 2, "z": 3}


def test_assigning_a_view_shares_the_list(root):
    root["a"] = [1]
    x = root["a"]
    root["b"] = x
    root["b"].append(2)
    assert x == [1, 2]
    root["c"] = [x, x]
    root["c"][1].append(3)
    assert root["a"].to_python() == [1, 2, 3]
    assert root["c"].to_python() == [[1, 2, 3], [1, 2, 3]]


def test_shared_object_survives_removal_of_first_reference(root):
    root["a"] = {"n": 1}
    root["b"] = root["a"]
    del root["a"]
    assert root["b"].to_python() == {"n": 1}
    root["b"]["m"] = 2
    assert root["b"].to_python() == {"n": 1, "m": 2}


def test_object_reached_twice_in_one_assignment_is_stored_once(root):
    a = [1]
    root["z"] = [a, a]
    root["z"][0].append(2)
    assert root["z"][1] == [1, 2]
    r = root["z"].to_python()
    assert r == [[1, 2], [1, 2]]
    assert r[0] is r[1]


def test_dict_reached_twice_at_different_depths_is_stored_once(root):
    a = {"v": 0}
    root["z"] = {"x": a, "y": [a], "t": (a,)}
    root["z"]["y"][0]["v"] = 1
    assert root["z"]["x"]["v"] == 1
    assert root["z"]["t"][0]["v"] == 1
    r = root["z"].to_python()
    assert r["x"] is r["y"][0] is r["t"][0]


def test_separate_assignments_store_separate_copies(root):
    a = [1]
    root["p"] = a
    root["q"] = a
    root["p"].append(2)
    assert root["q"].to_python() == [1]
    assert root["p"].to_python() == [1, 2]


def test_list_containing_itself(root):
    a = [1]
    a.append(a)
    root["c"] = a
    v = root["c"]
    assert len(v) == 2
    assert v[0] == 1
    assert v[1][1][1][0] == 1
    assert repr(v) == "[1, [...]]"
    r = v.to_python()
    assert type(r) is list
    assert r[0] == 1
    assert r[1] is r
    v[1].append("x")
    assert v[2] == "x"


def test_dict_containing_itself(root):
    d = {"a": 1}
    d["me"] = d
    root["c"] = d
    v = root["c"]
    assert v["me"]["me"]["a"] == 1
    assert repr(v) == "{'a': 1, 'me': {...}}"
    r = v.to_python()
    assert type(r) is dict
    assert r["me"] is r
    assert list(r) == ["a", "me"]


def test_cycle_through_two_levels(root):
    d = {"l": []}
    d["l"].append(d)
    root["c"] = d
    r = root["c"].to_python()
    assert r["l"][0] is r
    a = []
    b = {"a": a}
    a.append(b)
    root["c2"] = a
    r = root["c2"].to_python()
    assert r[0]["a"] is r
    assert type(r[0]) is dict


def test_cycle_through_a_tuple(root):
    lst = [0]
    lst.append((lst, "t"))
    root["c"] = lst
    v = root["c"]
    assert type(v[1]) is tuple
    assert v[1][1] == "t"
    assert v[1][0][1][0][0] == 0
    r = v.to_python()
    assert type(r[1]) is tuple
    assert r[1][0] is r


def test_cycle_kept_in_root_to_python(root):
    a = [1]
    a.append(a)
    root["c"] = a
    r = root.to_python()
    assert r["c"][1] is r["c"]


# -------------------------------------------------------------- unsupported --

class Custom:
    pass


UNSUPPORTED = [
    (object(), "object"),
    (Custom(), "Custom"),
    ({1, 2}, "set"),
    (1j, "complex"),
    (lambda: 0, "function"),
]
UNSUPPORTED_IDS = [name for _, name in UNSUPPORTED]


def test_exception_classes():
    assert issubclass(dshared.UnsupportedTypeError, TypeError)
    assert issubclass(dshared.StaleReferenceError, ReferenceError)


@pytest.mark.parametrize("bad, type_name", UNSUPPORTED, ids=UNSUPPORTED_IDS)
def test_unsupported_value_raises_and_keeps_old_value(root, bad, type_name):
    root["k"] = "old"
    with pytest.raises(dshared.UnsupportedTypeError) as exc:
        root["k"] = bad
    assert isinstance(exc.value, TypeError)
    assert type_name in str(exc.value)
    assert root["k"] == "old"
    assert list(root) == ["k"]


@pytest.mark.parametrize("bad, type_name", UNSUPPORTED, ids=UNSUPPORTED_IDS)
def test_unsupported_value_nested_raises_typeerror(root, bad, type_name):
    root["k"] = {"keep": [1, (2,)]}
    old = root["k"]
    with pytest.raises(TypeError) as exc:
        root["k"] = [1, {"a": (2, bad)}]
    assert isinstance(exc.value, dshared.UnsupportedTypeError)
    assert type_name in str(exc.value)
    assert "[1]['a'][1]" in str(exc.value)
    assert_same(root["k"].to_python(), {"keep": [1, (2,)]})
    assert_same(old.to_python(), {"keep": [1, (2,)]})


def test_unsupported_message_names_type_and_path(root):
    root["k"] = {"old": True}
    with pytest.raises(dshared.UnsupportedTypeError) as exc:
        root["k"] = {"users": [0, 0, 0, {"tags": {1}}]}
    message = str(exc.value)
    assert "['users'][3]['tags']" in message
    assert "set" in message
    assert root["k"].to_python() == {"old": True}


@pytest.mark.parametrize("value, path", [
    ([1j], "[0]"),
    ({"a": [0, 1j]}, "['a'][1]"),
    ((0, (1, 1j)), "[1][1]"),
    ({5: [1j]}, "[5][0]"),
    ({b"k": {"x": 1j}}, "[b'k']['x']"),
    ([[], [[], [0, 0, 1j]]], "[1][1][2]"),
])
def test_unsupported_path_formats(root, value, path):
    with pytest.raises(dshared.UnsupportedTypeError) as exc:
        root["k"] = value
    assert path in str(exc.value)
    assert "complex" in str(exc.value)
    assert "k" not in root


def test_unsupported_value_under_new_key_stores_nothing(root):
    root["a"] = 1
    with pytest.raises(dshared.UnsupportedTypeError):
        root["new"] = [1, 2, object()]
    assert "new" not in root
    assert list(root) == ["a"]
    assert root.to_python() == {"a": 1}


def test_unsupported_value_through_nested_views(root):
    root["l"] = [1]
    root["d"] = {"a": 1}
    with pytest.raises(dshared.UnsupportedTypeError):
        root["l"].append({"x": {2}})
    with pytest.raises(dshared.UnsupportedTypeError):
        root["l"][0] = [object()]
    with pytest.raises(dshared.UnsupportedTypeError):
        root["l"].insert(0, 1j)
    with pytest.raises(dshared.UnsupportedTypeError):
        root["d"]["a"] = (1, Custom())
    with pytest.raises(dshared.UnsupportedTypeError):
        root["d"]["b"] = {1, 2}
    assert root["l"].to_python() == [1]
    assert root["d"].to_python() == {"a": 1}


# -------------------------------------------------------------------- stale --

STALE_OPS = {
    "getitem": lambda v: v[0],
    "setitem": lambda v: v.__setitem__(0, 1),
    "len": len,
    "contains": lambda v: 0 in v,
    "iter": list,
    "to_python": lambda v: v.to_python(),
}


@pytest.mark.parametrize("op", sorted(STALE_OPS))
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_view_of_deleted_object_is_stale(root, kind, op):
    root["a"] = {0: "x"} if kind == "dict" else ["x"]
    v = root["a"]
    del root["a"]
    with pytest.raises(dshared.StaleReferenceError) as exc:
        STALE_OPS[op](v)
    assert isinstance(exc.value, ReferenceError)
    assert "a" not in root


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_view_stays_stale_after_memory_reuse(root, kind):
    make = (lambda i: {"x": i}) if kind == "dict" else (lambda i: [i])
    index = "x" if kind == "dict" else 0
    root["a"] = make(1)
    v = root["a"]
    del root["a"]
    root["b"] = make(2)  # same shape: likely to land where the old object was
    for i in range(200):
        root["c%d" % i] = make(i)
    with pytest.raises(dshared.StaleReferenceError):
        v[index]
    with pytest.raises(dshared.StaleReferenceError):
        v[index] = 99
    assert root["b"].to_python() == make(2)
    assert all(root["c%d" % i].to_python() == make(i) for i in range(200))


def test_view_is_stale_after_overwrite(root):
    root["a"] = {"x": 1}
    v = root["a"]
    root["a"] = {"x": 2}
    with pytest.raises(dshared.StaleReferenceError):
        v["x"]
    assert root["a"]["x"] == 2


def test_view_is_stale_after_pop_and_clear(root):
    root["a"] = {"x": 1}
    root["b"] = [1]
    va = root["a"]
    vb = root["b"]
    assert root.pop("a") == {"x": 1}
    with pytest.raises(dshared.StaleReferenceError):
        va["x"]
    root.clear()
    with pytest.raises(dshared.StaleReferenceError):
        vb[0]
    assert len(root) == 0


def test_view_of_nested_object_is_stale_after_parent_deleted(root):
    root["a"] = {"inner": {"x": 1}, "l": [[1]]}
    inner = root["a"]["inner"]
    deep = root["a"]["l"][0]
    del root["a"]
    root["b"] = {"inner": {"x": 2}, "l": [[2]]}
    with pytest.raises(dshared.StaleReferenceError):
        inner["x"]
    with pytest.raises(dshared.StaleReferenceError):
        deep[0]
    assert root["b"].to_python() == {"inner": {"x": 2}, "l": [[2]]}


def test_view_of_removed_list_element_is_stale(root):
    root["l"] = [{"x": 1}, {"x": 2}]
    first = root["l"][0]
    del root["l"][0]
    with pytest.raises(dshared.StaleReferenceError):
        first["x"]
    assert root["l"].to_python() == [{"x": 2}]
