# The mapping of a segment: map, header, reserve and shrink, the file
# description after a fork, close; the raisers of the checked accessors
# (included by _heap.pyx at module level).


cdef seg_map(Segment seg, uint64_t cap):
    cdef void *m = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, seg.fd, 0)
    cdef int rc
    if m == MAP_FAILED:
        e = errno
        raise OSError(e, os.strerror(e), seg.name)
    # a fault on the mapping (its file truncated) is repaired and reported
    # through seg.faulted instead of killing the process
    seg.faulted = 0
    rc = ds_fault_register(m, cap, seg.fd, &seg.faulted)
    if rc:
        munmap(m, cap)
        raise OSError(rc, "cannot watch segment %r for faults: %s" % (seg.name, os.strerror(rc)))
    seg.base = <char *>m
    seg.hdr = <Header *>m
    seg.cap = cap
    seg.lim = HEADER_SIZE          # nothing to read until the header is known (seg_read_limit)


cdef seg_init_header(Segment seg, uint64_t reserved):
    cdef Header *h = seg.hdr
    cdef int why
    seed = os.urandom(16)
    memset(<char *>h, 0, HEADER_SIZE)
    h.reserved = reserved
    h.version = FORMAT_VERSION
    h.header_size = HEADER_SIZE
    strncpy(h.layout, ds_layout_name(), 31)
    h.mutex_size = ds_mutex_size()
    h.capacity = seg.cap
    h.seed0 = int.from_bytes(seed[:8], "little")
    h.seed1 = int.from_bytes(seed[8:], "little")
    h.top = HEADER_SIZE
    seg_read_limit(seg)
    rc = ds_mutex_init(&h.mutex)
    if rc:
        raise OSError(rc, "cannot initialise the segment mutex: " + os.strerror(rc), seg.name)
    h.root = blk_alloc(seg, sizeof(DictBody), K_DICT, &why)
    h.names = blk_alloc(seg, sizeof(DictBody), K_DICT, &why)
    if not h.root or not h.names:
        raise SegmentFullError("segment %r is too small for its root" % seg.name)
    blk_incref(seg, h.root)
    blk_incref(seg, h.names)
    ds_fence_release()
    ds_store_release(&h.magic, MAGIC)


cdef seg_check_header(Segment seg, uint64_t size):
    cdef Header *h = seg.hdr
    if ds_load_acquire(&h.magic) != MAGIC:
        raise CorruptSegmentError(_not_a_segment(seg.name, "without the dshared magic"))
    if h.version != FORMAT_VERSION or h.header_size != HEADER_SIZE:
        raise CorruptSegmentError("segment %r has format version %d; this dshared reads version %d"
                                  % (seg.name, h.version, FORMAT_VERSION))
    if strncmp(h.layout, ds_layout_name(), 32) != 0 or h.mutex_size != ds_mutex_size():
        raise CorruptSegmentError("segment %r was made on another platform (%s, mutex of %d bytes)"
                                  % (seg.name, h.layout[:31].decode("ascii", "replace"), h.mutex_size))
    if h.capacity != size:
        raise CorruptSegmentError("segment %r: header says %d bytes, the object has %d"
                                  % (seg.name, h.capacity, size))
    seg_read_limit(seg)
    if not seg_inb(seg, h.root, BLOCK_HDR + sizeof(DictBody)) or not seg_inb(seg, h.names, BLOCK_HDR + sizeof(DictBody)):
        raise CorruptSegmentError("segment %r: root offsets out of bounds" % seg.name)
    seg_check_mutex(seg)


cdef int seg_check_mutex(Segment seg) except -1:
    if not ds_mutex_kind_ok(&seg.hdr.mutex):
        if ds_fault_flag(&seg.faulted):
            seg_raise_faulted(seg)
        raise CorruptSegmentError("segment %r: its mutex is not a robust process-shared one "
                                  "(overwritten?); it cannot be locked safely" % seg.name)
    return 0


cdef int seg_reserve(Segment seg, uint64_t upto) noexcept nogil:
    """Back [0, upto) with memory; returns 0 or an errno."""
    cdef uint64_t have = seg.hdr.reserved
    cdef uint64_t want
    cdef int rc
    if upto <= have:
        return 0
    # a little ahead, so that the top does not call the system on every
    # block: what is backed stays within ~6% of the heap (issue 14)
    want = upto + RESERVE_AHEAD
    if want < have + have // 16:
        want = have + have // 16
    want = (want + 4095) & ~(<uint64_t>4095)
    if want > seg.cap:
        want = seg.cap
    if upto > want:
        return 12  # ENOMEM
    # [0, have) is backed already, but for the holes of punched free
    # blocks, which must stay holes (see heap/punch.pxi)
    rc = seg_back(seg.fd, have, want - have)
    if rc == 0:
        ds_populate(seg.base + have, want - have)
        seg.hdr.reserved = want
    return rc


cdef int seg_back(int fd, uint64_t off, uint64_t n) noexcept nogil:
    """Back [off, off + n) of the file with memory; 0 or an errno. The file
    keeps its size (FALLOC_FL_KEEP_SIZE): a segment file another process
    truncated stays truncated, so every attached process meets the fault
    and CorruptSegmentError; a growing write never makes the lost pages
    readable zeros again (posix_fallocate would extend the file)."""
    if fallocate(fd, FALLOC_FL_KEEP_SIZE, <long>off, <long>n) != 0:
        return errno
    return 0


cdef void seg_shrink_reserve(Segment seg) noexcept nogil:
    """Return the pages far above the top to the system: the segment does
    not keep its peak backing. The header is lowered first, so a crash in
    between only leaves more backed than it says.

    This runs with any number of handles attached and lock-free readers
    going on: a reader that still follows an offset into the region
    (it validates only afterwards) reads zeros there and retries, as for
    any bytes a write changed under it (see heap/punch.pxi for what that
    read costs)."""
    cdef Header *h = seg.hdr
    cdef uint64_t keep = (h.top + RESERVE_CHUNK + 4095) & ~(<uint64_t>4095)
    if h.reserved <= keep or h.reserved - keep < SHRINK_MIN or h.reserved - keep < h.reserved // 4:
        return
    if _hook_no_punch:
        return
    cdef uint64_t old = h.reserved
    h.reserved = keep
    seg_read_limit(seg)
    fallocate(seg.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, keep, old - keep)


cdef seg_own_file_description(Segment seg):
    """In a forked child: the inherited descriptor shares the parent's
    file description, and so its flock. Open the segment anew, so that
    this process holds a shared lock of its own and the parent's page
    return (see seg_shrink_reserve) sees it. Where that cannot be done, page
    return is switched off for the segment for good."""
    cdef int fd
    if seg.fd < 0 or seg.hdr == NULL:
        return
    fd = c_open(b"/proc/seg/fd/%d" % seg.fd, O_RDWR | O_CLOEXEC)
    if fd >= 0 and flock(fd, LOCK_SH | LOCK_NB) == 0:
        ds_fault_set_fd(seg.base, fd)
        c_close(seg.fd)            # the parent's lock stays: it still has the description open
        seg.fd = fd
        return
    if fd >= 0:
        c_close(fd)
    ds_atomic_or64(&seg.hdr.flags, FLAG_NO_SHRINK)


cdef seg_unmap_close(Segment seg):
    seg._views = None
    if seg.base != NULL:
        ds_fault_unregister(seg.base)
        if seg.lk is not None and seg.lk.depth > 0 and seg.lk.fork_gen == _fork_gen:
            # this process holds the lock (a thread, or an exit without
            # release): keep the mapping, so that when the holder ends the
            # kernel can still mark the mutex owner-dead for the next locker
            seg.base = NULL
            seg.hdr = NULL
        elif seg.faulted & DS_FAULTED_HEADER:
            # the header page is private zeros now, and this thread's
            # robust-mutex list may still run through the mutex in it
            # (a lock held when the page went): keep that page mapped
            munmap(seg.base + ds_fault_pagesize, seg.cap - ds_fault_pagesize)
            seg.base = NULL
            seg.hdr = NULL
        else:
            munmap(seg.base, seg.cap)
            seg.base = NULL
            seg.hdr = NULL
    if seg.fd >= 0:
        c_close(seg.fd)
        seg.fd = -1


cdef int seg_check_open(Segment seg) except -1:
    if seg.base == NULL:
        raise ValueError("segment %r is closed" % seg.name)
    return 0


cdef int seg_raise_faulted(Segment seg) except -1:
    """The mapping faulted (its file was truncated, or its memory could
    not be backed): nothing read from it can be trusted any more, so
    every operation of this handle raises from now on."""
    raise CorruptSegmentError("segment %r was truncated or damaged by another process" % seg.name)


cdef char *seg_ptr(Segment seg, uint64_t off, uint64_t n) except NULL:
    if seg.base == NULL:
        seg_check_open(seg)
    if not seg_inb(seg, off, n):
        if ds_fault_flag(&seg.faulted):
            seg_raise_faulted(seg)
        raise CorruptSegmentError("offset %d + %d is outside segment %r" % (off, n, seg.name))
    return seg.base + off


cdef int seg_raise_corrupt(Segment seg, str msg) except -1:
    """The out-of-line raiser of the inline readers (heap/*.pxd)."""
    raise CorruptSegmentError(msg)


cdef Block *seg_bad_block(Segment seg, uint64_t off, int kind) except NULL:
    seg_check_open(seg)
    if ds_fault_flag(&seg.faulted):
        seg_raise_faulted(seg)        # zeros where the mapping faulted
    if _hook_no_bounds:
        return <Block *>(seg.base + off)
    raise CorruptSegmentError("no valid %s block at offset %d of segment %r"
                              % (_kind_name(kind), off, seg.name))


cdef Block *seg_bad_view(Segment seg, uint64_t off, uint32_t gen, int kind) except NULL:
    seg_check_open(seg)
    if ds_fault_flag(&seg.faulted):
        seg_raise_faulted(seg)
    if _hook_no_bounds:
        return <Block *>(seg.base + off)
    raise StaleReferenceError("the shared %s this view refers to was removed from segment %r"
                              % ("dict" if kind == K_DICT else "list", seg.name))
