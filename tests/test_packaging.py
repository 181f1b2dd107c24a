"""Packaging: `python -m build` makes an sdist and, from it, a wheel that
holds the stubs, the .pxd and headers and the extensions but no generated C;
a build without a C compiler stops with a message saying what to install."""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from _helpers import ROOT


def _source_copy(dst):
    """The project's sources, without build outputs."""
    ignore = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "*.so", "*.c", "*.html",
                                    "__pycache__", ".pytest_cache", ".hypothesis", ".benchmarks",
                                    ".mypy_cache", ".venv", "venv", ".whl")
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


def _run(cmd, cwd, env=None, timeout=900):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_build_makes_sdist_and_wheel(tmp_path):
    src = _source_copy(tmp_path / "src")
    r = _run([sys.executable, "-m", "build", "-o", str(tmp_path / "dist"), str(src)], cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-5000:]
    assert "`project.license` as a TOML table is deprecated" not in r.stdout, r.stdout[-5000:]
    assert "is absent from the `packages` configuration" not in r.stdout, r.stdout[-5000:]
    names = sorted(os.listdir(tmp_path / "dist"), key=lambda n: n.endswith(".whl"))
    assert len(names) == 2 and names[0].endswith(".tar.gz") and names[1].endswith(".whl"), names
    with tarfile.open(tmp_path / "dist" / names[0]) as t:
        sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for f in ("setup.py", "pyproject.toml", "README.md", "dshared/_heap.pyx", "dshared/_codec.pyx",
              "dshared/_heap.pxd", "dshared/heap/access.pxd", "dshared/heap/keys.pxd",
              "dshared/include/dshared.h", "dshared/include/dshared_gc.h", "dshared/py.typed", "dshared/__init__.pyi"):
        assert f in sdist, (f, sorted(sdist))
    assert not [n for n in sdist if n.endswith(".c")], sorted(sdist)
    with zipfile.ZipFile(tmp_path / "dist" / names[1]) as z:
        wheel = {n for n in z.namelist() if n.startswith("dshared/")}
    expected = {"dshared/__init__.py", "dshared/_collections.py", "dshared/_errors.py", "dshared/py.typed",
                "dshared/__init__.pyi", "dshared/_heap.pyi", "dshared/_codec.pyi", "dshared/_collections.pyi",
                "dshared/_heap.pxd", "dshared/heap/access.pxd", "dshared/heap/keys.pxd",
                "dshared/include/dshared.h", "dshared/include/dshared_gc.h"}
    # the Redis backend: its Lua script is package data
    expected |= {"dshared/redis/__init__.py", "dshared/redis/_script.lua", "dshared/redis/__init__.pyi"}
    assert expected <= wheel, sorted(expected - wheel)
    assert len([n for n in wheel if n.endswith(".so")]) == 2, sorted(wheel)
    assert not [n for n in wheel if n.endswith(".c")], sorted(wheel)
    with zipfile.ZipFile(tmp_path / "dist" / names[1]) as z:
        meta = z.read([n for n in z.namelist() if n.endswith(".dist-info/METADATA")][0]).decode()
    assert "License-Expression: MIT" in meta, meta[:2000]


@pytest.mark.slow
def test_no_compiler_says_what_to_install(tmp_path):
    src = _source_copy(tmp_path / "src")
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "w"), str(src)],
             cwd=str(tmp_path), env={"CC": "/nonexistent/cc"})
    assert r.returncode != 0, r.stdout[-3000:]
    assert "needs a C compiler and the" in r.stdout, r.stdout[-5000:]
    assert "apt-get install build-essential python3-dev" in r.stdout, r.stdout[-5000:]
    assert "/nonexistent/cc" in r.stdout
    assert not os.path.exists(tmp_path / "w") or not os.listdir(tmp_path / "w")
