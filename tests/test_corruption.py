"""Bad bytes never crash a reader: a corrupt segment gives clean exceptions
(CorruptSegmentError, KeyError, ...), never a signal, a hang or a runaway
allocation. Each mutated image is opened in a forked child."""
import os
import random
import signal
import struct
import time

import pytest

import dshared

SEED = int(os.environ.get("DSHARED_CORRUPTION_SEED", "20261124"))
N_IMAGES = 12
N_MUTATIONS = 40
WRITES = os.environ.get("DSHARED_CORRUPTION_WRITES", "1") == "1"
HEADER = 4096


def _build(seg):
    root = seg.col()
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


def _mutations(rng, image, top):
    """Yield (description, mutated image); mutations land in the header and
    the live heap [HEADER, top)."""
    size = top
    words = (size - HEADER) // 8
    specials = [0, 8, 16, size, size + 8, size - 8, 2 ** 63, 2 ** 64 - 1, 2 ** 32, 4096, 4097]
    for _ in range(N_MUTATIONS):
        data = bytearray(image)
        kind = rng.randrange(6)
        if kind == 0:                       # bit flips in the heap
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(HEADER, size)
                data[i] ^= 1 << rng.randrange(8)
            desc = "bit flips"
        elif kind == 1:                     # an 8-byte word set to a special value
            at = HEADER + 8 * rng.randrange(words)
            val = rng.choice(specials + [at])
            struct.pack_into("<Q", data, at, val)
            desc = "word at %d = %d" % (at, val)
        elif kind == 2:                     # a 4-byte field (sizes, index slots)
            at = HEADER + 4 * rng.randrange(words * 2)
            val = rng.choice([0, 1, 2, 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(2 ** 32)])
            struct.pack_into("<I", data, at, val)
            desc = "u32 at %d = %d" % (at, val)
        elif kind == 3:                     # a header field (past magic/version/layout)
            at = 48 + 8 * rng.randrange(30)
            struct.pack_into("<Q", data, at, rng.choice(specials))
            desc = "header word at %d" % at
        elif kind == 4:                     # a run of garbage
            at = rng.randrange(HEADER, size - 64)
            data[at:at + 64] = bytes(rng.randrange(256) for _ in range(64))
            desc = "garbage at %d" % at
        else:                               # a zeroed run
            at = rng.randrange(HEADER, size - 256)
            data[at:at + 256] = bytes(256)
            desc = "zeros at %d" % at
        yield desc, bytes(data)


CHILD_OK, CHILD_CLEAN, CHILD_DETECTED = 0, 3, 4


def _exercise(name):
    """In the child: every read path, then writes, over the (maybe corrupt)
    segment; each phase runs even if the one before raised. Returns whether
    anything noticed the corruption (a clean exception or check())."""
    seg = dshared.Segment(name, create=False)
    noticed = False
    try:
        noticed = not seg.check().ok
        root = seg.col()
        root.to_python()
        list(root.items())
        for k in list(root.keys()):
            v = root.get(k)
            if isinstance(v, (dshared.SharedDict, dshared.SharedList)):
                v.to_python()
                repr(v)
                len(v)
        for k in ("small", "list", "big", ("tuple", 1), "missing", "k005"):
            k in root
            root.get(k)
        seg.col("named").to_python()
        seg.stats()
    except Exception:
        noticed = True
    if WRITES:
        for write in (lambda r: r.__setitem__("new", {"fresh": ["value", 1]}),
                      lambda r: r.__setitem__("small", "overwritten"),
                      lambda r: r.pop("k005", None),
                      lambda r: r["list"].append("appended"),
                      lambda r: r["list"].insert(0, "first"),
                      lambda r: r.__delitem__("k006"),
                      lambda r: r.update({"u%d" % i: i for i in range(8)}),
                      lambda r: r.clear()):
            try:
                write(seg.col())
            except Exception:
                noticed = True
        try:
            seg.collect()
            seg.check()
        except Exception:
            noticed = True
    return not noticed


def _run_child(name, image):
    """Write the image as segment `name`, open it in a forked child; returns
    how the child ended."""
    path = "/dev/shm/" + name
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, image)
    finally:
        os.close(fd)
    try:
        pid = os.fork()
        if pid == 0:                        # pragma: no cover - the child
            code = CHILD_OK
            try:
                signal.alarm(5)
                if not _exercise(name):
                    code = CHILD_DETECTED
            except Exception:
                code = CHILD_CLEAN          # attaching refused it
            finally:
                os._exit(code)
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "hung"
            time.sleep(0.005)
        if os.WIFSIGNALED(status):
            return "signal %d" % os.WTERMSIG(status)
        return {CHILD_OK: "ok", CHILD_CLEAN: "clean error", CHILD_DETECTED: "noticed"}.get(os.WEXITSTATUS(status),
                                                                "exit %d" % os.WEXITSTATUS(status))
    finally:
        os.unlink(path)


def test_corrupt_segments_give_clean_errors(make_segment, shm_name, tmp_path):
    rng = random.Random(SEED)
    print("seed", SEED)
    outcomes = {}
    failures = []
    for img in range(N_IMAGES):
        seg = make_segment(1 << 20) if img == 0 else seg
        if img == 0:
            _build(seg)
        top = seg.stats()["top"]
        with open("/dev/shm/" + shm_name, "rb") as f:
            image = f.read()
        for desc, data in _mutations(rng, image, top):
            res = _run_child(shm_name + "-c", data)
            outcomes[res] = outcomes.get(res, 0) + 1
            if res not in ("ok", "clean error", "noticed"):
                saved = tmp_path / ("regression-%d.img" % len(failures))
                saved.write_bytes(data)
                failures.append("%s: %s (image saved as %s)" % (desc, res, saved))
        # the next round mutates a segment after more writes
        seg.col()["round%d" % img] = ["more", img, {"x": img}]
    print(outcomes)
    assert not failures, "\n".join(failures[:20])
    # the suite did something: many mutations were seen as corrupt
    assert outcomes.get("clean error", 0) + outcomes.get("noticed", 0) >= N_IMAGES * N_MUTATIONS // 4, outcomes
    assert sum(outcomes.values()) == N_IMAGES * N_MUTATIONS


def test_a_stale_generation_in_a_container_reference_is_caught(make_segment, shm_name):
    """A dict or list reference carries its block's generation, so a view is
    made without reading the block. A reference whose generation does not
    match is reported by check() and gives StaleReferenceError on use."""
    seg = make_segment(1 << 20)
    root = seg.col()
    root["d"] = {"k": "v"}
    root["l"] = [1, 2]
    assert seg.check().ok
    path = "/dev/shm/" + shm_name.lstrip("/")
    for key, tag in (("d", 12), ("l", 13)):
        off = root[key]._identity()[1]
        with open(path, "r+b") as f:
            image = f.read(seg.stats()["top"])
            hits = [i for i in range(HEADER, len(image) - 16, 8)
                    if image[i] == tag and image[i + 1:i + 4] == bytes(3)
                    and image[i + 8:i + 16] == struct.pack("<Q", off)]
            assert len(hits) == 1, hits
            gen = struct.unpack_from("<I", image, hits[0] + 4)[0]
            f.seek(hits[0] + 4)
            f.write(struct.pack("<I", gen ^ 0x5A5A))
        report = seg.check()
        assert not report.ok
        assert any("stale generation" in p for p in report.problems), report.problems
        with pytest.raises(dshared.StaleReferenceError):
            len(root[key])
        with open(path, "r+b") as f:        # put it back
            f.seek(hits[0] + 4)
            f.write(struct.pack("<I", gen))
        assert seg.check().ok
        assert len(root[key]) in (1, 2)
