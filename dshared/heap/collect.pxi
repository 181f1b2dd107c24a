# collect(): mark from the roots, free unreachable cycles (included by
# _heap.pyx at module level).


cdef bint gc_valid_ref(Segment seg, uint64_t off) noexcept nogil:
    cdef uint32_t kind
    cdef uint64_t top = seg.hdr.top
    if top > seg.cap:
        top = seg.cap
    if top > seg.hdr.reserved:
        top = seg.hdr.reserved
    if (off & (ALIGN - 1)) or off < HEADER_SIZE or off >= top or top - off < BLOCK_HDR:
        return False
    kind = blk_kind(<Block *>(seg.base + off))
    return kind != K_FREE and kind <= K_LAST


cdef int gc_tiling(Segment seg, list out) except -1:
    """Every block start in [HEADER_SIZE, top), in order; raises
    CorruptSegmentError if the blocks do not tile the heap."""
    cdef uint64_t off = HEADER_SIZE, top = seg.hdr.top, prev16 = 0, size
    cdef Block *b
    if top > seg.cap or top > seg.hdr.reserved or top < HEADER_SIZE or (top & (ALIGN - 1)):
        raise CorruptSegmentError("heap top %d is out of bounds" % top)
    while off < top:
        b = <Block *>(seg.base + off)
        size = <uint64_t>b.size16 * ALIGN
        if size < MIN_BLOCK or size > top - off:
            raise CorruptSegmentError("block at %d has size %d beyond the heap top %d" % (off, size, top))
        if b.prev16 != prev16:
            raise CorruptSegmentError("block at %d: prev size %d, expected %d" % (off, b.prev16 * 16, prev16 * 16))
        out.append(off)
        prev16 = b.size16
        off += size
    if prev16 != seg.hdr.tail16:
        raise CorruptSegmentError("last block size %d != tail %d" % (prev16 * 16, seg.hdr.tail16 * 16))
    return 0


cdef uint64_t gc_mark(Segment seg, list blocks) except? 0:
    """Recount every refcount from the roots: zero them all, then add one
    per reference met while marking. Returns the number of blocks marked."""
    cdef uint64_t *work = NULL
    cdef uint64_t *tmp = NULL
    cdef uint64_t nw = 0, capw = 0, nt = 0, capt = 0, off, c, i, marked = 0
    cdef Block *b
    for off in blocks:
        b = <Block *>(seg.base + off)
        if blk_kind(b) != K_FREE:
            b.kind_rc &= KIND_MASK
    try:
        for off in _root_offsets(seg):
            if gc_valid_ref(seg, off):
                b = <Block *>(seg.base + off)
                if blk_rc(b) == 0:
                    blk_push(seg, off, &work, &nw, &capw)
                if blk_rc(b) < RC_MAX:
                    b.kind_rc += RC_ONE
        while nw:
            nw -= 1
            off = work[nw]
            marked += 1
            nt = 0
            blk_push_children(seg, off, &tmp, &nt, &capt)
            for i in range(nt):
                c = tmp[i]
                if not gc_valid_ref(seg, c):
                    continue
                b = <Block *>(seg.base + c)
                if blk_rc(b) == 0:
                    blk_push(seg, c, &work, &nw, &capw)
                if blk_rc(b) < RC_MAX:
                    b.kind_rc += RC_ONE
    finally:
        c_free(work)
        c_free(tmp)
    return marked


cdef uint64_t gc_collect(Segment seg) except? 0:
    """Mark and sweep (lock held, inside a write section): frees every
    block not reachable from the roots; returns the bytes freed."""
    cdef list blocks = []
    cdef list garbage = []
    cdef uint64_t before = seg.hdr.used
    cdef Block *b
    gc_tiling(seg, blocks)
    gc_mark(seg, blocks)
    for off in blocks:
        b = <Block *>(seg.base + <uint64_t>off)
        if blk_kind(b) != K_FREE and blk_rc(b) == 0:
            garbage.append(off)
    for off in garbage:
        blk_free(seg, <uint64_t>off)
    seg.hdr.collections += 1
    return before - seg.hdr.used


cdef tuple _root_offsets(Segment seg):
    """The blocks the header holds a reference to: the root, the named
    collections and, once created, the wait area."""
    if seg.hdr.waits:
        return (seg.hdr.root, seg.hdr.names, seg.hdr.waits)
    return (seg.hdr.root, seg.hdr.names)
