"""Nobody else gets in (RELIABILITY.md, security): segments are created 0600
whatever the umask; attaching refuses what is not a regular file, another
user's segment and a segment open to others unless allow_unsafe=True; a
segment made on another platform or by another format version is refused
and left as it was; dshared never imports pickle.

Bad names and absurd sizes are in test_foundation.py."""
import os
import stat
import struct
import textwrap

import pytest

import dshared
from _proc import Popen

SHM = "/dev/shm/"
H_VERSION, H_LAYOUT, H_MUTEX_SIZE = 8, 16, 48


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o777])
def test_created_0600_under_any_umask(shm_name, umask):
    old = os.umask(umask)
    try:
        seg = dshared.Segment(shm_name, create=True)
    finally:
        os.umask(old)
    try:
        st = os.stat(SHM + shm_name)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()
        # and the creator can use it, even under umask 777
        seg.col()["k"] = "v"
        with dshared.Segment(shm_name, create=False) as other:
            assert other.col()["k"] == "v"
    finally:
        seg.close()
        seg.unlink()


@pytest.fixture
def made(shm_name):
    """A small segment holding {'k': 'v'}, closed; unlinked after the test."""
    with dshared.Segment(shm_name, 1 << 20, create=True) as seg:
        seg.col()["k"] = "v"
    yield shm_name
    try:
        os.unlink(SHM + shm_name)
    except FileNotFoundError:
        pass


def _need_root():
    # fails, never skips: a skipped reliability test fails CI
    assert os.geteuid() == 0, "chown to another uid needs root (uid %d)" % os.geteuid()


def test_another_users_segment_is_refused_unless_allowed(made):
    _need_root()
    os.chown(SHM + made, 65534, -1)
    with pytest.raises(PermissionError, match="owned by uid 65534"):
        dshared.Segment(made, create=False)
    with pytest.raises(PermissionError, match="owned by uid 65534"):
        dshared.Segment(made)               # create-or-attach: attaches, so refused too
    with pytest.raises(PermissionError, match="owned by uid 65534"):
        dshared.attach(made)
    with dshared.Segment(made, create=False, allow_unsafe=True) as seg:
        assert seg.col()["k"] == "v"
    # another group is fine: the mode already keeps the group out
    os.chown(SHM + made, os.geteuid(), 65534)
    with dshared.Segment(made, create=False) as seg:
        assert seg.col()["k"] == "v"


@pytest.mark.parametrize("mode", [0o666, 0o660, 0o640, 0o606, 0o604, 0o610, 0o601, 0o700 | 0o020])
def test_a_segment_open_to_others_is_refused_unless_allowed(made, mode):
    os.chmod(SHM + made, mode)
    with pytest.raises(PermissionError, match="mode %o, open to other users" % mode):
        dshared.Segment(made, create=False)
    with dshared.Segment(made, create=False, allow_unsafe=True) as seg:
        assert seg.col()["k"] == "v"
    assert stat.S_IMODE(os.stat(SHM + made).st_mode) == mode      # attaching changed nothing


def test_owner_only_modes_are_accepted(made):
    for mode in (0o600, 0o700, 0o400):
        os.chmod(SHM + made, mode)
        with dshared.Segment(made, create=False) as seg:
            assert seg.col()["k"] == "v"


def test_a_fifo_is_not_a_segment(shm_name):
    os.mkfifo(SHM + shm_name, 0o600)
    try:
        with pytest.raises(dshared.CorruptSegmentError, match="not a regular"):
            dshared.Segment(shm_name, create=False)
    finally:
        os.unlink(SHM + shm_name)


def test_a_symlink_is_never_followed(made, shm_name):
    """A link in /dev/shm to a real segment is refused (shm_open does not
    follow it), and creating over a link fails instead of writing through it."""
    link = shm_name + "-link"
    os.symlink(SHM + made, SHM + link)
    try:
        with pytest.raises(OSError) as ei:
            dshared.Segment(link, create=False)
        assert ei.value.filename == link
        with pytest.raises(FileExistsError):
            dshared.Segment(link, 1 << 20, create=True)
    finally:
        os.unlink(SHM + link)
    with dshared.Segment(made, create=False) as seg:
        assert seg.col()["k"] == "v"


def _patch(name, at, data):
    with open(SHM + name, "r+b") as f:
        f.seek(at)
        old = f.read(len(data))
        f.seek(at)
        f.write(data)
    return old


@pytest.mark.parametrize("field, data, message", [
    ("layout", b"aarch64-musl".ljust(32, b"\0"), "made on another platform .*aarch64-musl"),
    ("layout", b"x86_64-glibc-but-longer".ljust(32, b"\0"), "made on another platform"),
    ("mutex_size", struct.pack("<Q", 48), "mutex of 48 bytes"),
    ("version", struct.pack("<I", 1), "format version 1"),
    ("version", struct.pack("<I", 2), "format version 2"),      # hashed its keys with a multiply-mix
    ("version", struct.pack("<I", 3), "format version 3"),      # a fixed journal: no transactions
    ("version", struct.pack("<I", 4), "format version 4"),      # 40-byte entries with a stored hash, 4-byte index slots
    ("version", struct.pack("<I", 6), "format version 6"),
])
def test_a_foreign_layout_is_refused_and_left_alone(made, field, data, message):
    at = {"layout": H_LAYOUT, "mutex_size": H_MUTEX_SIZE, "version": H_VERSION}[field]
    with open(SHM + made, "rb") as f:
        before = f.read()
    old = _patch(made, at, data)
    assert old != data
    with pytest.raises(dshared.CorruptSegmentError, match=message):
        dshared.Segment(made, create=False)
    with pytest.raises(dshared.CorruptSegmentError, match=message):
        dshared.Segment(made)
    with open(SHM + made, "rb") as f:
        after = f.read()
    assert after[:at] + old + after[at + len(old):] == before          # nothing else written
    _patch(made, at, old)
    with dshared.Segment(made, create=False) as seg:
        assert seg.col()["k"] == "v"
        assert seg.check().ok


PICKLE_FREE = r"""
import sys
import dshared
name = sys.argv[1]
with dshared.Segment(name, 1 << 20, create=True) as seg:
    try:
        root = seg.col()
        root["v"] = {"a": [1, 2.5, "s" * 40, b"b" * 40, 2 ** 100, (1, ("t",))], "n": None, True: -0.0}
        root["v"]["a"].append({"x": [3]})
        got = root.to_python()
        list(root.items())
        seg.col("named")["x"] = 1
        seg.collect()
        assert seg.check().ok
        try:
            root["bad"] = object()
        except dshared.UnsupportedTypeError:
            pass
        ref = root["v"].__reduce__()          # a view crosses processes by reference
        assert ref[1][0] == name
    finally:
        seg.unlink()
bad = sorted(m for m in ("pickle", "_pickle", "shelve") if m in sys.modules)
print(",".join(bad) or "none")
"""


def test_dshared_never_imports_pickle(shm_name):
    """Promise 5: no pickle anywhere. A fresh interpreter that uses every part
    of dshared has not imported pickle at the end."""
    with Popen(textwrap.dedent(PICKLE_FREE), shm_name) as proc:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "none", "dshared imported %s" % out.strip()
