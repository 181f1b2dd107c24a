# stats(): usage, free lists and probe lengths (included by _heap.pyx at
# module level).


cdef int64_t st_probe_length(Segment seg, uint8_t *index, uint64_t nslots, uint64_t hash, uint64_t slot) noexcept:
    """How many probes past the first slot a lookup of `hash` takes to
    reach `slot`; -1 if it never does."""
    cdef Probe pr
    probe_start(&pr, hash, nslots)
    while True:
        if pr.i == slot:
            return <int64_t>pr.n
        if ix_get(index, index_width(nslots), pr.i) == IX_EMPTY:
            return -1
        if not probe_next(&pr):
            return -1


cdef st_probe_stats(Segment seg):
    """Probe lengths over every dict table of the heap (the lock held):
    how many probes past the first slot each key takes to be found."""
    cdef list blocks = []
    cdef Block *b
    cdef TableHdr *th
    cdef uint64_t off, size, nslots, cap, nent, i, tables = 0, keys = 0, total = 0, longest = 0
    cdef uint64_t tmax, over = 0
    cdef int64_t plen
    cdef uint8_t *index
    cdef uint64_t iw
    cdef Entry *ents
    cdef int32_t ix
    hist = {}
    gc_tiling(seg, blocks)
    for off in blocks:
        b = <Block *>(seg.base + off)
        if blk_kind(b) != K_TABLE:
            continue
        size = <uint64_t>b.size16 * ALIGN - BLOCK_HDR
        th = table_hdr(seg.base, off)
        nslots = th.nslots
        cap = th.capacity
        nent = th.nentries
        if not table_sizes_ok(nslots, cap, nent, size):
            continue                # check() reports it
        index = table_index_of(th)
        iw = index_width(nslots)
        ents = table_entries_of(th, nslots)
        tables += 1
        tmax = 0
        for i in range(nslots):
            ix = ix_get(index, iw, i)
            if ix < 0 or <uint64_t>ix >= nent:
                continue
            plen = st_probe_length(seg, index, nslots, entry_hash(seg, &ents[ix]), i)
            if plen < 0:
                continue
            keys += 1
            total += <uint64_t>plen
            if <uint64_t>plen > tmax:
                tmax = plen
            bucket = 0 if plen == 0 else 1 << (ds_bitlen64(<uint64_t>plen) - 1)
            hist[bucket] = hist.get(bucket, 0) + 1
        if tmax > longest:
            longest = tmax
        if tmax > probe_bound(nslots):
            over += 1
    return {
        "tables": tables,
        "max_probe": longest,
        "mean_probe": <double>total / keys if keys else 0.0,
        "probe_histogram": dict(sorted(hist.items())),
        "long_chains": over,
    }


cdef dict st_stats(Segment seg, bint probes):
    """Segment.stats()."""
    seg_check_open(seg)
    cdef Header *h = seg.hdr
    cdef uint64_t off, n, nbytes, largest = seg.cap - h.top, steps
    cdef int k
    seg_read_limit(seg)               # the free lists reach up to today's top
    free_lists = {}
    for k in range(NBINS):
        off = h.bins[k]
        n = nbytes = steps = 0
        while off and steps < (seg.cap >> 5) and seg_inb(seg, off, MIN_BLOCK):
            size = <uint64_t>(<Block *>(seg.base + off)).size16 * ALIGN
            n += 1
            nbytes += size
            if size > largest:
                largest = size
            off = free_next(seg.base + off)
            steps += 1
        if n:
            # keyed by the largest block size the class holds
            free_lists[(k + 1) * ALIGN - ALIGN if k < SMALL_BINS else (ALIGN << (k - 58)) - ALIGN] = (n, nbytes)
    if ds_fault_flag(&seg.faulted):
        seg_raise_faulted(seg)
    out = {
        "capacity": seg.cap,
        "used": h.used,
        "free": seg.cap - HEADER_SIZE - h.used,
        "largest_free": largest,
        "top": h.top,
        "reserved": h.reserved,
        "backed": seg._backed(),
        "blocks": h.nblocks,
        "repairs": h.repairs,
        "rollbacks": h.rollbacks,
        "collections": h.collections,
        "seq": h.seq,
        "free_lists": free_lists,
    }
    if probes:
        lock_acquire(seg, -1)
        try:
            out.update(st_probe_stats(seg))
        finally:
            lock_release(seg)
    if ds_fault_flag(&seg.faulted):
        seg_raise_faulted(seg)
    return out
