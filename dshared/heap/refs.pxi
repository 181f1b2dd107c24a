# Reference counts: incref, decref, release of a block and what it owns
# (included by _heap.pyx at module level).


cdef void blk_incref(Segment seg, uint64_t off) noexcept nogil:
    cdef Block *b = <Block *>(seg.base + off)
    if blk_rc(b) < RC_MAX:
        b.kind_rc += RC_ONE
        if seg.txrec:
            jr_rec_incref(seg, off)


cdef void blk_decref_cell(Segment seg, const Cell *c) noexcept:
    """Drop the reference a cell holds; free what becomes unreachable."""
    if c.b[0] >= T_FIRST_REF and c.b[0] <= T_LAST:
        blk_release(seg, ds_ld64(&c.b[8]))


cdef void blk_release(Segment seg, uint64_t off) noexcept:
    """Drop one reference to block `off`; free what becomes unreachable,
    iteratively (nesting can be 100,000 deep)."""
    cdef uint64_t *stack = NULL
    cdef uint64_t n = 0, cap = 0, freed = 0
    while True:
        if blk_decref_one(seg, off):
            # unreachable now: queue the blocks it references, then free it
            if blk_kind(<Block *>(seg.base + off)) in (K_DICT, K_LIST):
                nt_container(seg, off)     # its waiters return (see _nt_wait)
            n = blk_push_children(seg, off, &stack, &n, &cap)
            blk_free(seg, off)
            freed += 1
            if freed % 64 == 0:
                crash_point()
        if n == 0:
            break
        n -= 1
        off = stack[n]
    c_free(stack)


cdef bint blk_decref_one(Segment seg, uint64_t off) noexcept nogil:
    cdef Block *b
    if not seg_inb(seg, off, BLOCK_HDR) or (off & (ALIGN - 1)):
        return False
    b = <Block *>(seg.base + off)
    if blk_kind(b) == K_FREE or blk_kind(b) > K_LAST:
        return False
    if blk_rc(b) == RC_MAX:
        return False                # saturated: left to collect()
    if blk_rc(b) <= 1:
        b.kind_rc &= KIND_MASK
        return True
    b.kind_rc -= RC_ONE
    return False


cdef uint64_t blk_push_children(Segment seg, uint64_t off, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept:
    """Push the blocks that block `off` references (owned cells, and the
    table/items block of a container) onto the stack."""
    cdef Block *b = <Block *>(seg.base + off)
    cdef int kind = blk_kind(b)
    cdef uint64_t size = <uint64_t>b.size16 * ALIGN, i, cnt, sub
    cdef char *p = blk_payload(seg.base, off)
    cdef Cell *cells = NULL
    cdef Entry *ents
    cdef TableHdr *th
    if size < MIN_BLOCK or not seg_inb(seg, off, size):
        return n[0]                 # (bad bytes) a size below the header would wrap the bounds below
    if kind == K_TUPLE:
        cnt = (<TupleHdr *>p).n
        if cnt <= (size - BLOCK_HDR - sizeof(TupleHdr)) // CELL_SIZE:
            cells = tuple_cells(<TupleHdr *>p)
            for i in range(cnt):
                blk_push_cell(seg, &cells[i], stack, n, cap)
    elif kind == K_DICT or kind == K_LIST:
        # DictBody.table and ListBody.items: the first word of both
        sub = (<DictBody *>p).table if kind == K_DICT else (<ListBody *>p).items
        if sub:
            # the table/items block belongs to its container alone (rc 1)
            blk_push(seg, sub, stack, n, cap)
        if kind == K_LIST and sub and gc_valid_ref(seg, sub):
            # the cells below the list's length are its items
            cnt = (<ListBody *>p).length
            size = <uint64_t>(<Block *>(seg.base + sub)).size16 * ALIGN
            if size < MIN_BLOCK or not seg_inb(seg, sub, size):
                return n[0]
            i = items_cap(seg.base, sub)
            if cnt <= i and i <= (size - BLOCK_HDR - sizeof(ItemsHdr)) // CELL_SIZE:
                cells = items_cells(seg.base, sub)
                for i in range(cnt):
                    blk_push_cell(seg, &cells[i], stack, n, cap)
    elif kind == K_TABLE:
        th = <TableHdr *>p
        cnt = th.nentries
        i = th.nslots
        if i <= size and cnt <= size // ENTRY_SIZE and table_payload(i, cnt) <= size - BLOCK_HDR:
            ents = table_entries_of(th, i)
            for i in range(cnt):
                if ents[i].key.b[0] != T_EMPTY and ents[i].key.b[0] != T_PACKED:
                    blk_push_cell(seg, &ents[i].key, stack, n, cap)
                    blk_push_cell(seg, &ents[i].value, stack, n, cap)
    return n[0]


cdef void blk_push_cell(Segment seg, const Cell *c, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept:
    if c.b[0] >= T_FIRST_REF and c.b[0] <= T_LAST:
        blk_push(seg, ds_ld64(&c.b[8]), stack, n, cap)


cdef void blk_push(Segment seg, uint64_t off, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept:
    cdef uint64_t *grown
    if n[0] == cap[0]:
        grown = <uint64_t *>realloc(stack[0], (cap[0] * 2 + 64) * sizeof(uint64_t))
        if grown == NULL:
            return                  # out of process memory: leak, collect() reclaims
        stack[0] = grown
        cap[0] = cap[0] * 2 + 64
    stack[0][n[0]] = off
    n[0] += 1
