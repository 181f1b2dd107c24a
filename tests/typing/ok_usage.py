"""Typed usage of dshared: `mypy --strict` and pyright (strict) must find no
error here (tests/test_typing.py), and test_typing runs `examples` against a
real segment, so every line here is also true at run time."""
from __future__ import annotations

import pickle
from typing import Any

import dshared
from dshared import Segment, SharedDict, SharedList


def examples(seg: Segment) -> None:
    shm = seg.col()
    shm["hits"] = 0
    n: int | float = shm.incr("hits")
    assert n == 1
    assert shm.incr("hits", 2.5, default=0) == 3.5
    shm["d"] = {"key": "val"}
    d: SharedDict[str, str] = shm["d"]
    assert d["key"] == "val" and d.get("nope") is None and d.get("nope", "x") == "x"
    shm[(1, "a")] = b"bytes key ok"
    shm[None] = [1, 2, 3]
    lst: SharedList[int] = shm[None]
    lst.append(4)
    lst.extend([5, 6])
    lst[0] = 10
    first: int = lst[0]
    head: list[int] = lst[:2]
    assert (first, head) == (10, [10, 2])
    lst.sort(key=lambda x: -x, reverse=True)
    assert lst.pop() == 10 and len(lst) == 5
    plain: list[Any] = lst.to_python()
    assert plain == [2, 3, 4, 5, 6]
    counters: SharedDict[str, int] = seg.col("counters")
    counters.setdefault("a", 1)
    counters.update({"b": 2}, c=3)
    total = sum(counters.values())
    assert total == 6
    for k, v in counters.items():
        assert isinstance(k, str) and isinstance(v, int)
    copy: dict[str, int] = counters.copy()
    assert copy == {"a": 1, "b": 2, "c": 3} and counters.pop("c") == 3
    assert counters.segment is seg
    with seg.lock(timeout=1.0):
        counters["a"] += 1
    if seg.acquire(0.5):
        seg.release()
    stats: dict[str, Any] = seg.stats()
    freed: int = seg.collect()
    assert stats["capacity"] == seg.capacity and freed >= 0
    report = seg.check()
    problems: list[str] = report.problems
    assert report.ok and bool(report) and not problems
    assert pickle.loads(pickle.dumps(counters)) == counters
    assert seg.name and not seg.closed


def module_level(name: str) -> None:
    seg = dshared.init(name, size=dshared.MIN_SIZE)
    try:
        assert dshared.default_segment() is seg
        shm = dshared.col()
        shm["n"] = 1
        with dshared.lock(None):
            shm["n"] += 1
        assert dshared.stats()["used"] > 0 and dshared.collect() >= 0 and dshared.check().ok
        again = dshared.attach(name)
        assert again.col()["n"] == 2
        try:
            with Segment(name, create=True):
                pass
        except FileExistsError:
            pass
        with Segment(name, None, False, allow_unsafe=False) as other:
            assert other.col()["n"] == 2
    except dshared.DsharedError as e:
        raise AssertionError(e) from e
    finally:
        dshared.unlink(name)
        seg.close()


def after_merge(seg: Segment) -> tuple[list[str], list[int], list[dict[str, Any]], Any]:
    """What issue 17 adds in parallel (run by test_typing once it exists),
    after examples(seg)."""
    names: list[str] = seg.collections()
    pids: list[int] = seg.attached()
    rows: list[dict[str, Any]] = dshared.segments()
    plain: Any = dshared.to_python(seg.col())
    return names, pids, rows, plain
