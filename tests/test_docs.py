"""The documentation runs: every ```python block of docs/**/*.md and
README.md is executed (each page's blocks in order, as one program, in a
fresh process), and the site builds with `mkdocs build --strict`.

The pages name their segment "mymem"; the test gives each page a unique name
(dsh-test-<pid>-docs-...) in its place, and a page must remove the segments
it creates. A block fenced as ```python {.no-run} (a server's configuration
file, say) only illustrates and is not run (the braces keep the fence valid
for the site's Markdown, which accepts only attributes there)."""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
SHM = "/dev/shm"
PLACEHOLDER = "mymem"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                    re.M | re.S)


def python_blocks(text):
    """The code of the ```python blocks of a Markdown text, in order, except
    those whose fence info says no-run (```python {.no-run})."""
    out = []
    for m in _FENCE.finditer(text):
        info = m.group("info").split()
        if info[:1] == ["python"] and not any("no-run" in word for word in info[1:]):
            out.append(textwrap.dedent(m.group("body")))
    return out


def _pages():
    pages = [os.path.join(ROOT, "README.md")]
    for d, _, files in sorted(os.walk(DOCS)):
        pages += [os.path.join(d, f) for f in sorted(files) if f.endswith(".md")]
    return pages


def _with_code():
    out = []
    for p in _pages():
        with open(p, encoding="utf-8") as f:
            if python_blocks(f.read()):
                out.append(os.path.relpath(p, ROOT))
    return out


PAGES = _with_code()


def test_extractor():
    text = "a\n```python\nx = 1\n```\n```python {.no-run}\ny = 2\n```\n```bash\nls\n```\n  ```python\n  z = 3\n  ```\n"
    assert python_blocks(text) == ["x = 1\n", "z = 3\n"]
    # the pages that must have runnable code do
    for page in ["README.md", "docs/getting-started.md", "docs/differences.md",
                 "docs/guides/multiprocessing.md", "docs/guides/caching.md",
                 "docs/guides/operations.md", "docs/guides/web-workers.md", "docs/index.md"]:
        assert page in PAGES


def _segments(name):
    return sorted(n for n in os.listdir(SHM) if n.startswith(name) or n.startswith("." + name))


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, tmp_path):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    slug = re.sub(r"[^a-z0-9]+", "-", page.lower()).strip("-")
    name = "dsh-test-%d-docs-%s" % (os.getpid(), slug)
    code = "\n\n".join(b.replace(PLACEHOLDER, name) for b in blocks)
    script = tmp_path / "page.py"
    script.write_text(code, encoding="utf-8")
    try:
        # run from tmp_path: the checkout's dshared/ (maybe not built) must
        # not shadow the installed one; PYTHONPATH is inherited
        r = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, "%s failed:\n%s\n%s" % (page, r.stdout, r.stderr)
        assert r.stderr == "", "%s wrote on stderr:\n%s" % (page, r.stderr)
        assert _segments(name) == [], "%s left its segment behind" % page
    finally:
        for n in _segments(name):
            os.unlink(os.path.join(SHM, n))


def _mkdocs():
    """The mkdocs script beside this Python (the venv's), else on PATH."""
    exe = os.path.join(os.path.dirname(sys.executable), "mkdocs")
    return exe if os.path.exists(exe) else shutil.which("mkdocs")


def test_site_builds_strict(tmp_path):
    """mkdocs build --strict: a broken link or anchor, a missing page, an
    API entry that cannot be collected or a missing snippet fails it."""
    exe = _mkdocs()
    assert exe, "mkdocs is not installed: it is in the test extra (pip install '.[test]')"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # no -q: it hides warnings from --strict's count (a broken anchor passes)
    r = subprocess.run([exe, "build", "--strict", "-f", os.path.join(ROOT, "mkdocs.yml"),
                        "-d", str(tmp_path / "site")], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    # the reference holds the docstrings (from the compiled modules too)
    # and the stubs' signatures
    assert "created empty on first use" in api
    assert "Atomically add delta" in api
    assert "allow_unsafe" in api
    assert (tmp_path / "site" / "bench" / "results.png").exists()
    differences = (tmp_path / "site" / "differences" / "index.html").read_text(encoding="utf-8")
    assert "NaN keys" in differences and "--8&lt;--" not in differences
    # every fence was understood: none shows as text (an info string the
    # Markdown does not accept leaves the block, and what follows, raw)
    for d, _, files in os.walk(str(tmp_path / "site")):
        for f in files:
            if f.endswith(".html"):
                with open(os.path.join(d, f), encoding="utf-8") as fh:
                    assert "```" not in fh.read(), os.path.join(d, f)
