# Lists: splice and rebuild of the items block (included by _heap.pyx at module level).


cdef int lst_splice(Segment seg, uint64_t l, uint64_t start, uint64_t ndel,
                     const Cell *cells, uint64_t nins) except -1:
    """Replace items [start, start+ndel) by nins fresh cells. Appending into
    spare room writes past the length and publishes the new length; any
    other change builds a new items block and publishes it. The removed
    cells are released on commit. On failure nothing changed."""
    cdef char *lp = seg.base + l + BLOCK_HDR
    cdef uint64_t length = ds_ld64(lp + 8), it = ds_ld64(lp), cap = 0, i
    cdef Cell *items = list_cells(seg, l, length)
    cdef Cell *out
    if start > length or ndel > length - start:
        raise CorruptSegmentError("list splice out of range")
    if it:
        cap = ds_ld64(seg.base + it + BLOCK_HDR)
    if ndel == 0 and start == length and length + nins <= cap and (seg.lk.bdepth == 0 or nins <= 16):
        if seg.lk.bdepth:
            # inside a block, the cells past the length may be live in the
            # block's before-state (an earlier delete at the end left
            # them): journaled, so a rollback gives them back
            for i in range(nins):
                jr_store_cell(seg, &items[length + i], &cells[i])
        else:
            memcpy(&items[length], cells, CELL_SIZE * nins)
        crash_point()
        jr_store(seg, lp + 8, length + nins)
        tbl_bump_version(seg, l)
        return 0
    if nins == 0 and start + ndel == length and (start == 0 or start >= cap // 4 or cap <= 16
                                                 or not lst_try_new_items(seg, l, start)):
        # deleting at the end: publish the shorter length (no allocation,
        # so it works in a full segment); the cells past it are dead. An
        # emptied list drops its items block.
        for i in range(ndel):
            wr_defer_release(seg, &items[start + i])
        if start == 0:
            jr_store(seg, lp, 0)
            wr_defer_free(seg, it)
        jr_store(seg, lp + 8, start)
        tbl_bump_version(seg, l)
        return 0
    if nins == 0 and start + ndel == length:
        # shrinking below a quarter: move to a smaller block (allocated above)
        memcpy(<Cell *>(seg.base + seg._pending_items + BLOCK_HDR + 8), items, CELL_SIZE * start)
        for i in range(ndel):
            wr_defer_release(seg, &items[start + i])
        lst_publish_items(seg, l, start)
        return 0
    if ndel == nins and nins <= 4:
        for i in range(nins):
            wr_defer_release(seg, &items[start + i])
            jr_store_cell(seg, &items[start + i], &cells[i])
        tbl_bump_version(seg, l)
        return 0
    out = lst_new_items(seg, l, length - ndel + nins, nins > ndel)
    memcpy(out, items, CELL_SIZE * start)
    memcpy(&out[start], cells, CELL_SIZE * nins)
    memcpy(&out[start + nins], &items[start + ndel], CELL_SIZE * (length - start - ndel))
    for i in range(ndel):
        wr_defer_release(seg, &items[start + i])
    lst_publish_items(seg, l, length - ndel + nins)
    return 0


cdef int lst_rebuild(Segment seg, uint64_t l, const Cell *cells, uint64_t n,
                      const Cell *removed, uint64_t nremoved) except -1:
    """Give list l exactly the items `cells` (moved or fresh) in a new items
    block; release `removed` on commit. On failure nothing changed."""
    cdef Cell *out = lst_new_items(seg, l, n, False)
    cdef uint64_t i
    memcpy(out, cells, CELL_SIZE * n)
    for i in range(nremoved):
        wr_defer_release(seg, &removed[i])
    lst_publish_items(seg, l, n)
    return 0


cdef Cell *lst_new_items(Segment seg, uint64_t l, uint64_t n, bint grow) except NULL:
    """A fresh items block for n cells (with room to grow), not yet
    published; an empty list gets none."""
    cdef uint64_t newcap = n, nit
    cdef char *q
    if n == 0:
        seg._pending_items = 0
        return <Cell *>(seg.base + l + BLOCK_HDR + 24)     # nothing is written there
    if grow:
        newcap += (newcap >> 3) + (3 if newcap < 9 else 6)
    if newcap == 0:
        newcap = 1
    nit = blk_alloc(seg, 8 + CELL_SIZE * newcap, K_ITEMS)
    if nit == 0:
        blk_raise_full(seg, CELL_SIZE * newcap)
    crash_point()
    q = seg.base + nit + BLOCK_HDR
    ds_st64(q, newcap)
    memset(q + 8, 0, CELL_SIZE * newcap)
    (<Block *>(seg.base + nit)).kind_rc = K_ITEMS | (1 << 8)
    seg._pending_items = nit
    return <Cell *>(q + 8)


cdef bint lst_try_new_items(Segment seg, uint64_t l, uint64_t n) noexcept:
    """Like _new_items for n cells with some room, but False instead of
    raising when there is no space."""
    cdef uint64_t newcap = n + (n >> 1) + 4
    cdef uint64_t nit = blk_alloc(seg, 8 + CELL_SIZE * newcap, K_ITEMS)
    cdef char *q
    if nit == 0:
        return False
    q = seg.base + nit + BLOCK_HDR
    ds_st64(q, newcap)
    memset(q + 8, 0, CELL_SIZE * newcap)
    (<Block *>(seg.base + nit)).kind_rc = K_ITEMS | (1 << 8)
    seg._pending_items = nit
    return True


cdef void lst_publish_items(Segment seg, uint64_t l, uint64_t n) noexcept:
    cdef char *lp = seg.base + l + BLOCK_HDR
    cdef uint64_t old = ds_ld64(lp)
    jr_store(seg, lp, seg._pending_items)
    jr_store(seg, lp + 8, n)
    tbl_bump_version(seg, l)
    if old:
        wr_defer_free(seg, old)        # its cells moved or were released
