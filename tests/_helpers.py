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
