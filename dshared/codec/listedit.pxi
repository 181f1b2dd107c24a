# The list writes: every mutation goes through list_edit (values planned
# outside the lock, indices resolved under it against the current length),
# and the item identities that sort() and remove() match under the lock
# (included by _codec.pyx at module level).

# Where an edit applies, resolved under the lock: a splice of ndel items at
# start (pstep == 1), or an extended slice of count items from pstart by pstep.
cdef struct EditRange:
    int64_t start, ndel
    Py_ssize_t pstart, pstep, count


cdef inline uint64_t list_version(Segment seg, uint64_t l) noexcept nogil:
    """The version of list block l (already checked): bumped by every write."""
    return list_body(seg.base, l).version


cdef object _wr_edit(Node node, void *arg):
    cdef EditArg *a = <EditArg *>arg
    return list_edit(<ListNode>node, a.op, a.i, <object>a.sl, <list>a.values)


cdef object list_edit(ListNode node, int op, int64_t i, object sl, list values):
    """One try of ListNode.edit; returns the item popped (a plain copy) for OP_POP."""
    cdef Segment seg = node.seg
    cdef Plan plan = None
    cdef int64_t n, nins = 0, k
    cdef Cell *cells = NULL
    cdef list roots = None
    cdef EditRange r
    if values:
        plan = Plan(seg)
        roots = [plan.add_root(v) for v in values]
        nins = len(values)
    wr_begin(seg)
    try:
        node.check(K_LIST)
        n = list_len(seg, node.off)
        result = edit_range(node, op, i, sl, n, nins, &r)
        if plan is not None:
            plan.materialize()
            cells = <Cell *>malloc_or_raise(CELL_SIZE * nins)
            for k in range(nins):
                cells[k] = plan.cell(roots[k])[0]
        try:
            if r.pstep == 1:
                if r.ndel or nins:
                    lst_splice(seg, node.off, r.start, r.ndel, cells, nins)
            elif r.count:
                edit_extended(node, op == OP_SET_SLICE, n, cells, &r)
        except BaseException:
            if plan is not None:
                plan.rollback()
            raise
        wr_commit(seg)
        if _sorting:
            note_sorted_write(node)
    finally:
        free(cells)
        wr_end(seg)
    return result


cdef object edit_range(ListNode node, int op, int64_t i, object sl, int64_t n, int64_t nins, EditRange *r):
    """Resolve op's index or slice against the length n into r (IndexError,
    ValueError as list raises them); returns the popped item for OP_POP."""
    memset(r, 0, sizeof(EditRange))
    r.pstep = 1
    if op == OP_SET or op == OP_DEL or op == OP_POP:
        if op == OP_POP and n == 0:
            raise IndexError("pop from empty list")
        if i < 0:
            i += n
        if i < 0 or i >= n:
            raise IndexError("pop index out of range" if op == OP_POP
                             else "list assignment index out of range")
        r.start = i
        r.ndel = 1
        if op == OP_POP:
            return deep_decode(node.seg, &list_cells(node.seg, node.off, n)[i])
    elif op == OP_INSERT:
        r.start = min(max(i + n if i < 0 else i, 0), n)
    elif op == OP_APPEND:
        r.start = n
    elif op == OP_CLEAR:
        r.ndel = n
    else:
        edit_slice(sl, n, nins, op == OP_SET_SLICE, r)
    return None


cdef int edit_slice(object sl, int64_t n, int64_t nins, bint assign, EditRange *r) except -1:
    """A slice against the length n: a plain one (step 1) is a splice; an
    extended one assigned to must have as many items as it selects."""
    cdef Py_ssize_t pstop = 0
    PySlice_Unpack(sl, &r.pstart, &pstop, &r.pstep)
    r.count = PySlice_AdjustIndices(n, &r.pstart, &pstop, r.pstep)
    if r.pstep == 1:
        r.start = r.pstart
        r.ndel = r.count
    elif assign and r.count != nins:
        raise ValueError("attempt to assign sequence of size %d to extended slice of size %d"
                         % (nins, r.count))
    return 0


cdef int edit_extended(ListNode node, bint assign, int64_t n, const Cell *cells, const EditRange *r) except -1:
    """An extended slice (lock held): build the whole new item array, with
    cells in the slice's places (assign) or without its items."""
    cdef Segment seg = node.seg
    cdef Cell *old = list_cells(seg, node.off, n)
    cdef Cell *out = NULL
    cdef Cell *gone = NULL
    cdef int64_t k, j = 0, w = 0
    try:
        out = <Cell *>malloc_or_raise(CELL_SIZE * n)
        gone = <Cell *>malloc_or_raise(CELL_SIZE * r.count)
        for k in range(r.count):
            gone[k] = old[r.pstart + k * r.pstep]
        if assign:
            memcpy(out, old, CELL_SIZE * n)
            for k in range(r.count):
                out[r.pstart + k * r.pstep] = cells[k]
            lst_rebuild(seg, node.off, out, n, gone, r.count)
            return 0
        for k in range(n):
            # is k one of pstart, pstart + pstep, ...?
            if j < r.count and k == (r.pstart + j * r.pstep if r.pstep > 0
                                     else r.pstart + (r.count - 1 - j) * r.pstep):
                j += 1
            else:
                out[w] = old[k]
                w += 1
        lst_rebuild(seg, node.off, out, w, gone, r.count)
        return 0
    finally:
        free(out)
        free(gone)


# -- what sort() and remove() match under the lock (see the note above
# ListNode._sort_begin): plain values, the sorts running in this process,
# and the identity of an item.

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


cdef int cell_id_into(Segment seg, const Cell *c, uint8_t *buf) except -1:
    """The identity of a list item: its cell, plus, for a cell that refers to
    a block, that block's generation (which changes on every allocation), so
    that an identity is never reused for another value."""
    cdef uint8_t tag = c.b[0]
    cdef uint32_t gen = 0
    memcpy(buf, c.b, 16)
    if T_FIRST_REF <= tag <= T_LAST and tag != T_DICT and tag != T_LIST:
        gen = (<Block *>seg_ptr(seg, ds_ld64(&c.b[8]), BLOCK_HDR)).gen
    memcpy(&buf[16], &gen, 4)
    return 0


cdef bytes cell_id(Segment seg, const Cell *c):
    cdef uint8_t buf[ID_SIZE]
    cell_id_into(seg, c, buf)
    return PyBytes_FromStringAndSize(<char *>buf, ID_SIZE)
