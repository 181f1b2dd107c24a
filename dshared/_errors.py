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


class _ArgsSignature:
    """inspect.signature() of the exception classes: (*args), as their builtin
    bases take (inspect finds no signature on builtin exception types)."""

    def __get__(self, obj: object, cls: object = None) -> object:
        import inspect
        return inspect.Signature([inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL)])


class DsharedError(Exception):
    """Base class of every error specific to dshared."""

    __signature__ = _ArgsSignature()


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
