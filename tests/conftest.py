"""Shared fixtures: unique segment names and guards: a test that leaves a
segment of this run in /dev/shm fails, and so does a run with a skipped
test (RELIABILITY.md: a skipped reliability test fails CI)."""
import faulthandler
import itertools
import os
import sys
import uuid

import pytest

import dshared

SHM_DIR = "/dev/shm"
PREFIX = "dsh-test-"
_counter = itertools.count()


def _leftovers(prefix):
    """Segments whose names start with `prefix`, and the temporary files a
    creation of such a segment may leave ("." + name + ...)."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix) or n.startswith("." + prefix))
    except FileNotFoundError:
        return []


def _ours():
    """The segments this run may have made: every test names its segments
    after the pytest process (dsh-test-<pid>-..., dsh-test-sm-<pid>-...);
    other runs on the machine use other names."""
    pid = "-%d-" % os.getpid()
    return {n for n in _leftovers(PREFIX) if n.lstrip(".").startswith(PREFIX + pid[1:])
            or n.lstrip(".").startswith(PREFIX + "sm" + pid)}


@pytest.fixture(autouse=True)
def _no_segment_left_behind():
    """Every test, whatever fixtures it uses: fails if it leaves a segment of
    this run in /dev/shm (they are removed)."""
    before = _ours()
    yield
    left = sorted(_ours() - before)
    for n in left:
        try:
            os.unlink(os.path.join(SHM_DIR, n))
        except FileNotFoundError:
            pass
    assert not left, "segments left in /dev/shm: %r" % left


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """faulthandler_timeout dumps every thread's stack when a test runs that
    long: for a test allowed longer (by its timeout marker, or the timeout
    setting), the dump is moved to that timeout, so that a test that passes
    never prints one."""
    dump_at = float(item.config.getini("faulthandler_timeout") or 0)
    marker = item.get_closest_marker("timeout")
    limit = marker.args[0] if marker and marker.args else (marker.kwargs.get("timeout") if marker else None)
    if limit is None:
        limit = item.config.getini("timeout") or None
    if dump_at and limit and float(limit) > dump_at:
        faulthandler.dump_traceback_later(float(limit), file=sys.__stderr__)


_skipped = []


# The one reason a test may skip: a system tool it needs is not installed on
# this machine (a user's), said as "<tool> is not installed here (apt-get
# install <package>)" (tests/_redis.py, tests/test_notify.py). Reported, but
# not a failure of the run; CI installs the tools and sets DSHARED_REQUIRE_*=1,
# under which those tests fail instead of skipping.
MISSING_TOOL = " is not installed here (apt-get install "


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail") and MISSING_TOOL not in str(report.longrepr):
        _skipped.append(report.nodeid)


def pytest_collectreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _skipped and exitstatus == 0:
        print("\n%d test(s) skipped, which fails the run: %s" % (len(_skipped), ", ".join(_skipped[:10])))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


# -- the Redis backend (tests/_redis.py) -----------------------------------------

@pytest.fixture(scope="session")
def redis_server():
    """A redis-server on a free 127.0.0.1 port, no persistence; skipped with
    one reason line when redis-server is missing (failed under
    DSHARED_REQUIRE_REDIS=1)."""
    import _redis
    binary = _redis.redis_server_binary()
    if binary is None:
        if _redis.required():
            pytest.fail("DSHARED_REQUIRE_REDIS=1 but " + _redis.SKIP_REASON)
        pytest.skip(_redis.SKIP_REASON)
    srv = _redis.RedisServer(binary)
    yield srv
    srv.close()


@pytest.fixture
def redis_url(redis_server):
    return redis_server.url


@pytest.fixture(params=["shm", "redis"])
def backend_segment(request, shm_name):
    """A fresh segment on each backend: shared memory, and a Redis server."""
    if request.param == "shm":
        seg = dshared.Segment(shm_name, 64 << 20, create=True)
        try:
            yield seg
        finally:
            seg.close()
            seg.unlink()
    else:
        from dshared.redis import RedisSegment
        url = request.getfixturevalue("redis_url")
        seg = RedisSegment(shm_name, create=True, server=url)
        try:
            yield seg
        finally:
            seg.unlink()
            seg.close()


@pytest.fixture
def redis_root(redis_url, shm_name):
    """The root dict of a fresh segment on the Redis backend (unlinked after)."""
    from dshared.redis import RedisSegment
    seg = RedisSegment(shm_name, create=True, server=redis_url)
    try:
        yield seg.col()
    finally:
        seg.unlink()
        seg.close()
