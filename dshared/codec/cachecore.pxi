# Cache mode: CacheCore, the cache's lookups and writes (included by
# _codec.pyx after codec/cache.pxi, whose header describes the layout).


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

    cdef inline object hit_key(self, object k, Key *key):
        """make_key for a lookup, an ASCII str key's hash taken from kmemo."""
        cdef Segment seg = self.seg
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
        ks = &self.kmemo[<size_t>h & (KMEMO - 1)]
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

    cdef inline void memo_value(self, CArg *a, object r) noexcept:
        """After a validated read decoded a str or bytes block: keep the object."""
        cdef VSlot *vs
        cdef PyObject *o
        if a.voff == 0 or self.seg.wdepth != 0 or self.seg.lk.bdepth != 0:
            return          # inside this thread's own write, a value may yet be rolled back
        vs = &self.vmemo[(a.voff >> 4) & (VMEMO - 1)]
        o = vs.obj
        Py_INCREF(r)
        vs.obj = <PyObject *>r
        vs.off = a.voff
        vs.gen = a.vgen
        Py_XDECREF(o)

    cdef inline int ready(self) except -1:
        if self.seg is None:
            raise TypeError("a SharedCache is made by dshared.cache(name) or Segment.cache(name)")
        return 0

    def _forget_counts(self):
        """In a forked child: the parent's counts are the parent's to add."""
        self._hits = self._misses = 0

    def _attach(self, Segment seg, name, DictNode data, DictNode entry):
        """Bind to a cache's data dict and state block (entry: its registry record)."""
        cdef Key key
        cdef int64_t ix
        cdef Entry *e
        cdef uint64_t off
        cdef const char *p
        cdef uint64_t n
        self.seg = seg
        self.name = name
        self.data = data
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
            self.soff = off
            self.sgen = (<Block *>(seg.base + off)).gen
            self.slen = n
            if (<uint64_t *>p)[S_LOGW] > 30 or n < 8 * S_WORDS + 5 * ((<uint64_t>1) << (<uint64_t *>p)[S_LOGW]):
                raise CorruptSegmentError("cache %r: bad state block" % (name,))
            self.logw = (<uint64_t *>p)[S_LOGW]
        finally:
            lock_release(seg)

    cdef uint64_t *state(self) except NULL:
        """The state words, checked (the block is never freed while the cache exists)."""
        cdef Segment seg = self.seg
        cdef Block *b
        cdef uint64_t *st
        self.ready()
        b = checked_block(seg, self.soff, K_BYTES)
        if b.gen != self.sgen or <uint64_t>b.size16 * ALIGN < BLOCK_HDR + 8 + self.slen:
            raise StaleReferenceError("cache %r was removed from segment %r" % (self.name, seg.name))
        st = <uint64_t *>(seg.base + self.soff + BLOCK_HDR + 8)
        if st[S_LOGW] != self.logw:
            # the sketch's and the reference bytes' indexes are taken from it
            raise CorruptSegmentError("cache %r: its state block's width changed" % (self.name,))
        return st

    # -- reads

    def get(self, k, default=None):
        """c.get(k[, default]): the cached value as a plain copy, or default (a
        str or bytes value may be the very object an earlier get returned:
        equal and immutable, as a copy)."""
        return cache_lookup(self, k, default, True)

    def _peek(self, k, default=None):
        """get() that counts neither a hit nor a miss."""
        self.ready()
        return self._lookup(k, default, False)

    cdef object _lookup(self, object k, object default, bint count):
        return cache_lookup(self, k, default, count)

    cdef object _missed(self, Key *key, CArg *a, object default, bint count):
        """cache_lookup's end when k was not found or had expired."""
        if count:
            self._misses += 1
            sk_add(self.state(), key.hash)      # plain stores: a lost increment only blurs a count
            if self._hits + self._misses >= FLUSH_EVERY:
                self.flush()
        if a.status == 2:
            self._drop_expired(key)
        return default

    def __getitem__(self, k):
        self.ready()
        r = self.get(k, _MISS)
        if r is _MISS:
            raise KeyError(k)
        return r

    def __contains__(self, k):
        """k in c: the key is cached and not expired (counts as neither hit nor miss)."""
        cdef Key key
        cdef CArg a
        self.ready()
        owner = make_key(self.seg, k, &key, True)
        a.key = &key
        a.core = <PyObject *>self
        read_section(self.data, _rd_cache_contains, &a)
        return a.status == 1

    cdef int _drop_expired(self, Key *key) except -1:
        """Reclaim an expired entry a read met."""
        cdef Segment seg = self.seg
        cdef int64_t ix, exp
        cdef Entry *e
        cdef uint64_t *st
        wr_begin(seg)
        try:
            self.data.check(K_DICT)
            ix = dict_find(seg, self.data.off, key)
            if ix >= 0:
                e = dict_entry(seg, self.data.off, ix)
                exp = wrapped_expiry(seg, &e.value) if e.key.b[0] != T_PACKED else 0
                if exp and exp <= now_us():
                    self._remove_locked(ix, S_EXPIRED)
            wr_commit(seg)
        finally:
            wr_end(seg)
        return 0

    def flush(self):
        """Add this process's hit and miss counts to the shared counters."""
        cdef Segment seg = self.seg
        cdef uint64_t *st
        self.ready()
        if self._hits == 0 and self._misses == 0:
            return
        wr_begin(seg)
        try:
            st = self.state()
            jr_store(seg, &st[S_HITS], st[S_HITS] + self._hits)
            jr_store(seg, &st[S_MISSES], st[S_MISSES] + self._misses)
            wr_commit(seg)
            self._hits = 0
            self._misses = 0
        finally:
            wr_end(seg)

    def _claim(self, DictNode pending, k, int64_t marker, int64_t expect=0):
        """See claim_c."""
        return self.claim_c(pending, k, marker, expect)

    cdef tuple claim_c(self, DictNode pending, object k, int64_t marker, int64_t expect):
        """One step of get_or_set, under the lock: (1, value) if k is cached;
        else claim k for this process in `pending` (its marker) if nobody
        holds it, or if its holder's marker is `expect` (a dead holder):
        (0, None); else (2, the holder's marker)."""
        cdef Segment seg = self.seg
        cdef Key key
        cdef CArg a
        cdef int64_t ix, held
        cdef Entry *e
        self.ready()
        owner = make_key(seg, k, &key)
        a.key = &key
        a.core = <PyObject *>self
        lock_acquire(seg, -1)
        try:
            r = read_section(self.data, _rd_cache_get, &a)
            if a.status == 1:
                return (1, r)
            if _hook_no_claim:
                return (0, None)
            pending.check(K_DICT)
            ix = dict_find(seg, pending.off, &key)
            if ix >= 0:
                e = dict_entry(seg, pending.off, ix)
                held = -1
                if e.value.b[0] == T_INT:
                    memcpy(&held, &e.value.b[8], 8)
                if held != expect or expect == 0:
                    return (2, held)
            pending._store(k, marker, 0)
            return (0, None)
        finally:
            lock_release(seg)

    def _release(self, DictNode pending, k, int64_t marker):
        """Drop this process's claim on k (if it still holds it)."""
        self.release_c(pending, k, marker)

    cdef int release_c(self, DictNode pending, object k, int64_t marker) except -1:
        cdef Segment seg = self.seg
        cdef Key key
        cdef int64_t ix, held = -1
        cdef Entry *e
        self.ready()
        owner = make_key(seg, k, &key)
        wr_begin(seg)
        try:
            pending.check(K_DICT)
            ix = dict_find(seg, pending.off, &key)
            if ix >= 0:
                e = dict_entry(seg, pending.off, ix)
                if e.value.b[0] == T_INT:
                    memcpy(&held, &e.value.b[8], 8)
                if held == marker:
                    tbl_remove(seg, pending.off, ix)
            wr_commit(seg)
        finally:
            wr_end(seg)
        return 0

    def _local_counts(self):
        self.ready()
        return (self._hits, self._misses)

    def _stats(self):
        """The shared counters (after adding this process's)."""
        cdef uint64_t *st
        cdef Segment seg = self.seg
        self.ready()
        self.flush()
        lock_acquire(seg, -1)
        try:
            self._recount_locked()
            st = self.state()
            return dict(hits=st[S_HITS], misses=st[S_MISSES], evictions=st[S_EVICT],
                        expirations=st[S_EXPIRED], entries=dict_len(seg, self.data.off),
                        bytes=st[S_BYTES], max_entries=st[S_MAXE] or None,
                        max_bytes=st[S_MAXB] or None, oversize=st[S_OVERSIZE],
                        rejected=st[S_REJECTED], sets=st[S_SETS])
        finally:
            lock_release(seg)

    def _settings(self):
        cdef uint64_t *st = self.state()
        self.ready()
        return (st[S_MAXE], st[S_MAXB], st[S_TTL], st[S_ADMIT])

    # -- writes (all under the lock)

    cdef int _recount_locked(self) except -1:
        """After a repair of the segment (a writer died), recompute bytes from
        the entries: the journal kept each write whole, but a repair may also
        have come from a crash in a write this cache did not make."""
        cdef Segment seg = self.seg
        cdef uint64_t *st = self.state()
        cdef uint64_t total = 0
        cdef int64_t i
        if st[S_REPAIRS] == seg.hdr.repairs or _hook_plain_counters:
            return 0
        wr_begin(seg)
        try:
            self.data.check(K_DICT)
            i = dict_next(seg, self.data.off, 0)
            while i >= 0:
                total += entry_footprint(seg, dict_entry(seg, self.data.off, i))
                i = dict_next(seg, self.data.off, i + 1)
            jr_store(seg, &st[S_BYTES], total)
            jr_store(seg, &st[S_REPAIRS], seg.hdr.repairs)
            wr_commit(seg)
        finally:
            wr_end(seg)
        return 0

    cdef int _remove_locked(self, int64_t ix, int counter) except -1:
        """Inside a write: remove entry ix, counting it under `counter` (or none: -1)."""
        cdef Segment seg = self.seg
        cdef uint64_t *st = self.state()
        cdef uint64_t size = entry_footprint(seg, dict_entry(seg, self.data.off, ix))
        cstore(seg, &st[S_BYTES], st[S_BYTES] - size if st[S_BYTES] > size else 0)
        if counter >= 0:
            cstore(seg, &st[counter], st[counter] + 1)
        tbl_remove(seg, self.data.off, ix)
        return 0

    cdef int64_t _pick_victim(self, int64_t now, bint *expired) except -2:
        """Under the lock: the victim (-1 when the cache is empty). The hand
        passes entries in table order, clearing the reference bytes of those
        read since it last passed (their reads go to the sketch); of the first
        VICTIM_SAMPLES unread ones it picks the least frequent. An expired
        entry is picked at once."""
        cdef Segment seg = self.seg
        cdef uint64_t *st = self.state()
        cdef TableView tv
        cdef uint64_t hand, steps = 0, limit, f, best_f = 1 << 20
        cdef Entry *e
        cdef int64_t exp, best = -1
        cdef int found = 0
        cdef uint8_t *rb
        self.data.check(K_DICT)
        table_view(seg, self.data.off, &tv)
        if tv.count == 0 or tv.nentries == 0:
            return -1
        hand = st[S_HAND]
        if hand >= tv.nentries:
            hand = 0
        limit = 2 * tv.nentries + 2
        expired[0] = False
        while steps < limit:
            e = &tv.ents[hand]
            if e.key.b[0] != T_EMPTY:
                if e.key.b[0] != T_PACKED and e.value.b[0] == T_TUPLE:
                    exp = wrapped_expiry(seg, &e.value)
                    if exp and exp <= now:
                        expired[0] = True
                        st[S_HAND] = hand + 1
                        return hand
                rb = ref_byte(st, e.hash)
                if rb[0] == 0 or steps >= tv.nentries + 1:
                    f = sk_freq(st, e.hash)
                    if best < 0 or f < best_f:
                        best = hand
                        best_f = f
                    found += 1
                    if found >= VICTIM_SAMPLES:
                        break
                else:
                    while rb[0]:            # the reads since the hand last passed
                        sk_add(st, e.hash)
                        rb[0] = rb[0] - 1
            hand += 1
            if hand >= tv.nentries:
                hand = 0
            steps += 1
        st[S_HAND] = hand + 1
        return best

    cdef int _evict_at(self, int64_t ix, bint expired) except -1:
        """One write: remove the victim ix (picked under this lock hold)."""
        cdef Segment seg = self.seg
        wr_begin(seg)
        try:
            self.data.check(K_DICT)
            self._remove_locked(ix, S_EXPIRED if expired else S_EVICT)
            wr_commit(seg)
        finally:
            wr_end(seg)
        return 0

    cdef int _evict_one(self) except -1:
        """Evict the next victim. Returns 0 when the cache is empty."""
        cdef bint expired = False
        cdef int64_t ix = self._pick_victim(now_us(), &expired)
        if ix < 0:
            return 0
        self._evict_at(ix, expired)
        return 1

    cdef int _expire_some(self, int n) except -1:
        """Reclaim expired entries among the next n the hand passes (no eviction)."""
        cdef Segment seg = self.seg
        cdef uint64_t *st
        cdef TableView tv
        cdef uint64_t hand
        cdef int64_t now = now_us(), exp
        cdef Entry *e
        cdef int i
        wr_begin(seg)
        try:
            st = self.state()
            self.data.check(K_DICT)
            table_view(seg, self.data.off, &tv)
            hand = st[S_HAND]
            for i in range(n):
                table_view(seg, self.data.off, &tv)     # again: a removal may drop the table
                if tv.nentries == 0:
                    break
                if hand >= tv.nentries:
                    hand = 0
                e = &tv.ents[hand]
                if e.key.b[0] != T_EMPTY and e.key.b[0] != T_PACKED and e.value.b[0] == T_TUPLE:
                    exp = wrapped_expiry(seg, &e.value)
                    if exp and exp <= now:
                        self._remove_locked(hand, S_EXPIRED)
                hand += 1
            st[S_HAND] = hand
            wr_commit(seg)
        finally:
            wr_end(seg)
        return 0

    def _bump(self, int counter):
        cdef Segment seg = self.seg
        cdef uint64_t *st
        self.ready()
        wr_begin(seg)
        try:
            st = self.state()
            jr_store(seg, &st[counter], st[counter] + 1)
            wr_commit(seg)
        finally:
            wr_end(seg)

    def set(self, k, v, ttl=None):
        """c.set(k, v, ttl=None): store v under k (ttl in seconds: None for the
        cache's default). Returns True if stored, False if declined: larger than
        max_bytes, or refused by the admission filter when the cache is full
        (the key was seen less often than the entry it would evict)."""
        cdef Segment seg = self.seg
        cdef uint64_t *st
        cdef int64_t exp = 0, ttl_us
        self.ready()
        st = self.state()
        if ttl is None:
            ttl_us = st[S_TTL]
        else:
            if not isinstance(ttl, (int, float)) or ttl != ttl:
                raise TypeError("ttl must be a number of seconds or None, not %r" % (ttl,))
            if ttl <= 0:
                raise ValueError("ttl must be > 0, not %r" % (ttl,))
            ttl_us = <int64_t>(min(float(ttl), 1e11) * 1e6)
            if ttl_us < 1:
                ttl_us = 1
        if ttl_us:
            exp = now_us() + ttl_us
        if exp or type(v) is tuple:
            v = (v, exp)
        return self._set(k, v, None, 0)

    def _set_release(self, k, v, ttl, DictNode pending, int64_t marker):
        """set(), then drop this process's get_or_set claim on k, in one lock hold."""
        return self.set_release_c(k, v, ttl, pending, marker)

    cdef object set_release_c(self, object k, object v, object ttl, DictNode pending, int64_t marker):
        cdef int64_t exp = 0, ttl_us
        cdef uint64_t *st = self.state()
        self.ready()
        ttl_us = st[S_TTL] if ttl is None else max(1, <int64_t>(min(float(ttl), 1e11) * 1e6))
        if ttl_us:
            exp = now_us() + ttl_us
        if exp or type(v) is tuple:
            v = (v, exp)
        return self._set(k, v, pending, marker)

    cdef object _set(self, object k, object v, DictNode pending, int64_t marker):
        cdef Key key
        cdef Segment seg = self.seg
        cdef Cell cv, ck
        cdef Plan plan = None
        cdef Plan kplan = None
        cdef int64_t ix, vi = 0, ki = 0, count
        cdef bint fast_k, fast_v, packed = False, expired
        cdef Cell pair[2]
        cdef TableView tv
        cdef uint64_t *st
        cdef uint64_t old = 0, new, maxe, maxb, freq_k
        cdef int attempts = 0, victim
        cdef const char *vdata = NULL
        cdef uint64_t vlen = 0
        cdef bint vascii = False
        cdef int vkind = 0
        self.ready()
        owner = make_key(seg, k, &key)
        memset(&ck, 0, CELL_SIZE)
        fast_k = False
        if key.ctag == T_STR or key.ctag == T_BYTES:
            if key.len <= INLINE_MAX:
                cell_inline(&ck, T_SSTR if key.ctag == T_STR else T_SBYTES, key.data, key.len,
                            key.ctag == T_STR and PyUnicode_IS_ASCII(k))
                fast_k = True
        elif key.ctag != T_BIGINT and key.ctag != T_KTUPLE:
            fast_k = encode_scalar(k, &ck)
        fast_v = encode_scalar(v, &cv)
        if fast_k and (PyUnicode_Check(v) or PyBytes_Check(v)):
            packed = pack_pair(pair, k, &key, v)
        if packed:
            fast_v = True
        elif not fast_v and (PyUnicode_Check(v) or PyBytes_Check(v)):
            # one str or bytes block: written directly, no plan
            if PyUnicode_Check(v):
                vowner = str_utf8(v, &vdata, &vlen, &vascii)
                vkind = K_STR
            else:
                vowner = v
                vdata = PyBytes_AS_STRING(v)
                vlen = PyBytes_GET_SIZE(v)
                vkind = K_BYTES
        elif not fast_v:
            plan = Plan(seg)
            vi = plan.add_root(v)
        if not fast_k and not packed:
            kplan = Plan(seg)
            ki = kplan.add_key(k)
        # from here on no Python code runs until the lock is released
        lock_acquire(seg, -1)
        try:
            self._recount_locked()
            st = self.state()
            maxe = 0 if _hook_no_evict else st[S_MAXE]
            maxb = 0 if _hook_no_evict else st[S_MAXB]
            if sk_freq(st, key.hash) == 0:
                sk_add(st, key.hash)    # a key never read: its reads count, a miss counted once
            # room for a new key: evict (through the admission filter) first
            self.data.check(K_DICT)
            if maxe and dict_find(seg, self.data.off, &key) < 0:
                while dict_len(seg, self.data.off) >= <int64_t>maxe:
                    ix = self._pick_victim(now_us(), &expired)
                    if ix < 0:
                        break
                    if st[S_ADMIT] and not expired and not self._admit(&key, ix):
                        st[S_HAND] = ix         # the victim stays under the hand for the next candidate
                        self._bump(S_REJECTED)
                        return False
                    self._evict_at(ix, expired)
            while True:
                try:
                    self._insert(&key, &ck, &cv, pair, packed, plan, vi, kplan, ki, vdata, vlen, vkind, vascii)
                    break
                except SegmentFullError:
                    attempts += 1
                    if not maxe and not maxb:
                        raise           # an unbounded cache grows until the segment is full
                    if attempts > 64 or not self._evict_one():
                        self._bump(S_OVERSIZE)
                        return False
            # the bytes bound (a value larger than it alone is dropped again)
            if maxb:
                st = self.state()
                ix = dict_find(seg, self.data.off, &key)
                if ix >= 0 and entry_footprint(seg, dict_entry(seg, self.data.off, ix)) > maxb:
                    wr_begin(seg)
                    try:
                        self._remove_locked(ix, S_OVERSIZE)
                        wr_commit(seg)
                    finally:
                        wr_end(seg)
                    return False
                while st[S_BYTES] > maxb:
                    if not self._evict_one():
                        break
            st = self.state()
            if st[S_TTL] or (<object>v).__class__ is tuple:
                self._expire_some(4)
            sk_age(st)
            return True
        finally:
            try:
                if pending is not None:
                    self.release_c(pending, k, marker)
            finally:
                lock_release(seg)

    cdef bint _admit(self, Key *key, int64_t victim) except -1:
        """Under the lock, the cache full: was key asked for more often than the victim?"""
        cdef uint64_t *st = self.state()
        cdef TableView tv
        table_view(self.seg, self.data.off, &tv)
        if victim >= <int64_t>tv.nentries:
            return True
        return sk_freq(st, key.hash) > sk_freq(st, tv.ents[victim].hash)

    cdef int _insert(self, Key *key, Cell *ck, Cell *cv, Cell *pair, bint packed, Plan plan, int64_t vi,
                     Plan kplan, int64_t ki, const char *vdata, uint64_t vlen, int vkind,
                     bint vascii) except -1:
        """One write: store the pair and count its bytes."""
        cdef Segment seg = self.seg
        cdef TableView tv
        cdef int64_t ix
        cdef uint64_t old = 0, new, vblock = 0
        cdef uint64_t *st
        wr_begin(seg)
        try:
            st = self.state()
            view_block(seg, self.data.off, self.data.gen, K_DICT)
            table_view(seg, self.data.off, &tv)
            ix = table_lookup(seg, &tv, key)
            if ix >= 0:
                old = entry_footprint(seg, &tv.ents[ix])
            if plan is not None:
                plan.materialize()
                cv[0] = plan.cell(vi)[0]
            elif vkind:
                vblock = new_bytes_block(seg, vkind, vdata, vlen, 1 if vascii else 0)
                cell_set(cv, T_STR if vkind == K_STR else T_BYTES, vblock)
            if not packed:
                pair[0] = ck[0]
                pair[1] = cv[0]
            if ix >= 0:
                tbl_entry_set(seg, &tv.ents[ix], pair, True)
            else:
                try:
                    if kplan is not None:
                        kplan.materialize()
                        ck[0] = kplan.cell(ki)[0]
                    tbl_reserve(seg, self.data.off, 1)
                except BaseException:
                    if kplan is not None:
                        kplan.rollback()
                    if plan is not None:
                        plan.rollback()
                    if vblock:
                        blk_free(seg, vblock)
                    raise
                if not packed:
                    pair[0] = ck[0]
                tbl_insert(seg, self.data.off, key, &pair[0], &pair[1])
            ix = dict_find(seg, self.data.off, key)
            new = entry_footprint(seg, dict_entry(seg, self.data.off, ix))
            cstore(seg, &st[S_BYTES], st[S_BYTES] + new - old if st[S_BYTES] + new > old else 0)
            cstore(seg, &st[S_SETS], st[S_SETS] + 1)
            wr_commit(seg)
        finally:
            wr_end(seg)
        return 0

    def pop(self, k, default=_MISS):
        """c.pop(k[, default]): remove k and return its value (expired: absent)."""
        cdef Key key
        cdef Segment seg = self.seg
        cdef int64_t ix, exp = 0
        cdef Entry *e
        cdef const Cell *c
        self.ready()
        owner = make_key(seg, k, &key, True)
        r = _MISS
        wr_begin(seg)
        try:
            self.data.check(K_DICT)
            ix = dict_find(seg, self.data.off, &key)
            if ix >= 0:
                e = dict_entry(seg, self.data.off, ix)
                if e.key.b[0] == T_PACKED:
                    r = entry_value(seg, e, False)
                else:
                    c = &e.value
                    exp = wrapped_expiry(seg, c)
                    if c.b[0] == T_TUPLE:
                        c = wrapped_inner(seg, c)
                    if not (exp and exp <= now_us()):
                        r = deep_decode(seg, c)
                self._remove_locked(ix, S_EXPIRED if r is _MISS else -1)
            wr_commit(seg)
        finally:
            wr_end(seg)
        if r is _MISS:
            if default is _MISS:
                raise KeyError(k)
            return default
        return r

    def __delitem__(self, k):
        self.ready()
        self.pop(k)

    def clear(self):
        """Remove every entry (the counters stay; see reset_stats)."""
        cdef Segment seg = self.seg
        cdef uint64_t *st
        self.ready()
        wr_begin(seg)
        try:
            self.data.check(K_DICT)
            st = self.state()
            tbl_clear(seg, self.data.off)
            jr_store(seg, &st[S_BYTES], 0)
            jr_store(seg, &st[S_HAND], 0)
            wr_commit(seg)
        finally:
            wr_end(seg)

    def reset_stats(self):
        """Zero the hit, miss, eviction, expiration and refusal counters."""
        cdef Segment seg = self.seg
        cdef uint64_t *st
        cdef int i
        self.ready()
        self._hits = self._misses = 0
        wr_begin(seg)
        try:
            st = self.state()
            for i in (S_HITS, S_MISSES, S_EVICT, S_EXPIRED, S_OVERSIZE, S_REJECTED, S_SETS):
                jr_store(seg, &st[i], 0)
            wr_commit(seg)
        finally:
            wr_end(seg)

    def __len__(self):
        """Entries stored (expired ones not yet reclaimed included)."""
        self.ready()
        return len(self.data)

    def _keys(self):
        self.ready()
        return list(self.data)
