"""Helpers for tests that run other processes."""
import itertools
import os
import signal
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_killed_on_timeout(cmd, timeout, env=None):
    """Run cmd from / in its own process group, which is killed if it
    overruns; returns (returncode, stdout, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd="/", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def run_python(code, *args, timeout=60, env=None, check=True):
    """Run `code` in a fresh, unrelated interpreter (its own process group);
    returns the CompletedProcess. The child is killed if it overruns."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    cmd = [sys.executable, "-c", textwrap.dedent(code)] + [str(a) for a in args]
    rc, out, err = run_killed_on_timeout(cmd, timeout, full_env)
    if check and rc != 0:
        raise AssertionError("child failed (%d):\n%s\n%s" % (rc, out, err))
    return subprocess.CompletedProcess(cmd, rc, out, err)


class BuiltinMaker:
    """mk(init) -> a plain container (the reference behaviour)."""
    kind = "builtin"

    def __init__(self, factory):
        self._factory = factory

    def __call__(self, init=()):
        return self._factory(init)

    def fresh(self, obj):
        return obj


class SharedMaker:
    """mk(init) -> a view of a shared container equal to factory(init), each
    stored under its own key of `root`."""
    kind = "shared"

    def __init__(self, root, factory):
        self._root = root
        self._factory = factory
        self._counter = itertools.count()
        self._made = {}

    def __call__(self, init=()):
        key = "x%d" % next(self._counter)
        self._root[key] = self._factory(init)
        obj = self._root[key]
        self._made[id(obj)] = (key, obj)  # keeps obj alive, so ids stay unique
        return obj

    def fresh(self, obj):
        """A new view of the object ``obj`` views, read again from the segment."""
        key, _ = self._made[id(obj)]
        return self._root[key]


def full_walk(mapping):
    """Read everything reachable from the shared `mapping` the ways a user
    can: len, iteration forwards and backwards (keys, values, items), a
    lookup of every key but NaN (d[k], k in d, get), every list item by index and a
    slice, the elements of tuples, every nested dict and list (once each,
    cycles included), to_python() and repr. Raises
    whatever the walk raises; returns None. `check().ok` promises that this
    raises nothing."""
    import dshared

    containers = (dshared.SharedDict, dshared.SharedList)
    todo = [mapping]
    seen = set()

    def visit(v):
        # a scalar is read as a user would: every character of a str (a
        # forged str breaks there), its encoding, its hash; tuples item by
        # item (and keys are hashed whole)
        if isinstance(v, containers):
            todo.append(v)
        elif isinstance(v, tuple):
            for x in v:
                visit(x)
        elif isinstance(v, str):
            for _ in v:
                pass
            v.encode("utf-8", "surrogatepass")
            hash(v)
        elif isinstance(v, bytes):
            hash(v)

    while todo:
        c = todo.pop()
        ident = c._identity()
        if ident in seen:
            continue
        seen.add(ident)
        n = len(c)
        if isinstance(c, dshared.SharedDict):
            keys = list(c)
            assert len(keys) == n, (len(keys), n)
            list(reversed(c))
            for k in keys:
                visit(k)
                hash(k)
                if k == k:              # a NaN key: no lookup finds it (README)
                    c[k]
                    assert k in c
                    c.get(k)
            list(c.values())
            for k, v in c.items():
                visit(k)
                visit(v)
        else:
            items = list(c)
            list(reversed(c))
            for i in range(len(items)):
                visit(c[i])
            c[:]
            c[::-1]
        c.to_python()
        repr(c)
    return None
