# The segment lock: acquire (with the repair after a holder's death), release
# (included by _heap.pyx at module level).


cdef class LockState:
    pass


cdef inline int gc_off() except -1:
    return ds_gc_disable()


cdef inline void gc_restore(int was) noexcept:
    if was:
        ds_gc_enable()


cdef bint lock_held(Segment seg):
    # a thread that died holding the lock may leave its ident to a new
    # thread: the mutex's owner TID tells them apart
    cdef long owner
    if not (seg.lk.depth > 0 and seg.lk.fork_gen == _fork_gen
            and seg.lk.owner == PyThread_get_thread_ident()):
        return False
    if _hook_no_lock:
        return True
    owner = ds_mutex_owner(&seg.hdr.mutex)
    return owner < 0 or owner == seg.lk.tid


cdef int lock_acquire(Segment seg, double timeout) except -1:
    cdef int rc
    cdef double deadline = 0
    cdef long slice_ms
    seg_check_open(seg)
    if ds_fault_flag(&seg.faulted):
        seg_raise_faulted(seg)
    seg_read_limit(seg)
    if lock_held(seg):
        seg.lk.depth += 1
        return 0
    if ds_fault_flag(&seg.faulted):
        seg_raise_faulted(seg)        # lock_held() read the mutex
    if _hook_no_lock:
        seg.lk.owner = PyThread_get_thread_ident()
        seg.lk.depth = 1
        seg.lk.fork_gen = _fork_gen
        return 0
    seg_check_mutex(seg)
    rc = ds_mutex_trylock(&seg.hdr.mutex)
    if rc == EBUSY:
        if timeout >= 0:
            deadline = _time.monotonic() + timeout
        while True:
            slice_ms = 50
            if timeout >= 0:
                left = deadline - _time.monotonic()
                if left <= 0:
                    raise LockTimeout("segment %r: lock not acquired within %.3g s" % (seg.name, timeout))
                slice_ms = max(1, min(50, <long>(left * 1000)))
            with nogil:
                rc = ds_mutex_lock_ms(&seg.hdr.mutex, slice_ms)
            if rc != ETIMEDOUT or ds_fault_flag(&seg.faulted):
                break
            PyErr_CheckSignals()
    if ds_fault_flag(&seg.faulted):
        lock_faulted(seg, rc)
    if rc == EOWNERDEAD:
        rep_after_death(seg)
        if ds_fault_flag(&seg.faulted):
            lock_faulted(seg, EOWNERDEAD)
    elif rc == EDEADLK:
        raise RuntimeError("segment %r: this thread already holds the lock through a handle "
                           "closed or forked away" % seg.name)
    elif rc != 0:
        raise OSError(rc, "cannot lock segment: " + os.strerror(rc), seg.name)
    seg_read_limit(seg)               # the top as the last holder left it
    seg.lk.owner = PyThread_get_thread_ident()
    # the held mutex names its owner, this thread: no gettid system call,
    # which would cost more than the rest of a small write
    seg.lk.tid = ds_mutex_owner(&seg.hdr.mutex)
    if seg.lk.tid <= 0:
        seg.lk.tid = ds_gettid()
    seg.lk.depth = 1
    seg.lk.fork_gen = _fork_gen
    seg.lk.bdepth = 0
    seg.lk.bseg = None
    seg.txrec = False
    return 0


cdef int lock_faulted(Segment seg, int rc) except -1:
    """The mapping faulted while this thread took the lock (rc: what the
    mutex call returned). Give the mutex back if this thread got it and
    its page is still the shared one (after a dead holder, the segment is
    marked poisoned for everyone: no repair can be trusted now); never
    call pthread on a mutex whose page was replaced by zeros. Raises."""
    if ((rc == 0 or rc == EOWNERDEAD) and not (ds_fault_flag(&seg.faulted) & DS_FAULTED_HEADER)
            and not _hook_no_lock):
        if rc == EOWNERDEAD:
            ds_atomic_or64(&seg.hdr.flags, FLAG_POISONED)
            ds_mutex_consistent(&seg.hdr.mutex)
        ds_mutex_unlock(&seg.hdr.mutex)
    return seg_raise_faulted(seg)


cdef void lock_release_raw(Segment seg) noexcept:
    seg.lk.depth = 0
    seg.lk.owner = 0
    if not (ds_fault_flag(&seg.faulted) & DS_FAULTED_HEADER):
        ds_mutex_unlock(&seg.hdr.mutex)
    _after_unlock(seg)


cdef int lock_release(Segment seg) except -1:
    if (ds_fault_flag(&seg.faulted) and seg.lk.depth > 0 and seg.lk.fork_gen == _fork_gen
            and seg.lk.owner == PyThread_get_thread_ident()):
        # the mapping faulted: lock_held() would read a mutex that may be zeros now
        seg.lk.depth -= 1
        if seg.lk.depth == 0:
            seg.lk.owner = 0
            if not _hook_no_lock and not (ds_fault_flag(&seg.faulted) & DS_FAULTED_HEADER):
                ds_mutex_unlock(&seg.hdr.mutex)
        return 0
    if not lock_held(seg):
        if seg.lk.fork_gen != _fork_gen:
            return 0            # taken before fork by the parent; not ours to release
        raise RuntimeError("segment %r: release of a lock this thread does not hold" % seg.name)
    seg.lk.depth -= 1
    if seg.lk.depth == 0:
        seg.lk.owner = 0
        if not _hook_no_lock:
            ds_mutex_unlock(&seg.hdr.mutex)
        _after_unlock(seg)
    return 0


def _timeout(timeout):
    if timeout is None:
        return -1.0
    t = float(timeout)
    if not t >= 0:
        raise ValueError("timeout must be None or a non-negative number of seconds, not %r" % (timeout,))
    return t
