# Segment names, temporary files of a creation, unlink (included by _heap.pyx
# at module level).


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
