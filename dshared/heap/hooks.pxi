# Process-wide state, the log queue and the test hooks (included by _heap.pyx
# at module level).


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
        seg_own_file_description((<Segment>seg))


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
#   DSHARED_TEST_FAIL_REALLOC=n the n-th growth of a write's process-memory records
#                              (deferred frees and releases, a block's allocation and
#                              incref records) fails as if realloc returned NULL
#   DSHARED_TEST_NO_LOCK=1     writers and lock() take no mutex
#   DSHARED_TEST_NO_REPAIR=1   a dead holder's lock is made usable without repair
#   DSHARED_TEST_NO_BOUNDS=1   a checked accessor whose check fails goes on with the
#                              unchecked pointer (seg_bad_block / seg_bad_view return it)
#   DSHARED_TEST_NO_ROLLBACK=1 transaction() and lock() blocks behave as before they
#                              were atomic: each operation commits on its own, an
#                              exception keeps what was written

cdef long _hook_crash_at = 0
cdef long _hook_fail_alloc = 0
cdef long _hook_fail_realloc = 0
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


cdef bint fail_realloc_now() noexcept nogil:
    global _hook_fail_realloc
    if _hook_fail_realloc > 0:
        _hook_fail_realloc -= 1
        return _hook_fail_realloc == 0
    return False


def test_hooks(crash_at=None, fail_alloc=None, no_lock=None, no_repair=None, no_bounds=None,
               no_rollback=None, fail_realloc=None):
    """Switch the test hooks in this process (None leaves one as it is).
    Returns the number of crash points passed since the last call."""
    global _hook_crash_at, _hook_fail_alloc, _hook_no_lock, _hook_no_repair, _hook_no_bounds
    global _hook_no_rollback, _hook_fail_realloc
    global _crash_points_passed
    if crash_at is not None:
        _hook_crash_at = crash_at
    if fail_alloc is not None:
        _hook_fail_alloc = fail_alloc
    if fail_realloc is not None:
        _hook_fail_realloc = fail_realloc
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
               fail_realloc=int(env.get("DSHARED_TEST_FAIL_REALLOC", 0) or 0),
               no_lock=env.get("DSHARED_TEST_NO_LOCK", "") not in ("", "0"),
               no_repair=env.get("DSHARED_TEST_NO_REPAIR", "") not in ("", "0"),
               no_bounds=env.get("DSHARED_TEST_NO_BOUNDS", "") not in ("", "0"),
               no_rollback=env.get("DSHARED_TEST_NO_ROLLBACK", "") not in ("", "0"))


_hooks_from_env()


# ---------------------------------------------------------------------------
# The block layout as compiled (tests/test_layout.py compares it with the
# segment format): {struct: (sizeof, {field: offset})}, and the constants.

cdef inline size_t _at(const void *field, const void *start) noexcept nogil:
    return <size_t>(<const char *>field - <const char *>start)


def _layout():
    cdef Block b
    cdef Cell c
    cdef Entry e
    cdef FreeBody fb
    cdef StrHdr sh
    cdef BytesHdr bh
    cdef TupleHdr th
    cdef DictBody db
    cdef ListBody lb
    cdef TableHdr tb
    cdef ItemsHdr ih
    cdef JournalHdr jh
    cdef JRec jr
    cdef Header h
    return {
        "Block": (sizeof(Block), {"size16": _at(&b.size16, &b), "prev16": _at(&b.prev16, &b),
                                  "gen": _at(&b.gen, &b), "kind_rc": _at(&b.kind_rc, &b)}),
        "Cell": (sizeof(Cell), {"b": _at(&c.b, &c)}),
        "Entry": (sizeof(Entry), {"key": _at(&e.key, &e), "value": _at(&e.value, &e)}),
        "FreeBody": (sizeof(FreeBody), {"next": _at(&fb.next, &fb), "prev": _at(&fb.prev, &fb),
                                        "hole_from": _at(&fb.hole_from, &fb), "hole_end": _at(&fb.hole_end, &fb)}),
        "StrHdr": (sizeof(StrHdr), {"length": _at(&sh.length, &sh), "flags": _at(&sh.flags, &sh)}),
        "BytesHdr": (sizeof(BytesHdr), {"length": _at(&bh.length, &bh)}),
        "TupleHdr": (sizeof(TupleHdr), {"n": _at(&th.n, &th)}),
        "DictBody": (sizeof(DictBody), {"table": _at(&db.table, &db), "version": _at(&db.version, &db)}),
        "ListBody": (sizeof(ListBody), {"items": _at(&lb.items, &lb), "length": _at(&lb.length, &lb),
                                        "version": _at(&lb.version, &lb)}),
        "TableHdr": (sizeof(TableHdr), {"nslots": _at(&tb.nslots, &tb), "capacity": _at(&tb.capacity, &tb),
                                        "nentries": _at(&tb.nentries, &tb), "count": _at(&tb.count, &tb)}),
        "ItemsHdr": (sizeof(ItemsHdr), {"capacity": _at(&ih.capacity, &ih)}),
        "JournalHdr": (sizeof(JournalHdr), {"next": _at(&jh.next, &jh), "first": _at(&jh.first, &jh),
                                            "capacity": _at(&jh.capacity, &jh)}),
        "JRec": (sizeof(JRec), {"off": _at(&jr.off, &jr), "old": _at(&jr.old, &jr)}),
        # the journal's fields of the segment header
        "Header.journal": (sizeof(h.jlog), {"jcount": _at(&h.jcount, &h), "jlog": _at(&h.jlog, &h),
                                            "waits": _at(&h.waits, &h)}),
        "constants": (0, {"BLOCK_HDR": BLOCK_HDR, "CELL_SIZE": CELL_SIZE, "ENTRY_SIZE": ENTRY_SIZE,
                          "JOURNAL_MAX": JOURNAL_MAX, "MIN_BLOCK": MIN_BLOCK,
                          "FREE_KEEP": FREE_KEEP, "table_bytes(5)": table_bytes(5)}),
    }
