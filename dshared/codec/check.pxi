# check(): the values, read as a walk reads them (included by _codec.pyx at
# module level).

def _check_values(Segment seg, list containers, list problems):
    """The half of Segment.check() that reads values (lock held, cyclic GC
    off): every cell of every reachable list and dict in `containers`
    ((offset, kind) pairs, structure already checked) goes through the
    decoders the reads use, so that a clean check means a full walk (every
    key, value, nested tuple, iteration, to_python()) raises nothing. Keys
    must be of a key kind and be found by a lookup of their own value (the
    kept hash and canonical form agree with the key); the dict of named
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
