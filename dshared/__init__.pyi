"""Types of dshared's public API (the runtime is dshared/__init__.py)."""

from typing import Any

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
    "init", "attach", "col", "unlink", "lock", "transaction", "snapshot", "stats", "collect", "check", "default_segment",
    "segments", "to_python",
    "Segment", "SharedDict", "SharedList",
    "DsharedError", "SegmentFullError", "UnsupportedTypeError", "CorruptSegmentError",
    "StaleReferenceError", "LockTimeout",
    "DEFAULT_SIZE", "MIN_SIZE", "MAX_SIZE",
]

def init(name: str, size: int | None = None) -> Segment: ...
def attach(name: str) -> Segment: ...
def default_segment() -> Segment: ...
def col(name: str | None = None) -> SharedDict[Any, Any]: ...
def unlink(name: str) -> None: ...
def lock(timeout: float | None = None) -> _Block: ...
def transaction(timeout: float | None = None) -> _Block: ...
def snapshot(timeout: float | None = None) -> _Block: ...
def stats(probes: bool = False) -> dict[str, Any]: ...
def collect() -> int: ...
def check() -> CheckReport: ...

# added in parallel with these stubs (issue 17, items 2 and 6)
def segments(pattern: str | None = None, *, allow_unsafe: bool = False) -> list[dict[str, Any]]: ...
def to_python(obj: object) -> Any: ...
