# Cache mode: a CacheCore's writes of entries (included by _codec.pyx after
# codec/cachestate.pxi): set() in named steps (cc_set: the cells outside the
# lock; cc_set_locked under it: room, insert, the bytes bound), eviction
# (CLOCK's hand, cc_pick_victim, and TinyLFU's admission, cc_admit),
# pop(), and get_or_set's claims on a key (cc_claim, cc_release).


cdef struct SetCells:
    Cell ck                     # the key's cell (from kplan when it has one)
    Cell cv                     # the value's cell (from plan, or its block)
    Cell pair[2]                # the entry as stored: packed, or ck and cv
    bint packed
    int64_t vi                  # the value's root in plan
    int64_t ki                  # the key's root in kplan
    const char *vdata           # a str or bytes value written directly (vkind): its bytes
    uint64_t vlen
    bint vascii
    int vkind


cdef object cc_set(CacheCore c, object k, object v, DictNode pending, int64_t marker):
    """Store v (as cc_wrap made it) under k: True if stored, False if
    declined. The key and value are made ready before the lock; with
    `pending`, this process's claim on k is dropped in the same lock hold."""
    cdef Key key
    cdef Segment seg = c.seg
    cdef SetCells sc
    cdef Plan plan = None
    cdef Plan kplan = None
    cdef bint fast_k, fast_v
    cc_ready(c)
    owner = make_key(seg, k, &key)
    memset(&sc, 0, sizeof(SetCells))
    fast_k = False
    if key.ctag == T_STR or key.ctag == T_BYTES:
        if key.len <= INLINE_MAX:
            cell_inline(&sc.ck, T_SSTR if key.ctag == T_STR else T_SBYTES, key.data, key.len,
                        key.ctag == T_STR and PyUnicode_IS_ASCII(k))
            fast_k = True
    elif key.ctag != T_BIGINT and key.ctag != T_KTUPLE:
        fast_k = encode_scalar(k, &sc.ck)
    fast_v = encode_scalar(v, &sc.cv)
    if fast_k and (PyUnicode_Check(v) or PyBytes_Check(v)):
        sc.packed = pack_pair(sc.pair, k, &key, v)
    if sc.packed:
        fast_v = True
    elif not fast_v and (PyUnicode_Check(v) or PyBytes_Check(v)):
        # one str or bytes block: written directly, no plan
        if PyUnicode_Check(v):
            vowner = str_utf8(v, &sc.vdata, &sc.vlen, &sc.vascii)
            sc.vkind = K_STR
        else:
            vowner = v
            sc.vdata = PyBytes_AS_STRING(v)
            sc.vlen = PyBytes_GET_SIZE(v)
            sc.vkind = K_BYTES
    elif not fast_v:
        plan = Plan(seg)
        sc.vi = plan.add_root(v)
    if not fast_k and not sc.packed:
        kplan = Plan(seg)
        sc.ki = kplan.add_key(k)
    # from here on no Python code runs until the lock is released
    lock_acquire(seg, -1)
    try:
        return cc_set_locked(c, &key, &sc, plan, kplan, v)
    finally:
        try:
            if pending is not None:
                cc_release(c, pending, k, marker)
        finally:
            lock_release(seg)


cdef object cc_set_release(CacheCore c, object k, object v, object ttl, DictNode pending, int64_t marker):
    """set(k, v, ttl), then drop this process's get_or_set claim on k, in one lock hold."""
    cdef int64_t ttl_us
    cdef uint64_t *st = cc_state(c)
    cc_ready(c)
    ttl_us = st[S_TTL] if ttl is None else max(1, <int64_t>(min(float(ttl), 1e11) * 1e6))
    return cc_set(c, k, cc_wrap(v, ttl_us), pending, marker)


cdef object cc_set_locked(CacheCore c, Key *key, SetCells *sc, Plan plan, Plan kplan, object v):
    """cc_set under the lock: make room, store, keep the bytes bound."""
    cdef Segment seg = c.seg
    cdef uint64_t *st
    cdef uint64_t maxe, maxb
    cdef int attempts = 0
    cc_recount_locked(c)
    st = cc_state(c)
    maxe = 0 if _hook_no_evict else st[S_MAXE]
    maxb = 0 if _hook_no_evict else st[S_MAXB]
    if sk_freq(st, key.hash) == 0:
        sk_add(st, key.hash)    # a key never read: its reads count, a miss counted once
    c.data.check(K_DICT)
    if maxe and not cc_make_room(c, key, st, maxe):
        return False
    while True:
        try:
            cc_insert(c, key, sc, plan, kplan)
            break
        except SegmentFullError:
            attempts += 1
            if not maxe and not maxb:
                raise           # an unbounded cache grows until the segment is full
            if attempts > 64 or not cc_evict_one(c):
                cc_bump(c, S_OVERSIZE)
                return False
    if maxb and not cc_bound_bytes(c, key, maxb):
        return False
    st = cc_state(c)
    if st[S_TTL] or v.__class__ is tuple:
        cc_expire_some(c, 4)
    sk_age(st)
    return True


cdef bint cc_make_room(CacheCore c, Key *key, uint64_t *st, uint64_t maxe) except -1:
    """Under the lock, before storing key: if it is new and the cache holds
    maxe entries, evict (through the admission filter). False: the filter
    declined the key."""
    cdef Segment seg = c.seg
    cdef int64_t ix
    cdef bint expired
    if dict_find(seg, c.data.off, key) >= 0:
        return True
    while dict_len(seg, c.data.off) >= <int64_t>maxe:
        ix = cc_pick_victim(c, now_us(), &expired)
        if ix < 0:
            break
        if st[S_ADMIT] and not expired and not cc_admit(c, key, ix):
            st[S_HAND] = ix         # the victim stays under the hand for the next candidate
            cc_bump(c, S_REJECTED)
            return False
        cc_evict_at(c, ix, expired)
    return True


cdef bint cc_bound_bytes(CacheCore c, Key *key, uint64_t maxb) except -1:
    """Under the lock, after storing key: the bytes bound. A value larger
    than it alone is dropped again (False); else entries are evicted until
    the cache is within it."""
    cdef Segment seg = c.seg
    cdef uint64_t *st = cc_state(c)
    cdef int64_t ix = dict_find(seg, c.data.off, key)
    if ix >= 0 and entry_footprint(seg, dict_entry(seg, c.data.off, ix)) > maxb:
        wr_begin(seg)
        try:
            cc_remove_locked(c, ix, S_OVERSIZE)
            wr_commit(seg)
        finally:
            wr_end(seg)
        return False
    while st[S_BYTES] > maxb:
        if not cc_evict_one(c):
            break
    return True


cdef int cc_insert(CacheCore c, Key *key, SetCells *sc, Plan plan, Plan kplan) except -1:
    """One write: store the pair and count its bytes."""
    cdef Segment seg = c.seg
    cdef TableView tv
    cdef int64_t ix
    cdef uint64_t old = 0, new, vblock = 0, t
    cdef uint64_t *st
    wr_begin(seg)
    try:
        st = cc_state(c)
        view_block(seg, c.data.off, c.data.gen, K_DICT)
        table_view(seg, c.data.off, &tv)
        ix = table_lookup(seg, &tv, key)
        if ix >= 0:
            old = entry_footprint(seg, &tv.ents[ix])
        if plan is not None:
            plan.materialize()
            sc.cv = plan.cell(sc.vi)[0]
        elif sc.vkind:
            vblock = new_bytes_block(seg, sc.vkind, sc.vdata, sc.vlen, 1 if sc.vascii else 0)
            cell_set(&sc.cv, T_STR if sc.vkind == K_STR else T_BYTES, vblock)
        if not sc.packed:
            sc.pair[0] = sc.ck
            sc.pair[1] = sc.cv
        if ix >= 0:
            tbl_entry_set(seg, &tv.ents[ix], sc.pair, True)
        else:
            try:
                if kplan is not None:
                    kplan.materialize()
                    sc.ck = kplan.cell(sc.ki)[0]
                t = tbl_reserve(seg, c.data.off, tv.off, 1)
            except BaseException:
                if kplan is not None:
                    kplan.rollback()
                if plan is not None:
                    plan.rollback()
                if vblock:
                    blk_free(seg, vblock)
                raise
            if not sc.packed:
                sc.pair[0] = sc.ck
            tbl_insert(seg, c.data.off, t, key, &sc.pair[0], &sc.pair[1])
        ix = dict_find(seg, c.data.off, key)
        new = entry_footprint(seg, dict_entry(seg, c.data.off, ix))
        cstore(seg, &st[S_BYTES], st[S_BYTES] + new - old if st[S_BYTES] + new > old else 0)
        cstore(seg, &st[S_SETS], st[S_SETS] + 1)
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0


cdef int cc_remove_locked(CacheCore c, int64_t ix, int counter) except -1:
    """Inside a write: remove entry ix, counting it under `counter` (or none: -1)."""
    cdef Segment seg = c.seg
    cdef uint64_t *st = cc_state(c)
    cdef uint64_t size = entry_footprint(seg, dict_entry(seg, c.data.off, ix))
    cstore(seg, &st[S_BYTES], st[S_BYTES] - size if st[S_BYTES] > size else 0)
    if counter >= 0:
        cstore(seg, &st[counter], st[counter] + 1)
    tbl_remove(seg, c.data.off, ix)
    return 0


# -- eviction

cdef int64_t cc_pick_victim(CacheCore c, int64_t now, bint *expired) except -2:
    """Under the lock: the victim (-1 when the cache is empty). The hand
    passes entries in table order, clearing the reference bytes of those
    read since it last passed (their reads go to the sketch); of the first
    VICTIM_SAMPLES unread ones it picks the least frequent. An expired
    entry is picked at once."""
    cdef Segment seg = c.seg
    cdef uint64_t *st = cc_state(c)
    cdef TableView tv
    cdef uint64_t hand, steps = 0, limit, f, best_f = 1 << 20
    cdef Entry *e
    cdef int64_t exp, best = -1
    cdef int found = 0
    cdef uint8_t *rb
    cdef uint64_t h
    c.data.check(K_DICT)
    table_view(seg, c.data.off, &tv)
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
            h = entry_hash(seg, e)
            rb = ref_byte(st, h)
            if rb[0] == 0 or steps >= tv.nentries + 1:
                f = sk_freq(st, h)
                if best < 0 or f < best_f:
                    best = hand
                    best_f = f
                found += 1
                if found >= VICTIM_SAMPLES:
                    break
            else:
                while rb[0]:            # the reads since the hand last passed
                    sk_add(st, h)
                    rb[0] = rb[0] - 1
        hand += 1
        if hand >= tv.nentries:
            hand = 0
        steps += 1
    st[S_HAND] = hand + 1
    return best


cdef bint cc_admit(CacheCore c, Key *key, int64_t victim) except -1:
    """Under the lock, the cache full: was key asked for more often than the victim?"""
    cdef uint64_t *st = cc_state(c)
    cdef TableView tv
    table_view(c.seg, c.data.off, &tv)
    if victim >= <int64_t>tv.nentries:
        return True
    return sk_freq(st, key.hash) > sk_freq(st, entry_hash(c.seg, &tv.ents[victim]))


cdef int cc_evict_at(CacheCore c, int64_t ix, bint expired) except -1:
    """One write: remove the victim ix (picked under this lock hold)."""
    cdef Segment seg = c.seg
    wr_begin(seg)
    try:
        c.data.check(K_DICT)
        cc_remove_locked(c, ix, S_EXPIRED if expired else S_EVICT)
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0


cdef int cc_evict_one(CacheCore c) except -1:
    """Evict the next victim. Returns 0 when the cache is empty."""
    cdef bint expired = False
    cdef int64_t ix = cc_pick_victim(c, now_us(), &expired)
    if ix < 0:
        return 0
    cc_evict_at(c, ix, expired)
    return 1


# -- pop

cdef object cc_pop(CacheCore c, object k, object default):
    """c.pop(k[, default]): remove k and return its value (expired: absent)."""
    cdef Key key
    cdef Segment seg = c.seg
    cdef int64_t ix, exp = 0
    cdef Entry *e
    cdef const Cell *cell
    cc_ready(c)
    owner = make_key(seg, k, &key, True)
    r = _MISS
    wr_begin(seg)
    try:
        c.data.check(K_DICT)
        ix = dict_find(seg, c.data.off, &key)
        if ix >= 0:
            e = dict_entry(seg, c.data.off, ix)
            if e.key.b[0] == T_PACKED:
                r = entry_value(seg, e, False)
            else:
                cell = &e.value
                exp = wrapped_expiry(seg, cell)
                if cell.b[0] == T_TUPLE:
                    cell = wrapped_inner(seg, cell)
                if not (exp and exp <= now_us()):
                    r = deep_decode(seg, cell)
            cc_remove_locked(c, ix, S_EXPIRED if r is _MISS else -1)
        wr_commit(seg)
    finally:
        wr_end(seg)
    if r is _MISS:
        if default is _MISS:
            raise KeyError(k)
        return default
    return r


# -- get_or_set's claims: `pending` maps a key to the marker of the process computing it

cdef tuple cc_claim(CacheCore c, DictNode pending, object k, int64_t marker, int64_t expect):
    """One step of get_or_set, under the lock: (1, value) if k is cached;
    else claim k for this process in `pending` (its marker) if nobody
    holds it, or if its holder's marker is `expect` (a dead holder):
    (0, None); else (2, the holder's marker)."""
    cdef Segment seg = c.seg
    cdef Key key
    cdef CArg a
    cdef int64_t ix, held
    cdef Entry *e
    cc_ready(c)
    owner = make_key(seg, k, &key)
    a.key = &key
    a.core = <PyObject *>c
    lock_acquire(seg, -1)
    try:
        r = read_section(c.data, _rd_cache_get, &a)
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


cdef int cc_release(CacheCore c, DictNode pending, object k, int64_t marker) except -1:
    """Drop this process's claim on k (if it still holds it)."""
    cdef Segment seg = c.seg
    cdef Key key
    cdef int64_t ix, held = -1
    cdef Entry *e
    cc_ready(c)
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
