# Cells: scalars and short strings inline, packed pairs, the tag of a block
# (included by _codec.pyx at module level).

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
