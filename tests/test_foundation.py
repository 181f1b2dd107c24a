"""The foundation: the quick-start example across processes, segments by
name, the lifecycle, and errors that leave the segment unchanged."""
import multiprocessing as mp
import os
import stat
import sys

import pytest

import dshared
from _helpers import ROOT, run_python

EXAMPLE = os.path.join(ROOT, "examples", "quickstart.py")


# -- the quick-start example ------------------------------------------------------

@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_example_prints_val(shm_name, method):
    code = "import runpy, sys; sys.argv = [%r, %r]; runpy.run_path(%r, run_name='__main__')" % (
        EXAMPLE, method, EXAMPLE)
    r = run_python(code, env={"DSHARED_EXAMPLE_NAME": shm_name}, timeout=120)
    assert r.stdout == "val\n", r.stderr
    assert not os.path.exists("/dev/shm/" + shm_name)


def test_unrelated_process_reads_by_name(segment, shm_name):
    segment.col()['d'] = {'key': 'val', 'n': [1, 2.5, None, (b'x', True)]}
    r = run_python("""
        import sys, dshared
        dshared.init(sys.argv[1])
        print(repr(dshared.col()['d'].to_python()))
        seg = dshared.attach(sys.argv[1])
        print(seg.col()['d']['key'])
    """, shm_name)
    assert r.stdout.splitlines() == ["{'key': 'val', 'n': [1, 2.5, None, (b'x', True)]}", "val"]


def test_unrelated_process_writes_are_seen(segment, shm_name):
    root = segment.col()
    root['d'] = {'inner': {'x': 1}}
    run_python("""
        import sys, dshared
        shm = dshared.attach(sys.argv[1]).col()
        inner = shm['d']['inner']
        inner['x'] = 2
        inner['y'] = ['a', {'deep': 3}]
        shm['d']['new'] = 'from the child'
    """, shm_name)
    assert root['d']['inner']['x'] == 2
    assert root['d']['inner']['y'][1]['deep'] == 3
    assert root['d']['new'] == 'from the child'
    assert segment.check().ok


def _write_many(name, n):
    shm = dshared.attach(name).col()
    for i in range(n):
        shm["k%06d" % i] = i * 3
    shm.update({"s%06d" % i: "v" * (i % 40) for i in range(0, n, 7)})


def test_100k_keys_written_in_one_process_read_in_another(segment, shm_name):
    n = 100_000
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_write_many, args=(shm_name, n))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    r = run_python("""
        import sys, dshared
        shm = dshared.attach(sys.argv[1]).col()
        n = int(sys.argv[2])
        bad = [i for i in range(n) if shm["k%06d" % i] != i * 3]
        bad += [i for i in range(0, n, 7) if shm["s%06d" % i] != "v" * (i % 40)]
        print(len(shm), len(bad))
    """, shm_name, n, timeout=120)
    assert r.stdout.split() == [str(n + len(range(0, n, 7))), "0"]
    assert segment.check().ok


def _child_append(view, value):
    view.append(value)
    view[0]['seen'] = True


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_views_pickle_as_references(segment, method):
    root = segment.col()
    root['l'] = [{'seen': False}]
    lst = root['l']
    ctx = mp.get_context(method)
    p = ctx.Process(target=_child_append, args=(lst, "child"))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert lst.to_python() == [{'seen': True}, "child"]


def test_pickle_is_a_reference_not_the_contents(root):
    import pickle
    root['big'] = {'x': 'y' * 10_000}
    data = pickle.dumps(root['big'])
    assert len(data) < 400
    again = pickle.loads(data)
    again['z'] = 1
    assert root['big']['z'] == 1


# -- values, cycles, aliasing ---------------------------------------------------------

def test_cycles_and_aliasing_round_trip(root):
    shared = {'n': 1}
    a = [shared, shared]
    a.append(a)
    root['a'] = a
    out = root['a'].to_python()
    assert out[0] is out[1]
    assert out[2] is out
    root['a'][0]['n'] = 2          # one object stored once: seen through both paths
    assert root['a'][1]['n'] == 2


def test_assigning_a_view_binds_the_same_object(root):
    root['x'] = {'v': 1}
    root['y'] = root['x']
    root['y']['v'] = 2
    assert root['x']['v'] == 2
    del root['x']
    assert root['y']['v'] == 2     # still reachable through 'y'


# -- errors leave the segment unchanged ----------------------------------------------------

def _state(seg):
    st = seg.stats()
    return st['used'], st['blocks']


def test_unsupported_value_changes_nothing(segment, root):
    root['k'] = {'old': [1, 2]}
    before = _state(segment)
    with pytest.raises(dshared.UnsupportedTypeError, match=r"set.*\['users'\]\[3\]\['tags'\]") as ei:
        root['k'] = {'users': [0, 0, 0, {'tags': {1, 2}}]}
    assert isinstance(ei.value, TypeError)
    assert root['k'].to_python() == {'old': [1, 2]}
    assert _state(segment) == before
    assert segment.check().ok
    root['k'] = 'next write works'
    assert root['k'] == 'next write works'


def test_too_large_value_changes_nothing(make_segment):
    seg = make_segment(1 << 20)
    if True:
        root = seg.col()
        root['k'] = 'old'
        root['l'] = [1, 2, 3]
        before = _state(seg)
        with pytest.raises(dshared.SegmentFullError, match="full") as ei:
            root['k'] = 'x' * (2 << 20)
        assert isinstance(ei.value, MemoryError)
        with pytest.raises(dshared.SegmentFullError):
            root['l'].append(['y' * 100_000] * 5 + [b'z' * 2_000_000])
        assert root['k'] == 'old'
        assert root['l'].to_python() == [1, 2, 3]
        assert _state(seg) == before
        assert seg.check().ok
        root['k'] = 'x' * 1000
        assert root['k'] == 'x' * 1000


def test_full_segment_collects_cycles_first(make_segment):
    seg = make_segment(1 << 20)
    root = seg.col()
    for i in range(8):
        cyc = [str(i) * 300_000]
        cyc.append(cyc)
        root['c'] = cyc            # the previous cycle becomes garbage
    assert seg.stats()['collections'] >= 1
    assert root['c'][0] == '7' * 300_000
    assert seg.collect() > 300_000     # the last cycle replaced
    assert seg.check().ok


# -- segments: names, attach, lifecycle ------------------------------------------------------

@pytest.mark.parametrize("bad", ["", "a/b", "..", ".", ".hidden", "a\0b", "x" * 300])
def test_bad_names_are_refused(bad):
    with pytest.raises(ValueError, match="segment name"):
        dshared.Segment(bad, create=True)


def test_non_str_name_is_refused():
    with pytest.raises(TypeError, match="segment name must be a str"):
        dshared.Segment(b"bytes-name")


def test_attach_to_missing_segment(shm_name):
    with pytest.raises(FileNotFoundError) as ei:
        dshared.attach(shm_name)
    assert ei.value.filename == shm_name


def test_create_existing_segment(segment, shm_name):
    with pytest.raises(FileExistsError):
        dshared.Segment(shm_name, create=True)


@pytest.mark.parametrize("content", [b"", b"\0" * 65536, b"not a dshared segment" * 5000])
def test_attach_to_foreign_object_fails_cleanly(shm_name, content):
    """Attaching (create=False) to anything but a dshared segment is a clear
    error, never a crash, and the object is left as it was."""
    path = "/dev/shm/" + shm_name
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    try:
        for create in (False, None):
            with pytest.raises(dshared.CorruptSegmentError, match="truncated or not a dshared segment"):
                dshared.Segment(shm_name, create=create)
        with open(path, "rb") as f:
            assert f.read() == content
    finally:
        os.unlink(path)


def test_attach_refuses_unsafe_mode(segment, shm_name):
    os.chmod("/dev/shm/" + shm_name, 0o666)
    with pytest.raises(PermissionError, match="mode 666"):
        dshared.Segment(shm_name, create=False)
    other = dshared.Segment(shm_name, create=False, allow_unsafe=True)
    other.close()


def test_created_0600_whatever_the_umask(shm_name):
    old = os.umask(0)
    try:
        seg = dshared.Segment(shm_name, create=True)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat("/dev/shm/" + shm_name).st_mode) == 0o600
    finally:
        seg.close()
        dshared.unlink(shm_name)


def test_sizes_round_up_to_the_minimum(shm_name):
    with dshared.Segment(shm_name, 2 ** 10, create=True) as seg:
        assert seg.capacity == dshared.MIN_SIZE == 65536
        seg.unlink()
    with dshared.Segment(shm_name, create=True) as seg:
        assert seg.capacity == dshared.DEFAULT_SIZE
        assert seg.stats()['reserved'] < seg.capacity   # backed only as it fills
        seg.unlink()


@pytest.mark.parametrize("size, exc", [(-1, ValueError), (1 << 60, ValueError), ("big", TypeError),
                                       (1.5, TypeError)])
def test_absurd_sizes(shm_name, size, exc):
    with pytest.raises(exc, match="size"):
        dshared.Segment(shm_name, size, create=True)


def test_close_is_idempotent_and_use_after_close_raises(shm_name):
    seg = dshared.Segment(shm_name, create=True)
    root = seg.col()
    root['a'] = {'b': 1}
    view = root['a']
    seg.close()
    seg.close()
    assert seg.closed
    with pytest.raises(ValueError, match="closed"):
        view['b']
    with pytest.raises(ValueError, match="closed"):
        root['x'] = 1
    with pytest.raises(ValueError, match="closed"):
        seg.stats()
    seg.unlink()
    seg.unlink()


def test_attached_process_keeps_working_after_unlink(segment, shm_name):
    segment.col()['a'] = 1
    other = dshared.Segment(shm_name, create=False)
    dshared.unlink(shm_name)
    other.col()['a'] = 2
    assert segment.col()['a'] == 2
    other.close()
    with pytest.raises(FileNotFoundError):
        dshared.unlink(shm_name)


def test_named_collections(segment):
    users = segment.col("users")
    users['ann'] = {'age': 3}
    assert segment.col("users")['ann']['age'] == 3
    assert 'users' not in segment.col()
    assert len(segment.col("other")) == 0


def test_module_level_api(shm_name):
    seg = dshared.init(shm_name, 1 << 20)
    try:
        shm = dshared.col()
        shm['x'] = [1]
        with dshared.lock():
            shm['x'].append(2)
        assert dshared.stats()['used'] > 0
        assert dshared.check().ok
        assert dshared.collect() == 0
        assert dshared.col('named') == {}
    finally:
        seg.close()
        dshared.unlink(shm_name)
    with pytest.raises(dshared.DsharedError, match="init"):
        dshared.col()


def test_lock_timeout_against_another_process(segment, shm_name):
    import subprocess
    segment.col()['a'] = 'readable'

    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, dshared\n"
        "seg = dshared.attach(sys.argv[1])\n"
        "with seg.lock():\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(30)\n"), shm_name], stdout=subprocess.PIPE, text=True, start_new_session=True,
        cwd="/")
    try:
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(dshared.LockTimeout, match="0.2"):
            with segment.lock(timeout=0.2):
                pass
        assert isinstance(dshared.LockTimeout("x"), TimeoutError)
        # readers take no lock: they go on while another process holds it
        assert segment.col()['a'] == 'readable'
        assert len(segment.col()) == 1
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    # the holder was killed: the next locker gets the lock and counts a repair
    with segment.lock(timeout=5):
        pass
    assert segment.stats()['repairs'] == 1


def test_lock_is_reentrant(segment):
    with segment.lock():
        with segment.lock():
            segment.col()['a'] = 1
        segment.col()['b'] = 2
    assert segment.col().to_python() == {'a': 1, 'b': 2}


def test_an_incomplete_object_at_the_name_is_never_re_created(shm_name):
    """Creation is atomic (a segment is linked into place complete), so an
    object at the name that is empty, short or carries an older dshared's
    "being created" marker is damage, not a creation under way: every open,
    init()'s included, says so and leaves it; once it is unlinked, init()
    creates the segment afresh. (Racing openers: test_creation.py.)"""
    path = "/dev/shm/" + shm_name
    for content in (b"", b"DSHAREDc" + bytes(100), b"DSHAREDc" + bytes(65536 - 8)):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.write(fd, content)
        os.close(fd)
        for create in (False, None):
            with pytest.raises(dshared.CorruptSegmentError, match="truncated or not a dshared segment"):
                dshared.Segment(shm_name, 1 << 20, create=create)
        with pytest.raises(dshared.CorruptSegmentError, match=r"dshared\.unlink\(.*\) removes it"):
            dshared.init(shm_name)
        with open(path, "rb") as f:
            assert f.read() == content
        dshared.unlink(shm_name)
        with dshared.Segment(shm_name, 1 << 20) as seg:
            assert seg.created
            seg.col()["x"] = 1
            assert seg.check().ok
            assert seg.capacity == 1 << 20
        with dshared.Segment(shm_name, create=False) as seg:
            assert seg.col()["x"] == 1
        dshared.unlink(shm_name)


@pytest.mark.parametrize("bad", [-0.5, -1, float("nan")])
def test_lock_refuses_a_negative_timeout(segment, bad):
    with pytest.raises(ValueError, match="non-negative"):
        segment.acquire(timeout=bad)
    with pytest.raises(ValueError, match="non-negative"):
        with segment.lock(timeout=bad):
            pass
    with segment.lock(timeout=0):      # free: taken at once
        segment.col()["ok"] = True
    assert segment.col()["ok"] is True


def test_views_held_by_the_caller_are_never_recycled(root):
    """A view that only the view cache references is reused for the next
    container read; a view anyone else holds must keep its identity."""
    n = 300                             # several times the cache size
    for i in range(n):
        root["d%d" % i] = {"i": i}
        root["l%d" % i] = [i]
    held = [(root["d%d" % i], root["l%d" % i]) for i in range(n)]
    for _ in range(3):                  # churn every slot of the cache
        for i in reversed(range(n)):
            assert root["d%d" % i]["i"] == i and root["l%d" % i][0] == i
    for i, (d, lst) in enumerate(held):
        assert d["i"] == i and lst[0] == i
        assert d == {"i": i} and lst == [i]
    # a temporary view used as the receiver of a read stays intact while the
    # read decodes other containers
    root["outer"] = {"k%d" % i: {"v": i} for i in range(n)}
    for i in range(n):
        assert root["outer"]["k%d" % i]["v"] == i
