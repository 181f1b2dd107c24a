# Change notifications: the wait area and the waits (included by _heap.pyx).
#
# The mechanism is described in include/dshared_notify.h. Here: finding and
# checking the wait area (nt_attach), creating it on first use
# (nt_ensure), the hooks of the write path (nt_bump under the lock at the
# end of a write, nt_wake after the lock's release), the wait itself
# (nt_wait) and the repair of dead waiters' counts (nt_check).

from posix.unistd cimport getpid
import threading as _threading

cdef extern from "dshared_notify.h" nogil:
    ctypedef struct ds_nt_bucket:
        uint32_t seq
        uint32_t waiters
    int ENOSYS
    int EAGAIN
    int ds_nt_hook_no_wake
    uint64_t ds_nt_wake_calls
    ds_nt_bucket *ds_nt_bk(char *area, unsigned b)
    uint64_t *ds_nt_rec(char *area, unsigned i)
    uint32_t ds_nt_seq(char *area, unsigned b)
    void ds_nt_bump(char *area, ds_nt_pend *p)
    void ds_nt_wake(char *area, ds_nt_pend *p, int unlocked)
    int ds_nt_claim(char *area, unsigned b, uint32_t pid)
    void ds_nt_count(char *area, uint32_t k)
    void ds_nt_mark(char *area, int r)
    void ds_nt_leave(char *area, int r)
    void ds_nt_uncount(char *area, uint32_t k)
    void ds_nt_release(char *area, int r, unsigned b)
    unsigned ds_nt_rec_bucket(uint64_t v)
    int ds_nt_wait1(char *area, unsigned b, uint32_t val, long ms)
    int ds_nt_waitv_addrs(uint32_t **addrs, const uint32_t *vals, unsigned n, long ms)
    ctypedef struct ds_nt_tally:
        uint32_t cnt[DS_NT_BUCKETS]
        uint32_t total
        int busy
        long fixed
    void ds_nt_repair_scan(char *area, ds_nt_tally *t)
    void ds_nt_repair_apply(char *area, ds_nt_tally *t)
    int ds_nt_hook_die_at
    uint64_t ds_nt_settle_gave_up
    int ds_nt_hook_no_recount
    uint64_t DS_NT_COUNTED
    uint64_t DS_NT_BUSY
    uint32_t __atomic_load_n(uint32_t *p, int order)
    int __ATOMIC_ACQUIRE
    int ds_nt_pid_dead(uint32_t pid)


cdef uint64_t NT_PAYLOAD = sizeof(BytesHdr) + 64 + DS_NT_BYTES     # length word, alignment slack, the area
cdef long NT_SLICE_MS = 50                          # a wait in the main thread re-checks signals and its containers this often
cdef long NT_SLICE_THREAD_MS = 250                  # ... in another thread (no signal handler runs there)
cdef long NT_POLL_MS = 2                            # ... and this often when it could not register
cdef bint _nt_no_waitv = False                      # futex_waitv is missing (Linux < 5.16)


cdef inline void nt_bump(Segment seg) noexcept nogil:
    """End of a write, under the lock, the write published: bump what it changed."""
    if seg.nt_area != NULL and (seg.nt.done != seg.nt.n or seg.nt.all == 1):
        ds_nt_bump(seg.nt_area, &seg.nt)


cdef inline void nt_wake(Segment seg, bint unlocked) noexcept nogil:
    """Just after the lock's release: wake the changed buckets that have waiters."""
    if seg.nt.n != 0 or seg.nt.all != 0:
        if seg.nt_area != NULL:
            ds_nt_wake(seg.nt_area, &seg.nt, unlocked)
        seg.nt.n = seg.nt.done = seg.nt.all = 0


cdef int nt_ensure(Segment seg) except -1:
    """Make sure the segment has a wait area (allocated on first use)."""
    cdef uint64_t off, a
    cdef char *p
    cdef int why
    seg_check_open(seg)
    seg_read_limit(seg)
    if seg.nt_area != NULL or nt_attach(seg):
        return 0
    wr_begin(seg)
    try:
        if not nt_attach(seg):
            if seg.hdr.waits != 0:
                raise CorruptSegmentError("segment %r: its wait area (at %d) is damaged"
                                          % (seg.name, seg.hdr.waits))
            off = blk_alloc(seg, NT_PAYLOAD, K_BYTES, &why)
            if off == 0:
                blk_raise_full(seg, NT_PAYLOAD, why)
            p = blk_payload(seg.base, off)
            memset(p, 0, NT_PAYLOAD)
            bytes_hdr(seg.base, off).length = NT_PAYLOAD - sizeof(BytesHdr)
            a = (off + BLOCK_HDR + sizeof(BytesHdr) + 63) & ~(<uint64_t>63)
            ds_nt_headp(seg.base + a).magic = DS_NT_MAGIC
            blk_incref(seg, off)                 # held by the header, as the roots are
            ds_fence_release()
            seg.hdr.waits = off
            nt_attach(seg)
        wr_commit(seg)
    finally:
        wr_end(seg)
    return 0


def _nt_version(Segment seg not None, unsigned bucket):
    """The seq of a bucket (the wait area created if need be)."""
    if seg.nt_area == NULL:
        nt_ensure(seg)
    return ds_nt_seq(seg.nt_area, bucket % DS_NT_BUCKETS)


cdef bint _nt_gone(Segment seg, uint64_t off, uint32_t gen, int kind) noexcept:
    """The container a wait watches was freed (or the segment closed)."""
    cdef Block *b
    if seg.base == NULL:
        return True
    seg_read_limit(seg)
    if not seg_inb(seg, off, BLOCK_HDR):
        return True
    b = <Block *>(seg.base + off)
    return b.gen != gen or blk_kind(b) != <uint32_t>kind


cdef void _nt_count(char **areas, int *recs, unsigned nu, bint up) noexcept nogil:
    """Count (up) or uncount the claimed records in nwaiters: one atomic
    add per distinct area (segment); records are marked COUNTED after the
    counts go up and BUSY again before they go down (see ds_nt_claim)."""
    cdef unsigned j, k, nd = 0
    cdef char *dist[8]                 # the distinct areas (segments); more are counted one by one
    cdef uint32_t cnt[8]
    if not up:
        for j in range(nu):
            if areas[j] != NULL:
                ds_nt_leave(areas[j], recs[j])
    for j in range(nu):
        if areas[j] == NULL or recs[j] < 0:
            continue
        for k in range(nd):
            if dist[k] == areas[j]:
                cnt[k] += 1
                break
        else:
            if nd < 8:
                dist[nd] = areas[j]
                cnt[nd] = 1
                nd += 1
            elif up:
                ds_nt_count(areas[j], 1)
            else:
                ds_nt_uncount(areas[j], 1)
    for k in range(nd):
        if up:
            ds_nt_count(dist[k], cnt[k])
        else:
            ds_nt_uncount(dist[k], cnt[k])
    if up:
        for j in range(nu):
            if areas[j] != NULL:
                ds_nt_mark(areas[j], recs[j])


cdef struct NtWait:
    # per target: its word and version; per distinct word (nu of them): its
    # address, version, wait area, bucket, registration, first target
    Py_ssize_t n
    unsigned nu
    uint32_t **tw
    uint32_t *tv
    uint32_t **addrs
    uint32_t *vals
    int *recs
    char **areas
    unsigned *bks
    Py_ssize_t *useg
    bint unregistered               # a registration failed: poll every NT_POLL_MS


def _nt_wait(list targets, timeout):
    """Wait until one of the targets changes: each target is (segment,
    container offset, generation, kind, bucket, version). Returns the
    indices of the targets whose bucket moved from its version or whose
    container is gone, or [] when `timeout` seconds (None: no limit) pass
    first. The GIL is released while asleep; in the main thread signals are
    checked at least every NT_SLICE_MS (a signal to it ends the sleep at
    once); a container freed while a wait on one of its keys sleeps is
    noticed within a slice (a wait on the container itself is woken)."""
    cdef NtWait w
    cdef bint counted = False
    cdef double deadline = 0
    if len(targets) == 0:
        raise ValueError("nothing to wait for")
    segs = _nt_wait_segments(targets)
    cdef long slice_ms = NT_SLICE_MS if _threading.current_thread() is _threading.main_thread() else NT_SLICE_THREAD_MS
    if timeout is not None:
        deadline = _time.monotonic() + max(0.0, float(timeout))
    _nt_wait_alloc(&w, len(targets))
    try:
        _nt_register(&w, targets, segs)
        _nt_count(w.areas, w.recs, w.nu, True)
        counted = True
        return _nt_sleep(&w, targets, segs, timeout, deadline, slice_ms)
    finally:
        _nt_unregister(&w, segs, counted)
        _nt_wait_free(&w)


cdef list _nt_wait_segments(list targets):
    """The segment of each target, checked open, with a wait area, and not
    locked by this thread."""
    cdef Segment seg
    segs = []
    for t in targets:
        if t[0] is None:
            raise TypeError("not a segment: None")
        seg = <Segment?>t[0]
        seg_check_open(seg)
        if lock_held(seg):
            raise RuntimeError("segment %r: wait() inside a lock() or transaction() block would never "
                               "return (the writer it waits for needs the lock this thread holds); "
                               "read the version inside the block and wait after it" % seg.name)
        if seg.nt_area == NULL:
            nt_ensure(seg)
        segs.append(seg)
    return segs


cdef int _nt_wait_alloc(NtWait *w, Py_ssize_t n) except -1:
    memset(w, 0, sizeof(NtWait))
    w.n = n
    w.tw = <uint32_t **>malloc(n * sizeof(uint32_t *))
    w.tv = <uint32_t *>malloc(n * sizeof(uint32_t))
    w.addrs = <uint32_t **>malloc(n * sizeof(uint32_t *))
    w.vals = <uint32_t *>malloc(n * sizeof(uint32_t))
    w.recs = <int *>malloc(n * sizeof(int))
    w.areas = <char **>malloc(n * sizeof(char *))
    w.bks = <unsigned *>malloc(n * sizeof(unsigned))
    w.useg = <Py_ssize_t *>malloc(n * sizeof(Py_ssize_t))
    if (not w.tw or not w.tv or not w.addrs or not w.vals or not w.recs or not w.areas or not w.bks
            or not w.useg):
        _nt_wait_free(w)
        raise MemoryError()
    return 0


cdef void _nt_wait_free(NtWait *w) noexcept:
    c_free(w.tw); c_free(w.tv); c_free(w.addrs); c_free(w.vals); c_free(w.recs); c_free(w.areas)
    c_free(w.bks); c_free(w.useg)
    w.tw = w.addrs = NULL
    w.tv = w.vals = NULL
    w.recs = NULL
    w.areas = NULL
    w.bks = NULL
    w.useg = NULL


cdef int _nt_register(NtWait *w, list targets, list segs) except -1:
    """One registration per distinct word (w.nu counts those made, so that
    a failure part way is undone by _nt_unregister)."""
    cdef Py_ssize_t i, j
    cdef Segment seg
    cdef uint32_t pid = <uint32_t>getpid()
    cdef unsigned b
    cdef uint32_t v
    cdef uint32_t *word
    for i in range(w.n):
        seg = <Segment>segs[i]
        b = <unsigned>(targets[i][4] % DS_NT_BUCKETS)
        v = <uint32_t>(targets[i][5] & 0xffffffff)
        word = <uint32_t *>&ds_nt_bk(seg.nt_area, b).seq
        w.tw[i] = word
        w.tv[i] = v
        for j in range(w.nu):
            if w.addrs[j] == word and w.vals[j] == v:
                break
        else:
            j = w.nu
            w.addrs[j] = word
            w.vals[j] = v
            w.areas[j] = seg.nt_area
            w.bks[j] = b
            w.useg[j] = i
            w.recs[j] = ds_nt_claim(seg.nt_area, b, pid)
            if w.recs[j] < 0:
                w.unregistered = True
            w.nu += 1
    return 0


cdef list _nt_sleep(NtWait *w, list targets, list segs, timeout, double deadline, long slice_ms):
    """Sleep in slices until a word moves, a container is gone or the
    deadline passes; returns the indices of _nt_wait."""
    global _nt_no_waitv
    cdef Py_ssize_t i, n = w.n
    cdef unsigned nu = w.nu
    cdef long ms
    cdef int rc
    cdef bint moved
    cdef Segment seg
    distinct = list({id(x): x for x in segs}.values())
    while True:
        for seg in distinct:
            if seg.base == NULL:
                seg_check_open(seg)    # closed by another thread meanwhile: raises
        moved = False
        for i in range(n):
            if __atomic_load_n(w.tw[i], __ATOMIC_ACQUIRE) != w.tv[i]:
                moved = True
                break
        if moved:
            return [i for i in range(n) if __atomic_load_n(w.tw[i], __ATOMIC_ACQUIRE) != w.tv[i]]
        # nothing moved: a slice ended, or a neighbour woke us; a freed container ends the wait
        changed = [i for i in range(n)
                   if targets[i][1] and _nt_gone(<Segment>segs[i], targets[i][1], targets[i][2], targets[i][3])]
        if changed:
            return changed
        ms = slice_ms
        if w.unregistered or nu > DS_NT_WAITV_MAX or (nu > 1 and _nt_no_waitv):
            ms = NT_POLL_MS
        if timeout is not None:
            left = deadline - _time.monotonic()
            if left <= 0:
                return []
            if left * 1000 < ms:
                ms = max(1, <long>(left * 1000))
        with nogil:
            # the words stay mapped unless another thread closes the segment:
            # then the kernel answers EFAULT, and the loop above raises
            if nu == 1 or _nt_no_waitv:
                rc = ds_nt_wait1(w.areas[0], w.bks[0], w.vals[0], ms)
            else:
                rc = ds_nt_waitv_addrs(w.addrs, w.vals, nu if nu < DS_NT_WAITV_MAX else DS_NT_WAITV_MAX, ms)
                if rc == ENOSYS:
                    _nt_no_waitv = True
        PyErr_CheckSignals()


cdef void _nt_unregister(NtWait *w, list segs, bint counted) noexcept:
    """Undo _nt_register (and the counts, when `counted`); a closed
    segment's counts stay (too high: harmless)."""
    cdef Py_ssize_t j
    for j in range(w.nu):
        if (<Segment>segs[w.useg[j]]).base == NULL:
            w.areas[j] = NULL
    if counted:
        _nt_count(w.areas, w.recs, w.nu, False)
    else:
        for j in range(w.nu):
            if w.areas[j] != NULL:
                ds_nt_leave(w.areas[j], w.recs[j])
    for j in range(w.nu):
        if w.areas[j] != NULL:
            ds_nt_release(w.areas[j], w.recs[j], w.bks[j])


cdef _nt_check(Segment seg, list problems):
    """Under the lock, in check(): the wait area's block and records, then
    the repair (see ds_nt_repair_scan): the records of waiters whose
    process is gone are removed and the counts recounted (a correction, not
    damage). Between its two steps, when no waiter is part way, a count
    below its live registered waiters is damage: a change may not wake
    them."""
    cdef char *area
    cdef uint64_t v
    cdef unsigned i
    cdef ds_nt_tally t
    if seg.hdr.waits == 0:
        return
    if not nt_attach(seg):
        problems.append("the wait area at %d is not a wait area" % seg.hdr.waits)
        return
    area = seg.nt_area
    for i in range(<unsigned>DS_NT_RECORDS):
        v = ds_nt_rec(area, i)[0]
        if v != 0 and ds_nt_rec_bucket(v) >= DS_NT_BUCKETS:
            problems.append("wait record %d names bucket %d" % (i, ds_nt_rec_bucket(v)))
    ds_nt_repair_scan(area, &t)
    try:
        if not t.busy:
            for i in range(<unsigned>DS_NT_BUCKETS):
                if ds_nt_bk(area, i).waiters < t.cnt[i]:
                    problems.append("wait bucket %d counts %d waiters, %d are registered: a change may "
                                    "not wake them" % (i, ds_nt_bk(area, i).waiters, t.cnt[i]))
            if ds_nt_headp(area).nwaiters < t.total:
                problems.append("the wait area counts %d waiters, %d are registered: a change may not "
                                "wake them" % (ds_nt_headp(area).nwaiters, t.total))
    finally:
        ds_nt_repair_apply(area, &t)


def _nt_stats(Segment seg not None):
    """The wait area's counts (for tests and stats): None without one."""
    cdef char *area
    cdef uint64_t v
    cdef unsigned i
    seg_check_open(seg)
    seg_read_limit(seg)
    if seg.nt_area == NULL and not nt_attach(seg):
        return None
    area = seg.nt_area
    records = []
    for i in range(<unsigned>DS_NT_RECORDS):
        v = ds_nt_rec(area, i)[0]
        if v:
            records.append((v >> 32, ds_nt_rec_bucket(v), v & 1))
    return {"area": <uint64_t>(area - seg.base), "nwaiters": ds_nt_headp(area).nwaiters,
            "repairer": ds_nt_headp(area).repairer,
            "settle_gave_up": ds_nt_settle_gave_up,     # this process's, in every segment
            "bucket_waiters": sum(ds_nt_bk(area, i).waiters for i in range(<unsigned>DS_NT_BUCKETS)),
            "records": records}


def _nt_hooks(no_wake=None, slice_ms=None, die_at=None, no_recount=None):
    """Test hooks: no_wake disables the FUTEX_WAKE of writers (the meta-test
    of the lost wake-up test); slice_ms sets how long one sleep of a wait
    lasts before it re-checks (a long slice makes a lost wake-up show as a
    timeout instead of a late return); die_at makes this process SIGKILL
    itself at that step of registering or unregistering a wait (1-6, see
    dshared_notify.h; 0 off); no_recount keeps check()'s repair from
    recounting the wait counts (the meta-test of the killed-at-every-step
    test). Returns the FUTEX_WAKE calls made by this process since the last
    call."""
    global ds_nt_hook_no_wake, ds_nt_wake_calls, NT_SLICE_MS, NT_SLICE_THREAD_MS
    global ds_nt_hook_die_at, ds_nt_hook_no_recount
    if no_wake is not None:
        ds_nt_hook_no_wake = 1 if no_wake else 0
    if die_at is not None:
        ds_nt_hook_die_at = int(die_at)
    if no_recount is not None:
        ds_nt_hook_no_recount = 1 if no_recount else 0
    if slice_ms is not None:
        NT_SLICE_MS = NT_SLICE_THREAD_MS = max(1, int(slice_ms))
    n = ds_nt_wake_calls
    ds_nt_wake_calls = 0
    return n


cdef void _nt_keys(Segment seg, uint64_t d, const Key *keys, uint64_t n) noexcept nogil:
    cdef uint64_t i
    if seg.nt_area == NULL and not nt_attach(seg):
        return
    if n > DS_NT_PEND:
        nt_all(seg)
        return
    for i in range(n):
        nt_key(seg, d, keys[i].hash)
