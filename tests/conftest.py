"""Shared fixtures: unique segment names and a guard against /dev/shm leftovers."""
import itertools
import os
import uuid

import pytest

import dshared

SHM_DIR = "/dev/shm"
PREFIX = "dsh-test-"
_counter = itertools.count()


def _leftovers(prefix):
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


@pytest.fixture
def shm_name(request):
    """A segment name unique to this test; the test fails if it is left in /dev/shm."""
    prefix = "%s%d-%d-%s" % (PREFIX, os.getpid(), next(_counter), uuid.uuid4().hex[:8])
    yield prefix
    left = _leftovers(prefix)
    for n in left:
        os.unlink(os.path.join(SHM_DIR, n))
    assert not left, "segments left in /dev/shm: %r" % left


@pytest.fixture
def segment(shm_name):
    """A fresh 64 MiB segment, closed and unlinked after the test."""
    seg = dshared.Segment(shm_name, 64 << 20, create=True)
    try:
        yield seg
    finally:
        seg.close()
        seg.unlink()


@pytest.fixture
def root(segment):
    """The root SharedDict of a fresh segment."""
    return segment.col()


@pytest.fixture
def make_segment(shm_name):
    """make_segment(size) -> a fresh Segment of that capacity, closed and
    unlinked after the test."""
    made = []

    def make(size):
        seg = dshared.Segment(shm_name, size, create=True)
        made.append(seg)
        return seg

    yield make
    for seg in made:
        seg.close()
        seg.unlink()
