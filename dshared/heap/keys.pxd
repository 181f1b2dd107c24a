# Keys and byte blocks, inline (included by _heap.pxd): what a lookup
# compares and what a decode of a str, bytes, big int or tuple key reads.
# Inline, so that _codec's reads run them without a call into _heap; an
# error goes to an out-of-line raiser of the Segment (seg.raise_corrupt).

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
