"""Memory management (issue 5, RELIABILITY.md 'exhaustion'): filling segments
to SegmentFullError with every kind of value, allocation failure injected at
every allocation point of every write, and leak checks (used bytes back to
the exact baseline; nothing unreachable after collect()).

Oracles: a plain-Python model kept in step with the segment, `check()` and
`stats()`. A failed operation must have had no effect: the model equals
`to_python()`, `check()` is ok and the used bytes and block count are those
of before the operation.
"""
import copy
import os
import random
import re
import sys

import pytest

import dshared
from dshared import SegmentFullError
from dshared import _heap

HEADER = 4096           # the heap starts after the segment header
SMALL = 64 << 10        # the minimum segment
MEDIUM = 1 << 20


@pytest.fixture(autouse=True)
def _no_armed_hook():
    """No test leaves a failing allocation armed for the next one."""
    _heap.test_hooks(fail_alloc=0)
    yield
    _heap.test_hooks(fail_alloc=0)


@pytest.fixture
def checked_segment(make_segment):
    """make_segment(size), and at the end of the test: collect(), then check()
    must be clean. No test sequence may leave unreachable blocks behind."""
    made = []

    def make(size):
        seg = make_segment(size)
        made.append(seg)
        return seg

    yield make
    for seg in made:
        if not seg.closed:
            seg.collect()
            report = seg.check()
            assert report.ok, report.problems


def used(seg):
    return seg.stats()["used"]


def state(seg):
    st = seg.stats()
    return st["used"], st["free"], st["blocks"]


def assert_clean(seg):
    report = seg.check()
    assert report.ok, report.problems


# ---------------------------------------------------------------------------------
# values of every kind


class Gen:
    """Deterministic values and keys of every supported kind."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.n = 0

    def key(self):
        self.n += 1
        n = self.n
        kind = n % 7
        if kind == 0:
            return "k%d" % n                               # inline str
        if kind == 1:
            return "a-long-key-that-needs-a-block-%d" % n  # str block
        if kind == 2:
            return n * 1000003                             # int
        if kind == 3:
            return ("t", n)                                # tuple key
        if kind == 4:
            return b"b%d" % n                              # inline bytes
        if kind == 5:
            return (1 << 70) + n                           # big int key
        return "clé-ü-%d" % n                              # non-ASCII str

    def value(self, size, depth=0):
        rng = self.rng
        kinds = ["sstr", "str", "sbytes", "bytes", "bigint", "float", "int", "atom", "tuple"]
        if depth < 2:
            kinds += ["dict", "list"]
        kind = rng.choice(kinds)
        size = max(1, size)
        if kind == "sstr":
            return rng.choice(["", "a", "short str", "ünï", "fourteen bytes"])[:14]
        if kind == "str":
            s = "s%d-" % self.n + "x" * size
            return s if rng.random() < 0.7 else s + "é€"
        if kind == "sbytes":
            return bytes(rng.randrange(256) for _ in range(rng.randrange(15)))
        if kind == "bytes":
            return b"B" * (size + 15)
        if kind == "bigint":
            v = (1 << (64 + 8 * min(size, 4096))) + rng.randrange(1 << 30)
            return -v if rng.random() < 0.3 else v
        if kind == "float":
            return rng.choice([0.5, -0.0, 1e300, -2.5e-300, float("inf"), 3.141592653589793])
        if kind == "int":
            return rng.choice([0, 1, -1, (1 << 63) - 1, -(1 << 63), rng.randrange(-10**9, 10**9)])
        if kind == "atom":
            return rng.choice([None, True, False])
        sub = max(1, size // 3)
        if kind == "tuple":
            return tuple(self.value(sub, 2) for _ in range(rng.randrange(1, 4)))
        if kind == "dict":
            return {self.key(): self.value(sub, depth + 1) for _ in range(rng.randrange(0, 4))}
        return [self.value(sub, depth + 1) for _ in range(rng.randrange(0, 4))]


# ---------------------------------------------------------------------------------
# 1. exhaustion


class Filler:
    """Fills a segment with random writes of every kind through every writing
    method, keeping `model` in step; every failed write is verified to have
    had no effect, and to leave room for a smaller one."""

    def __init__(self, seg, seed):
        self.seg = seg
        self.root = seg.col()
        self.gen = Gen(seed)
        self.rng = self.gen.rng
        self.model = {}
        self.failures = 0
        self.successes = 0
        self.ops = [self.op_set, self.op_overwrite, self.op_update_small, self.op_update_big,
                    self.op_setdefault, self.op_nested_set, self.op_append, self.op_extend,
                    self.op_insert, self.op_slice_set, self.op_list_item_set]
        self.messages = []

    def setup(self):
        self.root["probe"] = 0
        self.root["d"] = {}
        self.root["l"] = []
        self.model.update(probe=0, d={}, l=[])

    # every op returns (write the segment, write the model)
    def op_set(self, size):
        k, v = self.gen.key(), self.gen.value(size)
        return (lambda: self.root.__setitem__(k, v)), (lambda: self.model.__setitem__(k, copy.deepcopy(v)))

    def _existing_key(self):
        keys = [k for k in self.model if k not in ("probe", "d", "l")]
        return self.rng.choice(keys) if keys else None

    def op_overwrite(self, size):
        k = self._existing_key()
        if k is None:
            return self.op_set(size)
        v = self.gen.value(size * 2)
        return (lambda: self.root.__setitem__(k, v)), (lambda: self.model.__setitem__(k, copy.deepcopy(v)))

    def op_update_small(self, size):
        pairs = {self.gen.key(): self.gen.value(size // 2) for _ in range(self.rng.randrange(1, 5))}
        d = self.root["d"]
        return (lambda: d.update(pairs)), (lambda: self.model["d"].update(copy.deepcopy(pairs)))

    def op_update_big(self, size):
        pairs = [(self.gen.key(), self.gen.value(size // 6)) for _ in range(self.rng.randrange(5, 9))]
        k = self._existing_key()
        if k is not None:
            pairs.append((k, self.gen.value(size // 6)))     # an overwrite in the same update
        return (lambda: self.root.update(pairs)), (lambda: self.model.update(copy.deepcopy(pairs)))

    def op_setdefault(self, size):
        d = self.root["d"]
        if self.model["d"] and self.rng.random() < 0.2:
            k = self.rng.choice(list(self.model["d"]))    # present: nothing stored
        else:
            k = self.gen.key()
        v = self.gen.value(size)

        def shared():
            r = d.setdefault(k, v)
            if isinstance(r, (dshared.SharedDict, dshared.SharedList)):
                r = r.to_python()
            assert r == self.model["d"].get(k, v)
        return shared, (lambda: self.model["d"].setdefault(k, copy.deepcopy(v)))

    def op_nested_set(self, size):
        k = self.gen.key()
        v = {"a": [self.gen.value(size // 3), {"b": self.gen.value(size // 3)}],
             "t": (self.gen.value(size // 3), [k])}
        d = self.root["d"]
        return (lambda: d.__setitem__(k, v)), (lambda: self.model["d"].__setitem__(k, copy.deepcopy(v)))

    def op_append(self, size):
        v = self.gen.value(size)
        lst = self.root["l"]
        return (lambda: lst.append(v)), (lambda: self.model["l"].append(copy.deepcopy(v)))

    def op_extend(self, size):
        vs = [self.gen.value(size // 3) for _ in range(self.rng.randrange(1, 6))]
        lst = self.root["l"]
        return (lambda: lst.extend(vs)), (lambda: self.model["l"].extend(copy.deepcopy(vs)))

    def op_insert(self, size):
        v = self.gen.value(size)
        i = self.rng.randrange(-2, len(self.model["l"]) + 2)
        lst = self.root["l"]
        return (lambda: lst.insert(i, v)), (lambda: self.model["l"].insert(i, copy.deepcopy(v)))

    def op_slice_set(self, size):
        n = len(self.model["l"])
        a = self.rng.randrange(0, n + 1)
        b = min(n, a + self.rng.randrange(0, 3))
        vs = [self.gen.value(size // 3) for _ in range(self.rng.randrange(0, 4))]
        lst = self.root["l"]

        def local():
            self.model["l"][a:b] = copy.deepcopy(vs)
        return (lambda: lst.__setitem__(slice(a, b), vs)), local

    def op_list_item_set(self, size):
        if not self.model["l"]:
            return self.op_append(size)
        i = self.rng.randrange(len(self.model["l"]))
        v = self.gen.value(size)
        lst = self.root["l"]

        def local():
            self.model["l"][i] = copy.deepcopy(v)
        return (lambda: lst.__setitem__(i, v)), local

    # -- the oracle -----------------------------------------------------------

    def verify(self):
        assert self.root.to_python() == self.model
        assert_clean(self.seg)

    def failed(self, before, err):
        """A write raised SegmentFullError: it must have changed nothing, and a
        smaller write must still work."""
        self.failures += 1
        self.messages.append(str(err))
        assert isinstance(err, MemoryError)
        assert re.search(r"full: \d+ of \d+ bytes in use \(\d+%\), \d+ bytes asked for", str(err)), str(err)
        assert state(self.seg) == before
        self.verify()
        # a write that needs no allocation always works
        self.root["probe"] = self.failures
        self.model["probe"] = self.failures
        assert state(self.seg) == before
        # a small value fits whenever the untouched space above the top has room
        st = self.seg.stats()
        if st["capacity"] - st["top"] >= 256:
            self.root["probe"] = b"p" * 64
            assert self.root["probe"] == b"p" * 64
            # 16 header + 8 length + 64 bytes: 96, or a whole free block of up to 16 more
            assert before[0] + 96 <= used(self.seg) <= before[0] + 112
            self.root["probe"] = self.failures
            assert state(self.seg) == before

    def fill(self, size):
        """Random writes, halving the value size at each failure, until 25
        writes in a row failed or 300 were tried at the smallest size."""
        in_a_row = 0
        at_min = 0
        while in_a_row < 25 and at_min < 300:
            if size == 1:
                at_min += 1
            shared, local = self.rng.choice(self.ops)(size)
            before = state(self.seg)
            try:
                shared()
            except SegmentFullError as e:
                self.failed(before, e)
                size = max(1, size // 2)
                in_a_row += 1
            else:
                local()
                self.successes += 1
                in_a_row = 0
        self.verify()
        return used(self.seg) / (self.seg.stats()["capacity"] - HEADER)

    def delete_half(self):
        keys = [k for k in self.model if k not in ("probe", "d", "l")]
        for k in keys[::2]:
            del self.root[k]
            del self.model[k]
        d = self.root["d"]
        for k in list(self.model["d"])[1::2]:
            assert d.pop(k) == self.model["d"].pop(k)
        lst = self.root["l"]
        del lst[::2]
        del self.model["l"][::2]
        self.verify()
        assert self.seg.collect() == 0      # refcounts freed everything at once


# half the seeds in the default run, the other half under -m slow
@pytest.mark.parametrize("size,seed", [pytest.param(SMALL, s, id="64KiB-%d" % s,
                                                    marks=[pytest.mark.slow] if s > 4 else [])
                                       for s in range(1, 9)]
                         + [pytest.param(MEDIUM, 101, id="1MiB-101"),
                            pytest.param(MEDIUM, 102, id="1MiB-102", marks=pytest.mark.slow)])
def test_fill_to_full_delete_half_refill(checked_segment, size, seed):
    seg = checked_segment(size)
    f = Filler(seg, seed)
    f.setup()
    first = f.fill(size // 16)
    assert first > 0.70, "filled to only %.1f%% of the heap" % (100 * first)
    assert f.failures >= 10 and f.successes >= 50
    for _ in range(2):
        f.delete_half()
        again = f.fill(size // 64)
        assert again > 0.60, "refilled to only %.1f%% of the heap" % (100 * again)
    # free everything: back to the empty segment's used bytes, then one big value
    root = f.root
    root.clear()
    assert seg.collect() == 0
    assert used(seg) == 64          # the root dict and the names dict
    assert_clean(seg)
    usable = size - HEADER
    big = b"\xab" * (usable * 9 // 10)
    root["big"] = big
    assert root["big"] == big
    assert_clean(seg)
    del root["big"]
    assert used(seg) == 64


def test_freed_neighbours_coalesce_below_a_live_block(checked_segment):
    """43 values freed in random order, below a live block (so nothing goes
    back to the top): they merge into one free block that takes a value of
    90% of the heap."""
    seg = checked_segment(SMALL)
    root = seg.col()
    n = 43
    init = {i: None for i in range(n)}
    init["keep"] = None
    root.update(init)                                # the table first, at the bottom, final size
    for i in range(n):
        root[i] = bytes([i]) * 1288                  # 16 + 8 + 1288 = 1312 bytes each
    st = seg.stats()
    keep = b"k" * max(100, st["capacity"] - st["top"] - 512)
    root["keep"] = keep                              # the top block stays live, filling the rest
    st = seg.stats()
    assert st["capacity"] - st["top"] < 1024          # no room above the top
    order = list(range(n))
    random.Random(5).shuffle(order)
    for i in order:
        root[i] = None
    assert_clean(seg)                                 # 'free blocks not merged' would show here
    big = b"\xcd" * ((SMALL - HEADER) * 9 // 10)
    top = seg.stats()["top"]
    root[0] = big                                     # an existing key: the table need not grow
    assert seg.stats()["top"] == top                  # taken from the free lists
    assert root[0] == big
    assert root["keep"] == keep
    assert_clean(seg)


def test_creation_that_cannot_allocate_its_root_leaves_nothing(shm_name):
    _heap.test_hooks(fail_alloc=1)
    with pytest.raises(SegmentFullError):
        dshared.Segment(shm_name, SMALL, create=True)
    _heap.test_hooks(fail_alloc=2)
    with pytest.raises(SegmentFullError):
        dshared.Segment(shm_name, SMALL, create=True)
    _heap.test_hooks(fail_alloc=0)
    # the shm_name fixture fails the test if anything is left in /dev/shm
    with pytest.raises(FileNotFoundError):
        dshared.Segment(shm_name, create=False)


@pytest.mark.parametrize("size", [SMALL, MEDIUM], ids=["64KiB", "1MiB"])
@pytest.mark.parametrize("method", ["set", "update", "setdefault", "append", "extend", "insert", "slice"])
def test_one_method_until_full(checked_segment, size, method):
    """Each writing method alone fills the segment; the first failure changes
    nothing, and afterwards a write needing no allocation works."""
    seg = checked_segment(size)
    root = seg.col()
    root["l"] = []
    lst = root["l"]
    model = {"l": []}
    gen = Gen(sum(map(ord, method)))
    i = 0
    while True:
        i += 1
        v = gen.value(200)
        before = state(seg)
        try:
            if method == "set":
                k = gen.key()
                root[k] = v
                model[k] = v
            elif method == "update":
                pairs = {gen.key(): gen.value(50) for _ in range(1 + i % 7)}
                root.update(pairs)
                model.update(pairs)
            elif method == "setdefault":
                k = gen.key()
                root.setdefault(k, v)
                model.setdefault(k, v)
            elif method == "append":
                lst.append(v)
                model["l"].append(v)
            elif method == "extend":
                vs = [gen.value(50) for _ in range(1 + i % 5)]
                lst.extend(vs)
                model["l"].extend(vs)
            elif method == "insert":
                lst.insert(i // 2, v)
                model["l"].insert(i // 2, v)
            else:
                a = i % 5
                lst[a:a + 1] = [v, i]
                model["l"][a:a + 1] = [v, i]
        except SegmentFullError:
            break
    assert i > 5
    assert state(seg) == before
    assert root.to_python() == model
    assert_clean(seg)
    root["l"] = 0                   # no allocation: must work
    model["l"] = 0
    assert root.to_python() == model
    root.clear()
    assert used(seg) == 64


def test_failed_write_message_says_how_full(make_segment):
    seg = make_segment(SMALL)
    root = seg.col()
    root["x"] = "y" * 30000
    with pytest.raises(SegmentFullError) as ei:
        root["z"] = "w" * 40000
    msg = str(ei.value)
    assert "full" in msg and "collect" in msg and "size" in msg
    nums = [int(x) for x in re.findall(r"\d+", msg.split(":", 1)[1])]
    assert used(seg) in nums and SMALL - HEADER in nums


def test_overwrite_that_does_not_fit_keeps_the_old_value(checked_segment):
    seg = checked_segment(SMALL)
    root = seg.col()
    root["k"] = {"old": ["v" * 20000, (1, 2)]}
    root["other"] = b"o" * 20000
    before = state(seg)
    with pytest.raises(SegmentFullError):
        root["k"] = ["n" * 30000]
    assert state(seg) == before
    assert root["k"].to_python() == {"old": ["v" * 20000, (1, 2)]}
    assert_clean(seg)
    root["k"] = "n" * 15000
    assert root["k"] == "n" * 15000


def fill_above_top(seg, root, key, leave):
    """Store one bytes value that leaves about `leave` bytes of the heap free
    (the segment must have no free blocks below its top)."""
    st = seg.stats()
    n = st["capacity"] - st["top"] - leave - 24
    root[key] = b"f" * n
    st = seg.stats()
    assert leave - 16 <= st["capacity"] - st["top"] <= leave + 16, st
    return st


def test_message_counts_only_live_bytes(make_segment):
    """The 'N of M bytes in use' of the message is the segment's state, which
    the failed write did not change."""
    seg = make_segment(SMALL)
    root = seg.col()
    root["l"] = [b"x" * 20] * 50
    fill_above_top(seg, root, "fill", 300)
    before = used(seg)
    with pytest.raises(SegmentFullError) as ei:
        # the str block (112 bytes) fits; the grown items block (about 1 KB) does not
        root["l"].append("a str of more than fourteen bytes, planned before the items block")
    assert used(seg) == before
    m = re.search(r"(\d+) of (\d+) bytes in use", str(ei.value))
    assert int(m.group(1)) == before, str(ei.value)


@pytest.mark.parametrize("op", [
    "pop", "del_last",
    pytest.param("del_first", marks=pytest.mark.xfail(
        strict=True, raises=SegmentFullError,
        reason="limitation: deleting before the end builds a new items block (crash-safe); in a "
               "full segment delete from the end, clear() the list or delete the whole list")),
    pytest.param("remove", marks=pytest.mark.xfail(
        strict=True, raises=SegmentFullError, reason="limitation: as del_first")),
    pytest.param("del_slice", marks=pytest.mark.xfail(
        strict=True, raises=SegmentFullError, reason="limitation: as del_first")),
])
def test_deleting_from_a_list_in_a_full_segment(make_segment, op):
    """The way out of a full segment is to delete data: removing list items
    must not need more memory than the segment has left."""
    seg = make_segment(SMALL)
    root = seg.col()
    model = ["item %d of the list" % i for i in range(600)]
    root["l"] = model
    lst = root["l"]
    fill_above_top(seg, root, "fill", 1000)     # 1000 bytes left; the items block has 9.6 KB
    before = state(seg)
    try:
        delete_from(lst, model, op)
    except SegmentFullError:
        # at least the failed delete changed nothing
        assert state(seg) == before
        assert lst.to_python() == model
        assert_clean(seg)
        raise
    assert lst.to_python() == model
    assert used(seg) < before[0]
    assert_clean(seg)


def delete_from(lst, model, op):
    if op == "pop":
        assert lst.pop() == model.pop()
    elif op == "del_last":
        del lst[-1]
        del model[-1]
    elif op == "del_first":
        del lst[0]
        del model[0]
    elif op == "remove":
        lst.remove("item 5 of the list")
        model.remove("item 5 of the list")
    else:
        del lst[10:20]
        del model[10:20]


# ---------------------------------------------------------------------------------
# 2. allocation failure injected at every allocation point


def base_state():
    return {
        "a": 1,
        "s": "short",
        "long": "L" * 100,
        "big": 2 ** 100,
        "t": (1, "x" * 30, (2.5, b"y" * 20)),
        "n": {"x": [1, 2, "three" * 10], "y": {"z": None}},
        "n5": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4},           # a full table: the 6th key grows it
        "l": [1, "two", "three" * 10, (4, "five" * 10), {"six": 6}, [7]],
        "ls": [5, 3, 9, 1, 7, 2],
        ("tk", 1): "tuple key",
        "a key longer than fourteen bytes": b"bytes value longer than 14",
    }


def _setup_extra(root, model):
    # a list with spare room: an inline append needs no allocation
    root["l2"] = [1]
    root["l2"].append(2)
    model["l2"] = [1, 2]


def _cycle():
    c = ["in a cycle " * 3]
    c.append(c)
    return c


def _view_alias(root):
    root["alias"] = root["n"]


def _model_alias(m):
    m["alias"] = m["n"]


def _sorted_desc(root):
    root["ls"].sort(reverse=True)


# name: (write the segment, write the model, does it allocate?)
# each returns the operation's result, compared between the two
OPS = {
    "set_new_key": (lambda r: r.__setitem__("new", "v" * 50), lambda m: m.__setitem__("new", "v" * 50), True),
    # the root table has spare room: an inline key and value need no block
    "set_new_inline": (lambda r: r.__setitem__("new", 5), lambda m: m.__setitem__("new", 5), False),
    "set_new_long_key": (lambda r: r.__setitem__("k" * 40, [1]), lambda m: m.__setitem__("k" * 40, [1]), True),
    "set_new_tuple_key": (lambda r: r.__setitem__(("k", 2, b"b"), 1),
                          lambda m: m.__setitem__(("k", 2, b"b"), 1), True),
    "set_new_bigint_key": (lambda r: r.__setitem__(1 << 80, "v"), lambda m: m.__setitem__(1 << 80, "v"), True),
    "overwrite": (lambda r: r.__setitem__("long", "M" * 200), lambda m: m.__setitem__("long", "M" * 200), True),
    "overwrite_inline": (lambda r: r.__setitem__("a", 2), lambda m: m.__setitem__("a", 2), False),
    "overwrite_with_key_block": (lambda r: r.__setitem__("a key longer than fourteen bytes", 3),
                                 lambda m: m.__setitem__("a key longer than fourteen bytes", 3), False),
    "dict_growth": (lambda r: r["n5"].__setitem__(5, 5), lambda m: m["n5"].__setitem__(5, 5), True),
    "nested_create": (lambda r: r.__setitem__("nest", {"a": [1, {"b": "x" * 20}], "t": ("y" * 20, [2])}),
                      lambda m: m.__setitem__("nest", {"a": [1, {"b": "x" * 20}], "t": ("y" * 20, [2])}), True),
    "nested_into_view": (lambda r: r["n"]["y"].__setitem__("w", {"deep": ["q" * 30]}),
                         lambda m: m["n"]["y"].__setitem__("w", {"deep": ["q" * 30]}), True),
    "update_small": (lambda r: r.update({"u1": "x" * 30, "a": "y" * 30, "u2": (1, 2)}),
                     lambda m: m.update({"u1": "x" * 30, "a": "y" * 30, "u2": (1, 2)}), True),
    "update_big": (lambda r: r.update([(("k", i), "v" * 20) for i in range(6)] + [("long", [3])]),
                   lambda m: m.update([(("k", i), "v" * 20) for i in range(6)] + [("long", [3])]), True),
    "update_big_nested": (lambda r: r["n"].update({"u%d" % i: {"i": [i] * i} for i in range(8)}),
                          lambda m: m["n"].update({"u%d" % i: {"i": [i] * i} for i in range(8)}), True),
    "ior": (lambda r: r["n5"].__ior__({9: "nine" * 9}) and None,
            lambda m: m["n5"].__ior__({9: "nine" * 9}) and None, True),
    "setdefault_new": (lambda r: r.setdefault("sd", ["x" * 20]).to_python(),
                       lambda m: m.setdefault("sd", ["x" * 20]), True),
    "setdefault_existing": (lambda r: r.setdefault("long", "zz"), lambda m: m.setdefault("long", "zz"), False),
    "incr": (lambda r: r.incr("a", 5), lambda m: m.__setitem__("a", m["a"] + 5) or m["a"], False),
    "dict_pop": (lambda r: r.pop("long"), lambda m: m.pop("long"), False),
    "dict_pop_nested": (lambda r: r.pop("n"), lambda m: m.pop("n"), False),
    "popitem": (lambda r: r.popitem(), lambda m: m.popitem(), False),
    "dict_del": (lambda r: r.__delitem__("t"), lambda m: m.__delitem__("t"), False),
    "dict_del_last_key": (lambda r: r["n"]["y"].__delitem__("z"), lambda m: m["n"]["y"].__delitem__("z"), False),
    "dict_clear": (lambda r: r["n"].clear(), lambda m: m["n"].clear(), False),
    "alias_view": (_view_alias, _model_alias, False),
    "cycle": (lambda r: r.__setitem__("cyc", _cycle()), None, True),
    "list_append": (lambda r: r["l"].append("app" * 10), lambda m: m["l"].append("app" * 10), True),
    "list_append_spare_inline": (lambda r: r["l2"].append(3), lambda m: m["l2"].append(3), False),
    "list_append_spare_block": (lambda r: r["l2"].append("s" * 20), lambda m: m["l2"].append("s" * 20), True),
    "list_extend": (lambda r: r["l"].extend(["a" * 20, 2, (3, "b" * 20)]),
                    lambda m: m["l"].extend(["a" * 20, 2, (3, "b" * 20)]), True),
    "list_iadd": (lambda r: r["l"].__iadd__([{"x": 1}]) and None, lambda m: m["l"].__iadd__([{"x": 1}]) and None,
                  True),
    "list_imul": (lambda r: r["ls"].__imul__(2) and None, lambda m: m["ls"].__imul__(2) and None, True),
    "list_insert": (lambda r: r["l"].insert(2, {"i": "x" * 20}), lambda m: m["l"].insert(2, {"i": "x" * 20}), True),
    "list_insert_front": (lambda r: r["l"].insert(-100, 0), lambda m: m["l"].insert(-100, 0), True),
    "list_set_item": (lambda r: r["l"].__setitem__(0, "z" * 30), lambda m: m["l"].__setitem__(0, "z" * 30), True),
    "list_del_item": (lambda r: r["l"].__delitem__(1), lambda m: m["l"].__delitem__(1), True),
    "list_slice_set": (lambda r: r["l"].__setitem__(slice(1, 3), ["p" * 20, "q", "r" * 20]),
                       lambda m: m["l"].__setitem__(slice(1, 3), ["p" * 20, "q", "r" * 20]), True),
    "list_slice_set_same_size": (lambda r: r["l"].__setitem__(slice(0, 2), ["a" * 20, "b"]),
                                 lambda m: m["l"].__setitem__(slice(0, 2), ["a" * 20, "b"]), True),
    "list_slice_del": (lambda r: r["l"].__delitem__(slice(1, 4)), lambda m: m["l"].__delitem__(slice(1, 4)), True),
    "list_ext_slice_set": (lambda r: r["l"].__setitem__(slice(None, None, 2), ["e" * 20, 0, ("f" * 20,)]),
                           lambda m: m["l"].__setitem__(slice(None, None, 2), ["e" * 20, 0, ("f" * 20,)]), True),
    "list_ext_slice_del": (lambda r: r["l"].__delitem__(slice(None, None, -2)),
                           lambda m: m["l"].__delitem__(slice(None, None, -2)), True),
    "list_sort": (lambda r: r["ls"].sort(), lambda m: m["ls"].sort(), True),
    "list_sort_key_reverse": (_sorted_desc, lambda m: m["ls"].sort(reverse=True), True),
    "list_reverse": (lambda r: r["l"].reverse(), lambda m: m["l"].reverse(), True),
    "list_remove": (lambda r: r["l"].remove("two"), lambda m: m["l"].remove("two"), True),
    "list_pop_last": (lambda r: r["l"].pop(), lambda m: m["l"].pop(), False),
    "list_pop_first": (lambda r: r["l"].pop(0), lambda m: m["l"].pop(0), True),
    "list_clear": (lambda r: r["l"].clear(), lambda m: m["l"].clear(), False),
    "collect": (lambda r: r.segment.collect(), lambda m: 0, False),
    "named_collection": (lambda r: len(r.segment.col("named")), lambda m: 0, True),
    # views stored again: references to existing objects, rolled back on failure
    "restore_view_in_place": (lambda r: r.__setitem__("n", r["n"]), lambda m: None, False),
    "list_extend_views": (lambda r: r["l"].extend([r["n"], r["n"]["x"], ("t" * 20, r["n"]["y"])]),
                          lambda m: m["l"].extend([m["n"], m["n"]["x"], ("t" * 20, m["n"]["y"])]), True),
    "list_extend_self": (lambda r: r["l"].extend(r["l"]), lambda m: m["l"].extend(m["l"]), True),
    "list_slice_set_self": (lambda r: r["l"].__setitem__(slice(None), r["l"]),
                            lambda m: m["l"].__setitem__(slice(None), m["l"]), True),
    "update_from_shared_dict": (lambda r: r.update(r["n"]), lambda m: m.update(m["n"]), False),
    "update_duplicate_keys_small": (lambda r: r.update([("a long key of a block %d" % (i % 2), [i]) for i in range(4)]),
                                    lambda m: m.update([("a long key of a block %d" % (i % 2), [i]) for i in range(4)]),
                                    True),
    "update_duplicate_keys_big": (lambda r: r.update([("a long key of a block %d" % (i % 3), [i]) for i in range(9)]),
                                  lambda m: m.update([("a long key of a block %d" % (i % 3), [i]) for i in range(9)]),
                                  True),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_failure_injected_at_every_allocation(checked_segment, name):
    shared_op, model_op, allocates = OPS[name]
    seg = checked_segment(MEDIUM)
    root = seg.col()
    model = base_state()
    root.update(copy.deepcopy(model))
    _setup_extra(root, model)
    assert root.to_python() == model
    before = state(seg)
    failures = 0
    for n in range(1, 200):
        _heap.test_hooks(fail_alloc=n)
        try:
            result = shared_op(root)
        except SegmentFullError:
            failures += 1
            _heap.test_hooks(fail_alloc=0)
            assert state(seg) == before, "allocation %d failed" % n
            assert root.to_python() == model, "allocation %d failed" % n
            assert_clean(seg)
            continue
        finally:
            _heap.test_hooks(fail_alloc=0)
        break
    else:
        pytest.fail("the operation never completed")
    # it allocated n - 1 times; each of those failures was seen and was clean
    assert failures == n - 1
    if allocates:
        assert failures >= 1, "no allocation failure was injected"
    else:
        assert failures == 0, "expected no allocation, saw %d" % failures
    if model_op is None:        # cycle: compare the shape
        out = root["cyc"].to_python()
        assert out[1] is out and out[0] == "in a cycle " * 3
        del root["cyc"]
        assert seg.collect() > 0
        assert state(seg) == before
    else:
        if isinstance(result, (dshared.SharedDict, dshared.SharedList)):
            result = result.to_python()
        assert result == model_op(model)
        assert root.to_python() == model
    assert_clean(seg)
    assert seg.collect() == 0       # nothing became garbage that refcounts missed
    print("%s: %d allocations" % (name, failures))


@pytest.mark.parametrize("how", ["set", "update", "update_big", "setdefault", "append", "extend", "slice"])
def test_injected_failure_collects_garbage_and_retries(checked_segment, how):
    """A write that fails for lack of room runs collect() and tries again: with
    an unreachable cycle to free, the write succeeds once, completely."""
    seg = checked_segment(MEDIUM)
    root = seg.col()
    root["l"] = ["x" * 20]
    root["keep"] = 1
    baseline = used(seg)
    cyc = _cycle()
    root["cyc"] = cyc
    del root["cyc"]                 # an unreachable cycle: only collect() frees it
    garbage = used(seg) - baseline
    assert garbage > 0
    collections = seg.stats()["collections"]
    _heap.test_hooks(fail_alloc=1)
    v = {"new": ["y" * 40]}
    model = {"l": ["x" * 20], "keep": 1}
    if how == "set":
        root["k"] = v
        model["k"] = v
    elif how == "update":
        root.update(k=v, keep=2)
        model.update(k=v, keep=2)
    elif how == "update_big":
        pairs = {("p", i): v for i in range(6)}
        root.update(pairs)
        model.update(pairs)
    elif how == "setdefault":
        assert root.setdefault("k", v).to_python() == v
        model["k"] = v
    elif how == "append":
        root["l"].append(v)
        model["l"].append(v)
    elif how == "extend":
        root["l"].extend([v, 1])
        model["l"].extend([v, 1])
    else:
        root["l"][0:1] = [v, v]
        model["l"][0:1] = [v, v]
    assert seg.stats()["collections"] == collections + 1
    assert root.to_python() == model
    assert_clean(seg)
    assert seg.collect() == 0
    # the cycle is gone: with everything deleted, only the two root dicts are left
    root.clear()
    assert used(seg) == 64


@pytest.mark.parametrize("key", ["a key longer than fourteen bytes", ("tuple", "key"), 1 << 80],
                         ids=["str", "tuple", "bigint"])
def test_overwrite_existing_block_key_in_full_segment(make_segment, key):
    seg = make_segment(SMALL)
    root = seg.col()
    root[key] = "old value"
    fill_above_top(seg, root, "fill", 32)
    before = state(seg)
    try:
        root[key] = 2                   # an inline value: nothing to allocate
    except SegmentFullError:
        assert state(seg) == before
        assert root[key] == "old value"
        assert_clean(seg)
        raise
    assert root[key] == 2


# ---------------------------------------------------------------------------------
# 3. leaks: used bytes back to the exact baseline


def _aliased():
    shared = {"x": "y" * 100, "t": (b"z" * 30,)}
    return [shared, shared, (shared, [shared])]


VALUES = {
    "atoms": [None, True, False],
    "ints": [0, -1, (1 << 63) - 1, -(1 << 63)],
    "floats": [0.5, -0.0, float("inf"), float("nan"), 1e-310],
    "inline_str": ["", "a", "fourteen bytes", "ünï", "ééééééé"],       # up to 14 bytes of UTF-8
    "long_str": ["fifteen bytes!!", "éééééééé", "y" * 10000, "\U0001f600" * 50],
    "inline_bytes": [b"", b"\x00", b"x" * 14],
    "long_bytes": [b"x" * 15, b"\x00" * 5000],
    "big_ints": [1 << 63, -(1 << 63) - 1, 1 << 1000, -(1 << 5000)],
    "tuples": [(), (1,), ("x" * 20, (b"y" * 20, 1 << 70)), ((),), tuple(range(100))],
    "nested_dicts": [{}, {"a": {"b": {"c": ["d" * 20]}}}, {i: str(i) * 20 for i in range(20)}],
    "nested_lists": [[], [[[]]], [["x" * 20] * 3, [1, 2, (3, "q" * 30)]], list(range(50))],
    "aliased": [_aliased()],
}

KEYS = ["k", "a key longer than fourteen bytes", 7, 1 << 90, ("t", 1), b"bk", b"bytes key over 14", 2.5, None]


def _keys(n):
    out = []
    for i in range(n):
        k = KEYS[i % len(KEYS)]
        if isinstance(k, (str, bytes)):
            k = k + (b"%d" if isinstance(k, bytes) else "%d") % i
        elif isinstance(k, tuple):
            k = k + (i,)
        elif k is None:
            k = -i - 1
        else:
            k = k + i * 1000
        out.append(k)
    return out


def _values(kind, n):
    vals = VALUES[kind]
    return [vals[i % len(vals)] for i in range(n)]


def assert_back_to(seg, baseline):
    assert seg.collect() == 0, "garbage left that refcounting should have freed"
    assert state(seg) == baseline
    assert_clean(seg)


@pytest.mark.parametrize("kind", sorted(VALUES))
@pytest.mark.parametrize("where", ["root", "nested_dict", "list"])
def test_insert_all_delete_all(checked_segment, kind, where):
    seg = checked_segment(4 << 20)
    root = seg.col()
    if where == "nested_dict":
        root["c"] = {}
    elif where == "list":
        root["c"] = []
    baseline = state(seg)
    n = 120
    keys, values = _keys(n), _values(kind, n)
    if where == "list":
        lst = root["c"]
        for rnd in range(4):
            for v in values[:60]:
                lst.append(v)
            lst.extend(values[60:90])
            lst[5:5] = values[90:100]
            lst.insert(3, values[100])
            lst[0] = values[101]
            lst[1:3] = values[102:104]
            assert len(lst) == 101
            if rnd == 0:
                while len(lst):
                    lst.pop()
            elif rnd == 1:
                while len(lst) > 1:
                    del lst[len(lst) // 2]
                lst.pop(0)
            elif rnd == 2:
                del lst[::3]
                del lst[10:]
                lst.remove(lst[0])
                lst.clear()
            else:
                lst[:] = []
            assert state(seg) == baseline
    else:
        d = root if where == "root" else root["c"]
        for rnd in range(4):
            for k, v in zip(keys[:100], values[:100]):
                d[k] = v
            d.update(zip(keys[100:110], values[100:110]))     # more than 4 pairs
            d.update({keys[110]: values[110]})
            for k, v in zip(keys[111:], values[111:]):
                d.setdefault(k, v)
            assert len(d) == n
            if rnd == 0:
                for k in keys:
                    del d[k]
            elif rnd == 1:
                for k in keys:
                    d.pop(k)
            elif rnd == 2:
                while len(d):
                    d.popitem()
            else:
                d.clear()
            assert state(seg) == baseline
    assert_back_to(seg, baseline)


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_overwrite_chain_frees_each_old_value(checked_segment, kind):
    seg = checked_segment(4 << 20)
    root = seg.col()
    root["x"] = 0
    root["l"] = [0, 0]
    root["d"] = {"k": 0}
    baseline = state(seg)
    for v in _values(kind, 60) + [0]:
        root["x"] = v
        root["l"][1] = v
        root["d"]["k"] = v
        root["d"].update(k=v)
    assert state(seg) == baseline
    assert_back_to(seg, baseline)


def test_used_counts_every_block_exactly(checked_segment):
    """used = the sum of the block sizes: header 16 B + payload, 16-aligned."""
    seg = checked_segment(MEDIUM)
    root = seg.col()
    root["k"] = 1                   # the root table: 32 + 3 * 8 + 32 * 5 = 216 -> 240 with header
    base = used(seg)
    assert base == 64 + 240
    root["s"] = "x" * 100           # 16 + 16 + 100 = 132 -> 144
    assert used(seg) == base + 144
    root["s"] = b"x" * 100          # 16 + 8 + 100 = 124 -> 128
    assert used(seg) == base + 128
    root["s"] = "short"             # inline: no block
    assert used(seg) == base


CYCLES = {
    "self_list": lambda: (lambda l: (l.append(l), l)[1])(["x" * 30]),
    "self_dict": lambda: (lambda d: (d.__setitem__("me", d), d)[1])({"v": "x" * 30}),
    "list_dict_list": lambda: (lambda a, b: (a.append(b), b.__setitem__("a", a), a)[2])([1], {"b": "y" * 20}),
    "through_tuple": lambda: (lambda l: (l.append((l, "t" * 20)), l)[1])([]),
    "ring_of_100": lambda: _ring(100),
    "cycle_with_alias": lambda: (lambda l: (l.append(l), [l, l, {"again": l}])[1])(["z" * 40]),
}


def _ring(n):
    nodes = [{"i": i, "s": "n" * 20} for i in range(n)]
    for i, d in enumerate(nodes):
        d["next"] = nodes[(i + 1) % n]
    return nodes[0]


@pytest.mark.parametrize("shape", sorted(CYCLES))
def test_cycles_freed_by_collect(checked_segment, shape):
    seg = checked_segment(MEDIUM)
    root = seg.col()
    root["keep"] = {"c": None}
    baseline = state(seg)
    for rnd in range(3):
        if rnd == 0:
            root["cyc"] = CYCLES[shape]()
            del root["cyc"]
        elif rnd == 1:
            root["keep"]["c"] = CYCLES[shape]()
            root["keep"]["c"] = None        # overwritten
        else:
            root["keep"]["c"] = [CYCLES[shape]()]
            root["keep"]["c"].pop()         # removed from a list
            root["keep"]["c"] = None
        garbage = used(seg) - baseline[0]
        assert garbage > 0
        report = seg.check()
        # an uncollected cycle is garbage, not a problem: check() reports its bytes
        assert report.ok, report.problems
        assert report.garbage == garbage, report
        assert seg.collect() == garbage
        assert seg.check().garbage == 0
        assert state(seg) == baseline
        assert_clean(seg)


def test_cycle_made_through_views(checked_segment):
    seg = checked_segment(MEDIUM)
    root = seg.col()
    baseline = state(seg)
    root["a"] = {"name": "a" * 20}
    root["b"] = ["b" * 20]
    root["a"]["b"] = root["b"]      # a -> b
    root["b"].append(root["a"])     # b -> a
    root["a"]["self"] = root["a"]
    assert root["a"]["b"][1]["self"]["name"] == "a" * 20
    del root["a"]
    del root["b"]
    assert seg.collect() > 0
    assert state(seg) == baseline
    assert_clean(seg)


def test_aliasing_one_object_reached_twice(checked_segment):
    seg = checked_segment(MEDIUM)
    root = seg.col()
    root["keep"] = 0
    baseline = state(seg)
    shared = {"x": "y" * 100, "l": [b"z" * 50]}
    long = "a str used as a key and a value"
    root["a"] = [shared, shared, (shared, {"s": shared})]
    root[long] = long
    root["t"] = (long, long, [long])
    assert_clean(seg)                       # refcounts of the shared blocks are right
    out = root["a"].to_python()
    assert out[0] is out[1] is out[2][0] is out[2][1]["s"]
    root["a"][0]["x"] = "changed"           # one object: seen through every path
    assert root["a"][2][1]["s"]["x"] == "changed"
    del root["a"]
    del root[long]
    del root["t"]
    assert_back_to(seg, baseline)


def test_aliasing_a_view_stored_in_a_second_place(checked_segment):
    seg = checked_segment(MEDIUM)
    root = seg.col()
    root["keep"] = 0
    baseline = state(seg)
    root["x"] = {"v": ["w" * 40], "n": {"deep": b"d" * 40}}
    x = root["x"]
    root["y"] = x
    root["l"] = [x, x, (x, x["n"])]
    root["n"] = x["n"]
    root["l"].append(root["l"][0]["v"])
    assert_clean(seg)
    used_once = used(seg)
    del root["x"]
    assert used(seg) == used_once           # still reached through 'y', 'l' and 'n'
    assert root["y"]["n"]["deep"] == b"d" * 40
    root["y"] = None
    root["l"].clear()
    assert root["n"].to_python() == {"deep": b"d" * 40}
    del root["n"]
    del root["y"]
    del root["l"]
    assert_back_to(seg, baseline)
    with pytest.raises(dshared.StaleReferenceError):
        x["v"]


def test_views_of_deleted_objects_are_stale_not_leaked(checked_segment):
    seg = checked_segment(MEDIUM)
    root = seg.col()
    baseline = state(seg)
    views = []
    for i in range(50):
        root["d%d" % i] = {"i": i, "s": "s" * i}
        views.append(root["d%d" % i])
    root.clear()
    assert_back_to(seg, baseline)
    for v in views:
        with pytest.raises(dshared.StaleReferenceError):
            v["i"]


@pytest.mark.parametrize("seed", range(8))
def test_random_sequences_leave_nothing_behind(checked_segment, seed):
    """Random writes and deletes on dicts, lists and aliased views, with
    unreachable cycles made now and then: the model and the segment agree,
    refcounting frees everything but cycles at once, collect() the cycles,
    and deleting everything gives back the empty segment's used bytes."""
    seg = checked_segment(4 << 20)
    _random_sequence(seg, seed)


def _random_sequence(seg, seed):
    root = seg.col()
    gen = Gen(1000 + seed)
    rng = gen.rng
    root["d"] = {}
    root["l"] = []
    model = {"d": {}, "l": []}
    fresh = []                      # root-level dicts holding no views: safe to alias
    for step in range(2000):
        r = rng.random()
        dicts = [(root, model), (root["d"], model["d"])] + [(root[k], model[k]) for k in fresh if k in model]
        d, md = rng.choice(dicts)
        if r < 0.25:
            k = gen.key() if rng.random() < 0.7 or not md else rng.choice(list(md))
            if d is root and k in ("d", "l"):
                continue
            if d is root and k in fresh:
                fresh.remove(k)
            v = gen.value(rng.randrange(1, 300))
            d[k] = v
            md[k] = copy.deepcopy(v)
        elif r < 0.32:
            k = "fresh%d" % step
            v = {gen.key(): gen.value(50) for _ in range(rng.randrange(1, 6))}
            root[k] = v
            model[k] = copy.deepcopy(v)
            fresh.append(k)
        elif r < 0.45 and md:
            k = rng.choice(list(md))
            if d is root and k in ("d", "l"):
                continue
            how = rng.randrange(3)
            if how == 0:
                del d[k]
                del md[k]
            elif how == 1:
                got = d.pop(k)
                assert got == md.pop(k)
            elif not (d is root and next(reversed(md)) in ("d", "l")):
                assert d.popitem() == md.popitem()
        elif r < 0.55:
            pairs = [(gen.key(), gen.value(40)) for _ in range(rng.randrange(1, 9))]
            d, md = (root["d"], model["d"]) if rng.random() < 0.5 else (root, model)
            d.update(pairs)
            md.update(copy.deepcopy(pairs))
        elif r < 0.62 and fresh:
            src = rng.choice([k for k in fresh if k in model] or [None])
            if src is None:
                continue
            if rng.random() < 0.5:
                k = "alias%d" % step
                root[k] = root[src]
                model[k] = model[src]
            else:
                root["l"].append(root[src])
                model["l"].append(model[src])
        elif r < 0.90:
            lst, ml = root["l"], model["l"]
            n = len(ml)
            how = rng.randrange(8)
            v = gen.value(rng.randrange(1, 200))
            if how == 0:
                lst.append(v)
                ml.append(copy.deepcopy(v))
            elif how == 1:
                vs = [gen.value(30) for _ in range(rng.randrange(0, 5))]
                lst.extend(vs)
                ml.extend(copy.deepcopy(vs))
            elif how == 2:
                i = rng.randrange(-3, n + 3)
                lst.insert(i, v)
                ml.insert(i, copy.deepcopy(v))
            elif how == 3 and n:
                i = rng.randrange(n)
                got = lst.pop(i)
                assert got == ml.pop(i)
            elif how == 4 and n:
                a = rng.randrange(n)
                b = rng.randrange(a, n + 1)
                del lst[a:b]
                del ml[a:b]
            elif how == 5 and n:
                i = rng.randrange(n)
                lst[i] = v
                ml[i] = copy.deepcopy(v)
            elif how == 6:
                a = rng.randrange(n + 1)
                b = a + rng.randrange(3)
                vs = [gen.value(30) for _ in range(rng.randrange(0, 4))]
                lst[a:b] = vs
                ml[a:b] = copy.deepcopy(vs)
            elif how == 7:
                lst.reverse()
                ml.reverse()
        else:
            c = _cycle() if rng.random() < 0.5 else _ring(rng.randrange(2, 20))
            root["tmp"] = c
            del root["tmp"]
            assert seg.collect() > 0
        if step % 50 == 0:
            assert root.to_python() == model
            assert_clean(seg)
            assert seg.collect() == 0
    assert root.to_python() == model
    assert_clean(seg)
    root.clear()
    assert seg.collect() == 0
    assert used(seg) == 64


def test_stats_report_largest_free(make_segment):
    seg = make_segment(SMALL)
    root = seg.col()
    root["a"] = b"a" * 1000
    root["b"] = b"b" * 1000
    del root["a"]
    st = seg.stats()
    assert "largest_free" in st
    assert st["largest_free"] == st["capacity"] - st["top"]


def _churn(d, n):
    """Insert a new key and delete it again, n times; returns the error, if any."""
    for i in range(n):
        try:
            d["tmp%d" % i] = i
            del d["tmp%d" % i]
        except dshared.CorruptSegmentError as e:
            return e
    return None


@pytest.mark.parametrize("where", ["root", "nested"])
def test_insert_delete_churn_keeps_a_dict_usable(make_segment, where):
    seg = make_segment(MEDIUM)
    root = seg.col()
    root["n"] = {}
    d = root if where == "root" else root["n"]
    d["keep"] = 0                   # one live entry, so the table is never dropped
    err = _churn(d, 1000)
    if err is not None:
        raise err
    assert "missing" not in d
    assert dict(d.items()) == ({"keep": 0, "n": {}} if where == "root" else {"keep": 0})
    assert_clean(seg)


def test_check_reports_a_table_without_empty_slots(make_segment, shm_name):
    """A table whose index has no empty slot (a lookup of a missing key could
    not end) is a problem check() reports."""
    import struct
    from _corrupt import index_bytes, slot_get, slot_put
    seg = make_segment(MEDIUM)
    root = seg.col()
    root["d"] = {"keep": 0}
    off = root["d"].__reduce__()[1][2]
    with open("/dev/shm/" + shm_name, "r+b") as f:
        f.seek(off + 16)
        table = struct.unpack("<Q", f.read(8))[0]
        f.seek(table + 16)
        nslots = struct.unpack("<Q", f.read(8))[0]
        f.seek(table + 16 + 32)
        index = bytearray(f.read(index_bytes(nslots)))
        for i in range(nslots):                             # every empty slot made a deleted one
            if slot_get(index, 0, nslots, i) < 0:
                slot_put(index, 0, nslots, i, -2)
        f.seek(table + 16 + 32)
        f.write(index)
    report = seg.check()
    assert not report.ok
    assert any("empty slots" in p for p in report.problems), report.problems
    with pytest.raises(dshared.CorruptSegmentError):
        "missing" in root["d"]


# ---------------------------------------------------------------------------------
# memory the system backs (issue 14): free runs inside the heap hand their pages
# back, with any number of handles attached and readers running

SHM = "/dev/shm/"
BIG = 8 << 20


def backed_bytes(name):
    return os.stat(SHM + name).st_blocks * 512


@pytest.fixture
def punching():
    """Hole punching on (the default), counters reset; off again never leaks."""
    _heap.punch_counters(reset=True, no_punch=False)
    yield
    _heap.punch_counters(reset=True, no_punch=False)


def test_stats_report_backed(make_segment, shm_name, punching):
    seg = make_segment(64 << 20)
    st = seg.stats()
    assert st["backed"] == backed_bytes(shm_name)
    assert 0 < st["backed"] <= st["reserved"] + 4096
    seg.col()["x"] = b"x" * BIG
    st = seg.stats()
    assert st["backed"] == backed_bytes(shm_name) >= st["used"] >= BIG


def _interior_hole(seg, shm_name):
    """A big value below a small one, deleted: an interior free run. Returns
    the backed bytes before and after the delete."""
    root = seg.col()
    root["big"] = b"b" * BIG
    root["after"] = b"a" * 100          # above it: the big block is not at the top
    before = backed_bytes(shm_name)
    top = seg.stats()["top"]
    del root["big"]
    assert seg.stats()["top"] == top    # the run is inside the heap
    return before, backed_bytes(shm_name)


def test_interior_free_run_goes_back_with_two_handles_open(make_segment, shm_name, punching):
    seg = make_segment(64 << 20)
    other = dshared.Segment(shm_name)   # a second handle: page return used to need a lone one
    try:
        other.col()["probe"] = 1
        before, after = _interior_hole(seg, shm_name)
        assert before - after >= BIG - (256 << 10), (before, after)
        assert _heap.punch_counters()[0] >= 1
        # the space is reused: allocation backs the pages it hands out again
        root = seg.col()
        for i in range(64):
            root["r%d" % i] = bytes([i]) * (100 << 10)
        assert seg.stats()["top"] < (16 << 20)          # from the freed run, not the top
        assert _heap.punch_counters()[1] >= 1
        assert backed_bytes(shm_name) >= seg.stats()["used"]
        for i in range(64):
            assert other.col()["r%d" % i] == bytes([i]) * (100 << 10)
        assert other.col()["after"] == b"a" * 100
        assert_clean(seg)
    finally:
        other.close()


def test_interior_free_run_stays_backed_without_punching(make_segment, shm_name, punching):
    """The control of the test above: with hole punching switched off (the
    behaviour before it), the delete gives nothing back."""
    seg = make_segment(64 << 20)
    _heap.punch_counters(no_punch=True)
    before, after = _interior_hole(seg, shm_name)
    assert after >= before - (64 << 10)


@pytest.mark.parametrize("how", ["one_by_one", "update", "chunked_update"])
def test_populate_backs_little_more_than_it_uses(make_segment, shm_name, punching, how):
    """Tables freed at each growth of a dict are handed back or reused: what
    the system backs follows `used` (plus the reserve above the top)."""
    seg = make_segment(256 << 20)
    other = dshared.Segment(shm_name)
    try:
        d = seg.col()
        n = 200_000
        if how == "one_by_one":
            for i in range(n):
                d["k%07d" % i] = "v%015d" % i
        elif how == "update":
            d.update(("k%07d" % i, "v%015d" % i) for i in range(n))
        else:
            for j in range(0, n, 20_000):
                d.update({"k%07d" % i: "v%015d" % i for i in range(j, j + 20_000)})
        st = seg.stats()
        slack = 2 * (1 << 20) + st["reserved"] // 8     # the reserve kept above the top
        assert st["backed"] <= st["used"] * 1.05 + slack, st
        assert len(other.col()) == n
        assert_clean(seg)
    finally:
        other.close()


def _grow_shrink_reader(name, stop_key, rounds):
    """A reader in its own process: random gets and walks, every value
    checked; exits 3 on a wrong value, 1 on an exception."""
    import random as _random
    seg = dshared.Segment(name)
    rng = _random.Random(7)
    d = seg.col()["d"]
    reads = 0
    root = seg.col()
    while stop_key not in root:
        i = rng.randrange(rounds)
        v = d.get(i)
        if v is not None and v != _value(i):
            print("key %d read %r" % (i, v[:40]), flush=True)
            sys.exit(3)
        reads += 1
        if reads % 500 == 0:
            try:
                for k, v in list(d.items())[:2000]:
                    if v != _value(k):
                        print("walk: key %d read %r" % (k, v[:40]), flush=True)
                        sys.exit(3)
            except RuntimeError:
                pass                    # changed size during iteration: as dict
    seg.close()
    print("reads", reads, flush=True)


def _value(i):
    return ("%d:" % i) * (400 // (len(str(i)) + 1))


def drive_grow_shrink(name, cycles):
    import _proc
    seg = dshared.Segment(name, 256 << 20, create=True)
    second = dshared.Segment(name)
    _heap.punch_counters(reset=True)
    figs = []
    try:
        root = seg.col()
        root["d"] = {}
        d = root["d"]
        n = 20_000
        with _proc.Children() as kids:
            pid = kids.fork(_grow_shrink_reader, name, "stop", n * cycles)
            for c in range(cycles):
                base = c * n
                for i in range(base, base + n):
                    d[i] = _value(i)
                peak = seg.stats()
                for i in range(base, base + n * 9 // 10):
                    del d[i]
                st = seg.stats()
                figs.append((peak["used"], peak["backed"], st["used"], st["backed"], st["reserved"]))
                for i in range(base + n * 9 // 10, base + n):
                    del d[i]
                assert second.col()["d"].get(base) is None
            root["stop"] = 1
            code = kids.wait(pid, 60)
        report = seg.check()
        return {"figs": figs, "reader": code, "ok": report.ok, "problems": report.problems[:5],
                "punches": _heap.punch_counters()[0]}
    finally:
        second.close()
        seg.close()
        dshared.unlink(name)


def test_grow_then_delete_most_gives_memory_back_with_a_reader_running(shm_name, punching):
    """Two handles open in the writer and a reader process reading and
    walking all along: the reader never gets a signal or a wrong value, the
    segment checks clean, and after each delete of 90% what is backed follows
    what is used."""
    import _proc
    r = _proc.run_driver("test_memory", "drive_grow_shrink", shm_name, 3, timeout=150)
    print(r)
    assert r["reader"] == 0, r          # no signal (it would be negative), no wrong value (3)
    assert r["ok"], r["problems"]
    assert r["punches"] > 0
    for peak_used, peak_backed, used, backed, reserved in r["figs"]:
        assert used < peak_used // 3
        # a few MiB of slack: the reserve above the top and partly used pages
        assert backed <= used * 1.3 + (4 << 20), r["figs"]
        assert backed < peak_backed // 2, r["figs"]


def test_a_value_overwritten_again_and_again_keeps_its_pages(make_segment, shm_name, punching):
    """Hysteresis: a few MiB of free space stay backed, so that a big value
    replaced over and over reuses its pages rather than handing them back to
    have the system zero them again at the next store."""
    seg = make_segment(64 << 20)
    root = seg.col()
    root["v"] = b"0" * (1 << 20)
    root["after"] = 1                   # the value's block is not at the top
    _heap.punch_counters(reset=True)
    for i in range(20):
        root["v"] = bytes([48 + i % 10]) * (1 << 20)
    assert _heap.punch_counters() == (0, 0)
    assert root["v"] == b"9" * (1 << 20)
    assert backed_bytes(shm_name) <= seg.stats()["used"] + (4 << 20)
    assert_clean(seg)
