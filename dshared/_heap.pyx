# cython: language_level=3, cdivision=True
"""The shared heap: segment, header, lock, allocator, dict tables and lists.

Layout of a segment (every reference inside it is an offset from its base,
since each process maps it at another address)::

    0            4096                                        top       capacity
    | Header     | block | block | free | block | ...        | untouched ... |
                 ^ every block: Block header (16 B) + payload, 16-aligned;
                   each kind's payload is a struct (heap/layout.pxd)

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
  Backing pages are reserved with fallocate (the file keeps its size) as top
  grows, so a full /dev/shm is a clean SegmentFullError, never a SIGBUS.
* Dicts follow CPython's compact dict: a DICT block points at a TABLE block
  holding a sparse index of 3-byte slots and a dense, insertion-ordered array
  of 32-byte entries (key cell, value cell); growing extends the table in place
  or builds a new one, published with one 8-byte store. Lists: a LIST block
  points at an ITEMS block of cells.
* Cells (16 B): a tag and either an inline scalar / short string or the
  offset of a block; a cell that holds an offset owns one shared reference.

Concurrency: writers serialise on the mutex and bump `seq` before their first
change to reachable memory and after the write (seqlock). Readers take no lock: they read, then check that `seq`
was even and unchanged, and retry otherwise (falling back to the lock after
MAX_RETRIES). Freed memory stays mapped and every offset or length read from
the segment passes a checked accessor (checked_block, view_block,
table_view_at, seg_inb(): _heap.pxd and heap/*.pxd) before use, so a reader
racing a writer sees stale bytes at worst, never a fault. No Python code runs while the lock
is held: keys and values are converted to C buffers first, and the cyclic GC
(which could run finalizers) is switched off for the duration of a write.

Where things are. Segment (_heap.pxd) is a final object that holds state;
every operation on a segment is a function that takes it first, prefixed by
its topic and defined in the file of that topic, which this module includes
in order (docs/design.md has one section per file):

    heap/hooks.pxi     process-wide state, the log queue, the test hooks
    heap/names.pxi     segment names, temporary files of a creation, unlink
    heap/segment.pxi   Segment's Python methods: thin calls of the functions
    heap/mapping.pxi   seg_*   map, header, reserve, shrink, fork, close, raisers
    heap/lock.pxi      lock_*  acquire (repair after a death), release
    heap/repair.pxi    rep_*   undo a dead writer's journal, rebuild the bins
    heap/journal.pxi   jr_*    undo records, journal blocks, the undo
    heap/write.pxi     wr_*    write_begin, publish, commit, deferred frees, write_end
    heap/punch.pxi     punch_* pages of free runs handed back to the system
    heap/alloc.pxi     blk_*   bins, alloc, free
    heap/refs.pxi      blk_*   reference counts, release of what a block owns
    heap/table.pxi     tbl_*   dict tables
    heap/items.pxi     lst_*   list items
    heap/collect.pxi   gc_*    collect()
    heap/check.pxi     chk_*   check()
    heap/stats.pxi     st_*    stats()
    heap/notify.pxi    nt_*    change notifications
    heap/txn.pxi       txn_*   transaction(), lock() and snapshot() blocks

The layout (heap/layout.pxd: the structs of include/dshared_layout.h, whose
offsets it asserts, and their accessors; no byte offsets elsewhere), the
inline readers (heap/access.pxd, heap/keys.pxd) and the declarations _codec
calls (heap/api.pxd) are in _heap.pxd and what it includes.
"""

from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport uintptr_t
from libc.errno cimport EBUSY, EEXIST, EINTR, ENOENT, ETIMEDOUT, errno
from libc.math cimport floor, isfinite
from libc.stdlib cimport free as c_free, malloc, realloc
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


DEFAULT_SIZE = DEFAULT_CAPACITY
MIN_SIZE = MIN_CAPACITY
MAX_SIZE = MAX_CAPACITY

include "heap/hooks.pxi"
include "heap/names.pxi"
include "heap/segment.pxi"
include "heap/mapping.pxi"
include "heap/lock.pxi"
include "heap/repair.pxi"
include "heap/journal.pxi"
include "heap/write.pxi"
include "heap/punch.pxi"
include "heap/alloc.pxi"
include "heap/refs.pxi"
include "heap/table.pxi"
include "heap/items.pxi"
include "heap/collect.pxi"
include "heap/check.pxi"
include "heap/stats.pxi"
include "heap/notify.pxi"
include "heap/txn.pxi"
