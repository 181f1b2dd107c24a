"""The key hash: SipHash-1-3 keyed by the segment's 128-bit secret seed, so
nobody who does not know the seed can choose keys that collide; and the
probe-length accounting that check() and stats() report.

The flood tests use keys that all collide under the hash dshared used
before (a wyhash-style multiply-mix, reimplemented below): its collision
families did not depend on the seed. No timing is measured: the probe
lengths of the tables show whether inserting them was linear."""
import os
import random
import struct
import sys

import pytest

import dshared
from dshared import _codec
from dshared._heap import probe_bound
from _corrupt import ENTRY_SIZE, H_SEED0, T_KEY_REF, Layout, index_bytes, slot_put
from _helpers import run_python

M64 = (1 << 64) - 1
N_FLOOD = 4000


# -- reference functions ------------------------------------------------------------

def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & M64


def siphash13(k0, k1, data):
    """SipHash-1-3 of data under the key k0 || k1 (as CPython's, PEP 456)."""
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rnd(v0, v1, v2, v3):
        v0 = (v0 + v1) & M64; v1 = _rotl(v1, 13) ^ v0; v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & M64; v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & M64; v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & M64; v1 = _rotl(v1, 17) ^ v2; v2 = _rotl(v2, 32)
        return v0, v1, v2, v3

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
        v0 ^= m
    b = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= b
    v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


P0, P1, P2 = 0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3


def _mum(a, b):
    r = a * b
    return (r ^ (r >> 64)) & M64


def old_hash(k0, k1, ctag, p):
    """The key hash of format version 2, for building its collision families."""
    k0 ^= (ctag * 0x9E3779B97F4A7C15) & M64
    n = len(p)
    ld32 = lambda at: int.from_bytes(p[at:at + 4], "little")
    ld64 = lambda at: int.from_bytes(p[at:at + 8], "little")
    seed = k0 ^ _mum(k1 ^ P0, n ^ P1)
    if n <= 16:
        if n >= 4:
            a = (ld32(0) << 32) | ld32((n >> 3) << 2)
            b = (ld32(n - 4) << 32) | ld32(n - 4 - ((n >> 3) << 2))
        elif n > 0:
            a, b = (p[0] << 16) | (p[n >> 1] << 8) | p[n - 1], 0
        else:
            a = b = 0
    else:
        at, i = 0, n
        while i > 16:
            seed = _mum(ld64(at) ^ P1, ld64(at + 8) ^ seed)
            at += 16
            i -= 16
        a, b = ld64(at + i - 16), ld64(at + i - 8)
    return _mum(P2 ^ n, _mum(a ^ P1, b ^ seed))


# -- the old hash's collision families ----------------------------------------------

P1_LE = P1.to_bytes(8, "little")
P1_HI, P1_LO = (P1 >> 32).to_bytes(4, "little"), (P1 & 0xFFFFFFFF).to_bytes(4, "little")


def _u32(i):
    return (i & 0xFFFFFFFF).to_bytes(4, "little")


def _family(name, n=N_FLOOD):
    """n distinct keys whose old hash is 0 whatever the seed."""
    rng = random.Random(name)
    if name == "bytes16":           # bytes 0-3 and 8-11 make a == P1
        return [P1_HI + _u32(i) + P1_LO + _u32(rng.getrandbits(32)) for i in range(n)]
    if name == "bytes10to16":       # lengths 8-15 read a from bytes 0-7
        out = []
        for i in range(n):
            ln, j = 10 + i % 7, i // 7
            if ln == 16:
                out.append(P1_HI + _u32(j) + P1_LO + _u32(rng.getrandbits(32)))
            else:
                out.append(P1_HI + P1_LO + j.to_bytes(ln - 8, "little"))
        return out
    if name == "bytes40":           # longer: bytes n-16 .. n-9 are P1
        return [os.urandom(8) + _u32(i) + bytes(12) + P1_LE + os.urandom(8) for i in range(n)]
    if name == "bigint":            # int keys beyond int64: the same, in their bytes
        return [int.from_bytes(_u32(i) + _u32(rng.getrandbits(32)) + P1_LE
                               + _u32(rng.getrandbits(32)) + bytes([1, 2, 3, 0x40]), "little")
                for i in range(n)]
    if name == "tuple":             # a tuple key's canonical form, ending like the above
        return [("user", i % 7, os.urandom(4) + _u32(i) + P1_LE + os.urandom(8)) for i in range(n)]
    raise AssertionError(name)


FAMILIES = ["bytes16", "bytes10to16", "bytes40", "bigint", "tuple"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_old_hash_collision_families_collide_for_every_seed(segment, family):
    """The test data is what it claims: under the old hash every key of each
    family hashes alike, for any seed."""
    keys = _family(family, 200)
    assert len(set(keys)) == len(keys)
    forms = [_codec._key_form(segment, k) for k in keys]
    for _ in range(3):
        k0, k1 = random.getrandbits(64), random.getrandbits(64)
        assert {old_hash(k0, k1, tag, data) for tag, data, _ in forms} == {0}


@pytest.mark.parametrize("family", FAMILIES)
def test_keys_colliding_under_the_old_hash_insert_with_short_probes(segment, family):
    """4,000 keys that all collided whatever the seed (inserting them was
    quadratic: the n-th took n probes) now take as few probes as random
    keys: the longest probe of the table stays far below probe_bound()."""
    keys = _family(family)
    root = segment.col()
    root["flood"] = {}
    d = root["flood"]
    for i, k in enumerate(keys):
        d[k] = i
    assert len(d) == N_FLOOD
    st = segment.stats(probes=True)
    rep = segment.check()
    assert rep.ok, rep.problems
    assert rep.warnings == [] and st["long_chains"] == 0, rep.warnings
    # 4,000 random keys: longest probe ~10-40, mean ~1.4 (the old hash: 3,999 and ~2,000)
    assert st["max_probe"] == rep.max_probe < 150, st
    assert st["mean_probe"] < 4, st
    assert sum(st["probe_histogram"].values()) == N_FLOOD + 1      # and the root's "flood"
    assert all(d[k] == i for i, k in enumerate(keys))
    assert all(k not in d for k in _family(family, N_FLOOD + 50)[N_FLOOD:])


def test_the_key_hash_is_siphash13_of_the_canonical_form_keyed_by_the_seed(segment, shm_name):
    """hash = SipHash-1-3(seed, canonical bytes + canonical tag), its low 32
    bits, the seed being the header's 128 bits; checked against CPython's own SipHash-1-3
    (hash() of bytes under PYTHONHASHSEED=0, whose key is zero: the values
    CPython 3.11+ gives, written out, since Python 3.9 and 3.10 hash with
    SipHash-2-4)."""
    samples = [b"a", b"abcdefg", b"abcdefgh", b"x" * 23, bytes(range(40))]
    cpython = [4644417185603328019, 7904145750247929094, 4574395652268504554, 8690035849599637275,
               -7657190176164314618]
    expect = [h - (1 << 64) if h >= 1 << 63 else h for h in (siphash13(0, 0, b) for b in samples)]
    assert expect == cpython
    if sys.hash_info.algorithm == "siphash13":
        out = run_python("print([hash(b) for b in %r])" % (samples,), env={"PYTHONHASHSEED": "0"}).stdout
        assert eval(out) == cpython

    with open("/dev/shm/" + shm_name, "rb") as f:
        k0, k1 = struct.unpack_from("<QQ", f.read(H_SEED0 + 16), H_SEED0)
    assert k0 and k1
    keys = ["", "a", "abcdefg", "abcdefgh", "key-0123456789ab", "é" * 7, "\ud800", "x" * 100,
            b"", b"\x00", b"1234567", b"12345678", b"z" * 17, 0, 1, -1, 2 ** 63 - 1, -2 ** 63,
            2 ** 63, -2 ** 63 - 1, 3 ** 90, 1.5, -0.0, float("inf"), 1e300, None, True, False,
            (), (1,), ("a", b"b", 2.5, None, (3,)), (2 ** 70,)]
    keys += [bytes(range(1, n + 1)) for n in range(41)] + ["abcdefghij"[:n % 10] * (n // 10 + 1) for n in range(41)]
    for k in keys:
        tag, data, h = _codec._key_form(segment, k)
        assert h == siphash13(k0, k1, data + bytes([tag])) & 0xFFFFFFFF, k     # cut to 32 bits
    # keys Python calls equal have one form, so one hash
    for group in ([1, 1.0, True], [0, -0.0, 0.0, False], [2 ** 70, 2.0 ** 70], [(1, 0), (True, -0.0)]):
        assert len({_codec._key_form(segment, k) for k in group}) == 1, group
    assert _codec._key_form(segment, "ab")[2] != _codec._key_form(segment, b"ab")[2]


def test_hashes_depend_on_the_seed(shm_name):
    """Two segments give unrelated hashes for the same key: no key of any
    type (the old hash's collision families included) hashes alike in both,
    and the slots of a 1024-slot table agree no more often than chance."""
    keys = (["k%07d" % i for i in range(200)] + list(range(-100, 100)) + [i / 7 for i in range(100)]
            + [2 ** 64 + i for i in range(50)] + [os.urandom(i % 40) + b"." for i in range(100)]
            + [("t", i) for i in range(50)] + [None, True, 2.0 ** 80]
            + [k for f in FAMILIES for k in _family(f, 20)])
    keys = list(dict.fromkeys(keys))        # one of each key Python calls equal
    segs = [dshared.Segment(shm_name + "-" + s, 1 << 20, create=True) for s in "ab"]
    try:
        ha, hb = ([_codec._key_form(s, k)[2] for k in keys] for s in segs)
    finally:
        for s in segs:
            s.close()
            s.unlink()
    assert len(set(ha)) == len(set(hb)) == len(keys)
    assert all(a != b for a, b in zip(ha, hb))
    same_slot = sum((a & 1023) == (b & 1023) for a, b in zip(ha, hb))
    assert same_slot < 12, same_slot        # ~0.9 expected of 900; 12 or more: p < 1e-9


def test_a_long_probe_chain_is_reported_by_check_and_stats(segment, shm_name):
    """A table where 600 keys share one hash (forged in the image: nobody can
    choose such keys without the seed) gives a check() warning, not a
    problem, and shows in stats(probes=True)."""
    root = segment.col()
    # keys of more than 14 bytes live in blocks: their cells carry the hash
    root["d"] = {"a key in a block %05d" % i: i for i in range(600)}
    rep = segment.check()
    assert rep.ok and not rep.warnings and rep.max_probe < 64, rep
    path = "/dev/shm/" + shm_name
    with open(path, "r+b") as f:
        image = bytearray(f.read(segment.stats()["top"]))
        lay = Layout(bytes(image))
        off, nslots, index_at = max(lay.tables, key=lambda t: t[1])
        nent = struct.unpack_from("<Q", image, off + 16 + 16)[0]
        assert nent == 600 and nslots == 1024
        ents = index_at + index_bytes(nslots)
        h = 0x89ABCDEF
        index = [-1] * nslots
        for ix in range(nent):
            assert image[ents + ENTRY_SIZE * ix] in T_KEY_REF
            struct.pack_into("<I", image, ents + ENTRY_SIZE * ix + 4, h)
            i, perturb = h & (nslots - 1), h
            while index[i] >= 0:
                perturb >>= 5
                i = (i * 5 + perturb + 1) & (nslots - 1)
            index[i] = ix
        for i, ix in enumerate(index):
            slot_put(image, index_at, nslots, i, ix)
        f.seek(off)
        f.write(image[off:ents + ENTRY_SIZE * nent])
    rep = segment.check()
    assert not any("probe" in p for p in rep.problems), rep.problems
    assert rep.max_probe >= 599
    assert len(rep.warnings) == 1 and "table at %d" % off in rep.warnings[0], rep.warnings
    assert rep.max_probe > probe_bound(nslots) == 64 + 16 * 10
    st = segment.stats(probes=True)
    assert st["max_probe"] == rep.max_probe and st["long_chains"] == 1 and st["tables"] == 2
    assert st["mean_probe"] > 250


def test_stats_without_probes_is_unchanged_and_with_probes_counts_every_table(segment):
    root = segment.col()
    assert "max_probe" not in segment.stats()
    st = segment.stats(probes=True)
    assert (st["tables"], st["max_probe"], st["probe_histogram"], st["long_chains"]) == (0, 0, {}, 0)
    root["a"] = {"x": 1, "y": [{"z": 2}]}
    segment.col("named")["n"] = 1
    st = segment.stats(probes=True)
    # the tables of root, a, a["y"][0], the dict of names and "named"; one probe length per key
    assert st["tables"] == 5 and sum(st["probe_histogram"].values()) == 6, st
    assert segment.check().max_probe == st["max_probe"]


# -- the hash kept in the entry ----------------------------------------------------

def _every_key_kind():
    """Keys of every kind and every length around the room an entry keeps
    for its hash: scalars (b[4:8]), short str and bytes of up to 10 bytes
    (b[12:16]) and of 11 to 14 (no room: hashed again), keys in blocks, and
    the equal-but-different forms Python folds (True is 1, 2.0 is 2)."""
    keys = [0, 1, -1, 2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 70, 3 ** 90, 1.5, -2.25, float("inf"),
            float("-inf"), 2.0 ** 70, None, (), (1,), ("a", b"b", 2.5, None, (3,)), (2 ** 70,)]
    for n in range(0, 20):
        keys += ["s" * n + "%d" % n, "\u00e9" * (n // 2) + "u%d" % n, b"b" * n + b"%d" % n]
    return keys


def _values_for(key):
    """Values that make a str key's pair packed with room for the hash (<= 24
    bytes in all), packed without room (25-28), and not packed."""
    if isinstance(key, str):
        n = len(key.encode("utf-8", "surrogatepass"))
        return ["v" * max(0, 24 - n), "w" * max(0, 26 - n), "x" * 40, 7, b"y" * max(0, 28 - n)]
    return ["v", 7, "x" * 40]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_keys_of_every_kind_stay_found_through_rebuilds_churn_and_rewrites(segment, seed):
    """Entries keep their key's hash where the key leaves room, or have it
    computed again: either way a table rebuilt by growth, by a batch, or
    after many deletes places every key where a lookup of it probes, and a
    rewrite of the value (packed pairs unpacked and packed again) keeps it.
    Checked against a dict after each phase."""
    rng = random.Random(seed)
    keys = _every_key_kind()
    rng.shuffle(keys)
    model = {}
    d = segment.col()
    d["t"] = {}
    t = d["t"]

    def same():
        assert t.to_python() == model
        for k in model:
            assert k in t and t[k] == model[k] and t.get(k) == model[k], k
        assert 1.25 not in t and "absent" not in t and b"absent" not in t and ("absent",) not in t
        assert segment.check().ok, segment.check().problems

    for k in keys:                              # grown one key at a time
        model[k] = t[k] = _values_for(k)[0]
    same()
    for i, k in enumerate(keys):                # every value rewritten, twice
        for v in _values_for(k)[1:] + _values_for(k)[:1]:
            if rng.random() < 0.5:
                model[k] = t[k] = v
    same()
    for _ in range(8):                          # churn: a table full of deleted entries is rebuilt
        for k in rng.sample(list(model), len(model) // 2):
            del model[k]
            del t[k]
        for k in keys:
            if k not in model:
                model[k] = t[k] = rng.choice(_values_for(k))
        same()
    batch = {k: rng.choice(_values_for(k)) for k in keys}
    t.update(batch)                             # a batch: a new table, built in one go
    model.update(batch)
    same()
    try:
        with segment.transaction():             # rolled back: the undo restores slots and entries
            for k in keys[: len(keys) // 2]:
                del t[k]
            for k in keys[: len(keys) // 4]:
                t[k] = "again"
            raise KeyError("roll back")
    except KeyError:
        pass
    same()
