# Repair after a death: undo the journal, rebuild the allocator (included by
# _heap.pyx at module level).


cdef rep_after_death(Segment seg):
    """A process died holding the lock, maybe in the middle of a write.
    Undo its journal (so the write is either wholly done or not at all),
    rebuild the allocator from the block tiling, recount every refcount
    and free what nothing reaches. If the heap cannot be walked, mark the
    segment poisoned: everyone gets CorruptSegmentError from then on."""
    cdef Header *h = seg.hdr
    cdef uint64_t undone = h.jcount, freed = 0, jkind = h.jkind
    ds_mutex_consistent(&h.mutex)
    if _hook_no_repair:
        return
    seg_read_limit(seg)           # the walk below must see every block up to the top
    if not (h.seq & 1):
        h.seq += 1              # readers retry until the repair is done
    ds_fence_release()
    seg.odd = True             # the frees below must not even it (publish)
    try:
        jr_undo(seg)
        h.jblocks = 0           # its journal blocks are garbage now: the walk below frees them
        h.jkind = 0
        if jkind and undone:
            h.rollbacks += 1
        rep_rebuild_allocator(seg)
        freed = gc_collect(seg)
    except CorruptSegmentError as e:
        h.flags |= FLAG_POISONED
        ds_fence_release()
        h.seq += h.seq & 1
        h.repairs += 1
        seg.odd = False
        _queue_log("segment %r: the repair after a process died holding its lock failed: %s",
                   (seg.name, str(e)))
        lock_release_raw(seg)
        raise
    ds_fence_release()
    h.seq += h.seq & 1
    h.repairs += 1
    seg.odd = False
    if jkind and undone:
        _queue_log("segment %r: repaired after a process died holding its lock inside a %s block: "
                   "the whole block was rolled back (%d journal records undone, %d bytes it "
                   "left unreachable freed)",
                   (seg.name, "transaction()" if jkind == 1 else "lock()", undone, freed))
    else:
        _queue_log("segment %r: repaired after a process died holding its lock "
                   "(%d journal records rolled back, %d bytes it left unreachable freed)",
                   (seg.name, undone, freed))


cdef int rep_rebuild_allocator(Segment seg) except -1:
    """Walk the blocks from the bottom, merge free neighbours, fix the
    size links and refill the free lists; raises CorruptSegmentError if
    the blocks do not tile the heap."""
    cdef Header *h = seg.hdr
    cdef uint64_t off = HEADER_SIZE, top = h.top, size16, prev16 = 0, run = 0, run16 = 0
    cdef uint64_t used = 0, nblocks = 0
    cdef uint32_t kind
    cdef Block *b
    if top > seg.cap or top > h.reserved or top < HEADER_SIZE or (top & (ALIGN - 1)):
        raise CorruptSegmentError("segment %r: heap top %d out of bounds" % (seg.name, top))
    memset(h.bins, 0, sizeof(h.bins))
    memset(h.binmap, 0, sizeof(h.binmap))
    while off < top:
        b = <Block *>(seg.base + off)
        size16 = b.size16
        if size16 * ALIGN < MIN_BLOCK or size16 * ALIGN > top - off:
            raise CorruptSegmentError("segment %r: block at %d has a bad size" % (seg.name, off))
        kind = blk_kind(b)
        if kind == K_FREE or kind == K_DEAD:
            if run == 0:
                run = off
                run16 = 0
                b.prev16 = <uint32_t>prev16
            run16 += size16
        else:
            if kind > K_LAST:
                raise CorruptSegmentError("segment %r: block at %d has kind %d" % (seg.name, off, kind))
            if run:
                rep_close_run(seg, run, run16)
                prev16 = run16
                run = 0
            b.prev16 = <uint32_t>prev16
            prev16 = size16
            used += size16 * ALIGN
            nblocks += 1
        off += size16 * ALIGN
    h.tail16 = prev16
    if run:
        # free space that touches the top goes back to it; it may hold
        # holes (heap/punch.pxi): what lies above is no longer reserved
        h.top = run
        if run16 * ALIGN >= 2 * PAGE:
            punch_lower_reserve(seg, run + FREE_KEEP)
    h.used = used
    h.nblocks = nblocks
    return 0


cdef void rep_close_run(Segment seg, uint64_t run, uint64_t run16) noexcept nogil:
    cdef Block *b = <Block *>(seg.base + run)
    b.size16 = <uint32_t>run16
    # a run that spans a whole page may hold holes (the rest of a punched
    # block carved from below can be small): mark it so, from its start
    # (allocation from it then backs what it hands out; heap/punch.pxi)
    punch_mark(seg, run, run16 * ALIGN >= 2 * PAGE, run + FREE_KEEP, run + run16 * ALIGN)
    blk_bin_push(seg, run, run16)
