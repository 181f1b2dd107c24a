# The undo journal: in-place stores of a write (jr_store), undone if it does
# not finish; the journal blocks of an open block; the undo (included by
# _heap.pyx at module level).


cdef void jr_undo(Segment seg) noexcept nogil:
    """Restore the journaled words, newest first (see jr_undo_to)."""
    jr_undo_to(seg, 0)


cdef void jr_undo_to(Segment seg, uint64_t mark) noexcept nogil:
    """Restore the journaled words newest first, down to record `mark`,
    dropping each record once restored (so an undo cut short by a crash
    is finished by the repair: restoring a word twice is harmless).
    Records from JOURNAL_MAX on live in the journal blocks chained from
    the header (newest first), each checked before it is read. A record
    with the low bit set (see jr_rebuild) rebuilds a table's index from its
    entries, once the records after it have restored the entry count."""
    cdef Header *h = seg.hdr
    cdef uint64_t n = h.jcount, off, b = h.jblocks, first = 0, cap = 0, steps = 0
    cdef JRec *e
    cdef uint64_t *rb = NULL
    cdef uint64_t *grown
    cdef uint64_t nrb = 0, caprb = 0, i
    cdef JournalHdr *jb = NULL
    cdef bint found
    seg_read_limit(seg)
    if n > JOURNAL_MAX and b == 0:
        n = JOURNAL_MAX         # (bad bytes) no block holds the records above the header's
    while n > mark:
        if n > JOURNAL_MAX:
            found = False
            while b and steps < 64:
                jb = jr_block(seg, b)
                if jb == NULL:
                    break
                first = jb.first
                cap = jb.capacity
                if first < n:
                    found = n - first <= cap
                    break
                b = jb.next
                steps += 1
            if not found:
                # (bad bytes) the records above the header's cannot be read
                n = JOURNAL_MAX if mark < JOURNAL_MAX else mark
                h.jcount = n
                continue
            e = &journal_recs(jb)[n - 1 - first]
        else:
            e = &h.jlog[n - 1]
        off = e.off
        if off & 1:
            tbl_rebuild_index(seg, off & ~(<uint64_t>1))
            if nrb == caprb:
                grown = <uint64_t *>realloc(rb, (caprb * 2 + 8) * sizeof(uint64_t))
                if grown != NULL:
                    rb = grown
                    caprb = caprb * 2 + 8
            if nrb < caprb:
                rb[nrb] = off & ~(<uint64_t>1)
                nrb += 1
        elif off >= HEADER_SIZE and off <= seg.lim - 8:
            ds_st64(seg.base + off, e.old)
        n -= 1
        ds_fence_release()
        h.jcount = n
    h.jcount = mark
    # an older operation of the same block may have journaled index slots
    # of a table whose index a newer one rebuilt: restored after the
    # rebuild, those slots no longer match it. Rebuilt once more from the
    # restored entries, the index is right whatever came between.
    for i in range(nrb):
        tbl_rebuild_index(seg, rb[i])
    c_free(rb)


cdef JournalHdr *jr_block(Segment seg, uint64_t b) noexcept nogil:
    """The payload of journal block b (JournalHdr, then its records), or
    NULL if b is not one that checks out: in bounds, a K_JOURNAL block
    whose records fit in it (bad bytes may name anything)."""
    cdef JournalHdr *jb
    cdef uint64_t cap
    if not seg_inb(seg, b, BLOCK_HDR + sizeof(JournalHdr)) or (b & (ALIGN - 1)):
        return NULL
    if blk_kind(<Block *>(seg.base + b)) != K_JOURNAL:
        return NULL
    jb = journal_hdr(seg.base, b)
    cap = jb.capacity
    if (jb.first < JOURNAL_MAX or cap > (seg.lim - b - BLOCK_HDR - sizeof(JournalHdr)) // sizeof(JRec)
            or BLOCK_HDR + sizeof(JournalHdr) + sizeof(JRec) * cap > <uint64_t>(<Block *>(seg.base + b)).size16 * ALIGN):
        return NULL
    return jb


cdef JRec *jr_slot(Segment seg, uint64_t n) noexcept nogil:
    """Where record n (>= JOURNAL_MAX) of an open block goes: in the
    journal block that holds it (reserved by wr_op_begin_in_block), or NULL
    (none does, or the chain does not check out)."""
    cdef uint64_t b = seg.hdr.jblocks, first, steps = 0
    cdef JournalHdr *jb
    while b and steps < 64:
        jb = jr_block(seg, b)
        if jb == NULL:
            return NULL
        first = jb.first
        if n >= first:
            if n - first < jb.capacity:
                return &journal_recs(jb)[n - first]
            return NULL
        b = jb.next
        steps += 1
    return NULL


cdef void jr_store(Segment seg, void *p, uint64_t v) noexcept:
    cdef Header *h = seg.hdr
    cdef uint64_t n = h.jcount
    cdef JRec *e
    if n < JOURNAL_MAX:
        e = &h.jlog[n]
    else:
        # inside a block: room was reserved when the operation began
        # (every operation is built to need fewer than JOURNAL_MAX)
        e = jr_slot(seg, n)
        if e == NULL:
            # the chain does not check out (bad bytes): the store is not
            # made, and the write is not committed (commit() raises)
            blk_heap_corrupt(seg)
            return
    wr_publish(seg)
    e.off = <uint64_t>(<char *>p - seg.base)
    e.old = ds_ld64(p)
    ds_fence_release()
    h.jcount = n + 1
    ds_fence_release()
    crash_point()
    ds_st64(p, v)
    crash_point()


cdef void jr_store_cell(Segment seg, Cell *dst, const Cell *src) noexcept:
    jr_store(seg, &dst.b[0], ds_ld64(&src.b[0]))
    jr_store(seg, &dst.b[8], ds_ld64(&src.b[8]))


cdef void jr_rebuild(Segment seg, uint64_t t) noexcept:
    """Journal "rebuild the index of table t": the writes that follow may
    change its index slots unjournaled, provided the entry count is
    journaled after this record (an undo restores the count, then
    rebuilds the index from the entries below it)."""
    cdef Header *h = seg.hdr
    cdef uint64_t n = h.jcount
    cdef JRec *e
    if n < JOURNAL_MAX:
        e = &h.jlog[n]
    else:
        e = jr_slot(seg, n)
        if e == NULL:
            blk_heap_corrupt(seg)    # (as in jr_store)
            return
    wr_publish(seg)
    e.off = t | 1
    e.old = 0
    ds_fence_release()
    h.jcount = n + 1
    ds_fence_release()
    crash_point()


cdef void jr_rec_alloc(Segment seg, uint64_t off) noexcept nogil:
    if seg.ntxa == seg.captxa and not wr_grow(&seg.txa, &seg.captxa, seg.ntxa + 1, 2):
        seg.recfail = True           # (as in wr_defer_free)
        return
    seg.txa[2 * seg.ntxa] = off
    seg.txa[2 * seg.ntxa + 1] = (<Block *>(seg.base + off)).gen
    seg.ntxa += 1


cdef void jr_rec_incref(Segment seg, uint64_t off) noexcept nogil:
    if seg.ntxi == seg.captxi and not wr_grow(&seg.txi, &seg.captxi, seg.ntxi + 1, 1):
        seg.recfail = True           # (as in wr_defer_free)
        return
    seg.txi[seg.ntxi] = off
    seg.ntxi += 1
