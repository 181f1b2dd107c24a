"""The closed value encoding of dshared's Redis backend (no pickle: only the
types below can be stored, and decoding builds only these types).

A value is stored as bytes:
  an int in [-2**63, 2**63): its decimal digits (so HINCRBY works on it)
  I<digits> a larger int;  N None;  T True;  F False;  f<8 bytes> a float (IEEE, big-endian)
  s<utf-8> a str (surrogates kept);  b<bytes> bytes
  t<len>:<item>... a tuple of such values (no containers inside)
  D<id> / L<id> a reference to a stored dict / list
A key is stored in its canonical form: equal keys (1, 1.0, True) have one
form, as they are one key of a dict; the original key is kept beside it.
"""

import struct

from dshared._errors import UnsupportedTypeError

_pack_d = struct.Struct(">d").pack
_unpack_d = struct.Struct(">d").unpack

_MIN = -(1 << 63)
_MAX = (1 << 63) - 1


def enc_scalar(v):
    """bytes for a value that is not a container; None for a dict or a list
    (or a view); UnsupportedTypeError for anything else."""
    t = type(v)
    if t is str:
        return b"s" + v.encode("utf-8", "surrogatepass")
    if t is int:
        return b"%d" % v if _MIN <= v <= _MAX else b"I%d" % v
    if v is None:
        return b"N"
    if t is bool:
        return b"T" if v else b"F"
    if t is float:
        return b"f" + _pack_d(v)            # the exact bits (NaN payloads and signs kept)
    if t is bytes:
        return b"b" + v
    if t is tuple:
        parts = []
        for x in v:
            e = enc_scalar(x)
            if e is None:
                raise UnsupportedTypeError("the Redis backend stores tuples of plain values only, "
                                           "not a tuple holding a %s" % type(x).__name__)
            parts.append(b"%d:" % len(e))
            parts.append(e)
        return b"t" + b"".join(parts)
    if isinstance(v, (dict, list)) or getattr(v, "_dshared_view", False) \
            or type(v).__name__ in ("SharedDict", "SharedList"):
        return None
    # subclasses of the plain types are stored as their base type
    if isinstance(v, bool):
        return b"T" if v else b"F"
    if isinstance(v, int):
        return enc_scalar(int(v))
    if isinstance(v, float):
        return enc_scalar(float(v))
    if isinstance(v, str):
        return enc_scalar(str(v))
    if isinstance(v, bytes):
        return enc_scalar(bytes(v))
    if isinstance(v, tuple):
        return enc_scalar(tuple(v))
    raise UnsupportedTypeError("dshared cannot store a value of type %s; supported: None, bool, int, "
                               "float, str, bytes, tuple, list, dict" % type(v).__name__)


def canon(k):
    """The canonical stored form of key k (TypeError if k is unhashable,
    UnsupportedTypeError if dshared cannot store it)."""
    t = type(k)
    if t is str:
        return b"s" + k.encode("utf-8", "surrogatepass")
    if t is int:
        return b"%d" % k if _MIN <= k <= _MAX else b"I%d" % k
    if t is bool:
        return b"1" if k else b"0"
    if t is float:
        if k.is_integer():
            return canon(int(k))
        return b"g" + repr(k).encode()       # equal floats, one form (the stored key is kept beside it)
    if k is None:
        return b"N"
    if t is bytes:
        return b"b" + k
    if t is tuple:
        parts = []
        for x in k:
            e = canon(x)
            parts.append(b"%d:" % len(e))
            parts.append(e)
        return b"t" + b"".join(parts)
    try:
        hash(k)
    except TypeError:
        raise TypeError("unhashable type: '%s'" % type(k).__name__) from None
    for base in (bool, int, float, str, bytes, tuple):
        if isinstance(k, base):
            return canon(base(k))
    raise UnsupportedTypeError("dshared cannot store a key of type %s; supported: None, bool, int, float, "
                               "str, bytes and tuples of them" % type(k).__name__)


def key_forms(k):
    """(canonical form, original form or b'' when they are the same)."""
    c = canon(k)
    e = enc_scalar(k)
    return c, (b"" if e == c else e)


def _split_tuple(raw):
    items = []
    i = 1
    n = len(raw)
    while i < n:
        j = raw.index(b":", i)
        ln = int(raw[i:j])
        items.append(dec_scalar(raw[j + 1:j + 1 + ln]))
        i = j + 1 + ln
    return tuple(items)


def dec_scalar(raw):
    """The value of a stored form that is not a reference."""
    c = raw[0]
    if 48 <= c <= 57 or c == 45:
        return int(raw)
    if c == 115:
        return raw[1:].decode("utf-8", "surrogatepass")
    if c == 102:
        return _unpack_d(raw[1:9])[0]
    if c == 78:
        return None
    if c == 84:
        return True
    if c == 70:
        return False
    if c == 98:
        return bytes(raw[1:])
    if c == 73:
        return int(raw[1:])
    if c == 116:
        return _split_tuple(raw)
    raise ValueError("not a dshared value encoding: %r" % raw[:20])


_PLAIN = (type(None), bool, int, float, str, bytes)


def bad_path(v, path=""):
    """(type name, path) of the first value dshared cannot store inside v,
    or None. Iterative, each container once: a value may hold cycles."""
    seen = set()
    stack = [(v, path)]
    while stack:
        v, path = stack.pop()
        if isinstance(v, _PLAIN) or getattr(v, "_dshared_view", False):
            continue
        if type(v).__name__ in ("SharedDict", "SharedList"):
            continue
        if isinstance(v, (dict, list, tuple)):
            if id(v) in seen:
                continue
            seen.add(id(v))
            kids = (list(v.items()) if isinstance(v, dict) else
                    [("%d" % i, x) for i, x in enumerate(v)])
            for k, x in reversed(kids):
                stack.append((x, "%s[%r]" % (path, k) if isinstance(v, dict) else "%s[%s]" % (path, k)))
            continue
        return type(v).__name__, path
    return None


def unsupported(v):
    """The UnsupportedTypeError for v, naming the type and where it is."""
    r = bad_path(v)
    if r is None:
        return None
    return UnsupportedTypeError("dshared cannot store a value of type %s (at %s); supported: None, bool, int, "
                                "float, str, bytes, tuple, list, dict" % (r[0], r[1] or "the top level"))
