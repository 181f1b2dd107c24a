"""CPython's own protocol suites for dict and list, run against SharedDict and
SharedList: ``test.mapping_tests.TestHashMappingProtocol`` and
``test.list_tests.CommonTest`` (which includes ``test.seq_tests.CommonTest``),
unchanged except for the overrides below.

``type2test`` is a factory class: calling it stores a fresh empty container
in a segment, reads the view back and runs its ``__init__`` with the call's
arguments, so ``type2test(x)`` exercises ``SharedList.__init__`` /
``SharedDict.__init__`` as ``list(x)`` / ``dict(x)`` would be exercised.

Every override below is one of the deliberate differences listed in the
README ("How it differs from dict and list"), with the reason next to it.
"""
import gc
import itertools
import os
import uuid


# the stdlib's test package (in every python.org / pyenv build; some Linux
# distributions ship it separately): a missing one fails the run, never skips it
from test import list_tests, mapping_tests

import dshared

_state = {}


def setUpModule():
    name = "dsh-test-%d-proto-%s" % (os.getpid(), uuid.uuid4().hex[:8])
    seg = dshared.Segment(name, 256 << 20, create=True)
    _state["seg"] = seg
    _state["root"] = seg.col()


def tearDownModule():
    seg = _state.pop("seg")
    _state.clear()
    seg.close()
    seg.unlink()


_counter = itertools.count()


def _new(empty, args, kw):
    root = _state["root"]
    key = "o%d" % next(_counter)
    root[key] = empty
    view = root[key]
    view.__init__(*args, **kw)
    return view


class SharedListFactory:
    """type2test for lists: SharedListFactory(x) is a SharedList equal to list(x)."""

    def __new__(cls, *args, **kw):
        return _new([], args, kw)


class SharedDictFactory:
    """type2test for dicts: SharedDictFactory(x, **kw) is a SharedDict equal to dict(x, **kw)."""

    def __new__(cls, *args, **kw):
        return _new({}, args, kw)

    fromkeys = dshared.SharedDict.fromkeys


def _skip_reason(reason):
    def test(self):
        pass
    test.__doc__ = "Deliberate difference: " + reason
    return test


def _fails_only_on_unsupported(base):
    """The base test stores an object of a user class (one whose __eq__,
    __hash__ or __repr__ raises or counts calls): dshared stores only None,
    bool, int, float, str, bytes, tuples, lists and dicts, so the test must
    stop at that store with UnsupportedTypeError, after passing every check
    before it."""
    def test(self):
        with self.assertRaises(dshared.UnsupportedTypeError):
            base(self)
    test.__doc__ = _fails_only_on_unsupported.__doc__
    return test


class SharedListProtocol(list_tests.CommonTest):
    type2test = SharedListFactory

    # user objects as items (README: supported types)
    test_contains_fake = _fails_only_on_unsupported(list_tests.CommonTest.test_contains_fake)
    test_contains_order = _fails_only_on_unsupported(list_tests.CommonTest.test_contains_order)
    test_count = _fails_only_on_unsupported(list_tests.CommonTest.test_count)
    test_index = _fails_only_on_unsupported(list_tests.CommonTest.test_index)
    test_remove = _fails_only_on_unsupported(list_tests.CommonTest.test_remove)

    def test_free_after_iterating(self):
        """The base test subclasses type2test to watch __del__: a SharedList
        has no free-standing (sub)class instances (README). What it checks
        is kept: an exhausted iterator lets go of the list when the running
        Python's list iterators do (from 3.13 a reverse one keeps it)."""
        lst = self.type2test([1])
        ref = [1]
        for make in (iter, reversed):
            it, ref_it = make(lst), make(ref)
            self.assertEqual(list(it), list(ref_it))
            self.assertRaises(StopIteration, next, it)
            self.assertRaises(StopIteration, next, ref_it)
            self.assertEqual(any(x is lst for x in gc.get_referents(it)),
                             any(x is ref for x in gc.get_referents(ref_it)))


class SharedDictProtocol(mapping_tests.TestHashMappingProtocol):
    type2test = SharedDictFactory

    # user objects as keys or values (README: supported types)
    test_eq = _fails_only_on_unsupported(mapping_tests.TestHashMappingProtocol.test_eq)
    test_getitem = _fails_only_on_unsupported(mapping_tests.TestHashMappingProtocol.test_getitem)
    test_pop = _fails_only_on_unsupported(mapping_tests.TestHashMappingProtocol.test_pop)
    test_repr = _fails_only_on_unsupported(mapping_tests.TestHashMappingProtocol.test_repr)
    test_setdefault = _fails_only_on_unsupported(mapping_tests.TestHashMappingProtocol.test_setdefault)

    def test_copy(self):
        """copy() is a plain dict of the top level (README), not a SharedDict."""
        d = self._full_mapping({1: 1, 2: 2, 3: 3})
        self.assertEqual(d.copy(), {1: 1, 2: 2, 3: 3})
        d = self._empty_mapping()
        self.assertEqual(d.copy(), d)
        self.assertIs(type(d.copy()), dict)
        self.assertRaises(TypeError, d.copy, None)

    def test_fromkeys(self):
        """The base test up to its subclass checks: fromkeys returns a plain
        dict (README: a SharedDict cannot be free-standing), so the checks
        that dictlike.fromkeys() returns a dictlike are replaced by checks
        that it is a dict."""
        self.assertEqual(self.type2test.fromkeys('abc'), {'a': None, 'b': None, 'c': None})
        d = self._empty_mapping()
        self.assertTrue(not (d.fromkeys('abc') is d))
        self.assertEqual(d.fromkeys('abc'), {'a': None, 'b': None, 'c': None})
        self.assertEqual(d.fromkeys((4, 5), 0), {4: 0, 5: 0})
        self.assertEqual(d.fromkeys([]), {})

        def g():
            yield 1
        self.assertEqual(d.fromkeys(g()), {1: None})
        self.assertRaises(TypeError, d.fromkeys, 3)
        self.assertRaises(TypeError, d.fromkeys)
        self.assertIs(type(d.fromkeys('a')), dict)
        self.assertIs(type(dshared.SharedDict.fromkeys('a')), dict)

        class Exc(Exception):
            pass

        class BadSeq(object):
            def __iter__(self):
                return self

            def __next__(self):
                raise Exc()

        self.assertRaises(Exc, self.type2test.fromkeys, BadSeq())
        self.assertRaises(Exc, d.fromkeys, BadSeq())
