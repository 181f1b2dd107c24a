# Memory the system backs for the heap (included by _heap.pyx at module level).
#
# Free runs inside the heap of PUNCH_MIN bytes or more hand their whole pages
# back to the system (fallocate PUNCH_HOLE | KEEP_SIZE), with any number of
# handles attached and lock-free readers running. A free block whose pages
# may be holes carries PUNCHED in its kind word (bit 8; a free block has no
# refcount) and, in its FreeBody (heap/layout.pxd), the range [hf, he) in
# which holes may lie: every page outside it is backed. The first FREE_KEEP
# (64) bytes of a free block (its header, list links and that range) are
# never punched.
#
# Invariant: [HEADER_SIZE, reserved) is backed except holes inside PUNCHED
# free blocks, within their recorded range. So:
#   - allocation from a PUNCHED block backs the pages it hands out first
#     (fallocate mode 0, a chunk ahead so that small blocks carved one after
#     another cost one call per chunk); ENOSPC fails the allocation cleanly,
#     as reserving at the top does; a write never touches a hole;
#   - reserving at the top backs only [reserved, want), never the holes below;
#   - a repair that rebuilds the free lists marks every large run PUNCHED from
#     its start (backing again what is backed costs a call, nothing more).
#
# Readers: a lock-free reader that follows a stale offset into a handed-back
# page reads zeros (it then fails its sequence or generation check and
# retries, as for any reused bytes); on tmpfs that read backs the page again
# (one page, until the run is freed again). Only when /dev/shm is full can
# that read fault; the fault handler then turns it into CorruptSegmentError
# for that handle (dshared_fault.h).

cdef uint64_t PUNCH_MIN = 64 << 10     # free runs this large hand their pages back
cdef uint64_t PUNCH_PIECE = 16 << 10   # a freed piece next to a punched run: at least this much
cdef uint64_t REBACK_AHEAD = 256 << 10 # allocation from a punched run backs this much ahead
cdef uint64_t RETAIN_MIN = 2 << 20     # free space below the top kept backed: at least this ...
cdef uint64_t RETAIN_DIV = 8           # ... or used / RETAIN_DIV (see punch_over_budget)
cdef uint32_t PUNCHED = 0x100          # in a free block's kind_rc
cdef uint64_t PAGE = 4096

cdef long _punch_calls = 0             # fallocate calls, for tests (punch_counters)
cdef long _reback_calls = 0
cdef long _budget_checks = 0           # fstat calls of punch_over_budget, for tests
cdef bint _hook_no_punch = False       # tests: free runs keep their pages


cdef inline uint64_t page_up(uint64_t x) noexcept nogil:
    return (x + PAGE - 1) & ~(PAGE - 1)


cdef inline uint64_t page_down(uint64_t x) noexcept nogil:
    return x & ~(PAGE - 1)


cdef inline bint punch_is(Segment seg, uint64_t off) noexcept nogil:
    """The free block at off may hold holes."""
    return ((<Block *>(seg.base + off)).kind_rc & PUNCHED) != 0


cdef inline void punch_range(Segment seg, uint64_t off, uint64_t *hf, uint64_t *he) noexcept nogil:
    """[hf, he): where the PUNCHED free block at off may hold holes (all of
    it past its first FREE_KEEP bytes if the recorded range is damaged: that
    only costs backing calls)."""
    cdef uint64_t end = off + <uint64_t>(<Block *>(seg.base + off)).size16 * ALIGN
    cdef FreeBody *fb = free_body(seg.base + off)
    hf[0] = fb.hole_from
    he[0] = fb.hole_end
    if hf[0] < off + FREE_KEEP or hf[0] > he[0] or he[0] > end:
        hf[0] = off + FREE_KEEP
        he[0] = end


cdef inline void punch_mark(Segment seg, uint64_t off, bint punched, uint64_t hf, uint64_t he) noexcept nogil:
    """Set the free block at off PUNCHED with holes in [hf, he), or plain."""
    cdef Block *b = <Block *>(seg.base + off)
    cdef FreeBody *fb = free_body(seg.base + off)
    if punched and he > hf:
        fb.hole_from = hf
        fb.hole_end = he
        b.kind_rc = K_FREE | PUNCHED
    else:
        b.kind_rc = K_FREE


cdef int punch_reback(Segment seg, uint64_t off, uint64_t have16, uint64_t need,
                      uint64_t *hf, uint64_t *he) noexcept nogil:
    """Before `need` bytes are carved from the PUNCHED free block at off
    (have16 its size): back what the new block and the rest's first
    FREE_KEEP bytes will touch, and a chunk ahead. Returns 0, or an errno (nothing
    changed then); hf and he: the holes that remain, [hf, he)."""
    global _reback_calls
    cdef uint64_t want, lo
    cdef int rc
    punch_range(seg, off, hf, he)
    if off + need + FREE_KEEP <= hf[0]:
        return 0
    want = page_up(off + need + FREE_KEEP + REBACK_AHEAD)
    if want > he[0]:
        want = he[0]
    lo = page_down(hf[0])
    if want > lo:
        _reback_calls += 1
        rc = fallocate(seg.fd, FALLOC_FL_KEEP_SIZE, <long>lo, <long>(page_up(want) - lo))
        if rc != 0:
            return errno
        ds_populate(seg.base + lo, page_up(want) - lo)
    hf[0] = want
    return 0


cdef inline void punch_split(Segment seg, uint64_t rest, bint was_punched, uint64_t hf, uint64_t he) noexcept nogil:
    """The rest of a split block, at rest: PUNCHED if holes remain in [hf, he)."""
    if was_punched and he > hf and hf >= rest + FREE_KEEP:
        punch_mark(seg, rest, True, hf, he)
    else:
        punch_mark(seg, rest, False, 0, 0)


cdef bint punch_over_budget(Segment seg) noexcept nogil:
    """Hysteresis: free space below the top stays backed up to a budget
    (RETAIN_MIN, or used / RETAIN_DIV if more), so that a value of a few
    MiB overwritten again and again, or a dict that grows by small steps,
    reuses backed pages instead of handing them back only to have the
    system zero them again. The free backed bytes are measured (one fstat:
    this runs only when a free run of PUNCH_MIN or more forms)."""
    cdef Header *h = seg.hdr
    cdef struct_stat st
    cdef uint64_t backed, other, budget
    global _budget_checks
    _budget_checks += 1
    if fstat(seg.fd, &st) != 0:
        return True
    backed = <uint64_t>st.st_blocks * 512
    # what is backed for something else than free space below the top
    other = HEADER_SIZE + h.used + (h.reserved - h.top if h.reserved > h.top else 0)
    budget = h.used // RETAIN_DIV
    if budget < RETAIN_MIN:
        budget = RETAIN_MIN
    return backed > other + budget


# The last free run found within the budget (punch_budget_due): the segment's
# mapping, and the run's bounds.
cdef char *_pb_base = NULL
cdef uint64_t _pb_lo = 0
cdef uint64_t _pb_hi = 0


cdef bint punch_budget_due(Segment seg, uint64_t m_off, uint64_t end) noexcept nogil:
    """Whether to measure the budget (an fstat) for the free run [m_off, end).
    Blocks freed one after another (a list cleared, a run of values deleted)
    grow one run by a few bytes per free: it is measured again only once it
    has grown by PUNCH_PIECE since it was last found within the budget, not
    at every free (one fstat per freed value made clear() of a list of
    100,000 str 40x slower). What this defers: handing back at most
    PUNCH_PIECE more of that run."""
    global _pb_base, _pb_lo, _pb_hi
    if (_pb_base == seg.base and m_off <= _pb_lo and end >= _pb_hi
            and (end - m_off) - (_pb_hi - _pb_lo) < PUNCH_PIECE):
        return False
    _pb_base = seg.base
    _pb_lo = m_off
    _pb_hi = end
    return True


cdef void punch_free_run(Segment seg, uint64_t m_off, uint64_t size16, uint64_t lo, uint64_t hi,
                         bint below_p, uint64_t bhf, uint64_t bhe,
                         bint up_p, uint64_t uhf, uint64_t uhe) noexcept nogil:
    """A free run [m_off, m_off + size16 * 16) was just made by merging; its
    backed part around the freed block is [lo, hi). Hand back the whole
    pages of that part when the run is large enough, then mark the run:
    holes may be anywhere from the lowest to the highest of its parts'."""
    global _punch_calls
    cdef uint64_t end = m_off + size16 * ALIGN, a, z, hf = end, he = m_off
    cdef bint punched = False
    if below_p:
        hf = bhf
        he = bhe
    if up_p:
        if uhf < hf:
            hf = uhf
        if uhe > he:
            he = uhe
    if size16 * ALIGN >= PUNCH_MIN and not _hook_no_punch:
        a = page_up(lo if lo > m_off + FREE_KEEP else m_off + FREE_KEEP)
        z = page_down(hi if hi < end else end)
        if z > a and z - a >= PUNCH_PIECE and punch_budget_due(seg, m_off, end) and punch_over_budget(seg):
            _punch_calls += 1
            if fallocate(seg.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, <long>a, <long>(z - a)) == 0:
                punched = True
                if a < hf:
                    hf = a
                if z > he:
                    he = z
    punch_mark(seg, m_off, punched or below_p or up_p, hf, he)


cdef void punch_lower_reserve(Segment seg, uint64_t upto) noexcept nogil:
    """The top came down over free space that may hold holes: nothing from
    `upto` (above the top) on is known to be backed, so it is no longer
    reserved, and is handed back whole (reserving again backs it)."""
    cdef Header *h = seg.hdr
    cdef uint64_t old = h.reserved
    upto = page_up(upto)
    if upto < h.top or upto >= old:
        return
    h.reserved = upto
    seg_read_limit(seg)
    fallocate(seg.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, <long>upto, <long>(old - upto))


def punch_counters(reset=False, no_punch=None):
    """Test hook: (hole punches, re-backing calls) so far in this process;
    reset sets them to 0; no_punch=True keeps free runs backed (the old
    behaviour), False restores punching."""
    global _punch_calls, _reback_calls, _hook_no_punch
    r = (_punch_calls, _reback_calls)
    if reset:
        _punch_calls = _reback_calls = 0
    if no_punch is not None:
        _hook_no_punch = bool(no_punch)
    return r


def punch_budget_checks(reset=False):
    """Test hook: how many times this process measured the free-space budget
    (one fstat each); reset sets the count to 0."""
    global _budget_checks
    r = _budget_checks
    if reset:
        _budget_checks = 0
    return r
