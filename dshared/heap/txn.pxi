# Blocks: transaction(), lock() and snapshot() (included by _heap.pyx at module level).
#
# One journal, one publish path. Outside a block every operation is its own
# unit: write_begin, journaled stores (jr_store), commit() (the commit point:
# the journal count drops to 0), deferred frees, write_end. Inside a block
# (transaction() or lock(), counted in LockState.bdepth, shared by the
# handles of one segment file in this process):
#
# * an operation's commit() keeps its journal records and its deferred frees
#   and releases: they accumulate until the outermost block ends. The
#   block's commit point is that block's "journal count = 0" store; a crash
#   before it leaves the journal to the next locker's repair, which undoes
#   the whole block (then rebuilds the allocator and collects what the block
#   allocated), a crash after it keeps the block;
# * the journal grows past the header's JOURNAL_MAX records into K_JOURNAL
#   blocks chained from Header.jblocks (newest first), allocated when an
#   operation begins (so SegmentFullError comes before the operation changes
#   anything) and freed when the block ends;
# * each operation records a savepoint (journal count, deferred lists,
#   allocation and incref records): an exception inside one operation rolls
#   back that operation alone (as outside a block);
# * the handle records, in process memory, every block allocated (offset,
#   generation) and every refcount raised, so an in-process rollback undoes
#   the journal newest first, lowers those refcounts, frees those blocks and
#   drops the deferred frees: no walk of the heap. Nothing the block freed
#   was freed yet (frees wait for the commit), so no record points into
#   reused memory;
# * collect() would free what the block's records still need: it refuses
#   (RuntimeError) inside a block that has written, and the collect-and-retry
#   before SegmentFullError is skipped there.
#
# transaction() rolls back to its savepoint on an exception; lock() keeps
# what was written; a nested transaction() is a savepoint of the enclosing
# block. snapshot() holds the lock without opening a block.

cdef enum:
    BLOCK_LOCK = 0
    BLOCK_TXN = 1
    BLOCK_SNAPSHOT = 2


cdef bint txn_dirty(Segment seg):
    """The open block has written something (journal, frees, allocations)."""
    cdef Segment o = <Segment>seg.lk.bseg if seg.lk.bseg is not None else seg
    return (seg.hdr.jcount != 0 or o.nfree != 0 or o.nrel != 0 or o.ntxa != 0
            or o.ntxi != 0 or seg.hdr.jblocks != 0)


cdef void txn_hand_over(Segment seg) noexcept:
    """An operation through another handle inside the block has ended: its
    deferred frees and releases, allocations and increfs go to the handle
    that opened the block (offsets are the same in every mapping)."""
    cdef Segment o = <Segment>seg.lk.bseg
    cdef uint64_t i
    if o is not None and o is not seg:
        for i in range(seg.nfree):
            wr_defer_free(o, seg.pfree[i])
        for i in range(seg.nrel):
            wr_defer_release_block(o, seg.prel[i])
        for i in range(seg.ntxa):
            jr_rec_alloc(o, seg.txa[2 * i])
        for i in range(seg.ntxi):
            jr_rec_incref(o, seg.txi[i])
    seg.nfree = seg.nrel = seg.ntxa = seg.ntxi = 0
    seg.txrec = False


cdef tuple txn_begin(Segment seg, double timeout, int kind):
    """Take the lock and open a block (or a savepoint of the open one);
    returns the savepoint."""
    cdef Header *h
    lock_acquire(seg, timeout)
    h = seg.hdr
    if seg.lk.bdepth == 0:
        try:
            if not wr_header_sane(seg):
                h.flags |= FLAG_POISONED
            if h.flags & FLAG_POISONED:
                raise CorruptSegmentError("segment %r was marked corrupt by a failed repair" % seg.name)
            if seg.wdepth:
                raise RuntimeError("segment %r: a block cannot open inside a write" % seg.name)
        except BaseException:
            lock_release(seg)
            raise
        wr_settle(seg)               # no write in flight: a journal left here is stale
        seg.jcap = JOURNAL_MAX
        seg.ntxa = seg.ntxi = 0
        seg.nfree = seg.nrel = 0
        h.jkind = 2 if kind == BLOCK_LOCK else 1
        seg.lk.bseg = seg
        seg.txrec = True
        crash_point()
    seg.lk.bdepth += 1
    o = <Segment>seg.lk.bseg        # the handle that opened the block keeps its records
    return (seg.hdr.jcount, o.nfree, o.nrel, o.ntxa, o.ntxi)


cdef int txn_rollback(Segment seg, tuple sp) except -1:
    """Undo what the block wrote since savepoint sp: the journal newest
    first, the refcounts it raised, the blocks it allocated, the frees it
    deferred."""
    cdef uint64_t jm = sp[0], fm = sp[1], rm = sp[2], am = sp[3], im = sp[4], i, off
    cdef Block *b
    cdef int was = gc_off()
    wr_publish(seg)
    jr_undo_to(seg, jm)
    i = seg.ntxi
    while i > im:
        i -= 1
        b = <Block *>(seg.base + seg.txi[i])
        if blk_rc(b) > 0 and blk_rc(b) < RC_MAX:
            b.kind_rc -= RC_ONE
    seg.ntxi = im
    i = seg.ntxa
    while i > am:
        i -= 1
        off = seg.txa[2 * i]
        b = <Block *>(seg.base + off)
        if b.gen == <uint32_t>seg.txa[2 * i + 1] and blk_kind(b) != K_FREE and blk_kind(b) <= K_LAST:
            blk_free(seg, off)
    seg.ntxa = am
    seg.nfree = fm
    seg.nrel = rm
    seg.hdr.rollbacks += 1
    wr_end_publication(seg)
    gc_restore(was)
    return 0


cdef int txn_commit(Segment seg) except -1:
    """The outermost block ends: its commit point (the journal count drops
    to 0), then its journal blocks and what it left unreachable are freed."""
    cdef Header *h = seg.hdr
    cdef uint64_t b, nxt, steps = 0
    cdef JournalHdr *jb
    cdef int was = gc_off()
    # another handle of this segment may have written inside the block (and
    # grown the heap): journal blocks it chained lie past this handle's limit
    seg_read_limit(seg)
    seg.txrec = False
    seg.lk.bseg = None
    ds_fence_release()
    crash_point()
    h.jcount = 0                    # the commit point
    ds_fence_release()
    crash_point()
    h.jkind = 0
    b = h.jblocks
    h.jblocks = 0
    while b and steps < 64:
        jb = jr_block(seg, b)
        if jb == NULL:
            break                   # (bad bytes) what is left is garbage for collect()
        nxt = jb.next
        blk_free(seg, b)
        b = nxt
        steps += 1
    seg.ntxa = seg.ntxi = 0
    wr_run_deferred(seg)
    gc_restore(was)
    return 0


cdef int txn_end(Segment seg, tuple sp, bint rollback) except -1:
    if not (seg.lk.bdepth > 0 and seg.lk.fork_gen == _fork_gen):
        return lock_release(seg)   # (a block inherited through fork: not ours)
    if ds_fault_flag(&seg.faulted):
        # the mapping faulted (a truncated file): nothing in it can be
        # trusted or written, neither a rollback nor a commit; the lock is
        # given back as lock_release() gives it back after a fault
        seg.lk.bdepth -= 1
        return lock_release(seg)
    if not lock_held(seg):
        raise RuntimeError("segment %r: a block ends in a thread that does not hold its lock" % seg.name)
    o = <Segment>seg.lk.bseg
    try:
        if rollback and not _hook_no_rollback:
            txn_rollback(o, sp)
        seg.lk.bdepth -= 1
        if seg.lk.bdepth == 0:
            txn_commit(o)
    finally:
        lock_release(seg)
    return 0


cdef class _Block:
    """The context manager returned by Segment.lock(), transaction() and snapshot()."""
    cdef Segment seg
    cdef object timeout
    cdef int kind
    cdef list sps

    def __cinit__(self, Segment seg not None, timeout, int kind):
        self.seg = seg
        self.timeout = _timeout(timeout)
        self.kind = kind
        self.sps = []

    def __enter__(self):
        if self.kind == BLOCK_SNAPSHOT or _hook_no_lock:
            # (test hook no_lock: writers race without the mutex; a block
            # would share their journal, so there is none)
            lock_acquire(self.seg, self.timeout)
            self.sps.append(None)
        else:
            self.sps.append(txn_begin(self.seg, self.timeout, self.kind))
        return self

    def __exit__(self, et, ev, tb):
        sp = self.sps.pop() if self.sps else None
        if sp is None:
            lock_release(self.seg)
        else:
            txn_end(self.seg, sp, self.kind == BLOCK_TXN and et is not None)
        return False
