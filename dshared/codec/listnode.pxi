# ListNode, the C part of SharedList, its readers and ListIter (included by
# _codec.pyx at module level).

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


cdef struct EditArg:            # ListNode.edit's arguments, through write_or_collect
    int op
    int64_t i
    PyObject *sl                # the slice of OP_SET_SLICE, OP_DEL_SLICE
    PyObject *values            # list, or None


cdef enum:
    ID_SIZE = 20


cdef object _rd_list_len(Node node, void *arg):
    node.check(K_LIST)
    return list_len(node.seg, node.off)


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
    return (list_version(seg, node.off), [decode(seg, &cells[i], 0) for i in range(n)])


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
        cdef EditArg a
        a.op = op
        a.i = i
        a.sl = <PyObject *>sl
        a.values = <PyObject *>values
        return write_or_collect(self, _wr_edit, &a)

    cdef int _permute(self, object version, object order) except -1:
        """Give the list the items old[order[k]] (reverse when order is None),
        if it is still at `version` (when given); 1 if done, 0 if it changed."""
        cdef Segment seg = self.seg
        cdef int64_t n, k
        cdef Cell *cells
        cdef Cell *out = NULL
        wr_begin(seg)
        try:
            self.check(K_LIST)
            if version is not None and list_version(seg, self.off) != <uint64_t>version:
                wr_commit(seg)
                return 0
            n = list_len(seg, self.off)
            if order is not None and n != len(order):
                wr_commit(seg)
                return 0
            cells = list_cells(seg, self.off, n)
            out = <Cell *>malloc_or_raise(CELL_SIZE * n)
            for k in range(n):
                out[k] = cells[n - 1 - k] if order is None else cells[<int64_t>order[k]]
            lst_rebuild(seg, self.off, out, n, NULL, 0)
            wr_commit(seg)
            if _sorting:
                note_sorted_write(self)
            return 1
        finally:
            free(out)
            wr_end(seg)

    def _reverse(self):
        self._permute(None, None)

    def _reorder(self, uint64_t version, order):
        """Permute the items (new[k] = old[order[k]]) if the list is still at
        `version`; returns False if it changed meanwhile."""
        return bool(self._permute(version, order))

    def _delete_if(self, uint64_t version, int64_t i):
        """Delete item i if the list is still at `version`."""
        cdef Segment seg = self.seg
        wr_begin(seg)
        try:
            self.check(K_LIST)
            if list_version(seg, self.off) != version:
                wr_commit(seg)
                return False
            lst_splice(seg, self.off, i, 1, NULL, 0)
            wr_commit(seg)
            if _sorting:
                note_sorted_write(self)
            return True
        finally:
            wr_end(seg)

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
        wr_begin(seg)
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
                wr_commit(seg)
                return (p, tail)
            full = ks[:p]
            full.extend(tail_keys)
            order = sorted(range(n), key=full.__getitem__, reverse=reverse)
            out = <Cell *>malloc_or_raise(CELL_SIZE * (n if n else 1))
            for k in range(n):
                out[k] = cells[<int64_t>order[k]]
            lst_rebuild(seg, self.off, out, n, NULL, 0)
            wr_commit(seg)
            if _sorting:
                note_sorted_write(self)
            return True
        finally:
            free(out)
            wr_end(seg)

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
        wr_begin(seg)
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
                wr_commit(seg)
                return new
            if found >= 0:
                lst_splice(seg, self.off, found, 1, NULL, 0)
            wr_commit(seg)
            if found >= 0 and _sorting:
                note_sorted_write(self)
            return 1 if found >= 0 else -1
        finally:
            wr_end(seg)


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


cdef int64_t _ssize_arg(object i) except? -1:
    """An index argument of a method (insert, pop), converted as list's
    methods convert it: TypeError without __index__, OverflowError beyond
    Py_ssize_t (where subscripts raise IndexError)."""
    cdef Py_ssize_t v = i
    return v


cdef bint _ITER_NEGATIVE_ENDS = sys.version_info >= (3, 13)


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
            if self.done or (self.rev and not _ITER_NEGATIVE_ENDS):
                self.done = True
                self.node = None        # as list iterators: let go of the list
            # (from Python 3.13 a position below the start keeps the list, and
            # a later __setstate__ goes on from there)
            raise StopIteration
        a.i = self.pos
        r = read_section(self.node, _rd_list_get, &a)
        if a.n < 0:
            if self.rev and _ITER_NEGATIVE_ENDS:
                self.pos = -1           # as 3.13's reverse iterators: ended, the list kept
            else:
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
        return n - self.pos if 0 <= self.pos < n else 0

    def __reduce__(self):
        """As list iterators: the list (a SharedList pickles as a reference)
        and the position; an exhausted iterator pickles as iter([])."""
        if self.done or self.pos < 0:
            return (iter, ([],))
        return (reversed if self.rev else iter, (self.node,), self.pos)

    def __setstate__(self, state):
        """Set the position, clamped to the list as the running Python's
        list iterators do (from 3.13 a position below the start leaves the
        iterator empty until a later __setstate__, and a reverse iterator
        that ended takes a new position)."""
        cdef int64_t n, i = _ssize_arg(state)
        if self.done:
            return
        n = len(self.node)
        if self.rev:
            self.pos = -1 if i < -1 else min(i, n - 1)
        elif _ITER_NEGATIVE_ENDS:
            self.pos = -1 if i < -1 else min(i, n)
        else:
            self.pos = 0 if i < 0 else min(i, n)
