"""Child processes for the concurrency and crash suites.

Two levels:

* `run_driver(module, func, *args)` runs `module.func(*args)` (a function of a
  test module) in a fresh, single-threaded interpreter that is the leader of
  its own session and process group, with cwd=/ (so it imports the dshared
  found through PYTHONPATH or the installed one, never the checkout by
  accident). The function returns something JSON-able, which run_driver
  returns. Whatever happens (failure, timeout, pytest-timeout firing), the
  whole group is SIGKILLed and reaped in `finally`, orphans included.
* Inside a driver, `fork_call(fn, ...)` forks a worker (it stays in the
  driver's group, so killing the group kills it) and `Children` kills and
  reaps every worker it knows of in `finally`.

Forking happens only in drivers: the pytest process may run helper threads
(faulthandler's watchdog), and forking a multi-threaded process is unsafe
(Python 3.12 warns, and the suite turns warnings into errors).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback

TESTS = os.path.dirname(os.path.abspath(__file__))
RESULT_MARK = "@@dshared-driver-result@@ "

_BOOT = r"""
import faulthandler, importlib, json, os, sys
faulthandler.enable()       # a worker that dies of a signal shows where
sys.path.insert(0, sys.argv[1])
mod = importlib.import_module(sys.argv[2])
res = getattr(mod, sys.argv[3])(*json.loads(sys.argv[4]))
sys.stdout.flush()
os.write(1, (%r + json.dumps(res) + "\n").encode())
""" % RESULT_MARK


# -- in the pytest process ----------------------------------------------------------

def test_seed():
    """A seed for this test: $DSHARED_TEST_SEED if set (to replay), else a
    random one. Printed, so that a failure report shows it."""
    env = os.environ.get("DSHARED_TEST_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(2 ** 32)
    print("seed: %d (replay with DSHARED_TEST_SEED=%d)" % (seed, seed))
    return seed


test_seed.__test__ = False      # not a test, whatever its name says


def kill_group(pgid):
    """SIGKILL every process of group `pgid` (no error if none is left)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _child_env(env):
    full = dict(os.environ)
    full.update(env or {})
    # the test hooks must be switched on only where a test asks for them
    for k in list(full):
        if k.startswith("DSHARED_TEST_") and k != "DSHARED_TEST_SEED" and k not in (env or {}):
            del full[k]
    return full


def run_driver(module, func, *args, timeout, env=None):
    """Run tests/<module>.py's func(*args) in a fresh interpreter in its own
    process group; return its (JSON) result. The driver's stdout and stderr
    are printed here (pytest shows them when the test fails)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _BOOT, TESTS, module, func, json.dumps(list(args))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_child_env(env), cwd="/",
        start_new_session=True)
    timed_out = False
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc.pid)
            out, err = proc.communicate()
    finally:
        kill_group(proc.pid)
        proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    out = out.decode("utf-8", "replace")
    err = err.decode("utf-8", "replace")
    lines = out.splitlines()
    result = [ln for ln in lines if ln.startswith(RESULT_MARK)]
    shown = "\n".join(ln for ln in lines if not ln.startswith(RESULT_MARK))
    if shown:
        print(shown)
    if err:
        print(err, file=sys.stderr)
    if timed_out:
        raise AssertionError("driver %s.%s ran past %s s\n%s" % (module, func, timeout, err[-3000:]))
    if proc.returncode != 0 or not result:
        raise AssertionError("driver %s.%s failed (exit %s)\n%s" % (module, func, proc.returncode, err[-5000:]))
    return json.loads(result[-1][len(RESULT_MARK):])


class Popen(subprocess.Popen):
    """subprocess.Popen of a Python child in its own session (process group),
    cwd=/; the whole group is SIGKILLed and reaped on exit from `with`."""

    def __init__(self, code, *args, env=None, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        super().__init__([sys.executable, "-c", code] + [str(a) for a in args], env=_child_env(env),
                         cwd="/", start_new_session=True, **kw)

    def __exit__(self, *exc):
        kill_group(self.pid)
        try:
            self.wait(10)
        finally:
            super().__exit__(*exc)


# -- in a driver ------------------------------------------------------------------------

def watchdog(seconds):
    """In a worker: show the traceback if it dies of a signal, and every
    thread's stack (then exit 70) if it is still running after `seconds`:
    a hang shows where it hangs."""
    import faulthandler
    faulthandler.enable()
    faulthandler.dump_traceback_later(seconds, exit=True)


def fork_call(fn, *args):
    """Fork; the child runs fn(*args) and _exits 0 (1 and a traceback on an
    exception, the code of SystemExit). Returns the child's pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    return pid


def exit_code(status):
    """A wait status as subprocess shows it: the exit code, or -signal."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def wait_pid(pid, timeout):
    """Wait for child `pid` at most `timeout` s; its exit code (-signal if
    killed). TimeoutError if it is still running."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return exit_code(status)
        if time.monotonic() > deadline:
            raise TimeoutError("child %d still running after %s s" % (pid, timeout))
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def kill_pid(pid):
    """SIGKILL child `pid` and reap it; its exit code (None if already reaped)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return exit_code(status)


class Children:
    """The workers of a driver: add(pid); every one still running is
    SIGKILLed and reaped when the `with` block ends."""

    def __init__(self):
        self.pids = set()

    def add(self, pid):
        self.pids.add(pid)
        return pid

    def fork(self, fn, *args):
        return self.add(fork_call(fn, *args))

    def wait(self, pid, timeout):
        code = wait_pid(pid, timeout)
        self.pids.discard(pid)
        return code

    def kill(self, pid):
        self.pids.discard(pid)
        return kill_pid(pid)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for pid in list(self.pids):
            kill_pid(pid)
        self.pids.clear()
        return False


def read_all(fd):
    """Read a pipe's read end to EOF and close it."""
    chunks = []
    try:
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks)


def unlink_quietly(name):
    try:
        os.unlink("/dev/shm/" + name)
    except FileNotFoundError:
        pass
