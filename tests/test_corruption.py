"""Bad bytes never crash a reader: a corrupt segment gives clean exceptions
(DsharedError, or the plain KeyError and IndexError of dict and list),
never a signal, a hang, a runaway allocation or any other exception.

RELIABILITY.md's corruption suite: 50 segments x 400 mutations (the `slow`
test; the default run does 4 x 50 of the same). Each image is built with
dshared, mutated (random bit flips, words and runs; offsets set to 0, the
size, size + 8, 2^63, the block itself; cyclic free lists; tables whose
index has no empty slot; zeroed headers; lengths, counts and block headers
set to absurd values; byte ranges and a whole header copied from another
live segment, swapped ranges, ranges shifted by 16 bytes, zero and 0xFF
pages; ASCII flags that lie, bytes that are not UTF-8, key tuple encodings)
and opened in a forked child that attaches, runs check() and, if check()
says ok, a full walk (every key, value, nested container, iteration,
to_python()) that must raise nothing; then walks every container again,
gets, sets and deletes, under a 2 s alarm and a 256 MiB address-space
limit. Anything else than a clean exception (a signal, the alarm,
MemoryError, TypeError, UnicodeDecodeError, ...) or a walk that raises
after check() said ok is a failure, and its image is saved as a regression
file (gzip); images kept in tests/corruption_images/ are replayed by every
run.

Runs in a driver process (forking from pytest is unsafe), which forks one
worker per CPU (at least 2); the workers take the images from a queue and
fork the children. The seed is printed; DSHARED_TEST_SEED=n replays a run.

Meta-test: with DSHARED_TEST_NO_BOUNDS=1 (the checked accessors go on with
the offset that failed their check) some child dies by a signal; on the same
images without it none does.

Core bugs the suite found are regression tests at the end of this file.
A newly found one goes into _corrupt.OPEN_BUGS with a strict xfail test
until it is fixed.
"""
import os
import struct
import time

import pytest

import dshared
import _corrupt
from _corrupt import (GOOD, H_SEQ, HEADER, IMAGES_DIR, N_IMAGES, N_MUTATIONS, OPEN_BUGS, QUICK_IMAGES,
                      QUICK_MUTATIONS, REGRESSIONS, report)
from _proc import run_driver, test_seed


def _corrupt_segments(shm_name, tmp_path, n_images, n_mutations, timeout):
    seed = test_seed()
    r = run_driver("_corrupt", "_drive", shm_name, seed, n_images, n_mutations, str(tmp_path), timeout=timeout)
    report(r)
    print("images per worker: %s" % r["workers"])
    assert not r["failures"], ("%d children failed (copy a saved image into tests/corruption_images/ to keep "
                               "it as a regression test):\n%s" % (len(r["failures"]), "\n".join(r["failures"][:30])))
    assert r["children"] == n_images * n_mutations
    # the suite did something: most mutations changed the image, many were
    # seen as corrupt, attaching refused some, and check() reported some
    assert r["unchanged"] < r["children"] // 20, r
    assert r["outcomes"].get("noticed", 0) >= r["children"] // 3, r["outcomes"]
    assert r["outcomes"].get("refused", 0) >= r["children"] // 400, r["outcomes"]
    assert r["types"].get("check", 0) >= r["children"] // 4, r["types"]
    assert r["types"].get("CorruptSegmentError", 0) >= r["children"] // 4, r["types"]


@pytest.mark.timeout(280)
def test_corrupt_segments_give_clean_errors(shm_name, tmp_path):
    """The default run's scale: QUICK_IMAGES x QUICK_MUTATIONS."""
    _corrupt_segments(shm_name, tmp_path, QUICK_IMAGES, QUICK_MUTATIONS, timeout=270)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_corrupt_segments_give_clean_errors_at_full_scale(shm_name, tmp_path):
    """RELIABILITY.md's scale: 50 segments x 400 mutations (pytest -m slow)."""
    _corrupt_segments(shm_name, tmp_path, N_IMAGES, N_MUTATIONS, timeout=1780)


META_IMAGES = 2
META_MUTATIONS = 60


@pytest.mark.timeout(300)
def test_meta_corruption_without_bounds_checks_dies_by_a_signal(shm_name, tmp_path):
    """The bounds checks are what keeps the children alive: with
    DSHARED_TEST_NO_BOUNDS=1 the checked accessors go on with the offset
    that failed, and some child dies by a signal; the same images without
    the hook give no signal."""
    seed = test_seed()
    off_dir = tmp_path / "no-bounds"
    off_dir.mkdir()
    on_dir = tmp_path / "bounds"
    on_dir.mkdir()
    off = run_driver("_corrupt", "_drive", shm_name, seed, META_IMAGES, META_MUTATIONS, str(off_dir),
                     timeout=280, env={"DSHARED_TEST_NO_BOUNDS": "1"})
    report(off)
    on = run_driver("_corrupt", "_drive", shm_name, seed, META_IMAGES, META_MUTATIONS, str(on_dir),
                    timeout=280)
    report(on)
    signals = {k: v for k, v in off["outcomes"].items() if k.startswith("signal SIG")}
    assert sum(v for k, v in signals.items() if k in ("signal SIGSEGV", "signal SIGBUS")) >= 1, off["outcomes"]
    assert not any(k.startswith("signal") for k in on["outcomes"]), on["outcomes"]
    assert not on["failures"], on["failures"]


@pytest.mark.timeout(120)
def test_saved_regression_images_give_clean_errors(shm_name):
    """Every image kept in tests/corruption_images/ (found by an earlier run,
    or made for a targeted case) opens in a child without a failure."""
    assert REGRESSIONS, "no regression images in %s" % IMAGES_DIR
    res = run_driver("_corrupt", "_replay_all", shm_name, REGRESSIONS, timeout=100)
    print(res)
    bad = {k: v for k, v in res.items() if v[0] not in GOOD}
    assert not bad, bad


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


# -- core bugs the suite found, fixed: one image each, kept as regression tests

def _open_bug(shm_name, bug):
    outcome, types = run_driver("_corrupt", "_open_bug_outcome", shm_name, bug, timeout=60)
    print(outcome, types)
    return outcome


def test_check_survives_an_offset_of_2_64_minus_16(shm_name):
    outcome = _open_bug(shm_name, "valid_ref_wraps")
    assert outcome in GOOD, outcome


def test_a_write_survives_a_nonzero_journal_count(shm_name):
    outcome = _open_bug(shm_name, "journal_count")
    assert outcome in GOOD, outcome


def test_a_zeroed_mutex_never_deadlocks_its_own_thread(shm_name):
    outcome = _open_bug(shm_name, "zeroed_mutex")
    assert outcome in GOOD, outcome


# -- core bugs the suite found (issue 11, items 4-6 and a release out of bounds): one image each

def test_a_str_flagged_ascii_over_non_ascii_bytes_is_refused(shm_name):
    outcome = _open_bug(shm_name, "ascii_flag")
    assert outcome in GOOD, outcome


def test_a_str_block_that_is_not_utf8_gives_corrupt_segment_error(shm_name):
    outcome = _open_bug(shm_name, "bad_utf8")
    assert outcome in GOOD, outcome


def test_a_container_in_a_key_cell_gives_corrupt_segment_error(shm_name):
    outcome = _open_bug(shm_name, "container_key")
    assert outcome in GOOD, outcome


def test_a_named_collection_that_is_not_a_dict_gives_corrupt_segment_error(shm_name):
    outcome = _open_bug(shm_name, "named_not_dict")
    assert outcome in GOOD, outcome


def test_check_sees_a_malformed_tuple_key(shm_name):
    outcome = _open_bug(shm_name, "tuple_key_unchecked")
    assert outcome in GOOD, outcome


def test_check_sees_a_cell_whose_tag_is_not_its_blocks_kind(shm_name):
    outcome = _open_bug(shm_name, "cell_kind_unchecked")
    assert outcome in GOOD, outcome


def test_check_sees_a_key_whose_stored_hash_does_not_fit(shm_name):
    outcome = _open_bug(shm_name, "key_hash_unchecked")
    assert outcome in GOOD, outcome


def test_releasing_a_block_whose_bytes_were_swapped_stays_in_bounds(shm_name):
    path = os.path.join(IMAGES_DIR, "release-pushes-children-of-a-swapped-block.img.gz")
    res = run_driver("_corrupt", "_replay_all", shm_name, [path], timeout=60)
    print(res)
    assert all(v[0] in GOOD for v in res.values()), res


def test_check_reports_a_poisoned_segment(shm_name):
    outcome = _open_bug(shm_name, "poisoned_unchecked")
    assert outcome in GOOD, outcome


def test_a_stuck_odd_sequence_does_not_slow_every_read(make_segment, shm_name):
    seg = make_segment(1 << 20)
    root = seg.col()
    root.update({"k%d" % i: i for i in range(100)})
    t0 = time.monotonic()
    for _ in range(1000):
        root["k5"]
    normal = time.monotonic() - t0
    with open("/dev/shm/" + shm_name, "r+b") as f:
        f.seek(H_SEQ)
        seq = struct.unpack("<Q", f.read(8))[0]
        f.seek(H_SEQ)
        f.write(struct.pack("<Q", seq | 1))
    assert any("odd" in p for p in seg.check().problems)
    root["x"] = 1                               # a write does not set it right
    t0 = time.monotonic()
    for _ in range(1000):
        root["k5"]
    odd = time.monotonic() - t0
    print("1000 gets: %.4f s, with the sequence odd %.4f s" % (normal, odd))
    assert odd < 0.5, "1000 gets took %.2f s with the write sequence odd" % odd


def test_growing_a_table_whose_count_is_too_low_stays_in_bounds(shm_name):
    r = run_driver("_corrupt", "_table_count_write", shm_name, timeout=60)
    print(r)
    assert len(r["before"]) == 1 and "counts 1 entries" in r["before"][0], r["before"]
    # the insert is refused, or made, without damage beyond the bad count
    assert r["after"] in ([], r["before"]) or all("count" in p for p in r["after"]), r["after"][:3]


def test_a_free_block_whose_size_grew_is_not_handed_out_over_live_blocks(shm_name):
    r = run_driver("_corrupt", "_block_size_write", shm_name, timeout=60)
    print(r)
    assert any("prev size" in p for p in r["before"]), r["before"]
    # the write is refused, or it leaves the live values alone
    assert r["error"] or r["values"] == {"b": "b" * 100, "c": "c" * 100, "e": "e" * 100}, r



def test_the_header_offsets_of_the_test_tools_match_the_build(make_segment, shm_name):
    """tests/_corrupt.py names header fields by offset: a field added to the
    Header moves them, and the suites that poke or watch the header (this
    one, the kill harness's lock word) would silently look elsewhere."""
    import struct
    import threading
    seg = make_segment(1 << 20)
    seg.col()["k"] = "v" * 100
    st = seg.stats()
    fd = os.open("/dev/shm/" + shm_name, os.O_RDONLY)
    try:
        q = lambda at: struct.unpack("<Q", os.pread(fd, 8, at))[0]       # noqa: E731
        assert (q(_corrupt.H_TOP), q(_corrupt.H_USED), q(_corrupt.H_JCOUNT)) == (st["top"], st["used"], 0)
        assert q(_corrupt.H_JBLOCKS) == 0 and q(_corrupt.H_SEQ) == st["seq"]
        with seg.lock():
            word = struct.unpack("<I", os.pread(fd, 4, _corrupt.H_MUTEX))[0]
        assert word & 0x3FFFFFFF == threading.get_native_id()
        seg.col().version()                     # creates the wait area
        assert q(_corrupt.H_WAITS) != 0
    finally:
        os.close(fd)
