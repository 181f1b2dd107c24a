# check(): the tiling, the free lists, every reachable block and its
# references (included by _heap.pyx at module level).


cdef chk_check(Segment seg, list problems, list garbage, list probes):
    """Check the whole segment (under the lock): the header, the tiling and
    the counters, the free lists, references and refcounts, then every
    reachable value as a read reads it."""
    cdef list blocks = []
    chk_header(seg, problems)
    gc_tiling(seg, blocks)
    free_set = chk_tiling(seg, blocks, problems)
    chk_free_lists(seg, free_set, problems)
    alloc_set = set(blocks) - free_set
    seen = chk_references(seg, blocks, free_set, alloc_set, problems, garbage, probes)
    # the values, read as reads read them (a clean check means a full walk raises nothing)
    containers = []
    for off in seen:
        if off in alloc_set:
            kind = blk_kind(<Block *>(seg.base + <uint64_t>off))
            if kind == K_DICT or kind == K_LIST:
                containers.append((off, kind))
    from dshared._codec import _check_values
    _check_values(seg, sorted(containers), problems)


cdef chk_header(Segment seg, list problems):
    cdef Header *h = seg.hdr
    if h.seq & 1:
        problems.append("write sequence %d is odd: a write did not finish" % h.seq)
    if h.flags & FLAG_POISONED:
        problems.append("the segment is marked corrupt (poisoned): every write and read refuses it")
    if not wr_header_sane(seg):
        problems.append("header fields out of range (top %d, reserved %d, tail %d, roots %d and %d, "
                        "journal %d): every write refuses it" % (h.top, h.reserved, h.tail16 * ALIGN,
                                                                 h.root, h.names, h.jcount))
    if h.top > h.reserved:
        problems.append("heap top %d is above the reserved %d bytes" % (h.top, h.reserved))


cdef set chk_tiling(Segment seg, list blocks, list problems):
    """The free blocks among `blocks` (the tiling); the kinds, the merging
    of free neighbours and the header's counters checked."""
    cdef Header *h = seg.hdr
    cdef Block *b
    cdef uint64_t used = 0, off
    cdef int kind
    cdef bint was_free = False
    free_set = set()
    for off in blocks:
        b = <Block *>(seg.base + off)
        kind = blk_kind(b)
        if kind == K_FREE:
            if was_free:
                problems.append("free blocks at %d and below it were not merged" % off)
            free_set.add(off)
            was_free = True
        else:
            if kind > K_LAST:
                problems.append("block at %d has unknown kind %d" % (off, kind))
            used += <uint64_t>b.size16 * ALIGN
            was_free = False
    if used != h.used:
        problems.append("header counts %d used bytes, the blocks hold %d" % (h.used, used))
    if <uint64_t>(len(blocks) - len(free_set)) != h.nblocks:
        problems.append("header counts %d blocks, the heap has %d" % (h.nblocks, len(blocks) - len(free_set)))
    return free_set


cdef chk_free_lists(Segment seg, set free_set, list problems):
    """Every free block in the one bin of its size, once, linked both ways."""
    cdef Header *h = seg.hdr
    cdef Block *b
    cdef uint64_t off, prv
    cdef int k
    listed = set()
    for k in range(NBINS):
        off = h.bins[k]
        prv = 0
        if bool(off) != bool(h.binmap[k >> 6] & ((<uint64_t>1) << (k & 63))):
            problems.append("bin %d: bitmap disagrees with its list" % k)
        while off:
            if off not in free_set:
                problems.append("bin %d lists %d, which is not a free block" % (k, off))
                break
            if off in listed:
                problems.append("bin %d: free lists meet or cycle at %d" % (k, off))
                break
            listed.add(off)
            b = <Block *>(seg.base + off)
            if blk_bin(seg, b.size16) != k:
                problems.append("free block at %d of %d bytes is in bin %d" % (off, b.size16 * 16, k))
            if free_prev(seg.base + off) != prv:
                problems.append("free block at %d has a wrong back link" % off)
            prv = off
            off = free_next(seg.base + off)
    if listed != free_set:
        problems.append("%d free blocks are in no free list" % len(free_set - listed))


cdef dict chk_ref_counts(Segment seg, set alloc_set, list problems, set seen, list todo):
    """The references from outside the heap's blocks: the header's roots
    (also put in seen and todo), an open block's journal chain (in seen) and
    its pending frees and releases."""
    cdef Header *h = seg.hdr
    cdef uint64_t off, n, i
    counts = {}
    for off in _root_offsets(seg):
        counts[off] = counts.get(off, 0) + 1
        if off not in seen:
            seen.add(off)
            todo.append(off)
    for off in (h.root, h.names):
        if off in alloc_set and blk_kind(<Block *>(seg.base + <uint64_t>off)) != K_DICT:
            problems.append("the root at %d is a %s block, not a dict"
                            % (off, _kind_name(blk_kind(<Block *>(seg.base + <uint64_t>off)))))
    off = h.jblocks
    n = 0
    while off and n < 64:
        # an open block's journal blocks (this thread's own transaction)
        counts[off] = counts.get(off, 0) + 1
        seen.add(off)
        if off not in alloc_set or blk_kind(<Block *>(seg.base + <uint64_t>off)) != K_JOURNAL:
            problems.append("the journal chain reaches %d, which is not a journal block" % off)
            break
        off = journal_hdr(seg.base, <uint64_t>off).next
        n += 1
    owner = seg.lk.bseg
    if seg.lk.bdepth and owner is not None:
        # inside this thread's block: what it replaced waits for its end,
        # each pending free or release standing for the reference it drops
        for i in range((<Segment>owner).nfree):
            counts[(<Segment>owner).pfree[i]] = counts.get((<Segment>owner).pfree[i], 0) + 1
        for i in range((<Segment>owner).nrel):
            counts[(<Segment>owner).prel[i]] = counts.get((<Segment>owner).prel[i], 0) + 1
    return counts


cdef set chk_references(Segment seg, list blocks, set free_set, set alloc_set, list problems,
                        list garbage, list probes):
    """Reachability and refcounts, without touching the heap: the blocks
    reachable from the roots (returned), each block's refcount against the
    references to it, leaks and unreachable cycles (garbage)."""
    cdef Block *b
    cdef uint64_t off
    seen = set()
    todo = []
    counts = chk_ref_counts(seg, alloc_set, problems, seen, todo)
    children = {}
    while todo:
        off = todo.pop()
        if off not in alloc_set:
            problems.append("a reference points at %d, which is not an allocated block" % off)
            continue
        children[off] = chk_children(seg, off, problems, probes)
        for c in children[off]:
            if c not in seen:
                seen.add(c)
                todo.append(c)
    # refcounts count references from every block, reachable or not: a
    # cycle waiting for collect() still holds its references
    for off in blocks:
        if off in free_set:
            continue
        kids = children.get(off)
        if kids is None:
            kids = chk_children(seg, off, [])
        for c in kids:
            counts[c] = counts.get(c, 0) + 1
    for off in blocks:
        if off in free_set:
            continue
        b = <Block *>(seg.base + off)
        if blk_rc(b) != RC_MAX and blk_rc(b) != counts.get(off, 0):
            problems.append("%s block at %d has refcount %d, %d references"
                            % (_kind_name(blk_kind(b)), off, blk_rc(b), counts.get(off, 0)))
        elif off not in seen:
            if counts.get(off, 0) == 0:
                problems.append("leak: %s block at %d (%d bytes) is unreachable and unreferenced"
                                % (_kind_name(blk_kind(b)), off, b.size16 * 16))
            else:
                garbage[0] += <uint64_t>b.size16 * ALIGN     # an unreachable cycle
    return seen


cdef list chk_children(Segment seg, uint64_t off, list problems, list probes=None):
    """The blocks that block `off` references, each value checked; a
    table's longest probe goes to `probes` when given."""
    cdef Block *b = <Block *>(seg.base + off)
    cdef int kind = blk_kind(b)
    cdef uint64_t size = <uint64_t>b.size16 * ALIGN - BLOCK_HDR
    cdef char *p = blk_payload(seg.base, off)
    cdef uint64_t n, sub, ln
    out = []
    if kind == K_STR or kind == K_BYTES or kind == K_BIGINT or kind == K_KTUPLE:
        ln = (<BytesHdr *>p).length         # StrHdr starts with it too
        if ln > size - bytes_hdr_size(kind):
            problems.append("%s block at %d claims %d bytes" % (_kind_name(kind), off, ln))
        elif kind == K_STR:
            try:
                str_data(<StrHdr *>p)[:ln].decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                problems.append("str block at %d is not UTF-8" % off)
    elif kind == K_TUPLE:
        n = (<TupleHdr *>p).n
        if n > (size - sizeof(TupleHdr)) // CELL_SIZE:
            problems.append("tuple at %d claims %d items" % (off, n))
        else:
            chk_cells(seg, tuple_cells(<TupleHdr *>p), n, off, problems, out)
    elif kind == K_LIST and size < sizeof(ListBody):
        problems.append("list at %d: its block is too small" % off)
    elif kind == K_DICT or kind == K_LIST:
        # DictBody.table and ListBody.items: the first word of both
        sub = (<DictBody *>p).table if kind == K_DICT else (<ListBody *>p).items
        if sub:
            out.append(sub)
        if kind == K_LIST and sub:
            ln = (<ListBody *>p).length
            if not gc_valid_ref(seg, sub) or blk_kind(<Block *>(seg.base + sub)) != K_ITEMS:
                problems.append("list at %d points at %d, not an items block" % (off, sub))
            elif ln > items_cap(seg.base, sub) or items_cap(seg.base, sub) > cells_fit(
                    (<Block *>(seg.base + sub)).size16):
                problems.append("list at %d is longer than its items block" % off)
            else:
                chk_cells(seg, items_cells(seg.base, sub), ln, off, problems, out)
        elif kind == K_LIST and (<ListBody *>p).length:
            problems.append("list at %d has items but no items block" % off)
        elif kind == K_DICT and sub and (not gc_valid_ref(seg, sub) or
                                         blk_kind(<Block *>(seg.base + sub)) != K_TABLE):
            problems.append("dict at %d points at %d, not a table" % (off, sub))
    elif kind == K_TABLE:
        chk_table(seg, off, <TableHdr *>p, size, problems, probes, out)
    return out


cdef chk_table(Segment seg, uint64_t off, TableHdr *th, uint64_t size, list problems, list probes, list out):
    """Check table block `off` (payload th of size bytes): sizes, slots,
    entries, each entry found by its own probe; its references go to out."""
    cdef uint64_t i, nslots, cap, nent, count
    cdef Entry *ents
    cdef uint8_t *index
    cdef uint64_t iw
    cdef int32_t ix
    cdef int64_t plen, longest = 0
    nslots = th.nslots
    cap = th.capacity
    nent = th.nentries
    count = th.count
    if not table_sizes_ok(nslots, cap, nent, size) or count > nent:
        problems.append("table at %d has inconsistent sizes" % off)
        return
    index = table_index_of(th)
    iw = index_width(nslots)
    ents = table_entries_of(th, nslots)
    live = 0
    slots = {}
    empty = 0
    for i in range(nslots):
        ix = ix_get(index, iw, i)
        if ix == IX_EMPTY:
            empty += 1
        if ix >= 0:
            if <uint64_t>ix >= nent or ix in slots:
                problems.append("table at %d: slot %d points at entry %d" % (off, i, ix))
            slots[ix] = i
        elif ix != IX_EMPTY and ix != IX_DUMMY:
            problems.append("table at %d: slot %d holds %d" % (off, i, ix))
    for i in range(nent):
        if ents[i].key.b[0] == T_EMPTY:
            continue
        live += 1
        if ents[i].key.b[0] == T_PACKED:
            kl = ents[i].key.b[1] & 0x7f
            if (kl > INLINE_MAX or kl + (ents[i].key.b[3] & 0x7f) > PACKED_MAX
                    or (ents[i].key.b[2] != T_SSTR and ents[i].key.b[2] != T_SBYTES)):
                problems.append("table at %d: packed entry %d has bad lengths" % (off, i))
        if i not in slots:
            problems.append("table at %d: entry %d is in no slot" % (off, i))
        else:
            plen = st_probe_length(seg, index, nslots, entry_hash(seg, &ents[i]), slots[i])
            if plen < 0:
                problems.append("table at %d: entry %d is not found by its own probe" % (off, i))
            elif plen > longest:
                longest = plen
        if ents[i].key.b[0] != T_PACKED:
            chk_cells(seg, &ents[i].key, 1, off, problems, out)
            chk_cells(seg, &ents[i].value, 1, off, problems, out)
    if live != count:
        problems.append("table at %d counts %d entries, holds %d" % (off, count, live))
    if empty == 0 or nslots - empty > cap:
        problems.append("table at %d has %d empty slots for %d entries of capacity %d: "
                        "probes may not end" % (off, empty, nent, cap))
    if probes is not None:
        probes.append((off, nslots, longest))


cdef chk_cells(Segment seg, Cell *cells, uint64_t n, uint64_t owner, list problems, list out):
    cdef uint64_t i, off
    cdef uint8_t tag
    for i in range(n):
        tag = cells[i].b[0]
        if tag == T_EMPTY or tag > T_LAST:
            problems.append("block at %d holds a cell with tag %d" % (owner, tag))
        elif (tag == T_SSTR or tag == T_SBYTES) and (cells[i].b[1] & 0x7f) > INLINE_MAX:
            problems.append("block at %d holds an inline string of %d bytes" % (owner, cells[i].b[1] & 0x7f))
        elif tag >= T_FIRST_REF:
            off = ds_ld64(&cells[i].b[8])
            out.append(off)
            if gc_valid_ref(seg, off) and blk_kind(<Block *>(seg.base + off)) != <uint32_t>tag_kind(tag):
                problems.append("block at %d holds a cell of tag %d that points at a %s block"
                                % (owner, tag, _kind_name(blk_kind(<Block *>(seg.base + off)))))
            elif (tag == T_DICT or tag == T_LIST) and gc_valid_ref(seg, off) and (
                    ds_ld32(&cells[i].b[4]) != (<Block *>(seg.base + off)).gen):
                problems.append("block at %d refers to the container at %d with a stale generation"
                                % (owner, off))


def probe_bound(nslots):
    """The probe length past which check() warns, for a table of `nslots`
    slots: 64 + 16 * log2(nslots). Keys with independent random hashes stay
    far below it (the longest probe of a full table of 2**20 slots is about
    100, against a bound of 384); going beyond it takes many keys with one
    hash, which nobody can choose without the segment's seed."""
    return 64 + 16 * (int(nslots).bit_length() - 1)


class CheckReport:
    """The result of Segment.check(): `ok`, a list of readable `problems`,
    `garbage`: bytes in unreachable cycles that collect() will free (not a
    problem), `max_probe`: the most probes past the first slot that finding
    a key of any dict takes, and `warnings`: tables whose longest probe
    exceeds probe_bound() (not damage, so not a problem: many keys share a
    hash)."""

    __slots__ = ("problems", "garbage", "warnings", "max_probe")

    def __init__(self, problems, garbage=0, warnings=(), max_probe=0):
        self.problems = list(problems)
        self.garbage = garbage
        self.warnings = list(warnings)
        self.max_probe = max_probe

    @property
    def ok(self):
        return not self.problems

    def __bool__(self):
        return self.ok

    def __repr__(self):
        if self.ok:
            return "<CheckReport ok%s%s>" % (", %d bytes of garbage" % self.garbage if self.garbage else "",
                                             ", %d warnings: %s" % (len(self.warnings), self.warnings[0])
                                             if self.warnings else "")
        return "<CheckReport %d problems: %s>" % (len(self.problems), "; ".join(self.problems[:5]))


def _kind_name(int kind):
    return {K_FREE: "free", K_STR: "str", K_BYTES: "bytes", K_BIGINT: "int", K_TUPLE: "tuple",
            K_DICT: "dict", K_LIST: "list", K_TABLE: "table", K_ITEMS: "items",
            K_KTUPLE: "key", K_JOURNAL: "journal"}.get(kind, "?")


cdef chk_report(Segment seg):
    """Segment.check(): the CheckReport of a walk under the lock."""
    problems = []
    garbage = [0]
    probes = []                 # (table, nslots, longest probe) of every table walked
    lock_acquire(seg, -1)
    was = gc_off()                  # no finalizer runs under the lock
    try:
        chk_check(seg, problems, garbage, probes)
        _nt_check(seg, problems)
    except CorruptSegmentError as e:
        problems.append(str(e))
    finally:
        gc_restore(was)
        lock_release(seg)
    if ds_fault_flag(&seg.faulted):
        problems.insert(0, "segment %r was truncated or damaged by another process" % seg.name)
    warnings = ["table at %d: a key is found after %d probes, beyond the bound of %d for %d slots "
                "(many keys share a hash)" % (t, m, probe_bound(ns), ns)
                for t, ns, m in probes if m > probe_bound(ns)]
    return CheckReport(problems, garbage[0], warnings, max([m for t, ns, m in probes], default=0))
