# cython: language_level=3, cdivision=True
"""Python objects <-> shared values, and the node types behind SharedDict and
SharedList.

Writing is two phases. Outside the lock, a Plan walks the Python object
(iteratively: nesting may be 100,000 deep), checks every type, converts keys
to hashed canonical form and lays out every block it will need, with a memo
so that cycles and objects reached twice keep their shape. Under the lock,
the plan allocates all its blocks (rolling back if one fails, so a full
segment changes nothing), fills them, and the operation publishes the root
cell. No Python code runs under the lock.

Reading goes through one helper, `read_section`: run a read function
optimistically, validate the segment's write sequence, retry on overlap, and
after MAX_RETRIES take the lock. Read functions only copy out of the segment
and build builtin objects.

Keys are compared in canonical form: bool and integral floats are ints
(1 == 1.0 == True), -0.0 is 0, str is UTF-8, a tuple is its canonical
encoding. The hash is SipHash-1-3 of that form and the canonical tag, keyed
by the segment's 128-bit secret seed.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from cpython.number cimport PyNumber_Add
from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_ITEM
from cpython.object cimport Py_TYPE
from cpython.ref cimport Py_INCREF, Py_REFCNT, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.math cimport floor, isfinite
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcmp, memcpy, memset

from dshared._heap cimport *
from cpython.object cimport PyObject

from operator import length_hint

from dshared._errors import (CorruptSegmentError, DsharedError, SegmentFullError, StaleReferenceError,
                             UnsupportedTypeError)


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_New(Py_ssize_t size, unsigned int maxchar)
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size)
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    bint PyLong_Check(object o)
    bint PyBool_Check(object o)
    bint PyFloat_Check(object o)
    bint PyUnicode_Check(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyBytes_Check(object o)
    bint PyTuple_Check(object o)
    bint PyList_Check(object o)
    bint PyDict_Check(object o)
    void PyErr_Clear()


cdef extern from *:
    """
    /* A new instance of a view type through its C-level tp_new (the type is
       SharedDict/SharedList, whose tp_new is the node type's): no Python call.
       The one argument is a token that only this module holds: Node.__cinit__
       refuses every other call, so Python code cannot make a view with no
       segment behind it. */
    static PyObject *ds_view_args;
    static inline int ds_set_view_token(PyObject *token) {
        if (!ds_view_args && !(ds_view_args = PyTuple_Pack(1, token)))
            return -1;
        return 0;
    }
    static inline PyObject *ds_new_view(PyObject *type) {
        return ((PyTypeObject *)type)->tp_new((PyTypeObject *)type, ds_view_args, NULL);
    }
    """
    int ds_set_view_token(object token) except -1
    object ds_new_view(object type)


cdef object _VIEW_TOKEN = object()
ds_set_view_token(_VIEW_TOKEN)


cdef extern from *:
    """
    /* UTF-8 with lone surrogates, as stored; None for bytes that are not. */
    static PyObject *ds_stored_utf8(const char *s, Py_ssize_t n) {
        PyObject *r = PyUnicode_DecodeUTF8(s, n, "surrogatepass");
        if (r == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            Py_INCREF(Py_None);
            return Py_None;
        }
        return r;
    }
    """
    object ds_stored_utf8(const char *s, Py_ssize_t n)


cdef extern from *:
    """
    /* A dict with room for n items: no resize while a bulk read fills it
       (each resize re-inserts every item, and a table sized for the final
       count probes less). CPython's own presizing where it is available. */
    static PyObject *ds_dict_presized(Py_ssize_t n) {
    #if defined(PYPY_VERSION) || PY_VERSION_HEX >= 0x030D0000
        (void)n;
        return PyDict_New();
    #else
        return _PyDict_NewPresized(n > 0 ? n : 0);
    #endif
    }
    """
    dict ds_dict_presized(Py_ssize_t n)


cdef extern from "dshared_gc.h":
    int ds_gc_disable()
    void ds_gc_enable()


cdef enum:
    VIEW_CACHE = 64
    LONG_READ_TRIES = 4
    REF_NONE = -1
    REF_EXISTING = -2
    MAX_KEY_DEPTH = 100
    MAX_TUPLE_DEPTH = 1000

# SharedDict / SharedList, registered by dshared._collections
cdef object DictType = None
cdef object ListType = None


def register_types(dict_type, list_type):
    global DictType, ListType
    DictType = dict_type
    ListType = list_type


# ---------------------------------------------------------------------------
# keys

cdef inline uint64_t key_hash(Segment seg, uint8_t ctag, const void *data, uint64_t n) noexcept:
    return ds_hash(seg.hdr.seed0, seg.hdr.seed1, ctag, data, n)


cdef inline uint64_t key_hash_u64(Segment seg, uint8_t ctag, uint64_t v) noexcept:
    """key_hash of the 8 bytes of v (an int or float key)."""
    return ds_hash_u64(seg.hdr.seed0, seg.hdr.seed1, ctag, v)


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


cdef inline bint bytes_ascii(const char *p, Py_ssize_t n) noexcept nogil:
    """No byte of p[:n] has its high bit set (word at a time; up to 16
    bytes, the common case, take two overlapping loads)."""
    cdef uint64_t acc = 0
    cdef Py_ssize_t i = 0
    if n > 16:
        while i + 8 <= n:
            acc |= ds_ld64(p + i)
            i += 8
        acc |= ds_ld64(p + n - 8)
    elif n >= 8:
        acc = ds_ld64(p) | ds_ld64(p + n - 8)
    elif n >= 4:
        acc = ds_ld32(p) | ds_ld32(p + n - 4)
    elif n > 0:
        acc = <uint8_t>p[0] | <uint8_t>p[n >> 1] | <uint8_t>p[n - 1]
    return (acc & 0x8080808080808080ULL) == 0


cdef inline object stored_str(const char *data, Py_ssize_t n, bint ascii):
    """The str of stored text: every str a read returns is made here. Bytes
    flagged ASCII are checked first (a str whose ASCII flag lies breaks
    CPython: its length, its encode(), even iterating over it); the rest is
    UTF-8 with lone surrogates kept, as the encoder stores it. Bytes that are
    neither are damage: CorruptSegmentError, never a UnicodeDecodeError."""
    if ascii:
        if not bytes_ascii(data, n):
            raise CorruptSegmentError("a str flagged ASCII holds non-ASCII bytes")
        s = PyUnicode_New(n, 127)
        memcpy(PyUnicode_DATA(s), data, n)
        return s
    s = ds_stored_utf8(data, n)
    if s is None:
        raise CorruptSegmentError("a stored str of %d bytes is not UTF-8" % n)
    return s


cdef inline bint float_as_int(double f, int64_t *out) noexcept:
    if -9.2233720368547758e18 <= f < 9.2233720368547758e18 and f == <double>(<int64_t>f):
        out[0] = <int64_t>f
        return True
    return False


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
        if float_as_int(f, &v):
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
    cdef int overflow = 0
    cdef int64_t v
    cdef double f
    cdef bint ascii
    cdef uint8_t whole[DS_WHOLE_DOUBLE_MAX]
    if seg.base == NULL:
        seg.check_open()            # raises: the hash seed lives in the segment
    if PyUnicode_CheckExact(k) and PyUnicode_IS_ASCII(k):
        # the common case first: an ASCII str is its own UTF-8
        key.ctag = T_STR
        key.data = <const char *>PyUnicode_DATA(k)
        key.len = PyUnicode_GET_LENGTH(k)
        key.cval = 0
        key.hash = key_hash(seg, T_STR, key.data, key.len)
        return k
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
        if float_as_int(f, &v):
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
            key.hash = 0
            return None
        owner = bytes(buf)
        key.ctag = T_KTUPLE
    else:
        err = _unhashable(k)
        if lookup and isinstance(err, UnsupportedTypeError):
            key.ctag = T_EMPTY          # matches nothing
            key.hash = 0
            return None
        raise err
    if key.ctag == T_BYTES or key.ctag == T_BIGINT or key.ctag == T_KTUPLE:
        key.data = PyBytes_AS_STRING(owner)
        key.len = PyBytes_GET_SIZE(owner)
    if key.ctag == T_INT or key.ctag == T_FLOAT:
        key.hash = key_hash_u64(seg, key.ctag, key.cval)
    else:
        key.hash = key_hash(seg, key.ctag, key.data, key.len)
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


# ---------------------------------------------------------------------------
# encoding: inline cells and plans

cdef inline void cell_set(Cell *c, uint8_t tag, uint64_t payload) noexcept nogil:
    memset(c, 0, CELL_SIZE)
    c.b[0] = tag
    ds_st64(&c.b[8], payload)


cdef inline void cell_container(Cell *c, uint8_t tag, uint64_t off, uint32_t gen) noexcept nogil:
    """A reference to a dict or list block: its generation rides along in
    b[4:8], so a reader makes a view without touching the block."""
    cell_set(c, tag, off)
    memcpy(&c.b[4], &gen, 4)


cdef inline void cell_inline(Cell *c, uint8_t tag, const char *data, uint64_t n, bint ascii) noexcept nogil:
    memset(c, 0, CELL_SIZE)
    c.b[0] = tag
    c.b[1] = <uint8_t>(n | (0x80 if ascii else 0))
    memcpy(&c.b[2], data, n)


cdef int encode_scalar(object v, Cell *c) except -1:
    """Encode v into c if it needs no block: 1 if done, 0 if not."""
    cdef int overflow = 0
    cdef int64_t i
    cdef double f
    cdef const char *data
    cdef uint64_t n
    cdef bint ascii
    if PyUnicode_Check(v):
        if PyUnicode_IS_ASCII(v) and PyUnicode_GET_LENGTH(v) <= INLINE_MAX:
            cell_inline(c, T_SSTR, <const char *>PyUnicode_DATA(v), PyUnicode_GET_LENGTH(v), True)
            return 1
        if PyUnicode_GET_LENGTH(v) <= INLINE_MAX:
            owner = str_utf8(v, &data, &n, &ascii)
            if n <= INLINE_MAX:
                cell_inline(c, T_SSTR, data, n, False)
                return 1
        return 0
    if PyBool_Check(v):
        cell_set(c, T_TRUE if v else T_FALSE, 0)
        return 1
    if PyLong_Check(v):
        i = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow:
            return 0
        cell_set(c, T_INT, <uint64_t>i)
        return 1
    if PyFloat_Check(v):
        f = PyFloat_AS_DOUBLE(v)
        memset(c, 0, CELL_SIZE)
        c.b[0] = T_FLOAT
        memcpy(&c.b[8], &f, 8)
        return 1
    if v is None:
        cell_set(c, T_NONE, 0)
        return 1
    if PyBytes_Check(v) and PyBytes_GET_SIZE(v) <= INLINE_MAX:
        cell_inline(c, T_SBYTES, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), False)
        return 1
    return 0


cdef bint pack_pair(Cell *area, object k, const Key *key, object v) except -1:
    """Pack a short str key and a short str/bytes value into one entry's two
    cells (T_PACKED); False if they do not fit."""
    cdef const char *data
    cdef uint64_t vlen
    cdef bint ascii
    cdef uint8_t vtag
    if key.ctag != T_STR or key.len > INLINE_MAX or not PyUnicode_Check(k):
        return False
    if PyUnicode_Check(v):
        if PyUnicode_IS_ASCII(v):
            if key.len + <uint64_t>PyUnicode_GET_LENGTH(v) > PACKED_MAX:
                return False
            data = <const char *>PyUnicode_DATA(v)
            vlen = PyUnicode_GET_LENGTH(v)
            ascii = True
        else:
            if key.len + <uint64_t>PyUnicode_GET_LENGTH(v) > PACKED_MAX:
                return False        # UTF-8 is at least as long as the code points
            owner = str_utf8(v, &data, &vlen, &ascii)
            if key.len + vlen > PACKED_MAX:
                return False
        vtag = T_SSTR
    elif PyBytes_Check(v):
        vlen = PyBytes_GET_SIZE(v)
        if key.len + vlen > PACKED_MAX:
            return False
        data = PyBytes_AS_STRING(v)
        ascii = False
        vtag = T_SBYTES
    else:
        return False
    memset(area, 0, 2 * CELL_SIZE)
    area.b[0] = T_PACKED
    area.b[1] = <uint8_t>(key.len | (0x80 if PyUnicode_IS_ASCII(k) else 0))
    area.b[2] = vtag
    area.b[3] = <uint8_t>(vlen | (0x80 if ascii else 0))
    memcpy(&area.b[4], key.data, key.len)
    memcpy(&area.b[4 + key.len], data, vlen)
    return True


cdef object packed_str(const uint8_t *data, uint8_t meta, bint is_bytes):
    cdef uint8_t n = meta & 0x7f
    if is_bytes:
        return PyBytes_FromStringAndSize(<const char *>data, n)
    return stored_str(<const char *>data, n, meta & 0x80)


# the tags a key cell may hold (T_PACKED aside): hashable values only. A
# container tag there would read back as a view, which is unhashable.
cdef uint32_t KEY_TAGS = ((1 << T_NONE) | (1 << T_FALSE) | (1 << T_TRUE) | (1 << T_INT) | (1 << T_FLOAT)
                          | (1 << T_SSTR) | (1 << T_SBYTES) | (1 << T_STR) | (1 << T_BYTES)
                          | (1 << T_BIGINT) | (1 << T_KTUPLE))


cdef object entry_key(Segment seg, const Entry *e):
    """The key of a dict entry: every key a read returns is made here."""
    cdef uint8_t tag = e.key.b[0]
    if tag == T_PACKED:
        if (e.key.b[1] & 0x7f) > INLINE_MAX:
            raise CorruptSegmentError("packed entry with a key of %d bytes" % (e.key.b[1] & 0x7f))
        return packed_str(&e.key.b[4], e.key.b[1], False)
    if tag > 31 or not (KEY_TAGS & (<uint32_t>1 << tag)):
        raise CorruptSegmentError("a dict key cell holds tag %d, which no key has" % tag)
    return decode(seg, &e.key, 0)


cdef object entry_value(Segment seg, const Entry *e, bint deep):
    """The value of a dict entry (deep: dicts and lists as plain copies)."""
    cdef uint8_t kl
    if e.key.b[0] == T_PACKED:
        kl = e.key.b[1] & 0x7f
        if kl > INLINE_MAX or kl + (e.key.b[3] & 0x7f) > PACKED_MAX:
            raise CorruptSegmentError("packed entry with bad lengths")
        return packed_str(&e.key.b[4 + kl], e.key.b[3], e.key.b[2] == T_SBYTES)
    if deep:
        return deep_decode(seg, &e.value)
    return decode(seg, &e.value, 0)


cdef struct PBlock:
    int kind
    uint64_t payload
    uint64_t off
    uint32_t rc
    const char *data
    uint64_t len
    uint64_t flags
    uint64_t first
    uint64_t n

cdef struct PCell:
    Cell cell
    int64_t ref                 # REF_NONE, REF_EXISTING or a plan block index
    uint32_t gen
    uint64_t hash               # dict entries: the key's hash (on the key cell)


cpdef list as_list(object values):
    """The items of an iterable as list.extend takes them: through iter(),
    consulting __length_hint__ (whose errors propagate) only as a hint, so a
    huge hint allocates nothing."""
    if type(values) is list or type(values) is tuple:
        return list(values)
    it = iter(values)
    length_hint(values)
    return [x for x in it]


cpdef list mapping_items(object m):
    """The (key, value) pairs of a mapping as dict(m) and dict.update(m) take
    them: a dict, or a dict subclass that keeps dict's __iter__, is read
    directly (its own keys() and __getitem__ are not called, as CPython's
    dict_merge); anything else through list(m.keys()) and m[k] (so an
    OrderedDict gives its own order)."""
    if type(m) is dict or (PyDict_Check(m) and type(m).__iter__ is dict.__iter__):
        return list(dict.items(m))
    keys = m.keys()
    if type(keys) is not list:
        try:
            it = iter(keys)
        except TypeError:
            raise TypeError("%s.keys() returned a non-iterable (type %s)"
                            % (type(m).__name__, type(keys).__name__)) from None
        keys = list(it)
    return [(k, m[k]) for k in keys]


cpdef list update_pairs(object other):
    """The (key, value) pairs of an iterable of pairs as dict.update reads
    them (PySequence_Fast: a list or tuple as is, anything else through its
    iterator), with dict.update's errors. A 2-tuple is kept as it is."""
    cdef list pairs = []
    cdef Py_ssize_t i = 0, n
    for item in other:
        if type(item) is not tuple and type(item) is not list:
            try:
                item = list(iter(item))
            except TypeError:
                raise TypeError("cannot convert dictionary update sequence element #%d to a "
                                "sequence" % i) from None
        n = len(item)
        if n != 2:
            raise ValueError("dictionary update sequence element #%d has length %d; 2 is required"
                             % (i, n))
        if type(item) is not tuple:
            item = (item[0], item[1])
        pairs.append(item)
        i += 1
    return pairs


# Where a Plan is: its blocks laid out only, or allocated and filled (then
# rollback() frees them again).
cdef enum PlanState:
    PLAN_PLANNED = 0
    PLAN_MATERIALIZED = 1


cdef struct MemoSlot:
    uint64_t addr               # the object's address (0: an empty slot)
    int64_t bi                  # the plan block made for it


cdef inline uint64_t memo_slot0(uint64_t addr, uint64_t mask) noexcept nogil:
    """Objects made one after another lie close together, and so do their
    slots (the misses of a big list's items stay in few lines); the higher
    bits folded in spread objects at a large common stride (page-aligned
    big objects)."""
    cdef uint64_t a = addr >> 3
    return (a ^ (a >> 9) ^ (a >> 21)) & mask


cdef class Plan:
    """Everything one write stores, laid out before the lock is taken."""
    cdef Segment seg
    cdef PBlock *blocks
    cdef PCell *cells
    cdef uint64_t nblocks, capblocks, ncells, capcells
    cdef list keep
    # objects already planned -> their block (an object reached twice is
    # stored once): a C table keyed by address (the objects are kept alive
    # in `keep`); a Python dict keyed by id() made an int per object and
    # left the cache past ~100k values (10% of a big extend())
    cdef MemoSlot *memo
    cdef uint64_t mcap, mcount
    cdef dict kmemo
    cdef list stack
    cdef PlanState state

    def __cinit__(self, Segment seg):
        self.seg = seg
        self.keep = []
        self.kmemo = {}

    def __dealloc__(self):
        free(self.blocks)
        free(self.cells)
        free(self.memo)

    cdef int64_t memo_get(self, object o) noexcept:
        """The block planned for object o, or -1."""
        cdef uint64_t addr = <uint64_t><PyObject *>o, mask, i
        if self.mcap == 0:
            return -1
        mask = self.mcap - 1
        i = memo_slot0(addr, mask)
        while self.memo[i].addr != 0:
            if self.memo[i].addr == addr:
                return self.memo[i].bi
            i = (i + 1) & mask
        return -1

    cdef int memo_put(self, object o, int64_t bi) except -1:
        """Remember that object o (kept alive by the caller) is block bi."""
        cdef uint64_t addr = <uint64_t><PyObject *>o, mask, i, j, ncap
        cdef MemoSlot *g
        if (self.mcount + 1) * 2 > self.mcap:
            ncap = self.mcap * 2 if self.mcap else 64
            g = <MemoSlot *>calloc(ncap, sizeof(MemoSlot))
            if g == NULL:
                raise MemoryError()
            mask = ncap - 1
            for j in range(self.mcap):
                if self.memo[j].addr != 0:
                    i = memo_slot0(self.memo[j].addr, mask)
                    while g[i].addr != 0:
                        i = (i + 1) & mask
                    g[i] = self.memo[j]
            free(self.memo)
            self.memo = g
            self.mcap = ncap
        mask = self.mcap - 1
        i = memo_slot0(addr, mask)
        while self.memo[i].addr != 0 and self.memo[i].addr != addr:
            i = (i + 1) & mask
        if self.memo[i].addr == 0:
            self.mcount += 1
        self.memo[i].addr = addr
        self.memo[i].bi = bi
        return 0

    cdef int64_t new_block(self, int kind, uint64_t payload) except -1:
        cdef PBlock *g
        if self.nblocks == self.capblocks:
            g = <PBlock *>realloc(self.blocks, (self.capblocks * 2 + 8) * sizeof(PBlock))
            if g == NULL:
                raise MemoryError()
            self.blocks = g
            self.capblocks = self.capblocks * 2 + 8
        memset(&self.blocks[self.nblocks], 0, sizeof(PBlock))
        self.blocks[self.nblocks].kind = kind
        self.blocks[self.nblocks].payload = payload
        self.nblocks += 1
        return self.nblocks - 1

    cdef int64_t new_cells(self, uint64_t n) except -1:
        cdef PCell *g
        cdef uint64_t want
        if self.ncells + n > self.capcells:
            want = max(self.capcells * 2, self.ncells + n) + 8
            g = <PCell *>realloc(self.cells, want * sizeof(PCell))
            if g == NULL:
                raise MemoryError()
            self.cells = g
            self.capcells = want
        memset(&self.cells[self.ncells], 0, n * sizeof(PCell))
        for i in range(self.ncells, self.ncells + n):
            self.cells[i].ref = REF_NONE
        self.ncells += n
        return self.ncells - n

    cdef inline void ref_block(self, int64_t ci, uint8_t tag, int64_t bi) noexcept:
        self.cells[ci].cell.b[0] = tag
        self.cells[ci].ref = bi
        self.blocks[bi].rc += 1

    cdef int64_t bytes_block(self, int kind, object owner, const char *data, uint64_t n, uint64_t flags) except -1:
        cdef uint64_t hdr = 16 if kind == K_STR else 8
        cdef int64_t bi = self.new_block(kind, hdr + n)
        self.keep.append(owner)
        self.blocks[bi].data = data
        self.blocks[bi].len = n
        self.blocks[bi].flags = flags
        return bi

    cdef int64_t add_root(self, object v) except -1:
        """Plan value v; returns the index of its cell."""
        cdef int64_t ci = self.new_cells(1)
        self.stack = []
        self.encode(v, ci, 0)
        self.walk()
        return ci

    cdef int64_t add_pair(self, object k, const Key *key, object v) except -1:
        """Plan a (key, value) pair as two consecutive cells, packed when they
        fit; returns the index of the first."""
        cdef int64_t ci = self.new_cells(2)
        cdef Cell tmp[2]
        if pack_pair(tmp, k, key, v):
            self.cells[ci].cell = tmp[0]          # plan cells are not contiguous Cells
            self.cells[ci + 1].cell = tmp[1]
            return ci
        self.encode_key(k, ci)
        self.stack = []
        self.encode(v, ci + 1, 0)
        self.walk()
        return ci

    cdef int64_t add_key(self, object k) except -1:
        """Plan key k (its stored form); returns the index of its cell."""
        cdef int64_t ci = self.new_cells(1)
        self.encode_key(k, ci)
        return ci

    cdef bint pack_cells(self, int64_t ci, object k, object v) except -1:
        """Turn the planned key cell ci (a short str) and its value v into a
        packed pair, if they fit."""
        cdef Key key
        cdef Cell tmp[2]
        owner = make_key(self.seg, k, &key)
        if not pack_pair(tmp, k, &key, v):
            return False
        self.cells[ci].cell = tmp[0]              # plan cells are not contiguous Cells
        self.cells[ci + 1].cell = tmp[1]
        return True

    cdef int encode_key(self, object k, int64_t ci) except -1:
        cdef Key key
        cdef Cell *c
        cdef int64_t bi
        cdef double f
        cdef int64_t iv
        owner = make_key(self.seg, k, &key)
        self.cells[ci].hash = key.hash
        c = &self.cells[ci].cell
        if key.ctag == T_STR:
            if key.len <= INLINE_MAX:
                cell_inline(c, T_SSTR, key.data, key.len, PyUnicode_IS_ASCII(k))
                return 0
            bi = self.memo_get(k)
            if bi < 0:
                bi = self.bytes_block(K_STR, owner, key.data, key.len, 1 if PyUnicode_IS_ASCII(k) else 0)
                self.keep.append(k)
                self.memo_put(k, bi)
            self.ref_block(ci, T_STR, bi)
        elif key.ctag == T_BYTES:
            if key.len <= INLINE_MAX:
                cell_inline(c, T_SBYTES, key.data, key.len, False)
                return 0
            bi = self.bytes_block(K_BYTES, owner, key.data, key.len, 0)
            self.ref_block(ci, T_BYTES, bi)
        elif key.ctag == T_BIGINT and PyFloat_Check(k):
            # a whole float beyond int64 (2.0 ** 63): hashed as the int it
            # equals, kept as a float
            encode_scalar(k, c)
        elif key.ctag == T_BIGINT:
            self.ref_block(ci, T_BIGINT, self.bytes_block(K_BIGINT, owner, key.data, key.len, 0))
        elif key.ctag == T_KTUPLE:
            blob = bytearray(key.len.to_bytes(8, "little"))
            blob += owner
            for x in <tuple>k:
                canon_append(blob, x, 1, True)
            blob = bytes(blob)
            self.ref_block(ci, T_KTUPLE, self.bytes_block(K_KTUPLE, blob, PyBytes_AS_STRING(blob),
                                                          PyBytes_GET_SIZE(blob), 0))
        else:
            # None, bool, int and float keep their type; lookups compare canonically
            encode_scalar(k, c)
        return 0

    cdef int encode(self, object v, int64_t ci, int tdepth) except -1:
        """Encode v into cell ci; containers get a block and a frame on the stack."""
        cdef Cell *c = &self.cells[ci].cell
        cdef const char *data
        cdef uint64_t n, nslots
        cdef bint ascii
        cdef int64_t bi
        cdef Node node
        if encode_scalar(v, c):
            return 0
        bi = self.memo_get(v)
        if bi >= 0:
            self.ref_block(ci, block_tag(self.blocks[bi].kind), bi)
            return 0
        if PyUnicode_Check(v):
            owner = str_utf8(v, &data, &n, &ascii)
            bi = self.bytes_block(K_STR, owner, data, n, 1 if ascii else 0)
            self.ref_block(ci, T_STR, bi)
        elif PyBytes_Check(v):
            bi = self.bytes_block(K_BYTES, v, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), 0)
            self.ref_block(ci, T_BYTES, bi)
        elif PyLong_Check(v):
            b = bigint_bytes(v)
            bi = self.bytes_block(K_BIGINT, b, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 0)
            self.ref_block(ci, T_BIGINT, bi)
        elif PyTuple_Check(v):
            if tdepth >= MAX_TUPLE_DEPTH:
                raise UnsupportedTypeError("tuples nested deeper than %d levels at %s; use lists"
                                           % (MAX_TUPLE_DEPTH, self.path()))
            # a subclass is stored as tuple(v) sees it (through its __iter__)
            items = v if type(v) is tuple else tuple(as_list(v))
            n = PyTuple_GET_SIZE(items)
            bi = self.new_block(K_TUPLE, 8 + CELL_SIZE * n)
            self.blocks[bi].first = self.new_cells(n)
            self.blocks[bi].n = n
            self.ref_block(ci, T_TUPLE, bi)
            self.stack.append([v, items, bi, 0, tdepth + 1])
        elif PyList_Check(v):
            # a subclass is stored as list(v) sees it (through its __iter__)
            items = list(v) if type(v) is list else as_list(v)
            n = len(<list>items)
            bi = self.new_block(K_LIST, 24)
            self.ref_block(ci, T_LIST, bi)
            if n:
                self.blocks[bi].n = n
                self.blocks[bi].first = self.new_cells(n)
                self.new_block(K_ITEMS, 8 + CELL_SIZE * n)
                self.blocks[bi + 1].rc = 1
            self.stack.append([v, items, bi, 0, 0])
        elif PyDict_Check(v):
            items = mapping_items(v)
            n = len(items)
            bi = self.new_block(K_DICT, 16)
            self.ref_block(ci, T_DICT, bi)
            if n:
                self.blocks[bi].n = n
                self.blocks[bi].first = self.new_cells(2 * n)
                # exactly n entries: a dict built whole is often never grown
                self.new_block(K_TABLE, table_bytes(n))
                self.blocks[bi + 1].rc = 1
                self.blocks[bi + 1].n = table_slots(n)
                self.blocks[bi + 1].len = n     # capacity
            self.stack.append([v, items, bi, 0, 0])
        elif isinstance(v, Node):
            node = <Node>v
            # another handle of the same segment file shares its LockState
            if node.seg is self.seg or node.seg.lk is self.seg.lk:
                cell_container(c, T_DICT if isinstance(v, DictNode) else T_LIST, node.off, node.gen)
                self.cells[ci].ref = REF_EXISTING
                self.cells[ci].gen = node.gen
                return 0
            copy = v.to_python()        # from another segment: store a copy
            self.keep.append(copy)
            return self.encode(copy, ci, tdepth)
        else:
            raise UnsupportedTypeError("dshared cannot store a value of type %s (at %s); supported: None, "
                                       "bool, int, float, str, bytes, tuple, list, dict"
                                       % (type(v).__name__, self.path() or "the top level"))
        self.keep.append(v)
        self.memo_put(v, bi)
        return 0

    cdef str path(self):
        """Where the value being encoded sits, as in ['users'][3]['tags']."""
        parts = []
        for fr in self.stack:
            j = fr[3] - 1
            if j < 0:
                continue
            if PyDict_Check(fr[0]):
                parts.append("[%r]" % (fr[1][j][0],) if j < len(fr[1]) else "")
            else:
                parts.append("[%d]" % j)
        return "".join(parts)

    cdef int walk(self) except -1:
        """Encode the children of every container frame, depth first."""
        cdef list fr
        cdef int64_t bi, first
        cdef uint64_t j
        cdef list stack = self.stack
        while stack:
            fr = <list>stack[len(stack) - 1]
            bi = fr[2]
            j = fr[3]
            if j >= self.blocks[bi].n:
                stack.pop()
                continue
            first = self.blocks[bi].first
            fr[3] = j + 1               # before the child: path() names item fr[3] - 1
            if self.blocks[bi].kind == K_DICT:
                k, v = fr[1][j]
                try:
                    self.encode_key(k, first + 2 * j)
                except TypeError as e:
                    raise type(e)("%s (key at %s)" % (e, self.path())) from None
                if self.cells[first + 2 * j].cell.b[0] == T_SSTR and (PyUnicode_Check(v) or PyBytes_Check(v)):
                    if self.pack_cells(first + 2 * j, k, v):
                        continue
                self.encode(v, first + 2 * j + 1, 0)
            else:
                self.encode(fr[1][j], first + j, fr[4])
        return 0

    # -- under the lock ----------------------------------------------------------

    cdef int materialize(self) except -1:
        """Allocate and fill every planned block; on failure nothing changed."""
        cdef Segment seg = self.seg
        cdef uint64_t i, off
        cdef PBlock *b
        cdef PCell *pc
        cdef Block *blk
        for i in range(self.ncells):
            pc = &self.cells[i]
            if pc.ref == REF_EXISTING:
                view_block(seg, ds_ld64(&pc.cell.b[8]), pc.gen, K_DICT if pc.cell.b[0] == T_DICT else K_LIST)
        for i in range(self.nblocks):
            off = seg.alloc(self.blocks[i].payload, self.blocks[i].kind)
            if off == 0:
                self.free_blocks(i)
                seg.raise_alloc_error(self.blocks[i].payload)
            self.blocks[i].off = off
        for i in range(self.ncells):
            pc = &self.cells[i]
            if pc.ref >= 0:
                off = self.blocks[pc.ref].off
                ds_st64(&pc.cell.b[8], off)
                if pc.cell.b[0] == T_DICT or pc.cell.b[0] == T_LIST:
                    memcpy(&pc.cell.b[4], &(<Block *>(seg.base + off)).gen, 4)
            elif pc.ref == REF_EXISTING:
                seg.incref(ds_ld64(&pc.cell.b[8]))
        for i in range(self.nblocks):
            self.fill(i)
        self.state = PLAN_MATERIALIZED
        return 0

    cdef void free_blocks(self, uint64_t upto) noexcept:
        cdef uint64_t i = upto
        while i > 0:
            i -= 1
            self.seg.free(self.blocks[i].off)

    cdef int rollback(self) except -1:
        """Undo materialize() (the plan's cells were never published)."""
        cdef uint64_t i
        if self.state != PLAN_MATERIALIZED:
            return 0
        for i in range(self.ncells):
            if self.cells[i].ref == REF_EXISTING:
                self.seg.decref_cell(&self.cells[i].cell)
        self.free_blocks(self.nblocks)
        self.state = PLAN_PLANNED
        return 0

    cdef int fill(self, uint64_t i) except -1:
        cdef Segment seg = self.seg
        cdef PBlock *b = &self.blocks[i]
        cdef char *p = seg.base + b.off + BLOCK_HDR
        cdef uint64_t j, t
        cdef char *q
        cdef uint64_t *hashes
        cdef Cell *cells
        (<Block *>(seg.base + b.off)).kind_rc = <uint32_t>b.kind | (b.rc << 8)
        if b.kind == K_STR:
            ds_st64(p, b.len)
            ds_st64(p + 8, b.flags)
            memcpy(p + 16, b.data, b.len)
        elif b.kind == K_BYTES or b.kind == K_BIGINT or b.kind == K_KTUPLE:
            ds_st64(p, b.len)
            memcpy(p + 8, b.data, b.len)
        elif b.kind == K_TUPLE:
            ds_st64(p, b.n)
            for j in range(b.n):
                memcpy(p + 8 + CELL_SIZE * j, &self.cells[b.first + j].cell, CELL_SIZE)
        elif b.kind == K_LIST:
            ds_st64(p, self.blocks[i + 1].off if b.n else 0)
            ds_st64(p + 8, b.n)
            ds_st64(p + 16, 0)
            if b.n:
                t = self.blocks[i + 1].off + BLOCK_HDR
                ds_st64(seg.base + t, b.n)
                for j in range(b.n):
                    memcpy(seg.base + t + 8 + CELL_SIZE * j, &self.cells[b.first + j].cell, CELL_SIZE)
        elif b.kind == K_DICT:
            ds_st64(p, self.blocks[i + 1].off if b.n else 0)
            ds_st64(p + 8, 0)
            if b.n:
                t = self.blocks[i + 1].off
                q = seg.base + t + BLOCK_HDR
                ds_st64(q, self.blocks[i + 1].n)
                ds_st64(q + 8, self.blocks[i + 1].len)
                ds_st64(q + 16, 0)
                ds_st64(q + 24, 0)
                memset(q + 32, 0xff, 4 * self.blocks[i + 1].n)
                hashes = <uint64_t *>malloc_or_raise(8 * b.n)
                cells = <Cell *>malloc_or_raise(2 * CELL_SIZE * b.n)
                for j in range(b.n):
                    hashes[j] = self.cells[b.first + 2 * j].hash
                    cells[2 * j] = self.cells[b.first + 2 * j].cell
                    cells[2 * j + 1] = self.cells[b.first + 2 * j + 1].cell
                seg.table_fill(t, hashes, cells, b.n)
                free(hashes)
                free(cells)
        return 0

    cdef Cell *cell(self, int64_t ci) noexcept:
        return &self.cells[ci].cell


cdef uint64_t new_bytes_block(Segment seg, int kind, const char *data, uint64_t n, uint64_t flags) except? 0:
    """A fresh STR or BYTES block (refcount 1) holding data (lock held)."""
    cdef uint64_t hdr = 16 if kind == K_STR else 8
    cdef uint64_t off = seg.alloc(hdr + n, kind)
    cdef char *p
    if off == 0:
        seg.raise_alloc_error(hdr + n)
    p = seg.base + off + BLOCK_HDR
    ds_st64(p, n)
    if kind == K_STR:
        ds_st64(p + 8, flags)
    memcpy(p + hdr, data, n)
    (<Block *>(seg.base + off)).kind_rc = <uint32_t>kind | (1 << 8)
    return off


cdef object refreshed(Segment seg, object err):
    """The SegmentFullError to show the caller: its message counts the bytes in
    use now that the failed operation was rolled back."""
    if not isinstance(err, SegmentFullError) or err.want is None:
        return err
    new = seg.full_error(err.want, err.errno)
    new.__suppress_context__ = True
    return new


cdef void *malloc_or_raise(size_t n) except NULL:
    cdef void *p = realloc(NULL, n if n else 1)
    if p == NULL:
        raise MemoryError()
    return p


cdef inline uint8_t block_tag(int kind) noexcept:
    if kind == K_STR:
        return T_STR
    if kind == K_BYTES:
        return T_BYTES
    if kind == K_BIGINT:
        return T_BIGINT
    if kind == K_TUPLE:
        return T_TUPLE
    if kind == K_DICT:
        return T_DICT
    if kind == K_LIST:
        return T_LIST
    return T_KTUPLE


# ---------------------------------------------------------------------------
# decoding

cdef object decode(Segment seg, const Cell *c, int depth):
    """The Python value of a cell: scalars and strings by value, tuples
    recursively, dicts and lists as live views."""
    cdef uint8_t tag = c.b[0]
    cdef int64_t v
    cdef double f
    cdef uint8_t n
    cdef const char *data
    cdef uint64_t ln, off, i
    cdef uint32_t gen
    cdef char *p
    if tag == T_SSTR:
        n = c.b[1] & 0x7f
        if n > INLINE_MAX:
            raise CorruptSegmentError("inline string of %d bytes" % n)
        return stored_str(<const char *>&c.b[2], n, c.b[1] & 0x80)
    if tag == T_INT:
        memcpy(&v, &c.b[8], 8)
        return PyLong_FromLongLong(v)
    if tag == T_FLOAT:
        memcpy(&f, &c.b[8], 8)
        return PyFloat_FromDouble(f)
    if tag == T_NONE:
        return None
    if tag == T_TRUE:
        return True
    if tag == T_FALSE:
        return False
    if tag == T_SBYTES:
        n = c.b[1] & 0x7f
        if n > INLINE_MAX:
            raise CorruptSegmentError("inline bytes of %d bytes" % n)
        return PyBytes_FromStringAndSize(<const char *>&c.b[2], n)
    off = ds_ld64(&c.b[8])
    if tag == T_STR:
        blk = checked_block(seg, off, K_STR)
        data = seg.base + off + BLOCK_HDR + 16
        ln = ds_ld64(data - 16)
        if ln > <uint64_t>blk.size16 * ALIGN - BLOCK_HDR - 16:
            raise CorruptSegmentError("str block at %d claims %d bytes" % (off, ln))
        return stored_str(data, ln, ds_ld64(data - 8) & 1)
    if tag == T_BYTES:
        block_bytes(seg, off, K_BYTES, &data, &ln)
        return PyBytes_FromStringAndSize(data, ln)
    if tag == T_DICT or tag == T_LIST:
        if off < seg.lim - 192:
            # the view's first use reads the block and the table that was
            # allocated right after it: start loading both now
            ds_prefetch(seg.base + off, 192)
        memcpy(&gen, &c.b[4], 4)
        return make_view(seg, off, tag_kind(tag), gen)
    if tag == T_BIGINT:
        block_bytes(seg, off, K_BIGINT, &data, &ln)
        return int.from_bytes(PyBytes_FromStringAndSize(data, ln), "little", signed=True)
    if tag == T_TUPLE:
        if depth > MAX_TUPLE_DEPTH + 1:
            raise CorruptSegmentError("tuples nested too deep")
        blk = checked_block(seg, off, K_TUPLE)
        p = seg.base + off + BLOCK_HDR
        ln = ds_ld64(p)
        if ln > (<uint64_t>blk.size16 * ALIGN - BLOCK_HDR - 8) // CELL_SIZE:
            raise CorruptSegmentError("tuple at %d claims %d items" % (off, ln))
        t = PyTuple_New(ln)
        for i in range(ln):
            x = decode(seg, <Cell *>(p + 8 + CELL_SIZE * i), depth + 1)
            Py_INCREF(x)
            PyTuple_SET_ITEM(t, i, x)
        return t
    if tag == T_KTUPLE:
        block_bytes(seg, off, K_KTUPLE, &data, &ln)
        return parse_ktuple(data, ln)
    raise CorruptSegmentError("cell with unknown tag %d" % tag)


cdef object parse_ktuple(const char *data, uint64_t ln):
    """A stored tuple key: skip the canonical part, read the typed one."""
    cdef uint64_t pos, clen
    if ln < 8:
        raise CorruptSegmentError("malformed tuple key")
    clen = ds_ld64(data)
    if clen > ln - 8:
        raise CorruptSegmentError("malformed tuple key")
    pos = 8 + clen
    out = []
    while pos < ln:
        out.append(parse_canon(data, ln, &pos, 1))
    return tuple(out)


cdef object make_view(Segment seg, uint64_t off, int kind, uint32_t gen):
    """The view of container block `off` of generation `gen` (from the
    referring cell): the block itself is checked on the view's first use.

    Views are kept in a small cache, direct-mapped by offset. A view that only
    the cache still references is recycled for the new one rather than freed:
    nobody else can see it change, and reading many containers in turn then
    allocates nothing."""
    cdef Node node
    cdef PyObject *slot_obj
    cdef list cache = seg._views
    cdef Py_ssize_t slot = (off >> 4) & (VIEW_CACHE - 1)
    vtype = DictType if kind == K_DICT else ListType
    if cache is None:
        cache = seg._views = [None] * VIEW_CACHE
    else:
        slot_obj = PyList_GET_ITEM(cache, slot)
        if <PyObject *>Py_TYPE(<object>slot_obj) == <PyObject *>vtype:
            node = <Node>slot_obj
            # a view is immutable (segment, offset, generation): share it
            if node.off == off and node.gen == gen:
                return node
            if Py_REFCNT(node) == 2:         # the cache and `node`: nobody else
                node.off = off
                node.gen = gen
                return node
    # the C-level tp_new of the base, with the Python subclass as the type
    node = <Node>ds_new_view(vtype)
    node.seg = seg
    node.off = off
    node.gen = gen
    cache[slot] = node
    return node


# ---------------------------------------------------------------------------
# the read section

ctypedef object (*ReadFn)(Node node, void *arg)
ctypedef PyObject *(*RawReadFn)(Node node, void *arg) noexcept     # the same, as C sees it


cdef object read_section(Node node, ReadFn fn, void *arg, int tries=MAX_RETRIES):
    """Run fn without the lock, validated by the write sequence; retry when a
    write overlapped; after `tries` attempts, run it under the lock. Long
    reads (whole copies) pass few tries: under steady writes they would
    rarely get through, and each attempt costs the whole read.

    The first attempt is the hot path of every read and runs without any
    exception bookkeeping; a read that raised or overlapped a write goes on
    in read_retry."""
    cdef Segment seg = node.seg
    cdef uint64_t s
    cdef PyObject *r
    if seg.base == NULL:
        seg.check_open()
    if seg.hdr.flags & FLAG_POISONED:
        raise CorruptSegmentError("segment %r was marked corrupt by a failed repair" % seg.name)
    seg.readers += 1                # no page return under this read (Segment._shrink_reserve)
    s = seq_begin(seg)
    r = (<RawReadFn>fn)(node, arg)
    # seg.faulted: the mapping faulted under the read (see Segment.raise_faulted)
    if r != NULL and seq_ok(seg, s) and not seg.faulted and view_gen_ok(seg, node.off, node.gen):
        seg.readers -= 1
        result = <object>r
        Py_XDECREF(r)
        return result
    seg.readers -= 1
    if r != NULL:
        Py_XDECREF(r)
    else:
        PyErr_Clear()               # read_retry meets it again if it was real
    return read_retry(node, fn, arg, tries)


cdef int damage(Segment seg, object e) except -1:
    """An exception a read function raised over bytes no write changed:
    returns if it is to be raised as it is, else raises CorruptSegmentError.
    Read functions run no user code (keys and slices are converted before
    the read section) and only copy out of the segment into builtin objects,
    so such an exception comes from the bytes: anything but a dshared error,
    a MemoryError (a read never asks for more than the live heap holds) or
    the ValueError of a handle closed meanwhile is damage."""
    if isinstance(e, (DsharedError, MemoryError)) or seg.base == NULL:
        return 0
    raise CorruptSegmentError("segment %r: damaged bytes (%s: %s)" % (seg.name, type(e).__name__, e)) from e


cdef object read_retry(Node node, ReadFn fn, void *arg, int tries):
    cdef Segment seg = node.seg
    cdef uint64_t s
    cdef int attempt, was
    seg.readers += 1
    try:
        for attempt in range(tries):
            if seg.faulted:
                seg.raise_faulted()
            s = seq_begin(seg)
            try:
                r = fn(node, arg)
            except Exception as e:
                if seg.faulted:
                    seg.raise_faulted()     # the read met a fault: what it saw was zeros
                if seq_ok(seg, s):
                    _raise_if_freed(node)
                    damage(seg, e)
                    raise
                continue
            if seg.faulted:
                seg.raise_faulted()
            if seq_ok(seg, s):
                # the container was freed while it was read: as a read after it
                _raise_if_freed(node)
                return r
    finally:
        seg.readers -= 1
    seg.lock_acquire(-1)
    if seg.wdepth == 0 and seg.lk.bdepth == 0:
        seg._settle()               # a sequence left odd by no writer would slow every read
                                    # (not inside this thread's block: its journal is live)
    was = ds_gc_disable()
    try:
        try:
            r = fn(node, arg)
        except Exception as e:
            if seg.faulted:
                seg.raise_faulted()
            damage(seg, e)
            raise
        if seg.faulted:
            seg.raise_faulted()
        return r
    finally:
        if was:
            ds_gc_enable()
        seg.lock_release()


cdef int _raise_if_freed(Node node) except -1:
    """StaleReferenceError if the view's container was freed during a read
    (the read may have seen its memory being reused)."""
    cdef Segment seg = node.seg
    if seg.inb(node.off, BLOCK_HDR) and not view_gen_ok(seg, node.off, node.gen):
        seg.bad_view(node.off, node.gen, K_DICT if isinstance(node, DictNode) else K_LIST)
    return 0


# ---------------------------------------------------------------------------
# node types

cdef class Node:
    """A view of a shared container: segment + block offset + generation."""
    cdef Segment seg
    cdef uint64_t off
    cdef uint32_t gen

    def __cinit__(self, *args):
        # Only make_view and _rebuild make views (with the module's token); a
        # view built by Python code would have no segment behind it.
        if PyTuple_GET_SIZE(args) != 1 or <PyObject *>PyTuple_GET_ITEM(args, 0) != <PyObject *>_VIEW_TOKEN:
            name = type(self).__name__
            raise TypeError("%s cannot be created directly: it is a view of a container in a "
                            "segment. Store a %s in one (shm['k'] = %s) and read it back "
                            "(shm['k']), or use dshared.col() for a top-level SharedDict"
                            % (name, "dict" if isinstance(self, DictNode) else "list",
                               "{}" if isinstance(self, DictNode) else "[]"))

    @property
    def segment(self):
        """The Segment this view belongs to."""
        return self.seg

    def _identity(self):
        return (id(self.seg), self.off)

    def __reduce__(self):
        # a reference, never the contents: the receiver attaches by name
        return (_rebuild, (self.seg.name, isinstance(self, DictNode), self.off, self.gen))

    def to_python(self):
        """A plain deep copy: dicts, lists, tuples; shape and cycles kept."""
        return read_section(self, _rd_deep, NULL, LONG_READ_TRIES)

    cdef int check(self, int kind) except -1:
        view_block(self.seg, self.off, self.gen, kind)
        return 0


def _rebuild(name, is_dict, off, gen):
    from dshared._heap import attach_cached
    cdef Segment seg = attach_cached(name)
    cdef Node node = <Node>ds_new_view(DictType if is_dict else ListType)
    node.seg = seg
    node.off = off
    node.gen = gen
    return node


def root_view(Segment seg, name=None):
    """The root SharedDict of seg, or the named top-level dict `name`."""
    cdef Node names
    seg.check_open()
    if name is None:
        return make_view(seg, seg.hdr.root, K_DICT, checked_block(seg, seg.hdr.root, K_DICT).gen)
    names = <Node>make_view(seg, seg.hdr.names, K_DICT, checked_block(seg, seg.hdr.names, K_DICT).gen)
    return (<DictNode>names).setdefault_view(name)


def names_view(Segment seg):
    """The dict of seg's named collections: name -> SharedDict."""
    seg.check_open()
    return make_view(seg, seg.hdr.names, K_DICT, checked_block(seg, seg.hdr.names, K_DICT).gen)


# What a dict iterator yields (DictIter.mode, DArg.mode): the SharedDict
# views of _collections.py pass the same numbers to DictNode._iter.
cdef enum IterMode:
    IT_KEYS = 0
    IT_VALUES = 1
    IT_ITEMS = 2
    IT_WHAT = 3                 # the mask of the three above
    IT_REVERSED = 4             # walk backwards


# What DictNode.store does with a key already present.
cdef enum StoreMode:
    ST_SET = 0                  # d[k] = v: overwrite
    ST_SETDEFAULT = 1           # keep it; return the value stored (or v, stored)


cdef struct DArg:
    Key *key
    int64_t ix
    uint64_t version
    int mode                    # IterMode
    int64_t hint                # _rd_get: the entry to try first (-1: none)


cdef object _rd_get(Node node, void *arg):
    cdef DArg *a = <DArg *>arg
    cdef Segment seg = node.seg
    cdef TableView tv
    cdef Entry *e
    view_block(seg, node.off, node.gen, K_DICT)
    table_view(seg, node.off, &tv)
    # keys read in entry order (`for k in d: d[k]`, dict(d), which looks up
    # every key of d.keys()): the entry after the last one found is tried
    # before the probe, so that the walk reads the entries in memory order
    # instead of missing the cache twice per key in a big table
    e = &tv.ents[a.hint] if 0 <= a.hint < <int64_t>tv.nentries else NULL
    if e != NULL and e.hash == a.key.hash and key_matches(seg, e, a.key):
        a.ix = a.hint
    else:
        a.ix = table_lookup(seg, &tv, a.key)
    if a.ix < 0:
        return None
    return entry_value(seg, &tv.ents[a.ix], False)


cdef object _rd_contains(Node node, void *arg):
    cdef DArg *a = <DArg *>arg
    cdef Segment seg = node.seg
    cdef TableView tv
    view_block(seg, node.off, node.gen, K_DICT)
    table_view(seg, node.off, &tv)
    a.ix = table_lookup(seg, &tv, a.key)
    return None


cdef object _rd_len(Node node, void *arg):
    cdef Segment seg = node.seg
    cdef TableView tv
    view_block(seg, node.off, node.gen, K_DICT)
    table_view(seg, node.off, &tv)
    return <int64_t>tv.count


cdef object _rd_list_len(Node node, void *arg):
    node.check(K_LIST)
    return list_len(node.seg, node.off)


cdef object _rd_entry(Node node, void *arg):
    """The live entry at or after a.ix (or before it, mode | 4): key, value or item."""
    cdef DArg *a = <DArg *>arg
    cdef Segment seg = node.seg
    cdef Entry *e
    node.check(K_DICT)
    a.version = dict_version(seg, node.off)
    a.ix = dict_prev(seg, node.off, a.ix) if a.mode & IT_REVERSED else dict_next(seg, node.off, a.ix)
    if a.ix < 0:
        return None
    e = dict_entry(seg, node.off, a.ix)
    if a.mode & IT_WHAT == IT_KEYS:
        return entry_key(seg, e)
    if a.mode & IT_WHAT == IT_VALUES:
        return entry_value(seg, e, False)
    return (entry_key(seg, e), entry_value(seg, e, False))


cdef object _rd_snapshot(Node node, void *arg):
    """All (key, value) pairs, in order; with arg != NULL, a dict of them.
    The table is read once and walked in entry order (the order the entries
    lie in memory): per entry, no table check and no lookup. Python code may
    run while the objects are made (no write of this thread: a read section
    defers collection), and another process may replace the table: the
    walk stays inside the table block it checked, and the section's
    sequence check throws away whatever a change made it read."""
    cdef Segment seg = node.seg
    cdef uint64_t i
    cdef Entry *e
    cdef TableView tv
    node.check(K_DICT)
    table_view(seg, node.off, &tv)
    if arg != NULL:
        d = ds_dict_presized(<Py_ssize_t>tv.count)
        for i in range(tv.nentries):
            e = &tv.ents[i]
            if e.key.b[0] != T_EMPTY:
                d[entry_key(seg, e)] = entry_value(seg, e, False)
        return d
    out = []
    for i in range(tv.nentries):
        e = &tv.ents[i]
        if e.key.b[0] != T_EMPTY:
            out.append((entry_key(seg, e), entry_value(seg, e, False)))
    return out


cdef object _rd_version(Node node, void *arg):
    node.check(K_DICT)
    return (dict_version(node.seg, node.off), dict_len(node.seg, node.off))


cdef class DictNode(Node):
    """The C part of SharedDict: lookups, stores and iteration."""
    cdef int64_t next_ix        # the entry after the last one d[k] found (a guess, checked)

    def __getitem__(self, k):
        cdef Key key
        cdef DArg a
        owner = make_key(self.seg, k, &key, True)
        a.key = &key
        a.hint = self.next_ix
        r = read_section(self, _rd_get, &a)
        if a.ix < 0:
            raise KeyError(k)
        self.next_ix = a.ix + 1
        return r

    def get(self, k, default=None):
        """d.get(k[, default]): d[k] if k in d, else default."""
        cdef Key key
        cdef DArg a
        owner = make_key(self.seg, k, &key, True)
        a.key = &key
        a.hint = self.next_ix
        r = read_section(self, _rd_get, &a)
        if a.ix < 0:
            return default
        self.next_ix = a.ix + 1
        return r

    def __contains__(self, k):
        cdef Key key
        cdef DArg a
        owner = make_key(self.seg, k, &key, True)
        a.key = &key
        read_section(self, _rd_contains, &a)
        return a.ix >= 0

    def __len__(self):
        return read_section(self, _rd_len, NULL)

    def __iter__(self):
        return DictIter(self, IT_KEYS)

    def __reversed__(self):
        return DictIter(self, IT_KEYS | IT_REVERSED)

    def _iter(self, int mode):
        return DictIter(self, mode)

    def _snapshot(self):
        """[(key, value), ...] in one consistent read."""
        return read_section(self, _rd_snapshot, NULL, LONG_READ_TRIES)

    def _copy(self):
        """A plain dict of the top level, read in one section."""
        cdef int one = 1
        return read_section(self, _rd_snapshot, &one, LONG_READ_TRIES)

    def _version(self):
        return read_section(self, _rd_version, NULL)

    def __setitem__(self, k, v):
        self.store(k, v, ST_SET)

    def __delitem__(self, k):
        cdef Key key
        cdef Segment seg = self.seg
        cdef int64_t ix
        owner = make_key(seg, k, &key, True)     # a key dshared cannot store is absent
        seg.write_begin()
        try:
            self.check(K_DICT)
            ix = dict_find(seg, self.off, &key)
            if ix >= 0:
                seg.dict_remove(self.off, ix)
            seg.commit()
        finally:
            seg.write_end()
        if ix < 0:
            raise KeyError(k)

    cdef object store(self, object k, object v, int mode):
        """d[k] = v (ST_SET); setdefault (ST_SETDEFAULT): store only if absent and
        return the value now in d."""
        try:
            return self._store(k, v, mode)
        except SegmentFullError as e:
            err = e
        if self.seg._collect_for_retry():
            try:
                return self._store(k, v, mode)
            except SegmentFullError as e:
                err = e
        raise refreshed(self.seg, err)

    cdef object _store(self, object k, object v, int mode):
        cdef Key key
        cdef Segment seg = self.seg
        cdef Cell cv, ck, old
        cdef Plan plan = None
        cdef Plan kplan = None
        cdef int64_t ix, vi = 0, ki = 0
        cdef bint fast_k, fast_v, packed = False
        cdef Cell pair[2]
        cdef TableView tv
        cdef const char *vdata = NULL
        cdef uint64_t vlen = 0, vblock = 0
        cdef bint vascii = False
        cdef int vkind = 0
        owner = make_key(seg, k, &key)
        memset(&ck, 0, CELL_SIZE)
        fast_k = False
        if key.ctag == T_STR or key.ctag == T_BYTES:
            if key.len <= INLINE_MAX:
                cell_inline(&ck, T_SSTR if key.ctag == T_STR else T_SBYTES, key.data, key.len,
                            key.ctag == T_STR and PyUnicode_IS_ASCII(k))
                fast_k = True
        elif key.ctag != T_BIGINT and key.ctag != T_KTUPLE:
            fast_k = encode_scalar(k, &ck)
        fast_v = encode_scalar(v, &cv)
        if fast_k and (PyUnicode_Check(v) or PyBytes_Check(v)):
            packed = pack_pair(pair, k, &key, v)
        if packed:
            fast_v = True
        elif not fast_v and (PyUnicode_Check(v) or PyBytes_Check(v)):
            # one str or bytes block: written directly, no plan
            if PyUnicode_Check(v):
                vowner = str_utf8(v, &vdata, &vlen, &vascii)
                vkind = K_STR
            else:
                vowner = v
                vdata = PyBytes_AS_STRING(v)
                vlen = PyBytes_GET_SIZE(v)
                vkind = K_BYTES
        elif not fast_v:
            plan = Plan(seg)
            vi = plan.add_root(v)
        if not fast_k and not packed:
            # the key's own block: stored only if the key is new
            kplan = Plan(seg)
            ki = kplan.add_key(k)
        seg.write_begin()
        try:
            view_block(seg, self.off, self.gen, K_DICT)
            table_view(seg, self.off, &tv)          # the table, checked once
            ix = table_lookup(seg, &tv, &key)
            if ix >= 0 and mode == ST_SETDEFAULT:
                r = entry_value(seg, &tv.ents[ix], False)
                seg.commit()
                return r
            if plan is not None:
                plan.materialize()
                cv = plan.cell(vi)[0]
            elif vkind:
                vblock = new_bytes_block(seg, vkind, vdata, vlen, 1 if vascii else 0)
                cell_set(&cv, T_STR if vkind == K_STR else T_BYTES, vblock)
            if not packed:
                pair[0] = ck
                pair[1] = cv
            if ix >= 0:
                seg._entry_set(&tv.ents[ix], pair, True)   # the key already there stays
                nt_key(seg, self.off, key.hash)
            else:
                try:
                    if kplan is not None:
                        kplan.materialize()
                        ck = kplan.cell(ki)[0]
                    seg.dict_reserve(self.off, 1)
                except BaseException:
                    if kplan is not None:
                        kplan.rollback()
                    if plan is not None:
                        plan.rollback()
                    if vblock:
                        seg.free(vblock)
                    raise
                if not packed:
                    pair[0] = ck
                seg.dict_insert(self.off, &key, &pair[0], &pair[1])
            r = (v if packed else decode(seg, &cv, 0)) if mode == ST_SETDEFAULT else None
            seg.commit()
            return r
        finally:
            seg.write_end()

    def setdefault(self, k, default=None):
        """d.setdefault(k[, default]): d[k], storing default first if k is absent (atomic)."""
        try:
            return self.store(k, default, ST_SETDEFAULT)
        except UnsupportedTypeError:
            # as dict: a default that is never stored does not matter
            r = self.get(k, _MISSING)
            if r is _MISSING:
                raise
            return r

    cdef object setdefault_view(self, name):
        r = self.store(name, {}, ST_SETDEFAULT)
        if not isinstance(r, DictNode):
            # only col() writes the dict of named collections, and always a dict
            raise CorruptSegmentError("segment %r: the named collection %r is not a dict"
                                      % (self.seg.name, name))
        return r

    def pop(self, k, *default):
        """d.pop(k[, default]): remove k and return its value (a plain copy
        for a dict or list), else default, else KeyError. Atomic."""
        cdef Key key
        cdef Segment seg = self.seg
        cdef int64_t ix
        if len(default) > 1:
            raise TypeError("pop expected at most 2 arguments, got %d" % (len(default) + 1))
        owner = make_key(seg, k, &key, True)
        seg.write_begin()
        try:
            self.check(K_DICT)
            ix = dict_find(seg, self.off, &key)
            if ix >= 0:
                r = entry_value(seg, dict_entry(seg, self.off, ix), True)
                seg.dict_remove(self.off, ix)
            seg.commit()
        finally:
            seg.write_end()
        if ix < 0:
            if default:
                return default[0]
            raise KeyError(k)
        return r

    def popitem(self):
        """Remove and return the last inserted (key, value) pair (LIFO). Atomic."""
        cdef Segment seg = self.seg
        cdef int64_t ix
        cdef Entry *e
        seg.write_begin()
        try:
            self.check(K_DICT)
            ix = dict_prev(seg, self.off, INT64_MAX_)
            if ix >= 0:
                e = dict_entry(seg, self.off, ix)
                r = (entry_key(seg, e), entry_value(seg, e, True))
                seg.dict_remove(self.off, ix)
            seg.commit()
        finally:
            seg.write_end()
        if ix < 0:
            raise KeyError("popitem(): dictionary is empty")
        return r

    def clear(self):
        """Remove every item. Atomic."""
        cdef Segment seg = self.seg
        seg.write_begin()
        try:
            self.check(K_DICT)
            seg.dict_clear(self.off)
            seg.commit()
        finally:
            seg.write_end()

    def _update_pairs(self, list pairs):
        """Store [(k, v), ...] in one atomic step."""
        try:
            return self._update_once(pairs)
        except SegmentFullError as e:
            err = e
        if self.seg._collect_for_retry():
            try:
                return self._update_once(pairs)
            except SegmentFullError as e:
                err = e
        raise refreshed(self.seg, err)

    def _update_once(self, list pairs):
        cdef Segment seg = self.seg
        cdef Plan plan = Plan(seg)
        cdef Key *keys
        cdef int64_t n = len(pairs), i, ix, missing
        cdef Cell *cells = NULL
        cdef Cell pair[2]
        if n == 0:
            return
        owners = []
        roots = []
        keys = <Key *>malloc_or_raise(n * sizeof(Key))
        try:
            for i in range(n):
                k, v = pairs[i]
                owners.append(make_key(seg, k, &keys[i]))
                roots.append(plan.add_pair(k, &keys[i], v))
            seg.write_begin()
            try:
                self.check(K_DICT)
                plan.materialize()
                # room only for the keys that are new: overwrites need none
                missing = count_missing(seg, self.off, keys, n)
                if n > 4:
                    # many pairs: in place, after growing the table (by 1.25
                    # at least, so batches cost O(batch) amortized); with
                    # many overwrites, one new table published once
                    cells = <Cell *>malloc_or_raise(2 * n * CELL_SIZE)
                    for i in range(n):
                        cells[2 * i] = plan.cell(roots[i])[0]
                        cells[2 * i + 1] = plan.cell(<int64_t>roots[i] + 1)[0]
                    try:
                        if n - missing <= MANY_OVERWRITES:
                            if missing:
                                seg.dict_reserve(self.off, missing)
                            seg.dict_insert_many(self.off, keys, cells, n)
                        else:
                            seg.dict_update_fresh(self.off, keys, cells, n)
                    except BaseException:
                        plan.rollback()
                        raise
                else:
                    try:
                        if missing:
                            seg.dict_reserve(self.off, missing)
                    except BaseException:
                        plan.rollback()
                        raise
                    for i in range(n):
                        ix = dict_find(seg, self.off, &keys[i])
                        if ix >= 0:
                            pair[0] = plan.cell(roots[i])[0]
                            pair[1] = plan.cell(<int64_t>roots[i] + 1)[0]
                            seg.dict_set_pair(self.off, ix, pair)
                        else:
                            seg.dict_insert(self.off, &keys[i], plan.cell(roots[i]),
                                            plan.cell(<int64_t>roots[i] + 1))
                seg.commit()
            finally:
                seg.write_end()
                free(cells)
        finally:
            free(keys)

    def incr(self, k, delta=1, default=0):
        """Atomically add delta to d[k] (default if absent) and return the new value."""
        cdef Key key
        cdef DArg a
        cdef Segment seg = self.seg
        if not (PyLong_Check(delta) or PyFloat_Check(delta)):
            raise TypeError("incr() delta must be an int or a float, not %s" % type(delta).__name__)
        if not (PyLong_Check(default) or PyFloat_Check(default)):
            raise TypeError("incr() default must be an int or a float, not %s" % type(default).__name__)
        owner = make_key(seg, k, &key)      # before the lock: a bad key raises here
        a.key = &key
        a.hint = -1
        seg.lock_acquire(-1)
        try:
            cur = read_section(self, _rd_get, &a)
            if a.ix < 0:
                cur = default
            elif not (PyLong_Check(cur) or PyFloat_Check(cur)):
                # refused here: `cur + delta` would run a view's __add__ under the lock
                raise TypeError("incr() needs an int or a float value, not %s" % type(cur).__name__)
            # PyNumber_Add, not `+`: Cython's inlined float + int returns the
            # float itself when the int is 0, and -0.0 + 0 is 0.0
            new = PyNumber_Add(cur, delta)
            self.store(k, new, ST_SET)
        finally:
            seg.lock_release()
        return new


cdef enum:
    PF_INDEX = 16               # bulk lookups: prefetch the index slot of the key this far ahead,
    PF_ENTRY = 8                # and the entry it points to for the key this far ahead


cdef inline void prefetch_lookup(const TableView *tv, const Key *keys, int64_t i, int64_t n) noexcept nogil:
    """Bulk lookups in a big table miss the cache twice per key (index slot,
    then entry), in hash order: fetch both ahead, so that the misses of
    successive keys overlap instead of queueing. Only addresses inside the
    table are touched; a prefetch never faults."""
    cdef uint64_t mask = tv.nslots - 1
    cdef int32_t ix
    if tv.off == 0:
        return
    if i + PF_INDEX < n:
        ds_prefetch(&tv.index[keys[i + PF_INDEX].hash & mask], 4)
    if i + PF_ENTRY < n:
        ix = tv.index[keys[i + PF_ENTRY].hash & mask]
        if ix >= 0 and <uint64_t>ix < tv.nentries:
            ds_prefetch(&tv.ents[ix], sizeof(Entry))


cdef int64_t count_missing(Segment seg, uint64_t d, const Key *keys, int64_t n) except -1:
    """How many of keys[0:n] dict d lacks (lock held: the table is read once)."""
    cdef TableView tv
    cdef int64_t i, missing = 0
    table_view(seg, d, &tv)
    for i in range(n):
        prefetch_lookup(&tv, keys, i, n)
        if table_lookup(seg, &tv, &keys[i]) < 0:
            missing += 1
    return missing


cdef int64_t INT64_MAX_ = 0x7FFFFFFFFFFFFFFF
cdef object _MISSING = object()


cdef class DictIter:
    """Iterator over a SharedDict's keys (IT_KEYS), values (IT_VALUES) or
    items (IT_ITEMS); | IT_REVERSED walks backwards. Raises RuntimeError if the dict changes size."""
    cdef DictNode node
    cdef int64_t pos
    cdef uint64_t version
    cdef int64_t length
    cdef int mode
    cdef bint done

    def __cinit__(self, DictNode node not None, int mode):
        if mode & ~(IT_WHAT | IT_REVERSED) or mode & IT_WHAT == IT_WHAT:
            raise ValueError("bad iterator mode %d" % mode)
        self.node = node
        self.mode = mode
        self.version, self.length = node._version()
        self.pos = 0x7FFFFFFFFFFFFFFF if mode & IT_REVERSED else 0

    def __iter__(self):
        return self

    def __next__(self):
        cdef DArg a
        if self.done:
            raise StopIteration
        a.ix = self.pos
        a.mode = self.mode
        r = read_section(self.node, _rd_entry, &a)
        if a.version != self.version:
            self.done = True
            n = len(self.node)
            self.node = None            # as dict iterators: let go of the dict
            if n != self.length:
                raise RuntimeError("dictionary changed size during iteration")
            raise RuntimeError("dictionary keys changed during iteration")
        if a.ix < 0:
            self.done = True
            self.node = None
            raise StopIteration
        self.pos = a.ix - 1 if self.mode & IT_REVERSED else a.ix + 1
        return r

    def __length_hint__(self):
        return 0 if self.done else self.length

    def __reduce__(self):
        """As a dict iterator: an iterator over a list of what is left (the
        keys, values or items this iterator has not given yet)."""
        cdef DictIter rest
        if self.done:
            return (iter, ([],))
        rest = DictIter.__new__(DictIter, self.node, self.mode)
        rest.pos = self.pos
        rest.version = self.version
        rest.length = self.length
        rest.done = self.done
        return (iter, (list(rest),))


# ---------------------------------------------------------------------------
# deep copies

cdef object deep_decode(Segment seg, const Cell *c):
    """Like decode, but dicts and lists (also inside tuples) become plain
    copies, shape kept."""
    if c.b[0] == T_DICT or c.b[0] == T_LIST or c.b[0] == T_TUPLE:
        return deep_copy(seg, c)
    return decode(seg, c, 0)


cdef object _rd_deep(Node node, void *arg):
    cdef Cell c
    cell_container(&c, T_DICT if isinstance(node, DictNode) else T_LIST, node.off, node.gen)
    node.check(K_DICT if isinstance(node, DictNode) else K_LIST)
    return deep_copy(node.seg, &c)


cdef object deep_copy(Segment seg, const Cell *c):
    """Copy the value of cell c into plain dicts/lists/tuples, iteratively."""
    cdef dict memo = {}
    cdef list todo = []
    cdef int64_t i, n
    cdef uint64_t off
    cdef int kind
    cdef Entry *e
    cdef Cell *cells
    cdef TableView tv
    cdef uint64_t j
    root = _deep_value(seg, c, memo, todo, 0)
    while todo:
        off, kind, obj = todo.pop()
        checked_block(seg, off, kind)
        if kind == K_DICT:
            # the table read once, walked in memory order (see _rd_snapshot)
            table_view(seg, off, &tv)
            for j in range(tv.nentries):
                e = &tv.ents[j]
                if e.key.b[0] == T_EMPTY:
                    continue
                if e.key.b[0] == T_PACKED:
                    (<dict>obj)[entry_key(seg, e)] = entry_value(seg, e, False)
                else:
                    (<dict>obj)[entry_key(seg, e)] = _deep_value(seg, &e.value, memo, todo, 0)
        else:
            n = list_len(seg, off)
            cells = list_cells(seg, off, n)
            for i in range(n):
                (<list>obj).append(_deep_value(seg, &cells[i], memo, todo, 0))
    return root


cdef object _deep_cell(Segment seg, uint64_t off, int kind, dict memo, list todo):
    r = memo.get(off)
    if r is None:
        # a dict sized for its count: no resize while it fills (a count
        # read from a changed block only sizes it wrongly; the section's
        # check throws the copy away)
        if kind == K_DICT:
            checked_block(seg, off, K_DICT)
            r = ds_dict_presized(<Py_ssize_t>dict_len(seg, off))
        else:
            r = []
        memo[off] = r
        todo.append((off, kind, r))
    return r


cdef object _deep_value(Segment seg, const Cell *c, dict memo, list todo, int depth):
    cdef uint8_t tag = c.b[0]
    cdef uint64_t off, ln, i
    cdef char *p
    if tag == T_DICT or tag == T_LIST:
        return _deep_cell(seg, ds_ld64(&c.b[8]), tag_kind(tag), memo, todo)
    if tag == T_TUPLE:
        if depth > MAX_TUPLE_DEPTH + 1:
            raise CorruptSegmentError("tuples nested too deep")
        off = ds_ld64(&c.b[8])
        r = memo.get(off)
        if r is not None:
            return r
        blk = checked_block(seg, off, K_TUPLE)
        p = seg.base + off + BLOCK_HDR
        ln = ds_ld64(p)
        if ln > (<uint64_t>blk.size16 * ALIGN - BLOCK_HDR - 8) // CELL_SIZE:
            raise CorruptSegmentError("tuple at %d claims %d items" % (off, ln))
        r = tuple([_deep_value(seg, <Cell *>(p + 8 + CELL_SIZE * i), memo, todo, depth + 1) for i in range(ln)])
        memo[off] = r
        return r
    return decode(seg, c, depth)


# ---------------------------------------------------------------------------
# check(): the values, read as a walk reads them

def _check_values(Segment seg, list containers, list problems):
    """The half of Segment.check() that reads values (lock held, cyclic GC
    off): every cell of every reachable list and dict in `containers`
    ((offset, kind) pairs, structure already checked) goes through the
    decoders the reads use, so that a clean check means a full walk (every
    key, value, nested tuple, iteration, to_python()) raises nothing. Keys
    must be of a key kind and be found by a lookup of their own value (the
    stored hash and canonical form agree with the key); the dict of named
    collections holds dicts only. Containers in cells are not read here:
    their blocks are checked as blocks, their kinds and generations by the
    heap walk."""
    cdef uint64_t off, i
    cdef int64_t n, ix
    cdef Cell *cells
    cdef Entry *e
    cdef TableView tv
    cdef Key key
    cdef uint8_t tag
    for off, kind in containers:
        try:
            if kind == K_LIST:
                n = list_len(seg, off)
                cells = list_cells(seg, off, n)
                for i in range(<uint64_t>n):
                    tag = cells[i].b[0]
                    if tag != T_DICT and tag != T_LIST:
                        try:
                            decode(seg, &cells[i], 0)
                        except Exception as x:
                            problems.append("list at %d, item %d: %s" % (off, i, x))
                continue
            table_view(seg, off, &tv)
            for i in range(tv.nentries):
                e = &tv.ents[i]
                if e.key.b[0] == T_EMPTY:
                    continue
                try:
                    k = entry_key(seg, e)
                    tag = e.value.b[0]
                    if off == seg.hdr.names and (e.key.b[0] == T_PACKED or tag != T_DICT):
                        raise CorruptSegmentError("the named collection %r is not a dict" % (k,))
                    if e.key.b[0] == T_PACKED or (tag != T_DICT and tag != T_LIST):
                        entry_value(seg, e, False)
                    if k == k:              # a NaN key is found by no lookup, as in dict
                        owner = make_key(seg, k, &key, True)
                        ix = table_lookup(seg, &tv, &key)
                        if ix != <int64_t>i:
                            raise CorruptSegmentError("a lookup of its key finds %s"
                                                      % ("nothing" if ix < 0 else "entry %d" % ix))
                except Exception as x:
                    problems.append("dict at %d, entry %d: %s" % (off, i, x))
        except Exception as x:
            problems.append("%s at %d: %s" % ("list" if kind == K_LIST else "dict", off, x))


# ---------------------------------------------------------------------------
# lists

cdef extern from "Python.h":
    int PySlice_Unpack(object s, Py_ssize_t *start, Py_ssize_t *stop, Py_ssize_t *step) except -1
    Py_ssize_t PySlice_AdjustIndices(Py_ssize_t length, Py_ssize_t *start, Py_ssize_t *stop, Py_ssize_t step)


cdef enum:
    OP_SET = 1
    OP_INSERT = 2
    OP_APPEND = 3
    OP_SET_SLICE = 4
    OP_DEL = 5
    OP_DEL_SLICE = 6
    OP_POP = 7
    OP_CLEAR = 8


cdef struct LArg:
    int64_t i
    int64_t n
    Py_ssize_t start, stop, step    # a slice, unpacked before the read section


cdef object _rd_list_get(Node node, void *arg):
    """Item a.i (negative counts from the end); a.n = -1 if out of range."""
    cdef LArg *a = <LArg *>arg
    cdef Segment seg = node.seg
    cdef int64_t n, i = a.i
    view_block(seg, node.off, node.gen, K_LIST)
    n = list_len(seg, node.off)
    a.n = n
    if i < 0:
        i += n
    if i < 0 or i >= n:
        a.n = -1
        return None
    return decode(seg, &list_cells(seg, node.off, n)[i], 0)


cdef object _rd_list_slice(Node node, void *arg):
    cdef LArg *a = <LArg *>arg
    cdef Segment seg = node.seg
    cdef Py_ssize_t start = a.start, stop = a.stop, step = a.step, count, i
    cdef int64_t n
    cdef Cell *cells
    view_block(seg, node.off, node.gen, K_LIST)
    n = list_len(seg, node.off)
    cells = list_cells(seg, node.off, n)
    count = PySlice_AdjustIndices(n, &start, &stop, step)
    return [decode(seg, &cells[start + i * step], 0) for i in range(count)]


cdef object _rd_list_snapshot(Node node, void *arg):
    cdef Segment seg = node.seg
    cdef int64_t n, i
    cdef Cell *cells
    node.check(K_LIST)
    n = list_len(seg, node.off)
    cells = list_cells(seg, node.off, n)
    return (ds_ld64(seg.base + node.off + BLOCK_HDR + 16), [decode(seg, &cells[i], 0) for i in range(n)])


cdef class ListNode(Node):
    """The C part of SharedList: indexing, slicing and every mutation."""

    def __len__(self):
        return read_section(self, _rd_list_len, NULL)

    def __getitem__(self, index):
        cdef LArg a
        if isinstance(index, slice):
            PySlice_Unpack(index, &a.start, &a.stop, &a.step)
            return read_section(self, _rd_list_slice, &a, LONG_READ_TRIES)
        a.i = _index(index)
        r = read_section(self, _rd_list_get, &a)
        if a.n < 0:
            raise IndexError("list index out of range")
        return r

    def __iter__(self):
        return ListIter(self, False)

    def __reversed__(self):
        return ListIter(self, True)

    def _snapshot(self):
        """(version, [items]) in one consistent read."""
        return read_section(self, _rd_list_snapshot, NULL, LONG_READ_TRIES)

    def __setitem__(self, index, value):
        if isinstance(index, slice):
            values = list(value) if value is not self else self._snapshot()[1]
            self.edit(OP_SET_SLICE, 0, index, values)
        else:
            self.edit(OP_SET, _index(index), None, [value])

    def __delitem__(self, index):
        if isinstance(index, slice):
            self.edit(OP_DEL_SLICE, 0, index, None)
        else:
            self.edit(OP_DEL, _index(index), None, None)

    def insert(self, index, value):
        """Insert value before index (clamped to the list, as list.insert)."""
        self.edit(OP_INSERT, _ssize_arg(index), None, [value])

    def append(self, value):
        """Append value at the end. Atomic."""
        self.edit(OP_APPEND, 0, None, [value])

    def extend(self, values):
        """Append every item of an iterable, in one atomic step. As
        list.extend: a list or tuple subclass is iterated through its own
        __iter__, and __length_hint__ is consulted (its errors propagate) but
        only as a hint: nothing is allocated from it."""
        if values is self or type(values) is type(self):
            values = (<ListNode>values)._snapshot()[1]
        elif type(values) is not list:
            values = as_list(values)
        self.edit(OP_APPEND, 0, None, values)

    def pop(self, index=-1):
        """Remove and return the item at index (default last); a dict or list
        comes back as a plain copy. Atomic."""
        return self.edit(OP_POP, _ssize_arg(index), None, None)

    def clear(self):
        """Remove every item. Atomic."""
        self.edit(OP_CLEAR, 0, None, None)

    cdef object edit(self, int op, int64_t i, object sl, list values):
        """Every list mutation: plan values outside the lock, then under it
        resolve indices against the current length, allocate, splice."""
        try:
            return self._edit(op, i, sl, values)
        except SegmentFullError as e:
            err = e
        if self.seg._collect_for_retry():
            try:
                return self._edit(op, i, sl, values)
            except SegmentFullError as e:
                err = e
        raise refreshed(self.seg, err)

    cdef object _edit(self, int op, int64_t i, object sl, list values):
        cdef Segment seg = self.seg
        cdef Plan plan = None
        cdef int64_t n, start = 0, ndel = 0, nins = 0, k, j, w
        cdef Py_ssize_t pstart = 0, pstop = 0, pstep = 1, count = 0
        cdef Cell *cells = NULL
        cdef Cell *old
        cdef Cell *out = NULL
        cdef Cell *gone = NULL
        cdef list roots = None
        result = None
        if values:
            plan = Plan(seg)
            roots = [plan.add_root(v) for v in values]
            nins = len(values)
        seg.write_begin()
        try:
            self.check(K_LIST)
            n = list_len(seg, self.off)
            if op == OP_SET or op == OP_DEL or op == OP_POP:
                if op == OP_POP and n == 0:
                    raise IndexError("pop from empty list")
                if i < 0:
                    i += n
                if i < 0 or i >= n:
                    raise IndexError("pop index out of range" if op == OP_POP
                                     else "list assignment index out of range")
                start = i
                ndel = 1
                if op == OP_POP:
                    result = deep_decode(seg, &list_cells(seg, self.off, n)[i])
            elif op == OP_INSERT:
                start = min(max(i + n if i < 0 else i, 0), n)
            elif op == OP_APPEND:
                start = n
            elif op == OP_CLEAR:
                ndel = n
            else:
                PySlice_Unpack(sl, &pstart, &pstop, &pstep)
                count = PySlice_AdjustIndices(n, &pstart, &pstop, pstep)
                if pstep == 1:
                    start = pstart
                    ndel = count
                elif op == OP_SET_SLICE and count != nins:
                    raise ValueError("attempt to assign sequence of size %d to extended slice of size %d"
                                     % (nins, count))
            if plan is not None:
                plan.materialize()
                cells = <Cell *>malloc_or_raise(CELL_SIZE * nins)
                for k in range(nins):
                    cells[k] = plan.cell(roots[k])[0]
            try:
                if pstep == 1:
                    if ndel or nins:
                        seg.list_splice(self.off, start, ndel, cells, nins)
                elif count:
                    # an extended slice: build the whole new item array
                    old = list_cells(seg, self.off, n)
                    out = <Cell *>malloc_or_raise(CELL_SIZE * n)
                    gone = <Cell *>malloc_or_raise(CELL_SIZE * count)
                    for k in range(count):
                        gone[k] = old[pstart + k * pstep]
                    if op == OP_SET_SLICE:
                        memcpy(out, old, CELL_SIZE * n)
                        for k in range(count):
                            out[pstart + k * pstep] = cells[k]
                        seg.list_rebuild(self.off, out, n, gone, count)
                    else:
                        w = 0
                        j = 0
                        for k in range(n):
                            # is k one of pstart, pstart + pstep, ...?
                            if j < count and k == (pstart + j * pstep if pstep > 0
                                                   else pstart + (count - 1 - j) * pstep):
                                j += 1
                            else:
                                out[w] = old[k]
                                w += 1
                        seg.list_rebuild(self.off, out, w, gone, count)
            except BaseException:
                if plan is not None:
                    plan.rollback()
                raise
            seg.commit()
            if _sorting:
                note_sorted_write(self)
        finally:
            free(cells)
            free(out)
            free(gone)
            seg.write_end()
        return result

    cdef int _permute(self, object version, object order) except -1:
        """Give the list the items old[order[k]] (reverse when order is None),
        if it is still at `version` (when given); 1 if done, 0 if it changed."""
        cdef Segment seg = self.seg
        cdef int64_t n, k
        cdef Cell *cells
        cdef Cell *out = NULL
        seg.write_begin()
        try:
            self.check(K_LIST)
            if version is not None and ds_ld64(seg.base + self.off + BLOCK_HDR + 16) != <uint64_t>version:
                seg.commit()
                return 0
            n = list_len(seg, self.off)
            if order is not None and n != len(order):
                seg.commit()
                return 0
            cells = list_cells(seg, self.off, n)
            out = <Cell *>malloc_or_raise(CELL_SIZE * n)
            for k in range(n):
                out[k] = cells[n - 1 - k] if order is None else cells[<int64_t>order[k]]
            seg.list_rebuild(self.off, out, n, NULL, 0)
            seg.commit()
            if _sorting:
                note_sorted_write(self)
            return 1
        finally:
            free(out)
            seg.write_end()

    def _reverse(self):
        self._permute(None, None)

    def _reorder(self, uint64_t version, order):
        """Permute the items (new[k] = old[order[k]]) if the list is still at
        `version`; returns False if it changed meanwhile."""
        return bool(self._permute(version, order))

    def _delete_if(self, uint64_t version, int64_t i):
        """Delete item i if the list is still at `version`."""
        cdef Segment seg = self.seg
        seg.write_begin()
        try:
            self.check(K_LIST)
            if ds_ld64(seg.base + self.off + BLOCK_HDR + 16) != version:
                seg.commit()
                return False
            seg.list_splice(self.off, i, 1, NULL, 0)
            seg.commit()
            if _sorting:
                note_sorted_write(self)
            return True
        finally:
            seg.write_end()

    # -- sort() and remove(): Python code (keys, comparisons, __eq__) runs on a
    # snapshot outside the lock; the results are kept per item identity (the
    # cell, plus the generation of the block it refers to: an identity is never
    # reused), so that under the lock a changed list is matched against what
    # is known without calling Python code.

    def _sort_begin(self):
        """Start watching this process's writes to this list (the key may
        modify it); returns the counter that _sort_end stops."""
        counter = [0]
        _sorting.setdefault((id(self.seg.lk), self.off), []).append(counter)
        return counter

    def _sort_end(self, counter):
        k = (id(self.seg.lk), self.off)
        watchers = _sorting.get(k)
        if watchers is not None:
            for i in range(len(watchers)):
                if watchers[i] is counter:
                    del watchers[i]
                    break
            if not watchers:
                del _sorting[k]

    def _sort_known(self, bytes ids, list ks, dict keys, bint reverse, bint by_value):
        """Under the lock: sort by keys computed outside it, if every item has
        one, and publish (True). `ids` and `ks` are the identities and keys
        of the items as last seen: the current items that still match them,
        from the start, take their keys from `ks` (a memcmp per item, so a
        list that only grew costs little here); the others are looked up in
        `keys` (identity -> key). With by_value (no key function) an item
        that decodes to a plain value is its own key. Keys are plain values,
        whose comparison runs no Python code.

        If some item has no key, nothing changes and the result is
        (p, tail): the first p items match `ids`, and tail lists
        (identity, key, True) for each item after them that has a key and
        (identity, item, False) for one that has none; the caller keys those
        outside the lock and tries again."""
        cdef Segment seg = self.seg
        cdef int64_t n, k, p = 0, nprev = PyBytes_GET_SIZE(ids) // ID_SIZE
        cdef const uint8_t *prev = <const uint8_t *>PyBytes_AS_STRING(ids)
        cdef uint8_t buf[ID_SIZE]
        cdef Cell *cells
        cdef Cell *out = NULL
        cdef bint missing = False
        seg.write_begin()
        try:
            self.check(K_LIST)
            n = list_len(seg, self.off)
            cells = list_cells(seg, self.off, n)
            while p < n and p < nprev:
                cell_id_into(seg, &cells[p], buf)
                if memcmp(buf, prev + ID_SIZE * p, ID_SIZE) != 0:
                    break
                p += 1
            tail = []
            tail_keys = []
            for k in range(p, n):
                ident = cell_id(seg, &cells[k])
                kv = keys.get(ident, _MISSING)
                if kv is _MISSING:
                    x = decode(seg, &cells[k], 0)
                    if by_value and is_plain(x):
                        keys[ident] = kv = x
                    else:
                        missing = True
                        tail.append((ident, x, False))
                        continue
                tail.append((ident, kv, True))
                tail_keys.append(kv)
            if missing:
                seg.commit()
                return (p, tail)
            full = ks[:p]
            full.extend(tail_keys)
            order = sorted(range(n), key=full.__getitem__, reverse=reverse)
            out = <Cell *>malloc_or_raise(CELL_SIZE * (n if n else 1))
            for k in range(n):
                out[k] = cells[<int64_t>order[k]]
            seg.list_rebuild(self.off, out, n, NULL, 0)
            seg.commit()
            if _sorting:
                note_sorted_write(self)
            return True
        finally:
            free(out)
            seg.write_end()

    def _remove_known(self, dict equal, value):
        """Under the lock: delete the first item whose identity maps to True
        in `equal` and return 1, or -1 if every item is known and none is
        equal. If items of unknown identity come before the first equal one,
        change nothing and return their [(identity, item)], to be compared
        outside the lock. When value is plain, an item that decodes to a
        plain value is compared here (no Python code runs)."""
        cdef Segment seg = self.seg
        cdef int64_t n, k, found = -1
        cdef Cell *cells
        seg.write_begin()
        try:
            self.check(K_LIST)
            n = list_len(seg, self.off)
            cells = list_cells(seg, self.off, n)
            value_plain = is_plain(value)
            new = []
            for k in range(n):
                ident = cell_id(seg, &cells[k])
                r = equal.get(ident)
                if r is None:
                    x = decode(seg, &cells[k], 0)
                    if value_plain and is_plain(x):
                        r = equal[ident] = bool(x == value)
                    else:
                        new.append((ident, x))
                        continue
                if r:
                    found = k
                    break
            if new:
                seg.commit()
                return new
            if found >= 0:
                seg.list_splice(self.off, found, 1, NULL, 0)
            seg.commit()
            if found >= 0 and _sorting:
                note_sorted_write(self)
            return 1 if found >= 0 else -1
        finally:
            seg.write_end()


cdef int64_t _index(object i) except? -1:
    if not PyLong_Check(i):
        if not hasattr(type(i), "__index__"):
            raise TypeError("list indices must be integers or slices, not %s" % type(i).__name__)
        i = i.__index__()
    cdef int overflow = 0
    cdef int64_t v = PyLong_AsLongLongAndOverflow(i, &overflow)
    if overflow:
        raise IndexError("cannot fit '%s' into an index-sized integer" % type(i).__name__)
    return v


cpdef bint is_plain(object k):
    """Whether k is None, a bool, int, float, str or bytes, or a tuple of
    such: comparing two of them runs no Python code."""
    cdef object t = type(k)
    if t is tuple:
        for x in <tuple>k:
            if not is_plain(x):
                return False
        return True
    return t is int or t is str or t is float or t is bytes or t is bool or k is None


cdef dict _sorting = {}    # (id(LockState), list offset) -> counters of sorts running on it


cdef int note_sorted_write(ListNode node) except -1:
    """This process wrote to a list: count it for the sorts running on it."""
    watchers = _sorting.get((id(node.seg.lk), node.off))
    if watchers is not None:
        for c in watchers:
            c[0] += 1
    return 0


cdef enum:
    ID_SIZE = 20


cdef int cell_id_into(Segment seg, const Cell *c, uint8_t *buf) except -1:
    """The identity of a list item: its cell, plus, for a cell that refers to
    a block, that block's generation (which changes on every allocation), so
    that an identity is never reused for another value."""
    cdef uint8_t tag = c.b[0]
    cdef uint32_t gen = 0
    memcpy(buf, c.b, 16)
    if T_FIRST_REF <= tag <= T_LAST and tag != T_DICT and tag != T_LIST:
        gen = (<Block *>seg.ptr(ds_ld64(&c.b[8]), BLOCK_HDR)).gen
    memcpy(&buf[16], &gen, 4)
    return 0


cdef bytes cell_id(Segment seg, const Cell *c):
    cdef uint8_t buf[ID_SIZE]
    cell_id_into(seg, c, buf)
    return PyBytes_FromStringAndSize(<char *>buf, ID_SIZE)


cdef int64_t _ssize_arg(object i) except? -1:
    """An index argument of a method (insert, pop), converted as list's
    methods convert it: TypeError without __index__, OverflowError beyond
    Py_ssize_t (where subscripts raise IndexError)."""
    cdef Py_ssize_t v = i
    return v


cdef class ListIter:
    """Iterates a SharedList by position, re-reading the length each step (as list does)."""
    cdef ListNode node
    cdef int64_t pos
    cdef bint rev
    cdef bint done

    def __cinit__(self, ListNode node not None, bint rev):
        self.node = node
        self.rev = rev
        self.pos = len(node) - 1 if rev else 0

    def __iter__(self):
        return self

    def __next__(self):
        cdef LArg a
        if self.done or self.pos < 0:
            self.done = True
            self.node = None            # as list iterators: let go of the list
            raise StopIteration
        a.i = self.pos
        r = read_section(self.node, _rd_list_get, &a)
        if a.n < 0:
            self.done = True
            self.node = None
            raise StopIteration
        self.pos += -1 if self.rev else 1
        return r

    def __length_hint__(self):
        """As list iterators: the items left at the current length."""
        cdef int64_t n
        if self.done:
            return 0
        n = len(self.node)
        if self.rev:
            return self.pos + 1 if self.pos < n else 0
        return n - self.pos if self.pos < n else 0

    def __reduce__(self):
        """As list iterators: the list (a SharedList pickles as a reference)
        and the position; an exhausted iterator pickles as iter([])."""
        if self.done or (self.rev and self.pos < 0):
            return (iter, ([],))
        return (reversed if self.rev else iter, (self.node,), self.pos)

    def __setstate__(self, state):
        """Set the position, clamped to the list as list iterators do."""
        cdef int64_t n, i = _ssize_arg(state)
        if self.done:
            return
        n = len(self.node)
        if self.rev:
            self.pos = -1 if i < -1 else min(i, n - 1)
        else:
            self.pos = 0 if i < 0 else min(i, n)


include "codec/cache.pxi"
# ---------------------------------------------------------------------------
# change notifications (see dshared/_notify.pxi and dshared/_notify.py)

def _nt_target(Node node not None, key, bint keyed):
    """(segment, offset, generation, kind, bucket) of a wait on a container
    or, `keyed`, on one key of a dict. StaleReferenceError if it is gone."""
    cdef Key k
    cdef int kind = K_DICT if isinstance(node, DictNode) else K_LIST
    cdef unsigned b
    node.check(kind)
    if keyed:
        owner = make_key(node.seg, key, &k, True)
        b = ds_nt_bucket_k(node.off, k.hash)
    else:
        b = ds_nt_bucket_c(node.off)
    return (node.seg, node.off, node.gen, kind, b)
