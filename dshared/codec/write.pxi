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


# A write's big scratch buffers (a plan's cells; update()'s keys and pairs)
# are otherwise fresh memory from the system every time, one page fault per
# 4 KiB: ten update()s of 100,000 pairs faulted 36 times per 1,000 keys more
# than inserts one by one, and lost to them in system time. One buffer per
# use is kept between writes, from 256 KiB to 16 MiB, and only while the
# writes stay big: one that asks for less than an eighth of a kept buffer
# frees them all. Taken and given back with the GIL held.
cdef enum:
    SCR_PLAN = 0
    SCR_KEYS = 1
    SCR_PAIRS = 2
    SCR_USES = 3
    SCR_MIN = 256 << 10
    SCR_MAX = 16 << 20

cdef void *_scr_buf[SCR_USES]
cdef size_t _scr_size[SCR_USES]


cdef void *scratch_grow(int use, void *p, size_t n, size_t *got) except NULL:
    """realloc(p, n), its size in got[0]: with p NULL, the buffer kept for
    `use` when n fits in it."""
    cdef void *q = _scr_buf[use]
    cdef int i
    if p == NULL and q != NULL:
        _scr_buf[use] = NULL
        if _scr_size[use] // 8 <= n <= _scr_size[use]:
            got[0] = _scr_size[use]
            return q
        free(q)                 # bigger writes began
        if n < _scr_size[use] // 8:
            for i in range(SCR_USES):       # the big writes are over
                free(_scr_buf[i])
                _scr_buf[i] = NULL
    q = realloc(p, n if n else 1)
    if q == NULL:
        raise MemoryError()
    got[0] = n
    return q


cdef void scratch_give(int use, void *p, size_t n) noexcept:
    """Free buffer p of n bytes, or keep it for `use`'s next write."""
    if SCR_MIN <= n <= SCR_MAX:
        free(_scr_buf[use])
        _scr_buf[use] = p
        _scr_size[use] = n
    else:
        free(p)


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


def _scratch_kept():
    """The sizes of the scratch buffers kept between writes (tests)."""
    return [_scr_size[i] if _scr_buf[i] != NULL else 0 for i in range(SCR_USES)]
