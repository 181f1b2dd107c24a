# Keys and byte blocks, inline (included by _heap.pxd): what a lookup
# compares and what a decode of a str, bytes, big int or tuple key reads.
# Inline, so that _codec's reads run them without a call into _heap; an
# error goes to an out-of-line raiser of the Segment (seg.raise_corrupt).


# -- the key hash: SipHash-1-3 of the key's canonical bytes and tag, keyed by
# the segment's seed, cut to 32 bits (probes and compares use 32 bits, and a
# key in a block keeps them in its cell: see entry_hash).

cdef inline uint64_t seg_hash(Segment seg, uint8_t ctag, const void *data, uint64_t n) noexcept nogil:
    return <uint32_t>ds_hash(seg.hdr.seed0, seg.hdr.seed1, ctag, data, n)


cdef inline uint64_t seg_hash_u64(Segment seg, uint8_t ctag, uint64_t v) noexcept nogil:
    """seg_hash of the 8 bytes of v (an int or float key)."""
    return <uint32_t>ds_hash_u64(seg.hdr.seed0, seg.hdr.seed1, ctag, v)


cdef enum:
    HASH_ROOM_STR = 10          # a short str/bytes key of up to this many bytes keeps its hash in b[12:16]
    HASH_ROOM_PACKED = 24       # a packed pair of up to this many bytes keeps it in the entry's last 4 bytes


cdef inline int entry_hash_at(const Entry *e) noexcept nogil:
    """Where entry e keeps its key's 32-bit hash, as a byte offset in the
    entry: b[4:8] of a scalar key's cell and of a key in a block, the bytes
    after a short key or a packed pair where they leave 4 free; -1 where
    they do not (the hash is computed again from the key's bytes)."""
    cdef uint8_t tag = e.key.b[0]
    if tag == T_PACKED:
        return 28 if (e.key.b[1] & 0x7f) + (e.key.b[3] & 0x7f) <= HASH_ROOM_PACKED else -1
    if tag == T_SSTR or tag == T_SBYTES:
        return 12 if (e.key.b[1] & 0x7f) <= HASH_ROOM_STR else -1
    return 4


cdef inline uint64_t entry_hash(Segment seg, const Entry *e) noexcept nogil:
    """The hash of entry e's key, the one make_key gives the same key: kept
    in the entry (entry_hash_at), or computed from the key's bytes. A
    table's rebuild, a removal's probe and the cache's sketch read it
    here."""
    cdef int at = entry_hash_at(e)
    cdef uint8_t tag = e.key.b[0]
    cdef uint8_t ln
    if at >= 0:
        return ds_ld32(<const uint8_t *>e + at)
    ln = e.key.b[1] & 0x7f
    if ln > INLINE_MAX:
        ln = INLINE_MAX             # a bad length (the checker reports it) reads inside the entry
    return seg_hash(seg, T_BYTES if tag == T_SBYTES else T_STR, &e.key.b[4 if tag == T_PACKED else 2], ln)


cdef inline void entry_stamp(Entry *e, uint64_t hash) noexcept nogil:
    """Keep the key's hash in a freshly written entry, where it has room
    (entry_hash_at)."""
    cdef uint32_t h = <uint32_t>hash
    cdef int at = entry_hash_at(e)
    if at >= 0:
        memcpy(<uint8_t *>e + at, &h, 4)


cdef inline int block_bytes(Segment seg, uint64_t off, int kind, const char **data, uint64_t *n) except -1:
    """The bytes of byte block `off` (STR, BYTES, BIGINT, KTUPLE): its data
    and length, checked to lie inside the block."""
    cdef Block *b = checked_block(seg, off, kind)
    cdef uint64_t size = <uint64_t>b.size16 * ALIGN
    cdef char *p = blk_payload(seg.base, off)
    cdef uint64_t hdr = bytes_hdr_size(kind)
    cdef uint64_t length = (<BytesHdr *>p).length       # StrHdr starts with it too
    if length > size - BLOCK_HDR - hdr:
        return seg_raise_corrupt(seg, "byte block at %d claims %d bytes" % (off, length))
    data[0] = p + hdr
    n[0] = length
    return 0


cdef inline int key_matches(Segment seg, const Entry *e, const Key *k) except -1:
    """1 when entry e's key equals k (compared in canonical form), else 0."""
    cdef uint8_t tag = e.key.b[0]
    cdef uint64_t v
    cdef double f
    cdef uint8_t ln
    cdef const char *data = NULL
    cdef uint64_t n = 0
    cdef uint8_t whole[DS_WHOLE_DOUBLE_MAX]
    if tag == T_PACKED:
        ln = e.key.b[1] & 0x7f
        return k.ctag == T_STR and k.len == ln and ln <= INLINE_MAX and memcmp(&e.key.b[4], k.data, ln) == 0
    if tag == T_SSTR or tag == T_SBYTES:
        ln = e.key.b[1] & 0x7f
        return (k.ctag == (T_STR if tag == T_SSTR else T_BYTES) and k.len == ln
                and ln <= INLINE_MAX and memcmp(&e.key.b[2], k.data, ln) == 0)
    if tag == T_INT or tag == T_FALSE or tag == T_TRUE or tag == T_FLOAT:
        if tag == T_FLOAT:
            v = ds_ld64(&e.key.b[8])
            memcpy(&f, &v, 8)
            if f != f:
                return 0            # NaN keys are never found by a lookup
            if -9.2233720368547758e18 <= f < 9.2233720368547758e18 and f == <double>(<int64_t>f):
                return k.ctag == T_INT and <int64_t>k.cval == <int64_t>f
            if isfinite(f) and floor(f) == f:
                # a whole float beyond int64 equals the int of its value
                if k.ctag != T_BIGINT:
                    return 0
                n = ds_whole_double_bytes(f, whole)
                return n == k.len and memcmp(whole, k.data, n) == 0
            return k.ctag == T_FLOAT and k.cval == v
        v = 0 if tag == T_FALSE else 1 if tag == T_TRUE else ds_ld64(&e.key.b[8])
        return k.ctag == T_INT and k.cval == v
    if tag == T_NONE:
        return k.ctag == T_NONE
    if tag == T_STR or tag == T_BYTES or tag == T_BIGINT or tag == T_KTUPLE:
        if k.ctag != tag:
            return 0
        block_bytes(seg, ds_ld64(&e.key.b[8]), tag_kind(tag), &data, &n)
        if tag == T_KTUPLE:
            # [canonical length][canonical][typed]: compare the canonical part
            # the length read once: a lock-free read may see the block change
            v = ds_ld64(data) if n >= 8 else 0
            if n < 8 or v > n - 8:
                return seg_raise_corrupt(seg, "malformed tuple key")
            n = v
            data += 8
        return n == k.len and memcmp(data, k.data, n) == 0
    return 0


cdef inline bint short_eq(const uint8_t *a, const char *b, uint64_t n) noexcept nogil:
    """a[:n] == b[:n] for n <= 16, in a few loads (no call), reading only
    those bytes."""
    if n >= 8:
        return ds_ld64(a) == ds_ld64(b) and ds_ld64(a + n - 8) == ds_ld64(b + n - 8)
    if n >= 4:
        return ds_ld32(a) == ds_ld32(b) and ds_ld32(a + n - 4) == ds_ld32(b + n - 4)
    return n == 0 or (a[0] == <uint8_t>b[0] and a[n >> 1] == <uint8_t>b[n >> 1] and a[n - 1] == <uint8_t>b[n - 1])


cdef inline int entry_matches(Segment seg, const Entry *e, const Key *k) except -1:
    """1 when entry e holds key k. The hash kept in the entry, where it has
    room, is compared first, so that a probe that meets another key costs
    one compare and reads no block; a short str key, the common case, then
    compares right here."""
    cdef uint8_t tag = e.key.b[0]
    cdef int at = entry_hash_at(e)
    if at >= 0 and ds_ld32(<const uint8_t *>e + at) != <uint32_t>k.hash:
        return 0
    if k.ctag == T_STR and k.len <= INLINE_MAX:
        if tag == T_SSTR:
            return (e.key.b[1] & 0x7f) == k.len and short_eq(&e.key.b[2], k.data, k.len)
        if tag == T_PACKED:
            return (e.key.b[1] & 0x7f) == k.len and short_eq(&e.key.b[4], k.data, k.len)
    return key_matches(seg, e, k)
