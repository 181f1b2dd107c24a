"""The shape of the _codec sources (issue 13): dshared/_codec.pyx is a root
that cimports _heap by name and includes one topic file per concern from
dshared/codec/; no topic file (there or in dshared/heap/) is over 500 lines
and no function over 80.
The test reads the sources as text: no build needed."""
import os
import re

from _helpers import ROOT

CODEC = os.path.join(ROOT, "dshared", "codec")
HEAP = os.path.join(ROOT, "dshared", "heap")
MAX_FILE = 500
MAX_FUNCTION = 80

DEF = re.compile(r"^(\s*)(?:@\S+\s*$|(?:cdef|cpdef|def)\s[^=]*?\b(\w+)\s*\()")


def functions(text):
    """[(name, first line, number of lines)] of every def/cdef/cpdef function
    or method in a Cython source: from its def line to its last line of code
    indented deeper than the def (blank lines and comments within count)."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        m = DEF.match(line)
        if not m or not m.group(2) or not line.rstrip().endswith(":"):
            continue
        if re.match(r"\s*cdef\s+(?:class|struct|enum|extern)\b", line):
            continue
        indent = len(m.group(1))
        end = i + 1
        for j in range(i + 1, len(lines)):
            s = lines[j]
            if not s.strip() or s.lstrip().startswith("#"):
                continue            # neither ends nor extends a function
            if len(s) - len(s.lstrip()) <= indent:
                break
            end = j + 1
        out.append((m.group(2), i + 1, end - i))
    return out


def includes():
    with open(os.path.join(ROOT, "dshared", "_codec.pyx")) as f:
        return re.findall(r'^include "codec/(\w+\.pxi)"\s*$', f.read(), re.M)


def test_root_includes_every_topic_file_once():
    inc = includes()
    assert len(inc) == len(set(inc)), inc
    present = sorted(n for n in os.listdir(CODEC) if n.endswith(".pxi"))
    assert sorted(inc) == present
    for name in ("keys.pxi", "cells.pxi", "plan.pxi", "decode.pxi", "read.pxi", "dictnode.pxi",
                 "listnode.pxi"):
        assert name in inc


def test_root_cimports_heap_by_name():
    with open(os.path.join(ROOT, "dshared", "_codec.pyx")) as f:
        root = f.read()
    assert not re.search(r"^\s*from\s+dshared\._heap\s+cimport\s+\*", root, re.M)
    assert re.search(r"^from dshared\._heap cimport \(", root, re.M)
    # the root is a table of contents: essay, imports, shared constants, includes
    assert len(root.split("\n")) <= 150


def test_no_topic_file_or_function_too_long():
    long_files = []
    long_functions = []
    sources = [("codec/" + n, os.path.join(CODEC, n)) for n in sorted(os.listdir(CODEC))]
    sources += [("heap/" + n, os.path.join(HEAP, n)) for n in sorted(os.listdir(HEAP))]
    for name, path in sources:
        if not name.endswith((".pxi", ".pxd")):
            continue
        with open(path) as f:
            text = f.read()
        n = len(text.rstrip("\n").split("\n"))
        if n > MAX_FILE:
            long_files.append((name, n))
        for fn, line, size in functions(text):
            if size > MAX_FUNCTION and not re.match(r"[A-Z]", fn):     # classes are not functions
                long_functions.append("%s:%d %s: %d lines" % (name, line, fn, size))
    assert not long_files, long_files
    assert not long_functions, long_functions


def test_the_measure_sees_a_long_function():
    """functions() measures what it should: a method and a module-level
    function, comments and blank lines inside them counted, the next def
    not."""
    body = "\n".join("    x = %d" % i for i in range(81))
    src = ("cdef class A:\n    cdef int f(self) except -1:\n%s\n\n    # a comment\n        \n"
           "    def g(self):\n        pass\n\n\ncdef object h(Node node, void *arg):\n%s\n"
           % ("\n".join("    " + l for l in body.split("\n")), body))
    got = {name: size for name, _, size in functions(src)}
    assert got["f"] == 82 and got["g"] == 2 and got["h"] == 82, got
