# The operations of _heap on a segment, as functions taking the Segment
# (declared here for _codec; defined in heap/<topic>.pxi). Included by
# _heap.pxd after the Segment type.


# -- inline: the read limit, the bounds check, the start of a publication

cdef inline void seg_read_limit(Segment seg) noexcept nogil:
    """Bound every offset and length by the live heap: its top, no higher
    than the bytes backed (reserved) and the capacity. So one read never
    allocates more than the heap holds and never touches an unbacked page.
    Taken where the top may have moved: at each read section's start
    (seq_begin), at each lock acquisition, and when alloc raises the top.
    A top lowered during a read section is a published write: the read
    that fails this bound retries, as for any other stale bytes."""
    cdef uint64_t t = ds_load_relaxed(&seg.hdr.top)
    cdef uint64_t r = ds_load_relaxed(&seg.hdr.reserved)
    if t > r:
        t = r
    if t > seg.cap:
        t = seg.cap
    if t < HEADER_SIZE:
        t = HEADER_SIZE
    seg.lim = t

cdef inline bint seg_inb(Segment seg, uint64_t off, uint64_t n) noexcept nogil:
    return off >= HEADER_SIZE and n <= seg.lim and off <= seg.lim - n

cdef inline void wr_publish(Segment seg) noexcept nogil:
    """About to change memory that readers can reach: make the write
    sequence odd (once per write). Everything a write does before this,
    under the lock (lookups, allocations, filling new blocks), leaves the
    reachable state as it was, so lock-free readers are not restarted for
    it. jr_store and jr_rebuild call this; every other store of a write goes
    to a block that nothing reachable refers to (yet, or any more: frees
    change a block's generation first, and a read through a view checks
    it again at its end, see view_gen_ok)."""
    if not seg.odd:
        seg.odd = True
        seg.hdr.seq += 1
        ds_fence_release()

# -- heap/segment.pxi
cdef seg_map(Segment seg, uint64_t cap)
cdef seg_init_header(Segment seg, uint64_t reserved)
cdef seg_check_header(Segment seg, uint64_t size)
cdef int seg_reserve(Segment seg, uint64_t upto) noexcept nogil
cdef int seg_back(int fd, uint64_t off, uint64_t n) noexcept nogil
cdef seg_unmap_close(Segment seg)
cdef seg_own_file_description(Segment seg)
cdef void seg_shrink_reserve(Segment seg) noexcept nogil
cdef int seg_check_mutex(Segment seg) except -1
cdef char *seg_ptr(Segment seg, uint64_t off, uint64_t n) except NULL
cdef Block *seg_bad_block(Segment seg, uint64_t off, int kind) except NULL
cdef Block *seg_bad_view(Segment seg, uint64_t off, uint32_t gen, int kind) except NULL
cdef int seg_check_open(Segment seg) except -1
cdef int seg_raise_faulted(Segment seg) except -1
cdef int seg_raise_corrupt(Segment seg, str msg) except -1

# -- heap/lock.pxi
cdef int lock_faulted(Segment seg, int rc) except -1
cdef void lock_release_raw(Segment seg) noexcept
cdef int lock_acquire(Segment seg, double timeout) except -1
cdef int lock_release(Segment seg) except -1
cdef bint lock_held(Segment seg)

# -- heap/repair.pxi
cdef rep_after_death(Segment seg)
cdef int rep_rebuild_allocator(Segment seg) except -1
cdef void rep_close_run(Segment seg, uint64_t run, uint64_t run16) noexcept nogil

# -- heap/journal.pxi
cdef void jr_undo(Segment seg) noexcept nogil
cdef void jr_store(Segment seg, void *p, uint64_t v) noexcept
cdef void jr_store_cell(Segment seg, Cell *dst, const Cell *src) noexcept
cdef void jr_rebuild(Segment seg, uint64_t t) noexcept
cdef JournalHdr *jr_block(Segment seg, uint64_t b) noexcept nogil
cdef JRec *jr_slot(Segment seg, uint64_t n) noexcept nogil
cdef void jr_undo_to(Segment seg, uint64_t mark) noexcept nogil
cdef void jr_rec_alloc(Segment seg, uint64_t off) noexcept nogil
cdef void jr_rec_incref(Segment seg, uint64_t off) noexcept nogil

# -- heap/write.pxi
cdef bint wr_header_sane(Segment seg) noexcept nogil
cdef void wr_settle(Segment seg) noexcept nogil
cdef int wr_begin(Segment seg) except -1
cdef int wr_commit(Segment seg) except -1
cdef void wr_end(Segment seg) noexcept
cdef void wr_defer_free(Segment seg, uint64_t off) noexcept
cdef int wr_reserve(Segment seg, uint64_t nfree, uint64_t nrel, uint64_t nalloc, uint64_t nincref) except -1
cdef void wr_defer_release(Segment seg, const Cell *c) noexcept
cdef void wr_defer_release_block(Segment seg, uint64_t off) noexcept
cdef void wr_run_deferred(Segment seg) noexcept
cdef void wr_end_publication(Segment seg) noexcept nogil
cdef void wr_debug_commit(Segment seg) noexcept nogil
cdef void wr_debug_check(Segment seg) noexcept
cdef int wr_op_begin_in_block(Segment seg) except -1
cdef void wr_op_failed_in_block(Segment seg) noexcept

# -- heap/alloc.pxi
cdef bint blk_free_link_ok(Segment seg, uint64_t off) noexcept nogil
cdef void blk_heap_corrupt(Segment seg) noexcept nogil
cdef bint blk_room_above(Segment seg, uint64_t off) noexcept nogil
cdef bint blk_tiles_ok(Segment seg, uint64_t off) noexcept nogil
cdef int blk_bin(Segment seg, uint64_t size16) noexcept nogil
cdef void blk_bin_push(Segment seg, uint64_t off, uint64_t size16) noexcept nogil
cdef void blk_bin_remove(Segment seg, uint64_t off, uint64_t size16) noexcept nogil
cdef void blk_set_prev16(Segment seg, uint64_t off, uint64_t prev16) noexcept nogil
cdef enum:
    ALLOC_NO_ROOM = 12          # blk_alloc's *why when the segment has no room (ENOMEM)
cdef uint64_t blk_alloc(Segment seg, uint64_t payload, int kind, int *why) noexcept nogil
cdef void blk_free(Segment seg, uint64_t off) noexcept nogil
cdef bint blk_extend(Segment seg, uint64_t off, uint64_t payload) noexcept nogil
cdef int blk_raise_full(Segment seg, uint64_t want, int why) except -1

# -- heap/refs.pxi
cdef bint blk_decref_one(Segment seg, uint64_t off) noexcept nogil
cdef uint64_t blk_push_children(Segment seg, uint64_t off, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept
cdef void blk_push_cell(Segment seg, const Cell *c, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept
cdef void blk_push(Segment seg, uint64_t off, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept
cdef void blk_incref(Segment seg, uint64_t off) noexcept nogil
cdef void blk_decref_cell(Segment seg, const Cell *c) noexcept
cdef void blk_release(Segment seg, uint64_t off) noexcept

# -- heap/table.pxi
cdef void tbl_place(Segment seg, uint64_t t, uint64_t hash, int32_t ix) noexcept nogil
cdef void tbl_bump_version(Segment seg, uint64_t c) noexcept
cdef uint64_t tbl_of(Segment seg, uint64_t d) except? 0
cdef int tbl_update_fresh(Segment seg, uint64_t d, const Key *keys, const Cell *cells, uint64_t n) except -1
cdef uint64_t tbl_live_count(Segment seg, uint64_t t) except? 0
cdef int tbl_insert_many(Segment seg, uint64_t d, const Key *keys, const Cell *cells, uint64_t n) except -1
cdef void tbl_rebuild_index(Segment seg, uint64_t t) noexcept nogil
cdef uint64_t tbl_reserve(Segment seg, uint64_t d, uint64_t t, uint64_t n) except 0
cdef int tbl_fill(Segment seg, uint64_t t, const uint64_t *hashes, const Cell *cells, uint64_t n) except -1
cdef void tbl_copy_live(Segment seg, uint64_t t, uint64_t nt) noexcept nogil
cdef uint64_t tbl_new(Segment seg, uint64_t n, uint64_t index_for, int *why) noexcept nogil
cdef int tbl_insert(Segment seg, uint64_t d, uint64_t t, const Key *k, const Cell *key, const Cell *value) except -1
cdef int tbl_set_pair(Segment seg, uint64_t d, int64_t ix, const Cell *pair) except -1
cdef void tbl_entry_set(Segment seg, Entry *e, const Cell *pair, bint journal) noexcept
cdef int tbl_remove(Segment seg, uint64_t d, int64_t i) except -1
cdef int tbl_clear(Segment seg, uint64_t d) except -1

# -- heap/items.pxi
cdef int lst_splice(Segment seg, uint64_t l, uint64_t start, uint64_t ndel, const Cell *cells, uint64_t nins) except -1
cdef int lst_rebuild(Segment seg, uint64_t l, const Cell *cells, uint64_t n, const Cell *removed, uint64_t nremoved) except -1
cdef void lst_append_in_place(Segment seg, uint64_t l, Cell *items, uint64_t length,
                              const Cell *cells, uint64_t nins) noexcept
cdef void lst_truncate(Segment seg, uint64_t l, Cell *items, uint64_t start, uint64_t ndel,
                       uint64_t cap) noexcept
cdef uint64_t lst_items_block(Segment seg, uint64_t newcap, int *why) noexcept nogil
cdef Cell *lst_new_items(Segment seg, uint64_t n, bint grow, uint64_t *nit) except NULL
cdef void lst_publish_items(Segment seg, uint64_t l, uint64_t nit, uint64_t n) noexcept

# -- heap/collect.pxi
cdef bint gc_valid_ref(Segment seg, uint64_t off) noexcept nogil
cdef int gc_tiling(Segment seg, list out) except -1
cdef uint64_t gc_mark(Segment seg, list blocks) except? 0
cdef uint64_t gc_collect(Segment seg) except? 0

# -- heap/check.pxi
cdef chk_check(Segment seg, list problems, list garbage, list probes)
cdef list chk_children(Segment seg, uint64_t off, list problems, list probes=*)
cdef chk_cells(Segment seg, Cell *cells, uint64_t n, uint64_t owner, list problems, list out)

# -- heap/stats.pxi
cdef int64_t st_probe_length(Segment seg, uint8_t *index, uint64_t nslots, uint64_t hash, uint64_t slot) noexcept
cdef st_probe_stats(Segment seg)
