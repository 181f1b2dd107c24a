# cython: language_level=3, cdivision=True
"""The shared heap: segment, header, lock, allocator, dict tables and lists.

Layout of a segment (every reference inside it is an offset from its base,
since each process maps it at another address)::

    0            4096                                        top       capacity
    | Header     | block | block | free | block | ...        | untouched ... |
                 ^ every block: Block header (16 B) + payload, 16-aligned

* Header: magic, format version, layout descriptor (arch, libc, mutex size),
  capacity, hash seed, the robust process-shared mutex, the write sequence,
  allocator state (top, free-list bins), root offsets and counters.
* Blocks tile [4096, top) exactly. A block header holds its size, the size of
  the block below it (so freeing can coalesce in both directions), a
  generation that changes on every allocation (a view holds offset +
  generation and so detects that its object is gone), and kind + refcount.
* Allocator: segregated fit. Free blocks sit in doubly linked lists, one
  exact bin per size below 1 KiB and one bin per power of two above, with a
  bitmap of non-empty bins. Allocation takes the first fitting block (exact
  bin, then larger bins, then the top), splitting off the rest; freeing merges
  with free neighbours and gives a block that touches the top back to it.
  Backing pages are reserved with posix_fallocate as top grows, so a full
  /dev/shm is a clean SegmentFullError, never a SIGBUS.
* Dicts follow CPython's compact dict: a DICT block points at a TABLE block
  holding a sparse int32 index and a dense, insertion-ordered entry array
  (hash, key cell, value cell); growing builds a new table and publishes it
  with one 8-byte store. Lists: a LIST block points at an ITEMS block of cells.
* Cells (16 B): a tag and either an inline scalar / short string or the
  offset of a block; a cell that holds an offset owns one shared reference.

Concurrency: writers serialise on the mutex and bump `seq` before their first
change to reachable memory and after the write (seqlock). Readers take no lock: they read, then check that `seq`
was even and unchanged, and retry otherwise (falling back to the lock after
MAX_RETRIES). Freed memory stays mapped and every offset or length read from
the segment passes a checked accessor (checked_block, view_block,
table_view_at, inb(): _heap.pxd and heap/*.pxd) before use, so a reader racing a writer
sees stale bytes at worst, never a fault. No Python code runs while the lock
is held: keys and values are converted to C buffers first, and the cyclic GC
(which could run finalizers) is switched off for the duration of a write.
"""

from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport uintptr_t
from libc.errno cimport EBUSY, EEXIST, EINTR, ENOENT, ETIMEDOUT, errno
from libc.math cimport floor, isfinite
from libc.stdlib cimport abort, free as c_free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset, strncmp, strncpy
from posix.fcntl cimport O_CLOEXEC, O_CREAT, O_EXCL, O_NONBLOCK, O_RDONLY, O_RDWR, open as c_open
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap, shm_open, shm_unlink
from posix.stat cimport S_ISREG, fstat, stat, struct_stat
from posix.unistd cimport _exit, close as c_close, ftruncate, geteuid, link as c_link, unlink as c_unlink

import os
import gc as _gc
import logging as _logging
import time as _time
import weakref as _weakref

from dshared._errors import CorruptSegmentError, LockTimeout, SegmentFullError, StaleReferenceError


cdef extern from "errno.h":
    int EOWNERDEAD
    int EDEADLK

cdef extern from "fcntl.h" nogil:
    int posix_fallocate(int fd, long offset, long length)

cdef extern from "fcntl.h" nogil:
    int fallocate(int fd, int mode, long offset, long length)
    enum:
        FALLOC_FL_PUNCH_HOLE
        FALLOC_FL_KEEP_SIZE

cdef extern from "sys/file.h" nogil:
    int flock(int fd, int operation)
    enum:
        LOCK_SH
        LOCK_EX
        LOCK_NB
        LOCK_UN

cdef extern from "sys/stat.h" nogil:
    int fchmod(int fd, unsigned int mode)

cdef extern from "fcntl.h" nogil:
    enum:
        O_NOFOLLOW

cdef extern from "dshared_gc.h":
    int ds_gc_disable()
    void ds_gc_enable()

cdef extern from "dshared_fault.h" nogil:
    enum:
        DS_FAULTED
        DS_FAULTED_HEADER
    int ds_fault_register(void *base, size_t len, int fd, int *flag)
    void ds_fault_unregister(void *base)
    void ds_fault_set_fd(void *base, int fd)
    int ds_fault_flag(const int *flag)
    uintptr_t ds_fault_pagesize


cdef uint64_t MAGIC = 0x3144455241485344ULL
cdef uint64_t DEFAULT_CAPACITY = 256 << 20
cdef uint64_t MAX_CAPACITY = 1 << 44
cdef uint64_t RESERVE_CHUNK = 1 << 20
cdef uint64_t RESERVE_AHEAD = 256 << 10 # reserving at the top backs at least this much more
cdef uint64_t SHRINK_MIN = 4 << 20      # give pages back only in runs this large
NAME_MAX_LEN = 200

include "heap/punch.pxi"

DEFAULT_SIZE = DEFAULT_CAPACITY
MIN_SIZE = MIN_CAPACITY
MAX_SIZE = MAX_CAPACITY

# ---------------------------------------------------------------------------
# Process-wide state: lock ownership is per segment file, not per handle, so
# that two handles of one segment in one process share reentrancy.

cdef long _fork_gen = 0
cdef dict _lock_states = {}
_live = _weakref.WeakSet()          # open Segments, for the fork hook


def _after_fork_in_child():
    global _fork_gen, _log_pending
    _fork_gen += 1
    _log_events.clear()             # the parent's to report, not ours
    _log_pending = False
    for seg in list(_live):
        (<Segment>seg)._own_file_description()


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------
# Log records, on logging.getLogger("dshared") at WARNING: repairs, poisoning,
# dead creators' temporary files removed. What happens while the segment lock
# is held is queued and emitted once it is released (_after_unlock), so that
# no logging handler ever runs under the lock.

_log = _logging.getLogger("dshared")
cdef bint _log_pending = False
cdef list _log_events = []          # (format, args) waiting for the lock's release
cdef set _poison_logged = set()     # segments whose poisoning this process has reported


cdef int _queue_log(str fmt, tuple args) except -1:
    global _log_pending
    cdef int was = gc_off()         # no finalizer may run under the lock
    _log_events.append((fmt, args))
    _log_pending = True
    gc_restore(was)
    return 0


cdef inline void _after_unlock(Segment seg) noexcept:
    """Called where a thread has just released the lock: one branch unless
    something is to be reported."""
    if seg.nt.n != 0 or seg.nt.all != 0:
        nt_wake(seg, not _hook_no_lock and not seg.faulted)      # change notifications (_notify.pxi)
    if _log_pending or (seg.hdr != NULL and (seg.hdr.flags & FLAG_POISONED)):
        try:
            _emit_logs(seg)
        except Exception:
            pass                    # a failing handler must not break the write


cdef _emit_logs(Segment seg):
    global _log_pending
    events = list(_log_events)
    _log_events.clear()
    _log_pending = False
    for fmt, args in events:
        _log.warning(fmt, *args)
    if seg.hdr != NULL and (seg.hdr.flags & FLAG_POISONED):
        key = seg._file_key() + (seg.hdr.seed0,)
        if key not in _poison_logged:
            _poison_logged.add(key)
            _log.warning("segment %r is poisoned (a repair failed or its allocator met bytes it "
                         "cannot trust): every access raises CorruptSegmentError; "
                         "dshared.unlink(%r) removes it", seg.name, seg.name)


# ---------------------------------------------------------------------------
# Test hooks. Off in normal use (one predictable branch each); switched on by
# environment variables read at import, or by test_hooks() in-process.
#   DSHARED_TEST_CRASH_AT=n    _exit(77) at the n-th crash point passed (all lie
#                              inside writes, with the lock held)
#   DSHARED_TEST_FAIL_ALLOC=n  the n-th allocation fails as if the segment were full
#   DSHARED_TEST_NO_LOCK=1     writers and lock() take no mutex
#   DSHARED_TEST_NO_REPAIR=1   a dead holder's lock is made usable without repair
#   DSHARED_TEST_NO_BOUNDS=1   a checked accessor whose check fails goes on with the
#                              unchecked pointer (bad_block / bad_view return it)
#   DSHARED_TEST_NO_ROLLBACK=1 transaction() and lock() blocks behave as before they
#                              were atomic: each operation commits on its own, an
#                              exception keeps what was written

cdef long _hook_crash_at = 0
cdef long _hook_fail_alloc = 0
cdef bint _hook_no_lock = False
cdef bint _hook_no_repair = False
cdef bint _hook_no_bounds = False
cdef bint _hook_no_rollback = False
cdef long _crash_points_passed = 0
CRASH_EXIT_CODE = 77


cdef void crash_point() noexcept nogil:
    global _hook_crash_at, _crash_points_passed
    if _hook_crash_at > 0:
        _crash_points_passed += 1
        _hook_crash_at -= 1
        if _hook_crash_at == 0:
            _exit(77)


cdef bint fail_alloc_now() noexcept nogil:
    global _hook_fail_alloc
    if _hook_fail_alloc > 0:
        _hook_fail_alloc -= 1
        return _hook_fail_alloc == 0
    return False


def test_hooks(crash_at=None, fail_alloc=None, no_lock=None, no_repair=None, no_bounds=None,
               no_rollback=None):
    """Switch the test hooks in this process (None leaves one as it is).
    Returns the number of crash points passed since the last call."""
    global _hook_crash_at, _hook_fail_alloc, _hook_no_lock, _hook_no_repair, _hook_no_bounds
    global _hook_no_rollback
    global _crash_points_passed
    if crash_at is not None:
        _hook_crash_at = crash_at
    if fail_alloc is not None:
        _hook_fail_alloc = fail_alloc
    if no_lock is not None:
        _hook_no_lock = bool(no_lock)
    if no_repair is not None:
        _hook_no_repair = bool(no_repair)
    if no_bounds is not None:
        _hook_no_bounds = bool(no_bounds)
    if no_rollback is not None:
        _hook_no_rollback = bool(no_rollback)
    passed = _crash_points_passed
    _crash_points_passed = 0
    return passed


def _hooks_from_env():
    env = os.environ
    test_hooks(crash_at=int(env.get("DSHARED_TEST_CRASH_AT", 0) or 0),
               fail_alloc=int(env.get("DSHARED_TEST_FAIL_ALLOC", 0) or 0),
               no_lock=env.get("DSHARED_TEST_NO_LOCK", "") not in ("", "0"),
               no_repair=env.get("DSHARED_TEST_NO_REPAIR", "") not in ("", "0"),
               no_bounds=env.get("DSHARED_TEST_NO_BOUNDS", "") not in ("", "0"),
               no_rollback=env.get("DSHARED_TEST_NO_ROLLBACK", "") not in ("", "0"))


_hooks_from_env()


cdef class LockState:
    pass


cdef inline int gc_off() except -1:
    return ds_gc_disable()


cdef inline void gc_restore(int was) noexcept:
    if was:
        ds_gc_enable()


def validate_name(name):
    """Check a segment name: a non-empty str without '/', NUL or '..' parts."""
    if not isinstance(name, str):
        raise TypeError("segment name must be a str, not %s" % type(name).__name__)
    if not name or len(name.encode("utf-8", "surrogatepass")) > NAME_MAX_LEN:
        raise ValueError("segment name must be 1 to %d bytes long: %r" % (NAME_MAX_LEN, name))
    if "/" in name or "\0" in name or name in (".", "..") or name.startswith("."):
        raise ValueError("segment name must not contain '/' or NUL, nor start with '.': %r" % (name,))
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("segment name must be valid UTF-8: %r" % (name,)) from None
    return name


cdef bytes _shm_path(str name):
    return ("/" + name).encode("utf-8")


# -- creation: a segment is built under a temporary name, then linked into place

SHM_DIR = "/dev/shm/"
TEMP_TAG = ".dsh-new-"          # a temporary name: "." + name + TEMP_TAG + 16 hex digits
_TEMP_RANDOM = 16


cdef bytes _shm_file(str fname):
    return (SHM_DIR + fname).encode("utf-8")


def _temp_name(name):
    """A fresh temporary name for building segment `name`: hidden (segment
    names never start with '.'), so it can never be a name users pass."""
    return "." + name + TEMP_TAG + os.urandom(_TEMP_RANDOM // 2).hex()


def _temp_names(name):
    """The temporary files of segment `name` now in /dev/shm."""
    cdef str prefix = "." + name + TEMP_TAG
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return []
    return [n for n in names if n.startswith(prefix) and len(n) == len(prefix) + _TEMP_RANDOM
            and all(c in "0123456789abcdef" for c in n[len(prefix):])]


def _remove_dead_temps(name):
    """Remove the temporary files that creators of segment `name` left when
    they died. A file with a second link is a segment linked into place (its
    creator died before removing the temporary name, or is about to remove
    it): that name goes, without a lock, so that nobody holds an exclusive
    flock on a segment others may be attaching to. Otherwise it was never
    linked, and its creator holds an exclusive flock on it while it builds
    and a shared one until its link(): a file whose exclusive flock can be
    taken has no creator left, and goes. Liveness is never judged by process
    id. Returns the number removed."""
    cdef int fd
    cdef bytes path
    cdef struct_stat st, st2
    removed = []
    for t in _temp_names(name):
        path = _shm_file(t)
        fd = c_open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0)
        if fd < 0:
            continue
        try:
            if fstat(fd, &st) != 0 or not S_ISREG(st.st_mode) or st.st_uid != geteuid():
                continue
            if st.st_nlink < 2 and flock(fd, LOCK_EX | LOCK_NB) != 0:
                continue                    # a creator at work
            # still the file we locked under that name (not removed meanwhile)
            if stat(path, &st2) == 0 and st2.st_dev == st.st_dev and st2.st_ino == st.st_ino:
                if c_unlink(path) == 0:
                    removed.append(t)
        finally:
            c_close(fd)
    for t in removed:
        _log.warning("removed %r, the temporary file of a creator of segment %r that died", t, name)
    return len(removed)


cdef int _flock_wait(int fd, int op, str name) except -1:
    """flock(op), waiting without the GIL; retried when a signal interrupts
    it (a Python signal handler that raises ends the wait)."""
    cdef int rc, e
    while True:
        with nogil:
            rc = flock(fd, op)
            e = errno
        if rc == 0:
            return 0
        if e != EINTR:
            raise OSError(e, os.strerror(e), name)
        PyErr_CheckSignals()
    return 0


def _not_a_segment(name, what):
    return ("segment %r is %s: truncated or not a dshared segment; dshared.unlink(%r) removes it"
            % (name, what, name))


def unlink(name):
    """Remove the segment `name` from /dev/shm. Processes that have it mapped
    keep working; new ones can no longer attach. Temporary files that dead
    creators of `name` left go too."""
    validate_name(name)
    cdef bytes p = _shm_path(name)
    _remove_dead_temps(name)
    if shm_unlink(p) != 0:
        e = errno
        raise OSError(e, os.strerror(e), name)


def _round_capacity(size):
    if size is None:
        return DEFAULT_CAPACITY
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError("size must be an int number of bytes, not %s" % type(size).__name__)
    if size < 0:
        raise ValueError("size must not be negative: %d" % size)
    if size > MAX_CAPACITY:
        raise ValueError("size %d is over the maximum of %d bytes" % (size, MAX_CAPACITY))
    size = max(size, MIN_CAPACITY)
    return (size + 4095) & ~4095


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
                    self._unmap_close()
                    continue
                crash_point()
            except BaseException:
                c_unlink(tmp)
                self._unmap_close()
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
        rc = posix_fallocate(self.fd, 0, first)
        if rc:
            raise OSError(rc, "cannot reserve memory for the segment: " + os.strerror(rc), self.name)
        crash_point()
        self._map(cap)
        self._init_header(first)
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
            self._map(st.st_size)
            self._check_header(st.st_size)
        except BaseException:
            self._unmap_close()
            raise

    cdef _map(self, uint64_t cap):
        cdef void *m = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
        cdef int rc
        if m == MAP_FAILED:
            e = errno
            raise OSError(e, os.strerror(e), self.name)
        # a fault on the mapping (its file truncated) is repaired and reported
        # through self.faulted instead of killing the process
        self.faulted = 0
        rc = ds_fault_register(m, cap, self.fd, &self.faulted)
        if rc:
            munmap(m, cap)
            raise OSError(rc, "cannot watch segment %r for faults: %s" % (self.name, os.strerror(rc)))
        self.base = <char *>m
        self.hdr = <Header *>m
        self.cap = cap
        self.lim = HEADER_SIZE          # nothing to read until the header is known (read_limit)

    cdef _init_header(self, uint64_t reserved):
        cdef Header *h = self.hdr
        seed = os.urandom(16)
        memset(<char *>h, 0, HEADER_SIZE)
        h.reserved = reserved
        h.version = FORMAT_VERSION
        h.header_size = HEADER_SIZE
        strncpy(h.layout, ds_layout_name(), 31)
        h.mutex_size = ds_mutex_size()
        h.capacity = self.cap
        h.seed0 = int.from_bytes(seed[:8], "little")
        h.seed1 = int.from_bytes(seed[8:], "little")
        h.top = HEADER_SIZE
        self.read_limit()
        rc = ds_mutex_init(&h.mutex)
        if rc:
            raise OSError(rc, "cannot initialise the segment mutex: " + os.strerror(rc), self.name)
        h.root = self.alloc(16, K_DICT)
        h.names = self.alloc(16, K_DICT)
        if not h.root or not h.names:
            raise SegmentFullError("segment %r is too small for its root" % self.name)
        self.incref(h.root)
        self.incref(h.names)
        ds_fence_release()
        ds_store_release(&h.magic, MAGIC)

    cdef _check_header(self, uint64_t size):
        cdef Header *h = self.hdr
        if ds_load_acquire(&h.magic) != MAGIC:
            raise CorruptSegmentError(_not_a_segment(self.name, "without the dshared magic"))
        if h.version != FORMAT_VERSION or h.header_size != HEADER_SIZE:
            raise CorruptSegmentError("segment %r has format version %d; this dshared reads version %d"
                                      % (self.name, h.version, FORMAT_VERSION))
        if strncmp(h.layout, ds_layout_name(), 32) != 0 or h.mutex_size != ds_mutex_size():
            raise CorruptSegmentError("segment %r was made on another platform (%s, mutex of %d bytes)"
                                      % (self.name, h.layout[:31].decode("ascii", "replace"), h.mutex_size))
        if h.capacity != size:
            raise CorruptSegmentError("segment %r: header says %d bytes, the object has %d"
                                      % (self.name, h.capacity, size))
        self.read_limit()
        if not self.inb(h.root, BLOCK_HDR + 16) or not self.inb(h.names, BLOCK_HDR + 16):
            raise CorruptSegmentError("segment %r: root offsets out of bounds" % self.name)
        self._check_mutex()

    cdef int _check_mutex(self) except -1:
        if not ds_mutex_kind_ok(&self.hdr.mutex):
            if ds_fault_flag(&self.faulted):
                self.raise_faulted()
            raise CorruptSegmentError("segment %r: its mutex is not a robust process-shared one "
                                      "(overwritten?); it cannot be locked safely" % self.name)
        return 0

    cdef int _reserve(self, uint64_t upto) noexcept nogil:
        """Back [0, upto) with memory; returns 0 or an errno."""
        cdef uint64_t have = self.hdr.reserved
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
        if want > self.cap:
            want = self.cap
        if upto > want:
            return 12  # ENOMEM
        # [0, have) is backed already, but for the holes of punched free
        # blocks, which must stay holes (see heap/punch.pxi)
        rc = posix_fallocate(self.fd, <long>have, <long>(want - have))
        if rc == 0:
            self.hdr.reserved = want
        return rc

    cdef void _shrink_reserve(self) noexcept nogil:
        """Return the pages far above the top to the system: the segment does
        not keep its peak backing. The header is lowered first, so a crash in
        between only leaves more backed than it says.

        This runs with any number of handles attached and lock-free readers
        going on: a reader that still follows an offset into the region
        (it validates only afterwards) reads zeros there and retries, as for
        any bytes a write changed under it (see heap/punch.pxi for what that
        read costs)."""
        cdef Header *h = self.hdr
        cdef uint64_t keep = (h.top + RESERVE_CHUNK + 4095) & ~(<uint64_t>4095)
        if h.reserved <= keep or h.reserved - keep < SHRINK_MIN or h.reserved - keep < h.reserved // 4:
            return
        if _hook_no_punch:
            return
        cdef uint64_t old = h.reserved
        h.reserved = keep
        self.read_limit()
        fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, keep, old - keep)

    cdef _own_file_description(self):
        """In a forked child: the inherited descriptor shares the parent's
        file description, and so its flock. Open the segment anew, so that
        this process holds a shared lock of its own and the parent's page
        return (see _shrink_reserve) sees it. Where that cannot be done, page
        return is switched off for the segment for good."""
        cdef int fd
        if self.fd < 0 or self.hdr == NULL:
            return
        fd = c_open(b"/proc/self/fd/%d" % self.fd, O_RDWR | O_CLOEXEC)
        if fd >= 0 and flock(fd, LOCK_SH | LOCK_NB) == 0:
            ds_fault_set_fd(self.base, fd)
            c_close(self.fd)            # the parent's lock stays: it still has the description open
            self.fd = fd
            return
        if fd >= 0:
            c_close(fd)
        ds_atomic_or64(&self.hdr.flags, FLAG_NO_SHRINK)

    cdef _unmap_close(self):
        self._views = None
        if self.base != NULL:
            ds_fault_unregister(self.base)
            if self.lk is not None and self.lk.depth > 0 and self.lk.fork_gen == _fork_gen:
                # this process holds the lock (a thread, or an exit without
                # release): keep the mapping, so that when the holder ends the
                # kernel can still mark the mutex owner-dead for the next locker
                self.base = NULL
                self.hdr = NULL
            elif self.faulted & DS_FAULTED_HEADER:
                # the header page is private zeros now, and this thread's
                # robust-mutex list may still run through the mutex in it
                # (a lock held when the page went): keep that page mapped
                munmap(self.base + ds_fault_pagesize, self.cap - ds_fault_pagesize)
                self.base = NULL
                self.hdr = NULL
            else:
                munmap(self.base, self.cap)
                self.base = NULL
                self.hdr = NULL
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        self._unmap_close()
        c_free(self.pfree)
        c_free(self.prel)

    @property
    def _reads_in_flight(self):
        """Read sections of this handle in progress in this process."""
        return self.readers

    def close(self):
        """Unmap the segment. Views of it raise ValueError afterwards."""
        if (self.lk is not None and self.lk.depth > 0 and self.lk.fork_gen == _fork_gen
                and self.lk.owner == PyThread_get_thread_ident()):
            # (a lock taken before fork belongs to the parent, not to this child)
            raise RuntimeError("cannot close segment %r while this thread holds its lock" % self.name)
        self._unmap_close()

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
        self.check_open()
        return self.cap

    @property
    def poisoned(self):
        """True once a failed repair (or bytes the allocator cannot trust)
        has marked the segment corrupt: every access raises CorruptSegmentError."""
        self.check_open()
        return bool(self.hdr.flags & FLAG_POISONED)

    def collections(self):
        """The names of this segment's named collections (see col(name))."""
        from dshared._codec import names_view
        return list(names_view(self))

    def attached(self):
        """The PIDs of the processes that have this segment mapped or open,
        this one included, as far as /proc shows them (see dshared.segments)."""
        self.check_open()
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

    # -- checked access ------------------------------------------------------

    cdef int check_open(self) except -1:
        if self.base == NULL:
            raise ValueError("segment %r is closed" % self.name)
        return 0

    cdef int raise_faulted(self) except -1:
        """The mapping faulted (its file was truncated, or its memory could
        not be backed): nothing read from it can be trusted any more, so
        every operation of this handle raises from now on."""
        raise CorruptSegmentError("segment %r was truncated or damaged by another process" % self.name)

    cdef char *ptr(self, uint64_t off, uint64_t n) except NULL:
        if self.base == NULL:
            self.check_open()
        if not self.inb(off, n):
            if ds_fault_flag(&self.faulted):
                self.raise_faulted()
            raise CorruptSegmentError("offset %d + %d is outside segment %r" % (off, n, self.name))
        return self.base + off

    cdef int raise_corrupt(self, str msg) except -1:
        """The out-of-line raiser of the inline readers (heap/*.pxd)."""
        raise CorruptSegmentError(msg)

    cdef Block *bad_block(self, uint64_t off, int kind) except NULL:
        self.check_open()
        if ds_fault_flag(&self.faulted):
            self.raise_faulted()        # zeros where the mapping faulted
        if _hook_no_bounds:
            return <Block *>(self.base + off)
        raise CorruptSegmentError("no valid %s block at offset %d of segment %r"
                                  % (_kind_name(kind), off, self.name))

    cdef Block *bad_view(self, uint64_t off, uint32_t gen, int kind) except NULL:
        self.check_open()
        if ds_fault_flag(&self.faulted):
            self.raise_faulted()
        if _hook_no_bounds:
            return <Block *>(self.base + off)
        raise StaleReferenceError("the shared %s this view refers to was removed from segment %r"
                                  % ("dict" if kind == K_DICT else "list", self.name))

    # -- the read section ----------------------------------------------------

    # (the read section's sequence checks are the inline seq_begin / seq_ok
    # of _heap.pxd; _codec.read_section is the one place that uses them)

    # -- the lock and the publish path -----------------------------------------

    cdef bint lock_held(self):
        # a thread that died holding the lock may leave its ident to a new
        # thread: the mutex's owner TID tells them apart
        cdef long owner
        if not (self.lk.depth > 0 and self.lk.fork_gen == _fork_gen
                and self.lk.owner == PyThread_get_thread_ident()):
            return False
        if _hook_no_lock:
            return True
        owner = ds_mutex_owner(&self.hdr.mutex)
        return owner < 0 or owner == self.lk.tid

    cdef int lock_acquire(self, double timeout) except -1:
        cdef int rc
        cdef double deadline = 0
        cdef long slice_ms
        self.check_open()
        if ds_fault_flag(&self.faulted):
            self.raise_faulted()
        self.read_limit()
        if self.lock_held():
            self.lk.depth += 1
            return 0
        if ds_fault_flag(&self.faulted):
            self.raise_faulted()        # lock_held() read the mutex
        if _hook_no_lock:
            self.lk.owner = PyThread_get_thread_ident()
            self.lk.depth = 1
            self.lk.fork_gen = _fork_gen
            return 0
        self._check_mutex()
        rc = ds_mutex_trylock(&self.hdr.mutex)
        if rc == EBUSY:
            if timeout >= 0:
                deadline = _time.monotonic() + timeout
            while True:
                slice_ms = 50
                if timeout >= 0:
                    left = deadline - _time.monotonic()
                    if left <= 0:
                        raise LockTimeout("segment %r: lock not acquired within %.3g s" % (self.name, timeout))
                    slice_ms = max(1, min(50, <long>(left * 1000)))
                with nogil:
                    rc = ds_mutex_lock_ms(&self.hdr.mutex, slice_ms)
                if rc != ETIMEDOUT or ds_fault_flag(&self.faulted):
                    break
                PyErr_CheckSignals()
        if ds_fault_flag(&self.faulted):
            self._lock_faulted(rc)
        if rc == EOWNERDEAD:
            self._repair_after_death()
            if ds_fault_flag(&self.faulted):
                self._lock_faulted(EOWNERDEAD)
        elif rc == EDEADLK:
            raise RuntimeError("segment %r: this thread already holds the lock through a handle "
                               "closed or forked away" % self.name)
        elif rc != 0:
            raise OSError(rc, "cannot lock segment: " + os.strerror(rc), self.name)
        self.read_limit()               # the top as the last holder left it
        self.lk.owner = PyThread_get_thread_ident()
        # the held mutex names its owner, this thread: no gettid system call,
        # which would cost more than the rest of a small write
        self.lk.tid = ds_mutex_owner(&self.hdr.mutex)
        if self.lk.tid <= 0:
            self.lk.tid = ds_gettid()
        self.lk.depth = 1
        self.lk.fork_gen = _fork_gen
        self.lk.bdepth = 0
        self.lk.bseg = None
        self.txrec = False
        return 0

    cdef int _lock_faulted(self, int rc) except -1:
        """The mapping faulted while this thread took the lock (rc: what the
        mutex call returned). Give the mutex back if this thread got it and
        its page is still the shared one (after a dead holder, the segment is
        marked poisoned for everyone: no repair can be trusted now); never
        call pthread on a mutex whose page was replaced by zeros. Raises."""
        if ((rc == 0 or rc == EOWNERDEAD) and not (ds_fault_flag(&self.faulted) & DS_FAULTED_HEADER)
                and not _hook_no_lock):
            if rc == EOWNERDEAD:
                ds_atomic_or64(&self.hdr.flags, FLAG_POISONED)
                ds_mutex_consistent(&self.hdr.mutex)
            ds_mutex_unlock(&self.hdr.mutex)
        return self.raise_faulted()

    cdef _repair_after_death(self):
        """A process died holding the lock, maybe in the middle of a write.
        Undo its journal (so the write is either wholly done or not at all),
        rebuild the allocator from the block tiling, recount every refcount
        and free what nothing reaches. If the heap cannot be walked, mark the
        segment poisoned: everyone gets CorruptSegmentError from then on."""
        cdef Header *h = self.hdr
        cdef uint64_t undone = h.jcount, freed = 0, jkind = h.jkind
        ds_mutex_consistent(&h.mutex)
        if _hook_no_repair:
            return
        self.read_limit()           # the walk below must see every block up to the top
        if not (h.seq & 1):
            h.seq += 1              # readers retry until the repair is done
        ds_fence_release()
        self.odd = True             # the frees below must not even it (publish)
        try:
            self._undo_journal()
            h.jblocks = 0           # its journal blocks are garbage now: the walk below frees them
            h.jkind = 0
            if jkind and undone:
                h.rollbacks += 1
            self._rebuild_allocator()
            freed = self._collect()
        except CorruptSegmentError as e:
            h.flags |= FLAG_POISONED
            ds_fence_release()
            h.seq += h.seq & 1
            h.repairs += 1
            self.odd = False
            _queue_log("segment %r: the repair after a process died holding its lock failed: %s",
                       (self.name, str(e)))
            self.lock_release_raw()
            raise
        ds_fence_release()
        h.seq += h.seq & 1
        h.repairs += 1
        self.odd = False
        if jkind and undone:
            _queue_log("segment %r: repaired after a process died holding its lock inside a %s block: "
                       "the whole block was rolled back (%d journal records undone, %d bytes it "
                       "left unreachable freed)",
                       (self.name, "transaction()" if jkind == 1 else "lock()", undone, freed))
        else:
            _queue_log("segment %r: repaired after a process died holding its lock "
                       "(%d journal records rolled back, %d bytes it left unreachable freed)",
                       (self.name, undone, freed))

    cdef void lock_release_raw(self) noexcept:
        self.lk.depth = 0
        self.lk.owner = 0
        if not (ds_fault_flag(&self.faulted) & DS_FAULTED_HEADER):
            ds_mutex_unlock(&self.hdr.mutex)
        _after_unlock(self)

    cdef void _undo_journal(self) noexcept nogil:
        """Restore the journaled words, newest first (see _undo_to)."""
        self._undo_to(0)

    cdef void _undo_to(self, uint64_t mark) noexcept nogil:
        """Restore the journaled words newest first, down to record `mark`,
        dropping each record once restored (so an undo cut short by a crash
        is finished by the repair: restoring a word twice is harmless).
        Records from JOURNAL_MAX on live in the journal blocks chained from
        the header (newest first), each checked before it is read. A record
        with the low bit set (see jrebuild) rebuilds a table's index from its
        entries, once the records after it have restored the entry count."""
        cdef Header *h = self.hdr
        cdef uint64_t n = h.jcount, off, b = h.jblocks, first = 0, cap = 0, steps = 0
        cdef uint64_t *e
        cdef uint64_t *rb = NULL
        cdef uint64_t *grown
        cdef uint64_t nrb = 0, caprb = 0, i
        cdef char *p = NULL
        cdef bint found
        self.read_limit()
        if n > JOURNAL_MAX and b == 0:
            n = JOURNAL_MAX         # (bad bytes) no block holds the records above the header's
        while n > mark:
            if n > JOURNAL_MAX:
                found = False
                while b and steps < 64:
                    p = self._jblock(b)
                    if p == NULL:
                        break
                    first = ds_ld64(p + 8)
                    cap = ds_ld64(p + 16)
                    if first < n:
                        found = n - first <= cap
                        break
                    b = ds_ld64(p)
                    steps += 1
                if not found:
                    # (bad bytes) the records above the header's cannot be read
                    n = JOURNAL_MAX if mark < JOURNAL_MAX else mark
                    h.jcount = n
                    continue
                e = <uint64_t *>(p + JBLOCK_HDR + 16 * (n - 1 - first))
            else:
                e = &h.jlog[2 * (n - 1)]
            off = e[0]
            if off & 1:
                self._rebuild_index(off & ~(<uint64_t>1))
                if nrb == caprb:
                    grown = <uint64_t *>realloc(rb, (caprb * 2 + 8) * sizeof(uint64_t))
                    if grown != NULL:
                        rb = grown
                        caprb = caprb * 2 + 8
                if nrb < caprb:
                    rb[nrb] = off & ~(<uint64_t>1)
                    nrb += 1
            elif off >= HEADER_SIZE and off <= self.lim - 8:
                ds_st64(self.base + off, e[1])
            n -= 1
            ds_fence_release()
            h.jcount = n
        h.jcount = mark
        # an older operation of the same block may have journaled index slots
        # of a table whose index a newer one rebuilt: restored after the
        # rebuild, those slots no longer match it. Rebuilt once more from the
        # restored entries, the index is right whatever came between.
        for i in range(nrb):
            self._rebuild_index(rb[i])
        c_free(rb)

    cdef char *_jblock(self, uint64_t b) noexcept nogil:
        """The payload of journal block b (next, first record, capacity,
        records), or NULL if b is not one that checks out: in bounds, a
        K_JOURNAL block whose records fit in it (bad bytes may name anything)."""
        cdef char *p
        cdef uint64_t cap
        if not self.inb(b, BLOCK_HDR + JBLOCK_HDR) or (b & (ALIGN - 1)):
            return NULL
        if ((<Block *>(self.base + b)).kind_rc & 0xff) != K_JOURNAL:
            return NULL
        p = self.base + b + BLOCK_HDR
        cap = ds_ld64(p + 16)
        if (ds_ld64(p + 8) < JOURNAL_MAX or cap > (self.lim - b - BLOCK_HDR - JBLOCK_HDR) // 16
                or BLOCK_HDR + JBLOCK_HDR + 16 * cap > <uint64_t>(<Block *>(self.base + b)).size16 * ALIGN):
            return NULL
        return p

    cdef uint64_t *_jslot(self, uint64_t n) noexcept nogil:
        """Where record n (>= JOURNAL_MAX) of an open block goes: in the
        journal block that holds it (reserved by _op_begin_in_block), or NULL
        (none does, or the chain does not check out)."""
        cdef uint64_t b = self.hdr.jblocks, first, steps = 0
        cdef char *p
        while b and steps < 64:
            p = self._jblock(b)
            if p == NULL:
                return NULL
            first = ds_ld64(p + 8)
            if n >= first:
                if n - first < ds_ld64(p + 16):
                    return <uint64_t *>(p + JBLOCK_HDR + 16 * (n - first))
                return NULL
            b = ds_ld64(p)
            steps += 1
        return NULL

    cdef void _rebuild_index(self, uint64_t t) noexcept nogil:
        """Place every live entry of table t in a cleared index. A table that
        does not check out is left alone: the repair's walk then finds it."""
        cdef Block *b
        cdef char *p
        cdef uint64_t size, nslots, nentries, i
        cdef Entry *ents
        if not self.inb(t, MIN_BLOCK) or (t & (ALIGN - 1)):
            return
        b = <Block *>(self.base + t)
        size = <uint64_t>b.size16 * ALIGN
        if (b.kind_rc & 0xff) != K_TABLE or size < BLOCK_HDR + 32 or size > self.lim - t:
            return
        p = self.base + t + BLOCK_HDR
        nslots = ds_ld64(p)
        nentries = ds_ld64(p + 16)
        size -= BLOCK_HDR
        if (nslots < 2 or (nslots & (nslots - 1)) or nslots > size // 4
                or nentries > ds_ld64(p + 8) or 32 + 4 * nslots + ENTRY_SIZE * nentries > size):
            return
        memset(p + 32, 0xff, 4 * nslots)
        ents = <Entry *>(p + 32 + 4 * nslots)
        for i in range(nentries):
            if ents[i].key.b[0] != T_EMPTY:
                self._table_place(t, ents[i].hash, <int32_t>i)

    cdef int _rebuild_allocator(self) except -1:
        """Walk the blocks from the bottom, merge free neighbours, fix the
        size links and refill the free lists; raises CorruptSegmentError if
        the blocks do not tile the heap."""
        cdef Header *h = self.hdr
        cdef uint64_t off = HEADER_SIZE, top = h.top, size16, prev16 = 0, run = 0, run16 = 0
        cdef uint64_t used = 0, nblocks = 0
        cdef uint32_t kind
        cdef Block *b
        if top > self.cap or top > h.reserved or top < HEADER_SIZE or (top & (ALIGN - 1)):
            raise CorruptSegmentError("segment %r: heap top %d out of bounds" % (self.name, top))
        memset(h.bins, 0, sizeof(h.bins))
        memset(h.binmap, 0, sizeof(h.binmap))
        while off < top:
            b = <Block *>(self.base + off)
            size16 = b.size16
            if size16 * ALIGN < MIN_BLOCK or size16 * ALIGN > top - off:
                raise CorruptSegmentError("segment %r: block at %d has a bad size" % (self.name, off))
            kind = b.kind_rc & 0xff
            if kind == K_FREE or kind == K_DEAD:
                if run == 0:
                    run = off
                    run16 = 0
                    b.prev16 = <uint32_t>prev16
                run16 += size16
            else:
                if kind > K_LAST:
                    raise CorruptSegmentError("segment %r: block at %d has kind %d" % (self.name, off, kind))
                if run:
                    self._close_run(run, run16)
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
                punch_lower_reserve(self, run + 64)
        h.used = used
        h.nblocks = nblocks
        return 0

    cdef void _close_run(self, uint64_t run, uint64_t run16) noexcept nogil:
        cdef Block *b = <Block *>(self.base + run)
        b.size16 = <uint32_t>run16
        # a run that spans a whole page may hold holes (the rest of a punched
        # block carved from below can be small): mark it so, from its start
        # (allocation from it then backs what it hands out; heap/punch.pxi)
        punch_mark(self, run, run16 * ALIGN >= 2 * PAGE, run + 64, run + run16 * ALIGN)
        self._bin_push(run, run16)

    cdef int lock_release(self) except -1:
        if (ds_fault_flag(&self.faulted) and self.lk.depth > 0 and self.lk.fork_gen == _fork_gen
                and self.lk.owner == PyThread_get_thread_ident()):
            # the mapping faulted: lock_held() would read a mutex that may be zeros now
            self.lk.depth -= 1
            if self.lk.depth == 0:
                self.lk.owner = 0
                if not _hook_no_lock and not (ds_fault_flag(&self.faulted) & DS_FAULTED_HEADER):
                    ds_mutex_unlock(&self.hdr.mutex)
            return 0
        if not self.lock_held():
            if self.lk.fork_gen != _fork_gen:
                return 0            # taken before fork by the parent; not ours to release
            raise RuntimeError("segment %r: release of a lock this thread does not hold" % self.name)
        self.lk.depth -= 1
        if self.lk.depth == 0:
            self.lk.owner = 0
            if not _hook_no_lock:
                ds_mutex_unlock(&self.hdr.mutex)
            _after_unlock(self)
        return 0

    cdef int write_begin(self) except -1:
        """Open a write: lock (reentrant), GC off. The sequence turns odd at
        the write's first change to reachable memory (publish). Every write
        ends with commit() on success, then write_end() in a finally."""
        self.lock_acquire(-1)
        sane = self._header_sane()
        if ds_fault_flag(&self.faulted):
            self.write_end()
            self.raise_faulted()
        if not sane:
            self.hdr.flags |= FLAG_POISONED
        if self.hdr.flags & FLAG_POISONED:
            self.write_end()
            raise CorruptSegmentError("segment %r was marked corrupt by a failed repair" % self.name)
        if self.wdepth == 0:
            if self.lk.bdepth:
                return self._op_begin_in_block()
            self.wdepth = 1
            self._gc_was = gc_off()
            self.committed = False
            self._settle()
            self.odd = False
            crash_point()
            return 0
        self.wdepth += 1
        return 0

    cdef int _op_begin_in_block(self) except -1:
        """write_begin of an operation inside a transaction() or lock()
        block: its savepoint (where an exception in it rolls back to), and
        room in the journal for all its records (a journal block allocated
        now, before the operation changes anything: SegmentFullError here
        leaves the operation undone)."""
        cdef Header *h = self.hdr
        cdef uint64_t want, off
        cdef char *p
        cdef Segment owner = <Segment>self.lk.bseg
        if owner is None or owner.hdr == NULL:
            self.write_end()
            raise RuntimeError("segment %r: the handle that opened this thread's block is closed" % self.name)
        if owner is not self:
            # another handle of the segment, inside the block: it records
            # for the operation, then hands its records to the block's handle
            self.txrec = True
            self.nfree = self.nrel = self.ntxa = self.ntxi = 0
        if h.jcount + JOURNAL_MAX > owner.jcap:
            want = owner.jcap if owner.jcap > JBLOCK_MIN else JBLOCK_MIN
            off = self.alloc(JBLOCK_HDR + 16 * want, K_JOURNAL)
            if off == 0:
                try:
                    self.raise_alloc_error(JBLOCK_HDR + 16 * want)
                finally:
                    self.write_end()
            if self.txrec:
                self.ntxa -= 1      # not the block's data: freed when the block ends
            p = self.base + off + BLOCK_HDR
            ds_st64(p, h.jblocks)
            ds_st64(p + 8, owner.jcap)
            ds_st64(p + 16, want)
            (<Block *>(self.base + off)).kind_rc = K_JOURNAL | (1 << 8)
            ds_fence_release()
            h.jblocks = off
            owner.jcap += want
        self.wdepth = 1
        self._gc_was = gc_off()
        self.committed = False
        self.jmark = h.jcount
        self.fmark = self.nfree
        self.rmark = self.nrel
        self.amark = self.ntxa
        self.imark = self.ntxi
        self.odd = False
        crash_point()
        return 0

    cdef void _settle(self) noexcept nogil:
        """With the lock held, no write open and no transaction() or lock()
        block open in this thread (callers check), there is no write in flight:
        a journal or an odd sequence left in the header (a repair that was
        skipped, or bad bytes) is stale. Drop the journal, so that the new
        write has all of it, and even the sequence, so that readers do not
        wait for a write that will never end."""
        cdef Header *h = self.hdr
        if h.jcount != 0:
            h.jcount = 0
        if h.jblocks != 0:
            h.jblocks = 0           # garbage for collect()
        if h.seq & 1:
            h.seq += 1

    cdef bint _header_sane(self) noexcept nogil:
        cdef Header *h = self.hdr
        return (HEADER_SIZE <= h.top <= self.cap and (h.top & (ALIGN - 1)) == 0
                and h.reserved <= self.cap and h.top <= h.reserved and h.tail16 * ALIGN <= h.top - HEADER_SIZE
                and h.root >= HEADER_SIZE and h.root <= h.top - MIN_BLOCK
                and h.names >= HEADER_SIZE and h.names <= h.top - MIN_BLOCK
                and (h.jcount <= JOURNAL_MAX or (h.jblocks != 0 and h.jcount <= self.cap // 16)))

    cdef int commit(self) except -1:
        """The write is complete: drop its journal, then release what it left
        unreachable. A crash from here on keeps the write. A write that found
        the allocator corrupt is not committed (write_end undoes it)."""
        if ds_fault_flag(&self.faulted):
            self.raise_faulted()        # the write met a fault: it is not committed
        if self.wdepth != 1:
            return 0
        if self.hdr.flags & FLAG_POISONED:
            raise CorruptSegmentError("segment %r is corrupt: its allocator holds bytes that "
                                      "cannot be trusted" % self.name)
        if self.lk.bdepth and not _hook_no_rollback:
            # inside a transaction() or lock() block: the journal and what
            # is to be freed wait for the block's end (txn_commit)
            self.committed = True
            self.end_publication()
            if self.lk.bseg is not self:
                txn_hand_over(self)
            return 0
        ds_fence_release()
        crash_point()
        self.hdr.jcount = 0
        ds_fence_release()
        crash_point()
        self.committed = True
        # what is left is freeing blocks that nothing reachable refers to:
        # lock-free readers go on meanwhile (free, view_gen_ok)
        self.end_publication()
        self._run_deferred()
        if DSHARED_DEBUG >= 1:
            self._debug_commit()
        if DSHARED_DEBUG >= 2:
            self.debug_check_due = True
        return 0

    cdef void _debug_commit(self) noexcept nogil:
        """DSHARED_DEBUG >= 1: the header and counter invariants after a
        commit; a broken one is fatal (include/debug.h)."""
        cdef Header *h = self.hdr
        DS_ASSERT(h.jcount == 0, "the journal is empty after a commit")
        DS_ASSERT((h.seq & 1) == 0, "the write sequence is even after a commit")
        DS_ASSERT(h.top >= HEADER_SIZE and h.top <= self.cap and h.top <= h.reserved,
                  "the top of the heap lies in the backed capacity")
        DS_ASSERT((h.top & (ALIGN - 1)) == 0, "the top of the heap is aligned")
        DS_ASSERT(h.used <= h.top - HEADER_SIZE, "the bytes in use lie below the top")
        DS_ASSERT(h.nblocks * MIN_BLOCK <= h.used, "every live block counted in used holds MIN_BLOCK bytes")
        DS_ASSERT(h.tail16 * ALIGN <= h.top - HEADER_SIZE, "the block below the top lies in the heap")
        DS_ASSERT(h.root >= HEADER_SIZE and h.root < h.top and h.names >= HEADER_SIZE and h.names < h.top,
                  "the root and names dicts lie in the heap")
        DS_ASSERT((h.flags & FLAG_POISONED) == 0, "a committed write leaves the segment unpoisoned")
        DS_ASSERT(self.nfree == 0 and self.nrel == 0, "the deferred frees ran")

    cdef void _debug_check(self) noexcept:
        """DSHARED_DEBUG >= 2: the full check() after a write (the lock
        released: check takes it again); a problem is fatal."""
        cdef bytes text
        self.debug_check_due = False
        try:
            report = self.check()
            if report.ok:
                return
            text = ("; ".join(report.problems)[:4000]).encode("utf-8", "replace")
        except BaseException as e:         # the check itself failed: say so
            text = ("check() raised %r" % (e,)).encode("utf-8", "replace")
        ds_debug_fail("check() after a write", text, "_heap.pyx", 0)

    cdef void write_end(self) noexcept:
        """Close a write; one that did not commit is undone through its journal."""
        if self.wdepth == 1:
            if not self.committed or (self.hdr.flags & FLAG_POISONED):
                if self.lk.bdepth:
                    self._op_failed_in_block()
                    if self.lk.bseg is not self:
                        txn_hand_over(self)
                else:
                    self._undo_journal()
                    self.nfree = 0
                    self.nrel = 0
            self.end_publication()
            nt_bump(self)               # change notifications (_notify.pxi)
            gc_restore(self._gc_was)
        if self.wdepth > 0:
            self.wdepth -= 1
        self.lk.depth -= 1
        if self.lk.depth == 0:
            self.lk.owner = 0
            if not _hook_no_lock and not (ds_fault_flag(&self.faulted) & DS_FAULTED_HEADER):
                ds_mutex_unlock(&self.hdr.mutex)
            _after_unlock(self)
            if DSHARED_DEBUG >= 2 and self.debug_check_due and self.base != NULL:
                self._debug_check()

    # -- the journal: in-place stores of a write, undone if it does not finish --

    cdef void jstore(self, void *p, uint64_t v) noexcept:
        cdef Header *h = self.hdr
        cdef uint64_t n = h.jcount
        cdef uint64_t *e
        if n < JOURNAL_MAX:
            e = &h.jlog[2 * n]
        else:
            # inside a block: room was reserved when the operation began
            # (every operation is built to need fewer than JOURNAL_MAX)
            e = self._jslot(n)
            if e == NULL:
                # the chain does not check out (bad bytes): the store is not
                # made, and the write is not committed (commit() raises)
                self._heap_corrupt()
                return
        self.publish()
        e[0] = <uint64_t>(<char *>p - self.base)
        e[1] = ds_ld64(p)
        ds_fence_release()
        h.jcount = n + 1
        ds_fence_release()
        crash_point()
        ds_st64(p, v)
        crash_point()

    cdef void jstore_cell(self, Cell *dst, const Cell *src) noexcept:
        self.jstore(&dst.b[0], ds_ld64(&src.b[0]))
        self.jstore(&dst.b[8], ds_ld64(&src.b[8]))

    cdef void jrebuild(self, uint64_t t) noexcept:
        """Journal "rebuild the index of table t": the writes that follow may
        change its index slots unjournaled, provided the entry count is
        journaled after this record (an undo restores the count, then
        rebuilds the index from the entries below it)."""
        cdef Header *h = self.hdr
        cdef uint64_t n = h.jcount
        cdef uint64_t *e
        if n < JOURNAL_MAX:
            e = &h.jlog[2 * n]
        else:
            e = self._jslot(n)
            if e == NULL:
                self._heap_corrupt()    # (as in jstore)
                return
        self.publish()
        e[0] = t | 1
        e[1] = 0
        ds_fence_release()
        h.jcount = n + 1
        ds_fence_release()
        crash_point()

    cdef void defer_free(self, uint64_t off) noexcept:
        """Free a block (its contents moved) once the write commits."""
        if self.nfree == self.capfree:
            self.pfree = <uint64_t *>realloc(self.pfree, (self.capfree * 2 + 16) * sizeof(uint64_t))
            if self.pfree == NULL:
                abort()
            self.capfree = self.capfree * 2 + 16
        self.pfree[self.nfree] = off
        self.nfree += 1

    cdef void defer_release(self, const Cell *c) noexcept:
        """Drop the reference cell c held, once the write commits."""
        if c.b[0] < T_FIRST_REF or c.b[0] > T_LAST:
            return
        self.defer_release_block(ds_ld64(&c.b[8]))

    cdef void defer_release_block(self, uint64_t off) noexcept:
        if self.nrel == self.caprel:
            self.prel = <uint64_t *>realloc(self.prel, (self.caprel * 2 + 16) * sizeof(uint64_t))
            if self.prel == NULL:
                abort()
            self.caprel = self.caprel * 2 + 16
        self.prel[self.nrel] = off
        self.nrel += 1

    cdef void end_publication(self) noexcept nogil:
        """Even the sequence if this write made it odd: readers may go on."""
        if self.odd:
            ds_fence_release()
            self.hdr.seq += 1
            self.odd = False

    cdef void _op_failed_in_block(self) noexcept:
        """An operation inside a block failed: undo its records (back to its
        savepoint), forget what it meant to free, and forget its allocations
        and increfs, which it gave back itself before failing."""
        cdef uint64_t i, j
        cdef Block *b
        self._undo_to(self.jmark)
        self.nfree = self.fmark
        self.nrel = self.rmark
        self.ntxi = self.imark
        j = self.amark
        for i in range(self.amark, self.ntxa):
            b = <Block *>(self.base + self.txa[2 * i])
            if b.gen == <uint32_t>self.txa[2 * i + 1] and (b.kind_rc & 0xff) != K_FREE and (b.kind_rc & 0xff) <= K_LAST:
                self.txa[2 * j] = self.txa[2 * i]
                self.txa[2 * j + 1] = self.txa[2 * i + 1]
                j += 1
        self.ntxa = j

    cdef void _rec_alloc(self, uint64_t off) noexcept nogil:
        if self.ntxa == self.captxa:
            self.txa = <uint64_t *>realloc(self.txa, (self.captxa * 2 + 16) * 2 * sizeof(uint64_t))
            if self.txa == NULL:
                abort()
            self.captxa = self.captxa * 2 + 16
        self.txa[2 * self.ntxa] = off
        self.txa[2 * self.ntxa + 1] = (<Block *>(self.base + off)).gen
        self.ntxa += 1

    cdef void _rec_incref(self, uint64_t off) noexcept nogil:
        if self.ntxi == self.captxi:
            self.txi = <uint64_t *>realloc(self.txi, (self.captxi * 2 + 16) * sizeof(uint64_t))
            if self.txi == NULL:
                abort()
            self.captxi = self.captxi * 2 + 16
        self.txi[self.ntxi] = off
        self.ntxi += 1

    cdef void _run_deferred(self) noexcept:
        cdef uint64_t i, n
        n = self.nfree
        self.nfree = 0
        for i in range(n):
            self.free(self.pfree[i])
            crash_point()
        n = self.nrel
        self.nrel = 0
        for i in range(n):
            self.release_block(self.prel[i])
            crash_point()

    def acquire(self, timeout=None):
        """Take the segment lock (reentrant within a thread); LockTimeout
        after `timeout` seconds (None: wait as long as it takes)."""
        self.lock_acquire(_timeout(timeout))
        return True

    def release(self):
        self.lock_release()

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
        return self.lk.bdepth > 0 and self.lock_held()

    # -- allocator -------------------------------------------------------------

    cdef int _bin(self, uint64_t size16) noexcept nogil:
        if size16 < SMALL_BINS:
            return <int>size16
        return 58 + ds_bitlen64(size16)

    cdef bint _free_link_ok(self, uint64_t off) noexcept nogil:
        """A free-list link: 0, or a free block inside the heap."""
        return off == 0 or (off >= HEADER_SIZE and off <= self.hdr.top - MIN_BLOCK
                            and (off & (ALIGN - 1)) == 0
                            and ((<Block *>(self.base + off)).kind_rc & 0xff) == K_FREE)

    cdef bint _tiles_ok(self, uint64_t off) noexcept nogil:
        """The size of the block at off (inside the heap) can be trusted: the
        block ends at the top, or where the next block says the one below it
        ends. A grown size would hand out, split or merge live blocks."""
        cdef uint64_t top = self.hdr.top, end
        cdef uint64_t size = <uint64_t>(<Block *>(self.base + off)).size16 * ALIGN
        if size < MIN_BLOCK or size > top - off:
            return False
        end = off + size
        return end == top or (top - end >= MIN_BLOCK and
                              <uint64_t>(<Block *>(self.base + end)).prev16 * ALIGN == size)

    cdef void _heap_corrupt(self) noexcept nogil:
        """The allocator met bytes it cannot trust: stop trusting the segment."""
        self.hdr.flags |= FLAG_POISONED

    cdef void _bin_push(self, uint64_t off, uint64_t size16) noexcept nogil:
        cdef Header *h = self.hdr
        cdef int i = self._bin(size16)
        cdef uint64_t head = h.bins[i]
        cdef char *p = self.base + off
        if not self._free_link_ok(head):
            self._heap_corrupt()
            head = 0
        ds_st64(p + 16, head)          # next
        ds_st64(p + 24, 0)             # prev
        if head:
            ds_st64(self.base + head + 24, off)
        h.bins[i] = off
        h.binmap[i >> 6] |= (<uint64_t>1) << (i & 63)

    cdef void _bin_remove(self, uint64_t off, uint64_t size16) noexcept nogil:
        cdef Header *h = self.hdr
        cdef int i = self._bin(size16)
        cdef char *p = self.base + off
        cdef uint64_t nxt = ds_ld64(p + 16), prv = ds_ld64(p + 24)
        if not self._free_link_ok(nxt) or not self._free_link_ok(prv):
            # a broken list: drop it (its blocks leak until a repair rebuilds it)
            self._heap_corrupt()
            h.bins[i] = 0
            h.binmap[i >> 6] &= ~((<uint64_t>1) << (i & 63))
            return
        if prv:
            ds_st64(self.base + prv + 16, nxt)
        else:
            h.bins[i] = nxt
        if nxt:
            ds_st64(self.base + nxt + 24, prv)
        if h.bins[i] == 0:
            h.binmap[i >> 6] &= ~((<uint64_t>1) << (i & 63))

    cdef void _set_prev16(self, uint64_t off, uint64_t prev16) noexcept nogil:
        # tell the block above `off` (or the top) how big `off`'s block is
        if off >= self.hdr.top:
            self.hdr.tail16 = prev16
        else:
            (<Block *>(self.base + off)).prev16 = <uint32_t>prev16

    cdef uint64_t alloc(self, uint64_t payload, int kind) noexcept nogil:
        """A block for `payload` bytes, with refcount 0; 0 if there is no room
        (self.err says why). Must hold the lock."""
        cdef Header *h = self.hdr
        cdef uint64_t need, size16, off = 0, have16, rest16, mask
        cdef int i, w, rc
        cdef Block *b
        cdef uint64_t n, hf = 0, he = 0
        cdef bint was_punched
        if payload > self.cap or fail_alloc_now():
            self.err = 12
            return 0
        need = (payload + BLOCK_HDR + ALIGN - 1) & ~(<uint64_t>(ALIGN - 1))
        if need < MIN_BLOCK:
            need = MIN_BLOCK
        size16 = need // ALIGN
        if size16 >= (<uint64_t>1) << 32:
            self.err = 12
            return 0
        i = self._bin(size16)
        # exact small bin first, then the first non-empty larger bin; in a
        # power-of-two bin, walk the list for a fitting block (bounded)
        while i < NBINS and off == 0:
            w = i >> 6
            mask = h.binmap[w] & ~(((<uint64_t>1) << (i & 63)) - 1)
            if mask == 0:
                i = (w + 1) << 6
                continue
            i = (w << 6) + ds_ctz64(mask)
            off = h.bins[i]
            n = 0
            while off and n < (self.cap >> 5):
                if not self._free_link_ok(off) or not self._tiles_ok(off):
                    self._heap_corrupt()
                    h.bins[i] = 0
                    h.binmap[i >> 6] &= ~((<uint64_t>1) << (i & 63))
                    off = 0
                    break
                if (<Block *>(self.base + off)).size16 >= size16:
                    break
                off = ds_ld64(self.base + off + 16)
                n += 1
            if off == 0:
                i += 1
        if off:
            b = <Block *>(self.base + off)
            have16 = b.size16
            was_punched = (b.kind_rc & PUNCHED) != 0
            if was_punched:
                # pages handed back: back what this block and the rest's
                # header will touch first (ENOSPC fails here, cleanly)
                rc = punch_reback(self, off, have16, need, &hf, &he)
                if rc:
                    self.err = rc
                    return 0
            self._bin_remove(off, have16)
            rest16 = have16 - size16
            if rest16 * ALIGN >= MIN_BLOCK:
                # split: the rest becomes a free block above; its header is
                # written before this one shrinks, so the blocks always tile
                (<Block *>(self.base + off + need)).size16 = <uint32_t>rest16
                (<Block *>(self.base + off + need)).prev16 = <uint32_t>size16
                punch_split(self, off + need, was_punched, hf, he)
                ds_fence_release()
                b.size16 = <uint32_t>size16
                self._set_prev16(off + have16 * ALIGN, rest16)
                self._bin_push(off + need, rest16)
            else:
                size16 = have16
        else:
            # from the top
            if need > self.cap - h.top:
                self.err = 12
                return 0
            if h.top + need > h.reserved:
                self.err = self._reserve(h.top + need)
                if self.err:
                    return 0
            off = h.top
            b = <Block *>(self.base + off)
            b.size16 = <uint32_t>size16
            b.prev16 = <uint32_t>h.tail16
            h.top = off + need
            h.tail16 = size16
            self.read_limit()
        h.gen += 1
        if <uint32_t>h.gen == 0:
            h.gen += 1
        b.gen = <uint32_t>h.gen
        b.kind_rc = <uint32_t>kind
        h.used += size16 * ALIGN
        h.nblocks += 1
        if self.txrec:
            self._rec_alloc(off)
        return off

    cdef void free(self, uint64_t off) noexcept nogil:
        """Return a block to the allocator, merging it with free neighbours."""
        cdef Header *h = self.hdr
        cdef Block *b
        cdef uint64_t size16, up, below, lo, hi, bhf = 0, bhe = 0, uhf = 0, uhe = 0
        cdef bint below_p = False, up_p = False
        cdef Block *n
        if off < HEADER_SIZE or off > h.top - MIN_BLOCK or (off & (ALIGN - 1)) or not self._tiles_ok(off):
            self._heap_corrupt()
            return
        # nothing reachable refers to the block: a free needs no odd window of
        # the write sequence; a view that outlived its object may still read
        # it, so the generation changes first (view_gen_ok)
        b = <Block *>(self.base + off)
        size16 = b.size16
        up = off + size16 * ALIGN
        if up < h.top and ((<Block *>(self.base + up)).kind_rc & 0xff) == K_FREE and not self._tiles_ok(up):
            self._heap_corrupt()
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
            n = <Block *>(self.base + up)
            if (n.kind_rc & 0xff) == K_FREE:
                if n.kind_rc & PUNCHED:
                    up_p = True
                    punch_range(self, up, &uhf, &uhe)
                    hi = uhf
                else:
                    hi = up + <uint64_t>n.size16 * ALIGN
                self._bin_remove(up, n.size16)
                size16 += n.size16
                n.kind_rc = K_DEAD
        # merge with the block below
        if b.prev16 and <uint64_t>b.prev16 * ALIGN <= off - HEADER_SIZE:
            below = off - <uint64_t>b.prev16 * ALIGN
            n = <Block *>(self.base + below)
            if (n.kind_rc & 0xff) == K_FREE and <uint64_t>n.size16 == b.prev16:
                if n.kind_rc & PUNCHED:
                    below_p = True
                    punch_range(self, below, &bhf, &bhe)
                    lo = bhe
                else:
                    lo = below
                self._bin_remove(below, n.size16)
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
                punch_lower_reserve(self, bhf if below_p and (not up_p or bhf < uhf) else uhf)
            self._shrink_reserve()
            return
        b.size16 = <uint32_t>size16
        self._set_prev16(off + size16 * ALIGN, size16)
        punch_free_run(self, off, size16, lo, hi, below_p, bhf, bhe, up_p, uhf, uhe)
        self._bin_push(off, size16)

    cdef void incref(self, uint64_t off) noexcept nogil:
        cdef Block *b = <Block *>(self.base + off)
        if (b.kind_rc >> 8) < RC_MAX:
            b.kind_rc += 0x100
            if self.txrec:
                self._rec_incref(off)

    cdef void decref_cell(self, const Cell *c) noexcept:
        """Drop the reference a cell holds; free what becomes unreachable."""
        if c.b[0] >= T_FIRST_REF and c.b[0] <= T_LAST:
            self.release_block(ds_ld64(&c.b[8]))

    cdef void release_block(self, uint64_t off) noexcept:
        """Drop one reference to block `off`; free what becomes unreachable,
        iteratively (nesting can be 100,000 deep)."""
        cdef uint64_t *stack = NULL
        cdef uint64_t n = 0, cap = 0, freed = 0
        while True:
            if self._decref_one(off):
                # unreachable now: queue the blocks it references, then free it
                if ((<Block *>(self.base + off)).kind_rc & 0xff) in (K_DICT, K_LIST):
                    nt_container(self, off)     # its waiters return (see _nt_wait)
                n = self._push_children(off, &stack, &n, &cap)
                self.free(off)
                freed += 1
                if freed % 64 == 0:
                    crash_point()
            if n == 0:
                break
            n -= 1
            off = stack[n]
        c_free(stack)

    cdef bint _decref_one(self, uint64_t off) noexcept nogil:
        cdef Block *b
        if not self.inb(off, BLOCK_HDR) or (off & (ALIGN - 1)):
            return False
        b = <Block *>(self.base + off)
        if (b.kind_rc & 0xff) == K_FREE or (b.kind_rc & 0xff) > K_LAST:
            return False
        if (b.kind_rc >> 8) == RC_MAX:
            return False                # saturated: left to collect()
        if (b.kind_rc >> 8) <= 1:
            b.kind_rc &= 0xff
            return True
        b.kind_rc -= 0x100
        return False

    cdef uint64_t _push_children(self, uint64_t off, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept:
        """Push the blocks that block `off` references (owned cells, and the
        table/items block of a container) onto the stack."""
        cdef Block *b = <Block *>(self.base + off)
        cdef int kind = b.kind_rc & 0xff
        cdef uint64_t size = <uint64_t>b.size16 * ALIGN, i, cnt, sub
        cdef char *p = self.base + off + BLOCK_HDR
        cdef Cell *cells = NULL
        cdef Entry *ents
        if size < MIN_BLOCK or not self.inb(off, size):
            return n[0]                 # (bad bytes) a size below the header would wrap the bounds below
        if kind == K_TUPLE:
            cnt = ds_ld64(p)
            if cnt <= (size - BLOCK_HDR - 8) // CELL_SIZE:
                cells = <Cell *>(p + 8)
                for i in range(cnt):
                    self._push_cell(&cells[i], stack, n, cap)
        elif kind == K_DICT or kind == K_LIST:
            sub = ds_ld64(p)
            if sub:
                # the table/items block belongs to its container alone (rc 1)
                self._push(sub, stack, n, cap)
            if kind == K_LIST and sub and self._valid_ref(sub):
                # the cells below the list's length are its items
                cnt = ds_ld64(p + 8)
                size = <uint64_t>(<Block *>(self.base + sub)).size16 * ALIGN
                if size < MIN_BLOCK or not self.inb(sub, size):
                    return n[0]
                i = ds_ld64(self.base + sub + BLOCK_HDR)
                if cnt <= i and i <= (size - BLOCK_HDR - 8) // CELL_SIZE:
                    cells = <Cell *>(self.base + sub + BLOCK_HDR + 8)
                    for i in range(cnt):
                        self._push_cell(&cells[i], stack, n, cap)
        elif kind == K_TABLE:
            cnt = ds_ld64(p + 16)   # nentries
            i = ds_ld64(p)          # nslots
            if i <= size and cnt <= size // ENTRY_SIZE and 32 + 4 * i + ENTRY_SIZE * cnt <= size - BLOCK_HDR:
                ents = <Entry *>(p + 32 + 4 * i)
                for i in range(cnt):
                    if ents[i].key.b[0] != T_EMPTY and ents[i].key.b[0] != T_PACKED:
                        self._push_cell(&ents[i].key, stack, n, cap)
                        self._push_cell(&ents[i].value, stack, n, cap)
        return n[0]

    cdef void _push_cell(self, const Cell *c, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept:
        if c.b[0] >= T_FIRST_REF and c.b[0] <= T_LAST:
            self._push(ds_ld64(&c.b[8]), stack, n, cap)

    cdef void _push(self, uint64_t off, uint64_t **stack, uint64_t *n, uint64_t *cap) noexcept:
        cdef uint64_t *grown
        if n[0] == cap[0]:
            grown = <uint64_t *>realloc(stack[0], (cap[0] * 2 + 64) * sizeof(uint64_t))
            if grown == NULL:
                return                  # out of process memory: leak, collect() reclaims
            stack[0] = grown
            cap[0] = cap[0] * 2 + 64
        stack[0][n[0]] = off
        n[0] += 1

    cdef int raise_alloc_error(self, uint64_t want) except -1:
        raise self.full_error(want, self.err)

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

    # (byte blocks and keys: block_bytes, key_matches in heap/keys.pxd)

    # -- dict tables ---------------------------------------------------------------
    #
    # TABLE payload: nslots, capacity, nentries (dense, incl. deleted), count
    # (live), then int32 index[nslots], then Entry entries[capacity].

    cdef uint64_t dict_table(self, uint64_t d) except? 0:
        """The table block of dict block `d` (already checked by view_block), or 0."""
        cdef TableView tv
        table_view(self, d, &tv)
        return tv.off

    cdef uint64_t _new_table(self, uint64_t n) noexcept nogil:
        """A table block with room for n entries (at least 1), empty; 0 if no room."""
        cdef uint64_t capacity = n if n > 1 else 1
        cdef uint64_t nslots = table_slots(capacity), t
        cdef char *p
        t = self.alloc(32 + 4 * nslots + ENTRY_SIZE * capacity, K_TABLE)
        if t == 0:
            return 0
        p = self.base + t + BLOCK_HDR
        ds_st64(p, nslots)
        ds_st64(p + 8, capacity)
        ds_st64(p + 16, 0)
        ds_st64(p + 24, 0)
        memset(p + 32, 0xff, 4 * nslots)    # IX_EMPTY
        (<Block *>(self.base + t)).kind_rc = K_TABLE | (1 << 8)
        return t

    cdef void _table_place(self, uint64_t t, uint64_t hash, int32_t ix) noexcept nogil:
        """Put entry ix into the first free slot of its probe sequence."""
        cdef char *p = self.base + t + BLOCK_HDR
        cdef int32_t *index = <int32_t *>(p + 32)
        cdef Probe pr
        probe_start(&pr, hash, ds_ld64(p))
        while index[pr.i] >= 0 and probe_next(&pr):
            pass
        index[pr.i] = ix

    cdef int table_fill(self, uint64_t t, const uint64_t *hashes, const Cell *cells, uint64_t n) except -1:
        """Append n fresh entries (hash, key, value pairs of cells) to a new table."""
        cdef char *p = self.base + t + BLOCK_HDR
        cdef Entry *ents = <Entry *>(p + 32 + 4 * ds_ld64(p))
        cdef uint64_t i, base_ix = ds_ld64(p + 16)
        for i in range(n):
            ents[base_ix + i].hash = hashes[i]
            ents[base_ix + i].key = cells[2 * i]
            ents[base_ix + i].value = cells[2 * i + 1]
            self._table_place(t, hashes[i], <int32_t>(base_ix + i))
        ds_st64(p + 16, base_ix + n)
        ds_st64(p + 24, ds_ld64(p + 24) + n)
        return 0

    cdef int dict_reserve(self, uint64_t d, uint64_t n) except -1:
        """Make room for n more entries, building a bigger table if needed and
        publishing it with one journaled store; on failure nothing changed."""
        cdef uint64_t t = self.dict_table(d), nt, count, i, j, nold, mask
        cdef char *p = NULL
        cdef char *q
        cdef Entry *old
        cdef Entry *new
        if t:
            p = self.base + t + BLOCK_HDR
            if ds_ld64(p + 16) + n <= ds_ld64(p + 8):
                return 0
            count = self._live_count(t)
        else:
            count = 0
        # grow by 1.25, and to at least 5 entries: a dict grown one key at a
        # time must not rebuild its table on each of its first inserts
        nt = self._new_table(max(count + count // 4 + n, 5))
        if nt == 0:
            self.raise_alloc_error(32 + ENTRY_SIZE * (count + n))
        crash_point()
        if t:
            old = <Entry *>(p + 32 + 4 * ds_ld64(p))
            q = self.base + nt + BLOCK_HDR
            new = <Entry *>(q + 32 + 4 * ds_ld64(q))
            j = 0
            nold = ds_ld64(p + 16)
            mask = ds_ld64(q) - 1
            for i in range(nold):
                if i + 16 < nold:
                    # the new index is written in hash order: its misses overlap
                    ds_prefetch(q + 32 + 4 * (old[i + 16].hash & mask), 4)
                if old[i].key.b[0] != T_EMPTY:
                    new[j] = old[i]
                    self._table_place(nt, old[i].hash, <int32_t>j)
                    j += 1
            ds_st64(q + 16, j)
            ds_st64(q + 24, j)
        self.jstore(self.base + d + BLOCK_HDR, nt)
        self._bump_version(d)
        if t:
            self.defer_free(t)          # its entries moved to the new table
        return 0

    cdef void _bump_version(self, uint64_t c) noexcept:
        # DICT payload: table, version; LIST payload: items, len, version
        cdef bint is_list = ((<Block *>(self.base + c)).kind_rc & 0xff) == K_LIST
        cdef char *p = self.base + c + BLOCK_HDR + (16 if is_list else 8)
        self.jstore(p, ds_ld64(p) + 1)
        nt_container(self, c)

    cdef int dict_insert(self, uint64_t d, const Key *k, const Cell *key, const Cell *value) except -1:
        """Add a new entry (the key must be absent; room reserved). The entry
        is written past the live ones first; the index slot and the counts
        that make it visible are journaled."""
        cdef uint64_t t = self.dict_table(d)
        cdef char *p = self.base + t + BLOCK_HDR
        cdef uint64_t ix = ds_ld64(p + 16)
        cdef uint64_t nslots = ds_ld64(p), i
        cdef int32_t *index = <int32_t *>(p + 32)
        cdef Entry *e = <Entry *>(p + 32 + 4 * nslots) + ix
        cdef uint64_t pair
        cdef int32_t ix32
        cdef Probe pr
        e.hash = k.hash
        e.value = value[0]
        e.key = key[0]
        crash_point()
        probe_start(&pr, k.hash, nslots)
        while index[pr.i] >= 0:
            if not probe_next(&pr):
                raise CorruptSegmentError("dict table at %d of segment %r has no free slot" % (t, self.name))
        i = pr.i
        # index slots are 4 bytes: journal the aligned 8 bytes around the slot
        pair = ds_ld64(&index[i & ~(<uint64_t>1)])
        ix32 = <int32_t>ix
        memcpy((<char *>&pair) + 4 * (i & 1), &ix32, 4)     # not through an int32 alias
        self.jstore(&index[i & ~(<uint64_t>1)], pair)
        self.jstore(p + 16, ix + 1)
        self.jstore(p + 24, ds_ld64(p + 24) + 1)
        self._bump_version(d)
        nt_key(self, d, k.hash)
        return 0

    cdef int dict_update_fresh(self, uint64_t d, const Key *keys, const Cell *cells, uint64_t n) except -1:
        """Store n (key, value) pairs (cells 2i, 2i+1) by building a new table
        with the old entries and the new pairs, then publishing it with one
        journaled store: however many pairs, the journal stays small. On
        failure nothing changed."""
        cdef uint64_t t = self.dict_table(d), nt, count = 0, i, j = 0
        cdef char *p = NULL
        cdef char *q
        cdef Entry *old
        cdef Entry *ents
        cdef int64_t ix
        if t:
            p = self.base + t + BLOCK_HDR
            count = self._live_count(t)
        nt = self._new_table(count + n)
        if nt == 0:
            self.raise_alloc_error(32 + ENTRY_SIZE * (count + n))
        crash_point()
        q = self.base + nt + BLOCK_HDR
        ents = <Entry *>(q + 32 + 4 * ds_ld64(q))
        if t:
            old = <Entry *>(p + 32 + 4 * ds_ld64(p))
            for i in range(ds_ld64(p + 16)):
                if old[i].key.b[0] != T_EMPTY:
                    ents[j] = old[i]
                    self._table_place(nt, old[i].hash, <int32_t>j)
                    j += 1
        ds_st64(q + 16, j)
        ds_st64(q + 24, j)
        for i in range(n):
            ix = table_find(self, nt, &keys[i])
            if ix >= 0:
                self._entry_set(&ents[ix], &cells[2 * i], False)
            else:
                self.table_fill(nt, &keys[i].hash, &cells[2 * i], 1)
        self.jstore(self.base + d + BLOCK_HDR, nt)
        self._bump_version(d)
        _nt_keys(self, d, keys, n)
        if t:
            self.defer_free(t)
        return 0

    cdef uint64_t _live_count(self, uint64_t t) except? 0:
        """The count of table t (checked by dict_table), once it is shown to
        match its live entries: a new table is sized from it and then gets
        every live entry copied in."""
        cdef char *p = self.base + t + BLOCK_HDR
        cdef Entry *ents = <Entry *>(p + 32 + 4 * ds_ld64(p))
        cdef uint64_t i, live = 0, count = ds_ld64(p + 24)
        for i in range(ds_ld64(p + 16)):
            if ents[i].key.b[0] != T_EMPTY:
                live += 1
        if live != count:
            raise CorruptSegmentError("dict table at %d of segment %r counts %d entries, holds %d"
                                      % (t, self.name, count, live))
        return count

    cdef int dict_insert_many(self, uint64_t d, const Key *keys, const Cell *cells, uint64_t n) except -1:
        """Store n (key, value) pairs (cells 2i, 2i+1) in the dict's table in
        place: the caller reserved room for the new keys, and at most
        MANY_OVERWRITES of the keys are in the dict already (each overwrite
        is journaled). New entries and their index slots are not journaled
        one by one: one jrebuild record and the journaled counts undo them
        all, so a batch costs O(n), not a new table."""
        cdef uint64_t t = self.dict_table(d), i, orig
        cdef char *p = self.base + t + BLOCK_HDR
        cdef Entry *ents = <Entry *>(p + 32 + 4 * ds_ld64(p))
        cdef int64_t ix
        orig = ds_ld64(p + 16)
        self.jrebuild(t)
        self.jstore(p + 16, orig)
        self.jstore(p + 24, ds_ld64(p + 24))
        for i in range(n):
            if i + 16 < n:
                # the misses of successive keys overlap (see _codec.prefetch_lookup)
                ds_prefetch(p + 32 + 4 * (keys[i + 16].hash & (ds_ld64(p) - 1)), 4)
            ix = table_find(self, t, &keys[i])
            if ix >= 0:
                # a key already there is journaled; one added by this batch is not
                self._entry_set(&ents[ix], &cells[2 * i], <uint64_t>ix < orig)
            else:
                if ds_ld64(p + 16) >= ds_ld64(p + 8):
                    raise CorruptSegmentError("dict table at %d of segment %r is full" % (t, self.name))
                self.table_fill(t, &keys[i].hash, &cells[2 * i], 1)
            crash_point()
        self._bump_version(d)
        _nt_keys(self, d, keys, n)
        return 0

    cdef int dict_set_pair(self, uint64_t d, int64_t ix, const Cell *pair) except -1:
        """Give entry ix (whose key equals pair's) the value of pair (a key
        cell and a value cell, or a packed area); the old value is released
        on commit, and the key already there stays."""
        cdef Entry *e = dict_entry(self, d, ix)
        self._entry_set(e, pair, True)
        nt_key(self, d, e.hash)
        return 0

    cdef void _entry_set(self, Entry *e, const Cell *pair, bint journal) noexcept:
        cdef Cell key, old = e.value
        cdef uint8_t ln
        if e.key.b[0] != T_PACKED:
            self.defer_release(&old)
        if pair[0].b[0] == T_PACKED:
            # the new pair is packed: the key is a short str like the one there
            if journal:
                self.jstore_cell(&e.key, &pair[0])
                self.jstore_cell(&e.value, &pair[1])
            else:
                e.key = pair[0]
                e.value = pair[1]
            return
        self.defer_release(&pair[0])
        if e.key.b[0] == T_PACKED:
            # unpack: the key (at most 14 bytes) becomes an inline key cell
            ln = e.key.b[1] & 0x7f
            memset(&key, 0, CELL_SIZE)
            key.b[0] = T_SSTR
            key.b[1] = e.key.b[1]
            memcpy(&key.b[2], &e.key.b[4], ln if ln <= INLINE_MAX else INLINE_MAX)
            if journal:
                self.jstore_cell(&e.key, &key)
            else:
                e.key = key
        if journal:
            self.jstore_cell(&e.value, &pair[1])
        else:
            e.value = pair[1]

    cdef int dict_remove(self, uint64_t d, int64_t ix) except -1:
        """Remove entry ix; its key and value are released on commit."""
        cdef uint64_t t = self.dict_table(d)
        cdef char *p = self.base + t + BLOCK_HDR
        cdef int32_t *index = <int32_t *>(p + 32)
        cdef Entry *e = <Entry *>(p + 32 + 4 * ds_ld64(p)) + ix
        cdef uint64_t i, pair
        cdef Probe pr
        cdef int32_t ix32
        cdef Cell key = e.key, value = e.value, empty
        memset(&empty, 0, CELL_SIZE)
        if ds_ld64(p + 24) == 1:
            # the last one: drop the whole table, so used bytes return to the baseline
            self.jstore(self.base + d + BLOCK_HDR, 0)
            self._bump_version(d)
            nt_key(self, d, e.hash)
            self.defer_release_block(t)
            return 0
        probe_start(&pr, e.hash, ds_ld64(p))
        while index[pr.i] != ix and probe_next(&pr):
            pass
        i = pr.i
        if index[i] == ix:
            pair = ds_ld64(&index[i & ~(<uint64_t>1)])
            ix32 = IX_DUMMY
            memcpy((<char *>&pair) + 4 * (i & 1), &ix32, 4)
            self.jstore(&index[i & ~(<uint64_t>1)], pair)
        self.jstore_cell(&e.key, &empty)
        self.jstore_cell(&e.value, &empty)
        if key.b[0] == T_PACKED:
            memset(&key, 0, CELL_SIZE)   # nothing to release
            memset(&value, 0, CELL_SIZE)
        # the position is not reused: nentries only grows, so a table full of
        # deleted slots reaches its capacity and is rebuilt clean
        self.jstore(p + 24, ds_ld64(p + 24) - 1)
        self._bump_version(d)
        nt_key(self, d, e.hash)
        self.defer_release(&key)
        self.defer_release(&value)
        return 0

    cdef int dict_clear(self, uint64_t d) except -1:
        cdef uint64_t t = self.dict_table(d)
        if t == 0:
            return 0
        self.jstore(self.base + d + BLOCK_HDR, 0)
        self._bump_version(d)
        nt_all(self)                    # every key's waiters
        self.defer_release_block(t)     # the table, and through it every entry
        return 0

    # -- lists -------------------------------------------------------------------------
    #
    # LIST payload: items (ITEMS block or 0), len, version. ITEMS payload: cap, cells.

    # (the readers list_len, list_cells: heap/access.pxd)

    cdef int list_splice(self, uint64_t l, uint64_t start, uint64_t ndel,
                         const Cell *cells, uint64_t nins) except -1:
        """Replace items [start, start+ndel) by nins fresh cells. Appending into
        spare room writes past the length and publishes the new length; any
        other change builds a new items block and publishes it. The removed
        cells are released on commit. On failure nothing changed."""
        cdef char *lp = self.base + l + BLOCK_HDR
        cdef uint64_t length = ds_ld64(lp + 8), it = ds_ld64(lp), cap = 0, i
        cdef Cell *items = list_cells(self, l, length)
        cdef Cell *out
        if start > length or ndel > length - start:
            raise CorruptSegmentError("list splice out of range")
        if it:
            cap = ds_ld64(self.base + it + BLOCK_HDR)
        if ndel == 0 and start == length and length + nins <= cap and (self.lk.bdepth == 0 or nins <= 16):
            if self.lk.bdepth:
                # inside a block, the cells past the length may be live in the
                # block's before-state (an earlier delete at the end left
                # them): journaled, so a rollback gives them back
                for i in range(nins):
                    self.jstore_cell(&items[length + i], &cells[i])
            else:
                memcpy(&items[length], cells, CELL_SIZE * nins)
            crash_point()
            self.jstore(lp + 8, length + nins)
            self._bump_version(l)
            return 0
        if nins == 0 and start + ndel == length and (start == 0 or start >= cap // 4 or cap <= 16
                                                     or not self._try_new_items(l, start)):
            # deleting at the end: publish the shorter length (no allocation,
            # so it works in a full segment); the cells past it are dead. An
            # emptied list drops its items block.
            for i in range(ndel):
                self.defer_release(&items[start + i])
            if start == 0:
                self.jstore(lp, 0)
                self.defer_free(it)
            self.jstore(lp + 8, start)
            self._bump_version(l)
            return 0
        if nins == 0 and start + ndel == length:
            # shrinking below a quarter: move to a smaller block (allocated above)
            memcpy(<Cell *>(self.base + self._pending_items + BLOCK_HDR + 8), items, CELL_SIZE * start)
            for i in range(ndel):
                self.defer_release(&items[start + i])
            self._publish_items(l, start)
            return 0
        if ndel == nins and nins <= 4:
            for i in range(nins):
                self.defer_release(&items[start + i])
                self.jstore_cell(&items[start + i], &cells[i])
            self._bump_version(l)
            return 0
        out = self._new_items(l, length - ndel + nins, nins > ndel)
        memcpy(out, items, CELL_SIZE * start)
        memcpy(&out[start], cells, CELL_SIZE * nins)
        memcpy(&out[start + nins], &items[start + ndel], CELL_SIZE * (length - start - ndel))
        for i in range(ndel):
            self.defer_release(&items[start + i])
        self._publish_items(l, length - ndel + nins)
        return 0

    cdef int list_rebuild(self, uint64_t l, const Cell *cells, uint64_t n,
                          const Cell *removed, uint64_t nremoved) except -1:
        """Give list l exactly the items `cells` (moved or fresh) in a new items
        block; release `removed` on commit. On failure nothing changed."""
        cdef Cell *out = self._new_items(l, n, False)
        cdef uint64_t i
        memcpy(out, cells, CELL_SIZE * n)
        for i in range(nremoved):
            self.defer_release(&removed[i])
        self._publish_items(l, n)
        return 0

    cdef Cell *_new_items(self, uint64_t l, uint64_t n, bint grow) except NULL:
        """A fresh items block for n cells (with room to grow), not yet
        published; an empty list gets none."""
        cdef uint64_t newcap = n, nit
        cdef char *q
        if n == 0:
            self._pending_items = 0
            return <Cell *>(self.base + l + BLOCK_HDR + 24)     # nothing is written there
        if grow:
            newcap += (newcap >> 3) + (3 if newcap < 9 else 6)
        if newcap == 0:
            newcap = 1
        nit = self.alloc(8 + CELL_SIZE * newcap, K_ITEMS)
        if nit == 0:
            self.raise_alloc_error(CELL_SIZE * newcap)
        crash_point()
        q = self.base + nit + BLOCK_HDR
        ds_st64(q, newcap)
        memset(q + 8, 0, CELL_SIZE * newcap)
        (<Block *>(self.base + nit)).kind_rc = K_ITEMS | (1 << 8)
        self._pending_items = nit
        return <Cell *>(q + 8)

    cdef bint _try_new_items(self, uint64_t l, uint64_t n) noexcept:
        """Like _new_items for n cells with some room, but False instead of
        raising when there is no space."""
        cdef uint64_t newcap = n + (n >> 1) + 4
        cdef uint64_t nit = self.alloc(8 + CELL_SIZE * newcap, K_ITEMS)
        cdef char *q
        if nit == 0:
            return False
        q = self.base + nit + BLOCK_HDR
        ds_st64(q, newcap)
        memset(q + 8, 0, CELL_SIZE * newcap)
        (<Block *>(self.base + nit)).kind_rc = K_ITEMS | (1 << 8)
        self._pending_items = nit
        return True

    cdef void _publish_items(self, uint64_t l, uint64_t n) noexcept:
        cdef char *lp = self.base + l + BLOCK_HDR
        cdef uint64_t old = ds_ld64(lp)
        self.jstore(lp, self._pending_items)
        self.jstore(lp + 8, n)
        self._bump_version(l)
        if old:
            self.defer_free(old)        # its cells moved or were released

    def col(self, name=None):
        """The root SharedDict of this segment; with `name`, a top-level
        SharedDict of that name, created empty on first use."""
        from dshared._codec import root_view
        return root_view(self, name)

    def cache(self, name, *, max_entries=None, max_bytes=None, ttl=None):
        """The SharedCache `name` in this segment, created on first use (see dshared.cache)."""
        from dshared._cache import SharedCache
        return SharedCache(self, name, max_entries, max_bytes, ttl)

    # -- collection and checking ------------------------------------------------

    cdef bint _valid_ref(self, uint64_t off) noexcept nogil:
        cdef uint32_t kind
        cdef uint64_t top = self.hdr.top
        if top > self.cap:
            top = self.cap
        if top > self.hdr.reserved:
            top = self.hdr.reserved
        if (off & (ALIGN - 1)) or off < HEADER_SIZE or off >= top or top - off < BLOCK_HDR:
            return False
        kind = (<Block *>(self.base + off)).kind_rc & 0xff
        return kind != K_FREE and kind <= K_LAST

    cdef int _tiling(self, list out) except -1:
        """Every block start in [HEADER_SIZE, top), in order; raises
        CorruptSegmentError if the blocks do not tile the heap."""
        cdef uint64_t off = HEADER_SIZE, top = self.hdr.top, prev16 = 0, size
        cdef Block *b
        if top > self.cap or top > self.hdr.reserved or top < HEADER_SIZE or (top & (ALIGN - 1)):
            raise CorruptSegmentError("heap top %d is out of bounds" % top)
        while off < top:
            b = <Block *>(self.base + off)
            size = <uint64_t>b.size16 * ALIGN
            if size < MIN_BLOCK or size > top - off:
                raise CorruptSegmentError("block at %d has size %d beyond the heap top %d" % (off, size, top))
            if b.prev16 != prev16:
                raise CorruptSegmentError("block at %d: prev size %d, expected %d" % (off, b.prev16 * 16, prev16 * 16))
            out.append(off)
            prev16 = b.size16
            off += size
        if prev16 != self.hdr.tail16:
            raise CorruptSegmentError("last block size %d != tail %d" % (prev16 * 16, self.hdr.tail16 * 16))
        return 0

    cdef uint64_t _mark(self, list blocks) except? 0:
        """Recount every refcount from the roots: zero them all, then add one
        per reference met while marking. Returns the number of blocks marked."""
        cdef uint64_t *work = NULL
        cdef uint64_t *tmp = NULL
        cdef uint64_t nw = 0, capw = 0, nt = 0, capt = 0, off, c, i, marked = 0
        cdef Block *b
        for off in blocks:
            b = <Block *>(self.base + off)
            if (b.kind_rc & 0xff) != K_FREE:
                b.kind_rc &= 0xff
        try:
            for off in _root_offsets(self):
                if self._valid_ref(off):
                    b = <Block *>(self.base + off)
                    if (b.kind_rc >> 8) == 0:
                        self._push(off, &work, &nw, &capw)
                    if (b.kind_rc >> 8) < RC_MAX:
                        b.kind_rc += 0x100
            while nw:
                nw -= 1
                off = work[nw]
                marked += 1
                nt = 0
                self._push_children(off, &tmp, &nt, &capt)
                for i in range(nt):
                    c = tmp[i]
                    if not self._valid_ref(c):
                        continue
                    b = <Block *>(self.base + c)
                    if (b.kind_rc >> 8) == 0:
                        self._push(c, &work, &nw, &capw)
                    if (b.kind_rc >> 8) < RC_MAX:
                        b.kind_rc += 0x100
        finally:
            c_free(work)
            c_free(tmp)
        return marked

    cdef uint64_t _collect(self) except? 0:
        """Mark and sweep (lock held, inside a write section): frees every
        block not reachable from the roots; returns the bytes freed."""
        cdef list blocks = []
        cdef list garbage = []
        cdef uint64_t before = self.hdr.used
        cdef Block *b
        self._tiling(blocks)
        self._mark(blocks)
        for off in blocks:
            b = <Block *>(self.base + <uint64_t>off)
            if (b.kind_rc & 0xff) != K_FREE and (b.kind_rc >> 8) == 0:
                garbage.append(off)
        for off in garbage:
            self.free(<uint64_t>off)
        self.hdr.collections += 1
        return before - self.hdr.used

    def collect(self):
        """Free what is unreachable from the roots (cycles included) and
        recount every refcount; returns the number of bytes freed. Inside a
        transaction() or lock() block that has written something it raises
        RuntimeError: what the block replaced must stay until it ends."""
        if self.lk.bdepth and self.lock_held() and txn_dirty(self):
            raise RuntimeError("segment %r: collect() inside a transaction() or lock() block that has "
                               "written: call it before the block or after it" % self.name)
        return self._collect_now()

    def _collect_for_retry(self):
        """collect() before a write is retried for lack of room; 0 (nothing
        done) inside a block that has written (see collect)."""
        if self.lk.bdepth and self.lock_held() and txn_dirty(self):
            return 0
        return self._collect_now()

    def _collect_now(self):
        self.write_begin()
        try:
            freed = self._collect()
            self.commit()
            return freed
        finally:
            self.write_end()

    def check(self):
        """Verify the whole heap under the lock: header, block tiling, free
        lists, every table, every value, reachability and refcounts. Returns a
        CheckReport (.ok, .problems); never raises on bad bytes."""
        problems = []
        garbage = [0]
        probes = []                 # (table, nslots, longest probe) of every table walked
        self.lock_acquire(-1)
        was = gc_off()                  # no finalizer runs under the lock
        try:
            self._check(problems, garbage, probes)
            _nt_check(self, problems)
        except CorruptSegmentError as e:
            problems.append(str(e))
        finally:
            gc_restore(was)
            self.lock_release()
        if ds_fault_flag(&self.faulted):
            problems.insert(0, "segment %r was truncated or damaged by another process" % self.name)
        warnings = ["table at %d: a key is found after %d probes, beyond the bound of %d for %d slots "
                    "(many keys share a hash)" % (t, m, probe_bound(ns), ns)
                    for t, ns, m in probes if m > probe_bound(ns)]
        return CheckReport(problems, garbage[0], warnings, max([m for t, ns, m in probes], default=0))

    cdef _check(self, list problems, list garbage, list probes):
        cdef Header *h = self.hdr
        cdef list blocks = []
        cdef Block *b
        cdef uint64_t used = 0, nfree = 0, nlisted, off, nxt, prv, n, i
        cdef int k, kind
        cdef bint was_free = False
        if h.seq & 1:
            problems.append("write sequence %d is odd: a write did not finish" % h.seq)
        if h.flags & FLAG_POISONED:
            problems.append("the segment is marked corrupt (poisoned): every write and read refuses it")
        if not self._header_sane():
            problems.append("header fields out of range (top %d, reserved %d, tail %d, roots %d and %d, "
                            "journal %d): every write refuses it" % (h.top, h.reserved, h.tail16 * ALIGN,
                                                                     h.root, h.names, h.jcount))
        if h.top > h.reserved:
            problems.append("heap top %d is above the reserved %d bytes" % (h.top, h.reserved))
        self._tiling(blocks)
        free_set = set()
        for off in blocks:
            b = <Block *>(self.base + off)
            kind = b.kind_rc & 0xff
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
        # free lists
        listed = set()
        for k in range(NBINS):
            off = h.bins[k]
            prv = 0
            n = 0
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
                b = <Block *>(self.base + off)
                if self._bin(b.size16) != k:
                    problems.append("free block at %d of %d bytes is in bin %d" % (off, b.size16 * 16, k))
                if ds_ld64(self.base + off + 24) != prv:
                    problems.append("free block at %d has a wrong back link" % off)
                prv = off
                off = ds_ld64(self.base + off + 16)
        if listed != free_set:
            problems.append("%d free blocks are in no free list" % len(free_set - listed))
        # reachability and refcounts, without touching the heap
        counts = {}
        seen = set()
        todo = []
        for off in _root_offsets(self):
            counts[off] = counts.get(off, 0) + 1
            if off not in seen:
                seen.add(off)
                todo.append(off)
        alloc_set = set(blocks) - free_set
        for off in (h.root, h.names):
            if off in alloc_set and ((<Block *>(self.base + <uint64_t>off)).kind_rc & 0xff) != K_DICT:
                problems.append("the root at %d is a %s block, not a dict"
                                % (off, _kind_name((<Block *>(self.base + <uint64_t>off)).kind_rc & 0xff)))
        off = h.jblocks
        n = 0
        while off and n < 64:
            # an open block's journal blocks (this thread's own transaction)
            counts[off] = counts.get(off, 0) + 1
            seen.add(off)
            if off not in alloc_set or ((<Block *>(self.base + <uint64_t>off)).kind_rc & 0xff) != K_JOURNAL:
                problems.append("the journal chain reaches %d, which is not a journal block" % off)
                break
            off = ds_ld64(self.base + <uint64_t>off + BLOCK_HDR)
            n += 1
        owner = self.lk.bseg
        if self.lk.bdepth and owner is not None:
            # inside this thread's block: what it replaced waits for its end,
            # each pending free or release standing for the reference it drops
            for i in range((<Segment>owner).nfree):
                counts[(<Segment>owner).pfree[i]] = counts.get((<Segment>owner).pfree[i], 0) + 1
            for i in range((<Segment>owner).nrel):
                counts[(<Segment>owner).prel[i]] = counts.get((<Segment>owner).prel[i], 0) + 1
        children = {}
        while todo:
            off = todo.pop()
            if off not in alloc_set:
                problems.append("a reference points at %d, which is not an allocated block" % off)
                continue
            children[off] = self._children(off, problems, probes)
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
                kids = self._children(off, [])
            for c in kids:
                counts[c] = counts.get(c, 0) + 1
        for off in blocks:
            if off in free_set:
                continue
            b = <Block *>(self.base + off)
            if (b.kind_rc >> 8) != RC_MAX and (b.kind_rc >> 8) != counts.get(off, 0):
                problems.append("%s block at %d has refcount %d, %d references"
                                % (_kind_name(b.kind_rc & 0xff), off, b.kind_rc >> 8, counts.get(off, 0)))
            elif off not in seen:
                if counts.get(off, 0) == 0:
                    problems.append("leak: %s block at %d (%d bytes) is unreachable and unreferenced"
                                    % (_kind_name(b.kind_rc & 0xff), off, b.size16 * 16))
                else:
                    garbage[0] += <uint64_t>b.size16 * ALIGN     # an unreachable cycle
        # the values, read as reads read them (a clean check means a full walk raises nothing)
        containers = []
        for off in seen:
            if off in alloc_set:
                kind = (<Block *>(self.base + <uint64_t>off)).kind_rc & 0xff
                if kind == K_DICT or kind == K_LIST:
                    containers.append((off, kind))
        from dshared._codec import _check_values
        _check_values(self, sorted(containers), problems)

    cdef list _children(self, uint64_t off, list problems, list probes=None):
        """The blocks that block `off` references, each value checked; a
        table's longest probe goes to `probes` when given."""
        cdef Block *b = <Block *>(self.base + off)
        cdef int kind = b.kind_rc & 0xff
        cdef uint64_t size = <uint64_t>b.size16 * ALIGN - BLOCK_HDR
        cdef char *p = self.base + off + BLOCK_HDR
        cdef uint64_t n, i, nslots, cap, nent, count, sub, ln
        cdef Cell *cells
        cdef Entry *ents
        cdef int32_t *index
        cdef int32_t ix
        cdef int64_t plen, longest = 0
        out = []
        if kind == K_STR or kind == K_BYTES or kind == K_BIGINT or kind == K_KTUPLE:
            ln = ds_ld64(p)
            if ln > size - (16 if kind == K_STR else 8):
                problems.append("%s block at %d claims %d bytes" % (_kind_name(kind), off, ln))
            elif kind == K_STR:
                try:
                    (p + 16)[:ln].decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    problems.append("str block at %d is not UTF-8" % off)
        elif kind == K_TUPLE:
            n = ds_ld64(p)
            if n > (size - 8) // CELL_SIZE:
                problems.append("tuple at %d claims %d items" % (off, n))
            else:
                self._cells(<Cell *>(p + 8), n, off, problems, out)
        elif kind == K_LIST and size < 24:
            problems.append("list at %d: its block is too small" % off)
        elif kind == K_DICT or kind == K_LIST:
            sub = ds_ld64(p)
            if sub:
                out.append(sub)
            if kind == K_LIST and sub:
                ln = ds_ld64(p + 8)
                if not self._valid_ref(sub) or ((<Block *>(self.base + sub)).kind_rc & 0xff) != K_ITEMS:
                    problems.append("list at %d points at %d, not an items block" % (off, sub))
                elif ln > ds_ld64(self.base + sub + BLOCK_HDR) or ds_ld64(self.base + sub + BLOCK_HDR) > (
                        (<uint64_t>(<Block *>(self.base + sub)).size16 * ALIGN - BLOCK_HDR - 8) // CELL_SIZE):
                    problems.append("list at %d is longer than its items block" % off)
                else:
                    self._cells(<Cell *>(self.base + sub + BLOCK_HDR + 8), ln, off, problems, out)
            elif kind == K_LIST and ds_ld64(p + 8):
                problems.append("list at %d has items but no items block" % off)
            elif kind == K_DICT and sub and (not self._valid_ref(sub) or
                                             ((<Block *>(self.base + sub)).kind_rc & 0xff) != K_TABLE):
                problems.append("dict at %d points at %d, not a table" % (off, sub))
        elif kind == K_TABLE:
            nslots = ds_ld64(p)
            cap = ds_ld64(p + 8)
            nent = ds_ld64(p + 16)
            count = ds_ld64(p + 24)
            if (nslots < 2 or (nslots & (nslots - 1)) or nslots > size // 4 or cap > size // ENTRY_SIZE
                    or 32 + 4 * nslots + ENTRY_SIZE * cap > size or nent > cap or count > nent):
                problems.append("table at %d has inconsistent sizes" % off)
                return out
            index = <int32_t *>(p + 32)
            ents = <Entry *>(p + 32 + 4 * nslots)
            live = 0
            slots = {}
            empty = 0
            for i in range(nslots):
                if index[i] == IX_EMPTY:
                    empty += 1
                ix = index[i]
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
                    plen = self._probe_length(index, nslots, ents[i].hash, slots[i])
                    if plen < 0:
                        problems.append("table at %d: entry %d is not found by its own probe" % (off, i))
                    elif plen > longest:
                        longest = plen
                if ents[i].key.b[0] != T_PACKED:
                    self._cells(&ents[i].key, 1, off, problems, out)
                    self._cells(&ents[i].value, 1, off, problems, out)
            if live != count:
                problems.append("table at %d counts %d entries, holds %d" % (off, count, live))
            if empty == 0 or nslots - empty > cap:
                problems.append("table at %d has %d empty slots for %d entries of capacity %d: "
                                "probes may not end" % (off, empty, nent, cap))
            if probes is not None:
                probes.append((off, nslots, longest))
        return out

    cdef int64_t _probe_length(self, int32_t *index, uint64_t nslots, uint64_t hash, uint64_t slot) noexcept:
        """How many probes past the first slot a lookup of `hash` takes to
        reach `slot`; -1 if it never does."""
        cdef Probe pr
        probe_start(&pr, hash, nslots)
        while True:
            if pr.i == slot:
                return <int64_t>pr.n
            if index[pr.i] == IX_EMPTY:
                return -1
            if not probe_next(&pr):
                return -1

    cdef _probe_stats(self):
        """Probe lengths over every dict table of the heap (the lock held):
        how many probes past the first slot each key takes to be found."""
        cdef list blocks = []
        cdef Block *b
        cdef char *p
        cdef uint64_t off, size, nslots, cap, nent, i, tables = 0, keys = 0, total = 0, longest = 0
        cdef uint64_t tmax, over = 0
        cdef int64_t plen
        cdef int32_t *index
        cdef Entry *ents
        cdef int32_t ix
        hist = {}
        self._tiling(blocks)
        for off in blocks:
            b = <Block *>(self.base + off)
            if (b.kind_rc & 0xff) != K_TABLE:
                continue
            size = <uint64_t>b.size16 * ALIGN - BLOCK_HDR
            p = self.base + off + BLOCK_HDR
            nslots = ds_ld64(p)
            cap = ds_ld64(p + 8)
            nent = ds_ld64(p + 16)
            if (nslots < 2 or (nslots & (nslots - 1)) or nslots > size // 4 or cap > size // ENTRY_SIZE
                    or 32 + 4 * nslots + ENTRY_SIZE * cap > size or nent > cap):
                continue                # check() reports it
            index = <int32_t *>(p + 32)
            ents = <Entry *>(p + 32 + 4 * nslots)
            tables += 1
            tmax = 0
            for i in range(nslots):
                ix = index[i]
                if ix < 0 or <uint64_t>ix >= nent:
                    continue
                plen = self._probe_length(index, nslots, ents[ix].hash, i)
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

    cdef _cells(self, Cell *cells, uint64_t n, uint64_t owner, list problems, list out):
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
                if self._valid_ref(off) and ((<Block *>(self.base + off)).kind_rc & 0xff) != <uint32_t>tag_kind(tag):
                    problems.append("block at %d holds a cell of tag %d that points at a %s block"
                                    % (owner, tag, _kind_name((<Block *>(self.base + off)).kind_rc & 0xff)))
                elif (tag == T_DICT or tag == T_LIST) and self._valid_ref(off) and (
                        ds_ld32(&cells[i].b[4]) != (<Block *>(self.base + off)).gen):
                    problems.append("block at %d refers to the container at %d with a stale generation"
                                    % (owner, off))

    # -- statistics -----------------------------------------------------------------

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
        self.check_open()
        cdef Header *h = self.hdr
        cdef uint64_t off, n, nbytes, largest = self.cap - h.top, steps
        cdef int k
        self.read_limit()               # the free lists reach up to today's top
        free_lists = {}
        for k in range(NBINS):
            off = h.bins[k]
            n = nbytes = steps = 0
            while off and steps < (self.cap >> 5) and self.inb(off, MIN_BLOCK):
                size = <uint64_t>(<Block *>(self.base + off)).size16 * ALIGN
                n += 1
                nbytes += size
                if size > largest:
                    largest = size
                off = ds_ld64(self.base + off + 16)
                steps += 1
            if n:
                # keyed by the largest block size the class holds
                free_lists[(k + 1) * ALIGN - ALIGN if k < SMALL_BINS else (ALIGN << (k - 58)) - ALIGN] = (n, nbytes)
        if ds_fault_flag(&self.faulted):
            self.raise_faulted()
        out = {
            "capacity": self.cap,
            "used": h.used,
            "free": self.cap - HEADER_SIZE - h.used,
            "largest_free": largest,
            "top": h.top,
            "reserved": h.reserved,
            "backed": self._backed(),
            "blocks": h.nblocks,
            "repairs": h.repairs,
            "rollbacks": h.rollbacks,
            "collections": h.collections,
            "seq": h.seq,
            "free_lists": free_lists,
        }
        if probes:
            self.lock_acquire(-1)
            try:
                out.update(self._probe_stats())
            finally:
                self.lock_release()
        if ds_fault_flag(&self.faulted):
            self.raise_faulted()
        return out


cdef tuple _root_offsets(Segment seg):
    """The blocks the header holds a reference to: the root, the named
    collections and, once created, the wait area."""
    if seg.hdr.waits:
        return (seg.hdr.root, seg.hdr.names, seg.hdr.waits)
    return (seg.hdr.root, seg.hdr.names)


cdef void _nt_keys(Segment seg, uint64_t d, const Key *keys, uint64_t n) noexcept nogil:
    cdef uint64_t i
    if seg.nt_area == NULL and not nt_attach(seg):
        return
    if n > DS_NT_PEND:
        nt_all(seg)
        return
    for i in range(n):
        nt_key(seg, d, keys[i].hash)


include "_notify.pxi"
include "heap/txn.pxi"


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


def _timeout(timeout):
    if timeout is None:
        return -1.0
    t = float(timeout)
    if not t >= 0:
        raise ValueError("timeout must be None or a non-negative number of seconds, not %r" % (timeout,))
    return t


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


def _kind_name(int kind):
    return {K_FREE: "free", K_STR: "str", K_BYTES: "bytes", K_BIGINT: "int", K_TUPLE: "tuple",
            K_DICT: "dict", K_LIST: "list", K_TABLE: "table", K_ITEMS: "items",
            K_KTUPLE: "key", K_JOURNAL: "journal"}.get(kind, "?")
