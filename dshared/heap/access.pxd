# The read side of dict tables and lists, inline (included by _heap.pxd):
# the probe, the lookup and the checked readers of entries and items. Inline,
# so that _codec's reads (d[k], k in d, lst[i], iteration) run them without a
# call into _heap; an error goes to an out-of-line raiser of the Segment
# (seg_bad_block, seg_raise_corrupt). Offsets are those of blocks already checked by
# checked_block / view_block.


# -- the probe: CPython's perturbation scheme, the one sequence every table
# operation follows (lookup, insert, place, remove, check). Bounded: after
# nslots + 64 steps (past any chain of a sane table, which keeps one slot
# empty) the table is bad.

ctypedef struct Probe:
    uint64_t i                  # the current slot
    uint64_t mask               # nslots - 1
    uint64_t perturb
    uint64_t n                  # steps taken


cdef inline void probe_start(Probe *pr, uint64_t hash, uint64_t nslots) noexcept nogil:
    pr.mask = nslots - 1
    pr.i = hash & pr.mask
    pr.perturb = hash
    pr.n = 0


cdef inline bint probe_next(Probe *pr) noexcept nogil:
    """Step to the next slot; False when the step went past the bound."""
    pr.perturb >>= 5
    pr.i = (pr.i * 5 + pr.perturb + 1) & pr.mask
    pr.n += 1
    return pr.n <= pr.mask + 64


cdef inline int64_t table_lookup(Segment seg, const TableView *tv, const Key *k) except -2:
    """Index of the entry with key k in the table read into tv, or -1."""
    cdef uint64_t nentries = tv.nentries
    cdef uint8_t *index = tv.index
    cdef uint64_t iw = tv.iw
    cdef Entry *ents = tv.ents
    cdef int32_t ix
    cdef Probe pr
    if tv.off == 0:
        return -1
    probe_start(&pr, k.hash, tv.nslots)
    while True:
        ix = ix_get(index, iw, pr.i)
        if ix == IX_EMPTY:
            return -1
        if ix >= 0:
            if <uint64_t>ix >= nentries:
                seg_bad_block(seg, tv.off, K_TABLE)
            if entry_matches(seg, &ents[ix], k):
                return ix
        if not probe_next(&pr):
            break
    seg_bad_block(seg, tv.off, K_TABLE)
    return -2


# -- dicts: DictBody, and TableHdr, index, entries (heap/layout.pxd).

cdef inline int64_t dict_find(Segment seg, uint64_t d, const Key *k) except -2:
    """Index of the entry with key `k` in dict block d, or -1."""
    cdef TableView tv
    table_view(seg, d, &tv)
    return table_lookup(seg, &tv, k)


cdef inline int64_t table_find(Segment seg, uint64_t t, const Key *k) except -2:
    """Index of the entry with key `k` in table t (0: empty), or -1."""
    cdef TableView tv
    table_view_at(seg, t, &tv)
    return table_lookup(seg, &tv, k)


cdef inline int64_t dict_len(Segment seg, uint64_t d) except -1:
    cdef TableView tv
    table_view(seg, d, &tv)
    return <int64_t>tv.count


cdef inline uint64_t dict_version(Segment seg, uint64_t d) noexcept nogil:
    return dict_body(seg.base, d).version


cdef inline Entry *dict_entry(Segment seg, uint64_t d, int64_t i) except NULL:
    """Entry i of dict block d, checked to lie below the table's entry count."""
    cdef TableView tv
    table_view(seg, d, &tv)
    if i < 0 or <uint64_t>i >= tv.nentries:
        seg_raise_corrupt(seg, "dict entry %d out of range" % i)
        return NULL
    return &tv.ents[i]


cdef inline int64_t dict_next(Segment seg, uint64_t d, int64_t i) except -2:
    """The first live entry at or after position i, or -1."""
    cdef TableView tv
    table_view(seg, d, &tv)
    if i < 0:
        return -1
    while <uint64_t>i < tv.nentries:
        if tv.ents[i].key.b[0] != T_EMPTY:
            return i
        i += 1
    return -1


cdef inline int64_t dict_prev(Segment seg, uint64_t d, int64_t i) except -2:
    """The last live entry at or before position i, or -1."""
    cdef TableView tv
    table_view(seg, d, &tv)
    if i >= <int64_t>tv.nentries:
        i = <int64_t>tv.nentries - 1
    while i >= 0:
        if tv.ents[i].key.b[0] != T_EMPTY:
            return i
        i -= 1
    return -1


# -- lists: ListBody, and ItemsHdr, cells (heap/layout.pxd).

cdef inline int64_t list_len(Segment seg, uint64_t l) except -1:
    cdef uint64_t n
    if (<Block *>(seg.base + l)).size16 * ALIGN < BLOCK_HDR + sizeof(ListBody):
        return seg_raise_corrupt(seg, "list block at %d is too small" % l)
    n = list_body(seg.base, l).length
    if n > seg.lim // CELL_SIZE:
        return seg_raise_corrupt(seg, "list at %d claims %d items" % (l, n))
    return <int64_t>n


cdef inline Cell *list_cells(Segment seg, uint64_t l, uint64_t n) except NULL:
    """The cells of list `l`, checked to hold at least n items."""
    cdef uint64_t it = list_body(seg.base, l).items
    cdef Block *b
    cdef ItemsHdr *ih
    if it == 0:
        if n == 0:
            return <Cell *>(list_body(seg.base, l) + 1)     # never read
        seg_raise_corrupt(seg, "list at %d has no items block" % l)
        return NULL
    b = checked_block(seg, it, K_ITEMS)
    ih = items_hdr(seg.base, it)
    if ih.capacity > cells_fit(b.size16) or n > ih.capacity:
        seg_raise_corrupt(seg, "list items at %d are inconsistent" % it)
        return NULL
    return items_cells_of(ih)
