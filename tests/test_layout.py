"""The block layout lives in types (issue 13): include/dshared_layout.h
declares the header, cell, entry and each kind's payload as structs (and
asserts their offsets at compile time), heap/layout.pxd declares them to
Cython with their accessors, and no other source addresses a payload by byte
offset.

test_structs_sit_at_the_segment_format_offsets compares the compiled structs
(_heap._layout(), a test hook) with the segment format written out here and
in tests/_corrupt.py (which parses images on its own); the source guard reads
the sources as text (no build needed)."""
import os
import re

from _helpers import ROOT
import _corrupt

# The segment format (FORMAT_VERSION 5): {struct: (sizeof, {field: offset})}.
FORMAT = {
    "Block": (16, {"size16": 0, "prev16": 4, "gen": 8, "kind_rc": 12}),
    "Cell": (16, {"b": 0}),
    "Entry": (32, {"key": 0, "value": 16}),
    "FreeBody": (32, {"next": 0, "prev": 8, "hole_from": 16, "hole_end": 24}),
    "StrHdr": (16, {"length": 0, "flags": 8}),
    "BytesHdr": (8, {"length": 0}),
    "TupleHdr": (8, {"n": 0}),
    "DictBody": (16, {"table": 0, "version": 8}),
    "ListBody": (24, {"items": 0, "length": 8, "version": 16}),
    "TableHdr": (32, {"nslots": 0, "capacity": 8, "nentries": 16, "count": 24}),
    "ItemsHdr": (8, {"capacity": 0}),
    "JournalHdr": (24, {"next": 0, "first": 8, "capacity": 16}),
    "JRec": (16, {"off": 0, "old": 8}),
    "Header.journal": (_corrupt.H_WAITS - _corrupt.H_JLOG,
                       {"jcount": _corrupt.H_JCOUNT, "jlog": _corrupt.H_JLOG, "waits": _corrupt.H_WAITS}),
    "constants": (0, {"BLOCK_HDR": 16, "CELL_SIZE": 16, "ENTRY_SIZE": 32, "JOURNAL_MAX": 64, "MIN_BLOCK": 32,
                      "FREE_KEEP": 64,
                      # a table for 5 entries: TableHdr, 8 index slots of 3 bytes, 5 entries
                      "table_bytes(5)": 32 + 3 * 8 + 32 * 5}),
}

# Where raw offsets must not appear: every source of the two modules except
# heap/layout.pxd (which defines the accessors).
EXEMPT = {"heap/layout.pxd"}

# What hand-written layout arithmetic looks like.
RAW = [
    (re.compile(r"BLOCK_HDR\s*\+\s*\d"), "a payload field at a byte offset"),
    (re.compile(r"\bbase\s*\+\s*[\w.]+\s*\+\s*BLOCK_HDR\b"), "a payload address by hand (blk_payload)"),
    (re.compile(r"ds_(?:ld|st)64\(\s*\w+\s*\+\s*\d+\s*[,)]"), "a word at a byte offset"),
    # (+ 1 is a typed pointer past its header: <Cell *>(lb + 1))
    (re.compile(r"<\s*\w+\s*\*\s*>\s*\(\s*\w+\s*\+\s*(?:[02-9]|\d\d+)\b"), "a pointer at a byte offset"),
    (re.compile(r"kind_rc\s*[&|+-]=?\s*0x"), "kind_rc by hand (KIND_MASK, RC_ONE)"),
    (re.compile(r"<<\s*8\s*\)"), "a refcount shifted by hand (RC_ONE, kind_rc_of)"),
    (re.compile(r"\b(?:16|8)\s+if\s+kind\s*==\s*K_STR"), "a byte block's header size by hand (bytes_hdr_size)"),
    (re.compile(r"\b32\s*\+\s*4\s*\*"), "a table's size by hand (table_payload)"),
    (re.compile(r"jlog\[\s*2\s*\*"), "journal records as word pairs (JRec)"),
]


def sources():
    """{path relative to dshared/: text} of the sources the guard reads."""
    out = {}
    base = os.path.join(ROOT, "dshared")
    for rel in ["_heap.pyx", "_heap.pxd", "_codec.pyx"] + [
            os.path.join(d, f) for d in ("heap", "codec") for f in sorted(os.listdir(os.path.join(base, d)))
            if f.endswith((".pxi", ".pxd"))]:
        with open(os.path.join(base, rel)) as f:
            out[rel] = f.read()
    return out


def raw_offsets(text):
    """[(line number, line, what)] of the hand-written layout arithmetic in
    a Cython source (comment lines left out)."""
    found = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("#"):
            continue
        for pattern, what in RAW:
            if pattern.search(line):
                found.append((n, line.strip(), what))
    return found


def test_structs_sit_at_the_segment_format_offsets():
    from dshared import _heap
    assert _heap._layout() == FORMAT


def test_no_raw_payload_offsets():
    found = []
    for rel, text in sources().items():
        if rel in EXEMPT:
            continue
        found += ["%s:%d: %s  (%s)" % (rel, n, line, what) for n, line, what in raw_offsets(text)]
    assert not found, "layout by byte offset instead of heap/layout.pxd:\n" + "\n".join(found)


def test_the_guard_sees_raw_offsets():
    # what the sources held before the layout moved into types
    old = """
    return ds_ld64(seg.base + d + BLOCK_HDR + 8)
    cdef char *p = seg.base + c + BLOCK_HDR + (16 if is_list else 8)
        cells = <Cell *>(p + 8)
    nent = ds_ld64(p + 16)
    (<Block *>(seg.base + nit)).kind_rc = K_ITEMS | (1 << 8)
        b.kind_rc &= 0xff
    cdef uint64_t hdr = 16 if kind == K_STR else 8
    t = blk_alloc(seg, 32 + 4 * nslots + ENTRY_SIZE * capacity, K_TABLE, why)
        e = &h.jlog[2 * n]
    # a comment may say p + 16
    """
    assert sorted({n for n, _, _ in raw_offsets(old)}) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    # and what they hold now passes
    new = """
    return dict_body(seg.base, d).version
        cells = tuple_cells(<TupleHdr *>p)
            return <Cell *>(lb + 1)     # never read
    (<Block *>(seg.base + nit)).kind_rc = K_ITEMS | RC_ONE
    if seg_inb(seg, off, BLOCK_HDR) and (off & (ALIGN - 1)) == 0:
        acc = ds_ld64(p) | ds_ld64(p + n - 8)
    """
    assert raw_offsets(new) == []


def test_every_payload_struct_is_asserted_in_the_c_header():
    with open(os.path.join(ROOT, "dshared", "include", "dshared_layout.h")) as f:
        header = f.read()
    with open(os.path.join(ROOT, "dshared", "heap", "layout.pxd")) as f:
        pxd = f.read()
    declared = re.findall(r'ctypedef struct (\w+) "(ds_\w+)":', pxd)
    assert {name for name, _ in declared} == set(FORMAT) - {"Header.journal", "constants"}
    for name, cname in declared:
        size, fields = FORMAT[name]
        assert "DS_LAYOUT_SIZE(%s, " % cname in header, name
        for field in fields:
            if len(fields) > 1:
                assert re.search(r"DS_LAYOUT_AT\(%s, %s, %d\);" % (cname, field, fields[field]), header), \
                    (name, field)
