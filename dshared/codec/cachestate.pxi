# Cache mode: a CacheCore's state block and what keeps it (included by
# _codec.pyx after codec/cachecore.pxi): attaching to it, its checked
# words (cc_state), the counters (flush, bump, stats, reset, the recount
# after a repair), clear(), and time to live: a value's expiry as set()
# stores it and the reclaiming of expired entries.


cdef int cc_attach(CacheCore c, Segment seg, object name, DictNode data, DictNode entry) except -1:
    """Bind c to a cache's data dict and state block (entry: its registry record)."""
    cdef Key key
    cdef int64_t ix
    cdef Entry *e
    cdef uint64_t off
    cdef const char *p
    cdef uint64_t n
    c.seg = seg
    c.name = name
    c.data = data
    owner = make_key(seg, "s", &key)
    lock_acquire(seg, -1)
    try:
        ix = dict_find(seg, entry.off, &key)
        if ix < 0:
            raise CorruptSegmentError("cache %r has no state" % (name,))
        e = dict_entry(seg, entry.off, ix)
        if e.value.b[0] != T_BYTES:
            raise CorruptSegmentError("cache %r: its state is not a bytes block" % (name,))
        off = ds_ld64(&e.value.b[8])
        block_bytes(seg, off, K_BYTES, &p, &n)
        if n < 8 * S_WORDS or ds_ld64(p) != CACHE_MAGIC:
            raise CorruptSegmentError("cache %r: bad state block" % (name,))
        c.soff = off
        c.sgen = (<Block *>(seg.base + off)).gen
        c.slen = n
        if (<uint64_t *>p)[S_LOGW] > 30 or n < 8 * S_WORDS + 5 * ((<uint64_t>1) << (<uint64_t *>p)[S_LOGW]):
            raise CorruptSegmentError("cache %r: bad state block" % (name,))
        c.logw = (<uint64_t *>p)[S_LOGW]
    finally:
        lock_release(seg)
    return 0


cdef uint64_t *cc_state(CacheCore c) except NULL:
    """The state words, checked (the block is never freed while the cache exists)."""
    cdef Segment seg = c.seg
    cdef Block *b
    cdef uint64_t *st
    cc_ready(c)
    b = checked_block(seg, c.soff, K_BYTES)
    if b.gen != c.sgen or <uint64_t>b.size16 * ALIGN < BLOCK_HDR + sizeof(BytesHdr) + c.slen:
        raise StaleReferenceError("cache %r was removed from segment %r" % (c.name, seg.name))
    st = cc_words(seg, c)
    if st[S_LOGW] != c.logw:
        # the sketch's and the reference bytes' indexes are taken from it
        raise CorruptSegmentError("cache %r: its state block's width changed" % (c.name,))
    return st


# -- the counters

cdef int cc_flush(CacheCore c) except -1:
    """Add this process's hit and miss counts to the shared counters."""
    cdef Segment seg = c.seg
    cdef uint64_t *st
    cc_ready(c)
    if c._hits == 0 and c._misses == 0:
        return 0
    wr_begin(seg)
    try:
        st = cc_state(c)
        jr_store(seg, &st[S_HITS], st[S_HITS] + c._hits)
        jr_store(seg, &st[S_MISSES], st[S_MISSES] + c._misses)
        wr_commit(seg)
        c._hits = 0
        c._misses = 0
    finally:
        wr_end(seg)
    return 0


cdef int cc_bump(CacheCore c, int counter) except -1:
    """One write: add 1 to a counter."""
    cdef Segment seg = c.seg
    cdef uint64_t *st
    cc_ready(c)
    wr_begin(seg)
    try:
        st = cc_state(c)
        jr_store(seg, &st[counter], st[counter] + 1)
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0


cdef dict cc_stats(CacheCore c):
    """The shared counters (after adding this process's)."""
    cdef uint64_t *st
    cdef Segment seg = c.seg
    cc_ready(c)
    cc_flush(c)
    lock_acquire(seg, -1)
    try:
        cc_recount_locked(c)
        st = cc_state(c)
        return dict(hits=st[S_HITS], misses=st[S_MISSES], evictions=st[S_EVICT],
                    expirations=st[S_EXPIRED], entries=dict_len(seg, c.data.off),
                    bytes=st[S_BYTES], max_entries=st[S_MAXE] or None,
                    max_bytes=st[S_MAXB] or None, oversize=st[S_OVERSIZE],
                    rejected=st[S_REJECTED], sets=st[S_SETS])
    finally:
        lock_release(seg)


cdef int cc_reset_stats(CacheCore c) except -1:
    """Zero the hit, miss, eviction, expiration and refusal counters."""
    cdef Segment seg = c.seg
    cdef uint64_t *st
    cdef int i
    cc_ready(c)
    c._hits = c._misses = 0
    wr_begin(seg)
    try:
        st = cc_state(c)
        for i in (S_HITS, S_MISSES, S_EVICT, S_EXPIRED, S_OVERSIZE, S_REJECTED, S_SETS):
            jr_store(seg, &st[i], 0)
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0


cdef int cc_recount_locked(CacheCore c) except -1:
    """After a repair of the segment (a writer died), recompute bytes from
    the entries: the journal kept each write whole, but a repair may also
    have come from a crash in a write this cache did not make."""
    cdef Segment seg = c.seg
    cdef uint64_t *st = cc_state(c)
    cdef uint64_t total = 0
    cdef int64_t i
    if st[S_REPAIRS] == seg.hdr.repairs or _hook_plain_counters:
        return 0
    wr_begin(seg)
    try:
        c.data.check(K_DICT)
        i = dict_next(seg, c.data.off, 0)
        while i >= 0:
            total += entry_footprint(seg, dict_entry(seg, c.data.off, i))
            i = dict_next(seg, c.data.off, i + 1)
        jr_store(seg, &st[S_BYTES], total)
        jr_store(seg, &st[S_REPAIRS], seg.hdr.repairs)
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0


cdef int cc_clear(CacheCore c) except -1:
    """Remove every entry (the counters stay; see reset_stats)."""
    cdef Segment seg = c.seg
    cdef uint64_t *st
    cc_ready(c)
    wr_begin(seg)
    try:
        c.data.check(K_DICT)
        st = cc_state(c)
        tbl_clear(seg, c.data.off)
        jr_store(seg, &st[S_BYTES], 0)
        jr_store(seg, &st[S_HAND], 0)
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0


# -- time to live

cdef int64_t cc_ttl_us(uint64_t *st, object ttl) except? -1:
    """set()'s ttl, checked, in µs (None: the cache's default, 0 for none)."""
    cdef int64_t ttl_us
    if ttl is None:
        return st[S_TTL]
    if not isinstance(ttl, (int, float)) or ttl != ttl:
        raise TypeError("ttl must be a number of seconds or None, not %r" % (ttl,))
    if ttl <= 0:
        raise ValueError("ttl must be > 0, not %r" % (ttl,))
    ttl_us = <int64_t>(min(float(ttl), 1e11) * 1e6)
    if ttl_us < 1:
        ttl_us = 1
    return ttl_us


cdef object cc_wrap(object v, int64_t ttl_us):
    """v as the data dict stores it: (v, expiry) if it expires or is a tuple."""
    cdef int64_t exp = 0
    if ttl_us:
        exp = now_us() + ttl_us
    if exp or type(v) is tuple:
        v = (v, exp)
    return v


cdef int cc_drop_expired(CacheCore c, Key *key) except -1:
    """Reclaim an expired entry a read met."""
    cdef Segment seg = c.seg
    cdef int64_t ix, exp
    cdef Entry *e
    wr_begin(seg)
    try:
        c.data.check(K_DICT)
        ix = dict_find(seg, c.data.off, key)
        if ix >= 0:
            e = dict_entry(seg, c.data.off, ix)
            exp = wrapped_expiry(seg, &e.value) if e.key.b[0] != T_PACKED else 0
            if exp and exp <= now_us():
                cc_remove_locked(c, ix, S_EXPIRED)
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0


cdef int cc_expire_some(CacheCore c, int n) except -1:
    """Reclaim expired entries among the next n the hand passes (no eviction)."""
    cdef Segment seg = c.seg
    cdef uint64_t *st
    cdef TableView tv
    cdef uint64_t hand
    cdef int64_t now = now_us(), exp
    cdef Entry *e
    cdef int i
    wr_begin(seg)
    try:
        st = cc_state(c)
        c.data.check(K_DICT)
        table_view(seg, c.data.off, &tv)
        hand = st[S_HAND]
        for i in range(n):
            table_view(seg, c.data.off, &tv)        # again: a removal may drop the table
            if tv.nentries == 0:
                break
            if hand >= tv.nentries:
                hand = 0
            e = &tv.ents[hand]
            if e.key.b[0] != T_EMPTY and e.key.b[0] != T_PACKED and e.value.b[0] == T_TUPLE:
                exp = wrapped_expiry(seg, &e.value)
                if exp and exp <= now:
                    cc_remove_locked(c, hand, S_EXPIRED)
            hand += 1
        st[S_HAND] = hand
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0
