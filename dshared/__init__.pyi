"""Types of dshared's public API (the runtime is dshared/__init__.py)."""

from collections.abc import Iterable, Sequence
from typing import Any

from typing_extensions import TypeAlias

from dshared._cache import CacheInfo as CacheInfo, SharedCache as SharedCache, memoize as memoize
from dshared._collections import SharedDict as SharedDict, SharedList as SharedList
from dshared._errors import (
    CorruptSegmentError as CorruptSegmentError,
    DsharedError as DsharedError,
    LockTimeout as LockTimeout,
    SegmentFullError as SegmentFullError,
    StaleReferenceError as StaleReferenceError,
    UnsupportedTypeError as UnsupportedTypeError,
)
from dshared._heap import (
    DEFAULT_SIZE as DEFAULT_SIZE,
    MAX_SIZE as MAX_SIZE,
    MIN_SIZE as MIN_SIZE,
    CheckReport,
    Segment as Segment,
    _Block,  # pyright: ignore[reportPrivateUsage]
)

__version__: str

__all__ = [
    "init", "attach", "col", "unlink", "lock", "transaction", "snapshot", "stats", "collect", "check",
    "default_segment", "segments", "to_python", "cache", "memoize", "SharedCache", "CacheInfo",
    "versions", "wait_any", "wait_any_async",
    "Segment", "SharedDict", "SharedList",
    "DsharedError", "SegmentFullError", "UnsupportedTypeError", "CorruptSegmentError",
    "StaleReferenceError", "LockTimeout",
    "DEFAULT_SIZE", "MIN_SIZE", "MAX_SIZE",
]

def init(name: str, size: int | None = None, *, server: str | None = None) -> Segment: ...
# with server= (or DSHARED_SERVER) the segment is a dshared.redis.RedisSegment, which has
# Segment's methods; it is typed as Segment so that code runs on either backend
def attach(name: str, *, server: str | None = None) -> Segment: ...
def default_segment() -> Segment: ...
def col(name: str | None = None) -> SharedDict[Any, Any]: ...
def unlink(name: str, *, server: str | None = None) -> None: ...
def lock(timeout: float | None = None) -> _Block: ...
def transaction(timeout: float | None = None) -> _Block: ...
def snapshot(timeout: float | None = None) -> _Block: ...
def stats(probes: bool = False) -> dict[str, Any]: ...
def collect() -> int: ...
def check() -> CheckReport: ...

# added in parallel with these stubs (issue 17, items 2 and 6)
def segments(pattern: str | None = None, *, allow_unsafe: bool = False) -> list[dict[str, Any]]: ...
def to_python(obj: object) -> Any: ...

def cache(name: str, *, max_entries: int | None = None, max_bytes: int | None = None,
          ttl: float | None = None) -> SharedCache: ...
# what wait_any() watches: a container (any change of it) or (dict, key)
_Target: TypeAlias = SharedDict[Any, Any] | SharedList[Any] | tuple[SharedDict[Any, Any], Any]

def versions(targets: Iterable[_Target]) -> list[int]: ...
def wait_any(targets: Iterable[_Target], *, versions: Sequence[int] | None = None,
             timeout: float | None = None) -> list[_Target]: ...
async def wait_any_async(targets: Iterable[_Target], *, versions: Sequence[int] | None = None,
                         timeout: float | None = None) -> list[_Target]: ...
