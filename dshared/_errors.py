"""The exceptions dshared raises: one base class, each mixed with the builtin
that callers already catch."""

__all__ = [
    "DsharedError",
    "SegmentFullError",
    "CorruptSegmentError",
    "UnsupportedTypeError",
    "StaleReferenceError",
    "LockTimeout",
]


class DsharedError(Exception):
    """Base class of every error specific to dshared."""


class SegmentFullError(DsharedError, MemoryError):
    """The segment has no room for the operation; the operation had no effect."""


class CorruptSegmentError(DsharedError, RuntimeError):
    """The segment's bytes are not a valid dshared heap."""


class UnsupportedTypeError(DsharedError, TypeError):
    """A value (or key) of a type dshared cannot store; nothing was stored."""


class StaleReferenceError(DsharedError, ReferenceError):
    """The shared object behind this view has been removed from the segment."""


class LockTimeout(DsharedError, TimeoutError):
    """The segment lock was not acquired within the timeout."""
