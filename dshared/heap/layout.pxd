# The block layout in types (included by _heap.pxd): the block header, the
# cell and the dict entry, and the payload of each kind, declared from
# include/dshared_layout.h (which asserts at compile time that each field
# sits at its offset of the segment format), with the accessors the code
# uses instead of byte offsets. A block at offset `off` starts at
# base + off; its payload follows the Block header (blk_payload).

cdef extern from "dshared_layout.h" nogil:
    ctypedef struct Cell "ds_cell":
        uint8_t b[16]

    ctypedef struct Block "ds_block":
        uint32_t size16         # whole block, header included, in 16-byte units
        uint32_t prev16         # the block just below, for coalescing; 0 at the bottom
        uint32_t gen            # changes on every allocation: views detect reuse
        uint32_t kind_rc        # kind in the low byte, shared refcount above

    # no hash: see entry_hash (heap/keys.pxd)
    ctypedef struct Entry "ds_entry":
        Cell key
        Cell value

    # K_FREE: its bin's list links; a PUNCHED one (heap/punch.pxi) also the
    # range [hole_from, hole_end) where its pages may be holes
    ctypedef struct FreeBody "ds_free_body":
        uint64_t next
        uint64_t prev
        uint64_t hole_from
        uint64_t hole_end

    # K_STR: length, flags (bit 0: ASCII), then the UTF-8 data (str_data)
    ctypedef struct StrHdr "ds_str_hdr":
        uint64_t length
        uint64_t flags

    # K_BYTES, K_BIGINT, K_KTUPLE: length, then the data (bytes_data)
    ctypedef struct BytesHdr "ds_bytes_hdr":
        uint64_t length

    # K_TUPLE: n, then Cell cells[n] (tuple_cells)
    ctypedef struct TupleHdr "ds_tuple_hdr":
        uint64_t n

    # K_DICT: its TABLE block (0: none yet), its version
    ctypedef struct DictBody "ds_dict_body":
        uint64_t table
        uint64_t version

    # K_LIST: its ITEMS block (0: none), its length, its version
    ctypedef struct ListBody "ds_list_body":
        uint64_t items
        uint64_t length
        uint64_t version

    # K_TABLE: this header, then the index of nslots 3- or 4-byte slots
    # (table_index, ix_get), then Entry entries[capacity] (table_entries)
    ctypedef struct TableHdr "ds_table_hdr":
        uint64_t nslots
        uint64_t capacity
        uint64_t nentries       # dense entries used, deleted ones included
        uint64_t count          # live entries

    # K_ITEMS: its capacity, then Cell cells[capacity] (items_cells)
    ctypedef struct ItemsHdr "ds_items_hdr":
        uint64_t capacity

    # K_JOURNAL: the next (older) journal block, the index of its first
    # record, its capacity, then JRec records[capacity] (journal_recs)
    ctypedef struct JournalHdr "ds_journal_hdr":
        uint64_t next
        uint64_t first
        uint64_t capacity

    # an undo record: the offset of 8 bytes and what they held (offset | 1:
    # the index of the table there is rebuilt)
    ctypedef struct JRec "ds_jrec":
        uint64_t off
        uint64_t old

    # &DictBody.version or &ListBody.version of a container's payload
    uint64_t *container_version "ds_container_version"(char *payload, bint is_list)


cdef enum:
    FREE_KEEP = 64              # a free block's first bytes (Block, FreeBody) are never punched


cdef inline char *blk_payload(char *base, uint64_t off) noexcept nogil:
    return base + off + BLOCK_HDR


# Block.kind_rc: the kind in the low byte, the shared refcount above it
# (free blocks: PUNCHED, heap/punch.pxi, in the bits above the kind).
cdef enum:
    KIND_MASK = 0xff
    RC_ONE = 0x100              # a refcount of one in kind_rc

cdef inline uint32_t blk_kind(const Block *b) noexcept nogil:
    return b.kind_rc & KIND_MASK

cdef inline uint32_t blk_rc(const Block *b) noexcept nogil:
    return b.kind_rc >> 8

cdef inline uint32_t kind_rc_of(uint32_t kind, uint32_t rc) noexcept nogil:
    return kind | (rc << 8)


# A free block's payload (blk: seg.base + offset).
cdef inline FreeBody *free_body(char *blk) noexcept nogil:
    return <FreeBody *>(blk + BLOCK_HDR)

cdef inline uint64_t free_next(char *blk) noexcept nogil:
    return free_body(blk).next

cdef inline uint64_t free_prev(char *blk) noexcept nogil:
    return free_body(blk).prev

cdef inline void free_set_next(char *blk, uint64_t v) noexcept nogil:
    free_body(blk).next = v

cdef inline void free_set_prev(char *blk, uint64_t v) noexcept nogil:
    free_body(blk).prev = v


# Byte blocks: STR (StrHdr) and BYTES, BIGINT, KTUPLE (BytesHdr); both
# headers start with the length.
cdef inline StrHdr *str_hdr(char *base, uint64_t off) noexcept nogil:
    return <StrHdr *>(base + off + BLOCK_HDR)

cdef inline char *str_data(StrHdr *h) noexcept nogil:
    return <char *>(h + 1)

cdef inline BytesHdr *bytes_hdr(char *base, uint64_t off) noexcept nogil:
    return <BytesHdr *>(base + off + BLOCK_HDR)

cdef inline char *bytes_data(BytesHdr *h) noexcept nogil:
    return <char *>(h + 1)

cdef inline uint64_t bytes_hdr_size(int kind) noexcept nogil:
    """Where a byte block's data starts in its payload."""
    return sizeof(StrHdr) if kind == K_STR else sizeof(BytesHdr)


cdef inline TupleHdr *tuple_hdr(char *base, uint64_t off) noexcept nogil:
    return <TupleHdr *>(base + off + BLOCK_HDR)

cdef inline Cell *tuple_cells(TupleHdr *h) noexcept nogil:
    return <Cell *>(h + 1)


cdef inline DictBody *dict_body(char *base, uint64_t d) noexcept nogil:
    return <DictBody *>(base + d + BLOCK_HDR)


cdef inline TableHdr *table_hdr(char *base, uint64_t t) noexcept nogil:
    return <TableHdr *>(base + t + BLOCK_HDR)

# The index: nslots slots of 3 bytes (4 in a table of more than IX3_SLOTS
# slots), each a signed entry number, IX_EMPTY or IX_DUMMY, little-endian,
# padded to 8 bytes so that the entries after it stay aligned. A 3-byte slot
# holds entry numbers below 2**23, and a table of IX3_SLOTS slots has at
# most 7/8 of that many entries.
cdef enum:
    IX3_SLOTS = 1 << 23

cdef inline uint64_t index_width(uint64_t nslots) noexcept nogil:
    return 3 if nslots <= IX3_SLOTS else 4

cdef inline uint64_t index_bytes(uint64_t nslots) noexcept nogil:
    return (index_width(nslots) * nslots + 7) & ~(<uint64_t>7)

cdef inline int32_t ix_get(const uint8_t *index, uint64_t w, uint64_t i) noexcept nogil:
    """Slot i of an index of w-byte slots (one 4-byte load: the slot's bytes
    and, for a 3-byte slot, one byte after it, which is still inside the
    table block: the padding or the entries; sign-extended)."""
    cdef int s = <int>(32 - 8 * w)
    return (<int32_t><uint32_t>(ds_ld32(index + w * i) << s)) >> s

cdef inline void ix_set(uint8_t *index, uint64_t w, uint64_t i, int32_t v) noexcept nogil:
    """Set slot i, unjournaled (a table not yet published, or one whose
    index the journal rebuilds)."""
    memcpy(index + w * i, &v, w)

cdef inline uint8_t *table_index_of(TableHdr *th) noexcept nogil:
    return <uint8_t *>(th + 1)

cdef inline Entry *table_entries_of(TableHdr *th, uint64_t nslots) noexcept nogil:
    return <Entry *>(table_index_of(th) + index_bytes(nslots))

cdef inline uint8_t *table_index(char *base, uint64_t t) noexcept nogil:
    return table_index_of(table_hdr(base, t))

cdef inline Entry *table_entries(char *base, uint64_t t) noexcept nogil:
    cdef TableHdr *th = table_hdr(base, t)
    return table_entries_of(th, th.nslots)

cdef inline uint64_t table_payload(uint64_t nslots, uint64_t capacity) noexcept nogil:
    """The payload bytes of a table of nslots index slots and capacity entries."""
    return sizeof(TableHdr) + index_bytes(nslots) + ENTRY_SIZE * capacity

cdef inline bint table_sizes_ok(uint64_t nslots, uint64_t capacity, uint64_t nentries, uint64_t size) noexcept nogil:
    """Whether a table header's sizes agree and fit a payload of size
    bytes: a power of two of slots, at least 2, and entries up to the
    capacity, which is at least 1 (each bound checked before the next, so
    nothing overflows). The entries after the index are what makes ix_get's
    one byte past the last slot a read inside the block."""
    return (nslots >= 2 and not (nslots & (nslots - 1)) and nslots <= size // 3 and 1 <= capacity
            and capacity <= size // ENTRY_SIZE and table_payload(nslots, capacity) <= size and nentries <= capacity)

cdef inline void table_init(char *base, uint64_t t, uint64_t nslots, uint64_t capacity) noexcept nogil:
    """A fresh table's header and index (every slot empty); no entries yet."""
    cdef TableHdr *th = table_hdr(base, t)
    th.nslots = nslots
    th.capacity = capacity
    th.nentries = 0
    th.count = 0
    memset(table_index_of(th), 0xff, index_bytes(nslots))


cdef inline ListBody *list_body(char *base, uint64_t l) noexcept nogil:
    return <ListBody *>(base + l + BLOCK_HDR)


cdef inline ItemsHdr *items_hdr(char *base, uint64_t it) noexcept nogil:
    return <ItemsHdr *>(base + it + BLOCK_HDR)

cdef inline Cell *items_cells_of(ItemsHdr *h) noexcept nogil:
    return <Cell *>(h + 1)

cdef inline uint64_t items_cap(char *base, uint64_t it) noexcept nogil:
    return items_hdr(base, it).capacity

cdef inline Cell *items_cells(char *base, uint64_t it) noexcept nogil:
    return items_cells_of(items_hdr(base, it))

cdef inline uint64_t cells_fit(uint64_t size16) noexcept nogil:
    """How many cells a TUPLE or ITEMS block of size16 units holds after its
    count word (TupleHdr, ItemsHdr)."""
    return (size16 * ALIGN - BLOCK_HDR - sizeof(ItemsHdr)) // CELL_SIZE


cdef inline JournalHdr *journal_hdr(char *base, uint64_t b) noexcept nogil:
    return <JournalHdr *>(base + b + BLOCK_HDR)

cdef inline JRec *journal_recs(JournalHdr *h) noexcept nogil:
    return <JRec *>(h + 1)
