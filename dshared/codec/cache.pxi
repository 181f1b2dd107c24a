# Cache mode: the C part of SharedCache (dshared/_cache.py), its layout,
# hooks, sketch and footprints; CacheCore and its functions follow in
# codec/cachecore.pxi, cachestate.pxi and cacheset.pxi. Included by _codec.pyx.
#
# A cache is two objects in the segment, registered in the top-level dict
# CACHE_REGISTRY under the cache's name as {"d": data, "s": state, "p": pending}:
#   data     a dict key -> value. A value with an expiry, or a tuple value, is
#            stored wrapped as the tuple (value, expiry in µs of CLOCK_REALTIME,
#            0 for none); any other value is stored as it is (no overhead).
#   state    one bytes block, written in place: S_WORDS counters and settings,
#            then the frequency sketch (4 rows of W one-byte counters), then W
#            reference bytes (CLOCK), indexed by the key's hash.
#   pending  key -> [pid, start time] of the process computing it (get_or_set).
#
# Hits run in a read section (no lock): one table probe, a copy of the value
# and, when the key's reference byte is 0, one plain store of 1. Nothing else
# in the segment is written by a hit: hit and miss counts are kept in the
# process and added to the state under the lock at its next write (or every
# FLUSH_EVERY reads, or stats()).
#
# Writes take the segment lock. Each change is one journaled write that
# updates the counters with it (jstore), so a process killed at any point
# leaves data and counters consistent; only the sketch, the reference bytes
# and the clock hand are plain stores (hints: any value is safe).
#
# Eviction is CLOCK over the table's entries in order (the hand is an entry
# index): an entry whose reference byte is set gets it cleared (and its key's
# frequency counted once more); the first one whose byte is clear, or that
# has expired, is the victim. Admission (TinyLFU): a new key that would
# evict is stored only if the sketch has seen it more often than the victim.

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum: CLOCK_REALTIME


cdef extern from "Python.h":
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf)
    Py_hash_t PyObject_Hash(object o) except -1
    ctypedef struct PyASCIIObject:
        Py_hash_t hash
    unsigned long Py_TPFLAGS_HAVE_VECTORCALL
    ctypedef struct PyTypeObject_vc "PyTypeObject":
        Py_ssize_t tp_vectorcall_offset
        unsigned long tp_flags


# Per-process memos of a CacheCore (the hit path's shortcuts; each is checked
# against the segment on every use, so a stale slot only costs a miss of it):
#   vmemo  the str or bytes object last decoded from a value block of at most
#          VMEMO_MAX_BLOCK bytes, under the block's offset and generation (a generation changes on every
#          allocation, and a str or bytes block is never written after it was
#          made), so a hit on a hot key returns that object instead of a copy:
#          equal and immutable, as a copy would be.
#   kmemo  an ASCII str key's hash (the segment's seeded hash), under the key
#          object itself (held): a hit with the same key object, or an equal
#          one, skips hashing it.
cdef struct VSlot:
    uint64_t off
    uint32_t gen
    PyObject *obj

cdef struct KSlot:
    PyObject *obj
    uint64_t hash


cdef enum:
    S_MAGIC = 0
    S_MAXE = 1
    S_MAXB = 2
    S_TTL = 3                   # default ttl in µs, 0: none
    S_HITS = 4
    S_MISSES = 5
    S_EVICT = 6
    S_EXPIRED = 7
    S_BYTES = 8
    S_HAND = 9
    S_OVERSIZE = 10
    S_REJECTED = 11
    S_LOGW = 12
    S_OPS = 13
    S_REPAIRS = 14              # the segment's repair count when bytes was last right
    S_SETS = 15
    S_ADMIT = 16                # 1: admission filter on
    S_WORDS = 20
    ENTRY_OVERHEAD = 48         # an entry (40) and its index slots, as counted in bytes
    FLUSH_EVERY = 1024
    REF_MAX = 3                 # reads counted per entry between two passes of the hand
    VICTIM_SAMPLES = 4          # unread entries the hand weighs for each eviction
    VMEMO = 64                  # slots of a CacheCore's value memo (a power of two)
    VMEMO_MAX_BLOCK = 65536     # larger values are not kept (64 of them would hold much memory)
    KMEMO = 64                  # slots of its key-hash memo (a power of two)

cdef uint64_t CACHE_MAGIC = 0x3145484341435344      # "DSCACHE1"
cdef uint64_t SK_SEEDS[4]
SK_SEEDS[0] = 0x9E3779B97F4A7C15ULL
SK_SEEDS[1] = 0xC2B2AE3D27D4EB4FULL
SK_SEEDS[2] = 0x165667B19E3779F9ULL
SK_SEEDS[3] = 0xD6E8FEB86659FD93ULL

CACHE_REGISTRY = "\x00dshared.caches"

# test hooks (tests/test_cache.py shows each protection is needed)
cdef bint _hook_plain_counters = False
cdef bint _hook_no_evict = False
cdef bint _hook_no_expiry = False
cdef bint _hook_no_claim = False
cdef bint _hook_no_memo_check = False
cdef bint _hook_reread_cell = False     # the hit path reads the value cell again after checking it
cdef object _hook_mid_read = None       # called once in a hit, between the expiry check and the value


def _cache_hooks(plain_counters=None, no_evict=None, no_expiry=None, no_claim=None, no_memo_check=None,
                 reread_cell=None, mid_read=None):
    """Test hooks. mid_read: a callable run once inside the next hit on a
    value with an expiry (no lock is held there), after the expiry was read:
    it plays a write of another process landing in the middle of that read."""
    global _hook_plain_counters, _hook_no_evict, _hook_no_expiry, _hook_no_claim, _hook_no_memo_check
    global _hook_reread_cell, _hook_mid_read
    if reread_cell is not None:
        _hook_reread_cell = bool(reread_cell)
    if mid_read is not None:
        _hook_mid_read = mid_read if callable(mid_read) else None
    if no_memo_check is not None:
        _hook_no_memo_check = bool(no_memo_check)
    if no_claim is not None:
        _hook_no_claim = bool(no_claim)
    if plain_counters is not None:
        _hook_plain_counters = bool(plain_counters)
    if no_evict is not None:
        _hook_no_evict = bool(no_evict)
    if no_expiry is not None:
        _hook_no_expiry = bool(no_expiry)
STATE_WORDS = S_WORDS


cdef inline void cstore(Segment seg, uint64_t *p, uint64_t v) noexcept:
    """A counter's store inside a write: journaled with it, so a kill keeps both or neither."""
    if _hook_plain_counters:
        p[0] = v
    else:
        jr_store(seg, p, v)


def _cache_entry_bytes(CacheCore c, k):
    """Test helper: the bytes entry k counts for (0 if absent)."""
    cdef Key key
    cdef int64_t ix
    cdef Segment seg = c.seg
    owner = make_key(seg, k, &key)
    lock_acquire(seg, -1)
    try:
        ix = dict_find(seg, c.data.off, &key)
        return entry_footprint(seg, dict_entry(seg, c.data.off, ix)) if ix >= 0 else 0
    finally:
        lock_release(seg)


cdef inline int64_t now_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000


def _key_error(CacheCore c, k):
    """The exception storing k as a key would raise (None: k can be a key)."""
    cdef Key key
    cc_ready(c)
    try:
        make_key(c.seg, k, &key)
    except (TypeError, UnsupportedTypeError) as e:
        return e
    return None


def _now_us():
    return now_us()


def cache_state_bytes(uint64_t max_entries, uint64_t max_bytes, uint64_t ttl_us, bint admission,
                      uint64_t capacity):
    """The initial state block of a new cache: W (a power of two, at least
    max_entries, at most 1/128 of the segment) sketch columns and reference bytes."""
    cdef uint64_t w = 256, logw = 8, want
    if max_entries:
        want = max_entries
    elif max_bytes:
        want = max_bytes // 256
    else:
        want = 1024
    while w < want and logw < 22 and 5 * (w << 1) <= capacity // 128:
        w <<= 1
        logw += 1
    buf = bytearray(8 * S_WORDS + 5 * w)
    cdef uint64_t *words = <uint64_t *>(<char *>buf)
    words[S_MAGIC] = CACHE_MAGIC
    words[S_MAXE] = max_entries
    words[S_MAXB] = max_bytes
    words[S_TTL] = ttl_us
    words[S_LOGW] = logw
    words[S_ADMIT] = 1 if admission else 0
    return bytes(buf)


# -- the sketch: a count-min sketch of 4 rows of 1-byte counters (saturating
# at 15, halved every 10 W increments)

cdef inline uint64_t sk_idx(uint64_t h, int r, uint64_t logw) noexcept nogil:
    return ((h ^ (h >> 31)) * SK_SEEDS[r]) >> (64 - logw)


cdef inline void sk_add(uint64_t *st, uint64_t h) noexcept nogil:
    cdef uint64_t logw = st[S_LOGW], w = (<uint64_t>1) << logw
    cdef uint8_t *sk = <uint8_t *>(st + S_WORDS)
    cdef uint8_t *p
    cdef int r
    for r in range(4):
        p = sk + r * w + sk_idx(h, r, logw)
        if p[0] < 15:
            p[0] = p[0] + 1
    st[S_OPS] = st[S_OPS] + 1           # plain: a hint


cdef inline uint64_t sk_freq(uint64_t *st, uint64_t h) noexcept nogil:
    cdef uint64_t logw = st[S_LOGW], w = (<uint64_t>1) << logw
    cdef uint8_t *sk = <uint8_t *>(st + S_WORDS)
    cdef uint64_t f = 255, c
    cdef int r
    for r in range(4):
        c = sk[r * w + sk_idx(h, r, logw)]
        if c < f:
            f = c
    return f


cdef void sk_age(uint64_t *st) noexcept nogil:
    """Halve every counter (under the lock) once 10 W increments were counted."""
    cdef uint64_t w = (<uint64_t>1) << st[S_LOGW], i
    cdef uint8_t *sk = <uint8_t *>(st + S_WORDS)
    if st[S_OPS] < 10 * w:
        return
    for i in range(4 * w):
        sk[i] = sk[i] >> 1
    st[S_OPS] = 0


cdef inline uint8_t *ref_byte(uint64_t *st, uint64_t h) noexcept nogil:
    cdef uint64_t logw = st[S_LOGW], w = (<uint64_t>1) << logw
    return <uint8_t *>(st + S_WORDS) + 4 * w + (h & (w - 1))


# -- footprint: the bytes of the blocks a cell owns

cdef uint64_t cell_footprint(Segment seg, const Cell *c) except? 0:
    """Bytes of every block reachable from c (each counted once)."""
    cdef uint64_t *stack = NULL
    cdef uint64_t n = 0, cap = 0, off, total = 0, steps = 0
    cdef Block *b
    cdef set seen = None
    if c.b[0] < T_FIRST_REF or c.b[0] > T_LAST:
        return 0
    blk_push(seg, ds_ld64(&c.b[8]), &stack, &n, &cap)
    try:
        while n > 0:
            n -= 1
            off = stack[n]
            if not gc_valid_ref(seg, off):
                continue
            b = <Block *>(seg.base + off)
            if blk_kind(b) in (K_DICT, K_LIST, K_TUPLE):
                if seen is None:
                    seen = set()
                if off in seen:
                    continue
                seen.add(off)
            total += <uint64_t>b.size16 * ALIGN
            blk_push_children(seg, off, &stack, &n, &cap)
            steps += 1
            if steps > 100000000:
                break
    finally:
        free(stack)
    return total


cdef uint64_t entry_footprint(Segment seg, const Entry *e) except? 0:
    if e.key.b[0] == T_PACKED:
        return ENTRY_OVERHEAD
    return ENTRY_OVERHEAD + cell_footprint(seg, &e.key) + cell_footprint(seg, &e.value)


cdef int64_t wrapped_expiry(Segment seg, const Cell *c) except -2:
    """The expiry of a stored value (0: none), and its inner cell's position."""
    cdef uint64_t off
    cdef Block *blk
    cdef TupleHdr *th
    cdef Cell *cells
    cdef int64_t exp
    if c.b[0] != T_TUPLE:
        return 0
    off = ds_ld64(&c.b[8])
    blk = checked_block(seg, off, K_TUPLE)
    th = tuple_hdr(seg.base, off)
    cells = tuple_cells(th)
    if (th.n != 2 or <uint64_t>blk.size16 * ALIGN < BLOCK_HDR + sizeof(TupleHdr) + 2 * sizeof(Cell)
            or cells[1].b[0] != T_INT):
        raise CorruptSegmentError("cache entry at %d is not a (value, expiry) pair" % off)
    memcpy(&exp, &cells[1].b[8], 8)
    return exp


cdef inline const Cell *wrapped_inner(Segment seg, const Cell *c) noexcept:
    return tuple_cells(tuple_hdr(seg.base, ds_ld64(&c.b[8])))


cdef struct CArg:
    Key *key
    PyObject *core
    int status                  # 0 absent, 1 hit, 2 expired
    int64_t ix
    uint64_t voff               # a str or bytes value decoded (not from the memo): its block
    uint32_t vgen


cdef object _MISS = object()
