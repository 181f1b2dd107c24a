# Cache mode: CacheCore and the hit path (included by _codec.pyx after
# codec/cache.pxi, whose header describes the layout). The class holds the
# state and thin Python methods; what they do is in cc_* functions taking
# the core: the hit path here, the state block and its counters in
# codec/cachestate.pxi, stores, eviction and claims in codec/cacheset.pxi.
# CacheCore is not @cython.final: SharedCache is its Python subclass (a
# final type refuses one). With no cdef methods it has no vtable, so every
# call of a cc_* function is a direct C call all the same.


cdef class CacheCore:
    """The C part of SharedCache: lookups without the lock, and the writes."""
    cdef Segment seg
    cdef DictNode data
    cdef uint64_t soff
    cdef uint32_t sgen
    cdef uint64_t slen
    cdef uint64_t logw                # the state's S_LOGW, checked at attach (it never changes)
    cdef uint64_t _hits, _misses      # this process's, not yet added to the state
    cdef public DictNode _pending     # key -> the process computing it (set by SharedCache)
    cdef VSlot vmemo[VMEMO]
    cdef KSlot kmemo[KMEMO]
    cdef readonly object name
    cdef object __weakref__

    def __dealloc__(self):
        cdef int i
        for i in range(VMEMO):
            Py_XDECREF(self.vmemo[i].obj)
            self.vmemo[i].obj = NULL
        for i in range(KMEMO):
            Py_XDECREF(self.kmemo[i].obj)
            self.kmemo[i].obj = NULL

    def _forget_counts(self):
        """In a forked child: the parent's counts are the parent's to add."""
        self._hits = self._misses = 0

    def _attach(self, Segment seg, name, DictNode data, DictNode entry):
        """Bind to a cache's data dict and state block (entry: its registry record)."""
        cc_attach(self, seg, name, data, entry)

    # -- reads

    def get(self, k, default=None):
        """c.get(k[, default]): the cached value as a plain copy, or default (a
        str or bytes value may be the very object an earlier get returned:
        equal and immutable, as a copy)."""
        return cc_lookup(self, k, default, True)

    def _peek(self, k, default=None):
        """get() that counts neither a hit nor a miss."""
        cc_ready(self)
        return cc_lookup(self, k, default, False)

    def __getitem__(self, k):
        cc_ready(self)
        r = self.get(k, _MISS)
        if r is _MISS:
            raise KeyError(k)
        return r

    def __contains__(self, k):
        """k in c: the key is cached and not expired (counts as neither hit nor miss)."""
        return cc_contains(self, k)

    def flush(self):
        """Add this process's hit and miss counts to the shared counters."""
        cc_flush(self)

    def _claim(self, DictNode pending, k, int64_t marker, int64_t expect=0):
        """See cc_claim."""
        return cc_claim(self, pending, k, marker, expect)

    def _release(self, DictNode pending, k, int64_t marker):
        """Drop this process's claim on k (if it still holds it)."""
        cc_release(self, pending, k, marker)

    def _local_counts(self):
        cc_ready(self)
        return (self._hits, self._misses)

    def _stats(self):
        """The shared counters (after adding this process's)."""
        return cc_stats(self)

    def _settings(self):
        cdef uint64_t *st = cc_state(self)
        cc_ready(self)
        return (st[S_MAXE], st[S_MAXB], st[S_TTL], st[S_ADMIT])

    # -- writes (all under the lock)

    def _bump(self, int counter):
        cc_bump(self, counter)

    def set(self, k, v, ttl=None):
        """c.set(k, v, ttl=None): store v under k (ttl in seconds: None for the
        cache's default). Returns True if stored, False if declined: larger than
        max_bytes, or refused by the admission filter when the cache is full
        (the key was seen less often than the entry it would evict)."""
        cdef int64_t ttl_us
        cc_ready(self)
        ttl_us = cc_ttl_us(cc_state(self), ttl)
        return cc_set(self, k, cc_wrap(v, ttl_us), None, 0)

    def _set_release(self, k, v, ttl, DictNode pending, int64_t marker):
        """set(), then drop this process's get_or_set claim on k, in one lock hold."""
        return cc_set_release(self, k, v, ttl, pending, marker)

    def pop(self, k, default=_MISS):
        """c.pop(k[, default]): remove k and return its value (expired: absent)."""
        return cc_pop(self, k, default)

    def __delitem__(self, k):
        cc_ready(self)
        self.pop(k)

    def clear(self):
        """Remove every entry (the counters stay; see reset_stats)."""
        cc_clear(self)

    def reset_stats(self):
        """Zero the hit, miss, eviction, expiration and refusal counters."""
        cc_reset_stats(self)

    def __len__(self):
        """Entries stored (expired ones not yet reclaimed included)."""
        cc_ready(self)
        return len(self.data)

    def _keys(self):
        cc_ready(self)
        return list(self.data)


cdef inline int cc_ready(CacheCore c) except -1:
    if c.seg is None:
        raise TypeError("a SharedCache is made by dshared.cache(name) or Segment.cache(name)")
    return 0


# -- the hit path: c.get(k) and a memoized call run cc_lookup

cdef inline object cc_hit_key(CacheCore c, object k, Key *key):
    """make_key for a lookup, an ASCII str key's hash taken from kmemo."""
    cdef Segment seg = c.seg
    cdef KSlot *ks
    cdef PyObject *o
    cdef Py_ssize_t n
    cdef Py_hash_t h
    if not (PyUnicode_CheckExact(k) and PyUnicode_IS_ASCII(k)) or seg.base == NULL:
        return make_key(seg, k, key, True)
    n = PyUnicode_GET_LENGTH(k)
    h = (<PyASCIIObject *><PyObject *>k).hash           # a str's hash, computed once
    if h == -1:
        h = PyObject_Hash(k)
    ks = &c.kmemo[<size_t>h & (KMEMO - 1)]
    o = ks.obj
    key.ctag = T_STR
    key.data = <const char *>PyUnicode_DATA(k)
    key.len = n
    key.cval = 0
    if o != <PyObject *>k and not (o != NULL and (_hook_no_memo_check or (
            PyUnicode_GET_LENGTH(<object>o) == n and PyUnicode_IS_ASCII(<object>o) and
            memcmp(PyUnicode_DATA(<object>o), key.data, n) == 0))):
        ks.hash = key_hash(seg, T_STR, key.data, n)
        Py_INCREF(k)
        ks.obj = <PyObject *>k
        Py_XDECREF(o)
    key.hash = ks.hash
    return k


cdef inline void cc_memo_value(CacheCore c, CArg *a, object r) noexcept:
    """After a validated read decoded a str or bytes block: keep the object."""
    cdef VSlot *vs
    cdef PyObject *o
    if a.voff == 0 or c.seg.wdepth != 0 or c.seg.lk.bdepth != 0:
        return          # inside this thread's own write, a value may yet be rolled back
    vs = &c.vmemo[(a.voff >> 4) & (VMEMO - 1)]
    o = vs.obj
    Py_INCREF(r)
    vs.obj = <PyObject *>r
    vs.off = a.voff
    vs.gen = a.vgen
    Py_XDECREF(o)


cdef inline object cc_lookup(CacheCore c, object k, object default, bint count):
    """c.get(k, default), the hit path inline (c.get and a memoized call)."""
    cdef Key key
    cdef CArg a
    cc_ready(c)
    owner = cc_hit_key(c, k, &key)
    a.key = &key
    a.core = <PyObject *>c
    a.voff = 0
    r = read_section(c.data, _rd_cache_get, &a)
    if a.status != 1:
        return cc_missed(c, &key, &a, default, count)
    cc_memo_value(c, &a, r)
    if count:
        c._hits += 1
        if c._hits + c._misses >= FLUSH_EVERY:
            cc_flush(c)
    return r


cdef object cc_missed(CacheCore c, Key *key, CArg *a, object default, bint count):
    """cc_lookup's end when k was not found or had expired."""
    if count:
        c._misses += 1
        sk_add(cc_state(c), key.hash)       # plain stores: a lost increment only blurs a count
        if c._hits + c._misses >= FLUSH_EVERY:
            cc_flush(c)
    if a.status == 2:
        cc_drop_expired(c, key)
    return default


cdef inline uint64_t *cc_hit_state(CacheCore c) except NULL:
    """cc_state() for the hit path (inline)."""
    cdef Segment seg = c.seg
    cdef Block *b
    if seg is None:
        cc_ready(c)
    b = checked_block(seg, c.soff, K_BYTES)
    if (b.gen != c.sgen or <uint64_t>b.size16 * ALIGN < BLOCK_HDR + sizeof(BytesHdr) + c.slen
            or cc_words(seg, c)[S_LOGW] != c.logw):
        return cc_state(c)          # raises
    return cc_words(seg, c)


cdef inline uint64_t *cc_words(Segment seg, CacheCore c) noexcept:
    """The state words: the data of the cache's BYTES block."""
    return <uint64_t *>bytes_data(bytes_hdr(seg.base, c.soff))


cdef int hook_mid_read() except -1:
    global _hook_mid_read
    f = _hook_mid_read
    _hook_mid_read = None
    f()
    return 0


cdef object _rd_cache_get(Node node, void *arg):
    cdef CArg *a = <CArg *>arg
    cdef Segment seg = node.seg
    cdef CacheCore core = <CacheCore>a.core
    cdef TableView tv
    cdef Entry e                # the entry, copied once (see below)
    cdef Cell c                 # the value's cell, copied once
    cdef int64_t exp
    cdef uint64_t *st
    cdef uint8_t *rb
    cdef uint64_t voff
    cdef Block *blk
    cdef VSlot *vs
    view_block(seg, node.off, node.gen, K_DICT)
    table_view(seg, node.off, &tv)
    a.ix = table_lookup(seg, &tv, a.key)
    if a.ix < 0:
        a.status = 0
        return None
    # No lock is held: another process may rewrite this entry in place at
    # any moment (an update of the key stores the new cells over the old).
    # Every decision and every offset followed below comes from one local
    # copy, so an offset is followed only after it was checked: reading the
    # cell again after checking it may read another value's bytes (an
    # inline string's or an int's) as an offset, outside the mapping.
    memcpy(&e, &tv.ents[a.ix], sizeof(Entry))
    a.voff = 0
    if e.key.b[0] == T_PACKED:
        r = entry_value(seg, &e, False)
    else:
        c = e.value
        if c.b[0] == T_TUPLE:
            exp = wrapped_expiry(seg, &c)
            if exp and exp <= now_us() and not _hook_no_expiry:
                a.status = 2
                return None
            if _hook_mid_read is not None:
                hook_mid_read()
            if _hook_reread_cell:
                c = wrapped_inner(seg, &tv.ents[a.ix].value)[0]
            else:
                c = wrapped_inner(seg, &c)[0]      # inside the tuple block wrapped_expiry checked
        if c.b[0] == T_STR or c.b[0] == T_BYTES:
            voff = ds_ld64(&c.b[8])
            blk = checked_block(seg, voff, K_STR if c.b[0] == T_STR else K_BYTES)
            vs = &core.vmemo[(voff >> 4) & (VMEMO - 1)]
            if vs.off == voff and (vs.gen == blk.gen or _hook_no_memo_check) and vs.obj != NULL:
                r = <object>vs.obj
            else:
                r = decode(seg, &c, 0)
                if <uint64_t>blk.size16 * ALIGN <= VMEMO_MAX_BLOCK:
                    a.voff = voff           # kept by cc_memo_value once the read is validated
                    a.vgen = blk.gen
        else:
            r = deep_decode(seg, &c)
    st = cc_hit_state(core)
    rb = ref_byte(st, a.key.hash)         # the entry's key is this key
    if rb[0] < REF_MAX:
        rb[0] = rb[0] + 1       # a plain store: the hand reads it as "used since it passed"
    a.status = 1
    return r


# -- k in c

cdef object cc_contains(CacheCore c, object k):
    cdef Key key
    cdef CArg a
    cc_ready(c)
    owner = make_key(c.seg, k, &key, True)
    a.key = &key
    a.core = <PyObject *>c
    read_section(c.data, _rd_cache_contains, &a)
    return a.status == 1


cdef object _rd_cache_contains(Node node, void *arg):
    cdef CArg *a = <CArg *>arg
    cdef Segment seg = node.seg
    cdef TableView tv
    cdef Entry *e
    cdef int64_t exp
    view_block(seg, node.off, node.gen, K_DICT)
    table_view(seg, node.off, &tv)
    a.ix = table_lookup(seg, &tv, a.key)
    a.status = 0
    if a.ix >= 0:
        e = &tv.ents[a.ix]
        a.status = 1
        if e.key.b[0] != T_PACKED:
            exp = wrapped_expiry(seg, &e.value)
            if exp and exp <= now_us():
                a.status = 2
    return None
