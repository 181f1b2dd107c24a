# The Segment object: its state is declared in _heap.pxd; here are its
# creation and attachment and its Python methods, each a thin call of the
# functions of the topic files (included by _heap.pyx at module level).


cdef class Segment:
    """Segment(name, size=None, create=None, *, allow_unsafe=False)
--

One shared-memory segment: created (mode 0600, built under a temporary
    name and linked into place complete, see _create), or attached by name.
    `size` is a capacity in bytes (rounded up to 64 KiB at least); pages are
    backed as the heap grows. `create`: None attaches if `name` exists and
    creates it otherwise, True only creates (FileExistsError if it exists),
    False only attaches (FileNotFoundError if it does not). `allow_unsafe`:
    attach to a segment owned by another user or open to other users."""

    def __cinit__(self, name, size=None, create=None, *, allow_unsafe=False):
        self.fd = -1
        self.base = NULL
        self.hdr = NULL
        self.name = validate_name(name)
        cap = _round_capacity(size)
        if create is None:
            # attach if the name exists, else create; a creation that loses the
            # race to another creator's link() attaches to the winner's segment
            for _ in range(100):
                try:
                    self._attach(allow_unsafe)
                    break
                except FileNotFoundError:
                    pass
                try:
                    self._create(cap)
                    break
                except FileExistsError:
                    pass
            else:
                raise OSError("segment %r keeps appearing and disappearing" % name)
        elif create:
            self._create(cap)
        else:
            self._attach(allow_unsafe)
        _live.add(self)
        key = self._file_key()
        st = _lock_states.get(key)
        if st is None:
            st = LockState()
            _lock_states[key] = st
        self.lk = st

    def _file_key(self):
        cdef struct_stat st
        fstat(self.fd, &st)
        return (st.st_dev, st.st_ino)

    def _create(self, uint64_t cap):
        """Create the segment in one atomic step: build and initialise it
        under a private temporary name, then link() it to its name, which
        fails if the name exists. So a name in /dev/shm is always a complete
        segment; a creator killed half-way leaves only its temporary file,
        which the next creation (or dshared.unlink) of the name removes.
        FileExistsError (the temporary file removed) if the name exists."""
        cdef bytes final = _shm_file(self.name)
        cdef bytes tmp
        cdef int fd, e
        _remove_dead_temps(self.name)
        for _ in range(100):
            tmp = _shm_file(_temp_name(self.name))
            fd = c_open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            if fd < 0:
                e = errno
                if e == EEXIST:
                    continue
                raise OSError(e, os.strerror(e), self.name)
            crash_point()
            # exclusive while building: the mark of a live creator (see
            # _remove_dead_temps). Refused only if a cleaner took the file
            # for a dead creator's between open and here: it removes it.
            if flock(fd, LOCK_EX | LOCK_NB) != 0:
                c_unlink(tmp)
                c_close(fd)
                continue
            self.fd = fd
            self.created = True
            try:
                crash_point()
                fchmod(fd, 0o600)                # umask-proof
                self._initialize(cap)
                # the shared lock every attached handle holds, taken before the
                # name appears, so that no exclusive flock (page return) ever
                # sees an attached segment as unattached
                _flock_wait(fd, LOCK_SH, self.name)
                crash_point()
                if c_link(tmp, final) != 0:
                    e = errno
                    if e != ENOENT:              # ENOENT: a cleaner removed it (see above)
                        raise OSError(e, os.strerror(e), self.name)
                    c_unlink(tmp)
                    seg_unmap_close(self)
                    continue
                crash_point()
            except BaseException:
                c_unlink(tmp)
                seg_unmap_close(self)
                self.created = False
                raise
            c_unlink(tmp)
            crash_point()
            return
        raise OSError("segment %r: could not create a temporary file for it" % self.name)

    def _initialize(self, uint64_t cap):
        """Size, back, map and initialise the segment being built."""
        if ftruncate(self.fd, cap) != 0:
            e = errno
            raise OSError(e, os.strerror(e), self.name)
        crash_point()
        first = min(cap, HEADER_SIZE + RESERVE_CHUNK)
        rc = seg_back(self.fd, 0, first)
        if rc:
            raise OSError(rc, "cannot reserve memory for the segment: " + os.strerror(rc), self.name)
        crash_point()
        seg_map(self, cap)
        seg_init_header(self, first)
        crash_point()

    def _attach(self, allow_unsafe):
        cdef bytes p = _shm_path(self.name)
        cdef int fd = shm_open(p, O_RDWR, 0)
        cdef struct_stat st
        if fd < 0:
            e = errno
            raise OSError(e, os.strerror(e), self.name)
        self.fd = fd
        self.created = False
        try:
            _flock_wait(fd, LOCK_SH, self.name)
            if fstat(fd, &st) != 0:
                e = errno
                raise OSError(e, os.strerror(e), self.name)
            if not S_ISREG(st.st_mode):
                raise CorruptSegmentError("%r is not a regular shared-memory object" % self.name)
            if not allow_unsafe:
                if st.st_uid != geteuid():
                    raise PermissionError("segment %r is owned by uid %d, not by this user; "
                                          "pass allow_unsafe=True to attach anyway" % (self.name, st.st_uid))
                if st.st_mode & 0o077:
                    raise PermissionError("segment %r has mode %o, open to other users; "
                                          "pass allow_unsafe=True to attach anyway"
                                          % (self.name, st.st_mode & 0o777))
            # a segment appears under its name complete (see _create): an
            # object too small for one is damaged or foreign, never a creation
            # under way, and nobody re-creates it silently
            if <uint64_t>st.st_size < MIN_CAPACITY:
                raise CorruptSegmentError(_not_a_segment(self.name, "only %d bytes" % st.st_size))
            seg_map(self, st.st_size)
            seg_check_header(self, st.st_size)
        except BaseException:
            seg_unmap_close(self)
            raise

    def __dealloc__(self):
        seg_unmap_close(self)
        c_free(self.pfree)
        c_free(self.prel)

    @property
    def _reads_in_flight(self):
        """Read sections of this handle in progress in this process."""
        return self.readers

    def close(self):
        """Unmap the segment. Views of it raise ValueError afterwards.
        RuntimeError while a read of this handle is in progress in this
        process (code run in the middle of a read: a finalizer, another
        thread): the read goes on over the mapping."""
        if self.readers > 0 and self.base != NULL:
            raise RuntimeError("cannot close segment %r while a read of it is in progress" % self.name)
        if (self.lk is not None and self.lk.depth > 0 and self.lk.fork_gen == _fork_gen
                and self.lk.owner == PyThread_get_thread_ident()):
            # (a lock taken before fork belongs to the parent, not to this child)
            raise RuntimeError("cannot close segment %r while this thread holds its lock" % self.name)
        seg_unmap_close(self)

    def unlink(self):
        """Remove the segment from /dev/shm (it stays usable while mapped)."""
        try:
            unlink(self.name)
        except FileNotFoundError:
            pass

    @property
    def closed(self):
        return self.base == NULL

    @property
    def capacity(self):
        seg_check_open(self)
        return self.cap

    @property
    def poisoned(self):
        """True once a failed repair (or bytes the allocator cannot trust)
        has marked the segment corrupt: every access raises CorruptSegmentError."""
        seg_check_open(self)
        return bool(self.hdr.flags & FLAG_POISONED)

    def collections(self):
        """The names of this segment's named collections (see col(name))."""
        from dshared._codec import names_view
        return list(names_view(self))

    def attached(self):
        """The PIDs of the processes that have this segment mapped or open,
        this one included, as far as /proc shows them (see dshared.segments)."""
        seg_check_open(self)
        from dshared._ops import attached_pids
        return attached_pids(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):
        return (_reattach, (self.name,))

    def __repr__(self):
        return "<dshared.Segment %r%s>" % (self.name, " closed" if self.base == NULL else "")

    def acquire(self, timeout=None):
        """Take the segment lock (reentrant within a thread); LockTimeout
        after `timeout` seconds (None: wait as long as it takes)."""
        lock_acquire(self, _timeout(timeout))
        return True

    def release(self):
        """Release the lock taken by acquire(). Where the innermost hold is
        a lock() or transaction() block's own (its __exit__ was skipped:
        CPython before 3.10 can skip it when an interrupt lands just after
        the block's last statement, bpo-29988), release() ends that block as
        leaving it normally does: the block commits."""
        if self.lk is not None and 0 < self.lk.depth <= self.lk.bdepth and lock_held(self):
            txn_end(self, None, False)
        else:
            lock_release(self)

    def lock(self, timeout=None):
        """A context manager holding the segment lock: the block is one step
        for every other writer, and a process killed inside it is rolled back
        to the block's start by the next locker's repair. On an exception,
        what the block wrote stays (transaction() rolls it back)."""
        return _Block(self, timeout, BLOCK_LOCK)

    def transaction(self, timeout=None):
        """A context manager holding the segment lock for an all-or-nothing
        block: an exception leaving it rolls back everything it wrote (and
        propagates); a process killed inside it is rolled back by the next
        locker's repair. A nested transaction() is a savepoint: its exception
        rolls back only what it wrote. Other processes' lock-free reads may
        see the block's writes before it ends (read uncommitted); snapshot()
        reads see only committed states."""
        return _Block(self, timeout, BLOCK_TXN)

    def snapshot(self, timeout=None):
        """A context manager within which this process's reads of the
        segment see one committed state: no transaction() or lock() block of
        another process is half-applied in what they return. It holds the
        segment lock for the duration (writers of other processes wait), so
        keep it short: read what belongs together, then leave."""
        return _Block(self, timeout, BLOCK_SNAPSHOT)

    def in_transaction(self):
        """True when this thread has a transaction() or lock() block open on the segment."""
        return self.lk.bdepth > 0 and lock_held(self)

    def full_error(self, want, int err=0):
        """The SegmentFullError of an allocation of `want` bytes that failed
        (err: 0 or 12, no room; another errno: /dev/shm could not back it)."""
        return SegmentFullError(self.full_message(want, err), want=want,
                                free=self.cap - HEADER_SIZE - self.hdr.used, errno=0 if err == 12 else err)

    def full_message(self, want, int err=0):
        """The text of a SegmentFullError: how full, and what to do."""
        cdef Header *h = self.hdr
        if err and err != 12:
            return ("segment %r: /dev/shm could not back %d more bytes (%s); free space there, "
                    "or create the segment with a smaller size=" % (self.name, want, os.strerror(err)))
        return ("segment %r is full: %d of %d bytes in use (%.0f%%), %d bytes asked for; delete "
                "data, call dshared.collect(), or create it with a larger size="
                % (self.name, h.used, self.cap - HEADER_SIZE,
                   100.0 * h.used / (self.cap - HEADER_SIZE), want))

    def col(self, name=None):
        """The root SharedDict of this segment; with `name`, a top-level
        SharedDict of that name, created empty on first use."""
        from dshared._codec import root_view
        return root_view(self, name)

    def cache(self, name, *, max_entries=None, max_bytes=None, ttl=None):
        """The SharedCache `name` in this segment, created on first use (see dshared.cache)."""
        from dshared._cache import SharedCache
        return SharedCache(self, name, max_entries, max_bytes, ttl)

    def collect(self):
        """Free what is unreachable from the roots (cycles included) and
        recount every refcount; returns the number of bytes freed. Inside a
        transaction() or lock() block that has written something it raises
        RuntimeError: what the block replaced must stay until it ends."""
        if self.lk.bdepth and lock_held(self) and txn_dirty(self):
            raise RuntimeError("segment %r: collect() inside a transaction() or lock() block that has "
                               "written: call it before the block or after it" % self.name)
        return self._collect_now()

    def _collect_for_retry(self):
        """collect() before a write is retried for lack of room; 0 (nothing
        done) inside a block that has written (see collect)."""
        if self.lk.bdepth and lock_held(self) and txn_dirty(self):
            return 0
        return self._collect_now()

    def _collect_now(self):
        wr_begin(self)
        try:
            freed = gc_collect(self)
            wr_commit(self)
            return freed
        finally:
            wr_end(self)

    def check(self):
        """Verify the whole heap under the lock: header, block tiling, free
        lists, every table, every value, reachability and refcounts. Returns a
        CheckReport (.ok, .problems); never raises on bad bytes."""
        return chk_report(self)

    def _backed(self):
        """Bytes of memory the system holds for the segment's file (its
        allocated blocks: what /dev/shm and the memory cgroup charge)."""
        cdef struct_stat st
        if fstat(self.fd, &st) != 0:
            return None
        return <uint64_t>st.st_blocks * 512

    def stats(self, probes=False):
        """Counters of the segment: capacity, used, free, reserved, blocks, ...
        With `probes`, also the probe lengths of every dict table (a walk of
        the heap under the lock): `tables`, `max_probe` (probes past the first
        slot to find the hardest key), `mean_probe`, `probe_histogram` (keys by
        probe length: 0, 1, 2-3, 4-7, ..., keyed by the lower end) and
        `long_chains` (tables whose longest probe exceeds probe_bound())."""
        return st_stats(self, probes)


def _reattach(name):
    return attach_cached(name)


_attached = _weakref.WeakValueDictionary()


def attach_cached(name):
    """A handle of segment `name`: the one this process already has open, or a new one."""
    seg = _attached.get(name)
    if seg is None or seg.closed:
        seg = Segment(name, create=False)
        _attached[name] = seg
    return seg


def remember(Segment seg):
    _attached[seg.name] = seg
