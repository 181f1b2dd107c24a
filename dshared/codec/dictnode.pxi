# DictNode, the C part of SharedDict, its readers and DictIter (included by
# _codec.pyx at module level).

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
    int64_t hint                # dict_lookup: the entry to try first (-1: none)


cdef struct StoreArg:           # DictNode.store's arguments, through write_or_collect
    PyObject *k
    PyObject *v
    int mode                    # StoreMode


cdef inline int64_t dict_lookup(Segment seg, Node node, DArg *a, TableView *tv) except -2:
    """The lookup of d[k], d.get(k) and k in d (seg is node.seg): the view
    checked, its table read once into tv, a.key looked up; a.ix is the
    entry or -1.

    Keys read in entry order (`for k in d: d[k]`, dict(d), which looks up
    every key of d.keys()): the entry after the last one found (a.hint) is
    tried before the probe, so that the walk reads the entries in memory
    order instead of missing the cache twice per key in a big table."""
    cdef Entry *e
    view_block(seg, node.off, node.gen, K_DICT)
    table_view(seg, node.off, tv)
    e = &tv.ents[a.hint] if 0 <= a.hint < <int64_t>tv.nentries else NULL
    if e != NULL and entry_matches(seg, e, a.key):
        a.ix = a.hint
    else:
        a.ix = table_lookup(seg, tv, a.key)
    return a.ix


cdef object _rd_get(Node node, void *arg):
    cdef DArg *a = <DArg *>arg
    cdef Segment seg = node.seg
    cdef TableView tv
    if dict_lookup(seg, node, a, &tv) < 0:
        return None
    return entry_value(seg, &tv.ents[a.ix], False)


cdef object _rd_contains(Node node, void *arg):
    cdef TableView tv
    dict_lookup(node.seg, node, <DArg *>arg, &tv)
    return None


cdef object _rd_len(Node node, void *arg):
    cdef Segment seg = node.seg
    cdef TableView tv
    view_block(seg, node.off, node.gen, K_DICT)
    table_view(seg, node.off, &tv)
    return <int64_t>tv.count


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
        a.hint = -1
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
        wr_begin(seg)
        try:
            self.check(K_DICT)
            ix = dict_find(seg, self.off, &key)
            if ix >= 0:
                tbl_remove(seg, self.off, ix)
            wr_commit(seg)
        finally:
            wr_end(seg)
        if ix < 0:
            raise KeyError(k)

    cdef object store(self, object k, object v, int mode):
        """d[k] = v (ST_SET); setdefault (ST_SETDEFAULT): store only if absent and
        return the value now in d."""
        cdef StoreArg a
        a.k = <PyObject *>k
        a.v = <PyObject *>v
        a.mode = mode
        return write_or_collect(self, dict_store, &a)

    cdef object _store(self, object k, object v, int mode):
        """store() without the retry after collect() (the cache's claims)."""
        cdef StoreArg a
        a.k = <PyObject *>k
        a.v = <PyObject *>v
        a.mode = mode
        return dict_store(self, &a)

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
        wr_begin(seg)
        try:
            self.check(K_DICT)
            ix = dict_find(seg, self.off, &key)
            if ix >= 0:
                r = entry_value(seg, dict_entry(seg, self.off, ix), True)
                tbl_remove(seg, self.off, ix)
            wr_commit(seg)
        finally:
            wr_end(seg)
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
        wr_begin(seg)
        try:
            self.check(K_DICT)
            ix = dict_prev(seg, self.off, INT64_MAX_)
            if ix >= 0:
                e = dict_entry(seg, self.off, ix)
                r = (entry_key(seg, e), entry_value(seg, e, True))
                tbl_remove(seg, self.off, ix)
            wr_commit(seg)
        finally:
            wr_end(seg)
        if ix < 0:
            raise KeyError("popitem(): dictionary is empty")
        return r

    def clear(self):
        """Remove every item. Atomic."""
        cdef Segment seg = self.seg
        wr_begin(seg)
        try:
            self.check(K_DICT)
            tbl_clear(seg, self.off)
            wr_commit(seg)
        finally:
            wr_end(seg)

    def _update_pairs(self, list flat):
        """Store the pairs of flat ([k0, v0, k1, v1, ...], see update_flat)
        in one atomic step."""
        if len(flat) & 1:
            raise ValueError("a flat list of pairs needs an even length, not %d" % len(flat))
        write_or_collect(self, _wr_update, <void *>flat)

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
        lock_acquire(seg, -1)
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
            lock_release(seg)
        return new


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
