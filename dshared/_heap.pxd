# The C-level interface of the segment: layout structs, the Segment type and
# every cdef operation that _codec builds on. _codec cimports this file; this
# module never imports _codec.

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.math cimport floor, isfinite
from libc.string cimport memcmp, memcpy, memset


cdef extern from "dshared.h" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    uint64_t ds_ld64(const void *p)
    uint64_t ds_ld32(const void *p)
    void ds_st64(void *p, uint64_t v)
    uint64_t ds_load_acquire(const uint64_t *p)
    uint64_t ds_load_relaxed(const uint64_t *p)
    void ds_store_release(uint64_t *p, uint64_t v)
    void ds_atomic_or64(uint64_t *p, uint64_t v)
    void ds_fence_acquire()
    void ds_fence_release()
    void ds_cpu_relax()
    void ds_prefetch(const void *p, size_t n)
    void ds_populate(void *p, size_t n) nogil
    int ds_bitlen64(uint64_t v)
    enum: DS_WHOLE_DOUBLE_MAX
    size_t ds_whole_double_bytes(double f, uint8_t *out)
    bint ds_double_int64(double f, int64_t *out)    # a whole double in int64's range, as that int
    int ds_ctz64(uint64_t v)
    uint64_t ds_hash(uint64_t k0, uint64_t k1, unsigned tag, const void *src, size_t n)
    uint64_t ds_hash_u64(uint64_t k0, uint64_t k1, unsigned tag, uint64_t v)
    int ds_mutex_init(pthread_mutex_t *m)
    int ds_mutex_lock_ms(pthread_mutex_t *m, long ms)
    int ds_mutex_trylock(pthread_mutex_t *m)
    int ds_mutex_kind_ok(pthread_mutex_t *m)
    long ds_gettid()
    long ds_mutex_owner(pthread_mutex_t *m)
    int ds_mutex_unlock(pthread_mutex_t *m)
    int ds_mutex_consistent(pthread_mutex_t *m)
    const char *ds_layout_name()
    size_t ds_mutex_size()
    int DSHARED_DEBUG           # the debug tier, 0 to 2 (include/debug.h)
    void DS_ASSERT(bint cond, const char *what)
    void ds_debug_fail(const char *what, const char *detail, const char *file, int line)


cdef extern from "dshared_notify.h" nogil:
    enum:
        DS_NT_BUCKETS
        DS_NT_RECORDS
        DS_NT_PEND
        DS_NT_BYTES
        DS_NT_WAITV_MAX
    ctypedef struct ds_nt_pend:
        uint32_t n, done, all
    ctypedef struct ds_nt_head:
        uint64_t magic
        uint32_t nwaiters
        uint32_t repairer
    uint64_t DS_NT_MAGIC
    ds_nt_head *ds_nt_headp(char *area)
    unsigned ds_nt_bucket_c(uint64_t c)
    unsigned ds_nt_bucket_k(uint64_t c, uint64_t h)
    void ds_nt_note(ds_nt_pend *p, unsigned b)


cdef enum:
    FORMAT_VERSION = 5          # 5: 32-byte entries, 32-bit key hashes; 4: growable journal (transactions) and Header.waits; 3: keys hashed with SipHash-1-3
    HEADER_SIZE = 4096          # the heap starts here
    MIN_CAPACITY = 65536        # smaller sizes are rounded up to this
    ALIGN = 16                  # block sizes and offsets are multiples of this
    BLOCK_HDR = 16              # sizeof(Block)
    MIN_BLOCK = 32              # a free block must hold its two list links
    NBINS = 128
    SMALL_BINS = 64             # exact bins for blocks below 64 * 16 bytes
    RC_MAX = 0xFFFFFF           # a saturated refcount sticks; collect() frees it
    CELL_SIZE = 16
    INLINE_MAX = 14             # str/bytes of up to 14 bytes live in the cell
    ENTRY_SIZE = 32
    MAX_RETRIES = 64            # optimistic read attempts before taking the lock
    JOURNAL_MAX = 64            # undo entries: no single write needs more than ~40
    JBLOCK_MIN = 256            # entries of the first journal block of a transaction (then doubling)
    MANY_OVERWRITES = 8         # tbl_insert_many journals at most this many overwrites (4 entries each)
    FLAG_POISONED = 1
    FLAG_NO_SHRINK = 2          # a process could not take a file lock of its own: never punch pages


# Block kinds (blk_kind(b), heap/layout.pxd). 0 is a free block.
cdef enum:
    K_FREE = 0
    K_STR = 1
    K_BYTES = 2
    K_BIGINT = 3
    K_TUPLE = 4
    K_DICT = 5
    K_LIST = 6
    K_TABLE = 7
    K_ITEMS = 8
    K_KTUPLE = 9
    K_JOURNAL = 10              # undo records of a transaction / lock() block beyond the header's
    K_DEAD = 0xEE               # the header of a block swallowed by coalescing
    K_LAST = 10


# Cell tags (Cell.b[0]). Tags >= T_STR hold a block offset in b[8:16] and
# own one reference to that block; T_DICT and T_LIST also hold the block's
# generation in b[4:8], so that a view is made without reading the block.
cdef enum:
    T_EMPTY = 0
    T_NONE = 1
    T_FALSE = 2
    T_TRUE = 3
    T_INT = 4
    T_FLOAT = 5
    T_SSTR = 6                  # inline str: b[1] = len | 0x80 if ASCII, b[2:16] data
    T_SBYTES = 7                # inline bytes: b[1] = len, b[2:16] data
    T_STR = 8
    T_BYTES = 9
    T_BIGINT = 10
    T_TUPLE = 11
    T_DICT = 12
    T_LIST = 13
    T_KTUPLE = 14               # a tuple used as a key: its canonical encoding
    T_LAST = 14
    T_FIRST_REF = 8
    # In a dict entry's key cell only: the entry's 32 bytes hold a short str
    # key and a short str/bytes value together, no block:
    #   [T_PACKED, klen | 0x80 if ASCII, vtag (T_SSTR/T_SBYTES), vlen | 0x80 if ASCII,
    #    key bytes, value bytes]   with klen <= 14 and klen + vlen <= 28
    T_PACKED = 15
    PACKED_MAX = 28


# Index slots of a dict table.
cdef enum:
    IX_EMPTY = -1
    IX_DUMMY = -2


# the block layout: Cell, Block, Entry, the payload structs and their
# accessors (include/dshared_layout.h, heap/layout.pxd)
include "heap/layout.pxd"

ctypedef struct Header:
    uint64_t magic
    uint32_t version
    uint32_t header_size
    char layout[32]
    uint64_t mutex_size
    uint64_t capacity
    uint64_t seed0
    uint64_t seed1
    uint64_t flags
    uint64_t seq                # seqlock: odd while a write is in flight
    uint64_t top                # end of the tiled heap; above it is untouched
    uint64_t tail16             # size16 of the block just below top
    uint64_t reserved           # bytes backed by posix_fallocate
    uint64_t root               # the root dict block
    uint64_t names              # the dict of named collections
    uint64_t gen                # last generation handed out
    uint64_t used               # bytes in live blocks, headers included
    uint64_t nblocks
    uint64_t repairs
    uint64_t collections
    uint64_t binmap[2]
    uint64_t bins[128]
    uint64_t jcount             # undo journal of the write in flight: entries used
    JRec jlog[64]               # JOURNAL_MAX undo records (heap/layout.pxd)
    uint64_t waits              # the wait area of change notifications (a bytes block), 0 until first used
    uint64_t jblocks            # newest K_JOURNAL block: records JOURNAL_MAX.. of an open block
    uint64_t jkind              # 1: a transaction() is open, 2: a lock() block (for the repair's report)
    uint64_t rollbacks          # blocks rolled back: on an exception, or by a repair after a death
    pthread_mutex_t mutex

# A dict table as read once: readers copy the header fields out, check the
# copy and use only it, since a writer may free and reuse the table meanwhile.
ctypedef struct TableView:
    uint64_t off                # the TABLE block, 0 when the dict has none
    uint64_t nslots
    uint64_t capacity
    uint64_t nentries
    uint64_t count
    uint8_t *index              # slots of iw bytes (ix_get)
    uint64_t iw
    Entry *ents

# A key ready for lookup: computed from the Python object before the lock.
ctypedef struct Key:
    uint64_t hash
    uint8_t ctag                # canonical tag: T_NONE, T_INT, T_FLOAT, T_STR, T_BYTES, T_BIGINT, T_KTUPLE
    uint64_t cval               # T_INT / T_FLOAT payload
    const char *data            # T_STR / T_BYTES / T_BIGINT / T_KTUPLE bytes
    uint64_t len


cdef class LockState:
    cdef uint64_t owner         # Python thread ident of the holder in this process
    cdef long tid               # its kernel thread id, to tell a dead holder from a new thread
    cdef long depth
    cdef long fork_gen
    cdef long bdepth            # transaction() / lock() blocks open (see heap/txn.pxi)
    cdef object bseg            # the handle that opened the outermost block


# final: no subclass, so _heap calls its methods directly, not through the vtable
@cython.final
cdef class Segment:
    cdef char *base
    cdef Header *hdr
    cdef uint64_t cap
    cdef uint64_t lim           # every offset read from the segment ends below this (see seg_read_limit)
    cdef int fd
    cdef readonly str name
    cdef readonly bint created
    cdef LockState lk
    cdef int _gc_was
    cdef int wdepth             # write sections open in this thread
    cdef bint committed
    cdef bint debug_check_due   # DSHARED_DEBUG >= 2: a write committed, check() when it ends
    cdef bint odd               # this write has made the sequence odd (see wr_publish)
    cdef long readers           # read sections of this handle in flight (see seg_shrink_reserve)
    cdef int faulted            # set by the fault handler (include/dshared_fault.h): the mapping faulted
    cdef uint64_t *pfree        # blocks to free on commit
    cdef uint64_t nfree, capfree
    cdef uint64_t *prel         # references to release on commit
    cdef uint64_t nrel, caprel
    cdef bint recfail           # a record could not be stored (realloc failed): commit() raises
    cdef char *nt_area          # the checked wait area (include/dshared_notify.h), NULL until known
    cdef ds_nt_pend nt          # buckets this write (or lock() block) changed: bumped, then woken
    # an open block (heap/txn.pxi): the operation's savepoint, records of
    # what the block allocated and increfed (for an in-process rollback)
    cdef bint txrec             # a block is open through this handle: record allocations and increfs
    cdef uint64_t jcap          # journal records the header and this block's journal blocks hold
    cdef uint64_t jmark, fmark, rmark, amark, imark
    cdef uint64_t *txa          # (offset, generation) of each block allocated in the block
    cdef uint64_t ntxa, captxa
    cdef uint64_t *txi          # blocks whose refcount the block raised
    cdef uint64_t ntxi, captxi
    cdef public list _views     # recent views, direct-mapped by offset (see _codec.make_view)
    cdef object __weakref__










# -- change notifications: what a write changed (include/dshared_notify.h)


# the operations on a segment (functions of heap/*.pxi)
include "heap/api.pxd"


cdef inline bint nt_attach(Segment seg) noexcept nogil:
    """Find the wait area from Header.waits and check it (kind, size,
    bounds, magic) once; a write with no wait area notes nothing. The area
    is the payload of a bytes block: length word, then from the next 64-byte
    boundary DS_NT_BYTES (include/dshared_notify.h)."""
    cdef uint64_t w = seg.hdr.waits, a
    cdef uint64_t need = BLOCK_HDR + sizeof(BytesHdr) + 64 + DS_NT_BYTES
    cdef Block *b
    if w == 0 or seg.base == NULL:
        return False
    if (w & (ALIGN - 1)) or not seg_inb(seg, w, need):
        return False
    b = <Block *>(seg.base + w)
    if blk_kind(b) != K_BYTES or <uint64_t>b.size16 * ALIGN < need:
        return False
    a = (w + BLOCK_HDR + sizeof(BytesHdr) + 63) & ~(<uint64_t>63)
    if ds_nt_headp(seg.base + a).magic != DS_NT_MAGIC:
        return False
    seg.nt_area = seg.base + a
    return True

cdef inline void nt_container(Segment seg, uint64_t c) noexcept nogil:
    """Note a change of container c (of its length, order or any key).
    With no wait area (nobody ever waited on this segment): one load."""
    if seg.nt_area == NULL and not nt_attach(seg):
        return
    ds_nt_note(&seg.nt, ds_nt_bucket_c(c))

cdef inline void nt_key(Segment seg, uint64_t c, uint64_t h) noexcept nogil:
    """Note a change of the key of hash h in dict c (and so of c)."""
    if seg.nt_area == NULL and not nt_attach(seg):
        return
    ds_nt_note(&seg.nt, ds_nt_bucket_c(c))
    ds_nt_note(&seg.nt, ds_nt_bucket_k(c, h))

cdef inline void nt_all(Segment seg) noexcept nogil:
    """Note a change of many keys at once: every bucket is bumped."""
    if seg.nt_area == NULL and not nt_attach(seg):
        return
    seg.nt.all = 1


cdef inline int tag_kind(uint8_t tag) noexcept nogil:
    """The block kind a reference tag points at, or -1."""
    if tag == T_STR:
        return K_STR
    if tag == T_BYTES:
        return K_BYTES
    if tag == T_BIGINT:
        return K_BIGINT
    if tag == T_KTUPLE:
        return K_KTUPLE
    if tag == T_TUPLE:
        return K_TUPLE
    if tag == T_DICT:
        return K_DICT
    if tag == T_LIST:
        return K_LIST
    return -1


# -- the checked accessors, inline: every offset read from the segment passes
# one of these before it is followed (overflow-safe against the top of the
# heap, Segment.lim).

cdef inline Block *checked_block(Segment seg, uint64_t off, int kind) except NULL:
    """The block at `off`: aligned, of kind `kind`, wholly below the top of the heap."""
    cdef Block *b
    cdef uint64_t size
    if seg.base == NULL or off < HEADER_SIZE or off > seg.lim - MIN_BLOCK or (off & (ALIGN - 1)):
        return seg_bad_block(seg, off, kind)
    b = <Block *>(seg.base + off)
    size = <uint64_t>b.size16 * ALIGN
    if blk_kind(b) != <uint32_t>kind or size < MIN_BLOCK or size > seg.lim - off:
        return seg_bad_block(seg, off, kind)
    return b


cdef inline Block *view_block(Segment seg, uint64_t off, uint32_t gen, int kind) except NULL:
    """The container a view (offset + generation) refers to, or
    StaleReferenceError when it was freed, ValueError when the segment is closed."""
    cdef Block *b
    if seg.base == NULL or off < HEADER_SIZE or off > seg.lim - MIN_BLOCK or (off & (ALIGN - 1)):
        return seg_bad_view(seg, off, gen, kind)
    b = <Block *>(seg.base + off)
    if b.gen != gen or blk_kind(b) != <uint32_t>kind:
        return seg_bad_view(seg, off, gen, kind)
    return checked_block(seg, off, kind)


cdef inline int table_view_at(Segment seg, uint64_t t, TableView *tv) except -1:
    """Read and check the table block at t (0: no table) into tv, once."""
    cdef Block *b
    cdef uint64_t size, nslots, capacity, nentries, count
    cdef TableHdr *th
    tv.off = t
    if t == 0:
        tv.nslots = tv.capacity = tv.nentries = tv.count = 0
        tv.index = NULL
        tv.iw = 4
        tv.ents = NULL
        return 0
    b = checked_block(seg, t, K_TABLE)
    size = <uint64_t>b.size16 * ALIGN - BLOCK_HDR
    if size < sizeof(TableHdr):     # the header read below must lie inside the block
        seg_bad_block(seg, t, K_TABLE)
        return -1
    th = table_hdr(seg.base, t)
    nslots = th.nslots
    capacity = th.capacity
    nentries = th.nentries
    count = th.count
    if not table_sizes_ok(nslots, capacity, nentries, size) or count > nentries:
        seg_bad_block(seg, t, K_TABLE)
        return -1
    tv.nslots = nslots
    tv.capacity = capacity
    tv.nentries = nentries
    tv.count = count
    tv.index = table_index_of(th)
    tv.iw = index_width(nslots)
    tv.ents = table_entries_of(th, nslots)
    return 0


cdef inline int table_view(Segment seg, uint64_t d, TableView *tv) except -1:
    """The table of dict block d (already checked), read once into tv."""
    return table_view_at(seg, dict_body(seg.base, d).table, tv)


cdef inline uint64_t table_slots(uint64_t capacity) noexcept nogil:
    """Index size for a table of `capacity` entries: a power of two, at most
    7/8 full and with one slot empty at least (so a probe always meets an
    empty slot). A one-key dict's table has two slots: with its dict block
    it fits two cache lines."""
    cdef uint64_t nslots = 2
    while nslots - (nslots // 8 if nslots >= 8 else 1) < capacity:
        nslots <<= 1
    return nslots


cdef inline uint64_t table_bytes(uint64_t capacity) noexcept nogil:
    return table_payload(table_slots(capacity), capacity)


# the key compare, the probe, the lookup and the readers of entries and
# items (inline, in files of their own)
include "heap/keys.pxd"
include "heap/access.pxd"


# -- the read section's sequence checks, inline

cdef inline uint64_t seq_begin(Segment seg) noexcept nogil:
    """The write sequence at the start of a read (spins briefly while odd)."""
    cdef uint64_t s = ds_load_acquire(&seg.hdr.seq)
    cdef int spins = 0
    while (s & 1) and spins < 1000:
        ds_cpu_relax()
        spins += 1
        s = ds_load_acquire(&seg.hdr.seq)
    seg_read_limit(seg)            # after the sequence: every block the read can reach lies below it
    return s


cdef inline bint view_gen_ok(Segment seg, uint64_t off, uint32_t gen) noexcept nogil:
    """After seq_ok: the viewed container still has the generation the read
    began with. Frees run outside the write sequence's odd window (a write
    releases what it left unreachable after publishing), and the only way a
    reader reaches a block being freed is a view that outlived its object: a
    free changes the generation before it touches anything else, so a read
    that saw any of its stores sees the new generation here."""
    return (<Block *>(seg.base + off)).gen == gen


cdef inline bint seq_ok(Segment seg, uint64_t s) noexcept nogil:
    """True when no write overlapped the read that began at sequence s."""
    ds_fence_acquire()
    return (s & 1) == 0 and ds_load_relaxed(&seg.hdr.seq) == s
