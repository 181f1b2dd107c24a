# A write's arguments read as Python's own list and dict read them: the items
# of an iterable for extend(), the pairs of a mapping or of an iterable of
# pairs for update() (included by _codec.pyx at module level).
#
# The cyclic GC is off while they are read: a collection every 700 new
# objects would traverse all the others again (ten update() calls of
# 100,000 pairs cost ~100 ns more per pair with it on).

cdef extern from "dshared_gc.h":
    int ds_gc_disable()
    void ds_gc_enable()

cdef extern from "Python.h":
    int PyDict_Next(object p, Py_ssize_t *ppos, PyObject **pkey, PyObject **pvalue)


cpdef list as_list(object values):
    """The items of an iterable as list.extend takes them: through iter(),
    consulting __length_hint__ (whose errors propagate) only as a hint, so a
    huge hint allocates nothing."""
    if type(values) is list or type(values) is tuple:
        return list(values)
    it = iter(values)
    length_hint(values)
    return [x for x in it]


cpdef list mapping_items(object m):
    """The (key, value) pairs of a mapping as dict(m) and dict.update(m) take
    them: a dict, or a dict subclass that keeps dict's __iter__, is read
    directly (its own keys() and __getitem__ are not called, as CPython's
    dict_merge); anything else through list(m.keys()) and m[k] (so an
    OrderedDict gives its own order)."""
    cdef int was = ds_gc_disable()
    try:
        return _mapping_items(m)
    finally:
        if was:
            ds_gc_enable()


cdef inline bint _plain_dict(object m):
    """m is read directly, as CPython's dict_merge reads it."""
    return type(m) is dict or (PyDict_Check(m) and type(m).__iter__ is dict.__iter__)


cdef list _mapping_keys(object m):
    """list(m.keys()), with dict.update's error for keys() that is not iterable."""
    keys = m.keys()
    if type(keys) is not list:
        try:
            it = iter(keys)
        except TypeError:
            raise TypeError("%s.keys() returned a non-iterable (type %s)"
                            % (type(m).__name__, type(keys).__name__)) from None
        keys = list(it)
    return keys


cdef list _mapping_items(object m):
    if _plain_dict(m):
        return list(dict.items(m))
    return [(k, m[k]) for k in _mapping_keys(m)]


cpdef list update_flat(object other, bint mapping):
    """What update() stores, as one flat list [k0, v0, k1, v1, ...]: the
    pairs of a mapping (mapping=True, read as mapping_items reads it) or of
    an iterable of pairs as dict.update reads them (PySequence_Fast: a list
    or tuple as is, anything else through its iterator), with
    dict.update's errors. No tuple is made
    per pair (a zip's result tuple is reused when nothing keeps it): 72
    bytes of process memory a pair fewer, and no collection to traverse
    them."""
    cdef int was = ds_gc_disable()
    cdef Py_ssize_t pos = 0
    cdef PyObject *k
    cdef PyObject *v
    cdef list flat
    try:
        if not mapping:
            return _update_pairs(other)
        flat = []
        if _plain_dict(other):
            while PyDict_Next(other, &pos, &k, &v):
                flat.append(<object>k)
                flat.append(<object>v)
            return flat
        for key in _mapping_keys(other):
            flat.append(key)
            flat.append(other[key])
        return flat
    finally:
        if was:
            ds_gc_enable()


cdef list _update_pairs(object other):
    cdef list flat = []
    cdef Py_ssize_t i = 0, n
    for item in other:
        if type(item) is not tuple and type(item) is not list:
            try:
                item = list(iter(item))
            except TypeError:
                raise TypeError("cannot convert dictionary update sequence element #%d to a "
                                "sequence" % i) from None
        n = len(item)
        if n != 2:
            raise ValueError("dictionary update sequence element #%d has length %d; 2 is required"
                             % (i, n))
        flat.append(item[0])
        flat.append(item[1])
        i += 1
    return flat
