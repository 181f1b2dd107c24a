"""Every recipe in examples/ runs, as a user runs it (`python
examples/NAME.py`, in a fresh process), prints its result, and removes its
segment. Each gets a unique segment name through DSHARED_EXAMPLE_NAME."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHM = "/dev/shm"

# recipe -> lines its output must contain
EXPECTED = {
    "pool_progress": ["progress 40/40", "done 40/40, sum 20540"],
    "mapreduce": ["lines 2000, words ", "matches a serial count: True"],
    # the cache may render a page twice when two workers miss it at once
    "gunicorn_app": ["hits 200, pages rendered 5, cached "],
    "asyncio_service": ["greeting ['hello', 'hello'], requests 45",
                        "counter 40 (exact), seen by every server: True"],
    "job_queue": ["60 jobs, 60 results, all correct: True"],
    # 4 gunicorn workers, 8 client threads: each report computed exactly once
    "memoize_web": ["requests 400, reports computed 8, served from the cache 392"],
}


def _segments(name):
    return sorted(n for n in os.listdir(SHM) if n.startswith(name) or n.startswith("." + name))


def test_every_recipe_is_tested():
    recipes = {f[:-3] for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")}
    assert recipes - {"quickstart"} == set(EXPECTED)      # quickstart: tests/test_foundation.py


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_recipe(recipe, tmp_path):
    name = "dsh-test-%d-ex-%s" % (os.getpid(), recipe.replace("_", "-"))
    env = dict(os.environ, DSHARED_EXAMPLE_NAME=name)
    try:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", recipe + ".py")],
                           cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stderr == "", r.stderr
        lines = r.stdout.splitlines()
        for want in EXPECTED[recipe]:
            assert any(line.startswith(want) for line in lines), (want, r.stdout)
        assert _segments(name) == [], "the recipe left its segment behind"
    finally:
        for n in _segments(name):
            os.unlink(os.path.join(SHM, n))


def test_recipes_have_docstrings():
    import ast
    for recipe in EXPECTED:
        with open(os.path.join(ROOT, "examples", recipe + ".py"), encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        assert doc and "DSHARED_EXAMPLE_NAME" in doc, recipe
