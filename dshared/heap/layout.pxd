# Named accessors of the block layout (included by _heap.pxd after the
# structs): what a block header's kind_rc word holds, and the payloads of a
# free block, a table and a list, instead of byte offsets at each use.

# Block.kind_rc: the kind in the low byte, the shared refcount above it
# (free blocks: PUNCHED, heap/punch.pxi, in the bits above the kind).
cdef inline uint32_t blk_kind(const Block *b) noexcept nogil:
    return b.kind_rc & 0xff

cdef inline uint32_t blk_rc(const Block *b) noexcept nogil:
    return b.kind_rc >> 8


# A free block's payload: the two links of its bin's list (next, prev), at
# the block's address + BLOCK_HDR (blk: seg.base + offset).
cdef inline uint64_t free_next(const char *blk) noexcept nogil:
    return ds_ld64(blk + BLOCK_HDR)

cdef inline uint64_t free_prev(const char *blk) noexcept nogil:
    return ds_ld64(blk + BLOCK_HDR + 8)

cdef inline void free_set_next(char *blk, uint64_t v) noexcept nogil:
    ds_st64(blk + BLOCK_HDR, v)

cdef inline void free_set_prev(char *blk, uint64_t v) noexcept nogil:
    ds_st64(blk + BLOCK_HDR + 8, v)


# A TABLE block's payload: this header, then int32 index[nslots], then
# Entry entries[capacity] (see table_view_at).
ctypedef struct TableHdr:
    uint64_t nslots
    uint64_t capacity
    uint64_t nentries           # dense entries used, deleted ones included
    uint64_t count              # live entries

cdef enum:
    TABLE_HDR = 32              # sizeof(TableHdr)

cdef inline TableHdr *table_hdr(char *base, uint64_t t) noexcept nogil:
    return <TableHdr *>(base + t + BLOCK_HDR)

cdef inline int32_t *table_index(char *base, uint64_t t) noexcept nogil:
    return <int32_t *>(base + t + BLOCK_HDR + TABLE_HDR)

cdef inline Entry *table_entries(char *base, uint64_t t) noexcept nogil:
    return <Entry *>(base + t + BLOCK_HDR + TABLE_HDR + 4 * table_hdr(base, t).nslots)

cdef inline void table_init(char *base, uint64_t t, uint64_t nslots, uint64_t capacity) noexcept nogil:
    """A fresh table's header and index (every slot empty); no entries yet."""
    cdef TableHdr *th = table_hdr(base, t)
    th.nslots = nslots
    th.capacity = capacity
    th.nentries = 0
    th.count = 0
    memset(base + t + BLOCK_HDR + TABLE_HDR, 0xff, 4 * nslots)


# A LIST block's payload: its items block (0: none), its length, its version.
ctypedef struct ListBody:
    uint64_t items
    uint64_t length
    uint64_t version

cdef inline ListBody *list_body(char *base, uint64_t l) noexcept nogil:
    return <ListBody *>(base + l + BLOCK_HDR)


# An ITEMS block's payload: its capacity (uint64), then Cell cells[capacity].
cdef inline uint64_t items_cap(char *base, uint64_t it) noexcept nogil:
    return ds_ld64(base + it + BLOCK_HDR)

cdef inline Cell *items_cells(char *base, uint64_t it) noexcept nogil:
    return <Cell *>(base + it + BLOCK_HDR + 8)
