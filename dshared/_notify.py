"""Change notifications: version(), wait(), wait_any() and their asyncio forms.

A version is the sequence number of a wait word in the segment, chosen by
hashing the container (and the key): it changes whenever a write that
changes that container (that key) is published. Words are shared by
hashing, so a version may also move for a neighbour's change: a wait may
return with nothing changed, and the usual loop re-checks:

    v = d.version("result")
    while "result" not in d:
        v = d.wait("result", version=v)
"""

import threading
import time

from dshared import _codec, _heap

__all__ = ["version", "wait", "wait_any", "wait_async", "wait_any_async"]


def _target(node, key, keyed):
    return _codec._nt_target(node, key, keyed)


def version(node, key=None, keyed=False):
    t = _target(node, key, keyed)
    return _heap._nt_version(t[0], t[4])


def wait(node, key=None, keyed=False, version=None, timeout=None):
    t = _target(node, key, keyed)
    if version is None:
        version = _heap._nt_version(t[0], t[4])
    if not _heap._nt_wait([t + (int(version),)], timeout):
        return None
    return _heap._nt_version(t[0], t[4])


def _parse(targets):
    from dshared._collections import SharedDict, SharedList
    out = []
    for target in targets:
        if isinstance(target, (SharedDict, SharedList)):
            out.append(_target(target, None, False))
        elif (isinstance(target, tuple) and len(target) == 2
              and isinstance(target[0], SharedDict)):
            out.append(_target(target[0], target[1], True))
        else:
            raise TypeError("wait_any() targets are SharedDict or SharedList views or "
                            "(SharedDict, key) pairs, not %r" % (target,))
    return out


def versions(targets):
    """The versions of several targets (containers or (SharedDict, key)
    pairs), in order: what wait_any(targets, versions=...) compares with."""
    targets = list(targets)
    return [_heap._nt_version(t[0], t[4]) for t in _parse(targets)]


def wait_any(targets, *, versions=None, timeout=None):
    """Wait until one of the targets changes: each is a SharedDict or
    SharedList (any change of it) or a (SharedDict, key) pair (a change of
    that key). `versions`: what to compare with, one per target (see
    dshared.versions(); by default the versions at the call). Returns the
    list of the targets that changed, in the order given, or [] when
    `timeout` seconds pass first."""
    targets = list(targets)
    ts = _parse(targets)
    if versions is None:
        vs = [_heap._nt_version(t[0], t[4]) for t in ts]
    else:
        vs = [int(v) for v in versions]
        if len(vs) != len(ts):
            raise ValueError("wait_any(): %d targets, %d versions" % (len(ts), len(vs)))
    changed = _heap._nt_wait([t + (v,) for t, v in zip(ts, vs)], timeout)
    return [targets[i] for i in changed]


_ASYNC_SLICE = 0.05     # a cancelled asyncio wait lets its thread go within this


async def _in_thread(fn, timeout):
    """Run the blocking wait fn(slice_timeout) -> result-or-None in a helper
    thread, in slices, and await its result: the event loop never blocks,
    and a cancelled await ends the thread's wait within one slice."""
    import asyncio                  # here: `import dshared` need not load asyncio (~30 ms)
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    cancelled = threading.Event()
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)

    def deliver(setter, value):
        if not fut.done():
            setter(value)

    def post(setter, value):
        try:
            loop.call_soon_threadsafe(deliver, setter, value)
        except RuntimeError:
            pass                        # the loop is closed: nobody awaits

    def run():
        try:
            while not cancelled.is_set():
                step = _ASYNC_SLICE
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        post(fut.set_result, fn(0))
                        return
                    step = min(step, left)
                result = fn(step)
                if result is not None and result != []:
                    post(fut.set_result, result)
                    return
        except BaseException as e:      # delivered to the awaiting task
            post(fut.set_exception, e)

    threading.Thread(target=run, name="dshared-wait", daemon=True).start()
    try:
        return await fut
    finally:
        cancelled.set()


def wait_async(node, key=None, keyed=False, version=None, timeout=None):
    t = _target(node, key, keyed)
    if version is None:
        version = _heap._nt_version(t[0], t[4])
    version = int(version)

    def step(slice_timeout):
        if _heap._nt_wait([t + (version,)], slice_timeout):
            return _heap._nt_version(t[0], t[4])
        return None
    return _in_thread(step, timeout)


async def wait_any_async(targets, *, versions=None, timeout=None):
    """The asyncio form of wait_any(): awaitable, the event loop is not blocked."""
    targets = list(targets)
    ts = _parse(targets)
    if versions is None:
        vs = [_heap._nt_version(t[0], t[4]) for t in ts]
    else:
        vs = [int(v) for v in versions]
        if len(vs) != len(ts):
            raise ValueError("wait_any_async(): %d targets, %d versions" % (len(ts), len(vs)))
    ws = [t + (v,) for t, v in zip(ts, vs)]

    def step(slice_timeout):
        return [targets[i] for i in _heap._nt_wait(ws, slice_timeout)]
    return await _in_thread(step, timeout)
