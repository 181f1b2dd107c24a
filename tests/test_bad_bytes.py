"""Bad bytes, one family at a time: each test builds a good segment, damages
chosen bytes through an mmap of its /dev/shm file and reads it back.

* Lengths and sizes are bounded by the top of the heap, not the capacity: a
  block stretched to the end of the capacity allocates nothing and backs no
  page of /dev/shm (issue 11, item 2).
* No bytes make a Python object that breaks CPython's rules: a str flagged
  ASCII over non-ASCII bytes is refused wherever a str is read from (item 4).
* check() reads every key and value the way reads do: when it says ok, a full
  walk raises nothing (item 5).
* Damage surfaces as CorruptSegmentError only: bad UTF-8, a container in a
  key cell, a named collection that is not a dict (item 6).
"""
import mmap
import os
import random
import struct
import tracemalloc

import pytest

import dshared
from _corrupt import ENTRY_SIZE, TABLE_HDR, index_bytes
from _helpers import full_walk
from _proc import run_driver, test_seed

# the layout (dshared/_heap.pxd): header fields, block kinds, cell tags
HEADER = 4096
H_TOP, H_RESERVED, H_NAMES = 96, 112, 128
K_FREE, K_STR, K_BYTES, K_BIGINT, K_TUPLE = 0, 1, 2, 3, 4
T_INT, T_SSTR, T_STR, T_BYTES, T_TUPLE, T_DICT, T_PACKED = 4, 6, 8, 9, 11, 12, 15
E_ACUTE = "\u00e9"                  # 2 bytes of UTF-8


def _path(seg):
    return "/dev/shm/" + seg.name


def _u64(img, at):
    return struct.unpack_from("<Q", img, at)[0]


class Image:
    """The segment's file, mapped: read and patch bytes in place."""

    def __init__(self, seg):
        self._f = open(_path(seg), "r+b")
        self.top = None
        with mmap.mmap(self._f.fileno(), HEADER) as m:
            self.top = _u64(m, H_TOP)
        self.m = mmap.mmap(self._f.fileno(), self.top)

    def u64(self, at):
        return _u64(self.m, at)

    def put(self, at, data):
        self.m[at:at + len(data)] = data

    def put64(self, at, v):
        self.put(at, struct.pack("<Q", v))

    def find(self, data, start=HEADER):
        at = self.m.find(data, start)
        assert at >= 0, data
        return at

    def blocks(self, kind):
        """Offsets of the blocks of a kind, walking the tiling."""
        out = []
        off = HEADER
        while off < self.top:
            if self.m[off + 12] == kind:
                out.append(off)
            off += struct.unpack_from("<I", self.m, off)[0] * 16
        return out

    def entries(self, d):
        """(key cell at, value cell at) of each entry of the dict block d."""
        t = self.u64(d + 16)
        nslots, nent = self.u64(t + 16), self.u64(t + 32)
        ents = t + 16 + TABLE_HDR + index_bytes(nslots)
        return [(ents + ENTRY_SIZE * i, ents + ENTRY_SIZE * i + 16) for i in range(nent)]

    def close(self):
        self.m.close()
        self._f.close()


def _image(seg):
    return Image(seg)


def _shm_bytes(seg):
    return os.stat(_path(seg)).st_blocks * 512


def _raises_corrupt_without_allocating(seg, read):
    """read() raises CorruptSegmentError, allocating under 1 MiB and backing
    under 1 MiB of /dev/shm."""
    backed = _shm_bytes(seg)
    tracemalloc.start()
    try:
        with pytest.raises(dshared.CorruptSegmentError):
            read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grown = _shm_bytes(seg) - backed
    assert peak < 1 << 20, "one read allocated %d bytes" % peak
    assert grown < 1 << 20, "one read backed %d more bytes of /dev/shm" % grown


# -- item 2: lengths bounded by the top of the heap ------------------------------------------

CAP = 64 << 20


def _stretch(img, off):
    """Make the block at off reach the end of the capacity; returns its new size."""
    size = CAP - off
    img.put(off, struct.pack("<I", size // 16))
    return size


@pytest.mark.parametrize("kind", ["bytes", "str", "bigint", "tuple", "list", "table"])
def test_a_length_up_to_the_capacity_allocates_nothing(make_segment, kind):
    seg = make_segment(CAP)
    root = seg.col()
    root["v"] = {"bytes": b"b" * 100, "str": E_ACUTE * 60, "bigint": 7 ** 400, "tuple": (1, 2, 3),
                 "list": [1, 2, 3], "table": {}}[kind]
    if kind == "table":
        root["v"]["a"] = 1          # its table is the last block: zeros (empty entries) lie above it
    assert seg.check().ok
    img = _image(seg)
    try:
        if kind in ("bytes", "str", "bigint"):
            blocks = {"bytes": K_BYTES, "str": K_STR, "bigint": K_BIGINT}
            (off,) = img.blocks(blocks[kind])
            size = _stretch(img, off)
            hdr = 16 if kind == "str" else 8
            img.put64(off + 16, size - 16 - hdr)
            read = lambda: root["v"]
        elif kind == "tuple":
            (off,) = img.blocks(K_TUPLE)
            size = _stretch(img, off)
            img.put64(off + 16, (size - 24) // 16)
            read = lambda: root["v"]
        elif kind == "list":
            lst = root["v"]
            items = img.u64(lst._identity()[1] + 16)
            size = _stretch(img, items)
            img.put64(items + 16, (size - 24) // 16)
            img.put64(lst._identity()[1] + 24, (size - 24) // 16)
            read = lambda: len(lst)
        else:
            d = root["v"]
            t = img.u64(d._identity()[1] + 16)
            assert t + struct.unpack_from("<I", img.m, t)[0] * 16 == img.top
            size = _stretch(img, t)
            nslots = img.u64(t + 16)
            room = (size - 16 - TABLE_HDR - index_bytes(nslots)) // ENTRY_SIZE
            img.put64(t + 24, room)         # capacity
            img.put64(t + 32, room)         # entries, deleted ones included
            read = lambda: list(d)
    finally:
        img.close()
    _raises_corrupt_without_allocating(seg, read)
    assert not seg.check().ok


def test_a_header_top_above_the_backed_bytes_is_not_followed(make_segment):
    """The top itself is bounded by the backed (reserved) bytes: a top raised
    to the capacity does not let a stretched block through."""
    seg = make_segment(CAP)
    root = seg.col()
    root["v"] = b"b" * 100
    img = _image(seg)
    try:
        (off,) = img.blocks(K_BYTES)
        size = _stretch(img, off)
        img.put64(off + 16, size - 24)
        reserved = img.u64(H_RESERVED)
        img.put64(H_TOP, CAP)
    finally:
        img.close()
    assert reserved < CAP
    _raises_corrupt_without_allocating(seg, lambda: root["v"])
    assert not seg.check().ok


# -- item 4: no str whose ASCII flag lies ----------------------------------------------------

def _forge_str_block(seg, img):
    off = img.find((E_ACUTE * 20).encode()) - 32
    img.put64(off + 24, img.u64(off + 24) | 1)          # the flags word: ASCII


def _forge_list_item(seg, img):
    lst = seg.col()["v"]
    cell = img.u64(lst._identity()[1] + 16) + 24         # items block: header, capacity, cells
    assert img.m[cell] == T_SSTR
    img.put(cell + 1, bytes([img.m[cell + 1] | 0x80]))


def _forge_packed_value(seg, img):
    at = img.find(bytes([T_PACKED, 0x80 | 1, T_SSTR, 14]) + b"v")
    img.put(at + 3, bytes([14 | 0x80]))


def _forge_packed_key(seg, img):
    at = img.find(bytes([T_PACKED, 14, T_SSTR, 0x80 | 1]))
    img.put(at + 1, bytes([14 | 0x80]))


def _forge_key_cell(seg, img):
    at = img.find(bytes([T_SSTR, 14]) + (E_ACUTE * 7).encode())
    img.put(at + 1, bytes([14 | 0x80]))


FORGED = {
    # what is stored, how the flag is forged, how it is read
    "str block": ({"v": E_ACUTE * 20}, _forge_str_block, lambda r: r["v"]),
    "list item": ({"v": [E_ACUTE * 7]}, _forge_list_item, lambda r: r["v"][0]),
    "packed value": ({"v": E_ACUTE * 7}, _forge_packed_value, lambda r: r["v"]),
    "packed key": ({E_ACUTE * 7: "v"}, _forge_packed_key, lambda r: list(r)),
    "key cell": ({E_ACUTE * 7: 1}, _forge_key_cell, lambda r: list(r)),
}


@pytest.mark.parametrize("where", sorted(FORGED))
def test_an_ascii_flag_over_non_ascii_bytes_is_refused(make_segment, where):
    """Read back, a str flagged ASCII over the bytes of "é" * n would be a str
    of 2n characters whose isascii() is True: an object that breaks CPython
    (iterating over it can crash the interpreter). The read refuses it, and
    check() finds it."""
    value, forge, read = FORGED[where]
    seg = make_segment(1 << 20)
    root = seg.col()
    root.update(value)
    assert seg.check().ok
    img = _image(seg)
    try:
        forge(seg, img)
    finally:
        img.close()
    with pytest.raises(dshared.CorruptSegmentError):
        read(root)                  # the value is never shown: printing a forged str may crash
    with pytest.raises(dshared.CorruptSegmentError):
        root.to_python()
    report = seg.check()
    assert not report.ok
    assert any("ASCII" in p for p in report.problems), report.problems


def test_an_ascii_str_still_reads_back(make_segment):
    seg = make_segment(1 << 20)
    root = seg.col()
    values = {"": "", "a": "a", "s3": "abc", "s7": "abcdefg", "s8": "abcdefgh", "s14": "x" * 14,
              "s15": "y" * 15, "long": "z" * 1000, "mixed": "a" + E_ACUTE, "ktuple": ("abc", E_ACUTE)}
    root.update(values)
    root[("abc", "d" * 20)] = 1
    assert root.to_python() == {**values, ("abc", "d" * 20): 1}
    for v in root.values():
        if isinstance(v, str):
            assert v.isascii() == all(ord(c) < 128 for c in v)
    assert seg.check().ok
    full_walk(root)


# -- item 6: damage is CorruptSegmentError, nothing else -------------------------------------

def _bad_utf8_str_block(seg, img):
    at = img.find((E_ACUTE * 20).encode())
    img.put(at, b"\xff" * 40)


def _bad_utf8_inline(seg, img):
    lst = seg.col()["v"]
    cell = img.u64(lst._identity()[1] + 16) + 24
    img.put(cell + 2, b"\xc3\x28")                       # a lead byte without its continuation


def _bad_utf8_packed(seg, img):
    at = img.find(bytes([T_PACKED, 0x80 | 1, T_SSTR, 14]) + b"v")
    img.put(at + 5, b"\xed\xb0")                         # half a surrogate, then the rest


def _bad_utf8_tuple_key(seg, img):
    word = (E_ACUTE * 10).encode()
    first = img.find(word)
    typed = img.find(word, first + 1)                    # the typed copy, which reads return
    img.put(typed, b"\xff" * 20)


def _container_in_key_cell(seg, img):
    d = seg.col()["d"]._identity()[1]
    gen = struct.unpack_from("<I", img.m, d + 8)[0]
    at = img.find(struct.pack("<q", 12345678)) - 8       # the key cell: its hash in 4..7
    assert img.m[at:at + 4] == bytes([T_INT, 0, 0, 0])
    img.put(at, bytes([T_DICT, 0, 0, 0]) + struct.pack("<IQ", gen, d))


def _named_not_a_dict(seg, img):
    for key, value in img.entries(img.u64(H_NAMES)):
        if img.m[key] == T_SSTR and img.m[key + 2:key + 7] == b"named":
            img.put(value, bytes([T_INT]) + bytes(15))
            return
    raise AssertionError("no entry 'named'")


DAMAGED = {
    "bad utf-8 in a str block": ({"v": E_ACUTE * 20}, _bad_utf8_str_block, lambda s: s.col()["v"]),
    "bad utf-8 inline": ({"v": [E_ACUTE * 7]}, _bad_utf8_inline, lambda s: s.col()["v"][0]),
    "bad utf-8 packed": ({"v": E_ACUTE * 7}, _bad_utf8_packed, lambda s: s.col()["v"]),
    "bad utf-8 in a tuple key": ({(E_ACUTE * 10, 1): 1}, _bad_utf8_tuple_key, lambda s: list(s.col())),
    "container in a key cell": ({12345678: 1, "d": {"x": 1}}, _container_in_key_cell,
                                lambda s: s.col().to_python()),
    "named collection not a dict": ({}, _named_not_a_dict, lambda s: s.col("named")),
}


@pytest.mark.parametrize("what", sorted(DAMAGED))
def test_damage_raises_corrupt_segment_error_only(make_segment, what):
    value, damage, read = DAMAGED[what]
    seg = make_segment(1 << 20)
    seg.col().update(value)
    seg.col("named")
    assert seg.check().ok
    img = _image(seg)
    try:
        damage(seg, img)
    finally:
        img.close()
    with pytest.raises(dshared.CorruptSegmentError):
        read(seg)
    assert not seg.check().ok


def test_a_container_in_a_key_cell_is_not_handed_out_as_a_key(make_segment):
    seg = make_segment(1 << 20)
    root = seg.col()
    root.update({12345678: 1, "d": {"x": 1}})
    img = _image(seg)
    try:
        _container_in_key_cell(seg, img)
    finally:
        img.close()
    for read in (list, lambda r: list(r.items()), lambda r: r.popitem() and r.popitem(), repr, dict):
        with pytest.raises(dshared.CorruptSegmentError):
            read(root)


# -- item 5: check() ok means a full walk raises nothing ------------------------------------

def _ktuple_typed_tag(seg, img):
    at = img.find(b"tuple-key", img.find(b"tuple-key") + 1)   # the typed copy, which reads parse
    img.put(at - 9, b"\x63")                             # its str element's tag: 99


def _key_bytes_changed(seg, img):
    at = img.find(bytes([T_SSTR, 0x80 | 5]) + b"key-a")
    img.put(at + 6, b"b")                                # still hashed as "key-a"


def _value_cell_kind(seg, img):
    (s,) = img.blocks(K_STR)
    (b,) = img.blocks(K_BYTES)
    s_cell = img.find(bytes([T_STR]) + bytes(7) + struct.pack("<Q", s))
    b_cell = img.find(bytes([T_BYTES]) + bytes(7) + struct.pack("<Q", b))
    img.put64(s_cell + 8, b)                             # swapped: every refcount still holds
    img.put64(b_cell + 8, s)


def _tuple_nests_itself(seg, img):
    (t,) = img.blocks(K_TUPLE)
    img.put(t + 24, bytes([T_TUPLE]) + bytes(7) + struct.pack("<Q", t))    # its first cell
    img.put(t + 12, struct.pack("<I", K_TUPLE | 2 << 8))                    # two references now


CHECKED = {
    "malformed tuple key": ({("tuple-key", 1): 1}, _ktuple_typed_tag),
    "key not found by its own lookup": ({"key-a": 1, "other": 2}, _key_bytes_changed),
    "cell kind and block kind differ": ({"s": "s" * 40, "b": b"b" * 40}, _value_cell_kind),
    "tuple containing itself": ({"t": (1, 2)}, _tuple_nests_itself),
}


@pytest.mark.parametrize("what", sorted(CHECKED))
def test_check_finds_what_a_full_walk_trips_on(make_segment, what):
    value, damage = CHECKED[what]
    seg = make_segment(1 << 20)
    seg.col().update(value)
    assert seg.check().ok
    full_walk(seg.col())
    img = _image(seg)
    try:
        damage(seg, img)
    finally:
        img.close()
    with pytest.raises(dshared.DsharedError if what != "key not found by its own lookup" else KeyError):
        full_walk(seg.col())
    report = seg.check()
    assert not report.ok, "check() says ok, yet a full walk raises"


def test_full_walk_of_a_healthy_segment_raises_nothing(make_segment):
    seg = make_segment(1 << 20)
    root = seg.col()
    root.update({"s": "short", "long": "x" * 100, E_ACUTE: E_ACUTE * 30, b"k": b"v" * 30, 1: 2 ** 100,
                 2.5: float("nan"), float("nan"): 1, None: True, ("t", 1, (2.0, b"x")): (1, [2, {"z": 3}]),
                 "l": [1, "a", [2, [3]], {"d": None}], "e": {}, "el": []})
    root["l"].append(root["l"])                          # a cycle
    seg.col("named")["x"] = 1
    assert seg.check().ok
    full_walk(root)
    full_walk(seg.col("named"))


# the property, over random damage to cells, lengths and offsets: in a driver
# (a fresh interpreter), so that a crash fails this test and nothing else

FUZZ_IMAGES = 300


def _fuzz(name, seed, n):
    rng = random.Random(seed)
    seg = dshared.Segment(name, 1 << 20, create=True)
    bad = []
    clean = 0
    try:
        root = seg.col()
        root.update({"s": "short", "long": "x" * 40, E_ACUTE * 3: E_ACUTE * 20, b"k": b"v" * 30, 7: 2 ** 80,
                     ("t", 1, (2.5, b"x", E_ACUTE)): (1, [2, {"z": 3}]), "l": [1, "a" * 20, (E_ACUTE,), [2]],
                     "d": {i: "v%d" % i for i in range(6)}, 1.5: None})
        seg.col("named")["x"] = 1
        size = seg.stats()["top"]
        with open(_path(seg), "r+b") as f:
            good = f.read(size)
        for i in range(n):
            data = bytearray(good)
            at = rng.randrange(HEADER, size)
            op = rng.randrange(6)
            if op == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[at] = rng.choice([0x80, 0xff, 0xc3, 0xed, 1, 2, 4, 8, 11, 12, 13, 14, 15, 0x8e])
            elif op == 2:
                at &= ~7
                data[at:at + 8] = rng.choice([rng.randrange(2 ** 64), rng.randrange(size), 0, size, 2 ** 63,
                                              rng.randrange(1 << 20)]).to_bytes(8, "little")
            elif op == 3:
                data[at] |= 0x80
            else:                   # a cell copied over another
                at &= ~15
                src = rng.randrange(HEADER, size - 16) & ~15
                data[at:at + 16] = good[src:src + 16]
            with open(_path(seg), "r+b") as f:
                f.write(bytes(data[:size]))
            try:
                ok = seg.check().ok
            except Exception as e:
                bad.append("check raised %r at %d" % (e, at))
                continue
            if ok:
                clean += 1
                try:
                    full_walk(seg.col())
                except Exception as e:
                    bad.append("image %d (op %d at %d): check ok, walk raised %s: %s"
                               % (i, op, at, type(e).__name__, e))
            else:
                try:
                    full_walk(seg.col())
                except dshared.DsharedError:
                    pass
                except (KeyError, AssertionError):
                    pass            # a key its lookup does not find (check() said so)
                except Exception as e:
                    bad.append("image %d (op %d at %d): %s outside DsharedError: %s"
                               % (i, op, at, type(e).__name__, e))
    finally:
        seg.close()
        seg.unlink()
    return {"bad": bad, "clean": clean}


@pytest.mark.timeout(300)
def test_check_ok_implies_a_full_walk_raises_nothing(shm_name):
    seed = test_seed()
    r = run_driver("test_bad_bytes", "_fuzz", shm_name, seed, FUZZ_IMAGES, timeout=280)
    print("clean images: %d of %d" % (r["clean"], FUZZ_IMAGES))
    assert not r["bad"], "\n".join(r["bad"][:20])
    assert r["clean"] >= FUZZ_IMAGES // 20      # the property was exercised


@pytest.mark.parametrize("field,value", [("flags", 1), ("jcount", 1000), ("reserved", 1 << 40)])
def test_check_reports_a_header_that_reads_or_writes_refuse(make_segment, field, value):
    """A segment marked poisoned refuses every read and write; a header whose
    fields are out of range refuses every write. check() says so."""
    seg = make_segment(1 << 20)
    seg.col()["k"] = 1
    assert seg.check().ok
    img = _image(seg)
    try:
        img.put64({"flags": 80, "jcount": 1216, "reserved": H_RESERVED}[field], value)
    finally:
        img.close()
    with pytest.raises(dshared.CorruptSegmentError):
        seg.col()["k"] = 2
    assert not seg.check().ok


def test_a_table_of_capacity_0_is_corrupt(make_segment):
    """A table holds one entry at least (a 3-byte slot is read with a 4-byte
    load whose last byte is the first entry's or the index padding's): a
    header claiming room for no entry is bad sizes to check() and to every
    reader, which raise CorruptSegmentError."""
    seg = make_segment(1 << 20)
    root = seg.col()
    root["d"] = {"k%d" % i: i for i in range(13)}         # 16 slots: a 48-byte index, no padding
    d = root["d"]
    img = _image(seg)
    try:
        t = img.u64(d._identity()[1] + 16)
        assert img.u64(t + 16) == 16
        for field in (8, 16, 24):                           # capacity, nentries, count
            img.put64(t + 16 + field, 0)
    finally:
        img.close()
    _raises_corrupt_without_allocating(seg, lambda: d["k1"])
    assert any("inconsistent sizes" in p for p in seg.check().problems)
