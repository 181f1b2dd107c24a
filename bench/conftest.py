"""Fixtures for the dshared benchmark suite.

Smoke mode (``--benchmark-disable``, the default addopts): small key counts, each
benchmark body runs once.  Real runs (``--benchmark-enable``): 100,000 keys.

Environment overrides:
  DSHARED_BENCH_KEYS        key count for every contender (default 100000, smoke 1000)
  DSHARED_BENCH_SMD_KEYS    key count for shared-memory-dict (default 2000, smoke 200)
  DSHARED_BENCH_READERS     reader process counts for workload (h), e.g. "1,2,4,8,16"
  DSHARED_BENCH_SEGMENT_MB  force the dshared segment size
  DSHARED_BENCH_MP_REPEATS  runs of each reader count in (h), median reported (default 3)
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _dshbench as B  # noqa: E402


def pytest_configure(config):
    # UltraDict logs through `logging`; peers emit no Python warnings on 3.9-3.12 as far as
    # seen.  A spawned Manager on 3.12+ may warn about fork in multi-threaded processes
    # from the resource tracker: keep those from turning into errors for peers only.
    config.addinivalue_line(
        "filterwarnings", "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")


class BenchConfig:
    def __init__(self, config):
        self.smoke = bool(config.getoption("benchmark_disable", False)) and not config.getoption(
            "benchmark_enable", False)
        self.n = int(os.environ.get("DSHARED_BENCH_KEYS", 1000 if self.smoke else 100000))
        self.n_smd = int(os.environ.get("DSHARED_BENCH_SMD_KEYS", 200 if self.smoke else 2000))
        self.readers = [int(x) for x in os.environ.get("DSHARED_BENCH_READERS", "1,2").split(",") if x.strip()]
        if 1 not in self.readers:
            self.readers.insert(0, 1)
        self.batch = B.BATCH
        self.mp_seconds = 0.05 if self.smoke else 1.0        # target run time of each reader process
        # (h): each reader count is run this many times, interleaved, and the run of
        # median throughput is reported (one run varies by 20% and more on a shared host)
        self.mp_repeats = 1 if self.smoke else int(os.environ.get("DSHARED_BENCH_MP_REPEATS", 3))
        self.latency_samples = 30 if self.smoke else 2000
        self.populate_rounds = 1 if self.smoke else 3

    def keys_for(self, name):
        return self.n_smd if name == "smd" else self.n

    def batch_for(self, name):
        return 100 if name == "smd" else self.batch


@pytest.fixture(scope="session")
def bench_cfg(request):
    return BenchConfig(request.config)


def _ours():
    try:
        names = os.listdir(B.SHM_DIR)
    except FileNotFoundError:
        return set()
    # our names contain the prefix; UltraDict's full dumps get random psm_* names. The
    # sem.mp-* semaphores of multiprocessing are not counted: any process on the machine
    # makes them, and unlinking another's would break it (multiprocessing removes ours).
    return {n for n in names if B.PREFIX in n or n.startswith("psm_")}


def _child_pids():
    me = str(os.getpid())
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read()
            ppid = st[st.rindex(")") + 2:].split()[1]
            if ppid != me:
                continue
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if "resource_tracker" in cmd or (st[st.rindex(")") + 2:].split()[0] == "Z"):
            continue       # the multiprocessing resource tracker lives as long as pytest
        out.append((int(p), cmd.strip()))
    return out


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail the test if it leaves anything in /dev/shm or a child process running."""
    before = _ours()
    kids_before = set(_child_pids())
    yield
    import gc
    import multiprocessing
    multiprocessing.active_children()          # reap finished children
    gc.collect()                               # finalizers unlink semaphores of dead queues/barriers
    left = sorted(_ours() - before)
    for n in left:
        if B.PREFIX not in n:
            continue            # psm_*: reported, but it may be another process's to remove
        p = os.path.join(B.SHM_DIR, n)
        if os.path.isdir(p):
            import shutil
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass
    kids = sorted(set(_child_pids()) - kids_before)
    assert not left, "left in /dev/shm: %r" % left
    assert not kids, "child processes still running: %r" % kids


@pytest.fixture
def store_factory():
    """``store_factory(name, kind, n)``: a loaded store, closed and removed after the test."""
    made = []

    def factory(name, kind, n):
        c = B.load_store(name, kind, n)
        made.append(c)
        return c

    def empty(name, kind, n):
        c = B.make(name)
        c.create(kind, n)
        made.append(c)
        return c

    factory.empty = empty
    factory.made = made
    yield factory
    errors = []
    for c in reversed(made):
        try:
            c.close()
        except Exception as e:    # keep closing the others
            errors.append(repr(e))
    assert not errors, errors

