# The read section (included by _codec.pyx at module level).

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
        seg_check_open(seg)
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
                seg_raise_faulted(seg)
            s = seq_begin(seg)
            try:
                r = fn(node, arg)
            except Exception as e:
                if seg.faulted:
                    seg_raise_faulted(seg)     # the read met a fault: what it saw was zeros
                if seq_ok(seg, s):
                    _raise_if_freed(node)
                    damage(seg, e)
                    raise
                continue
            if seg.faulted:
                seg_raise_faulted(seg)
            if seq_ok(seg, s):
                # the container was freed while it was read: as a read after it
                _raise_if_freed(node)
                return r
    finally:
        seg.readers -= 1
    lock_acquire(seg, -1)
    if seg.wdepth == 0 and seg.lk.bdepth == 0:
        wr_settle(seg)               # a sequence left odd by no writer would slow every read
                                    # (not inside this thread's block: its journal is live)
    was = ds_gc_disable()
    try:
        try:
            r = fn(node, arg)
        except Exception as e:
            if seg.faulted:
                seg_raise_faulted(seg)
            damage(seg, e)
            raise
        if seg.faulted:
            seg_raise_faulted(seg)
        return r
    finally:
        if was:
            ds_gc_enable()
        lock_release(seg)


cdef int _raise_if_freed(Node node) except -1:
    """StaleReferenceError if the view's container was freed during a read
    (the read may have seen its memory being reused)."""
    cdef Segment seg = node.seg
    if seg_inb(seg, node.off, BLOCK_HDR) and not view_gen_ok(seg, node.off, node.gen):
        seg_bad_view(seg, node.off, node.gen, K_DICT if isinstance(node, DictNode) else K_LIST)
    return 0
