# Dict tables: create, fill, grow, insert, overwrite, remove, clear
# (included by _heap.pyx at module level).
#
# A DICT block's payload is a DictBody, a TABLE block's a TableHdr, then
# an index of 3- or 4-byte slots, then Entry entries[capacity] (heap/layout.pxd). The
# readers (table_view, table_lookup) are inline in _heap.pxd and heap/access.pxd.


cdef void tbl_rebuild_index(Segment seg, uint64_t t) noexcept nogil:
    """Place every live entry of table t in a cleared index. A table that
    does not check out is left alone: the repair's walk then finds it."""
    cdef Block *b
    cdef TableHdr *th
    cdef uint64_t size, nslots, nentries, i
    cdef Entry *ents
    if not seg_inb(seg, t, MIN_BLOCK) or (t & (ALIGN - 1)):
        return
    b = <Block *>(seg.base + t)
    size = <uint64_t>b.size16 * ALIGN
    if blk_kind(b) != K_TABLE or size < BLOCK_HDR + sizeof(TableHdr) or size > seg.lim - t:
        return
    th = table_hdr(seg.base, t)
    nslots = th.nslots
    nentries = th.nentries
    size -= BLOCK_HDR
    # (the block holds the entries below nentries, and one at least: the
    # capacity itself is not needed for the rebuild)
    if not table_sizes_ok(nslots, nentries if nentries else 1, nentries, size) or nentries > th.capacity:
        return
    memset(table_index(seg.base, t), 0xff, index_bytes(nslots))
    ents = table_entries(seg.base, t)
    for i in range(nentries):
        if ents[i].key.b[0] != T_EMPTY:
            tbl_place(seg, t, entry_hash(seg, &ents[i]), <int32_t>i)


cdef uint64_t tbl_of(Segment seg, uint64_t d) except? 0:
    """The table block of dict block `d` (already checked by view_block), or 0."""
    cdef TableView tv
    table_view(seg, d, &tv)
    return tv.off


cdef uint64_t tbl_new(Segment seg, uint64_t n, uint64_t index_for, int *why) noexcept nogil:
    """A table block with room for n entries (at least 1), its index sized
    for index_for entries if more, empty; 0 if no room (*why: see
    blk_alloc)."""
    cdef uint64_t capacity = n if n > 1 else 1
    cdef uint64_t nslots = table_slots(capacity if capacity > index_for else index_for), t
    t = blk_alloc(seg, table_payload(nslots, capacity), K_TABLE, why)
    if t == 0:
        return 0
    table_init(seg.base, t, nslots, capacity)
    (<Block *>(seg.base + t)).kind_rc = K_TABLE | RC_ONE
    return t


cdef inline void tbl_slot_store(Segment seg, uint8_t *index, uint64_t w, uint64_t i, int32_t v) noexcept:
    """Set slot i of an index of w-byte slots to v, journaled. The journal
    records aligned 8-byte words (the index starts aligned): a 4-byte slot
    lies in one; a 3-byte slot may cross into the next, and that next word
    is always recorded too (past the last slot it is the index's padding or
    the first entry, unchanged), so that a store takes the same steps
    whatever the slot: the crash tests count them."""
    cdef uint64_t at = w * i, a = at & ~(<uint64_t>7)
    cdef uint64_t words[2]
    memcpy(words, index + a, 16)
    memcpy((<uint8_t *>words) + (at - a), &v, w)
    jr_store(seg, <uint64_t *>(index + a), words[0])
    if w == 3:
        jr_store(seg, <uint64_t *>(index + a + 8), words[1])


cdef void tbl_place(Segment seg, uint64_t t, uint64_t hash, int32_t ix) noexcept nogil:
    """Put entry ix into the first free slot of its probe sequence."""
    cdef uint8_t *index = table_index(seg.base, t)
    cdef uint64_t nslots = table_hdr(seg.base, t).nslots, w = index_width(nslots)
    cdef Probe pr
    probe_start(&pr, hash, nslots)
    while ix_get(index, w, pr.i) >= 0 and probe_next(&pr):
        pass
    ix_set(index, w, pr.i, ix)


cdef int tbl_fill(Segment seg, uint64_t t, const uint64_t *hashes, const Cell *cells, uint64_t n) except -1:
    """Append n fresh entries (hash, key, value pairs of cells) to a new table."""
    cdef TableHdr *th = table_hdr(seg.base, t)
    cdef Entry *ents = table_entries(seg.base, t)
    cdef uint64_t i, base_ix = th.nentries
    for i in range(n):
        ents[base_ix + i].key = cells[2 * i]
        ents[base_ix + i].value = cells[2 * i + 1]
        entry_stamp(&ents[base_ix + i], hashes[i])
        tbl_place(seg, t, hashes[i], <int32_t>(base_ix + i))
    th.nentries = base_ix + n
    th.count = th.count + n
    return 0


cdef inline uint64_t tbl_grown_in_place(uint64_t count, uint64_t n) noexcept nogil:
    """The capacity a table of count entries grows to in place for n more."""
    return count + (count // 32 if count >= 256 else 8) + n


cdef uint64_t tbl_reserve(Segment seg, uint64_t d, uint64_t t, uint64_t n) except 0:
    """Make room for n more entries in dict d, whose table is t (as a view
    checked in this write found it; 0: none): grow it in place, or build a
    bigger table and publish it with one journaled store. Returns the table
    that has the room; on failure nothing changed."""
    cdef uint64_t nt, count = 0, cap, grow
    cdef TableHdr *th = NULL
    cdef int why
    if t:
        th = table_hdr(seg.base, t)
        if th.nentries + n <= th.capacity:
            return t
        # in place first, from the header's count (the view checked it is
        # at most nentries; any such count sizes a growth safely): a growth
        # that copies nothing can be small, by 1/32 (8 entries at least), so
        # that little room stays reserved and unused (steps of 1.25 left up
        # to a quarter), and it reads no entry. The block grows over free
        # space above it and only the capacity changes (journaled): no page
        # is handed back only to be backed again.
        count = th.count
        grow = tbl_grown_in_place(count, n)
        if count == th.nentries and table_slots(grow) <= th.nslots and blk_extend(seg, t, table_payload(th.nslots, grow)):
            crash_point()
            jr_store(seg, &th.capacity, grow)
            return t
        count = tbl_live_count(seg, t)      # a copy is sized from it: verified
    # a copy grows by 1.25, and to at least 5 entries: a dict grown one key
    # at a time must not rebuild its table on each of its first inserts
    cap = max(count + count // 4 + n, <uint64_t>5)
    if t and count == th.nentries and table_slots(tbl_grown_in_place(count, n)) > th.nslots and blk_room_above(seg, t):
        # only the index is full: the new table is made where this one had
        # room to grow (above it), and grows in place from there by 1/32 too
        cap = tbl_grown_in_place(count, n)
    # a batch that adds an eighth of the dict or more (update() in chunks)
    # gets an index with room for half as much again: 3 bytes a slot, so that
    # the next batches grow the entries in place instead of copying them
    nt = tbl_new(seg, cap, cap + cap // 2 if t and n > count // 8 else 0, &why)
    if nt == 0:
        blk_raise_full(seg, sizeof(TableHdr) + ENTRY_SIZE * (count + n), why)
    crash_point()
    if t:
        tbl_copy_live(seg, t, nt)
    jr_store(seg, &dict_body(seg.base, d).table, nt)
    tbl_bump_version(seg, d)
    if t:
        wr_defer_free(seg, t)          # its entries moved to the new table
    return nt


cdef void tbl_copy_live(Segment seg, uint64_t t, uint64_t nt) noexcept nogil:
    """Copy the live entries of table t, in order, into the fresh table nt
    (not yet published: plain stores) and place them in its index."""
    cdef TableHdr *th = table_hdr(seg.base, t)
    cdef TableHdr *nh = table_hdr(seg.base, nt)
    cdef Entry *old = table_entries(seg.base, t)
    cdef Entry *new = table_entries(seg.base, nt)
    cdef uint8_t *index = table_index(seg.base, nt)
    cdef uint64_t i, j = 0, n = th.nentries, mask = nh.nslots - 1, h, w = index_width(nh.nslots)
    cdef uint64_t ahead[16]        # the hashes of entries i .. i + 15
    for i in range(16 if n > 16 else n):
        ahead[i] = entry_hash(seg, &old[i]) if old[i].key.b[0] != T_EMPTY else 0
    for i in range(n):
        h = ahead[i & 15]
        if i + 16 < n:
            # the new index is written in hash order: prefetched 16 entries
            # ahead, its misses overlap
            ahead[i & 15] = entry_hash(seg, &old[i + 16]) if old[i + 16].key.b[0] != T_EMPTY else 0
            ds_prefetch(index + w * (ahead[i & 15] & mask), 4)
        if old[i].key.b[0] != T_EMPTY:
            new[j] = old[i]
            tbl_place(seg, nt, h, <int32_t>j)
            j += 1
    nh.nentries = j
    nh.count = j


cdef void tbl_bump_version(Segment seg, uint64_t c) noexcept:
    """Bump the version of container c (DictBody or ListBody), journaled."""
    cdef uint64_t *v = container_version(blk_payload(seg.base, c), blk_kind(<Block *>(seg.base + c)) == K_LIST)
    jr_store(seg, v, v[0] + 1)
    nt_container(seg, c)


cdef int tbl_insert(Segment seg, uint64_t d, uint64_t t, const Key *k, const Cell *key,
                    const Cell *value) except -1:
    """Add a new entry to dict d's table t (the key must be absent; room
    reserved: t is what tbl_reserve returned). The entry is written past
    the live ones first; the index slot and the counts that make it
    visible are journaled."""
    cdef TableHdr *th = table_hdr(seg.base, t)
    cdef uint64_t ix = th.nentries
    cdef uint64_t nslots = th.nslots
    cdef uint8_t *index = table_index(seg.base, t)
    cdef uint64_t w = index_width(nslots)
    cdef Entry *e = table_entries(seg.base, t) + ix
    cdef Probe pr
    e.value = value[0]
    e.key = key[0]
    entry_stamp(e, k.hash)
    crash_point()
    probe_start(&pr, k.hash, nslots)
    while ix_get(index, w, pr.i) >= 0:
        if not probe_next(&pr):
            raise CorruptSegmentError("dict table at %d of segment %r has no free slot" % (t, seg.name))
    tbl_slot_store(seg, index, w, pr.i, <int32_t>ix)
    jr_store(seg, &th.nentries, ix + 1)
    jr_store(seg, &th.count, th.count + 1)
    tbl_bump_version(seg, d)
    nt_key(seg, d, k.hash)
    return 0


cdef int tbl_update_fresh(Segment seg, uint64_t d, const Key *keys, const Cell *cells, uint64_t n) except -1:
    """Store n (key, value) pairs (cells 2i, 2i+1) by building a new table
    with the old entries and the new pairs, then publishing it with one
    journaled store: however many pairs, the journal stays small. On
    failure nothing changed."""
    cdef uint64_t t = tbl_of(seg, d), nt, count = 0, i
    cdef Entry *ents
    cdef int64_t ix
    cdef int why
    if t:
        count = tbl_live_count(seg, t)
    nt = tbl_new(seg, count + n, 0, &why)
    if nt == 0:
        blk_raise_full(seg, sizeof(TableHdr) + ENTRY_SIZE * (count + n), why)
    crash_point()
    ents = table_entries(seg.base, nt)
    if t:
        tbl_copy_live(seg, t, nt)
    for i in range(n):
        ix = table_find(seg, nt, &keys[i])
        if ix >= 0:
            tbl_entry_set(seg, &ents[ix], &cells[2 * i], False)
        else:
            tbl_fill(seg, nt, &keys[i].hash, &cells[2 * i], 1)
    jr_store(seg, &dict_body(seg.base, d).table, nt)
    tbl_bump_version(seg, d)
    _nt_keys(seg, d, keys, n)
    if t:
        wr_defer_free(seg, t)
    return 0


cdef uint64_t tbl_live_count(Segment seg, uint64_t t) except? 0:
    """The count of table t (checked by tbl_of), once it is shown to
    match its live entries: a new table is sized from it and then gets
    every live entry copied in."""
    cdef TableHdr *th = table_hdr(seg.base, t)
    cdef Entry *ents = table_entries(seg.base, t)
    cdef uint64_t i, live = 0, count = th.count
    for i in range(th.nentries):
        if ents[i].key.b[0] != T_EMPTY:
            live += 1
    if live != count:
        raise CorruptSegmentError("dict table at %d of segment %r counts %d entries, holds %d"
                                  % (t, seg.name, count, live))
    return count


cdef int tbl_insert_many(Segment seg, uint64_t d, const Key *keys, const Cell *cells, uint64_t n) except -1:
    """Store n (key, value) pairs (cells 2i, 2i+1) in the dict's table in
    place: the caller reserved room for the new keys, and at most
    MANY_OVERWRITES of the keys are in the dict already (each overwrite
    is journaled). New entries and their index slots are not journaled
    one by one: one jr_rebuild record and the journaled counts undo them
    all, so a batch costs O(n), not a new table."""
    cdef uint64_t t = tbl_of(seg, d), i, orig
    cdef TableHdr *th = table_hdr(seg.base, t)
    cdef uint8_t *index = table_index(seg.base, t)
    cdef uint64_t w = index_width(th.nslots)
    cdef Entry *ents = table_entries(seg.base, t)
    cdef int64_t ix
    orig = th.nentries
    jr_rebuild(seg, t)
    jr_store(seg, &th.nentries, orig)
    jr_store(seg, &th.count, th.count)
    for i in range(n):
        if i + 16 < n:
            # the misses of successive keys overlap (see _codec.prefetch_lookup)
            ds_prefetch(index + w * (keys[i + 16].hash & (th.nslots - 1)), 4)
        ix = table_find(seg, t, &keys[i])
        if ix >= 0:
            # a key already there is journaled; one added by this batch is not
            tbl_entry_set(seg, &ents[ix], &cells[2 * i], <uint64_t>ix < orig)
        else:
            if th.nentries >= th.capacity:
                raise CorruptSegmentError("dict table at %d of segment %r is full" % (t, seg.name))
            tbl_fill(seg, t, &keys[i].hash, &cells[2 * i], 1)
        crash_point()
    tbl_bump_version(seg, d)
    _nt_keys(seg, d, keys, n)
    return 0


cdef int tbl_set_pair(Segment seg, uint64_t d, int64_t ix, const Cell *pair) except -1:
    """Give entry ix (whose key equals pair's) the value of pair (a key
    cell and a value cell, or a packed area); the old value is released
    on commit, and the key already there stays."""
    cdef Entry *e = dict_entry(seg, d, ix)
    tbl_entry_set(seg, e, pair, True)
    nt_key(seg, d, entry_hash(seg, e))
    return 0


cdef void tbl_entry_set(Segment seg, Entry *e, const Cell *pair, bint journal) noexcept:
    """Give entry e the value of pair (a key cell and a value cell, or a
    packed area); the key there stays, with the hash the entry keeps
    (entry_stamp: a packed pair keeps it among the value's bytes)."""
    cdef Entry ne
    cdef Cell old = e.value
    cdef uint64_t h = entry_hash(seg, e)
    cdef uint8_t ln
    if e.key.b[0] != T_PACKED:
        wr_defer_release(seg, &old)
    if pair[0].b[0] == T_PACKED:
        # the new pair is packed: the key is a short str like the one there
        ne.key = pair[0]
    else:
        wr_defer_release(seg, &pair[0])
        if e.key.b[0] == T_PACKED:
            # unpack: the key (at most 14 bytes) becomes an inline key cell
            ln = e.key.b[1] & 0x7f
            memset(&ne.key, 0, CELL_SIZE)
            ne.key.b[0] = T_SSTR
            ne.key.b[1] = e.key.b[1]
            memcpy(&ne.key.b[2], &e.key.b[4], ln if ln <= INLINE_MAX else INLINE_MAX)
        else:
            ne.key = e.key
    ne.value = pair[1]
    entry_stamp(&ne, h)
    if not journal:
        e[0] = ne
        return
    if memcmp(&ne.key, &e.key, CELL_SIZE) != 0:
        jr_store_cell(seg, &e.key, &ne.key)
    jr_store_cell(seg, &e.value, &ne.value)


cdef int tbl_remove(Segment seg, uint64_t d, int64_t ix) except -1:
    """Remove entry ix; its key and value are released on commit."""
    cdef uint64_t t = tbl_of(seg, d)
    cdef TableHdr *th = table_hdr(seg.base, t)
    cdef uint8_t *index = table_index(seg.base, t)
    cdef uint64_t w = index_width(th.nslots)
    cdef Entry *e = table_entries(seg.base, t) + ix
    cdef Probe pr
    cdef Cell key = e.key, value = e.value, empty
    cdef uint64_t h = entry_hash(seg, e)
    memset(&empty, 0, CELL_SIZE)
    if th.count == 1:
        # the last one: drop the whole table, so used bytes return to the baseline
        jr_store(seg, &dict_body(seg.base, d).table, 0)
        tbl_bump_version(seg, d)
        nt_key(seg, d, h)
        wr_defer_release_block(seg, t)
        return 0
    probe_start(&pr, h, th.nslots)
    while ix_get(index, w, pr.i) != ix and probe_next(&pr):
        pass
    if ix_get(index, w, pr.i) == ix:
        tbl_slot_store(seg, index, w, pr.i, IX_DUMMY)
    jr_store_cell(seg, &e.key, &empty)
    jr_store_cell(seg, &e.value, &empty)
    if key.b[0] == T_PACKED:
        memset(&key, 0, CELL_SIZE)   # nothing to release
        memset(&value, 0, CELL_SIZE)
    # the position is not reused: nentries only grows, so a table full of
    # deleted slots reaches its capacity and is rebuilt clean
    jr_store(seg, &th.count, th.count - 1)
    tbl_bump_version(seg, d)
    nt_key(seg, d, h)
    wr_defer_release(seg, &key)
    wr_defer_release(seg, &value)
    return 0


cdef int tbl_clear(Segment seg, uint64_t d) except -1:
    cdef uint64_t t = tbl_of(seg, d)
    if t == 0:
        return 0
    jr_store(seg, &dict_body(seg.base, d).table, 0)
    tbl_bump_version(seg, d)
    nt_all(seg)                    # every key's waiters
    wr_defer_release_block(seg, t)     # the table, and through it every entry
    return 0
