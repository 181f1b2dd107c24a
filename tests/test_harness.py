"""The harness rules of RELIABILITY.md hold for the suite itself: a test
that leaves a segment in /dev/shm fails, and a skipped test fails the run.
Each rule is shown to bite on a small suite run in a child pytest with this
directory's conftest.py."""
import os
import shutil
import textwrap

import pytest

from _proc import Popen

TESTS = os.path.dirname(os.path.abspath(__file__))

LEAKS = """
import os
import dshared

def test_leaves_a_segment():
    # named as every test of the run names its segments, but by hand (no fixture)
    dshared.Segment("dsh-test-%d-by-hand" % os.getpid(), 1 << 16, create=True).close()

def test_clean():
    pass
"""

SKIPS = """
import pytest

def test_skipped():
    pytest.skip("not here")

def test_clean():
    pass
"""

CLEAN = """
import pytest

@pytest.mark.xfail(strict=True, reason="an expected failure is not a skip")
def test_expected_failure():
    assert False

def test_clean(shm_name):
    import dshared
    with dshared.Segment(shm_name, 1 << 16, create=True) as seg:
        seg.unlink()
"""


def _run(tmp_path, source):
    shutil.copy(os.path.join(TESTS, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_it.py").write_text(textwrap.dedent(source))
    code = "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    with Popen(code, "-q", "-p", "no:cacheprovider", "-rs", "--rootdir", tmp_path, tmp_path) as proc:
        out, err = proc.communicate(timeout=100)
    return proc.returncode, out + err


@pytest.mark.timeout(120)
def test_a_test_that_leaves_a_segment_fails(tmp_path):
    rc, out = _run(tmp_path, LEAKS)
    assert rc == 1, out
    assert "segments left in /dev/shm" in out and "by-hand" in out, out
    assert "2 passed, 1 error" in out, out          # the test passed, its teardown failed
    assert not [n for n in os.listdir("/dev/shm") if n.endswith("-by-hand")]


@pytest.mark.timeout(120)
def test_a_skipped_test_fails_the_run(tmp_path):
    rc, out = _run(tmp_path, SKIPS)
    assert rc == 1, out
    assert "skipped, which fails the run" in out, out


@pytest.mark.timeout(120)
def test_a_clean_run_passes(tmp_path):
    rc, out = _run(tmp_path, CLEAN)
    assert rc == 0, out
    assert "1 passed, 1 xfailed" in out, out
