# Cells to Python values: decode, entry keys and values, views, deep copies
# (included by _codec.pyx at module level).

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


# the tags a key cell may hold (T_PACKED aside): hashable values only. A
# container tag there would read back as a view, which is unhashable.
cdef uint32_t KEY_TAGS = ((1 << T_NONE) | (1 << T_FALSE) | (1 << T_TRUE) | (1 << T_INT) | (1 << T_FLOAT)
                          | (1 << T_SSTR) | (1 << T_SBYTES) | (1 << T_STR) | (1 << T_BYTES)
                          | (1 << T_BIGINT) | (1 << T_KTUPLE))


cdef object entry_key(Segment seg, const Entry *e):
    """The key of a dict entry: every key a read returns is made here."""
    cdef uint8_t tag = e.key.b[0]
    cdef uint8_t kmeta
    if tag == T_PACKED:
        kmeta = e.key.b[1]          # read once (see entry_value)
        if (kmeta & 0x7f) > INLINE_MAX:
            raise CorruptSegmentError("packed entry with a key of %d bytes" % (kmeta & 0x7f))
        return packed_str(&e.key.b[4], kmeta, False)
    if tag > 31 or not (KEY_TAGS & (<uint32_t>1 << tag)):
        raise CorruptSegmentError("a dict key cell holds tag %d, which no key has" % tag)
    return decode(seg, &e.key, 0)


cdef object entry_value(Segment seg, const Entry *e, bint deep):
    """The value of a dict entry (deep: dicts and lists as plain copies)."""
    cdef uint8_t kl, vmeta
    if e.key.b[0] == T_PACKED:
        # each byte read once: a lock-free read may see the entry rewritten
        kl = e.key.b[1] & 0x7f
        vmeta = e.key.b[3]
        if kl > INLINE_MAX or kl + (vmeta & 0x7f) > PACKED_MAX:
            raise CorruptSegmentError("packed entry with bad lengths")
        return packed_str(&e.key.b[4 + kl], vmeta, e.key.b[2] == T_SBYTES)
    if deep:
        return deep_decode(seg, &e.value)
    return decode(seg, &e.value, 0)


# -- decoding

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
    cdef StrHdr *sh
    cdef TupleHdr *th
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
        sh = str_hdr(seg.base, off)
        ln = sh.length
        if ln > <uint64_t>blk.size16 * ALIGN - BLOCK_HDR - sizeof(StrHdr):
            raise CorruptSegmentError("str block at %d claims %d bytes" % (off, ln))
        return stored_str(str_data(sh), ln, sh.flags & 1)
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
        th = tuple_hdr(seg.base, off)
        ln = th.n
        if ln > cells_fit(blk.size16):
            raise CorruptSegmentError("tuple at %d claims %d items" % (off, ln))
        t = PyTuple_New(ln)
        for i in range(ln):
            x = decode(seg, &tuple_cells(th)[i], depth + 1)
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


# -- deep copies: to_python(), pop() of a container

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
    cdef TupleHdr *th
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
        th = tuple_hdr(seg.base, off)
        ln = th.n
        if ln > cells_fit(blk.size16):
            raise CorruptSegmentError("tuple at %d claims %d items" % (off, ln))
        r = tuple([_deep_value(seg, &tuple_cells(th)[i], memo, todo, depth + 1) for i in range(ln)])
        memo[off] = r
        return r
    return decode(seg, c, depth)
