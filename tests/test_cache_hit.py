"""Cache mode, the hit path: the per-process memos of a SharedCache (a str
or bytes value decoded once per value block, an ASCII key's hash once per
key) never return a stale value, and memoize's C calling convention
(vectorcall) passes every kind of call as functools.lru_cache sees it.

Each memo is checked against the segment on every use; the hook
no_memo_check trusts a slot without its check, and the tests show that the
check is what keeps the results right."""

import functools
import random

import pytest

import dshared
from dshared import _codec
from _proc import fork_call, wait_pid


@pytest.fixture
def hooks():
    yield _codec._cache_hooks
    _codec._cache_hooks(no_memo_check=False)


@pytest.mark.parametrize("check", [True, False])
def test_value_memo_follows_writes(segment, hooks, check):
    """Each write of a hot key makes a new value block; a freed block is
    reused at the same offset with another generation, which the memo checks."""
    hooks(no_memo_check=not check)
    c = segment.cache("vm")
    stale = 0
    for i in range(200):
        v = ("%03d" % i) * 70 if i % 3 else (b"%03d" % i) * 70
        c["hot"] = v
        for _ in range(2):          # the second read comes from the memo
            got = c.get("hot")
            if got != v:
                stale += 1
            else:
                assert type(got) is type(v)
    if not check:
        assert stale > 0            # offsets are reused: only the generation tells
        return
    assert stale == 0
    assert c.stats()["hits"] == 400


def test_value_memo_other_process(segment):
    """A value another process replaced or deleted is read as it is now."""
    c = segment.cache("vmp")
    for i in range(30):
        c["k%d" % i] = "a%d" % i * 50
    for i in range(30):
        assert c.get("k%d" % i) == "a%d" % i * 50

    def child():
        cc = segment.cache("vmp")
        for i in range(30):
            if i % 2:
                del cc["k%d" % i]
            else:
                cc["k%d" % i] = "b%d" % i * 50
    assert wait_pid(fork_call(child), 60) == 0
    for i in range(30):
        assert c.get("k%d" % i) == (None if i % 2 else "b%d" % i * 50)


@pytest.mark.parametrize("check", [True, False])
def test_key_memo_equal_and_colliding_keys(segment, hooks, check):
    """Keys looked up as new, equal str objects, and keys that share a memo
    slot, find their own values."""
    hooks(no_memo_check=not check)
    c = segment.cache("km")
    keys = ["key-%d" % i for i in range(500)]        # 500 keys over 64 slots
    for k in keys:
        c[k] = k.upper() * 10
    rng = random.Random(16)
    wrong = 0
    for _ in range(3000):
        k = "".join(list(rng.choice(keys)))         # an equal str, another object
        if c.get(k) != k.upper() * 10:
            wrong += 1
    if not check:
        assert wrong > 0
        return
    assert wrong == 0
    # non-ASCII and non-str keys take the general path
    c["clé"] = 1
    c[("t", 1)] = 2
    assert c.get("clé") == 1 and c.get(("t", 1)) == 2 and c.get(("t", 2)) is None


def test_large_values_not_kept(segment):
    """A value over 64 KiB is copied on every hit (64 kept ones would hold much memory)."""
    c = segment.cache("big")
    c["small"] = "s" * 1000
    c["big"] = "b" * 100000
    assert c.get("small") is c.get("small")
    a, b = c.get("big"), c.get("big")
    assert a == b == "b" * 100000 and a is not b


def test_value_memo_ttl_and_wrapped(segment):
    """A memoized value with an expiry is still not returned after it."""
    c = segment.cache("vt")
    c.set("k", "x" * 100, ttl=0.05)
    assert c.get("k") == "x" * 100 and c.get("k") == "x" * 100
    import time
    time.sleep(0.06)
    assert c.get("k") is None
    c["tup"] = ("a" * 50, 1)
    assert c.get("tup") == ("a" * 50, 1) and c.get("tup") == ("a" * 50, 1)


def test_memoize_call_forms(segment):
    """Every way of calling a memoized function (vectorcall with and without
    keywords, tp_call with a tuple, from C through map, as a method, none or
    several arguments) computes and caches as functools.lru_cache does."""
    calls = []

    def f(*args, **kw):
        calls.append(1)
        return (args, sorted(kw.items()))
    ref = functools.lru_cache(maxsize=None)(f)
    mine = dshared.memoize("t.forms", segment=segment)(f)
    forms = [
        lambda g: g(),
        lambda g: g("a"),
        lambda g: g(1),
        lambda g: g(2 ** 80),
        lambda g: g(1.5),
        lambda g: g(None),
        lambda g: g("a", 1),
        lambda g: g(x=1),
        lambda g: g("a", x=2),
        lambda g: g(*("a",)),
        lambda g: g(*("a", "b"), **{"y": 3}),
        lambda g: list(map(g, ["a", "b", 3])),
        lambda g: functools.partial(g, "p")(),
        lambda g: functools.partial(g, "p")("q", z=1),
    ]
    for _ in range(3):
        for form in forms:
            del calls[:]
            want = form(ref)
            n_ref = len(calls)
            assert form(mine) == want
            assert len(calls) == 2 * n_ref
    ri, mi = ref.cache_info(), mine.cache_info()
    assert (mi.hits, mi.misses, mi.currsize) == (ri.hits, ri.misses, ri.currsize)

    class A:
        @dshared.memoize("t.method", segment=segment)
        def m(self, x):
            return x * 2
    a = A()
    # self cannot be a key: the TypeError names it, for every call form
    for call in (lambda: a.m(3), lambda: a.m(x=3), lambda: A.m(a, 3)):
        with pytest.raises(TypeError, match=r"argument 0 \(A\)"):
            call()
    with pytest.raises(TypeError, match=r"argument 0 \(A\)"):
        mine(A())


def test_memoize_raising_function(segment):
    """A function that raises: the exception passes through the C call, nothing is cached."""
    n = []

    @dshared.memoize("t.raise", segment=segment)
    def f(x):
        n.append(x)
        raise KeyError(x)
    for _ in range(2):
        with pytest.raises(KeyError):
            f("a")
    assert len(n) == 2 and f.cache_info().currsize == 0
