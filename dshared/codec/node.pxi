# Node, the view type under SharedDict and SharedList, and the functions that
# make views (included by _codec.pyx at module level).

cdef extern from *:
    """
    /* A new instance of a view type through its C-level tp_new (the type is
       SharedDict/SharedList, whose tp_new is the node type's): no Python call.
       The one argument is a token that only this module holds: Node.__cinit__
       refuses every other call, so Python code cannot make a view with no
       segment behind it. */
    static PyObject *ds_view_args;
    static inline int ds_set_view_token(PyObject *token) {
        if (!ds_view_args && !(ds_view_args = PyTuple_Pack(1, token)))
            return -1;
        return 0;
    }
    static inline PyObject *ds_new_view(PyObject *type) {
        return ((PyTypeObject *)type)->tp_new((PyTypeObject *)type, ds_view_args, NULL);
    }
    """
    int ds_set_view_token(object token) except -1
    object ds_new_view(object type)


cdef object _VIEW_TOKEN = object()
ds_set_view_token(_VIEW_TOKEN)


# SharedDict / SharedList, registered by dshared._collections
cdef object DictType = None
cdef object ListType = None


def register_types(dict_type, list_type):
    global DictType, ListType
    DictType = dict_type
    ListType = list_type


cdef class Node:
    """A view of a shared container: segment + block offset + generation."""
    cdef Segment seg
    cdef uint64_t off
    cdef uint32_t gen

    def __cinit__(self, *args):
        # Only make_view and _rebuild make views (with the module's token); a
        # view built by Python code would have no segment behind it.
        if PyTuple_GET_SIZE(args) != 1 or <PyObject *>PyTuple_GET_ITEM(args, 0) != <PyObject *>_VIEW_TOKEN:
            name = type(self).__name__
            raise TypeError("%s cannot be created directly: it is a view of a container in a "
                            "segment. Store a %s in one (shm['k'] = %s) and read it back "
                            "(shm['k']), or use dshared.col() for a top-level SharedDict"
                            % (name, "dict" if isinstance(self, DictNode) else "list",
                               "{}" if isinstance(self, DictNode) else "[]"))

    @property
    def segment(self):
        """The Segment this view belongs to."""
        return self.seg

    def _identity(self):
        return (id(self.seg), self.off)

    def __reduce__(self):
        # a reference, never the contents: the receiver attaches by name
        return (_rebuild, (self.seg.name, isinstance(self, DictNode), self.off, self.gen))

    def to_python(self):
        """A plain deep copy: dicts, lists, tuples; shape and cycles kept."""
        return read_section(self, _rd_deep, NULL, LONG_READ_TRIES)

    cdef int check(self, int kind) except -1:
        view_block(self.seg, self.off, self.gen, kind)
        return 0


def _rebuild(name, is_dict, off, gen):
    from dshared._heap import attach_cached
    cdef Segment seg = attach_cached(name)
    cdef Node node = <Node>ds_new_view(DictType if is_dict else ListType)
    node.seg = seg
    node.off = off
    node.gen = gen
    return node


def root_view(Segment seg, name=None):
    """The root SharedDict of seg, or the named top-level dict `name`."""
    cdef Node names
    seg_check_open(seg)
    if name is None:
        return make_view(seg, seg.hdr.root, K_DICT, checked_block(seg, seg.hdr.root, K_DICT).gen)
    names = <Node>make_view(seg, seg.hdr.names, K_DICT, checked_block(seg, seg.hdr.names, K_DICT).gen)
    return (<DictNode>names).setdefault_view(name)


def names_view(Segment seg):
    """The dict of seg's named collections: name -> SharedDict."""
    seg_check_open(seg)
    return make_view(seg, seg.hdr.names, K_DICT, checked_block(seg, seg.hdr.names, K_DICT).gen)


def _nt_target(Node node not None, key, bint keyed):
    """(segment, offset, generation, kind, bucket) of a wait on a container
    or, `keyed`, on one key of a dict. StaleReferenceError if it is gone."""
    cdef Key k
    cdef int kind = K_DICT if isinstance(node, DictNode) else K_LIST
    cdef unsigned b
    node.check(kind)
    if keyed:
        owner = make_key(node.seg, key, &k, True)
        b = ds_nt_bucket_k(node.off, k.hash)
    else:
        b = ds_nt_bucket_c(node.off)
    return (node.seg, node.off, node.gen, kind, b)
