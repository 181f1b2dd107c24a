# The allocator: bins, alloc, free (segregated fit, coalescing) (included by
# _heap.pyx at module level).


cdef int blk_bin(Segment seg, uint64_t size16) noexcept nogil:
    if size16 < SMALL_BINS:
        return <int>size16
    return 58 + ds_bitlen64(size16)


cdef bint blk_free_link_ok(Segment seg, uint64_t off) noexcept nogil:
    """A free-list link: 0, or a free block inside the heap."""
    return off == 0 or (off >= HEADER_SIZE and off <= seg.hdr.top - MIN_BLOCK
                        and (off & (ALIGN - 1)) == 0
                        and blk_kind(<Block *>(seg.base + off)) == K_FREE)


cdef bint blk_tiles_ok(Segment seg, uint64_t off) noexcept nogil:
    """The size of the block at off (inside the heap) can be trusted: the
    block ends at the top, or where the next block says the one below it
    ends. A grown size would hand out, split or merge live blocks."""
    cdef uint64_t top = seg.hdr.top, end
    cdef uint64_t size = <uint64_t>(<Block *>(seg.base + off)).size16 * ALIGN
    if size < MIN_BLOCK or size > top - off:
        return False
    end = off + size
    return end == top or (top - end >= MIN_BLOCK and
                          <uint64_t>(<Block *>(seg.base + end)).prev16 * ALIGN == size)


cdef void blk_heap_corrupt(Segment seg) noexcept nogil:
    """The allocator met bytes it cannot trust: stop trusting the segment."""
    seg.hdr.flags |= FLAG_POISONED


cdef void blk_bin_push(Segment seg, uint64_t off, uint64_t size16) noexcept nogil:
    cdef Header *h = seg.hdr
    cdef int i = blk_bin(seg, size16)
    cdef uint64_t head = h.bins[i]
    cdef char *p = seg.base + off
    if not blk_free_link_ok(seg, head):
        blk_heap_corrupt(seg)
        head = 0
    free_set_next(p, head)
    free_set_prev(p, 0)
    if head:
        free_set_prev(seg.base + head, off)
    h.bins[i] = off
    h.binmap[i >> 6] |= (<uint64_t>1) << (i & 63)


cdef void blk_bin_remove(Segment seg, uint64_t off, uint64_t size16) noexcept nogil:
    cdef Header *h = seg.hdr
    cdef int i = blk_bin(seg, size16)
    cdef char *p = seg.base + off
    cdef uint64_t nxt = free_next(p), prv = free_prev(p)
    if not blk_free_link_ok(seg, nxt) or not blk_free_link_ok(seg, prv):
        # a broken list: drop it (its blocks leak until a repair rebuilds it)
        blk_heap_corrupt(seg)
        h.bins[i] = 0
        h.binmap[i >> 6] &= ~((<uint64_t>1) << (i & 63))
        return
    if prv:
        free_set_next(seg.base + prv, nxt)
    else:
        h.bins[i] = nxt
    if nxt:
        free_set_prev(seg.base + nxt, prv)
    if h.bins[i] == 0:
        h.binmap[i >> 6] &= ~((<uint64_t>1) << (i & 63))


cdef void blk_set_prev16(Segment seg, uint64_t off, uint64_t prev16) noexcept nogil:
    # tell the block above `off` (or the top) how big `off`'s block is
    if off >= seg.hdr.top:
        seg.hdr.tail16 = prev16
    else:
        (<Block *>(seg.base + off)).prev16 = <uint32_t>prev16


cdef inline uint64_t blk_find_fit(Segment seg, uint64_t size16) noexcept nogil:
    """A free block of size16 units at least, still in its bin, or 0: the
    exact small bin first, then the first non-empty larger bin; in a
    power-of-two bin, walk the list for a fitting block (bounded). A bin
    whose list does not check out is emptied (and the heap marked corrupt)."""
    cdef Header *h = seg.hdr
    cdef uint64_t off = 0, mask, n
    cdef int i = blk_bin(seg, size16), w
    while i < NBINS and off == 0:
        w = i >> 6
        mask = h.binmap[w] & ~(((<uint64_t>1) << (i & 63)) - 1)
        if mask == 0:
            i = (w + 1) << 6
            continue
        i = (w << 6) + ds_ctz64(mask)
        off = h.bins[i]
        n = 0
        while off and n < (seg.cap >> 5):
            if not blk_free_link_ok(seg, off) or not blk_tiles_ok(seg, off):
                blk_heap_corrupt(seg)
                h.bins[i] = 0
                h.binmap[i >> 6] &= ~((<uint64_t>1) << (i & 63))
                off = 0
                break
            if (<Block *>(seg.base + off)).size16 >= size16:
                break
            off = free_next(seg.base + off)
            n += 1
        if off == 0:
            i += 1
    return off


cdef uint64_t blk_alloc(Segment seg, uint64_t payload, int kind, int *why) noexcept nogil:
    """A block for `payload` bytes, with refcount 0; 0 if there is none,
    and then *why says why (ALLOC_NO_ROOM, or the errno with which /dev/shm
    could not back it), for blk_raise_full. Must hold the lock."""
    cdef Header *h = seg.hdr
    cdef uint64_t need, size16, off, have16, rest16
    cdef int rc
    cdef Block *b
    cdef uint64_t hf = 0, he = 0
    cdef bint was_punched
    if payload > seg.cap or fail_alloc_now():
        why[0] = ALLOC_NO_ROOM
        return 0
    need = (payload + BLOCK_HDR + ALIGN - 1) & ~(<uint64_t>(ALIGN - 1))
    if need < MIN_BLOCK:
        need = MIN_BLOCK
    size16 = need // ALIGN
    if size16 >= (<uint64_t>1) << 32:
        why[0] = ALLOC_NO_ROOM
        return 0
    off = blk_find_fit(seg, size16)
    if off:
        b = <Block *>(seg.base + off)
        have16 = b.size16
        was_punched = (b.kind_rc & PUNCHED) != 0
        if was_punched:
            # pages handed back: back what this block and the rest's
            # header will touch first (ENOSPC fails here, cleanly)
            rc = punch_reback(seg, off, have16, need, &hf, &he)
            if rc:
                why[0] = rc
                return 0
        blk_bin_remove(seg, off, have16)
        rest16 = have16 - size16
        if rest16 * ALIGN >= MIN_BLOCK:
            # split: the rest becomes a free block above; its header is
            # written before this one shrinks, so the blocks always tile
            (<Block *>(seg.base + off + need)).size16 = <uint32_t>rest16
            (<Block *>(seg.base + off + need)).prev16 = <uint32_t>size16
            punch_split(seg, off + need, was_punched, hf, he)
            ds_fence_release()
            b.size16 = <uint32_t>size16
            blk_set_prev16(seg, off + have16 * ALIGN, rest16)
            blk_bin_push(seg, off + need, rest16)
        else:
            size16 = have16
    else:
        # from the top
        if need > seg.cap - h.top:
            why[0] = ALLOC_NO_ROOM
            return 0
        if h.top + need > h.reserved:
            rc = seg_reserve(seg, h.top + need)
            if rc:
                why[0] = rc
                return 0
        off = h.top
        b = <Block *>(seg.base + off)
        b.size16 = <uint32_t>size16
        b.prev16 = <uint32_t>h.tail16
        h.top = off + need
        h.tail16 = size16
        seg_read_limit(seg)
    h.gen += 1
    if <uint32_t>h.gen == 0:
        h.gen += 1
    b.gen = <uint32_t>h.gen
    b.kind_rc = <uint32_t>kind
    h.used += size16 * ALIGN
    h.nblocks += 1
    if seg.txrec:
        jr_rec_alloc(seg, off)
    return off


cdef long _extend_calls = 0             # blocks grown in place, for tests (extend_counters)
cdef bint _hook_no_extend = False       # tests: blocks never grow in place


cdef uint64_t blk_extend_top(Segment seg, uint64_t off, uint64_t have16, uint64_t grow) noexcept nogil:
    """blk_extend of the last block (at off, have16 units) by grow bytes into
    the top: its new size in units, or 0 (nothing changed) without room."""
    cdef Header *h = seg.hdr
    cdef uint64_t up = off + have16 * ALIGN
    cdef Block *n = <Block *>(seg.base + up)
    if grow < MIN_BLOCK:
        grow = MIN_BLOCK            # the room taken is first a block of its own (below)
    if grow > seg.cap - h.top:
        return 0
    if h.top + grow > h.reserved and seg_reserve(seg, h.top + grow) != 0:
        return 0
    # the room becomes a dead block at the top, then this block takes it:
    # whenever a process dies, the blocks tile the heap (the repair gives a
    # dead block at the top back to the top)
    n.size16 = <uint32_t>(grow // ALIGN)
    n.prev16 = <uint32_t>have16
    n.kind_rc = K_DEAD
    ds_fence_release()
    h.top = up + grow
    h.tail16 = grow // ALIGN
    seg_read_limit(seg)
    crash_point()
    (<Block *>(seg.base + off)).size16 = <uint32_t>(have16 + grow // ALIGN)
    h.tail16 = have16 + grow // ALIGN
    return have16 + grow // ALIGN


cdef bint blk_room_above(Segment seg, uint64_t off) noexcept nogil:
    """Whether the allocated block at off (checked) is the top one or has a
    free block right above it: where blk_extend may find room."""
    cdef uint64_t up = off + <uint64_t>(<Block *>(seg.base + off)).size16 * ALIGN
    return up == seg.hdr.top or (up < seg.hdr.top and blk_kind(<Block *>(seg.base + up)) == K_FREE)


cdef bint blk_extend(Segment seg, uint64_t off, uint64_t payload) noexcept nogil:
    """Grow the allocated block at off in place to hold `payload` bytes, over
    the start of the free block right above it or into the top; False, with
    nothing changed, when neither has the room or a transaction() or lock()
    block is open (the caller allocates a new block then). Must hold the lock.

    Only the allocator changes, as in blk_alloc: the bytes gained belong to
    no reachable object, so a lock-free reader that sees either size reads
    what it read before; the caller publishes their use. A crash leaves the
    block bigger, which the undo of the caller's journaled stores and the
    allocator repair both accept."""
    global _extend_calls
    cdef Header *h = seg.hdr
    cdef Block *b = <Block *>(seg.base + off)
    cdef Block *n
    cdef uint64_t need, size16, have16, up, f16, rest16, grow, hf = 0, he = 0
    cdef bint was_punched
    if _hook_no_extend or payload > seg.cap or seg.txrec or seg.lk.bdepth:
        # (inside a transaction() or lock() block, never: a rollback gives
        # back exactly what the block allocated, `used` as it was)
        return False
    need = (payload + BLOCK_HDR + ALIGN - 1) & ~(<uint64_t>(ALIGN - 1))
    size16 = need // ALIGN
    if size16 >= (<uint64_t>1) << 32 or not blk_tiles_ok(seg, off):
        return False
    have16 = b.size16
    if size16 <= have16:
        return True
    up = off + have16 * ALIGN
    grow = need - have16 * ALIGN
    if up == h.top:
        size16 = blk_extend_top(seg, off, have16, grow)
        if size16 == 0:
            return False
    else:
        n = <Block *>(seg.base + up)
        if blk_kind(n) != K_FREE or not blk_tiles_ok(seg, up) or have16 + n.size16 < size16:
            return False
        f16 = n.size16
        was_punched = (n.kind_rc & PUNCHED) != 0
        if was_punched and punch_reback(seg, up, f16, grow, &hf, &he) != 0:
            return False
        blk_bin_remove(seg, up, f16)
        rest16 = have16 + f16 - size16
        if rest16 * ALIGN >= MIN_BLOCK:
            # the rest of the free block: its header is written before this
            # block grows over the old one, so the blocks always tile
            (<Block *>(seg.base + off + need)).size16 = <uint32_t>rest16
            (<Block *>(seg.base + off + need)).prev16 = <uint32_t>size16
            punch_split(seg, off + need, was_punched, hf, he)
            ds_fence_release()
            b.size16 = <uint32_t>size16
            crash_point()
            blk_set_prev16(seg, off + need + rest16 * ALIGN, rest16)
            blk_bin_push(seg, off + need, rest16)
        else:
            size16 = have16 + f16
            b.size16 = <uint32_t>size16
            blk_set_prev16(seg, off + size16 * ALIGN, size16)
        n.kind_rc = K_DEAD          # the free block's old header, now inside this one
    h.used += (size16 - have16) * ALIGN
    _extend_calls += 1
    return True


def extend_counters(reset=False, no_extend=None):
    """Test hook: how many blocks this process grew in place (blk_extend);
    reset sets the count to 0; no_extend=True makes every growth allocate a
    new block (the old behaviour), False restores growing in place."""
    global _extend_calls, _hook_no_extend
    r = _extend_calls
    if reset:
        _extend_calls = 0
    if no_extend is not None:
        _hook_no_extend = bool(no_extend)
    return r


cdef void blk_free(Segment seg, uint64_t off) noexcept nogil:
    """Return a block to the allocator, merging it with free neighbours."""
    cdef Header *h = seg.hdr
    cdef Block *b
    cdef uint64_t size16, up, below, lo, hi, bhf = 0, bhe = 0, uhf = 0, uhe = 0
    cdef bint below_p = False, up_p = False
    cdef Block *n
    if off < HEADER_SIZE or off > h.top - MIN_BLOCK or (off & (ALIGN - 1)) or not blk_tiles_ok(seg, off):
        blk_heap_corrupt(seg)
        return
    # nothing reachable refers to the block: a free needs no odd window of
    # the write sequence; a view that outlived its object may still read
    # it, so the generation changes first (view_gen_ok)
    b = <Block *>(seg.base + off)
    size16 = b.size16
    up = off + size16 * ALIGN
    if up < h.top and blk_kind(<Block *>(seg.base + up)) == K_FREE and not blk_tiles_ok(seg, up):
        blk_heap_corrupt(seg)
        return
    b.gen += 1                      # a view of this block is stale from now on
    ds_fence_release()
    h.used -= size16 * ALIGN
    h.nblocks -= 1
    b.kind_rc = K_FREE
    # the freshly freed bytes, backed: [lo, hi) (heap/punch.pxi)
    lo = off
    hi = up
    # merge with the block above
    if up < h.top:
        n = <Block *>(seg.base + up)
        if blk_kind(n) == K_FREE:
            if n.kind_rc & PUNCHED:
                up_p = True
                punch_range(seg, up, &uhf, &uhe)
                hi = uhf
            else:
                hi = up + <uint64_t>n.size16 * ALIGN
            blk_bin_remove(seg, up, n.size16)
            size16 += n.size16
            n.kind_rc = K_DEAD
    # merge with the block below
    if b.prev16 and <uint64_t>b.prev16 * ALIGN <= off - HEADER_SIZE:
        below = off - <uint64_t>b.prev16 * ALIGN
        n = <Block *>(seg.base + below)
        if blk_kind(n) == K_FREE and <uint64_t>n.size16 == b.prev16:
            if n.kind_rc & PUNCHED:
                below_p = True
                punch_range(seg, below, &bhf, &bhe)
                lo = bhe
            else:
                lo = below
            blk_bin_remove(seg, below, n.size16)
            size16 += n.size16
            b.kind_rc = K_DEAD
            off = below
            b = n
    if off + size16 * ALIGN >= h.top:
        # touches the top: give it back
        h.top = off
        h.tail16 = b.prev16
        b.kind_rc = K_DEAD
        if below_p or up_p:
            # holes above the top: not reserved any more
            punch_lower_reserve(seg, bhf if below_p and (not up_p or bhf < uhf) else uhf)
        seg_shrink_reserve(seg)
        return
    b.size16 = <uint32_t>size16
    blk_set_prev16(seg, off + size16 * ALIGN, size16)
    punch_free_run(seg, off, size16, lo, hi, below_p, bhf, bhe, up_p, uhf, uhe)
    blk_bin_push(seg, off, size16)


cdef int blk_raise_full(Segment seg, uint64_t want, int why) except -1:
    """The SegmentFullError(want=, free=) of a failed blk_alloc, from the
    reason it returned (out of line: the cold path)."""
    raise seg.full_error(want, why)
