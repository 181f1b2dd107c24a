# The dict writes that plan outside the lock and publish under it: d[k] = v,
# setdefault, and update's batch (included by _codec.pyx at module level).
# The short writes (del, pop, popitem, clear) are DictNode's methods.


# -- d[k] = v and setdefault

# How the value of a store is written: packed with its key, one str or bytes
# block written directly (no plan), or else a Plan.
cdef struct StoreVal:
    bint packed                 # the pair of cells holds key and value (T_PACKED)
    int kind                    # K_STR or K_BYTES: the value is that one block; 0 if not
    const char *data            # its bytes (owned by the caller's object)
    uint64_t len
    bint ascii
    uint64_t block              # the block, once allocated under the lock


cdef inline bint key_cell(object k, const Key *key, Cell *c) except -1:
    """The cell of key k if it needs no block (a short str or bytes, or a
    scalar); False if it does (its block is stored only if the key is new)."""
    memset(c, 0, CELL_SIZE)
    if key.ctag == T_STR or key.ctag == T_BYTES:
        if key.len <= INLINE_MAX:
            cell_inline(c, T_SSTR if key.ctag == T_STR else T_SBYTES, key.data, key.len,
                        key.ctag == T_STR and PyUnicode_IS_ASCII(k))
            return True
        return False
    if key.ctag != T_BIGINT and key.ctag != T_KTUPLE:
        return encode_scalar(k, c)
    return False


cdef object dict_store(Node node, void *arg):
    """One try of DictNode.store (arg: a StoreArg): the key and the value
    made ready outside the lock (cells, a direct block or plans), then
    dict_store_locked."""
    cdef StoreArg *a = <StoreArg *>arg
    cdef object k = <object>a.k
    cdef object v = <object>a.v
    cdef Key key
    cdef Segment seg = node.seg
    cdef Cell cv
    cdef Cell pair[2]           # the key cell and the value cell, or the packed pair
    cdef StoreVal sv
    cdef Plan plan = None
    cdef Plan kplan = None
    cdef int64_t vi = 0, ki = 0
    cdef bint fast_k, fast_v
    owner = make_key(seg, k, &key)
    sv.packed = False
    sv.kind = 0
    sv.data = NULL
    sv.len = 0
    sv.ascii = False
    sv.block = 0
    fast_k = key_cell(k, &key, &pair[0])
    fast_v = encode_scalar(v, &cv)
    if fast_k and (PyUnicode_Check(v) or PyBytes_Check(v)):
        sv.packed = pack_pair(pair, k, &key, v)
    if sv.packed:
        fast_v = True
    elif not fast_v and PyUnicode_Check(v):
        vowner = str_utf8(v, &sv.data, &sv.len, &sv.ascii)
        sv.kind = K_STR
    elif not fast_v and PyBytes_Check(v):
        sv.data = PyBytes_AS_STRING(v)
        sv.len = PyBytes_GET_SIZE(v)
        sv.kind = K_BYTES
    elif not fast_v:
        plan = Plan(seg)
        vi = plan.add_root(v)
    if not sv.packed:
        if fast_v:
            pair[1] = cv
        if not fast_k:
            kplan = Plan(seg)
            ki = kplan.add_key(k)
    return dict_store_locked(seg, <DictNode>node, v, &key, pair, &sv, plan, vi, kplan, ki, a.mode)


cdef object dict_store_locked(Segment seg, DictNode node, object v, const Key *key, Cell *pair,
                              StoreVal *sv, Plan plan, int64_t vi, Plan kplan, int64_t ki, int mode):
    """Under the lock (seg is node.seg): look the key up once; with
    ST_SETDEFAULT and the key present, return its value; else write the
    value's blocks and overwrite the entry's value or insert the pair."""
    cdef TableView tv
    cdef int64_t ix
    wr_begin(seg)
    try:
        view_block(seg, node.off, node.gen, K_DICT)
        table_view(seg, node.off, &tv)          # the table, checked once
        ix = table_lookup(seg, &tv, key)
        if ix >= 0 and mode == ST_SETDEFAULT:
            r = entry_value(seg, &tv.ents[ix], False)
            wr_commit(seg)
            return r
        if plan is not None:
            plan.materialize()
            pair[1] = plan.cell(vi)[0]
        elif sv.kind:
            sv.block = new_bytes_block(seg, sv.kind, sv.data, sv.len, 1 if sv.ascii else 0)
            cell_set(&pair[1], T_STR if sv.kind == K_STR else T_BYTES, sv.block)
        if ix >= 0:
            tbl_entry_set(seg, &tv.ents[ix], pair, True)   # the key already there stays
            nt_key(seg, node.off, key.hash)
        else:
            dict_store_new(seg, node, tv.off, key, pair, sv, plan, kplan, ki)
        r = (v if sv.packed else decode(seg, &pair[1], 0)) if mode == ST_SETDEFAULT else None
        wr_commit(seg)
        return r
    finally:
        wr_end(seg)


cdef int dict_store_new(Segment seg, DictNode node, uint64_t t, const Key *key, Cell *pair, StoreVal *sv,
                        Plan plan, Plan kplan, int64_t ki) except -1:
    """Insert a new key (lock held, seg is node.seg, t its table as viewed
    in this write): its block, room in the table, the pair. If there is no
    room, free what the value allocated and raise."""
    try:
        if kplan is not None:
            kplan.materialize()
            pair[0] = kplan.cell(ki)[0]
        t = tbl_reserve(seg, node.off, t, 1)
    except BaseException:
        if kplan is not None:
            kplan.rollback()
        if plan is not None:
            plan.rollback()
        if sv.block:
            blk_free(seg, sv.block)
        raise
    tbl_insert(seg, node.off, t, key, &pair[0], &pair[1])
    return 0


# -- update(): many pairs in one write

cdef enum:
    PF_INDEX = 16               # bulk lookups: prefetch the index slot of the key this far ahead,
    PF_ENTRY = 8                # and the entry it points to for the key this far ahead


cdef inline void prefetch_lookup(const TableView *tv, const Key *keys, int64_t i, int64_t n) noexcept nogil:
    """Bulk lookups in a big table miss the cache twice per key (index slot,
    then entry), in hash order: fetch both ahead, so that the misses of
    successive keys overlap instead of queueing. Only addresses inside the
    table are touched; a prefetch never faults."""
    cdef uint64_t mask = tv.nslots - 1
    cdef int32_t ix
    if tv.off == 0:
        return
    if i + PF_INDEX < n:
        ds_prefetch(tv.index + tv.iw * (keys[i + PF_INDEX].hash & mask), 4)
    if i + PF_ENTRY < n:
        ix = ix_get(tv.index, tv.iw, keys[i + PF_ENTRY].hash & mask)
        if ix >= 0 and <uint64_t>ix < tv.nentries:
            ds_prefetch(&tv.ents[ix], sizeof(Entry))


cdef int64_t count_missing(Segment seg, uint64_t d, const Key *keys, int64_t n) except -1:
    """How many of keys[0:n] dict d lacks (lock held: the table is read once)."""
    cdef TableView tv
    cdef int64_t i, missing = 0
    table_view(seg, d, &tv)
    for i in range(n):
        prefetch_lookup(&tv, keys, i, n)
        if table_lookup(seg, &tv, &keys[i]) < 0:
            missing += 1
    return missing


cdef object _wr_update(Node node, void *arg):
    return dict_update(<DictNode>node, <list>arg)


cdef object dict_update(DictNode node, list flat):
    """One try of DictNode._update_pairs: every pair of flat ([k0, v0, k1,
    v1, ...]) planned outside the lock (keys hashed, values laid out), then
    written in one step."""
    cdef Segment seg = node.seg
    cdef Plan plan = Plan(seg)
    cdef Key *keys
    cdef int64_t *roots              # each pair's first plan cell
    cdef int64_t n = len(flat) // 2, i
    if n == 0:
        return None
    cdef size_t got
    owners = []                     # what keeps the keys' bytes alive, where a key does not
    # one block for both arrays, and the plan's cells sized at once (see
    # scratch_grow: fresh memory costs a page fault per 4 KiB)
    keys = <Key *>scratch_grow(SCR_KEYS, NULL, n * (sizeof(Key) + sizeof(int64_t)), &got)
    roots = <int64_t *>&keys[n]
    try:
        plan.new_cells(0, 2 * n)
        for i in range(n):
            k = flat[2 * i]
            v = flat[2 * i + 1]
            owner = make_key(seg, k, &keys[i])
            if owner is not k:
                owners.append(owner)
            roots[i] = plan.add_pair(k, &keys[i], v)
        wr_begin(seg)
        try:
            node.check(K_DICT)
            wr_reserve(seg, 2, 2 * n, 2, 0)     # its records' room, before anything changes
            plan.materialize()
            if n > 4:
                dict_update_many(node, plan, roots, keys, n)
            else:
                dict_update_few(node, plan, roots, keys, n)
            wr_commit(seg)
        finally:
            wr_end(seg)
    finally:
        scratch_give(SCR_KEYS, keys, got)
    return None


cdef int dict_update_many(DictNode node, Plan plan, const int64_t *roots, const Key *keys, int64_t n) except -1:
    """Many pairs (lock held, plan materialized): in place, after growing the
    table (by 1.25 at least, so batches cost O(batch) amortized); with many
    overwrites, one new table published once. Room only for the keys that
    are new: overwrites need none."""
    cdef Segment seg = node.seg
    cdef int64_t i, missing = count_missing(seg, node.off, keys, n)
    cdef size_t got
    cdef Cell *cells = <Cell *>scratch_grow(SCR_PAIRS, NULL, 2 * n * CELL_SIZE, &got)
    try:
        for i in range(n):
            cells[2 * i] = plan.cell(roots[i])[0]
            cells[2 * i + 1] = plan.cell(roots[i] + 1)[0]
        try:
            if n - missing <= MANY_OVERWRITES:
                if missing:
                    tbl_reserve(seg, node.off, tbl_of(seg, node.off), missing)
                tbl_insert_many(seg, node.off, keys, cells, n)
            else:
                tbl_update_fresh(seg, node.off, keys, cells, n)
        except BaseException:
            plan.rollback()
            raise
    finally:
        scratch_give(SCR_PAIRS, cells, got)
    return 0


cdef int dict_update_few(DictNode node, Plan plan, const int64_t *roots, const Key *keys, int64_t n) except -1:
    """A few pairs (lock held, plan materialized): room for the new keys,
    then each pair overwritten or inserted."""
    cdef Segment seg = node.seg
    cdef int64_t i, ix, missing = count_missing(seg, node.off, keys, n)
    cdef Cell pair[2]
    cdef uint64_t t = tbl_of(seg, node.off)
    try:
        if missing:
            t = tbl_reserve(seg, node.off, t, missing)
    except BaseException:
        plan.rollback()
        raise
    for i in range(n):
        ix = dict_find(seg, node.off, &keys[i])
        if ix >= 0:
            pair[0] = plan.cell(roots[i])[0]
            pair[1] = plan.cell(roots[i] + 1)[0]
            tbl_set_pair(seg, node.off, ix, pair)
        else:
            tbl_insert(seg, node.off, t, &keys[i], plan.cell(roots[i]), plan.cell(roots[i] + 1))
    return 0
