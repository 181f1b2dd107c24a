# The write section: write_begin, publish, commit, deferred frees and
# releases, write_end (included by _heap.pyx at module level).

cdef enum:
    WR_HEADROOM = 32    # deferred-free and release records reserved when a write begins


cdef int wr_begin(Segment seg) except -1:
    """Open a write: lock (reentrant), GC off. The sequence turns odd at
    the write's first change to reachable memory (publish). Every write
    ends with commit() on success, then write_end() in a finally."""
    lock_acquire(seg, -1)
    sane = wr_header_sane(seg)
    if ds_fault_flag(&seg.faulted):
        wr_end(seg)
        seg_raise_faulted(seg)
    if not sane:
        seg.hdr.flags |= FLAG_POISONED
    if seg.hdr.flags & FLAG_POISONED:
        wr_end(seg)
        raise CorruptSegmentError("segment %r was marked corrupt by a failed repair" % seg.name)
    if seg.wdepth == 0:
        if seg.lk.bdepth:
            return wr_op_begin_in_block(seg)
        seg.wdepth = 1
        seg._gc_was = gc_off()
        seg.committed = False
        wr_settle(seg)
        seg.odd = False
        seg.recfail = False
        if seg.capfree < WR_HEADROOM or seg.caprel < WR_HEADROOM:
            try:
                wr_reserve(seg, WR_HEADROOM, WR_HEADROOM, 0, 0)
            except BaseException:
                wr_end(seg)
                raise
        crash_point()
        return 0
    seg.wdepth += 1
    return 0


cdef int wr_op_begin_in_block(Segment seg) except -1:
    """wr_begin of an operation inside a transaction() or lock()
    block: its savepoint (where an exception in it rolls back to), and
    room in the journal for all its records (a journal block allocated
    now, before the operation changes anything: SegmentFullError here
    leaves the operation undone)."""
    cdef Header *h = seg.hdr
    cdef uint64_t want, off
    cdef JournalHdr *jb
    cdef int why
    cdef Segment owner = <Segment>seg.lk.bseg
    if owner is None or owner.hdr == NULL:
        wr_end(seg)
        raise RuntimeError("segment %r: the handle that opened this thread's block is closed" % seg.name)
    if owner is not seg:
        # another handle of the segment, inside the block: it records
        # for the operation, then hands its records to the block's handle
        seg.txrec = True
        seg.nfree = seg.nrel = seg.ntxa = seg.ntxi = 0
    try:
        wr_reserve(seg, WR_HEADROOM, WR_HEADROOM, WR_HEADROOM, WR_HEADROOM)
    except BaseException:
        wr_end(seg)
        raise
    if h.jcount + JOURNAL_MAX > owner.jcap:
        want = owner.jcap if owner.jcap > JBLOCK_MIN else JBLOCK_MIN
        off = blk_alloc(seg, sizeof(JournalHdr) + sizeof(JRec) * want, K_JOURNAL, &why)
        if off == 0:
            try:
                blk_raise_full(seg, sizeof(JournalHdr) + sizeof(JRec) * want, why)
            finally:
                wr_end(seg)
        if seg.txrec:
            seg.ntxa -= 1      # not the block's data: freed when the block ends
        jb = journal_hdr(seg.base, off)
        jb.next = h.jblocks
        jb.first = owner.jcap
        jb.capacity = want
        (<Block *>(seg.base + off)).kind_rc = K_JOURNAL | RC_ONE
        ds_fence_release()
        h.jblocks = off
        owner.jcap += want
    seg.wdepth = 1
    seg._gc_was = gc_off()
    seg.committed = False
    seg.jmark = h.jcount
    seg.fmark = seg.nfree
    seg.rmark = seg.nrel
    seg.amark = seg.ntxa
    seg.imark = seg.ntxi
    seg.odd = False
    crash_point()
    return 0


cdef void wr_settle(Segment seg) noexcept nogil:
    """With the lock held, no write open and no transaction() or lock()
    block open in this thread (callers check), there is no write in flight:
    a journal or an odd sequence left in the header (a repair that was
    skipped, or bad bytes) is stale. Drop the journal, so that the new
    write has all of it, and even the sequence, so that readers do not
    wait for a write that will never end."""
    cdef Header *h = seg.hdr
    if h.jcount != 0:
        h.jcount = 0
    if h.jblocks != 0:
        h.jblocks = 0           # garbage for collect()
    if h.seq & 1:
        h.seq += 1


cdef bint wr_header_sane(Segment seg) noexcept nogil:
    cdef Header *h = seg.hdr
    return (HEADER_SIZE <= h.top <= seg.cap and (h.top & (ALIGN - 1)) == 0
            and h.reserved <= seg.cap and h.top <= h.reserved and h.tail16 * ALIGN <= h.top - HEADER_SIZE
            and h.root >= HEADER_SIZE and h.root <= h.top - MIN_BLOCK
            and h.names >= HEADER_SIZE and h.names <= h.top - MIN_BLOCK
            and (h.jcount <= JOURNAL_MAX or (h.jblocks != 0 and h.jcount <= seg.cap // 16)))


cdef int wr_commit(Segment seg) except -1:
    """The write is complete: drop its journal, then release what it left
    unreachable. A crash from here on keeps the write. A write that found
    the allocator corrupt is not committed (write_end undoes it)."""
    if ds_fault_flag(&seg.faulted):
        seg_raise_faulted(seg)        # the write met a fault: it is not committed
    if seg.wdepth != 1:
        return 0
    wr_check_records(seg)
    if seg.hdr.flags & FLAG_POISONED:
        raise CorruptSegmentError("segment %r is corrupt: its allocator holds bytes that "
                                  "cannot be trusted" % seg.name)
    if seg.lk.bdepth and not _hook_no_rollback:
        # inside a transaction() or lock() block: the journal and what
        # is to be freed wait for the block's end (txn_commit)
        if seg.lk.bseg is not seg:
            # room in the block's handle for this handle's records
            wr_reserve(<Segment>seg.lk.bseg, seg.nfree, seg.nrel, seg.ntxa, seg.ntxi)
        seg.committed = True
        wr_end_publication(seg)
        if seg.lk.bseg is not seg:
            txn_hand_over(seg)
        return 0
    ds_fence_release()
    crash_point()
    seg.hdr.jcount = 0
    ds_fence_release()
    crash_point()
    seg.committed = True
    # what is left is freeing blocks that nothing reachable refers to:
    # lock-free readers go on meanwhile (free, view_gen_ok)
    wr_end_publication(seg)
    wr_run_deferred(seg)
    if DSHARED_DEBUG >= 1:
        wr_debug_commit(seg)
    if DSHARED_DEBUG >= 2:
        seg.debug_check_due = True
    return 0


cdef void wr_debug_commit(Segment seg) noexcept nogil:
    """DSHARED_DEBUG >= 1: the header and counter invariants after a
    commit; a broken one is fatal (include/debug.h)."""
    cdef Header *h = seg.hdr
    DS_ASSERT(h.jcount == 0, "the journal is empty after a commit")
    DS_ASSERT((h.seq & 1) == 0, "the write sequence is even after a commit")
    DS_ASSERT(h.top >= HEADER_SIZE and h.top <= seg.cap and h.top <= h.reserved,
              "the top of the heap lies in the backed capacity")
    DS_ASSERT((h.top & (ALIGN - 1)) == 0, "the top of the heap is aligned")
    DS_ASSERT(h.used <= h.top - HEADER_SIZE, "the bytes in use lie below the top")
    DS_ASSERT(h.nblocks * MIN_BLOCK <= h.used, "every live block counted in used holds MIN_BLOCK bytes")
    DS_ASSERT(h.tail16 * ALIGN <= h.top - HEADER_SIZE, "the block below the top lies in the heap")
    DS_ASSERT(h.root >= HEADER_SIZE and h.root < h.top and h.names >= HEADER_SIZE and h.names < h.top,
              "the root and names dicts lie in the heap")
    DS_ASSERT((h.flags & FLAG_POISONED) == 0, "a committed write leaves the segment unpoisoned")
    DS_ASSERT(seg.nfree == 0 and seg.nrel == 0, "the deferred frees ran")


cdef void wr_debug_check(Segment seg) noexcept:
    """DSHARED_DEBUG >= 2: the full check() after a write (the lock
    released: check takes it again); a problem is fatal."""
    cdef bytes text
    seg.debug_check_due = False
    try:
        report = seg.check()
        if report.ok:
            return
        text = ("; ".join(report.problems)[:4000]).encode("utf-8", "replace")
    except BaseException as e:         # the check itself failed: say so
        text = ("check() raised %r" % (e,)).encode("utf-8", "replace")
    ds_debug_fail("check() after a write", text, "_heap.pyx", 0)


cdef void wr_end(Segment seg) noexcept:
    """Close a write; one that did not commit is undone through its journal."""
    if seg.wdepth == 1:
        if not seg.committed or (seg.hdr.flags & FLAG_POISONED):
            if seg.lk.bdepth:
                wr_op_failed_in_block(seg)
                if seg.lk.bseg is not seg:
                    txn_hand_over(seg)
            else:
                jr_undo(seg)
                seg.nfree = 0
                seg.nrel = 0
                seg.recfail = False
        wr_end_publication(seg)
        nt_bump(seg)               # change notifications (_notify.pxi)
        gc_restore(seg._gc_was)
    if seg.wdepth > 0:
        seg.wdepth -= 1
    seg.lk.depth -= 1
    if seg.lk.depth == 0:
        seg.lk.owner = 0
        if not _hook_no_lock and not (ds_fault_flag(&seg.faulted) & DS_FAULTED_HEADER):
            ds_mutex_unlock(&seg.hdr.mutex)
        _after_unlock(seg)
        if DSHARED_DEBUG >= 2 and seg.debug_check_due and seg.base != NULL:
            wr_debug_check(seg)


cdef bint wr_grow(uint64_t **arr, uint64_t *cap, uint64_t need, size_t width) noexcept nogil:
    """Grow the process-memory array *arr (width words a record) to hold
    at least `need` records; False if realloc fails (the array and its
    records stay as they were). The test hook fail_realloc fails one."""
    cdef uint64_t c = cap[0] * 2 + 16
    cdef uint64_t *grown
    if need <= cap[0]:
        return True
    if c < need:
        c = need
    if fail_realloc_now():
        return False
    grown = <uint64_t *>realloc(arr[0], c * width * sizeof(uint64_t))
    if grown == NULL:
        return False
    arr[0] = grown
    cap[0] = c
    return True


cdef int wr_reserve(Segment seg, uint64_t nfree, uint64_t nrel, uint64_t nalloc,
                    uint64_t nincref) except -1:
    """Room for that many more deferred frees and releases (and, while a
    block records through this handle, allocation and incref records),
    before the operation changes anything: MemoryError here leaves it
    undone. The record functions then never need to grow."""
    if (seg.nfree + nfree > seg.capfree and not wr_grow(&seg.pfree, &seg.capfree, seg.nfree + nfree, 1)
            or seg.nrel + nrel > seg.caprel and not wr_grow(&seg.prel, &seg.caprel, seg.nrel + nrel, 1)):
        raise MemoryError("segment %r: no process memory for the write's records" % seg.name)
    if seg.txrec and (
            seg.ntxa + nalloc > seg.captxa and not wr_grow(&seg.txa, &seg.captxa, seg.ntxa + nalloc, 2)
            or seg.ntxi + nincref > seg.captxi and not wr_grow(&seg.txi, &seg.captxi, seg.ntxi + nincref, 1)):
        raise MemoryError("segment %r: no process memory for the block's records" % seg.name)
    return 0


cdef int wr_check_records(Segment seg) except -1:
    """Before the commit point: a record that could not be stored (realloc
    failed where no wr_reserve made room) fails the write, which is then
    undone, rather than commit with a free or release missing."""
    if seg.recfail:
        seg.recfail = False
        raise MemoryError("segment %r: no process memory for the write's records; "
                          "the write was undone" % seg.name)
    return 0


cdef void wr_defer_free(Segment seg, uint64_t off) noexcept:
    """Free a block (its contents moved) once the write commits."""
    if seg.nfree == seg.capfree and not wr_grow(&seg.pfree, &seg.capfree, seg.nfree + 1, 1):
        seg.recfail = True           # commit() raises MemoryError (wr_check_records)
        return
    seg.pfree[seg.nfree] = off
    seg.nfree += 1


cdef void wr_defer_release(Segment seg, const Cell *c) noexcept:
    """Drop the reference cell c held, once the write commits."""
    if c.b[0] < T_FIRST_REF or c.b[0] > T_LAST:
        return
    wr_defer_release_block(seg, ds_ld64(&c.b[8]))


cdef void wr_defer_release_block(Segment seg, uint64_t off) noexcept:
    if seg.nrel == seg.caprel and not wr_grow(&seg.prel, &seg.caprel, seg.nrel + 1, 1):
        seg.recfail = True           # (as in wr_defer_free)
        return
    seg.prel[seg.nrel] = off
    seg.nrel += 1


cdef void wr_end_publication(Segment seg) noexcept nogil:
    """Even the sequence if this write made it odd: readers may go on."""
    if seg.odd:
        ds_fence_release()
        seg.hdr.seq += 1
        seg.odd = False


cdef void wr_op_failed_in_block(Segment seg) noexcept:
    """An operation inside a block failed: undo its records (back to its
    savepoint), forget what it meant to free, and forget its allocations
    and increfs, which it gave back itself before failing."""
    cdef uint64_t i, j
    cdef Block *b
    jr_undo_to(seg, seg.jmark)
    seg.recfail = False
    seg.nfree = seg.fmark
    seg.nrel = seg.rmark
    seg.ntxi = seg.imark
    j = seg.amark
    for i in range(seg.amark, seg.ntxa):
        b = <Block *>(seg.base + seg.txa[2 * i])
        if b.gen == <uint32_t>seg.txa[2 * i + 1] and blk_kind(b) != K_FREE and blk_kind(b) <= K_LAST:
            seg.txa[2 * j] = seg.txa[2 * i]
            seg.txa[2 * j + 1] = seg.txa[2 * i + 1]
            j += 1
    seg.ntxa = j


cdef void wr_run_deferred(Segment seg) noexcept:
    cdef uint64_t i, n
    n = seg.nfree
    seg.nfree = 0
    for i in range(n):
        blk_free(seg, seg.pfree[i])
        crash_point()
    n = seg.nrel
    seg.nrel = 0
    for i in range(n):
        blk_release(seg, seg.prel[i])
        crash_point()
