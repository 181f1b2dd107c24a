# cython: language_level=3, cdivision=True
"""Python objects <-> shared values, and the node types behind SharedDict and
SharedList.

Writing is two phases. Outside the lock, a Plan walks the Python object
(iteratively: nesting may be 100,000 deep), checks every type, converts keys
to hashed canonical form and lays out every block it will need, with a memo
so that cycles and objects reached twice keep their shape. Under the lock,
the plan allocates all its blocks (rolling back if one fails, so a full
segment changes nothing), fills them, and the operation publishes the root
cell. No Python code runs under the lock. A write that finds the segment
full runs collect() and tries once more (write_or_collect).

Reading goes through one helper, `read_section`: run a read function
optimistically, validate the segment's write sequence, retry on overlap, and
after MAX_RETRIES take the lock. Read functions only copy out of the segment
and build builtin objects, and call nothing in _heap but its inline readers
(tests/test_structure.py holds that on the generated C).

Keys are compared in canonical form: bool and integral floats are ints
(1 == 1.0 == True), -0.0 is 0, str is UTF-8, a tuple is its canonical
encoding. The hash is `seg_hash` (heap/keys.pxd): SipHash-1-3 of that form
followed by the canonical tag byte, keyed by the segment's 128-bit secret seed,
cut to 32 bits.

This file is the module's root: the imports and the shared constants, then
one `include` per topic, in this order:

    codec/keys.pxi      hashing, canonical keys, make_key, parse_canon
    codec/cells.pxi     cells: scalars and short strings inline, packed pairs
    codec/args.pxi      a write's arguments read as list.extend and dict.update read them
    codec/plan.pxi      the Plan: layout outside the lock, fill under it
    codec/write.pxi     what every write shares: the retry after collect()
    codec/decode.pxi    cells to Python values, views, deep copies
    codec/read.pxi      the read section: read_section, read_retry, damage
    codec/node.pxi      Node (the base view type) and the functions that make views
    codec/dictnode.pxi  DictNode, its readers, DictIter
    codec/dictwrite.pxi the dict writes that plan: d[k] = v, setdefault, update
    codec/listnode.pxi  ListNode, its readers, ListIter
    codec/listedit.pxi  the list writes (splice, slices), the identities sort() matches
    codec/check.pxi     check(): every value read as a walk reads it
    codec/cache.pxi     cache mode: its layout, hooks, sketch, footprints
    codec/cachecore.pxi cache mode: CacheCore (state, thin methods) and the hit path
    codec/cachestate.pxi cache mode: the state block, counters, clear, time to live
    codec/cacheset.pxi  cache mode: set in steps, eviction and admission, pop, claims
    codec/memo.pxi      cache mode: MemoCore, the C part of a memoized function
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from cpython.number cimport PyNumber_Add
from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_ITEM
from cpython.object cimport Py_TYPE
from cpython.ref cimport Py_INCREF, Py_REFCNT, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.math cimport floor, isfinite
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcmp, memcpy, memset

# _heap's C-level interface, by name (one way: _heap never cimports this module)
from dshared._heap cimport (
    # layout: block kinds, cell tags, sizes, structs
    ALIGN, BLOCK_HDR, CELL_SIZE, FLAG_POISONED, INLINE_MAX, MANY_OVERWRITES, MAX_RETRIES, PACKED_MAX,
    K_BIGINT, K_BYTES, K_DICT, K_ITEMS, K_KTUPLE, K_LIST, K_STR, K_TABLE, K_TUPLE,
    T_BIGINT, T_BYTES, T_DICT, T_EMPTY, T_FALSE, T_FIRST_REF, T_FLOAT, T_INT, T_KTUPLE, T_LAST, T_LIST,
    T_NONE, T_PACKED, T_SBYTES, T_SSTR, T_STR, T_TRUE, T_TUPLE,
    Block, Cell, Entry, Key, Segment, TableView, RC_ONE,
    # the payload structs and their accessors (heap/layout.pxd)
    BytesHdr, DictBody, ItemsHdr, ListBody, StrHdr, TupleHdr,
    blk_kind, blk_payload, bytes_data, bytes_hdr, bytes_hdr_size, cells_fit, items_cells_of, items_hdr, kind_rc_of, list_body,
    str_data, str_hdr, tuple_cells, tuple_hdr,
    # include/dshared.h, include/dshared_notify.h
    DS_WHOLE_DOUBLE_MAX, ds_double_int64, ds_ld32, ds_ld64, ds_prefetch, ds_st64,
    ds_whole_double_bytes, ds_nt_bucket_c, ds_nt_bucket_k,
    # the inline checked accessors and readers (heap/keys.pxd, heap/access.pxd)
    block_bytes, checked_block, entry_hash, entry_matches, ix_get, seg_hash, seg_hash_u64, view_block, tag_kind, table_bytes, table_slots, table_view,
    table_lookup, dict_entry, dict_find, dict_len, dict_next, dict_prev, dict_version,
    list_cells, list_len, nt_key,
    # the read section's sequence checks
    seq_begin, seq_ok, view_gen_ok,
    # the segment's functions (heap/api.pxd): checks, lock, write phases, journal, blocks, tables, lists
    seg_bad_view, seg_check_open, seg_inb, seg_ptr, seg_raise_faulted,
    lock_acquire, lock_release,
    wr_begin, wr_commit, wr_end, wr_reserve, wr_settle, jr_store,
    blk_alloc, blk_decref_cell, blk_free, blk_incref, blk_push, blk_push_children, blk_raise_full,
    gc_valid_ref,
    table_init, tbl_clear, tbl_entry_set, tbl_fill, tbl_insert, tbl_insert_many, tbl_of, tbl_remove, tbl_reserve,
    tbl_set_pair, tbl_update_fresh,
    lst_rebuild, lst_splice,
)

from operator import length_hint
import sys

from dshared._errors import (CorruptSegmentError, DsharedError, SegmentFullError, StaleReferenceError,
                             UnsupportedTypeError)


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_New(Py_ssize_t size, unsigned int maxchar)
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size)
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    bint PyLong_Check(object o)
    bint PyBool_Check(object o)
    bint PyFloat_Check(object o)
    bint PyUnicode_Check(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyBytes_Check(object o)
    bint PyTuple_Check(object o)
    bint PyList_Check(object o)
    bint PyDict_Check(object o)
    void PyErr_Clear()


# limits and markers the topic files share
cdef enum:
    VIEW_CACHE = 64
    LONG_READ_TRIES = 4
    REF_NONE = -1
    REF_EXISTING = -2
    MAX_KEY_DEPTH = 100
    MAX_TUPLE_DEPTH = 1000


include "codec/keys.pxi"
include "codec/cells.pxi"
include "codec/args.pxi"
include "codec/plan.pxi"
include "codec/write.pxi"
include "codec/decode.pxi"
include "codec/read.pxi"
include "codec/node.pxi"
include "codec/dictnode.pxi"
include "codec/dictwrite.pxi"
include "codec/listnode.pxi"
include "codec/listedit.pxi"
include "codec/check.pxi"
include "codec/cache.pxi"
include "codec/cachecore.pxi"
include "codec/cachestate.pxi"
include "codec/cacheset.pxi"
include "codec/memo.pxi"
