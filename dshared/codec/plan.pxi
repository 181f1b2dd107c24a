# The Plan: a write's blocks laid out outside the lock, allocated and filled
# under it (included by _codec.pyx at module level).

cdef struct PBlock:
    int kind
    uint64_t payload
    uint64_t off
    uint32_t rc
    const char *data
    uint64_t len
    uint64_t flags
    uint64_t first
    uint64_t n

cdef struct PCell:
    Cell cell
    int64_t ref                 # REF_NONE, REF_EXISTING or a plan block index
    uint32_t gen
    uint64_t hash               # dict entries: the key's hash (on the key cell)


# Where a Plan is: its blocks laid out only, or allocated and filled (then
# rollback() frees them again).
cdef enum PlanState:
    PLAN_PLANNED = 0
    PLAN_MATERIALIZED = 1


cdef struct MemoSlot:
    uint64_t addr               # the object's address (0: an empty slot)
    int64_t bi                  # the plan block made for it


cdef inline uint64_t memo_slot0(uint64_t addr, uint64_t mask) noexcept nogil:
    """Objects made one after another lie close together, and so do their
    slots (the misses of a big list's items stay in few lines); the higher
    bits folded in spread objects at a large common stride (page-aligned
    big objects)."""
    cdef uint64_t a = addr >> 3
    return (a ^ (a >> 9) ^ (a >> 21)) & mask


@cython.final
cdef class Plan:
    """Everything one write stores, laid out before the lock is taken."""
    cdef Segment seg
    cdef PBlock *blocks
    cdef PCell *cells
    cdef uint64_t nblocks, capblocks, ncells, capcells
    cdef list keep
    # objects already planned -> their block (an object reached twice is
    # stored once): a C table keyed by address (the objects are kept alive
    # in `keep`); a Python dict keyed by id() made an int per object and
    # left the cache past ~100k values (10% of a big extend())
    cdef MemoSlot *memo
    cdef uint64_t mcap, mcount
    cdef dict kmemo
    cdef list stack
    cdef PlanState state

    def __cinit__(self, Segment seg):
        self.seg = seg
        self.keep = []
        self.kmemo = {}

    def __dealloc__(self):
        free(self.blocks)
        scratch_give(SCR_PLAN, self.cells, self.capcells * sizeof(PCell))
        free(self.memo)

    cdef int64_t memo_get(self, object o) noexcept:
        """The block planned for object o, or -1."""
        cdef uint64_t addr = <uint64_t><PyObject *>o, mask, i
        if self.mcap == 0:
            return -1
        mask = self.mcap - 1
        i = memo_slot0(addr, mask)
        while self.memo[i].addr != 0:
            if self.memo[i].addr == addr:
                return self.memo[i].bi
            i = (i + 1) & mask
        return -1

    cdef int memo_put(self, object o, int64_t bi) except -1:
        """Remember that object o (kept alive by the caller) is block bi."""
        cdef uint64_t addr = <uint64_t><PyObject *>o, mask, i
        if (self.mcount + 1) * 2 > self.mcap:
            self.memo_grow()
        mask = self.mcap - 1
        i = memo_slot0(addr, mask)
        while self.memo[i].addr != 0 and self.memo[i].addr != addr:
            i = (i + 1) & mask
        if self.memo[i].addr == 0:
            self.mcount += 1
        self.memo[i].addr = addr
        self.memo[i].bi = bi
        return 0

    cdef int memo_grow(self) except -1:
        cdef uint64_t ncap = self.mcap * 2 if self.mcap else 64, mask = ncap - 1, i, j
        cdef MemoSlot *g = <MemoSlot *>calloc(ncap, sizeof(MemoSlot))
        if g == NULL:
            raise MemoryError()
        for j in range(self.mcap):
            if self.memo[j].addr != 0:
                i = memo_slot0(self.memo[j].addr, mask)
                while g[i].addr != 0:
                    i = (i + 1) & mask
                g[i] = self.memo[j]
        free(self.memo)
        self.memo = g
        self.mcap = ncap
        return 0

    cdef int64_t new_block(self, int kind, uint64_t payload) except -1:
        cdef PBlock *g
        if self.nblocks == self.capblocks:
            g = <PBlock *>realloc(self.blocks, (self.capblocks * 2 + 8) * sizeof(PBlock))
            if g == NULL:
                raise MemoryError()
            self.blocks = g
            self.capblocks = self.capblocks * 2 + 8
        memset(&self.blocks[self.nblocks], 0, sizeof(PBlock))
        self.blocks[self.nblocks].kind = kind
        self.blocks[self.nblocks].payload = payload
        self.nblocks += 1
        return self.nblocks - 1

    cdef int64_t new_cells(self, uint64_t n, uint64_t room=0) except -1:
        cdef uint64_t want          # n cells, with room for `room` (at least n) in all
        cdef size_t got
        if self.ncells + max(n, room) > self.capcells:
            want = max(self.capcells * 2, self.ncells + max(n, room)) + 8
            self.cells = <PCell *>scratch_grow(SCR_PLAN, self.cells, want * sizeof(PCell), &got)
            self.capcells = got // sizeof(PCell)
        memset(&self.cells[self.ncells], 0, n * sizeof(PCell))
        for i in range(self.ncells, self.ncells + n):
            self.cells[i].ref = REF_NONE
        self.ncells += n
        return self.ncells - n

    cdef inline void ref_block(self, int64_t ci, uint8_t tag, int64_t bi) noexcept:
        self.cells[ci].cell.b[0] = tag
        self.cells[ci].ref = bi
        self.blocks[bi].rc += 1

    cdef int64_t bytes_block(self, int kind, object owner, const char *data, uint64_t n, uint64_t flags) except -1:
        cdef int64_t bi = self.new_block(kind, bytes_hdr_size(kind) + n)
        self.keep.append(owner)
        self.blocks[bi].data = data
        self.blocks[bi].len = n
        self.blocks[bi].flags = flags
        return bi

    cdef int64_t add_root(self, object v) except -1:
        """Plan value v; returns the index of its cell."""
        cdef int64_t ci = self.new_cells(1)
        self.stack = []
        self.encode(v, ci, 0)
        self.walk()
        return ci

    cdef int64_t add_pair(self, object k, const Key *key, object v) except -1:
        """Plan a (key, value) pair as two consecutive cells, packed when they
        fit; returns the index of the first."""
        cdef int64_t ci = self.new_cells(2)
        cdef Cell tmp[2]
        if pack_pair(tmp, k, key, v):
            self.cells[ci].cell = tmp[0]          # plan cells are not contiguous Cells
            self.cells[ci + 1].cell = tmp[1]
            return ci
        self.encode_key(k, ci)
        self.stack = []
        self.encode(v, ci + 1, 0)
        self.walk()
        return ci

    cdef int64_t add_key(self, object k) except -1:
        """Plan key k (its stored form); returns the index of its cell."""
        cdef int64_t ci = self.new_cells(1)
        self.encode_key(k, ci)
        return ci

    cdef bint pack_cells(self, int64_t ci, object k, object v) except -1:
        """Turn the planned key cell ci (a short str) and its value v into a
        packed pair, if they fit."""
        cdef Key key
        cdef Cell tmp[2]
        owner = make_key(self.seg, k, &key)
        if not pack_pair(tmp, k, &key, v):
            return False
        self.cells[ci].cell = tmp[0]              # plan cells are not contiguous Cells
        self.cells[ci + 1].cell = tmp[1]
        return True

    cdef int encode_key(self, object k, int64_t ci) except -1:
        cdef Key key
        cdef Cell *c
        cdef int64_t bi
        cdef double f
        cdef int64_t iv
        owner = make_key(self.seg, k, &key)
        self.cells[ci].hash = key.hash
        c = &self.cells[ci].cell
        if key.ctag == T_STR:
            if key.len <= INLINE_MAX:
                cell_inline(c, T_SSTR, key.data, key.len, PyUnicode_IS_ASCII(k))
                return 0
            bi = self.memo_get(k)
            if bi < 0:
                bi = self.bytes_block(K_STR, owner, key.data, key.len, 1 if PyUnicode_IS_ASCII(k) else 0)
                self.keep.append(k)
                self.memo_put(k, bi)
            self.ref_block(ci, T_STR, bi)
        elif key.ctag == T_BYTES:
            if key.len <= INLINE_MAX:
                cell_inline(c, T_SBYTES, key.data, key.len, False)
                return 0
            bi = self.bytes_block(K_BYTES, owner, key.data, key.len, 0)
            self.ref_block(ci, T_BYTES, bi)
        elif key.ctag == T_BIGINT and PyFloat_Check(k):
            # a whole float beyond int64 (2.0 ** 63): hashed as the int it
            # equals, kept as a float
            encode_scalar(k, c)
        elif key.ctag == T_BIGINT:
            self.ref_block(ci, T_BIGINT, self.bytes_block(K_BIGINT, owner, key.data, key.len, 0))
        elif key.ctag == T_KTUPLE:
            blob = bytearray(key.len.to_bytes(8, "little"))
            blob += owner
            for x in <tuple>k:
                canon_append(blob, x, 1, True)
            blob = bytes(blob)
            self.ref_block(ci, T_KTUPLE, self.bytes_block(K_KTUPLE, blob, PyBytes_AS_STRING(blob),
                                                          PyBytes_GET_SIZE(blob), 0))
        else:
            # None, bool, int and float keep their type; lookups compare canonically
            encode_scalar(k, c)
        return 0

    cdef int encode(self, object v, int64_t ci, int tdepth) except -1:
        """Encode v into cell ci; containers get a block and a frame on the stack."""
        cdef Cell *c = &self.cells[ci].cell
        cdef const char *data
        cdef uint64_t n
        cdef bint ascii
        cdef int64_t bi
        cdef Node node
        if encode_scalar(v, c):
            return 0
        bi = self.memo_get(v)
        if bi >= 0:
            self.ref_block(ci, block_tag(self.blocks[bi].kind), bi)
            return 0
        if PyUnicode_Check(v):
            owner = str_utf8(v, &data, &n, &ascii)
            bi = self.bytes_block(K_STR, owner, data, n, 1 if ascii else 0)
            self.ref_block(ci, T_STR, bi)
        elif PyBytes_Check(v):
            bi = self.bytes_block(K_BYTES, v, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), 0)
            self.ref_block(ci, T_BYTES, bi)
        elif PyLong_Check(v):
            b = bigint_bytes(v)
            bi = self.bytes_block(K_BIGINT, b, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 0)
            self.ref_block(ci, T_BIGINT, bi)
        elif PyTuple_Check(v):
            bi = self.plan_tuple(v, ci, tdepth)
        elif PyList_Check(v):
            bi = self.plan_list(v, ci)
        elif PyDict_Check(v):
            bi = self.plan_dict(v, ci)
        elif isinstance(v, Node):
            node = <Node>v
            # another handle of the same segment file shares its LockState
            if node.seg is self.seg or node.seg.lk is self.seg.lk:
                cell_container(c, T_DICT if isinstance(v, DictNode) else T_LIST, node.off, node.gen)
                self.cells[ci].ref = REF_EXISTING
                self.cells[ci].gen = node.gen
                return 0
            copy = v.to_python()        # from another segment: store a copy
            self.keep.append(copy)
            return self.encode(copy, ci, tdepth)
        else:
            raise UnsupportedTypeError("dshared cannot store a value of type %s (at %s); supported: None, "
                                       "bool, int, float, str, bytes, tuple, list, dict"
                                       % (type(v).__name__, self.path() or "the top level"))
        self.keep.append(v)
        self.memo_put(v, bi)
        return 0

    cdef int64_t plan_tuple(self, object v, int64_t ci, int tdepth) except -1:
        """A tuple's block (its cells inline); its items are encoded by walk()."""
        cdef uint64_t n
        cdef int64_t bi
        if tdepth >= MAX_TUPLE_DEPTH:
            raise UnsupportedTypeError("tuples nested deeper than %d levels at %s; use lists"
                                       % (MAX_TUPLE_DEPTH, self.path()))
        # a subclass is stored as tuple(v) sees it (through its __iter__)
        items = v if type(v) is tuple else tuple(as_list(v))
        n = PyTuple_GET_SIZE(items)
        bi = self.new_block(K_TUPLE, sizeof(TupleHdr) + CELL_SIZE * n)
        self.blocks[bi].first = self.new_cells(n)
        self.blocks[bi].n = n
        self.ref_block(ci, T_TUPLE, bi)
        self.stack.append([v, items, bi, 0, tdepth + 1])
        return bi

    cdef int64_t plan_list(self, object v, int64_t ci) except -1:
        """A list's block and, unless it is empty, its items block next to it."""
        cdef uint64_t n
        cdef int64_t bi
        # a subclass is stored as list(v) sees it (through its __iter__)
        items = list(v) if type(v) is list else as_list(v)
        n = len(<list>items)
        bi = self.new_block(K_LIST, sizeof(ListBody))
        self.ref_block(ci, T_LIST, bi)
        if n:
            self.blocks[bi].n = n
            self.blocks[bi].first = self.new_cells(n)
            self.new_block(K_ITEMS, sizeof(ItemsHdr) + CELL_SIZE * n)
            self.blocks[bi + 1].rc = 1
        self.stack.append([v, items, bi, 0, 0])
        return bi

    cdef int64_t plan_dict(self, object v, int64_t ci) except -1:
        """A dict's block and, unless it is empty, its table next to it."""
        cdef uint64_t n
        cdef int64_t bi
        items = mapping_items(v)
        n = len(items)
        bi = self.new_block(K_DICT, sizeof(DictBody))
        self.ref_block(ci, T_DICT, bi)
        if n:
            self.blocks[bi].n = n
            self.blocks[bi].first = self.new_cells(2 * n)
            # exactly n entries: a dict built whole is often never grown
            self.new_block(K_TABLE, table_bytes(n))
            self.blocks[bi + 1].rc = 1
            self.blocks[bi + 1].n = table_slots(n)
            self.blocks[bi + 1].len = n     # capacity
        self.stack.append([v, items, bi, 0, 0])
        return bi

    cdef str path(self):
        """Where the value being encoded sits, as in ['users'][3]['tags']."""
        parts = []
        for fr in self.stack:
            j = fr[3] - 1
            if j < 0:
                continue
            if PyDict_Check(fr[0]):
                parts.append("[%r]" % (fr[1][j][0],) if j < len(fr[1]) else "")
            else:
                parts.append("[%d]" % j)
        return "".join(parts)

    cdef int walk(self) except -1:
        """Encode the children of every container frame, depth first."""
        cdef list fr
        cdef int64_t bi, first
        cdef uint64_t j
        cdef list stack = self.stack
        while stack:
            fr = <list>stack[len(stack) - 1]
            bi = fr[2]
            j = fr[3]
            if j >= self.blocks[bi].n:
                stack.pop()
                continue
            first = self.blocks[bi].first
            fr[3] = j + 1               # before the child: path() names item fr[3] - 1
            if self.blocks[bi].kind == K_DICT:
                k, v = fr[1][j]
                try:
                    self.encode_key(k, first + 2 * j)
                except TypeError as e:
                    raise type(e)("%s (key at %s)" % (e, self.path())) from None
                if self.cells[first + 2 * j].cell.b[0] == T_SSTR and (PyUnicode_Check(v) or PyBytes_Check(v)):
                    if self.pack_cells(first + 2 * j, k, v):
                        continue
                self.encode(v, first + 2 * j + 1, 0)
            else:
                self.encode(fr[1][j], first + j, fr[4])
        return 0

    # -- under the lock ----------------------------------------------------------

    cdef int materialize(self) except -1:
        """Allocate and fill every planned block; on failure nothing changed."""
        cdef Segment seg = self.seg
        cdef uint64_t i, off
        cdef PBlock *b
        cdef PCell *pc
        cdef Block *blk
        cdef int why
        for i in range(self.ncells):
            pc = &self.cells[i]
            if pc.ref == REF_EXISTING:
                view_block(seg, ds_ld64(&pc.cell.b[8]), pc.gen, K_DICT if pc.cell.b[0] == T_DICT else K_LIST)
        wr_reserve(seg, 0, 0, self.nblocks, self.ncells)
        for i in range(self.nblocks):
            off = blk_alloc(seg, self.blocks[i].payload, self.blocks[i].kind, &why)
            if off == 0:
                self.free_blocks(i)
                blk_raise_full(seg, self.blocks[i].payload, why)
            self.blocks[i].off = off
        for i in range(self.ncells):
            pc = &self.cells[i]
            if pc.ref >= 0:
                off = self.blocks[pc.ref].off
                ds_st64(&pc.cell.b[8], off)
                if pc.cell.b[0] == T_DICT or pc.cell.b[0] == T_LIST:
                    memcpy(&pc.cell.b[4], &(<Block *>(seg.base + off)).gen, 4)
            elif pc.ref == REF_EXISTING:
                blk_incref(seg, ds_ld64(&pc.cell.b[8]))
        for i in range(self.nblocks):
            self.fill(i)
        self.state = PLAN_MATERIALIZED
        return 0

    cdef void free_blocks(self, uint64_t upto) noexcept:
        cdef uint64_t i = upto
        while i > 0:
            i -= 1
            blk_free(self.seg, self.blocks[i].off)

    cdef int rollback(self) except -1:
        """Undo materialize() (the plan's cells were never published)."""
        cdef uint64_t i
        if self.state != PLAN_MATERIALIZED:
            return 0
        for i in range(self.ncells):
            if self.cells[i].ref == REF_EXISTING:
                blk_decref_cell(self.seg, &self.cells[i].cell)
        self.free_blocks(self.nblocks)
        self.state = PLAN_PLANNED
        return 0

    cdef int fill(self, uint64_t i) except -1:
        cdef Segment seg = self.seg
        cdef PBlock *b = &self.blocks[i]
        cdef char *p = blk_payload(seg.base, b.off)
        cdef uint64_t j, t
        cdef StrHdr *sh
        cdef BytesHdr *bh
        cdef TupleHdr *th
        cdef ListBody *lb
        cdef ItemsHdr *ih
        cdef DictBody *db
        cdef uint64_t *hashes
        cdef Cell *cells
        (<Block *>(seg.base + b.off)).kind_rc = kind_rc_of(<uint32_t>b.kind, b.rc)
        if b.kind == K_STR:
            sh = <StrHdr *>p
            sh.length = b.len
            sh.flags = b.flags
            memcpy(str_data(sh), b.data, b.len)
        elif b.kind == K_BYTES or b.kind == K_BIGINT or b.kind == K_KTUPLE:
            bh = <BytesHdr *>p
            bh.length = b.len
            memcpy(bytes_data(bh), b.data, b.len)
        elif b.kind == K_TUPLE:
            th = <TupleHdr *>p
            th.n = b.n
            for j in range(b.n):
                memcpy(&tuple_cells(th)[j], &self.cells[b.first + j].cell, CELL_SIZE)
        elif b.kind == K_LIST:
            lb = <ListBody *>p
            lb.items = self.blocks[i + 1].off if b.n else 0
            lb.length = b.n
            lb.version = 0
            if b.n:
                ih = items_hdr(seg.base, self.blocks[i + 1].off)
                ih.capacity = b.n
                for j in range(b.n):
                    memcpy(&items_cells_of(ih)[j], &self.cells[b.first + j].cell, CELL_SIZE)
        elif b.kind == K_DICT:
            db = <DictBody *>p
            db.table = self.blocks[i + 1].off if b.n else 0
            db.version = 0
            if b.n:
                t = self.blocks[i + 1].off
                table_init(seg.base, t, self.blocks[i + 1].n, self.blocks[i + 1].len)
                hashes = <uint64_t *>malloc_or_raise(8 * b.n)
                cells = <Cell *>malloc_or_raise(2 * CELL_SIZE * b.n)
                for j in range(b.n):
                    hashes[j] = self.cells[b.first + 2 * j].hash
                    cells[2 * j] = self.cells[b.first + 2 * j].cell
                    cells[2 * j + 1] = self.cells[b.first + 2 * j + 1].cell
                tbl_fill(seg, t, hashes, cells, b.n)
                free(hashes)
                free(cells)
        return 0

    cdef Cell *cell(self, int64_t ci) noexcept:
        return &self.cells[ci].cell
