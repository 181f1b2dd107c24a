"""Wrong usages of dshared: each line below the imports must be flagged by
`mypy --strict --warn-unused-ignores` and by pyright (strict, with
reportUnnecessaryTypeIgnoreComment), so an unused ignore comment means a line
a type checker let through (tests/test_typing.py). Never run."""
from __future__ import annotations

import dshared
from dshared import Segment, SharedDict, SharedList


def bad(seg: Segment, shm: SharedDict[str, int], lst: SharedList[str]) -> None:
    shm.incr("hits", "oops")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    shm.incr("hits", 1, default="0")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    dshared.init(123)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    dshared.init("x", size="1G")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    Segment("x", allow_unsafe=1, create="yes")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    Segment("x", 1 << 20, bogus=True)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    dshared.col(42)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    seg.col(name=b"x")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    seg.lock(timeout="1s")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    dshared.lock("1s")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    shm[1] = 2  # type: ignore[index]  # pyright: ignore[reportArgumentType]
    shm["a"] = "b"  # type: ignore[assignment]  # pyright: ignore[reportArgumentType]
    s: str = shm["a"]  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    lst.append(1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    n: int = lst[0]  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    lst.frobnicate()  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    seg.stats(probes="yes")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    freed: str = seg.collect()  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    ok: str = seg.check().ok  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    dshared.unlink(None)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    SharedDict[list[int], int]  # type: ignore[type-var]  # pyright: ignore[reportInvalidTypeArguments]
    print(s, n, freed, ok)
