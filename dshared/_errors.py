"""The exceptions dshared raises: one base class, each mixed with the builtin
that callers already catch."""

from typing import Optional

__all__ = [
    "DsharedError",
    "SegmentFullError",
    "CorruptSegmentError",
    "UnsupportedTypeError",
    "StaleReferenceError",
    "LockTimeout",
]


class _ArgsSignature:
    """inspect.signature() of the exception classes: (*args), as their builtin
    bases take (inspect finds no signature on builtin exception types), then
    the keyword-only arguments `keywords` (name, default)."""

    def __init__(self, *keywords: "tuple[str, object]") -> None:
        self.keywords = keywords

    def __get__(self, obj: object, cls: object = None) -> object:
        import inspect
        return inspect.Signature([inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL)]
                                 + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                                    for name, default in self.keywords])


class DsharedError(Exception):
    """Base class of every error specific to dshared."""

    __signature__ = _ArgsSignature()


class SegmentFullError(DsharedError, MemoryError):
    """The segment has no room for the operation; the operation had no effect.

    Raised by a failed allocation, it says how many bytes it asked for
    (`want`), how many of the segment's heap were free (`free`, counted
    after the operation was rolled back) and, when /dev/shm could not back
    the memory, the error number (`errno`, else 0); `want` and `free` are
    None otherwise."""

    __signature__ = _ArgsSignature(("want", None), ("free", None), ("errno", 0))

    want: Optional[int]
    free: Optional[int]
    errno: int

    def __init__(self, *args: object, want: Optional[int] = None, free: Optional[int] = None,
                 errno: int = 0) -> None:
        super().__init__(*args)
        self.want = want
        self.free = free
        self.errno = errno


class CorruptSegmentError(DsharedError, RuntimeError):
    """The segment's bytes are not a valid dshared heap."""


class UnsupportedTypeError(DsharedError, TypeError):
    """A value (or key) of a type dshared cannot store; nothing was stored."""


class StaleReferenceError(DsharedError, ReferenceError):
    """The shared object behind this view has been removed from the segment."""


class LockTimeout(DsharedError, TimeoutError):
    """The segment lock was not acquired within the timeout."""
