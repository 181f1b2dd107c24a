# Lists: splice and rebuild of the items block (included by _heap.pyx at
# module level).
#
# LIST payload: items (ITEMS block or 0), len, version. ITEMS payload: cap,
# cells. The readers list_len, list_cells are inline in heap/access.pxd.


cdef int lst_splice(Segment seg, uint64_t l, uint64_t start, uint64_t ndel,
                    const Cell *cells, uint64_t nins) except -1:
    """Replace items [start, start+ndel) by nins fresh cells. Appending into
    spare room writes past the length and publishes the new length; any
    other change builds a new items block and publishes it. The removed
    cells are released on commit. On failure nothing changed."""
    cdef ListBody *lb = list_body(seg.base, l)
    cdef uint64_t length = lb.length, it = lb.items, cap = 0, i, nit
    cdef Cell *items = list_cells(seg, l, length)
    cdef Cell *out
    if start > length or ndel > length - start:
        raise CorruptSegmentError("list splice out of range")
    wr_reserve(seg, 1, ndel, 1, 0)
    if it:
        cap = items_cap(seg.base, it)
    if ndel == 0 and start == length and (seg.lk.bdepth == 0 or nins <= 16):
        if length + nins <= cap:
            lst_append_in_place(seg, l, items, length, cells, nins)
            return 0
        if it and lst_grow_in_place(seg, it, lst_grown_cap(length + nins)):
            lst_append_in_place(seg, l, items, length, cells, nins)
            return 0
    if nins == 0 and start + ndel == length:
        lst_truncate(seg, l, items, start, ndel, cap)
        return 0
    if ndel == nins and nins <= 4:
        for i in range(nins):
            wr_defer_release(seg, &items[start + i])
            jr_store_cell(seg, &items[start + i], &cells[i])
        tbl_bump_version(seg, l)
        return 0
    out = lst_new_items(seg, length - ndel + nins, nins > ndel, &nit)
    memcpy(out, items, CELL_SIZE * start)
    memcpy(&out[start], cells, CELL_SIZE * nins)
    memcpy(&out[start + nins], &items[start + ndel], CELL_SIZE * (length - start - ndel))
    for i in range(ndel):
        wr_defer_release(seg, &items[start + i])
    lst_publish_items(seg, l, nit, length - ndel + nins)
    return 0


cdef inline uint64_t lst_grown_cap(uint64_t n) noexcept nogil:
    """The capacity an items block that must hold n cells grows to."""
    return n + (n >> 3) + (3 if n < 9 else 6)


cdef bint lst_grow_in_place(Segment seg, uint64_t it, uint64_t newcap) noexcept:
    """Grow items block `it` to newcap cells over the free room above it (the
    cells past the length are never read); False when there is none."""
    if not blk_extend(seg, it, sizeof(ItemsHdr) + CELL_SIZE * newcap):
        return False
    crash_point()
    jr_store(seg, &items_hdr(seg.base, it).capacity, newcap)
    return True


cdef void lst_append_in_place(Segment seg, uint64_t l, Cell *items, uint64_t length,
                              const Cell *cells, uint64_t nins) noexcept:
    """Append nins cells into the spare room of the items block, then
    publish the new length."""
    cdef uint64_t i
    if seg.lk.bdepth:
        # inside a block, the cells past the length may be live in the
        # block's before-state (an earlier delete at the end left
        # them): journaled, so a rollback gives them back
        for i in range(nins):
            jr_store_cell(seg, &items[length + i], &cells[i])
    else:
        memcpy(&items[length], cells, CELL_SIZE * nins)
    crash_point()
    jr_store(seg, &list_body(seg.base, l).length, length + nins)
    tbl_bump_version(seg, l)


cdef void lst_truncate(Segment seg, uint64_t l, Cell *items, uint64_t start, uint64_t ndel,
                       uint64_t cap) noexcept:
    """Delete the items from `start` to the end. Shrinking below a quarter of
    a large block moves the rest to a smaller block when one can be had;
    otherwise the shorter length is published in place (no allocation, so
    it works in a full segment) and the cells past it are dead. An emptied
    list drops its items block."""
    cdef ListBody *lb = list_body(seg.base, l)
    cdef uint64_t i, nit = 0
    cdef int why
    if start != 0 and start < cap // 4 and cap > 16:
        nit = lst_items_block(seg, start + (start >> 1) + 4, &why)    # none: truncated in place
    for i in range(ndel):
        wr_defer_release(seg, &items[start + i])
    if nit:
        memcpy(items_cells(seg.base, nit), items, CELL_SIZE * start)
        lst_publish_items(seg, l, nit, start)
        return
    if start == 0:
        wr_defer_free(seg, lb.items)
        jr_store(seg, &lb.items, 0)
    jr_store(seg, &lb.length, start)
    tbl_bump_version(seg, l)


cdef int lst_rebuild(Segment seg, uint64_t l, const Cell *cells, uint64_t n,
                     const Cell *removed, uint64_t nremoved) except -1:
    """Give list l exactly the items `cells` (moved or fresh) in a new items
    block; release `removed` on commit. On failure nothing changed."""
    cdef uint64_t i, nit
    cdef Cell *out
    wr_reserve(seg, 1, nremoved, 1, 0)
    out = lst_new_items(seg, n, False, &nit)
    memcpy(out, cells, CELL_SIZE * n)
    for i in range(nremoved):
        wr_defer_release(seg, &removed[i])
    lst_publish_items(seg, l, nit, n)
    return 0


cdef uint64_t lst_items_block(Segment seg, uint64_t newcap, int *why) noexcept nogil:
    """A fresh, zeroed items block of newcap cells with one reference, not yet
    published; 0 when there is no room (*why: see blk_alloc)."""
    cdef uint64_t nit = blk_alloc(seg, sizeof(ItemsHdr) + CELL_SIZE * newcap, K_ITEMS, why)
    cdef ItemsHdr *ih
    if nit == 0:
        return 0
    ih = items_hdr(seg.base, nit)
    ih.capacity = newcap
    memset(items_cells_of(ih), 0, CELL_SIZE * newcap)
    (<Block *>(seg.base + nit)).kind_rc = K_ITEMS | RC_ONE
    return nit


cdef Cell *lst_new_items(Segment seg, uint64_t n, bint grow, uint64_t *nit) except NULL:
    """The cells of a fresh items block for n cells (with room to grow when
    `grow`), its offset in *nit; an empty list gets none (*nit = 0, and the
    cells returned are never written). SegmentFullError when there is no room."""
    cdef uint64_t newcap = n
    cdef int why
    nit[0] = 0
    if n == 0:
        return <Cell *>(seg.base + HEADER_SIZE)         # nothing is written there
    if grow:
        newcap = lst_grown_cap(n)
    nit[0] = lst_items_block(seg, newcap, &why)
    if nit[0] == 0:
        blk_raise_full(seg, CELL_SIZE * newcap, why)
    crash_point()
    return items_cells(seg.base, nit[0])


cdef void lst_publish_items(Segment seg, uint64_t l, uint64_t nit, uint64_t n) noexcept:
    """Make items block nit (0: none) with n items list l's, and free the old one on commit."""
    cdef ListBody *lb = list_body(seg.base, l)
    cdef uint64_t old = lb.items
    jr_store(seg, &lb.items, nit)
    jr_store(seg, &lb.length, n)
    tbl_bump_version(seg, l)
    if old:
        wr_defer_free(seg, old)        # its cells moved or were released
