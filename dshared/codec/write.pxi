# What every write shares (included by _codec.pyx at module level).

cdef uint64_t new_bytes_block(Segment seg, int kind, const char *data, uint64_t n, uint64_t flags) except? 0:
    """A fresh STR or BYTES block (refcount 1) holding data (lock held)."""
    cdef uint64_t hdr = bytes_hdr_size(kind)
    cdef int why
    cdef uint64_t off = blk_alloc(seg, hdr + n, kind, &why)
    cdef char *p
    if off == 0:
        blk_raise_full(seg, hdr + n, why)
    p = blk_payload(seg.base, off)
    (<BytesHdr *>p).length = n          # StrHdr starts with it too
    if kind == K_STR:
        (<StrHdr *>p).flags = flags
    memcpy(p + hdr, data, n)
    (<Block *>(seg.base + off)).kind_rc = <uint32_t>kind | RC_ONE
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


# A write that finds the segment full runs collect() (garbage: cycles, and
# what a crashed writer left) and tries once more; what its caller sees then
# is a SegmentFullError that counts the bytes in use after both tries.
ctypedef object (*WriteFn)(Node node, void *arg)


cdef object write_or_collect(Node node, WriteFn fn, void *arg):
    """fn(node, arg), one whole write; if the segment is full, once more after
    collect(); if it is still full, the SegmentFullError, refreshed."""
    try:
        return fn(node, arg)
    except SegmentFullError as e:
        err = e
    if node.seg._collect_for_retry():
        try:
            return fn(node, arg)
        except SegmentFullError as e:
            err = e
    raise refreshed(node.seg, err)
