"""The corruption suite's harness (tests/test_corruption.py has the tests):
images, mutations, the forked child that opens a mutated image, and the
driver and workers that run them. Kept apart from the test module so that
the processes that fork thousands of children have not imported pytest
(forking a smaller process is faster)."""
import glob
import gzip
import json
import logging
import os
import random
import re
import resource
import select
import signal
import struct
import time

import dshared
from _helpers import full_walk
from _proc import Children, read_all, unlink_quietly

# Core bugs still open, each shown by a strict xfail test at the end of
# tests/test_corruption.py. While one is open, a child that fails on an
# image that holds its trigger, or with its exact failure (see
# _open_bug_in), counts as "open bug ...", not as a failure; the targeted
# mutations of the first four, which would fail nearly every time (the
# zeroed mutex after a 2 s wait), are left out. When its xfail test passes
# (an XPASS fails the run), take the bug out of this set: its mutations
# come back and its failures count again.
OPEN_BUGS = set()
# (fixed: ascii_flag, bad_utf8, container_key, named_not_dict, tuple_key_unchecked,
# cell_kind_unchecked, key_hash_unchecked, poisoned_unchecked, and the release
# of a block whose bytes were swapped; their images stay as regression tests)

# the exact failure of each open bug found by its symptom (see _open_bug_in)
OPEN_BUG_FAILURES = {}            # bug -> regex of its exact outcome, for bugs with no trigger to look for

N_IMAGES = 50                   # RELIABILITY.md's scale: the slow test
N_MUTATIONS = 400
QUICK_IMAGES = 4                # the default run's
QUICK_MUTATIONS = 50
# one worker per CPU this process may use (at least 2, at most 8); each
# forks the children of its images one at a time
WORKERS = max(2, min(8, len(os.sched_getaffinity(0))))
CHILD_SECONDS = 2               # the alarm in each child
CHILD_MEMORY = 256 << 20        # address space a child may add to what it had at fork
HEADER = 4096
TESTS = os.path.dirname(os.path.abspath(__file__))
IMAGES_DIR = os.path.join(TESTS, "corruption_images")

# header fields (see Header in dshared/_heap.pxd)
H_CAPACITY, H_SEED0, H_FLAGS, H_SEQ, H_TOP, H_TAIL16, H_RESERVED = 56, 64, 80, 88, 96, 104, 112
H_ROOT, H_NAMES, H_GEN, H_USED, H_NBLOCKS = 120, 128, 136, 144, 152
H_BINMAP, H_BINS, H_JCOUNT, H_JLOG, H_WAITS, H_JBLOCKS, H_MUTEX = 176, 192, 1216, 1224, 2248, 2256, 2280
NBINS = 128

# block kinds and cell tags (dshared/_heap.pxd)
K_FREE, K_STR, K_BYTES, K_BIGINT, K_TUPLE, K_DICT, K_LIST, K_TABLE, K_ITEMS, K_KTUPLE = range(10)
T_SSTR, T_STR, T_TUPLE, T_DICT, T_LIST, T_KTUPLE, T_PACKED = 6, 8, 11, 12, 13, 14, 15
T_REF = range(8, 15)            # tags whose cell holds a block offset at 8..15
T_KEY_REF = (8, 9, 10, 14)      # key cells in a block (str, bytes, bigint, tuple)

# dict tables (dshared/heap/layout.pxd): TableHdr (32 bytes), the index, then
# 32-byte entries (key cell, value cell); index slots are 3 bytes, 4 past
# 2**23 slots, padded to 8 bytes
TABLE_HDR, ENTRY_SIZE = 32, 32


def index_width(nslots):
    return 3 if nslots <= 1 << 23 else 4


def index_bytes(nslots):
    return (index_width(nslots) * nslots + 7) & ~7


def hash_at(entry):
    """Where an entry (its 32 bytes) keeps its key's 32-bit hash, or None
    (heap/keys.pxd: entry_hash_at)."""
    tag = entry[0]
    if tag == T_PACKED:
        return 28 if (entry[1] & 0x7F) + (entry[3] & 0x7F) <= 24 else None
    if tag in (6, 7):               # a short str or bytes key
        return 12 if entry[1] & 0x7F <= 10 else None
    return 4


def slot_get(data, index_at, nslots, i):
    w = index_width(nslots)
    return int.from_bytes(bytes(data[index_at + w * i:index_at + w * i + w]), "little", signed=True)


def slot_put(data, index_at, nslots, i, ix):
    w = index_width(nslots)
    data[index_at + w * i:index_at + w * i + w] = (ix & ((1 << 8 * w) - 1)).to_bytes(w, "little")


# -- images -------------------------------------------------------------------------------

def _classic(root, seg):
    """The fixed image of the first suite: one of each kind of thing."""
    root["small"] = {"a": 1, "b": "two", "c": 3.5, "d": None, "e": True}
    root["list"] = [1, "x" * 40, b"y" * 30, (1, 2, ("z", 3)), [4, 5], {"k": "v"}]
    root["big"] = 2 ** 200
    root[("tuple", 1)] = "tuple key"
    root["long key of more than fourteen bytes"] = {"n%d" % i: i for i in range(40)}
    root["nested"] = {"a": {"b": {"c": [1, 2, {"d": "e" * 20}]}}}
    cyc = [1]
    cyc.append(cyc)
    root["cycle"] = cyc
    seg.col("named")["x"] = list(range(30))
    for i in range(60):
        root["k%03d" % i] = "value %d" % i
    del root["k010"], root["k020"]
    root["list"].pop(0)


def _rand_scalar(rng):
    r = rng.randrange(12)
    if r == 0:
        return rng.randrange(-2 ** 40, 2 ** 40)
    if r == 1:
        return rng.choice([2 ** 64, -(2 ** 63) - 1, 3 ** 90])
    if r == 2:
        return rng.random() * 1e6
    if r == 3:
        return rng.choice([None, True, False])
    if r == 4:
        return "s%d" % rng.randrange(1000)                       # inline str
    if r == 5:
        return "long string %d " % rng.randrange(1000) * rng.randint(1, 6)
    if r == 6:
        return "\u00e9\u4e2d\U0001f600" * rng.randint(1, 8)     # non-ASCII
    if r == 7:
        return bytes(rng.randrange(256) for _ in range(rng.choice([3, 20, 100])))
    if r == 8:
        return (rng.randrange(100), "t", (rng.random(), b"x"))
    return "v%d" % rng.randrange(100)


def _rand_value(rng, depth=0):
    r = rng.randrange(10)
    if depth < 3 and r < 2:
        return {_rand_key(rng): _rand_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 3, 8, 30]))}
    if depth < 3 and r < 4:
        return [_rand_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 4, 12]))]
    return _rand_scalar(rng)


def _rand_key(rng):
    r = rng.randrange(8)
    if r == 0:
        return rng.randrange(10 ** 6)
    if r == 1:
        return ("tk", rng.randrange(100), "x" * rng.randrange(20))
    if r == 2:
        return "a long key number %d" % rng.randrange(10 ** 6)
    if r == 3:
        return b"bk%d" % rng.randrange(1000)
    return "k%d" % rng.randrange(10 ** 5)


def _build(seg, rng, img):
    """Fill a fresh segment; deletions leave blocks in the free lists."""
    root = seg.col()
    if img % 10 == 0:
        _classic(root, seg)
        return
    try:
        for _ in range(rng.randint(20, 120)):
            r = rng.randrange(10)
            if r == 0:                              # a big table
                root[_rand_key(rng)] = {"e%d" % i: _rand_scalar(rng) for i in range(rng.choice([50, 200]))}
            elif r == 1:
                lst = [_rand_value(rng) for _ in range(rng.randint(1, 10))]
                if rng.random() < 0.3:
                    lst.append(lst)                 # a cycle
                root[_rand_key(rng)] = lst
            elif r == 2:
                seg.col("named%d" % rng.randrange(3))[_rand_key(rng)] = _rand_value(rng)
            else:
                root[_rand_key(rng)] = _rand_value(rng)
        keys = list(root.keys())
        for k in rng.sample(keys, len(keys) // 3):
            del root[k]
        for v in list(root.values()):
            if isinstance(v, dshared.SharedList) and len(v) > 2 and rng.random() < 0.5:
                del v[0]
            elif isinstance(v, dshared.SharedDict) and len(v) > 2 and rng.random() < 0.5:
                v.popitem()
        for _ in range(rng.randint(0, 10)):
            root[_rand_key(rng)] = _rand_value(rng)
    except dshared.SegmentFullError:
        pass


def _make_image(name, rng, img):
    """(image bytes up to top, capacity) of a freshly built segment. The
    same rng gives the same bytes: the hash seed (random at creation) is
    set from rng before anything is stored, so tables lay out the same."""
    cap = rng.choice([64 << 10, 256 << 10, 1 << 20])
    seg = dshared.Segment(name, cap, create=True)
    cap = seg.capacity
    try:
        with open("/dev/shm/" + name, "r+b") as f:
            f.seek(H_SEED0)
            f.write(struct.pack("<QQ", rng.randrange(2 ** 64), rng.randrange(2 ** 64)))
        _build(seg, random.Random(rng.randrange(2 ** 32)), img)
        top = seg.stats()["top"]
        with open("/dev/shm/" + name, "rb") as f:
            image = f.read(top)
        assert seg.check().ok
    finally:
        seg.close()
        seg.unlink()
    return image, cap


# -- the structure of an image, for targeted mutations -----------------------------------

def _u32(data, at):
    return struct.unpack_from("<I", data, at)[0]


def _u64(data, at):
    return struct.unpack_from("<Q", data, at)[0]


class Layout:
    """What an intact image holds: blocks, free blocks, offset fields, length
    fields, tables and cells."""

    def __init__(self, image):
        self.top = _u64(image, H_TOP)
        self.blocks = []            # (offset, size, kind)
        self.free = []
        self.refs = []              # (where an 8-byte offset lies, offset of its block)
        self.lengths = []           # (where, width, owner block)
        self.tables = []            # (table offset, nslots, index at)
        self.cells = []             # (cell at, owner block)
        self.str_flags = []         # where a STR block's flags word lies (bit 0: ASCII)
        self.utf8 = []              # (start, end) of the bytes of a non-ASCII STR block
        self.ktuples = []           # (start, end) of a key tuple's canonical encoding
        self.by_kind = {}
        off = HEADER
        while off < self.top:
            size = _u32(image, off) * 16
            if size == 0:
                break
            kind = image[off + 12]
            self.blocks.append((off, size, kind))
            self.by_kind.setdefault(kind, []).append(off)
            p = off + 16
            if kind == K_FREE:
                self.free.append(off)
                self.refs += [(p, off), (p + 8, off)]
            elif kind in (K_STR, K_BYTES, K_BIGINT, K_KTUPLE):
                self.lengths.append((p, 8, off))
                if kind == K_STR:
                    self.str_flags.append(p + 8)
                    n = _u64(image, p)
                    if not _u64(image, p + 8) & 1 and 0 < n <= size - 32:
                        self.utf8.append((p + 16, p + 16 + n))
                elif kind == K_KTUPLE and 0 < _u64(image, p) <= size - 24:
                    self.ktuples.append((p + 8, p + 8 + _u64(image, p)))
            elif kind == K_TUPLE:
                self.lengths.append((p, 8, off))
                self._cells(image, p + 8, _u64(image, p), off)
            elif kind in (K_DICT, K_LIST):
                self.refs.append((p, off))
                if kind == K_LIST:
                    self.lengths.append((p + 8, 8, off))
            elif kind == K_ITEMS:
                self.lengths.append((p, 8, off))
                self._cells(image, p + 8, min(_u64(image, p), (size - 24) // 16), off)
            elif kind == K_TABLE:
                nslots, cap, nent = _u64(image, p), _u64(image, p + 8), _u64(image, p + 16)
                self.lengths += [(p + i, 8, off) for i in (0, 8, 16, 24)]
                self.tables.append((off, nslots, p + 32))
                ents = p + TABLE_HDR + index_bytes(nslots)
                for i in range(nent):
                    at = hash_at(image[ents + ENTRY_SIZE * i:ents + ENTRY_SIZE * (i + 1)])
                    if at is not None:
                        self.lengths.append((ents + ENTRY_SIZE * i + at, 4, off))    # the key's hash
                    self._cells(image, ents + ENTRY_SIZE * i, 2, off)
            off += size
        self.refs += [(H_ROOT, 0), (H_NAMES, 0), (H_TOP, 0)]
        self.refs += [(H_BINS + 8 * i, 0) for i in range(NBINS) if _u64(image, H_BINS + 8 * i)]

    def _cells(self, image, at, n, owner):
        for i in range(n):
            c = at + 16 * i
            self.cells.append((c, owner))
            if image[c] in T_REF:
                self.refs.append((c + 8, owner))
            elif image[c] == T_PACKED:
                self.lengths.append((c + 1, 1, owner))


def _mutate_ranges(rng, data, size, lay, donor):
    """The families that move whole ranges: copied from another live
    segment (`donor`, built like the image but from other values and
    another hash seed), a whole header from it, swapped, shifted by 16,
    zero and 0xFF pages. (description, data)."""
    r = rng.randrange(10)
    end = min(size, len(donor))
    if min(end, size) - HEADER < 64:
        return "heap too small: unchanged", data

    def length(choices, room):
        return rng.choice([n for n in choices if n <= room // 2] or [16])
    if r < 3:                                       # a range of another live segment
        n = length([8, 16, 32, 64, 256, 1024, 4096], end - HEADER)
        src = rng.randrange(HEADER, end - n) & ~15 if rng.random() < 0.7 else rng.randrange(HEADER, end - n)
        dst = src if rng.random() < 0.5 else rng.randrange(HEADER, size - n) & ~15
        data[dst:dst + n] = donor[src:src + n]
        return "%d bytes at %d copied from another segment's %d" % (n, dst, src), data
    if r < 4:                                       # another segment's header (its seed, top, bins, ...)
        keep_mutex = rng.random() < 0.5
        hi = H_MUTEX if keep_mutex else HEADER
        data[:hi] = donor[:hi]
        return "header (to %d) copied from another segment" % hi, data
    if r < 6:                                       # two ranges swapped
        if rng.random() < 0.5 and len(lay.blocks) > 1:
            (a, na, _), (b, nb, _) = rng.sample(lay.blocks, 2)
            n = min(na, nb)
        else:
            n = length([8, 16, 48, 64, 256, 1024], size - HEADER)
            a, b = (rng.randrange(HEADER, size - n) & ~(15 if rng.random() < 0.7 else 7) for _ in range(2))
        if abs(a - b) < n:
            return "ranges overlap: unchanged", data
        data[a:a + n], data[b:b + n] = data[b:b + n], data[a:a + n]
        return "%d bytes at %d and %d swapped" % (n, a, b), data
    if r < 8:                                       # a range shifted by 16 bytes, up or down
        n = length([16, 32, 64, 256, 1024, 4096], size - HEADER)
        at = rng.randrange(HEADER + 16, max(HEADER + 17, size - n - 16)) & ~15
        d = rng.choice([16, -16])
        data[at + d:at + d + n] = bytes(data[at:at + n])
        del data[size:]
        return "%d bytes at %d shifted by %d" % (n, at, d), data
    page = rng.randrange((size + 4095) // 4096) * 4096  # a zero or 0xFF page (the header's too)
    fill = rng.choice([0, 0xFF])
    end = min(size, page + 4096)
    data[page:end] = bytes([fill]) * (end - page)
    return "page at %d filled with %#x" % (page, fill), data


def _mutate_flags(rng, data, lay):
    """Flags that lie and encodings that do not decode: a STR block's ASCII
    flag, an inline str's or a packed pair's ASCII bit, bytes of non-ASCII
    UTF-8, bytes of a key tuple's encoding. (description, data)."""
    r = rng.randrange(4)
    if r == 0 and lay.str_flags:
        at = rng.choice(lay.str_flags)
        val = rng.choice([0, 1, 2, 3, 0xFF, 2 ** 63 + 1])
        struct.pack_into("<Q", data, at, val)
        return "STR flags at %d = %d" % (at, val), data
    if r == 1:
        cells = [at for at, _ in lay.cells if data[at] in (T_SSTR, T_PACKED)]
        if cells:
            at = rng.choice(cells)
            i = rng.choice([1, 3]) if data[at] == T_PACKED else 1
            data[at + i] ^= 0x80
            return "ASCII bit of the str cell at %d (byte %d) flipped" % (at, i), data
    if r == 2 and lay.utf8:
        lo, hi = rng.choice(lay.utf8)
        at = rng.randrange(lo, hi)
        data[at] = rng.choice([0xFF, 0xC0, 0x80, 0xED, 0x00, ord("a")])
        return "UTF-8 byte at %d = %d" % (at, data[at]), data
    if lay.ktuples:
        lo, hi = rng.choice(lay.ktuples)
        at = rng.randrange(lo, hi)
        data[at] = rng.choice([0, 1, 4, 6, 7, 8, 11, 12, 13, 14, 15, 0x7F, 0xFF, data[at] ^ 1])
        return "key tuple byte at %d = %d" % (at, data[at]), data
    return "no flags: unchanged", data


def _mutate(rng, image, cap, lay, donor):
    """One mutation of `image`: (description, mutated bytes). `donor` is
    another live segment's image."""
    data = bytearray(image)
    size = len(image)
    r = rng.randrange(125)
    if r >= 110:
        return _mutate_ranges(rng, data, size, lay, donor)
    if r >= 100:
        return _mutate_flags(rng, data, lay)
    specials = [0, 8, 16, cap, cap + 8, cap - 8, cap - 16, 2 ** 63, 2 ** 64 - 1, 2 ** 64 - 16, 2 ** 64 - 32, 2 ** 32,
                HEADER, HEADER + 1, HEADER + 8, lay.top, lay.top - 16]
    if "valid_ref_wraps" in OPEN_BUGS:
        specials.remove(2 ** 64 - 16)
    if r < 8:                                       # bit flips anywhere in the heap
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(HEADER, size)
            data[i] ^= 1 << rng.randrange(8)
        return "bit flips", data
    if r < 14:                                      # a random word set to a special value
        at = HEADER + 8 * rng.randrange((size - HEADER) // 8)
        val = rng.choice(specials + [at, at - 8])
        struct.pack_into("<Q", data, at, val)
        return "word at %d = %d" % (at, val), data
    if r < 18:                                      # a random u32 (sizes, index slots)
        at = HEADER + 4 * rng.randrange((size - HEADER) // 4)
        val = rng.choice([0, 1, 2, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFE, rng.randrange(2 ** 32)])
        struct.pack_into("<I", data, at, val)
        return "u32 at %d = %d" % (at, val), data
    if r < 22:                                      # a run of garbage or zeros
        n = rng.choice([16, 64, 256])
        at = rng.randrange(HEADER, max(HEADER + 1, size - n))
        data[at:at + n] = bytes(n) if rng.random() < 0.5 else bytes(rng.randrange(256) for _ in range(n))
        return "run of %d at %d" % (n, at), data
    if r < 40:                                      # an offset field: 0, size, size+8, 2^63, self, ...
        at, owner = rng.choice(lay.refs)
        val = rng.choice(specials + [owner or at, (owner or at) + 16, at, at - 8, rng.choice(lay.blocks)[0],
                                     rng.choice(lay.blocks)[0] + 16, rng.choice(lay.blocks)[0] + 8])
        struct.pack_into("<Q", data, at, val)
        return "offset at %d (block %d) = %d" % (at, owner, val), data
    if r < 50 and lay.lengths:                      # a length, count or kept hash
        at, width, owner = rng.choice(lay.lengths)
        old = int.from_bytes(data[at:at + width], "little")
        val = rng.choice([0, 1, old + 1, old - 1, old * 2, old + 16, 2 ** 63, 2 ** 64 - 1, 2 ** 32 + old, cap // 16,
                          cap, 0x7F, 0xFF, 15])
        data[at:at + width] = (val % (1 << (8 * width))).to_bytes(width, "little")
        return "length at %d (block %d) = %d" % (at, owner, val), data
    if r < 60:                                      # a block header field
        off, bsize, kind = rng.choice(lay.blocks)
        field = rng.randrange(4)
        old = _u32(data, off + 4 * field)
        if field == 3 and rng.random() < 0.5:       # another kind, same refcount
            val = (old & ~0xFF) | rng.choice([0, 1, 4, 5, 6, 7, 8, 9, 0xEE, 10, 0xFF])
        else:
            val = rng.choice([0, 1, 2, old + 1, old - 1, old * 2, 0xFFFFFFFF, cap // 16, (cap - off) // 16,
                              (cap - off) // 16 + 1, old ^ 0x5A5A])
        struct.pack_into("<I", data, off + 4 * field, val % 2 ** 32)
        return "block %d (kind %d) header word %d = %d" % (off, kind, field, val % 2 ** 32), data
    if r < 68:                                      # a cell's tag
        if not lay.cells:
            return "no cells: unchanged", data
        at, owner = rng.choice(lay.cells)
        tag = rng.choice([0, 1, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0xFF])
        data[at] = tag
        if tag in (6, 7) and rng.random() < 0.5:
            data[at + 1] = rng.choice([15, 0x7F, 0x8F, 0xFF])
        return "cell at %d (block %d) tag = %d" % (at, owner, tag), data
    if r < 72:                                      # a cell that refers to the block holding it
        if not lay.cells:
            return "no cells: unchanged", data
        at, owner = rng.choice(lay.cells)
        if owner == 0:
            return "no owner: unchanged", data
        data[at] = rng.choice([T_TUPLE, T_KTUPLE, T_DICT, T_LIST, T_STR])
        struct.pack_into("<Q", data, at + 8, owner)
        return "cell at %d refers to its own block %d" % (at, owner), data
    if r < 80:                                      # a cyclic free list
        if lay.free:
            f = rng.choice(lay.free)
            other = rng.choice(lay.free)
            how = rng.randrange(4)
            if how == 0:
                struct.pack_into("<Q", data, f + 16, f)             # next = itself
            elif how == 1:
                struct.pack_into("<Q", data, f + 16, other)         # next = some free block
                struct.pack_into("<Q", data, other + 16, f)
            elif how == 2:
                struct.pack_into("<Q", data, f + 24, f)             # prev = itself
            else:                                                   # every free block links to the first
                for g in lay.free:
                    struct.pack_into("<Q", data, g + 16, lay.free[0])
            return "cyclic free list (%d) through %d" % (how, f), data
        # no free block: a bin whose head is a live block that links to itself
        off, _, _ = rng.choice(lay.blocks)
        i = rng.randrange(NBINS)
        struct.pack_into("<Q", data, H_BINS + 8 * i, off)
        struct.pack_into("<Q", data, off + 16, off)
        data[H_BINMAP + i // 8] |= 1 << (i % 8)
        return "bin %d heads live block %d linked to itself" % (i, off), data
    if r < 88:                                      # a probe chain that never meets an empty slot
        if not lay.tables:
            return "no tables: unchanged", data
        t, nslots, index = rng.choice(lay.tables)
        how = rng.randrange(3)
        for i in range(nslots):
            ix = slot_get(data, index, nslots, i)
            if ix == -1:
                ix = -2 if how == 0 else (0 if how == 1 else rng.choice([-2, 0, nslots, 2 ** (8 * index_width(nslots) - 1) - 1]))
                slot_put(data, index, nslots, i, ix)
        return "table %d: no empty slot (%d)" % (t, how), data
    if r < 94:                                      # zeroed header, whole or in part
        lo, hi = rng.choice([(0, HEADER), (8, HEADER), (48, HEADER), (H_SEQ, H_MUTEX), (H_TOP, H_BINS),
                             (H_BINMAP, H_JCOUNT), (H_ROOT, H_GEN), (H_MUTEX, HEADER)])
        if lo == H_MUTEX and "zeroed_mutex" in OPEN_BUGS:
            lo += 64                                # past the mutex
        data[lo:hi] = bytes(hi - lo)
        return "header zeroed from %d to %d" % (lo, hi), data
    # a header field set to a special value (the journal included)
    at = rng.choice([H_CAPACITY, H_FLAGS, H_SEQ, H_TOP, H_TAIL16, H_RESERVED, H_ROOT, H_NAMES, H_GEN, H_USED,
                     H_NBLOCKS, H_BINMAP, H_BINMAP + 8, H_JCOUNT, H_JLOG, H_JLOG + 8,
                     H_BINS + 8 * rng.randrange(NBINS), 48 + 8 * rng.randrange(30)])
    val = rng.choice(specials + [1, 3, 63, 64, 65, 0xFFFFFFFF])
    if at == H_JCOUNT and 0 < val <= 64 and "journal_count" in OPEN_BUGS:
        val = 65
    if at == H_SEQ and "odd_sequence" in OPEN_BUGS:
        val &= ~1
    struct.pack_into("<Q", data, at, val)
    return "header word at %d = %d" % (at, val), data


def _forged_ascii(data, lay):
    """True if `data` holds, where the intact image holds a str (a STR
    block, an inline str cell, a packed pair), one flagged ASCII whose
    bytes are not all ASCII: the flag flipped, or the bytes changed under
    it."""
    def non_ascii(lo, n):
        return any(b & 0x80 for b in data[lo:lo + n])
    for at in lay.str_flags:            # at: the flags word; the length before it, the bytes after it
        n = _u64(data, at - 8)
        if data[at] & 1 and n <= len(data) - at - 8 and non_ascii(at + 8, n):
            return True
    for c, _ in lay.cells:
        tag = data[c]
        if tag == T_SSTR and data[c + 1] & 0x80 and non_ascii(c + 2, min(data[c + 1] & 0x7F, 14)):
            return True
        if tag == T_PACKED:
            klen, vlen = data[c + 1] & 0x7F, data[c + 3] & 0x7F
            if data[c + 1] & 0x80 and non_ascii(c + 4, min(klen, 28)):
                return True
            if data[c + 2] == T_SSTR and data[c + 3] & 0x80 and non_ascii(c + 4 + klen, min(vlen, 28 - min(klen, 28))):
                return True
    return False


def _open_bug_in(image, data, lay, outcome):
    """The open bug (OPEN_BUGS) whose trigger the mutated image `data` holds
    and the intact `image` does not, or whose exact failure `outcome` is,
    or None."""
    wraps = struct.pack("<Q", 2 ** 64 - 16)
    for bug in sorted(OPEN_BUGS):
        if bug == "valid_ref_wraps":
            hit = any(data[i:i + 8] == wraps != image[i:i + 8] for i in range(0, len(data) - 7, 8))
        elif bug == "journal_count":
            hit = 0 < _u64(data, H_JCOUNT) <= 64
        elif bug == "zeroed_mutex":
            hit = data[H_MUTEX:H_MUTEX + 40] != image[H_MUTEX:H_MUTEX + 40]
        elif bug == "odd_sequence":
            hit = _u64(data, H_SEQ) & 1
        elif bug == "table_count":          # a table's count lowered
            hit = any(_u64(data, t + 40) < _u64(image, t + 40) for t, _, _ in lay.tables)
        elif bug == "block_size":           # a block's size changed (freed, it goes on with that size)
            hit = any(_u32(data, off) != _u32(image, off) for off, _, _ in lay.blocks)
        elif bug == "ascii_flag":           # a str flagged ASCII over bytes that are not
            hit = _forged_ascii(data, lay)
        elif bug in OPEN_BUG_FAILURES:
            hit = re.match(OPEN_BUG_FAILURES[bug], outcome)
        else:
            raise ValueError(bug)
        if hit:
            return bug
    return None


# -- a child: attach, check, walk everything, get, set, delete ---------------------------

# Exceptions a child may see: damage in the segment surfaces as a
# DsharedError (CorruptSegmentError above all); KeyError and IndexError are
# the plain dict/list answers (a delete of a key that a corrupt table no
# longer finds). Anything else (TypeError, UnicodeDecodeError, MemoryError,
# SystemError, RecursionError, ...) is a failure.
CLEAN = (dshared.DsharedError, KeyError, IndexError)


ROOT_NAMES = (None, "named", "named0", "named1", "named2")


def _walk(seg, seen_types):
    """Every container reachable from the roots: len, iteration of keys,
    values and items, a get of each key and of missing ones, each list item
    by index, a slice, a deep copy and the repr."""
    todo = [seg.col(n) for n in ROOT_NAMES]
    seen = set()
    while todo:
        c = todo.pop()
        ident = c._identity()
        if ident in seen:
            continue
        seen.add(ident)
        try:
            len(c)
            if isinstance(c, dshared.SharedDict):
                for k in list(c.keys()):
                    v = c.get(k)
                    k in c
                    if isinstance(v, (dshared.SharedDict, dshared.SharedList)):
                        todo.append(v)
                for k in MISSING[:4]:           # probes that end only at an empty slot
                    k in c
                list(c.values())
                list(c.items())
            else:
                for i, v in enumerate(c):
                    c[i]
                    if isinstance(v, (dshared.SharedDict, dshared.SharedList)):
                        todo.append(v)
                c[-1:]
            c.to_python()
            repr(c)
        except Exception as e:
            _seen(seen_types, e)


def _seen(seen_types, e):
    seen_types.add(type(e).__name__)
    if not isinstance(e, CLEAN):
        raise e


MISSING = ["missing", "a missing key of some length", 12345, -1, 2 ** 70, 1.5, b"missing", ("no", 1),
           "k005", "k010", "small", ("tuple", 1)]

WRITES = [
    lambda r: r.__setitem__("new", {"fresh": ["value", 1]}),
    lambda r: r.__setitem__("small", "overwritten"),
    lambda r: r.__setitem__("a new and rather long key", b"b" * 100),
    lambda r: r.pop("k005", None),
    lambda r: r.pop(next(iter(r), "none"), None),
    lambda r: r.setdefault("sd", [1, 2]),
    lambda r: r.__delitem__("k006"),
    lambda r: r.update({"u%d" % i: i for i in range(8)}),
    lambda r: r.popitem(),
    lambda r: r.clear(),
]


def _nested_writes(seg, seen_types):
    """Writes inside every container the root holds: set, append, insert, delete."""
    try:
        values = list(seg.col().values())
    except Exception as e:
        _seen(seen_types, e)
        return
    for v in values[:20]:
        try:
            if isinstance(v, dshared.SharedDict):
                v["w"] = "written"
                v.pop(next(iter(v), "none"), None)
            elif isinstance(v, dshared.SharedList):
                v.append("appended")
                v.insert(0, "first")
                del v[-1]
                if len(v) > 2:
                    del v[1]
        except Exception as e:
            _seen(seen_types, e)


def _property(seg, seen_types):
    """check(), then, if it says ok, full_walk of every root: None, or the
    violation of "check().ok implies a full walk raises nothing"."""
    try:
        if not seg.check().ok:
            seen_types.add("check")
            return None
    except Exception as e:
        _seen(seen_types, e)
        return None
    for n in ROOT_NAMES:
        try:
            root = seg.col(n)
        except Exception as e:          # not a read: a named root is made on first use
            _seen(seen_types, e)
            continue
        try:
            full_walk(root)
        except Exception as e:
            return "check ok, then the walk raised %s: %s" % (type(e).__name__, str(e)[:200])
    return None


def _exercise(name, seen_types):
    """check() and the full walk (the property), then every read path, then
    writes, over the (maybe corrupt) segment; each phase runs even if the
    one before raised. Returns "refused", "noticed", "ok" or the property's
    violation."""
    try:
        seg = dshared.Segment(name, create=False)
    except Exception as e:
        _seen(seen_types, e)
        return "refused"
    violation = []
    steps = [lambda: violation.append(_property(seg, seen_types))]
    steps.append(lambda: _walk(seg, seen_types))
    for k in MISSING:
        steps.append(lambda k=k: seg.col().get(k))
        steps.append(lambda k=k: k in seg.col())
    steps.append(lambda: seg.stats())
    steps += [lambda w=w: w(seg.col()) for w in WRITES[:-2]]
    steps.append(lambda: _nested_writes(seg, seen_types))
    steps += [lambda w=w: w(seg.col()) for w in WRITES[-2:]]
    steps.append(lambda: seg.collect())
    steps.append(lambda: seg.check())
    for step in steps:
        try:
            step()
        except Exception as e:
            _seen(seen_types, e)
    seg.close()
    if violation and violation[0]:
        return violation[0]
    return "noticed" if seen_types else "ok"


def _child(name, report_fd):
    """In the forked child: limits, then _exercise; one JSON line on report_fd."""
    logging.getLogger("dshared").setLevel(logging.CRITICAL)    # thousands of poisoned images: no stderr
    signal.alarm(CHILD_SECONDS)                 # default action: the child dies of SIGALRM
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + CHILD_MEMORY, resource.RLIM_INFINITY))
    seen_types = set()
    t0 = time.monotonic()
    try:
        outcome = _exercise(name, seen_types)
    except MemoryError:
        outcome = "over %d MiB" % (CHILD_MEMORY >> 20)
    except BaseException as e:
        outcome = "unclean %s: %s" % (type(e).__name__, str(e)[:200])
    line = json.dumps({"o": outcome, "x": sorted(seen_types), "t": time.monotonic() - t0})
    os.write(report_fd, (line[:3000] + "\n").encode())


def _wait(ch, pid, timeout):
    """ch.wait(pid, timeout), without its polling delay where pidfd_open is there."""
    if hasattr(os, "pidfd_open"):
        fd = os.pidfd_open(pid)
        try:
            if not select.select([fd], [], [], timeout)[0]:
                raise TimeoutError("child %d still running after %s s" % (pid, timeout))
        finally:
            os.close(fd)
    return ch.wait(pid, timeout)


def _run_child(name, image, cap, report_r, report_w):
    """Write the image as segment `name`, open it in a forked child; returns
    (outcome, exception types seen, seconds)."""
    path = "/dev/shm/" + name
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, image)
        os.ftruncate(fd, cap)
    finally:
        os.close(fd)
    t0 = time.monotonic()
    try:
        with Children() as ch:
            pid = ch.fork(_child, name, report_w)
            try:
                code = _wait(ch, pid, CHILD_SECONDS + 8)
            except TimeoutError:
                return "hung", [], time.monotonic() - t0
        took = time.monotonic() - t0
        try:
            line = os.read(report_r, 4096).decode()
        except BlockingIOError:
            line = ""
        if code < 0:
            sig = signal.Signals(-code).name
            return ("over %d s" % CHILD_SECONDS if sig == "SIGALRM" else "signal " + sig), [], took
        if code != 0 or not line:
            return "exit %d" % code, [], took
        rep = json.loads(line)
        return rep["o"], rep["x"], took
    finally:
        unlink_quietly(name)


GOOD = ("ok", "noticed", "refused")


def _next_image(jobs_fd):
    """The next image number from the driver's job pipe, or None when none is left."""
    b = os.read(jobs_fd, 4)
    return struct.unpack("<i", b)[0] if len(b) == 4 else None


def _run_images(name, seed, jobs_fd, n_mut, save_dir, out_fd):
    """A worker: takes image numbers from the job pipe until it is empty,
    builds each image and a donor (another live segment), runs n_mut
    mutations of the image in children; sends its tallies, as one JSON
    line, on out_fd."""
    res = {"outcomes": {}, "types": {}, "failures": [], "slowest": 0.0, "children": 0, "unchanged": 0,
           "images": 0}
    r, w = os.pipe()
    os.set_blocking(r, False)
    while True:
        img = _next_image(jobs_fd)
        if img is None:
            break
        res["images"] += 1
        rng = random.Random(seed * 1000003 + img)
        image, cap = _make_image("%s-i%d" % (name, img), rng, img)
        donor, _ = _make_image("%s-d%d" % (name, img), random.Random(rng.randrange(2 ** 32)), img + 1)
        lay = Layout(image)
        for m in range(n_mut):
            desc, data = _mutate(rng, image, cap, lay, donor)
            if data == image:
                res["unchanged"] += 1
            outcome, types, took = _run_child(name + "-c", bytes(data), cap, r, w)
            res["children"] += 1
            res["slowest"] = max(res["slowest"], took)
            if outcome not in GOOD:
                bug = _open_bug_in(image, data, lay, outcome)
                if bug:
                    outcome = "open bug " + bug
            res["outcomes"][outcome] = res["outcomes"].get(outcome, 0) + 1
            for t in types:
                res["types"][t] = res["types"].get(t, 0) + 1
            if outcome not in GOOD and not outcome.startswith("open bug "):
                saved = os.path.join(save_dir, "corrupt-%d-%d-%d.img.gz" % (seed, img, m))
                with gzip.open(saved, "wb") as f:
                    f.write(struct.pack("<Q", cap) + bytes(data))
                res["failures"].append("image %d mutation %d, %s: %s (saved as %s)" % (img, m, desc, outcome, saved))
    os.close(r)
    os.close(w)
    os.write(out_fd, (json.dumps(res) + "\n").encode())
    os.close(out_fd)


def _drive(name, seed, n_images, n_mut, save_dir):
    """The driver: WORKERS workers share the images; returns the merged tallies."""
    total = {"outcomes": {}, "types": {}, "failures": [], "slowest": 0.0, "children": 0, "unchanged": 0,
             "workers": []}
    try:
        _drive_workers(name, seed, n_images, n_mut, save_dir, total)
    finally:
        # a worker killed half-way leaves its segments behind
        for n in os.listdir("/dev/shm"):
            if n.startswith(name + "-w"):
                unlink_quietly(n)
    return total


def _drive_workers(name, seed, n_images, n_mut, save_dir, total):
    # the images wait in a pipe, 4 bytes each (written whole before any
    # worker reads, so each read takes one): a worker that gets cheap
    # images takes more of them
    jobs_r, jobs_w = os.pipe()
    for img in range(n_images):
        os.write(jobs_w, struct.pack("<i", img))
    os.close(jobs_w)
    with Children() as ch:
        pipes = []
        for w in range(min(WORKERS, n_images)):
            r, wr = os.pipe()
            pid = ch.fork(_run_images, "%s-w%d" % (name, w), seed, jobs_r, n_mut, save_dir, wr)
            os.close(wr)
            pipes.append((pid, r))
        os.close(jobs_r)
        for pid, r in pipes:
            out = read_all(r).decode()
            code = ch.wait(pid, 60)
            if code != 0 or not out:
                raise RuntimeError("corruption worker %d failed (exit %d)" % (pid, code))
            res = json.loads(out)
            for key in ("outcomes", "types"):
                for k, v in res[key].items():
                    total[key][k] = total[key].get(k, 0) + v
            total["failures"] += res["failures"]
            total["slowest"] = max(total["slowest"], res["slowest"])
            total["children"] += res["children"]
            total["unchanged"] += res["unchanged"]
            total["workers"].append(res["images"])


def _replay(name, path):
    """The outcome of a saved image (see _run_images) opened in a child."""
    with gzip.open(path, "rb") as f:
        blob = f.read()
    cap = struct.unpack_from("<Q", blob)[0]
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        return list(_run_child(name, blob[8:], cap, r, w)[:2])
    finally:
        os.close(r)
        os.close(w)


def report(r):
    """Print a driver's tallies."""
    print("%d children; slowest %.3f s; outcomes %s" % (r["children"], r["slowest"], r["outcomes"]))
    print("exceptions seen (children): %s" % r["types"])


def _replay_all(name, paths):
    """The driver of the regression test: {file name: [outcome, exceptions]}."""
    return {os.path.basename(p): _replay(name, p) for p in paths}


REGRESSIONS = sorted(glob.glob(os.path.join(IMAGES_DIR, "*.img.gz")))


# -- the open core bugs (OPEN_BUGS), one image each ----------------------------------------

def _open_bug_image(name, bug):
    """(image, capacity) of a small intact segment with the mutation that
    shows `bug`."""
    seg = dshared.Segment(name, 64 << 10, create=True)
    try:
        root = seg.col()
        root["s"] = "a str in a block of its own"
        root["d"] = {"k%d" % i: i for i in range(20)}
        root["l"] = [1, "two", [3]]
        root["u"] = "\u00e9" * 20                 # a non-ASCII STR block
        root[("t", 1, "x")] = "tuple key"
        seg.col("named")["x"] = 1
        top = seg.stats()["top"]
        with open("/dev/shm/" + name, "rb") as f:
            data = bytearray(f.read(top))
        cap = seg.capacity
    finally:
        seg.close()
        seg.unlink()
    if bug == "valid_ref_wraps":
        # a str cell whose offset + 16 wraps around to 0
        lay = Layout(bytes(data))
        at = next(at for at, owner in lay.refs if owner and data[at - 8] == T_STR)
        struct.pack_into("<Q", data, at, 2 ** 64 - 16)
    elif bug == "journal_count":
        struct.pack_into("<Q", data, H_JCOUNT, 63)
    elif bug == "zeroed_mutex":
        data[H_MUTEX:H_MUTEX + 40] = bytes(40)
    else:
        _open_bug_mutation(data, bug)
    return bytes(data), cap


def _entry_cells(data, lay, key):
    """(key cell at, value cell at) of the entry whose key is the str `key`
    (inline, packed or in a STR block)."""
    kb = key.encode()
    for t, nslots, index in lay.tables:
        p = t + 16
        ents = p + TABLE_HDR + index_bytes(nslots)
        for i in range(_u64(data, p + 16)):
            c = ents + ENTRY_SIZE * i
            tag = data[c]
            at = c + (4 if tag == T_PACKED else 2)
            if tag in (T_SSTR, T_PACKED) and data[c + 1] & 0x7F == len(kb) and data[at:at + len(kb)] == kb:
                return c, c + 16
            blk = _u64(data, c + 8)
            if tag == T_STR and _u64(data, blk + 16) == len(kb) and data[blk + 32:blk + 32 + len(kb)] == kb:
                return c, c + 16
    raise LookupError(key)


def _open_bug_mutation(data, bug):
    """Make the damage of one of the open bugs found with the range and
    flag families and the check() property (see OPEN_BUGS) in `data`, the
    image _open_bug_image built."""
    lay = Layout(bytes(data))
    if bug == "ascii_flag":                 # a non-ASCII STR block flagged ASCII
        _, v = _entry_cells(data, lay, "u")
        struct.pack_into("<Q", data, _u64(data, v + 8) + 24, 1)
    elif bug == "bad_utf8":                 # a byte of a non-ASCII STR block that is not UTF-8
        _, v = _entry_cells(data, lay, "u")
        data[_u64(data, v + 8) + 32 + 1] = 0xFF
    elif bug == "container_key":            # a key cell that refers to a list
        k, _ = _entry_cells(data, lay, "s")
        _, v = _entry_cells(data, lay, "l")
        data[k:k + 16] = data[v:v + 16]
    elif bug == "tuple_key_unchecked":      # a key tuple's encoding: an item's tag set to a dict's
        lo, hi = lay.ktuples[0]
        data[lo] = T_DICT
    elif bug == "cell_kind_unchecked":      # a str cell turned into a bytes cell
        _, v = _entry_cells(data, lay, "u")
        data[v] = 9
    elif bug == "key_hash_unchecked":       # a byte of a key changed: its kept hash no longer fits
        k, _ = _entry_cells(data, lay, "k7")
        data[k + (4 if data[k] == T_PACKED else 2) + 1] = ord("x")
    elif bug == "poisoned_unchecked":       # the flag a failed repair sets
        struct.pack_into("<Q", data, H_FLAGS, _u64(data, H_FLAGS) | 1)
    elif bug == "named_not_dict":           # the names dict's entry of "named" refers to a list
        names = _u64(data, H_NAMES)
        nlay = Layout(bytes(data))
        t = _u64(data, names + 16)
        k, v = next((c, c + 16) for c, owner in nlay.cells if owner == t and data[c + 16] == T_DICT)
        _, lv = _entry_cells(data, lay, "l")
        data[v:v + 16] = data[lv:lv + 16]
    else:
        raise ValueError(bug)


def _open_bug_outcome(name, bug):
    """The driver of an open bug's test: [outcome, exceptions] of a child
    that opens the image."""
    image, cap = _open_bug_image(name + "-b", bug)
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        return list(_run_child(name, image, cap, r, w)[:2])
    finally:
        os.close(r)
        os.close(w)


def _table_count_write(name):
    """The driver of the table_count test: a dict whose table is full, its
    count set to 1 (below the live entries), then one insert, which builds
    a bigger table. check()'s problems before and after the insert."""
    seg = dshared.Segment(name, 4 << 20, create=True)
    try:
        root = seg.col()
        d = root._identity()[1]
        path = "/dev/shm/" + name
        i = 0
        while True:
            root["k%d" % i] = i
            i += 1
            with open(path, "rb") as f:
                f.seek(d + 16)
                t = _u64(f.read(8), 0)
                f.seek(t + 16)
                nslots, capacity, nentries, count = struct.unpack("<4Q", f.read(32))
            if nentries == capacity >= 500:
                break
        with open(path, "r+b") as f:
            f.seek(t + 40)
            f.write(struct.pack("<Q", 1))
        before = seg.check().problems
        try:
            root["one more"] = 1
            error = None
        except Exception as e:
            error = "%s: %s" % (type(e).__name__, e)
        return {"entries": nentries, "before": before, "error": error, "after": seg.check().problems}
    finally:
        seg.close()
        seg.unlink()


def _block_size_write(name):
    """The driver of the block_size test: a free block between live str
    blocks, its size grown over the next two, then a write of a value of
    its real size. What check() says before and after, and the values."""
    seg = dshared.Segment(name, 1 << 20, create=True)
    try:
        root = seg.col()
        root.update({"keep": 1})
        root["a"], root["b"], root["c"], root["e"] = "a" * 100, "b" * 100, "c" * 100, "e" * 100
        del root["a"]
        path = "/dev/shm/" + name
        with open(path, "rb") as f:
            lay = Layout(f.read(seg.stats()["top"]))
        sizes = {off: size for off, size, _ in lay.blocks}
        free = lay.free[0]
        b = free + sizes[free]
        grown = sizes[free] + sizes[b] + sizes[b + sizes[b]]
        with open(path, "r+b") as f:
            f.seek(free)
            f.write(struct.pack("<I", grown // 16))
        before = seg.check().problems
        try:
            root["d"] = "d" * 100
            error = None
        except Exception as e:
            error = "%s: %s" % (type(e).__name__, e)
        values = {}
        for k in "bce":
            try:
                values[k] = root[k]
            except Exception as e:
                values[k] = "%s: %s" % (type(e).__name__, e)
        return {"before": before, "error": error, "after": seg.check().problems, "values": values}
    finally:
        seg.close()
        seg.unlink()

