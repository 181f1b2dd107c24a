# Cache mode: MemoCore, the C part of a memoized function (included by
# _codec.pyx after codec/cacheset.pxi).


ctypedef PyObject *(*memo_vc_t)(PyObject *, PyObject **, size_t, PyObject *) except NULL


cdef class MemoCore:
    """The C part of a memoized function (dshared._cache._Memoized): the hit
    path. Calls come through vectorcall (memo_vectorcall): a one-argument call
    builds no argument tuple and no keyword dict."""
    cdef void *_vc                  # the vectorcall function (read by CPython at tp_vectorcall_offset)
    cdef public CacheCore _cache    # the SharedCache, None until first use (and after a fork)
    cdef public bint _typed

    def __cinit__(self, *args, **kwargs):
        cdef PyTypeObject_vc *t = <PyTypeObject_vc *>Py_TYPE(self)
        self._vc = <void *><memo_vc_t>memo_vectorcall
        if not (t.tp_flags & Py_TPFLAGS_HAVE_VECTORCALL):
            # CPython 3.11 passes the flag on to no Python subclass: set on each
            t.tp_vectorcall_offset = <Py_ssize_t>(<char *>&self._vc - <char *><PyObject *>self)
            t.tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL

    def __call__(self, *args, **kwargs):
        return memo_call(self, args, kwargs)


cdef PyObject *memo_vectorcall(PyObject *callable, PyObject **args, size_t nargsf,
                               PyObject *kwnames) except NULL:
    """A call of a memoized function. One str or int argument: the hit path
    here, in C (borrowed references only); anything else through memo_one or
    memo_slow."""
    cdef PyObject *a0
    cdef PyObject *c
    cdef void *t
    if PyVectorcall_NARGS(nargsf) != 1 or kwnames != NULL:
        r = memo_slow(<MemoCore>callable, args, PyVectorcall_NARGS(nargsf), kwnames)
    else:
        a0 = args[0]
        c = <PyObject *>(<MemoCore>callable)._cache
        t = <void *>Py_TYPE(<object>a0)
        if c != <PyObject *>None and not (<MemoCore>callable)._typed and (t == <void *>str or t == <void *>int):
            # a str or int argument is its own key, and a valid one
            r = cc_lookup(<CacheCore>c, <object>a0, _MISS, True)
            if r is _MISS:
                r = memo_compute(<MemoCore>callable, <CacheCore>c, <object>a0, (<object>a0,), {})
        else:
            r = memo_one(<MemoCore>callable, <object>a0)
    Py_INCREF(r)
    return <PyObject *>r


cdef object memo_slow(MemoCore m, PyObject **args, Py_ssize_t n, PyObject *kwnames):
    """The arguments as a tuple and a dict, for memo_call."""
    cdef Py_ssize_t i, nk
    cdef tuple targs = PyTuple_New(n)
    cdef dict kw = {}
    for i in range(n):
        a = <object>args[i]
        Py_INCREF(a)
        PyTuple_SET_ITEM(targs, i, a)
    if kwnames != NULL:
        nk = PyTuple_GET_SIZE(<object>kwnames)
        for i in range(nk):
            kw[<object>PyTuple_GET_ITEM(<object>kwnames, i)] = <object>args[n + i]
    return memo_call(m, targs, kw)


cdef object memo_one(MemoCore m, object a):
    """f(a): a str or int is its own key (as in functools.lru_cache, f(1) and
    f(True) are two calls); anything else the key (a,)."""
    cdef CacheCore c = m._cache
    if c is None or m._typed:
        return m._call((a,), {})
    t = type(a)
    key = a if (t is str or t is int) else (a,)
    try:
        r = cc_lookup(c, key, _MISS, True)
    except (TypeError, UnsupportedTypeError):
        return m._call((a,), {})
    if r is not _MISS:
        return r
    if key is not a:
        m._check_key(key, (a,), {})     # a tuple that no stored key matches may not be a key
    return memo_compute(m, c, key, (a,), {})


cdef object memo_call(MemoCore m, tuple args, dict kwargs):
    if PyTuple_GET_SIZE(args) == 1 and not kwargs:
        return memo_one(m, <object>PyTuple_GET_ITEM(args, 0))
    return m._call(args, kwargs)


cdef int64_t _memo_me = 0     # this process's marker (_cache._marker()), 0 until asked for


def _forget_marker():
    """In a forked child: another process, another marker."""
    global _memo_me
    _memo_me = 0


cdef inline int64_t memo_marker(MemoCore m) except? -1:
    global _memo_me
    if _memo_me == 0:
        _memo_me = m._marker()
    return _memo_me


cdef object memo_compute(MemoCore m, CacheCore c, object key, tuple args, dict kwargs):
    """A memoized call that missed: claim the key, compute, store and drop the
    claim; when another process holds the claim, wait in Python (_miss)."""
    cdef DictNode pending = c._pending
    cdef int64_t me = memo_marker(m)
    try:
        state, got = cc_claim(c, pending, key, me, 0)
    except SegmentFullError:
        return m._miss(key, args, kwargs)
    if state == 1:
        return got
    if state != 0:
        return m._miss(key, args, kwargs)
    done = False
    try:
        value = m.__wrapped__(*args, **kwargs) if kwargs else m.__wrapped__(*args)
        cc_set_release(c, key, value, None, pending, me)
        done = True
    finally:
        if not done:
            cc_release(c, pending, key, me)
    return value
