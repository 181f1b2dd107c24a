"""Types: the stubs (dshared/*.pyi, py.typed) under `mypy --strict` and
pyright (basedpyright, strict), a file of typed usage that both accept and
that runs, a file of wrong usages that both must flag line by line, the stubs
against the runtime (mypy.stubtest), and inspect.signature() of every public
callable."""
import importlib.util
import inspect
import os
import pydoc
import re
import subprocess
import sys

import pytest

import dshared
from _helpers import ROOT

TYPING = os.path.join(ROOT, "tests", "typing")
OK = os.path.join(TYPING, "ok_usage.py")
BAD = os.path.join(TYPING, "bad_usage.py")
STUBS = [os.path.join(ROOT, "dshared", f) for f in ("__init__.pyi", "_heap.pyi", "_collections.pyi", "_codec.pyi")]


def _run(args, cwd, timeout=300):
    r = subprocess.run([sys.executable] + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    return r.returncode, r.stdout


# -- the type checkers ---------------------------------------------------------------

def test_mypy_strict(tmp_path):
    """Zero errors on the stubs and ok_usage.py; on bad_usage.py, every line
    is flagged (each carries a `# type: ignore[code]` that
    --warn-unused-ignores reports if mypy let the line through)."""
    rc, out = _run(["-m", "mypy", "--strict", "--warn-unused-ignores", "--no-error-summary",
                    "--cache-dir", str(tmp_path / "cache"), OK, BAD] + STUBS, cwd=ROOT)
    assert (rc, out) == (0, ""), out


def test_pyright_strict(tmp_path):
    """The same with pyright in strict mode: its `# type: ignore` comments are
    switched off (enableTypeIgnoreComments) so that bad_usage.py's
    `# pyright: ignore[rule]` comments count, and an unneeded one is an error."""
    rc, out = _run(["-m", "basedpyright", "-p", os.path.join(TYPING, "pyrightconfig.json"),
                    "--pythonpath", sys.executable, OK, BAD] + STUBS, cwd=str(tmp_path))
    assert rc == 0, out
    assert "0 errors, 0 warnings" in out, out


def test_every_bad_line_expects_both_checkers():
    """Each statement of bad() is marked for both checkers, so each one is a
    wrong usage that both must flag."""
    with open(BAD) as f:
        body = f.read().split("def bad(", 1)[1].splitlines()[1:]
    lines = [ln for ln in body if ln.strip() and not ln.strip().startswith("print(")]
    assert len(lines) >= 20
    for ln in lines:
        assert re.search(r"# type: ignore\[[a-z-]+\]  # pyright: ignore\[\w+(, \w+)*\]$", ln), ln


def _exists(dotted):
    obj = dshared
    for part in dotted.split(".")[1:]:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _allowlist(dst):
    """stubtest-allowlist.txt without the lines whose names (after "until:")
    all exist at run time: stubtest checks those names as soon as they exist,
    and fails on an allowlist line nothing needs."""
    lines = []
    with open(os.path.join(TYPING, "stubtest-allowlist.txt")) as f:
        for line in f:
            entry, _, comment = line.partition("#")
            names = comment.split("until:", 1)[1].split() if "until:" in comment else None
            if entry.strip() and not (names and all(_exists(n) for n in names)):
                lines.append(entry.strip())
    dst.write_text("\n".join(lines) + "\n")
    return str(dst)


def test_stubs_match_runtime(tmp_path):
    """mypy.stubtest on the dshared that is imported (the installed one in CI),
    with its stubs; what is left out on purpose is in stubtest-allowlist.txt."""
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\ncache_dir = %s\n" % (tmp_path / "cache"))
    rc, out = _run(["-m", "mypy.stubtest", "--mypy-config-file", str(cfg),
                    "--allowlist", _allowlist(tmp_path / "allowlist.txt"), "dshared"],
                   cwd=str(tmp_path))
    assert rc == 0, out


# -- the typed usage runs ---------------------------------------------------------------

def _ok_usage():
    spec = importlib.util.spec_from_file_location("dshared_ok_usage", OK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ok_usage_runs(segment):
    mod = _ok_usage()
    mod.examples(segment)
    # what issue 17 adds in parallel, once it is there
    if all(_exists(n) for n in ("dshared.segments", "dshared.to_python", "dshared.Segment.collections",
                                "dshared.Segment.attached")):
        names, pids, rows, plain = mod.after_merge(segment)
        assert "counters" in names and os.getpid() in pids and rows and isinstance(plain, dict)


def test_ok_usage_module_level_runs(shm_name):
    _ok_usage().module_level(shm_name)


# -- signatures -------------------------------------------------------------------------

def _public_callables():
    for name in dshared.__all__:
        obj = getattr(dshared, name)
        if not callable(obj):
            continue
        # the view types are made by a segment, never by calling them
        if obj not in (dshared.SharedDict, dshared.SharedList):
            yield "dshared." + name, obj
        if isinstance(obj, type) and not issubclass(obj, BaseException):
            for attr in sorted(set(dir(obj)) | {"__enter__", "__exit__"}):
                if attr.startswith("_") and attr not in ("__enter__", "__exit__"):
                    continue
                meth = getattr(obj, attr, None)
                if callable(meth):
                    yield "dshared.%s.%s" % (name, attr), meth
    from dshared._heap import CheckReport
    yield "CheckReport", CheckReport
    for attr in ("__init__", "__bool__"):
        yield "CheckReport." + attr, getattr(CheckReport, attr)


def test_every_public_callable_has_a_signature():
    missing = []
    seen = 0
    for name, obj in _public_callables():
        seen += 1
        try:
            inspect.signature(obj)
        except (ValueError, TypeError) as e:
            missing.append("%s: %s" % (name, e))
    assert seen > 50
    assert not missing, missing


def test_segment_signature_and_help():
    sig = inspect.signature(dshared.Segment)
    assert str(sig) == "(name, size=None, create=None, *, allow_unsafe=False)"
    assert str(inspect.signature(dshared.Segment.lock)) == "(self, /, timeout=None)"
    assert str(inspect.signature(dshared.SharedDict.incr)) == "(self, /, k, delta=1, default=0)"
    text = pydoc.render_doc(dshared.Segment, renderer=pydoc.plaintext)
    assert "Segment(name, size=None, create=None, *, allow_unsafe=False)" in text
    assert "`allow_unsafe`" in text and "col(self, /, name=None)" in text
    # the signature is not repeated in the docstring
    assert not dshared.Segment.__doc__.startswith("Segment(")
    assert not dshared.Segment.col.__doc__.startswith("col(")


@pytest.mark.parametrize("exc", [dshared.DsharedError, dshared.LockTimeout, dshared.SegmentFullError])
def test_exception_signature(exc):
    keywords = ", want=None, free=None, errno=0" if exc is dshared.SegmentFullError else ""
    assert str(inspect.signature(exc)) == "(*args%s)" % keywords
    assert exc("a", 1).args == ("a", 1)
