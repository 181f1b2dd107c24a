# Keys: hashing, the canonical form, make_key and parse_canon (included by
# _codec.pyx at module level).


cdef inline uint64_t key_hash(Segment seg, uint8_t ctag, const void *data, uint64_t n) noexcept:
    return seg_hash(seg, ctag, data, n)


cdef inline uint64_t key_hash_u64(Segment seg, uint8_t ctag, uint64_t v) noexcept:
    """key_hash of the 8 bytes of v (an int or float key)."""
    return seg_hash_u64(seg, ctag, v)


cdef inline object str_utf8(object s, const char **data, uint64_t *n, bint *ascii):
    """UTF-8 of a str (lone surrogates kept); returns an owner to keep alive."""
    cdef Py_ssize_t size
    if PyUnicode_IS_ASCII(s):
        data[0] = <const char *>PyUnicode_DATA(s)
        n[0] = PyUnicode_GET_LENGTH(s)
        ascii[0] = True
        return s
    ascii[0] = False
    data[0] = PyUnicode_AsUTF8AndSize(s, &size)
    if data[0] == NULL:
        PyErr_Clear()
        b = (<str>s).encode("utf-8", "surrogatepass")
        data[0] = PyBytes_AS_STRING(b)
        n[0] = PyBytes_GET_SIZE(b)
        return b
    n[0] = size
    return s


cdef bytes bigint_bytes(object v):
    return int.to_bytes(v, (int.bit_length(v) + 8) // 8, "little", signed=True)


cdef object _unhashable(object k):
    if isinstance(k, (list, dict, set, bytearray, Node)):
        return TypeError("unhashable type: '%s'" % type(k).__name__)
    return UnsupportedTypeError("dshared cannot use a key of type %s; keys are str, bytes, int, "
                                "float, bool, None and tuples of them" % type(k).__name__)


cdef int canon_append(bytearray buf, object k, int depth, bint typed=False) except -1:
    """Append the canonical encoding of key k (a tuple element) to buf; with
    `typed`, the encoding that keeps bool and float as they are (for reading
    the key back; lookups compare the canonical one)."""
    cdef int overflow = 0
    cdef int64_t v
    cdef double f
    cdef const char *data
    cdef uint64_t n
    cdef bint ascii
    if depth > MAX_KEY_DEPTH:
        raise UnsupportedTypeError("tuple key nested deeper than %d levels" % MAX_KEY_DEPTH)
    if k is None:
        buf.append(T_NONE)
    elif typed and PyBool_Check(k):
        buf.append(T_TRUE if k else T_FALSE)
    elif typed and PyFloat_Check(k):
        f = PyFloat_AS_DOUBLE(k)
        buf.append(T_FLOAT)
        buf += (<bytes>PyBytes_FromStringAndSize(<char *>&f, 8))
    elif PyBool_Check(k):
        buf.append(T_INT)
        buf += (1 if k else 0).to_bytes(8, "little", signed=True)
    elif PyLong_Check(k):
        v = PyLong_AsLongLongAndOverflow(k, &overflow)
        if overflow:
            b = bigint_bytes(k)
            buf.append(T_BIGINT)
            buf += len(b).to_bytes(8, "little")
            buf += b
        else:
            buf.append(T_INT)
            buf += (<object>v).to_bytes(8, "little", signed=True)
    elif PyFloat_Check(k):
        f = PyFloat_AS_DOUBLE(k)
        if ds_double_int64(f, &v):
            buf.append(T_INT)
            buf += (<object>v).to_bytes(8, "little", signed=True)
        elif isfinite(f) and floor(f) == f:        # integral beyond int64
            canon_append(buf, int(f), depth, typed)
        else:
            buf.append(T_FLOAT)
            buf += (<bytes>PyBytes_FromStringAndSize(<char *>&f, 8))
    elif PyUnicode_Check(k):
        owner = str_utf8(k, &data, &n, &ascii)
        buf.append(T_STR)
        buf += (<object>n).to_bytes(8, "little")
        buf += PyBytes_FromStringAndSize(data, n)
    elif PyBytes_Check(k):
        buf.append(T_BYTES)
        buf += len(k).to_bytes(8, "little")
        buf += k
    elif PyTuple_Check(k):
        buf.append(T_KTUPLE)
        buf += len(k).to_bytes(8, "little")
        for x in <tuple>k:
            canon_append(buf, x, depth + 1, typed)
    else:
        raise _unhashable(k)
    return 0


cdef object make_key(Segment seg, object k, Key *key, bint lookup=False):
    """Fill `key` (canonical form + hash) for lookups; returns the object that
    owns key.data, to be kept alive while the key is used. With `lookup`, a
    hashable key of a type dshared never stores gives a key no entry matches
    (so d[k] is a KeyError, as in dict) instead of UnsupportedTypeError."""
    if seg.base == NULL:
        seg_check_open(seg)            # raises: the hash seed lives in the segment
    if PyUnicode_CheckExact(k) and PyUnicode_IS_ASCII(k):
        # the common case first: an ASCII str is its own UTF-8
        key.ctag = T_STR
        key.data = <const char *>PyUnicode_DATA(k)
        key.len = PyUnicode_GET_LENGTH(k)
        key.cval = 0
        key.hash = key_hash(seg, T_STR, key.data, key.len)
        return k
    owner = key_canon(k, key, lookup)
    if key.ctag == T_EMPTY:
        key.hash = 0                # matches nothing
        return None
    if key.ctag == T_BYTES or key.ctag == T_BIGINT or key.ctag == T_KTUPLE:
        key.data = PyBytes_AS_STRING(owner)
        key.len = PyBytes_GET_SIZE(owner)
    if key.ctag == T_INT or key.ctag == T_FLOAT:
        key.hash = key_hash_u64(seg, key.ctag, key.cval)
    else:
        key.hash = key_hash(seg, key.ctag, key.data, key.len)
    return owner


cdef object key_canon(object k, Key *key, bint lookup):
    """make_key for every key but an exact ASCII str: the canonical tag, and
    the value (key.cval) or the object whose bytes are the canonical form
    (returned; a str gives its data here). T_EMPTY: a key that matches
    nothing (`lookup` and a type dshared never stores)."""
    cdef int overflow = 0
    cdef int64_t v
    cdef double f
    cdef bint ascii
    cdef uint8_t whole[DS_WHOLE_DOUBLE_MAX]
    owner = None
    key.data = NULL
    key.len = 0
    key.cval = 0
    if PyUnicode_Check(k):
        owner = str_utf8(k, &key.data, &key.len, &ascii)
        key.ctag = T_STR
    elif PyBool_Check(k):
        key.ctag = T_INT
        key.cval = 1 if k else 0
    elif PyLong_Check(k):
        v = PyLong_AsLongLongAndOverflow(k, &overflow)
        if overflow:
            owner = bigint_bytes(k)
            key.ctag = T_BIGINT
        else:
            key.ctag = T_INT
            key.cval = <uint64_t>v
    elif PyFloat_Check(k):
        f = PyFloat_AS_DOUBLE(k)
        if ds_double_int64(f, &v):
            key.ctag = T_INT
            key.cval = <uint64_t>v
        elif isfinite(f) and floor(f) == f:
            # a whole float beyond int64 is the key of the int of its value
            owner = PyBytes_FromStringAndSize(<char *>whole, ds_whole_double_bytes(f, whole))
            key.ctag = T_BIGINT
        else:
            key.ctag = T_FLOAT
            memcpy(&key.cval, &f, 8)
    elif k is None:
        key.ctag = T_NONE
    elif PyBytes_Check(k):
        owner = k
        key.ctag = T_BYTES
    elif PyTuple_Check(k):
        buf = bytearray()
        try:
            for x in <tuple>k:
                canon_append(buf, x, 1)
        except UnsupportedTypeError:
            if not lookup:
                raise
            key.ctag = T_EMPTY
            return None
        owner = bytes(buf)
        key.ctag = T_KTUPLE
    else:
        err = _unhashable(k)
        if lookup and isinstance(err, UnsupportedTypeError):
            key.ctag = T_EMPTY
            return None
        raise err
    return owner


def _key_form(Segment seg, k):
    """(canonical tag, canonical bytes, hash) of key k in seg: for tests,
    which check the hash against SipHash-1-3 of bytes + tag."""
    cdef Key key
    owner = make_key(seg, k, &key)
    if key.ctag == T_INT or key.ctag == T_FLOAT:
        data = PyBytes_FromStringAndSize(<char *>&key.cval, 8)
    else:
        data = PyBytes_FromStringAndSize(key.data, key.len) if key.len else b""
    return key.ctag, data, key.hash


cdef object parse_canon(const char *p, uint64_t n, uint64_t *pos, int depth):
    """Decode one canonical key element at p[pos]."""
    cdef uint8_t tag
    cdef uint64_t ln, cnt, i
    cdef int64_t v
    cdef double f
    if pos[0] >= n or depth > MAX_KEY_DEPTH + 1:
        raise CorruptSegmentError("malformed tuple key")
    tag = <uint8_t>p[pos[0]]
    pos[0] += 1
    if tag == T_NONE:
        return None
    if tag == T_TRUE or tag == T_FALSE:
        return tag == T_TRUE
    if tag == T_INT or tag == T_FLOAT:
        if n - pos[0] < 8:
            raise CorruptSegmentError("malformed tuple key")
        pos[0] += 8
        if tag == T_INT:
            memcpy(&v, p + pos[0] - 8, 8)
            return v
        memcpy(&f, p + pos[0] - 8, 8)
        return f
    if n - pos[0] < 8:
        raise CorruptSegmentError("malformed tuple key")
    memcpy(&ln, p + pos[0], 8)
    pos[0] += 8
    if tag == T_KTUPLE:
        if ln > n:
            raise CorruptSegmentError("malformed tuple key")
        return tuple([parse_canon(p, n, pos, depth + 1) for i in range(ln)])
    if ln > n - pos[0]:
        raise CorruptSegmentError("malformed tuple key")
    pos[0] += ln
    if tag == T_STR:
        return stored_str(p + pos[0] - ln, ln, False)
    if tag == T_BYTES:
        return PyBytes_FromStringAndSize(p + pos[0] - ln, ln)
    if tag == T_BIGINT:
        return int.from_bytes(PyBytes_FromStringAndSize(p + pos[0] - ln, ln), "little", signed=True)
    raise CorruptSegmentError("malformed tuple key")
