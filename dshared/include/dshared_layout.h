/* The on-segment layout of a block: its header, and the payload of each
 * kind, as C structs. dshared/heap/layout.pxd declares them to Cython (same
 * names without the ds_ prefix) with the accessors the code uses; no code
 * addresses a payload by byte offset.
 *
 * Every block is a ds_block header, then its payload at the block's address
 * + DS_BLOCK_HDR. All fields are little-endian machine words at the offsets
 * asserted below: these are the segment format (FORMAT_VERSION in
 * _heap.pxd), so a change here that moves a field fails the build. */
#ifndef DSHARED_LAYOUT_H
#define DSHARED_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define DS_BLOCK_HDR 16
#define DS_CELL_SIZE 16
#define DS_ENTRY_SIZE 32

/* A value cell: b[0] is its tag (T_* in _heap.pxd). */
typedef struct { uint8_t b[DS_CELL_SIZE]; } ds_cell;

/* Every block's header. */
typedef struct {
    uint32_t size16;            /* whole block, header included, in 16-byte units */
    uint32_t prev16;            /* the block just below, for coalescing; 0 at the bottom */
    uint32_t gen;               /* changes on every allocation: views detect reuse */
    uint32_t kind_rc;           /* kind in the low byte, shared refcount above */
} ds_block;

/* A dict table's dense entry: no stored hash. A key held inline (or packed
 * with its value) is hashed again from its bytes when a table is rebuilt; a
 * key in a block (T_STR, T_BYTES, T_BIGINT, T_KTUPLE) carries its 32-bit
 * hash in key.b[4:8]. */
typedef struct {
    ds_cell key;
    ds_cell value;
} ds_entry;

/* K_FREE: the links of its bin's list; a PUNCHED one also [hole_from,
 * hole_end), where its pages may be holes (heap/punch.pxi). */
typedef struct { uint64_t next, prev, hole_from, hole_end; } ds_free_body;

/* K_STR: length in bytes, flags (bit 0: ASCII), then the UTF-8 data. */
typedef struct { uint64_t length, flags; } ds_str_hdr;

/* K_BYTES, K_BIGINT, K_KTUPLE: length in bytes, then the data. */
typedef struct { uint64_t length; } ds_bytes_hdr;

/* K_TUPLE: number of items, then ds_cell cells[n]. */
typedef struct { uint64_t n; } ds_tuple_hdr;

/* K_DICT: its TABLE block (0: none yet), its version. */
typedef struct { uint64_t table, version; } ds_dict_body;

/* K_LIST: its ITEMS block (0: none), its length, its version. */
typedef struct { uint64_t items, length, version; } ds_list_body;

/* K_TABLE: this header, then the index: nslots slots of 3 bytes (4 bytes past
 * 2**23 slots), signed entry numbers, padded to 8 bytes; then ds_entry
 * entries[capacity] (heap/layout.pxd: index_width, ix_get). */
typedef struct {
    uint64_t nslots;
    uint64_t capacity;
    uint64_t nentries;          /* dense entries used, deleted ones included */
    uint64_t count;             /* live entries */
} ds_table_hdr;

/* K_ITEMS: its capacity in cells, then ds_cell cells[capacity]. */
typedef struct { uint64_t capacity; } ds_items_hdr;

/* K_JOURNAL: the next (older) journal block, the index of its first record,
 * its capacity, then ds_jrec records[capacity]. */
typedef struct { uint64_t next, first, capacity; } ds_journal_hdr;

/* An undo record: the offset of 8 bytes and what they held (offset | 1:
 * the index of the table there is rebuilt). */
typedef struct { uint64_t off, old; } ds_jrec;

/* The version word of a DICT (is_list 0) or LIST block's payload: the
 * offset chosen without a branch. */
static inline uint64_t *ds_container_version(char *payload, int is_list)
{
    return (uint64_t *)(payload + (is_list ? offsetof(ds_list_body, version) : offsetof(ds_dict_body, version)));
}

#define DS_LAYOUT_AT(type, field, at) \
    _Static_assert(offsetof(type, field) == (at), #type "." #field " is at " #at " in the segment format")
#define DS_LAYOUT_SIZE(type, size) \
    _Static_assert(sizeof(type) == (size), "sizeof(" #type ") is " #size " in the segment format")

DS_LAYOUT_SIZE(ds_cell, DS_CELL_SIZE);
DS_LAYOUT_SIZE(ds_block, DS_BLOCK_HDR);
DS_LAYOUT_AT(ds_block, size16, 0);
DS_LAYOUT_AT(ds_block, prev16, 4);
DS_LAYOUT_AT(ds_block, gen, 8);
DS_LAYOUT_AT(ds_block, kind_rc, 12);
DS_LAYOUT_SIZE(ds_entry, DS_ENTRY_SIZE);
DS_LAYOUT_AT(ds_entry, key, 0);
DS_LAYOUT_AT(ds_entry, value, 16);
DS_LAYOUT_SIZE(ds_free_body, 32);
DS_LAYOUT_AT(ds_free_body, next, 0);
DS_LAYOUT_AT(ds_free_body, prev, 8);
DS_LAYOUT_AT(ds_free_body, hole_from, 16);
DS_LAYOUT_AT(ds_free_body, hole_end, 24);
DS_LAYOUT_SIZE(ds_str_hdr, 16);
DS_LAYOUT_AT(ds_str_hdr, length, 0);
DS_LAYOUT_AT(ds_str_hdr, flags, 8);
DS_LAYOUT_SIZE(ds_bytes_hdr, 8);
DS_LAYOUT_SIZE(ds_tuple_hdr, 8);
DS_LAYOUT_SIZE(ds_dict_body, 16);
DS_LAYOUT_AT(ds_dict_body, table, 0);
DS_LAYOUT_AT(ds_dict_body, version, 8);
DS_LAYOUT_SIZE(ds_list_body, 24);
DS_LAYOUT_AT(ds_list_body, items, 0);
DS_LAYOUT_AT(ds_list_body, length, 8);
DS_LAYOUT_AT(ds_list_body, version, 16);
DS_LAYOUT_SIZE(ds_table_hdr, 32);
DS_LAYOUT_AT(ds_table_hdr, nslots, 0);
DS_LAYOUT_AT(ds_table_hdr, capacity, 8);
DS_LAYOUT_AT(ds_table_hdr, nentries, 16);
DS_LAYOUT_AT(ds_table_hdr, count, 24);
DS_LAYOUT_SIZE(ds_items_hdr, 8);
DS_LAYOUT_SIZE(ds_journal_hdr, 24);
DS_LAYOUT_AT(ds_journal_hdr, next, 0);
DS_LAYOUT_AT(ds_journal_hdr, first, 8);
DS_LAYOUT_AT(ds_journal_hdr, capacity, 16);
DS_LAYOUT_SIZE(ds_jrec, 16);
DS_LAYOUT_AT(ds_jrec, off, 0);
DS_LAYOUT_AT(ds_jrec, old, 8);

#endif
