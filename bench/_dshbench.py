"""Contenders, data sets and multi-process workers for the dshared benchmarks.

This is a plain module (not a conftest) so that spawned child processes can
import it by name: every multi-process workload uses the ``spawn`` start method.

Every contender exposes the same small surface; the batch methods run the
natural API of the library in a plain Python loop, so the loop overhead is the
same for all of them (and is part of the ``dict`` floor).
"""
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
import uuid

import dshared

SHM_DIR = "/dev/shm"
# every /dev/shm object or directory this run creates contains this: "dshb-" and a token of
# the run, kept in the environment so that the run's child processes use the same one. The
# leftover check removes only names with it, never another run's segments on the same host.
PREFIX = os.environ.setdefault("DSHARED_BENCH_PREFIX", "dshb-%s-" % uuid.uuid4().hex[:6])
SEED = 20240611
KIB_VALUE_LEN = 1024

# ---------------------------------------------------------------------------
# data sets
# ---------------------------------------------------------------------------


def key(i):
    return "k%07d" % i                      # 8 chars


def miss_key(i):
    return "x%07d" % i                      # 8 chars, never stored


def str_value(i, tag="v"):
    return "%s%015d" % (tag, i)             # 16 chars


def kib_value(i, tag="a"):
    return (tag + "%07d" % i) * (KIB_VALUE_LEN // 8)   # 1024 chars


def dataset_items(kind, n):
    """The (key, value) pairs of a data set, in insertion order."""
    if kind == "str":
        return [(key(i), str_value(i)) for i in range(n)]
    if kind == "int":
        return [(key(i), i) for i in range(n)]
    if kind == "kib":
        return [(key(i), kib_value(i)) for i in range(n)]
    if kind == "nested":
        return [(key(i), {"key": str_value(i)}) for i in range(n)]
    if kind == "empty":
        return []
    raise ValueError(kind)


def shuffled(n, seed=SEED):
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def batches(seq, size):
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def unique_name(tag=""):
    return "%s%s%d-%s" % (PREFIX, tag, os.getpid(), uuid.uuid4().hex[:10])


def capacity_for(kind, n):
    """Bytes of shared capacity to give a store holding data set ``kind`` with n keys.

    Generous on purpose: the write workloads overwrite values many times, and
    an allocator that defers reclamation must not run out in the middle.
    """
    per = {"str": 256, "int": 256, "nested": 512, "kib": 2048, "empty": 256}[kind]
    override = os.environ.get("DSHARED_BENCH_SEGMENT_MB")
    if override:
        return int(override) << 20
    return (64 << 20) + n * per * 4


# ---------------------------------------------------------------------------
# contenders
# ---------------------------------------------------------------------------


class Contender:
    """Base: a contender holding one store. ``m`` is the dict-like handle."""

    name = "?"
    shared = True          # other processes see this store
    torn_reads = False     # readers can observe a half-written state (no cross-process lock)
    note = ""

    def __init__(self):
        self.m = None
        self.creator = False

    # -- life cycle (parent) -------------------------------------------------
    def create(self, kind, n):
        raise NotImplementedError

    def spec(self):
        """Picklable description a child uses to attach (see ``attach``)."""
        raise NotImplementedError

    def close(self):
        """Close and remove everything the store created (creator side)."""
        raise NotImplementedError

    # -- life cycle (child) --------------------------------------------------
    @classmethod
    def attach(cls, spec):
        raise NotImplementedError

    def detach(self):
        self.m = None

    # -- conversions done outside the timed region -----------------------------
    def prep_keys(self, keys):
        return list(keys)

    def prep_values(self, values):
        return list(values)

    def prep_items(self, items):
        return list(zip(self.prep_keys([k for k, _ in items]),
                        self.prep_values([v for _, v in items])))

    def decode(self, raw):
        """A value as returned by ``get`` back to the Python value that was stored."""
        return raw

    # -- operations ----------------------------------------------------------
    def bulk_load(self, items):
        m = self.m
        for k, v in items:
            m[k] = v

    def get(self, k):
        return self.m[k]

    def contains(self, k):
        return k in self.m

    def set(self, k, v):
        self.m[k] = v

    def get_batch(self, keys):
        m = self.m
        for k in keys:
            m[k]

    def contains_batch(self, keys):
        m = self.m
        for k in keys:
            k in m

    def set_batch(self, keys, values):
        m = self.m
        for k, v in zip(keys, values):
            m[k] = v

    def nested_batch(self, keys):
        m = self.m
        for k in keys:
            m[k]["key"]

    def bytes_per_entry(self, n, before):
        """Return a dict of memory figures for a store of n entries (None: not measurable)."""
        return None

    def footprint(self):
        """Measurement taken before loading, passed back as ``before``."""
        return None


class DictC(Contender):
    name = "dict"
    shared = False
    note = "private dict: the floor; in multi-process runs every process has its own copy"

    def create(self, kind, n):
        self.m = {}
        self.kind, self.n = kind, n
        self.creator = True

    def spec(self):
        return (self.kind, self.n)

    @classmethod
    def attach(cls, spec):
        c = cls()
        kind, n = spec
        c.m = dict(dataset_items(kind, n))
        return c

    def close(self):
        self.m = None

    def bytes_per_entry(self, n, before):
        m = self.m
        total = sys.getsizeof(m) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in m.items())
        return {"bytes_per_entry": total / n,
                "how": "sys.getsizeof(dict) + getsizeof of every key and value"}


class ManagerC(Contender):
    name = "manager"
    note = "multiprocessing.Manager().dict() (spawn context); every access is a round trip to the server process"

    def create(self, kind, n):
        import multiprocessing
        self.mgr = multiprocessing.get_context("spawn").Manager()
        self.m = self.mgr.dict()
        self.creator = True

    def spec(self):
        return self.m          # a DictProxy pickles to spawn children with the authkey

    @classmethod
    def attach(cls, spec):
        c = cls()
        c.m = spec
        return c

    def bulk_load(self, items):
        for chunk in batches(items, 5000):
            self.m.update(chunk)

    def close(self):
        self.m = None
        mgr, self.mgr = getattr(self, "mgr", None), None
        if mgr is not None:
            mgr.shutdown()


class LmdbPickleC(Contender):
    name = "lmdb_pickle"
    note = ("lmdb on /dev/shm (sync=False, metasync=False); str keys encoded and values pickled "
            "(protocol 5) per operation; one transaction per operation")
    raw = False

    @staticmethod
    def _open(path, create):
        import lmdb
        return lmdb.open(path, map_size=1 << 40, subdir=True, create=create, sync=False,
                         metasync=False, readahead=False, max_readers=512, lock=True)

    def create(self, kind, n):
        self.path = tempfile.mkdtemp(prefix=unique_name("lmdb-"), dir=SHM_DIR)
        self.env = self._open(self.path, True)
        self.creator = True

    def spec(self):
        return self.path

    @classmethod
    def attach(cls, spec):
        c = cls()
        c.path = spec
        c.env = cls._open(spec, False)
        return c

    def detach(self):
        env, self.env = self.env, None
        if env is not None:
            env.close()

    def close(self):
        self.detach()
        shutil.rmtree(self.path, ignore_errors=True)

    # str keys/values: the codec runs inside the timed loop
    def bulk_load(self, items):
        dumps = pickle.dumps
        with self.env.begin(write=True) as txn:
            for k, v in items:
                txn.put(k.encode(), dumps(v, 5))

    def get(self, k):
        with self.env.begin() as txn:
            return pickle.loads(txn.get(k.encode()))

    def contains(self, k):
        with self.env.begin() as txn:
            return txn.get(k.encode()) is not None

    def set(self, k, v):
        with self.env.begin(write=True) as txn:
            txn.put(k.encode(), pickle.dumps(v, 5))

    def get_batch(self, keys):
        begin, loads = self.env.begin, pickle.loads
        for k in keys:
            with begin() as txn:
                loads(txn.get(k.encode()))

    def contains_batch(self, keys):
        begin = self.env.begin
        for k in keys:
            with begin() as txn:
                txn.get(k.encode()) is not None

    def set_batch(self, keys, values):
        begin, dumps = self.env.begin, pickle.dumps
        for k, v in zip(keys, values):
            with begin(write=True) as txn:
                txn.put(k.encode(), dumps(v, 5))

    def nested_batch(self, keys):
        begin, loads = self.env.begin, pickle.loads
        for k in keys:
            with begin() as txn:
                loads(txn.get(k.encode()))["key"]

    def footprint(self):
        return self._pages()

    def _pages(self):
        info, stat = self.env.info(), self.env.stat()
        return {"file_pages": info["last_pgno"] + 1, "psize": stat["psize"],
                "tree_pages": stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]}

    def bytes_per_entry(self, n, before):
        after = self._pages()
        return {"bytes_per_entry": after["tree_pages"] * after["psize"] / n,
                "file_bytes_per_entry": (after["file_pages"] - before["file_pages"]) * after["psize"] / n,
                "how": "env.stat() branch+leaf+overflow pages * psize / n (file: env.info() last_pgno delta)"}


class LmdbRawC(LmdbPickleC):
    name = "lmdb_raw"
    note = ("lmdb on /dev/shm, bytes keys and bytes values prepared outside the timed loop (no codec at all); "
            "one transaction per operation; nested read uses a composite key b'k.../key'")
    raw = True

    def prep_keys(self, keys):
        return [k.encode() for k in keys]

    def prep_values(self, values):
        out = []
        for v in values:
            if isinstance(v, int):
                out.append(v.to_bytes(8, "little"))
            elif isinstance(v, str):
                out.append(v.encode())
            else:
                raise TypeError("lmdb_raw stores bytes only: %r" % type(v))
        return out

    def prep_items(self, items):
        out = []
        for k, v in items:
            if isinstance(v, dict):        # nested: flatten into composite keys
                for sk, sv in v.items():
                    out.append(((k + "/" + sk).encode(), sv.encode()))
            else:
                out.append((k.encode(), self.prep_values([v])[0]))
        return out

    def nested_keys(self, keys):
        return [(k + "/key").encode() for k in keys]

    def decode(self, raw):
        # only ints travel through decode (latency workload): 8 bytes little endian
        return int.from_bytes(raw, "little")

    def bulk_load(self, items):
        with self.env.begin(write=True) as txn:
            for k, v in items:
                txn.put(k, v)

    def get(self, k):
        with self.env.begin() as txn:
            return txn.get(k)

    def contains(self, k):
        with self.env.begin() as txn:
            return txn.get(k) is not None

    def set(self, k, v):
        with self.env.begin(write=True) as txn:
            txn.put(k, v)

    def get_batch(self, keys):
        begin = self.env.begin
        for k in keys:
            with begin() as txn:
                txn.get(k)

    def contains_batch(self, keys):
        begin = self.env.begin
        for k in keys:
            with begin() as txn:
                txn.get(k) is not None

    def set_batch(self, keys, values):
        begin = self.env.begin
        for k, v in zip(keys, values):
            with begin(write=True) as txn:
                txn.put(k, v)

    def nested_batch(self, keys):
        # keys are composite keys b"k0000001/key" (see nested_keys)
        self.get_batch(keys)


class UltraDictC(Contender):
    name = "ultradict"
    note = ("UltraDict(buffer_size=64 MiB, shared_lock=False): every process keeps a full private dict "
            "and replays the shared update stream; safe with a single writer only")
    BUFFER = 64 << 20

    def create(self, kind, n):
        from UltraDict import UltraDict
        self.shm_name = unique_name("ud-")
        self.m = UltraDict(name=self.shm_name, create=True, buffer_size=self.BUFFER, auto_unlink=False)
        self.creator = True

    def spec(self):
        return self.shm_name

    @classmethod
    def attach(cls, spec):
        from UltraDict import UltraDict
        c = cls()
        c.shm_name = spec
        c.m = UltraDict(name=spec, create=False)
        return c

    def detach(self):
        m, self.m = self.m, None
        if m is not None:
            m.close()

    def close(self):
        m, self.m = self.m, None
        if m is not None:
            m.close(unlink=True)

    def bytes_per_entry(self, n, before):
        m = self.m
        st = m.status()
        shared = st["update_stream_position_remote"]
        dump = 0
        if st["full_dump_memory_name_remote"]:
            from multiprocessing import shared_memory
            shm = shared_memory.SharedMemory(name=st["full_dump_memory_name_remote"])
            dump = int.from_bytes(bytes(shm.buf[1:5]), "little")
            shm.close()
        private = sys.getsizeof(m.data) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in m.data.items())
        return {"bytes_per_entry": (shared + dump) / n,
                "private_bytes_per_entry_per_process": private / n,
                "how": "shared: used update stream + full dump bytes; plus a private dict copy in every process"}


class SmdC(Contender):
    name = "smd"
    torn_reads = True
    note = ("shared-memory-dict: the whole dict is pickled into one block and unpickled on every access, "
            "so it runs at a reduced key count (DSHARED_BENCH_SMD_KEYS); no cross-process lock")

    def create(self, kind, n):
        from shared_memory_dict import SharedMemoryDict
        self.shm_name = unique_name("smd-")
        sample = dict(dataset_items(kind, n))
        # block sized to the data (x2 + 64 KiB): every access copies the whole block
        size = len(pickle.dumps(sample, pickle.HIGHEST_PROTOCOL)) * 2 + (64 << 10)
        self.size = size
        self.m = SharedMemoryDict(name=self.shm_name, size=size)
        self.creator = True

    def spec(self):
        return (self.shm_name, self.size)

    @classmethod
    def attach(cls, spec):
        from multiprocessing import resource_tracker
        from shared_memory_dict import SharedMemoryDict
        c = cls()
        c.shm_name, c.size = spec
        c.m = SharedMemoryDict(name=c.shm_name, size=c.size)
        # Python < 3.13 registers attached blocks with the resource tracker; the
        # creator unlinks it, so the child must not leave a registration behind.
        resource_tracker.unregister(c.m.shm._name, "shared_memory")
        return c

    def detach(self):
        m, self.m = self.m, None
        if m is not None:
            m.cleanup()

    def bulk_load(self, items):
        self.m.update(items)

    def close(self):
        m, self.m = self.m, None
        if m is not None:
            shm = m.shm
            m.cleanup()
            shm.unlink()

    def bytes_per_entry(self, n, before):
        data = pickle.dumps(dict(self.m.items()), pickle.HIGHEST_PROTOCOL)
        return {"bytes_per_entry": len(data) / n,
                "how": "length of the pickled dict (the block itself is sized by the user)"}


class DiskcacheC(Contender):
    name = "diskcache"
    note = "diskcache.Cache (SQLite, WAL) in a directory on /dev/shm"

    def create(self, kind, n):
        import diskcache
        self.path = tempfile.mkdtemp(prefix=unique_name("dc-"), dir=SHM_DIR)
        self.m = diskcache.Cache(self.path, size_limit=1 << 40)
        self.creator = True

    def spec(self):
        return self.path

    @classmethod
    def attach(cls, spec):
        import diskcache
        c = cls()
        c.path = spec
        c.m = diskcache.Cache(spec, size_limit=1 << 40)
        return c

    def detach(self):
        m, self.m = self.m, None
        if m is not None:
            m.close()

    def close(self):
        self.detach()
        shutil.rmtree(self.path, ignore_errors=True)

    def bulk_load(self, items):
        m = self.m
        with m.transact():
            for k, v in items:
                m[k] = v

    def footprint(self):
        return self.m.volume()

    def bytes_per_entry(self, n, before):
        return {"bytes_per_entry": (self.m.volume() - before) / n,
                "how": "Cache.volume() delta (SQLite pages + value files)"}


class DsharedC(Contender):
    name = "dshared"
    note = "dshared.Segment on /dev/shm; root SharedDict from seg.col()"

    def create(self, kind, n):
        self.shm_name = unique_name("seg-")
        self.seg = dshared.Segment(self.shm_name, capacity_for(kind, n), create=True)
        self.m = self.seg.col()
        self.creator = True

    def spec(self):
        return self.shm_name

    @classmethod
    def attach(cls, spec):
        c = cls()
        c.shm_name = spec
        c.seg = dshared.Segment(spec)
        c.m = c.seg.col()
        return c

    def detach(self):
        self.m = None
        seg, self.seg = getattr(self, "seg", None), None
        if seg is not None:
            seg.close()

    def close(self):
        self.detach()
        dshared.unlink(self.shm_name)

    def footprint(self):
        return self.seg.stats()["used"]

    def bytes_per_entry(self, n, before):
        st = self.seg.stats()
        return {"bytes_per_entry": (st["used"] - before) / n,
                "backed_bytes_per_entry": st["backed"] / n,
                "how": "seg.stats()['used'] delta / n (backed: the segment file's allocated blocks / n)"}


CONTENDERS = {c.name: c for c in (DictC, ManagerC, LmdbPickleC, LmdbRawC, UltraDictC, SmdC,
                                  DiskcacheC, DsharedC)}
ALL = list(CONTENDERS)
SHARED = [n for n in ALL if CONTENDERS[n].shared]


def make(name):
    return CONTENDERS[name]()


def attach(name, spec):
    return CONTENDERS[name].attach(spec)


def load_store(name, kind, n):
    """A new store of contender ``name`` holding data set ``kind`` with n keys."""
    c = make(name)
    c.create(kind, n)
    try:
        c.bulk_load(c.prep_items(dataset_items(kind, n)))
    except BaseException:
        c.close()
        raise
    return c


# ---------------------------------------------------------------------------
# multi-process workers (run in spawned children)
# ---------------------------------------------------------------------------

BATCH = 1000


def _guard(q, role, fn, *args):
    try:
        q.put((role, "ok", fn(*args)))
    except BaseException as e:   # report to the parent, which fails the test
        import traceback
        q.put((role, "error", "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc())))


def reader_main(q, name, spec, n, ops, seed, barrier):
    _guard(q, "reader", _reader, name, spec, n, ops, seed, barrier)


def _reader(name, spec, n, ops, seed, barrier):
    c = attach(name, spec)
    try:
        keys = c.prep_keys([key(i) for i in shuffled(n, seed)])
        bs = batches(keys, BATCH)
        c.get_batch(bs[0])                       # warm up, not timed
        barrier.wait(timeout=120)
        done, i, nb = 0, 0, len(bs)
        get_batch = c.get_batch
        t0 = time.perf_counter()
        while done < ops:
            b = bs[i % nb]
            get_batch(b)
            done += len(b)
            i += 1
        t1 = time.perf_counter()
        return (t0, t1, done)
    finally:
        c.detach()


def writer_main(q, name, spec, n, ops, seed, barrier):
    _guard(q, "writer", _writer, name, spec, n, ops, seed, barrier)


def _writer(name, spec, n, ops, seed, barrier):
    c = attach(name, spec)
    try:
        order = shuffled(n, seed)
        keys = c.prep_keys([key(i) for i in order])
        values = c.prep_values([str_value(i, "w") for i in order])
        kb, vb = batches(keys, 100), batches(values, 100)
        barrier.wait(timeout=120)
        done, i, nb = 0, 0, len(kb)
        set_batch = c.set_batch
        t0 = time.perf_counter()
        while done < ops:
            set_batch(kb[i % nb], vb[i % nb])
            done += len(kb[i % nb])
            i += 1
        t1 = time.perf_counter()
        return (t0, t1, done)
    finally:
        c.detach()


def latency_writer_main(q, name, spec, samples, gap_s, t_write, ack, ready):
    _guard(q, "writer", _latency_writer, name, spec, samples, gap_s, t_write, ack, ready)


def _latency_writer(name, spec, samples, gap_s, t_write, ack, ready):
    c = attach(name, spec)
    try:
        k = c.prep_keys(["lat"])[0]
        vals = c.prep_values(list(range(samples + 1)))
        if not ready.wait(120):
            raise RuntimeError("reader never got ready")
        clock = time.perf_counter
        for i in range(1, samples + 1):
            end = clock() + gap_s
            while clock() < end:
                pass
            t_write[i - 1] = clock()
            c.set(k, vals[i])
            deadline = clock() + 30
            while ack.value < i:
                if clock() > deadline:
                    raise RuntimeError("write %d not seen within 30 s" % i)
        return None
    finally:
        c.detach()


def latency_reader_main(q, name, spec, samples, t_seen, ack, ready):
    _guard(q, "reader", _latency_reader, name, spec, samples, t_seen, ack, ready)


def _latency_reader(name, spec, samples, t_seen, ack, ready):
    c = attach(name, spec)
    try:
        k = c.prep_keys(["lat"])[0]
        get, decode, clock = c.get, c.decode, time.perf_counter
        torn = polls = 0
        seen = 0
        c.get(k)
        ready.set()
        deadline = clock() + 60
        while seen < samples:
            polls += 1
            try:
                v = decode(get(k))
            except Exception:
                if not c.torn_reads:
                    raise
                torn += 1
                continue
            if v == seen + 1:
                t_seen[seen] = clock()
                seen = v
                ack.value = v
            elif v != seen:
                if not c.torn_reads:
                    raise AssertionError("reader saw %r after %d" % (v, seen))
                torn += 1
            elif (polls & 1023) == 0 and clock() > deadline:
                raise RuntimeError("reader timed out at %d" % seen)
        return {"polls": polls, "torn_reads": torn}
    finally:
        c.detach()


# ---------------------------------------------------------------------------
# pytest-benchmark helpers
# ---------------------------------------------------------------------------


def record(benchmark, ops_per_round, **info):
    """Per-op figures in extra_info (medians are filled in when timing is enabled)."""
    benchmark.extra_info["ops_per_round"] = ops_per_round
    for k, v in info.items():
        benchmark.extra_info[k] = v
    stats = getattr(benchmark, "stats", None)
    st = getattr(stats, "stats", None)
    if st is not None:
        for field in ("median", "mean", "min"):
            benchmark.extra_info["%s_ns_per_op" % field] = getattr(st, field) / ops_per_round * 1e9
