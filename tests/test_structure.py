"""The shape of the compiled core: the reads (d[k], d.get(k), k in d, lst[i])
run in _codec without calling into _heap, neither through Segment's vtable
(Segment has no cdef methods any more: its operations are functions of
heap/*.pxi) nor through the function pointers _codec imports from _heap's
C-API capsule.
What they need from _heap (the checked accessors, the probe, the key compare,
the entry and item readers) is inline in _heap.pxd and heap/*.pxd.

The test runs Cython on dshared/_codec.pyx into a temporary directory (no
build tree needed) and reads the generated C: it follows every function of
_codec and every inline function of _heap that a read's C function refers to
and lists the calls into _heap it finds there."""
import os
import re
import subprocess
import sys

import pytest

from _helpers import ROOT

# The read entry points: the C implementations of these methods.
ROOTS = [
    ("DictNode", "__getitem__"),
    ("DictNode", "get"),
    ("DictNode", "__contains__"),
    ("ListNode", "__getitem__"),
]
# The slow path of a read section (a read that overlapped a write or raised:
# retried, in the end under the lock) is not followed.
SLOW = {"__pyx_f_7dshared_6_codec_read_retry", "__pyx_f_7dshared_6_codec_damage"}
# Out-of-line raisers: they only run to raise an exception (the error exits
# of the checked accessors), so a call to one costs nothing on the way that
# returns a value.
COLD = {"seg_bad_block", "seg_bad_view", "seg_raise_faulted", "seg_raise_corrupt", "seg_check_open"}
COLD_POINTERS = {"__pyx_f_7dshared_5_heap_" + n for n in COLD}

FUNC_DEF = re.compile(r"^(?:static |CYTHON_UNUSED |CYTHON_INLINE |__Pyx_[A-Za-z_]+ )*[^\n;(){}]*?\b"
                      r"(__pyx_p?[fw]_7dshared_\w+)\([^;{}]*?\)\s*\{\n", re.M)
REF = re.compile(r"\b(__pyx_(?:pf|f)_7dshared_(?:6_codec|5_heap)_\w+)\b")
VTAB_CALL = re.compile(r"\(\(struct (__pyx_vtabstruct_\w+) \*\)[^;]*?->__pyx_vtab\)->(\w+)\(")
HEAP_POINTER = re.compile(r"\(\*(__pyx_f_7dshared_5_heap_\w+)\)\(")
COMMENT = re.compile(r"/\*.*?\*/", re.S)


def cythonize_codec(root, out_dir):
    """dshared/_codec.pyx of the tree at `root` as C, with setup.py's directives."""
    out = os.path.join(out_dir, "_codec.c")
    cmd = [sys.executable, "-m", "cython", "-3", "-X", "binding=False", "-X", "embedsignature=True",
           "-I", os.path.join(root, "dshared", "include"), "-o", out, os.path.join("dshared", "_codec.pyx")]
    r = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-5000:]
    with open(out) as f:
        return f.read()


def functions(c_source):
    """{C function name: body without comments} of every function definition."""
    out = {}
    for m in FUNC_DEF.finditer(c_source):
        end = c_source.index("\n}\n", m.end())
        out[m.group(1)] = COMMENT.sub("", c_source[m.end():end])
    return out


def read_path_calls(c_source):
    """(the functions followed, [(function, what it calls into _heap)])."""
    funcs = functions(c_source)
    pointers = set(HEAP_POINTER.findall(c_source))      # imported from _heap's capsule (if any)
    todo = []
    for cls, meth in ROOTS:
        pat = re.compile(r"__pyx_pf_7dshared_6_codec_\d+%s_\d*%s$" % (cls, re.escape(meth)))
        found = [n for n in funcs if pat.match(n)]
        assert len(found) == 1, (cls, meth, found)
        todo += found
    seen = set()
    bad = []
    while todo:
        name = todo.pop()
        if name in seen or name in SLOW:
            continue
        seen.add(name)
        body = funcs[name]
        for vtab, meth in VTAB_CALL.findall(body):
            bad.append((name, "vtable call %s.%s" % (vtab, meth)))
        for ref in set(REF.findall(body)):
            if ref in COLD_POINTERS:
                continue
            if ref in pointers:
                bad.append((name, "call through the imported pointer %s" % ref))
            elif ref in funcs:
                todo.append(ref)
    return seen, bad


@pytest.fixture(scope="module")
def codec_c(tmp_path_factory):
    import Cython  # noqa: F401  (a build dependency, and in the test extra)
    return cythonize_codec(ROOT, str(tmp_path_factory.mktemp("codec")))


def test_reads_make_no_call_into_heap(codec_c):
    seen, bad = read_path_calls(codec_c)
    # the walk reached the lookup, the key compare and the decoders
    for name in ("read_section", "_rd_get", "_rd_contains", "_rd_list_get", "decode", "entry_value"):
        assert "__pyx_f_7dshared_6_codec_" + name in seen, (name, sorted(seen))
    for name in ("table_lookup", "key_matches", "block_bytes", "list_len", "list_cells", "view_block"):
        assert "__pyx_f_7dshared_5_heap_" + name in seen, (name, sorted(seen))
    assert not bad, "\n".join("%s: %s" % b for b in bad)


def test_the_guard_sees_a_vtable_call():
    """The patterns match what Cython writes: a read that calls a Segment
    method (not inline) is reported."""
    c = """
static PyObject *__pyx_pf_7dshared_6_codec_8DictNode___getitem__(struct X *self) {
  __pyx_t_1 = __pyx_f_7dshared_6_codec__rd_get(self);
}
static PyObject *__pyx_pf_7dshared_6_codec_8DictNode_2get(struct X *self) {
  /* seg.list_len(off) */
  __pyx_t_1 = __pyx_f_7dshared_5_heap_dict_find(self);
}
static PyObject *__pyx_pf_7dshared_6_codec_8DictNode_4__contains__(struct X *self) {
  return 0;
}
static PyObject *__pyx_pf_7dshared_6_codec_8ListNode_2__getitem__(struct X *self) {
  return 0;
}
static PyObject *__pyx_f_7dshared_6_codec__rd_get(struct X *self) {
  __pyx_t_2 = ((struct __pyx_vtabstruct_7dshared_5_heap_Segment *)__pyx_v_seg->__pyx_vtab)->list_len(__pyx_v_seg, 1);
  __pyx_t_3 = __pyx_f_7dshared_5_heap_seg_bad_block(__pyx_v_seg, 1, 2);
}
static int64_t (*__pyx_f_7dshared_5_heap_dict_find)(struct X *); /*proto*/
static Block *(*__pyx_f_7dshared_5_heap_seg_bad_block)(struct X *, uint64_t, int); /*proto*/
"""
    seen, bad = read_path_calls(c)
    assert sorted(bad) == [
        ("__pyx_f_7dshared_6_codec__rd_get", "vtable call __pyx_vtabstruct_7dshared_5_heap_Segment.list_len"),
        ("__pyx_pf_7dshared_6_codec_8DictNode_2get",
         "call through the imported pointer __pyx_f_7dshared_5_heap_dict_find"),
    ], bad


def test_segment_full_error_says_what_was_asked_and_what_was_free(make_segment):
    """SegmentFullError declares want, free and errno; a failed allocation
    fills them (free counted after the operation was rolled back)."""
    import dshared
    assert {"want", "free", "errno"} <= set(dshared.SegmentFullError.__annotations__)
    plain = dshared.SegmentFullError("no room")
    assert (plain.want, plain.free, plain.errno) == (None, None, 0)
    seg = make_segment(1 << 20)
    root = seg.col()
    root["small"] = "x" * 1000
    with pytest.raises(dshared.SegmentFullError) as info:
        root["big"] = "y" * (2 << 20)
    e = info.value
    assert e.want is not None and e.want > 2 << 20, e.want
    stats = seg.stats()
    assert e.free == stats["capacity"] - 4096 - stats["used"], (e.free, stats)
    assert e.errno == 0
    assert "big" not in root and root["small"] == "x" * 1000



def segment_methods():
    """Names a call seg.name(...) may use: what Python sees on Segment (its
    def methods and properties). Segment declares no cdef method: its
    operations are functions of heap/*.pxi that take the segment."""
    import dshared
    return set(dir(dshared.Segment))


def heap_sources():
    sources = [os.path.join("dshared", "_codec.pyx"), os.path.join("dshared", "_heap.pyx"),
               os.path.join("dshared", "_heap.pxd")]
    for sub in ("heap", "codec"):
        sources += [os.path.join("dshared", sub, n) for n in sorted(os.listdir(os.path.join(ROOT, "dshared", sub)))
                    if n.endswith((".pxi", ".pxd"))]
    sources += [os.path.join("dshared", n) for n in os.listdir(os.path.join(ROOT, "dshared")) if n.endswith(".pxi")]
    return sources


SEG_CALL = re.compile(r"(?:\b(?:seg|self\.seg|self\._seg|node\.seg)|\(<Segment>[\w.]+\))\.(\w+)\(")
SELF_CALL = re.compile(r"\bself\.(\w+)\(")


def test_segment_is_a_state_object():
    """Segment (final) declares fields only: no cdef method in _heap.pxd, and
    every function heap/api.pxd declares is defined in one heap/*.pxi."""
    with open(os.path.join(ROOT, "dshared", "_heap.pxd")) as f:
        pxd = f.read()
    body = pxd[pxd.index("cdef class Segment:"):]
    body = body[:re.search(r"^\S", body[1:], re.M).start() + 1]
    assert "@cython.final\ncdef class Segment:" in pxd
    assert not re.findall(r"^    cdef [^(\n]*\(self\b", body, re.M)
    with open(os.path.join(ROOT, "dshared", "heap", "api.pxd")) as f:
        declared = re.findall(r"^cdef [^(\n]*?\b(\w+)\(Segment seg\b[^:\n]*$", f.read(), re.M)
    assert len(declared) > 80
    defined = {}
    for n in os.listdir(os.path.join(ROOT, "dshared", "heap")):
        if n.endswith(".pxi"):
            with open(os.path.join(ROOT, "dshared", "heap", n)) as f:
                for name in re.findall(r"^cdef [^(\n]*?\b(\w+)\(Segment seg\b", f.read(), re.M):
                    defined.setdefault(name, []).append(n)
    assert [d for d in declared if len(defined.get(d, ())) != 1] == []


def test_code_calls_only_segment_methods_that_exist():
    """A cdef method of Segment became a function of heap/*.pxi taking the
    segment; a call left as seg.method() would compile into a Python
    attribute lookup that fails only when it runs: every seg.name(...) in the
    Cython sources names a method Python sees on Segment."""
    names = segment_methods()
    assert {"col", "stats", "check", "lock", "transaction"} <= names
    assert not {"lock_acquire", "write_begin", "commit", "alloc"} & names
    missing = []
    for src in heap_sources():
        with open(os.path.join(ROOT, src)) as f:
            for no, line in enumerate(f, 1):
                calls = SEG_CALL.findall(line.split("#")[0])
                if src == os.path.join("dshared", "heap", "segment.pxi"):     # Segment's own methods
                    calls += SELF_CALL.findall(line.split("#")[0])
                for name in calls:
                    if name not in names:
                        missing.append("%s:%d: seg.%s()" % (src, no, name))
    assert not missing, missing
    assert SEG_CALL.findall("            seg.block(off, K_DICT)") == ["block"]
    assert SEG_CALL.findall("            self.seg.commit()") == ["commit"]
    assert SEG_CALL.findall("        (<Segment>seg)._own_file_description()") == ["_own_file_description"]
