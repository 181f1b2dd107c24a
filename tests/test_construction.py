"""Nothing reachable from Python may crash the process: every type dshared
exposes (SharedDict, SharedList, the C node types under them, views,
iterators, Segment and its helpers), called the wrong way, either refuses
with an exception or gives a usable object. Each check runs in a child
process, so that a crash shows as a signal instead of killing the run."""
import pytest

from _helpers import run_python


def _run(code, shm_name):
    r = run_python(code, shm_name, check=False, timeout=120)
    assert r.returncode == 0, "child died (%d):\n%s\n%s" % (r.returncode, r.stdout, r.stderr)
    return r.stdout


@pytest.mark.parametrize("expr, hint", [
    ("dshared.SharedDict()", "dshared.col()"),
    ("dshared.SharedList()", "shm['k'] = []"),
    ("dshared.SharedDict({'a': 1})", "dshared.col()"),
    ("dshared.SharedList([1, 2])", "shm['k'] = []"),
    ("dshared.SharedDict.__new__(dshared.SharedDict)", "dshared.col()"),
    ("dshared.SharedList.__new__(dshared.SharedList)", "shm['k'] = []"),
    ("type('Sub', (dshared.SharedDict,), {})()", "dshared.col()"),
    ("type('Sub', (dshared.SharedList,), {})()", "shm['k'] = []"),
    ("dshared._codec.DictNode()", "dshared.col()"),
    ("dshared._codec.ListNode()", "dshared.col()"),
    ("dshared._codec.Node()", "dshared.col()"),
])
def test_direct_construction_raises_typeerror_saying_how(expr, hint, shm_name):
    out = _run("""
        import sys, dshared, dshared._codec
        try:
            x = %s
        except TypeError as e:
            print("TypeError:", e)
        else:
            print("made", type(x).__name__)
            len(x); repr(x)
    """ % expr, shm_name)
    assert out.startswith("TypeError:"), out
    if hint is not None:
        assert hint in out and "cannot be created directly" in out, out


def test_every_reachable_type_called_wrongly_does_not_crash(shm_name):
    """type(x)(...) with wrong or missing arguments for every type reachable
    from dshared, its modules, a segment, views, iterators and lock objects;
    whatever gets built has every method called on it."""
    out = _run("""
        import sys, itertools, dshared, dshared._codec, dshared._heap
        seg = dshared.Segment(sys.argv[1], 1 << 20, create=True)
        try:
            root = seg.col()
            root["d"] = {"a": 1, "b": [2]}
            root["l"] = [1, {"x": 2}]
            d, l = root["d"], root["l"]
            objs = [seg, seg.lock(), seg.check(), d, l, d.keys(), d.values(), d.items(),
                    iter(d), reversed(d), iter(d.keys()), iter(d.values()), iter(d.items()),
                    reversed(d.keys()), reversed(d.items()), iter(l), reversed(l)]
            types = {type(o) for o in objs}
            for mod in (dshared, dshared._codec, dshared._heap):
                types |= {v for v in vars(mod).values() if isinstance(v, type)}
            types = sorted(types, key=lambda t: (t.__module__, t.__qualname__))
            argsets = [(), (None,), (0,), (None, 0), (None, None), (None, None, None),
                       (d,), (l,), (d, 0), (l, 0), (l, 1), (d, 3), (d, 99), (seg,), (seg, None)]
            safe = {"close", "unlink", "lock_acquire"}     # on a made Segment: not the test's
            made = 0
            for t, args in itertools.product(types, argsets):
                if issubclass(t, BaseException) or t is dshared.Segment:
                    continue
                try:
                    x = t(*args)
                except Exception:
                    continue
                made += 1
                for name in sorted(dir(x)):
                    if name in safe or name in ("__del__", "__init_subclass__", "__subclasshook__"):
                        continue
                    try:
                        f = getattr(x, name)
                    except Exception:
                        continue
                    if not callable(f) or isinstance(f, type):
                        continue
                    for a in [(), (0,), (None,), ("a",), (-1,)]:
                        try:
                            f(*a)
                        except Exception:
                            pass
            # a Segment made from wrong arguments is refused
            for args in [(), (None,), (0,), ("",), ("a/b",), (sys.argv[1] + "-absent", 0, False)]:
                try:
                    dshared.Segment(*args)
                except Exception:
                    pass
                else:
                    raise AssertionError("Segment%r was accepted" % (args,))
            print("made", made, "ok")
        finally:
            seg.close()
            seg.unlink()
    """, shm_name)
    assert out.strip().endswith("ok"), out
