"""dshared on a Redis (or Valkey) server: the same col(), SharedDict and
SharedList API for processes on several hosts.

    dshared.init("mymem", server="redis://127.0.0.1:6379/0")
    # or, unchanged code: DSHARED_SERVER=redis://127.0.0.1:6379/0

Every container is one Redis hash under the hash tag {dshared:NAME}; every
operation is one call of a Lua script (one round trip, atomic); reads are
served from a near-cache that CLIENT TRACKING keeps exact. See the docs page
"More than one host" for the layout, the numbers and the differences from
shared memory.
"""

import atexit
import operator
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import ItemsView, KeysView, Mapping, MutableMapping, MutableSequence, ValuesView
from hashlib import sha1

from dshared import _codec as _shm_codec
from dshared._collections import _ListOrder, _sort_reverse
from dshared._errors import DsharedError, LockTimeout, StaleReferenceError, UnsupportedTypeError
from dshared.redis._client import Client, Config, ServerConnectionError, resp
from dshared.redis._codec import canon, dec_scalar, enc_scalar, key_forms, unsupported

__all__ = [
    "RedisSegment", "RedisDict", "RedisList", "unlink", "open_segment",
    "ServerConnectionError", "SegmentLostError", "LeaseExpiredError",
]


class SegmentLostError(DsharedError, RuntimeError):
    """The segment's data is gone from the server (flushed, unlinked, or a
    restart without persistence), or it was recreated: its creation id no
    longer matches. Never read as an empty segment."""


class LeaseExpiredError(DsharedError, RuntimeError):
    """A write made under lock() was refused: the lease expired (the holder
    stalled longer than the lease) and the fencing token is no longer valid."""


with open(os.path.join(os.path.dirname(__file__), "_script.lua"), "rb") as _f:
    _LUA = _f.read()
_SHA = sha1(_LUA).hexdigest()

_ABSENT = object()     # cached: the key is not there


class _Tag:
    __slots__ = ("n",)

    def __init__(self, n):
        self.n = n

    def __repr__(self):
        return "<%s>" % self.n


_LEN = _Tag("len")     # cache slots of an entry that are not keys
_SNAP = _Tag("snapshot")


def _new_id():
    return os.urandom(8).hex().encode()


def _error(msg):
    """The exception for an error reply of the script."""
    if msg.startswith("ERR DSH"):
        msg = msg[4:]
    code, _, text = msg.partition(" ")
    text = text.split(" script:")[0]
    if code == "DSHSTALE" or code == "DSHTYPE":
        return StaleReferenceError(text or "the shared object behind this view has been removed")
    if code == "DSHLOST":
        return SegmentLostError(text)
    if code == "DSHLEASE":
        return LeaseExpiredError(text)
    if code == "DSHINDEX":
        return IndexError(text)
    return DsharedError("Redis error: %s" % msg)


# ------------------------------------------------------------------ near-cache

_caches = weakref.WeakSet()
# this process's id, kept by the fork hook below: os.getpid() is a system
# call (0.6 us here), twice per near-cache miss otherwise
_pid = [os.getpid()]


def _caches_after_fork():
    _pid[0] = os.getpid()
    for nc in list(_caches):
        nc.forked()


os.register_at_fork(after_in_child=_caches_after_fork)


class _NearCache:
    """Entries per container key: {python key or index: decoded value}.
    Exact while its invalidation connection lives: that connection asks for
    every change under the segment's prefix (CLIENT TRACKING ... BCAST,
    redirected to itself, RESP2 pub/sub) and a background thread drops the
    entries of the keys named. A reader puts an empty entry (placeholder)
    before its read and stores the reply only if that entry is still there
    and the connection did not change meanwhile (epoch): an invalidation
    that arrives before the reply is not lost. When the connection drops,
    the whole cache is dropped and reads go to the server until it is back."""

    def __init__(self, seg):
        self.seg = seg
        self.d = {}
        self.epoch = 0
        self.enabled = False
        self.items = 0
        self.limit = seg._cfg.near_cache_items
        self.misses = 0
        self.invalidations = 0
        self.resets = 0
        self.notify = None      # called after each invalidation (benchmarks, tests)
        self.conn = None
        self.thread = None
        self.pid = os.getpid()
        self.closed = False
        self.mu = threading.Lock()
        _caches.add(self)

    def forked(self):
        self.d.clear()          # in place: views hold this dict
        self.epoch += 1
        self.enabled = False
        self.conn = None
        self.thread = None
        self.pid = os.getpid()

    def drop_all(self):
        self.epoch += 1
        self.d.clear()
        self.items = 0

    def ensure(self):
        """Start the invalidation connection (the first miss does)."""
        if self.enabled or self.closed:
            return
        with self.mu:
            if self.enabled or self.closed:
                return
            if self.thread is not None and self.thread.is_alive() and self.pid == os.getpid():
                return          # reconnecting in the background
            try:
                self._connect()
            except DsharedError:
                self._start_thread()    # keeps trying
                return
            self._start_thread()

    def _connect(self):
        cfg = self.seg._cfg
        c = cfg.connect(timeout=5)
        try:
            cid = c.call("CLIENT", "ID")
            r = c.call("CLIENT", "TRACKING", "ON", "REDIRECT", cid, "BCAST", "PREFIX", self.seg._prefix)
            if isinstance(r, Exception):
                raise DsharedError("CLIENT TRACKING refused: %s (the near-cache needs Redis >= 6)" % r)
            r = c.call("SUBSCRIBE", "__redis__:invalidate")
            if isinstance(r, Exception):
                raise DsharedError("SUBSCRIBE refused: %s" % r)
        except BaseException:
            c.close()
            raise
        if cfg.tls:
            c.sock.settimeout(0.25)
        else:
            # blocked in recv (not in poll, then recv: Python's own timeout
            # mode): the kernel wakes this thread as the invalidation
            # arrives, and ends the wait after 0.25 s (EAGAIN)
            import struct
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 250000))
        if self.closed:
            c.close()           # close() ran meanwhile (the thread was reconnecting): nobody would
            return
        self.epoch += 1         # the entries were dropped when the last connection was lost
        self.conn = c
        self.enabled = True
        if self.closed:         # close() ran between the check and the store
            self._lost()

    def _start_thread(self):
        self.pid = os.getpid()
        t = threading.Thread(target=self._run, name="dshared-near-cache", daemon=True)
        self.thread = t
        t.start()

    def _lost(self):
        self.enabled = False
        self.resets += 1
        self.drop_all()
        c, self.conn = self.conn, None
        if c is not None:
            c.close()

    def _run(self):
        last = time.monotonic()
        pinged = False
        while not self.closed and self.thread is threading.current_thread():
            c = self.conn
            if c is None:
                try:
                    self._connect()
                    last = time.monotonic()
                    pinged = False
                except DsharedError:
                    time.sleep(0.2)
                continue
            try:
                r = c.reader.gets()
                if r is False:
                    try:
                        data = c.sock.recv(65536)
                    except (socket.timeout, BlockingIOError):
                        now = time.monotonic()
                        if now - last > 1.5:
                            raise OSError("no reply from the server for 1.5 s")
                        if now - last > 0.5 and not pinged:
                            c.sock.sendall(c.pack(("PING",)))
                            pinged = True
                        continue
                    if not data:
                        raise OSError("connection closed")
                    c.reader.feed(data)
                    r = c.reader.gets()
                    if r is False:
                        continue
                # the entries go first, the bookkeeping after
                if type(r) is list and len(r) == 3 and r[0] == b"message":
                    keys = r[2]
                    d = self.d
                    if keys is None:
                        self.drop_all()
                    else:
                        for k in keys:
                            e = d.pop(k, None)
                            if e is not None:
                                self.items -= len(e)
                        self.invalidations += 1
                        if self.notify is not None:
                            self.notify()
                last = time.monotonic()
                pinged = False
            except Exception:
                if self.closed:
                    break
                self._lost()
        if self.closed and self.thread is threading.current_thread():
            c, self.conn = self.conn, None
            if c is not None:
                c.close()       # a connection made while close() ran

    def close(self):
        self.closed = True
        self.enabled = False
        self.drop_all()
        c, self.conn = self.conn, None
        if c is not None and c.gen == _client_fork_gen():
            c.close()

    def stats(self):
        return {"enabled": self.enabled, "entries": len(self.d), "items": max(self.items, 0),
                "limit": self.limit, "misses": self.misses, "invalidations": self.invalidations,
                "resets": self.resets}


def _client_fork_gen():
    from dshared.redis._client import _fork_gen
    return _fork_gen[0]


# ------------------------------------------------------------------ lock

# Test hooks (tests only): no_rollback, an exception leaving a
# transaction() undoes nothing and a dead holder's journal is dropped, not
# replayed; undo_budget, journal records undone per script call; on_undo_step,
# called after each such call (a test kills the process there).
_hooks = {"no_rollback": os.environ.get("DSHARED_TEST_NO_ROLLBACK") == "1", "undo_budget": 2000,
          "on_undo_step": None}

_BLOCK_LOCK, _BLOCK_TXN, _BLOCK_SNAPSHOT = 0, 1, 2


class _RedisLock:
    """The context manager returned by RedisSegment.lock(), transaction()
    and snapshot(): holds the lease for the block; a transaction() also
    remembers its savepoint (the journal's length when it began) and rolls
    back to it when an exception leaves the block."""

    __slots__ = ("seg", "timeout", "kind", "marks")

    def __init__(self, seg, timeout, kind=_BLOCK_LOCK):
        self.seg = seg
        self.timeout = timeout
        self.kind = kind
        self.marks = []

    def __enter__(self):
        seg = self.seg
        if not seg.acquire(self.timeout):
            raise LockTimeout("the lock of segment %r was not acquired within %s s"
                              % (seg.name, self.timeout))
        if self.kind == _BLOCK_TXN:
            try:
                # the outermost block starts with an empty journal
                self.marks.append(0 if seg._tls.depth == 1 else seg._client.call(b"LLEN", seg._prefix + b"jnl"))
            except BaseException:
                seg.release()
                raise
        return self

    def __exit__(self, et, ev, tb):
        seg = self.seg
        try:
            if self.kind == _BLOCK_TXN:
                mark = self.marks.pop()
                if et is not None and not _hooks["no_rollback"]:
                    seg._undo(mark, b"1")
        finally:
            seg.release(_quiet=et is not None)


# ------------------------------------------------------------------ segment

_clients = {}
_clients_mu = threading.Lock()


def _close_all():
    """At exit: close every connection (no socket left to the garbage collector)."""
    with _clients_mu:
        clients = list(_clients.values())
    for c in clients:
        c.close()
    for nc in list(_caches):
        nc.close()


atexit.register(_close_all)


def _client(url, name):
    """The connections of segment `name` on server `url` (one client per
    segment: on a Cluster each segment's keys live on their own node)."""
    with _clients_mu:
        c = _clients.get((url, name))
        if c is None:
            c = _clients[(url, name)] = Client(Config(url))
        return c


def _validate(name):
    if not isinstance(name, str):
        raise TypeError("segment name must be a str, not %s" % type(name).__name__)
    if not name or len(name) > 200 or any(ch in name for ch in "{}\0/"):
        raise ValueError("invalid segment name %r (1-200 characters, none of { } / NUL)" % name)
    return name


class RedisSegment:
    """A segment that lives in a Redis server: what dshared.init(name,
    server=URL) returns. The same methods as Segment; `size` is ignored (the
    server's maxmemory bounds it). create=None attaches or creates,
    True only creates (FileExistsError), False only attaches
    (FileNotFoundError)."""

    def __init__(self, name, size=None, create=None, *, server):
        self._name = _validate(name)
        self._url = server
        self._client = _client(server, name)
        self._cfg = self._client.cfg
        self._prefix = ("{dshared:%s}:" % name).encode()
        self._meta = self._prefix + b"meta"
        self._cid = b""
        self._closed = False
        self._tls = threading.local()
        self._local = threading.RLock()
        self._held = None
        self._renewer = None
        self._renew_mu = threading.Lock()
        self._lease_lost = False
        r = self._run(b"init", (_new_id(), b"0" if create is False else b"1"), write=False)
        cid, made = r
        if cid is None:
            raise FileNotFoundError("no segment %r on %s" % (name, self._cfg.safe_url()))
        if create is True and not made:
            raise FileExistsError("segment %r exists on %s" % (name, self._cfg.safe_url()))
        self._cid = cid
        self._created = bool(made)
        # d[k] = a plain value by a caller without the lease: the script's
        # short path (_script.lua, op 'ds'), its constant arguments packed once
        self._ds_pre = b"*11\r\n" + resp(b"EVALSHA", _SHA.encode(), b"1", self._meta, self._prefix, b"ds", cid)
        self._nc = _NearCache(self) if self._cfg.near_cache else None

    # -- the script
    def _run(self, op, args=(), new=(), write=True):
        c = self._client
        tok = getattr(self._tls, "token", None) or b"0"
        flat = [len(new)]
        for cid, fields in new:
            flat.append(cid)
            flat.append(len(fields) // 2)
            flat.extend(fields)
        delay = 0.0002
        while True:
            r = c.call(b"EVALSHA", _SHA, 1, self._meta, self._prefix, op, tok, self._cid, *flat, *args)
            if isinstance(r, Exception):
                msg = str(r)
                if msg.startswith("ERR DSH"):
                    msg = msg[4:]
                if msg.startswith("NOSCRIPT"):
                    c.call(b"SCRIPT", b"LOAD", _LUA)
                    continue
                if msg == "DSHLOCKED":          # another process holds lock(): wait for it
                    time.sleep(delay)
                    delay = min(delay * 2, 0.01)
                    continue
                if msg == "DSHRECOVER":         # a holder died inside a block: roll it back
                    if self.acquire(self._cfg.lease_ms / 1000.0 * 3):
                        self.release(_quiet=True)
                    continue
                if msg.startswith("DSHBLOCK "):
                    raise RuntimeError(msg[9:].split(" script:")[0])
                raise _error(msg)
            return r

    def _lost_or_stale(self):
        """The error for a container that is gone: the view's object was
        removed, or the whole segment is gone from the server."""
        cid = self._client.call(b"HGET", self._meta, b"cid")
        if cid is None:
            return SegmentLostError("segment %r is gone from the server %s (unlinked, flushed, or the server "
                                    "restarted without its data)" % (self._name, self._cfg.safe_url()))
        if cid != self._cid:
            return SegmentLostError("segment %r was recreated on the server" % self._name)
        return StaleReferenceError("the shared object behind this view has been removed")

    def _encode(self, v, new, memo=None):
        """The stored form of v; dicts and lists become new containers
        (appended to `new`), views of this segment references."""
        if memo is None:
            try:
                return self._encode(v, new, {})
            except UnsupportedTypeError:
                e = unsupported(v)
                if e is None:
                    raise
                raise e from None
        e = enc_scalar(v)
        if e is not None:
            return e
        if isinstance(v, (RedisDict, RedisList)):
            # the same segment through another handle (another URL naming the same server, other
            # options): the same creation id
            if v._seg is self or (v._seg._prefix == self._prefix and v._seg._cid == self._cid):
                return (b"D" if isinstance(v, RedisDict) else b"L") + v._id
            v = v.to_python()
        elif not isinstance(v, (dict, list)):
            v = v.to_python()           # a shared-memory view: its contents
        if memo is None:
            memo = {}
        got = memo.get(id(v))
        if got is not None:
            return got[0]
        cid = _new_id()
        ref = (b"D" if isinstance(v, dict) else b"L") + cid
        memo[id(v)] = (ref, v)
        fields = []
        if isinstance(v, dict):
            n = 0
            # a dict subclass is read as dict(v) reads it (its keys() and [])
            for k, x in (v.items() if type(v) is dict else _shm_codec.mapping_items(v)):
                f, o = key_forms(k)
                n += 1
                fields += (f, self._encode(x, new, memo), b"\0o" + f, b"%d|%s" % (n, o) if o else b"%d" % n)
            fields += (b"\0t", b"d", b"\0r", b"0", b"\0s", b"%d" % n, b"\0c", b"%d" % n)
        else:
            items = [self._encode(x, new, memo) for x in (v if type(v) is list else _shm_codec.as_list(v))]
            for i, x in enumerate(items):
                fields += (b"%d" % i, x)
            fields += (b"\0t", b"l", b"\0r", b"0", b"\0n", b"%d" % len(items), b"\0b", b"0", b"\0v", b"0")
        new.append((cid, fields))
        return ref

    def _decode(self, raw):
        c = raw[0]
        if c == 68:
            return RedisDict._make(self, raw[1:])
        if c == 76:
            return RedisList._make(self, raw[1:])
        return dec_scalar(raw)

    def _undump(self, r, memo=None):
        """A value popped by the script: a plain copy of a container (it may
        have been freed), else the value. The script expands each container
        once, depth first in field order, and gives a container met again (an
        alias, a cycle) as its bare reference: the same plain object here."""
        if memo is None:
            memo = {}
        if isinstance(r, list):
            ref, fields = r
            h = {}
            items = []
            for i in range(0, len(fields), 2):
                f, v = fields[i], fields[i + 1]
                if f[:1] == b"\0":
                    h[f] = v
                else:
                    items.append((f, v))
            if ref[:1] == b"D":
                d = memo[ref] = {}
                out = []
                for f, v in items:
                    o = h.get(b"\0o" + f, b"0")
                    seq, _, orig = o.partition(b"|")
                    out.append((int(seq), dec_scalar(orig or f), self._undump(v, memo)))
                out.sort(key=lambda t: t[0])
                for _, k, v in out:
                    d[k] = v
                return d
            lst = memo[ref] = []
            base = int(h.get(b"\0b", b"0"))
            vals = [(int(f) - base, self._undump(v, memo)) for f, v in items]
            vals.sort(key=lambda t: t[0])
            lst.extend(v for _, v in vals)
            return lst
        got = memo.get(r)
        if got is not None:
            return got
        return self._decode(r)

    # -- properties
    @property
    def name(self):
        return self._name

    @property
    def created(self):
        return self._created

    @property
    def closed(self):
        return self._closed

    @property
    def capacity(self):
        """0: a Redis segment has no fixed capacity (the server's maxmemory bounds it)."""
        return 0

    @property
    def poisoned(self):
        return False

    @property
    def server(self):
        """The server URL (without its password)."""
        return self._cfg.safe_url()

    def __repr__(self):
        return "<dshared.RedisSegment %r on %s>" % (self._name, self._cfg.safe_url())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):
        return (_segment_for, (self._url, self._name))

    def _check_open(self):
        if self._closed:
            raise DsharedError("segment %r is closed" % self._name)

    # -- API
    def col(self, name=None):
        """The root RedisDict; with `name`, a top-level dict of that name,
        created empty on first use."""
        self._check_open()
        if name is None:
            return RedisDict._make(self, b"root")
        if not isinstance(name, str):
            raise TypeError("collection name must be a str, not %s" % type(name).__name__)
        cid = self._run(b"col", (name.encode("utf-8", "surrogatepass"), _new_id()))
        return RedisDict._make(self, cid)

    def collections(self):
        """The names of the top-level dicts made by col(name)."""
        r = self._client.call(b"HKEYS", self._prefix + b"roots")
        return sorted(k.decode("utf-8", "surrogatepass") for k in r if k)

    def attached(self):
        """Not tracked on Redis: an empty list."""
        return []

    def acquire(self, timeout=None):
        """Take the segment's lock (a lease renewed in the background while
        held; reentrant in a thread). False if not taken within timeout."""
        self._check_open()
        st = self._tls
        if getattr(st, "depth", 0):
            st.depth += 1
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._local.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return False
        try:
            delay = 0.0002
            while True:
                r = self._run(b"lock", (self._cfg.lease_ms,), write=False)
                if r is not None:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    self._local.release()
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.01)
        except BaseException:
            self._local.release()
            raise
        t, left = r
        st.token = b"%d" % t
        st.depth = 1
        self._held = st.token
        self._lease_lost = False
        self._start_renewer()
        if self._nc is not None:
            # entries read before the lease may wait for an invalidation
            # still in flight: the block reads what the server has now
            self._nc.drop_all()
        if left:
            try:
                self._repair(left)
            except BaseException:
                self.release(_quiet=True)
                raise
        return True

    def _repair(self, records):
        """A holder died (its lease expired) inside a lock() or transaction()
        block: undo its whole block from the journal it left."""
        import logging
        if _hooks["no_rollback"]:
            self._client.call(b"DEL", self._prefix + b"jnl")
            return
        self._undo(0, b"2")
        logging.getLogger("dshared").warning(
            "segment %r on %s: a holder of its lock died inside a lock() or transaction() block: the whole "
            "block was rolled back (%d journal records undone)", self._name, self._cfg.safe_url(), records)

    def _undo(self, mark, count):
        """Undo the journal newest first down to mark, in bounded script
        calls (a script blocks the server while it runs)."""
        try:
            while True:
                left = self._run(b"undo", (mark, _hooks["undo_budget"], count), write=False)
                if _hooks["on_undo_step"] is not None:
                    _hooks["on_undo_step"]()
                if not left:
                    return
        finally:
            if self._nc is not None:
                self._nc.drop_all()

    def release(self, _quiet=False):
        """Give the lock back (the outermost release commits the block:
        LeaseExpiredError if the lease had expired, as the block's writes
        are then rolled back by the next locker)."""
        st = self._tls
        d = getattr(st, "depth", 0)
        if not d:
            raise RuntimeError("release() of a lock this thread does not hold")
        st.depth = d - 1
        if d > 1:
            return
        tok = st.token
        st.token = None
        self._held = None
        try:
            r = self._unlock(tok)
        finally:
            self._local.release()
        if r == 0 and not _quiet:
            raise LeaseExpiredError("the lock lease of segment %r expired before the block ended: what the block "
                                    "wrote is rolled back by the next locker" % self._name)

    def _unlock(self, tok):
        c = self._client
        r = c.call(b"EVALSHA", _SHA, 1, self._meta, self._prefix, b"unlock", tok, self._cid, 0)
        if isinstance(r, Exception) and str(r).startswith("NOSCRIPT"):
            c.call(b"SCRIPT", b"LOAD", _LUA)
            r = c.call(b"EVALSHA", _SHA, 1, self._meta, self._prefix, b"unlock", tok, self._cid, 0)
        return r

    def _start_renewer(self):
        with self._renew_mu:
            t = self._renewer
            if t is not None and t.is_alive() and t.pid == os.getpid():
                return
            t = threading.Thread(target=self._renew_loop, name="dshared-lease", daemon=True)
            t.pid = os.getpid()
            self._renewer = t
            t.start()

    def _renew_loop(self):
        period = self._cfg.lease_ms / 3000.0
        conn = None
        idle = 0.0
        while not self._closed:
            tok = self._held
            if tok is None:
                # lingers a second, so that a loop of lock() does not start a thread each time
                if idle > 1.0:
                    with self._renew_mu:
                        if self._held is None:
                            self._renewer = None
                            break
                    continue
                time.sleep(0.01)
                idle += 0.01
                continue
            idle = 0.0
            try:
                if conn is None or conn.broken:
                    conn = self._cfg.connect(timeout=period)
                r = conn.call(b"EVALSHA", _SHA, 1, self._meta, self._prefix, b"renew", tok, self._cid, 0,
                              self._cfg.lease_ms)
                if isinstance(r, Exception) and str(r).startswith("NOSCRIPT"):
                    conn.call(b"SCRIPT", b"LOAD", _LUA)
                    continue
                if r == 0 and self._held == tok:
                    self._lease_lost = True
            except DsharedError:
                conn = None
            time.sleep(period)
        if conn is not None and not conn.broken:
            conn.close()

    def lock(self, timeout=None):
        """A context manager holding the segment's lock: while it is held,
        no other client's write is applied (writes wait), and every write of
        the holder carries the lease's fencing token. A holder that dies
        inside the block is rolled back to the block's start by the next
        locker, once its lease expires; on an exception, what the block
        wrote stays (transaction() rolls it back)."""
        return _RedisLock(self, timeout, _BLOCK_LOCK)

    def transaction(self, timeout=None):
        """A context manager for an all-or-nothing block: lock(), and an
        exception leaving the block rolls back everything it wrote (then
        propagates). Each write of the block first records what it changes
        in a journal on the server; the lease's release deletes the journal
        (the commit point); a holder that dies inside the block is rolled
        back by the next locker once its lease expires. A nested
        transaction() is a savepoint. Other clients' reads may see the
        block's writes before it ends (read uncommitted); snapshot() reads
        see only committed states."""
        return _RedisLock(self, timeout, _BLOCK_TXN)

    def snapshot(self, timeout=None):
        """A context manager within which this handle's reads see one
        committed state: it holds the lease (other clients' writes wait) and
        reads what the server has, so keep it short."""
        return _RedisLock(self, timeout, _BLOCK_SNAPSHOT)

    def in_transaction(self):
        """True when this thread holds the segment's lock (a lock(),
        transaction() or snapshot() block is open)."""
        return getattr(self._tls, "depth", 0) > 0

    def stats(self, probes=False):
        """Counters: containers, pending_free (queued to be freed in
        bounded steps), the server's used_memory, and the near-cache's."""
        self._check_open()
        conn = self._client
        n = conn.call(b"HLEN", self._prefix + b"ids")
        q = conn.call(b"LLEN", self._prefix + b"free")
        rb, rp = conn.call(b"HMGET", self._meta, b"rollbacks", b"repairs")
        info = conn.call(b"INFO", b"memory")
        used = 0
        if isinstance(info, bytes):
            for line in info.split(b"\r\n"):
                if line.startswith(b"used_memory:"):
                    used = int(line.split(b":")[1])
        return {"backend": "redis", "server": self._cfg.safe_url(), "containers": n, "pending_free": q,
                "server_used_memory": used, "collections": len(self.collections()),
                "rollbacks": int(rb or 0), "repairs": int(rp or 0),
                "near_cache": self._nc.stats() if self._nc is not None else None}

    def check(self):
        """Verify every container (types, counts, list slots, reference
        counts) in one atomic script; a CheckReport."""
        from dshared._heap import CheckReport
        self._check_open()
        problems, garbage, _, _ = self._run(b"check", (), write=False)
        return CheckReport([p.decode("utf-8", "replace") for p in problems], garbage)

    def collect(self):
        """Free every container not reachable from a root (cycles included),
        by mark and sweep in one script; returns the number of containers
        freed (shared memory returns bytes)."""
        self._check_open()
        return self._run(b"collect")

    def drain(self, budget=100000):
        """Free queued unreachable containers (the writes do it about 256
        fields at a time); returns how many stay queued."""
        return self._run(b"drain", (budget,), write=False)

    def close(self):
        """Stop the near-cache and lease threads of this handle; views of it
        stop working. The data stays on the server."""
        if self._closed:
            return
        if getattr(self._tls, "depth", 0):
            self._tls.depth = 1
            try:
                self.release()
            except DsharedError:
                pass
        self._closed = True
        if self._nc is not None:
            self._nc.close()
        self._client.close()        # other handles of this segment reconnect on their next call

    def unlink(self):
        """Delete the segment's keys from the server (every handle of it,
        here and elsewhere, then raises SegmentLostError)."""
        self._run(b"unlink", (), write=False)
        if _segs.get((self._url, self._name)) is self:
            del _segs[(self._url, self._name)]

    # -- reads (plain commands: one round trip each)
    def _cached_read(self, key, slot, fetch, arg=_ABSENT):
        """Serve slot of container key from the near-cache, or call
        fetch() and keep its result: fetch returns (value, cacheable);
        fetch(arg), where arg is given, returns the value (cacheable)."""
        nc = self._nc
        if nc is None:
            return fetch()[0] if arg is _ABSENT else fetch(arg)
        if not nc.enabled or nc.pid != _pid[0]:
            if nc.pid != _pid[0]:
                nc.forked()
            nc.ensure()
        nc.misses += 1
        epoch = nc.epoch
        d = nc.d
        ent = d.get(key)
        if ent is None:
            ent = d.setdefault(key, {})         # the placeholder
        if arg is _ABSENT:
            v, ok = fetch()
        else:
            v, ok = fetch(arg), True
        if ok and nc.enabled and nc.epoch == epoch and d.get(key) is ent:
            if slot not in ent:
                nc.items += 1
                if nc.items > nc.limit:
                    nc.drop_all()
                    return v
            ent[slot] = v
        return v

    def _dropped(self, key):
        """After a write to container key: its entry goes."""
        nc = self._nc
        if nc is not None:
            e = nc.d.pop(key, None)
            if e is not None:
                nc.items -= len(e)


def _fast_get(ent, k):
    return ent[k]


class RedisDict(MutableMapping):
    """A dict in a Redis segment (a view: made by the segment). The methods
    of SharedDict; single operations are atomic."""

    __slots__ = ("_seg", "_id", "_key", "_nd", "_pre", "__weakref__")
    _dshared_view = True

    @classmethod
    def _make(cls, seg, cid):
        self = object.__new__(cls)
        self._seg = seg
        self._id = cid
        key = self._key = seg._prefix + cid
        self._nd = seg._nc.d if seg._nc is not None else {}     # the near-cache's entries
        # d[k] on a miss: HMGET key \0t field, all but the field packed once
        self._pre = b"*4\r\n$5\r\nHMGET\r\n$%d\r\n%s\r\n$2\r\n\0t\r\n" % (len(key), key)
        return self

    def __init__(self, other=(), /, **kwds):
        self.update(other, **kwds)

    @property
    def segment(self):
        return self._seg

    def _identity(self):
        return (self._seg._prefix, self._id)

    def __reduce__(self):
        return (_rebuild, (self._seg._url, self._seg._name, self._seg._cid, b"D", self._id))

    # -- reads
    def __getitem__(self, k):
        ent = self._nd.get(self._key)
        if ent is not None:
            try:
                v = ent[k]
            except (KeyError, TypeError):
                pass
            else:
                if v is _ABSENT:
                    raise KeyError(k)
                return v
        f = b"s" + k.encode("utf-8", "surrogatepass") if type(k) is str else canon(k)
        seg = self._seg
        if seg._nc is not None:
            v = seg._cached_read(self._key, k, self._fetch, f)
            if v is _ABSENT:
                raise KeyError(k)
            return v
        # no near-cache: _fetch() inlined (what runs after the reply costs
        # several times its instructions: the caches are cold after the wait)
        r = seg._client.callp(self._pre + b"$%d\r\n%s\r\n" % (len(f), f))
        if type(r) is list:
            t, raw = r
            if raw is not None and t is not None:       # (a freed container loses \0t first)
                c = raw[0]
                if c == 115:
                    return raw[1:].decode("utf-8", "surrogatepass")
                if c != 68 and c != 76:
                    return dec_scalar(raw)
        v = self._reply(r)
        if v is _ABSENT:
            raise KeyError(k)
        return v

    def _fetch(self, f):
        """The value of field f from the server (one round trip, the
        command all but packed), _ABSENT if there is none."""
        return self._reply(self._seg._client.callp(self._pre + b"$%d\r\n%s\r\n" % (len(f), f)))

    def _reply(self, r):
        """The value in the reply r to HMGET key \\0t field."""
        seg = self._seg
        if type(r) is not list:
            raise _error(str(r))
        t, raw = r
        if t is None:
            raise seg._lost_or_stale()
        if raw is None:
            return _ABSENT
        c = raw[0]
        if c == 68:
            return RedisDict._make(seg, raw[1:])
        if c == 76:
            return RedisList._make(seg, raw[1:])
        return dec_scalar(raw)

    def get(self, k, default=None):
        try:
            return self[k]
        except KeyError:
            return default

    def __contains__(self, k):
        try:
            self[k]
        except KeyError:
            return False
        return True

    def __len__(self):
        seg = self._seg

        def fetch():
            t, n = seg._client.call(b"HMGET", self._key, b"\0t", b"\0c")
            if t is None:
                raise seg._lost_or_stale()
            return int(n), True

        nc = seg._nc
        if nc is not None:
            ent = nc.d.get(self._key)
            if ent is not None:
                n = ent.get(_LEN)
                if n is not None:
                    return n
        return seg._cached_read(self._key, _LEN, fetch)

    def _snapshot(self):
        """[(key, value)] in insertion order, read in one step."""
        seg = self._seg
        nc = seg._nc
        if nc is not None:
            ent = nc.d.get(self._key)
            if ent is not None:
                s = ent.get(_SNAP)
                if s is not None:
                    return list(s)

        def fetch():
            raw = seg._client.call(b"HGETALL", self._key)
            h = {}
            items = []
            for i in range(0, len(raw), 2):
                f = raw[i]
                if f[:1] == b"\0":
                    h[f] = raw[i + 1]
                else:
                    items.append((f, raw[i + 1]))
            if b"\0t" not in h:
                raise seg._lost_or_stale()
            out = []
            for f, v in items:
                seq, _, orig = h.get(b"\0o" + f, b"0").partition(b"|")
                out.append((int(seq), dec_scalar(orig or f), seg._decode(v)))
            out.sort(key=lambda t: t[0])
            return tuple((k, v) for _, k, v in out), True

        return list(seg._cached_read(self._key, _SNAP, fetch))

    def __iter__(self):
        return self._iter(0)

    def __reversed__(self):
        return self._iter(4)

    def _iter(self, mode):
        """Iteration over the items as they were at its start; as a dict's,
        it raises RuntimeError at the next step once the dict changed size
        (a near-cache hit per step; a round trip without the near-cache)."""
        s = self._snapshot()
        if mode & 4:
            s.reverse()
        m = mode & 3
        return self._gen(s, m)

    def _gen(self, s, m):
        n = len(s)
        for k, v in s:
            if len(self) != n:
                raise RuntimeError("dictionary changed size during iteration")
            yield k if m == 0 else v if m == 1 else (k, v)
        if len(self) != n:
            raise RuntimeError("dictionary changed size during iteration")

    def keys(self):
        return _Keys(self)

    def values(self):
        return _Values(self)

    def items(self):
        return _Items(self)

    # -- writes
    def _w(self, op, args, new=()):
        seg = self._seg
        try:
            return seg._run(op, args, new)
        finally:
            seg._dropped(self._key)

    def __setitem__(self, k, v):
        if type(k) is str:
            f, o = b"s" + k.encode("utf-8", "surrogatepass"), b""
        else:
            f, o = key_forms(k)
        seg = self._seg
        try:
            e = enc_scalar(v)
        except UnsupportedTypeError:
            e = None            # _encode() below raises it, saying where
        if e is not None and not getattr(seg._tls, "token", None):
            # the common case: the script's short path, one short call
            i = self._id
            try:
                r = seg._client.callp(seg._ds_pre + b"$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                                      % (len(i), i, len(f), f, len(e), e, len(o), o))
            finally:
                seg._dropped(self._key)
            if r == 1:
                return
            # DSHFULL (the full 'dset' must run: it raises or waits where it has to), NOSCRIPT, ...
        new = []
        val = self._seg._encode(v, new)
        self._w(b"dset", (self._id, f, val, o), new)

    def __delitem__(self, k):
        f = canon(k)
        if self._w(b"dpop", (self._id, f)) is None:
            raise KeyError(k)

    _MISSING = object()

    def pop(self, k, default=_MISSING):
        f = canon(k)
        r = self._w(b"dpop", (self._id, f))
        if r is None:
            if default is RedisDict._MISSING:
                raise KeyError(k)
            return default
        return self._seg._undump(r)

    def popitem(self):
        r = self._w(b"dpopitem", (self._id,))
        if r is None:
            raise KeyError("popitem(): dictionary is empty")
        f, o, v = r
        orig = o.partition(b"|")[2]
        return dec_scalar(orig or f), self._seg._undump(v)

    def setdefault(self, k, default=None):
        f, o = key_forms(k)
        new = []
        val = self._seg._encode(default, new)
        r = self._w(b"dsetdef", (self._id, f, val, o), new)
        return self._seg._decode(val if r is None else r)

    def clear(self):
        self._w(b"dclear", (self._id,))

    def update(self, other=(), /, **kwds):
        """Store every pair in one atomic step (read as dict.update reads other)."""
        if isinstance(other, RedisDict):
            pairs = other._snapshot()
        elif isinstance(other, dict) or hasattr(other, "keys"):
            pairs = _shm_codec.mapping_items(other)     # read as dict.update reads it
        else:
            pairs = []
            for i, item in enumerate(other):
                if type(item) is not list and type(item) is not tuple:
                    try:
                        item = list(iter(item))
                    except TypeError:
                        raise TypeError("cannot convert dictionary update sequence element #%d to a "
                                        "sequence" % i) from None
                if len(item) != 2:
                    raise ValueError("dictionary update sequence element #%d has length %d; 2 is required"
                                     % (i, len(item)))
                pairs.append((item[0], item[1]))
        pairs.extend(kwds.items())
        if not pairs:
            return
        new = []
        args = [self._id, b"%d" % len(pairs)]
        memo = {}
        for k, v in pairs:
            f, o = key_forms(k)
            args += (f, self._seg._encode(v, new, memo), o)
        self._w(b"dupd", args, new)

    def incr(self, k, delta=1, default=0):
        """Atomically add delta to d[k] (default if absent) and return the
        new value: one HINCRBY for 64-bit ints, a compare-and-set otherwise."""
        if not isinstance(delta, (int, float)):
            raise TypeError("incr() delta must be an int or a float, not %s" % type(delta).__name__)
        if not isinstance(default, (int, float)):
            raise TypeError("incr() default must be an int or a float, not %s" % type(default).__name__)
        f, o = key_forms(k)
        if type(delta) is int and type(default) is int and -(1 << 63) <= delta < (1 << 63) \
                and -(1 << 63) <= default < (1 << 63):
            r = self._w(b"dincr", (self._id, f, delta, default, o, b"i"))
            if r != b"DSHCAS":
                return int(r)
        seg = self._seg
        while True:
            t, cur = seg._client.call(b"HMGET", self._key, b"\0t", f)
            if t is None:
                raise seg._lost_or_stale()
            if cur is None:
                base = default
            else:
                base = seg._decode(cur)
                if not isinstance(base, (int, float)):
                    raise TypeError("incr() needs an int or a float value, not %s" % type(base).__name__)
            new = base + delta
            if self._w(b"dcas", (self._id, f, cur or b"", enc_scalar(new), o)) == 1:
                return new

    # -- the rest of dict's API
    def copy(self):
        return dict(self._snapshot())

    def to_python(self, _memo=None):
        memo = {} if _memo is None else _memo
        got = memo.get(self._identity())
        if got is not None:
            return got
        out = memo[self._identity()] = {}
        for k, v in self._snapshot():
            out[k] = v.to_python(memo) if isinstance(v, (RedisDict, RedisList)) else v
        return out

    @classmethod
    def fromkeys(cls, iterable, value=None, /):
        return dict.fromkeys(iterable, value)

    def __eq__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        mine = dict(self._snapshot())
        if isinstance(other, RedisDict):
            return mine == dict(other._snapshot())
        return mine == dict(other.items())

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None

    def __or__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def __ror__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        new = dict(other)
        new.update(self._snapshot())
        return new

    def __ior__(self, other):
        self.update(other)
        return self

    def __repr__(self):
        active = _repr_active()
        ident = self._identity()
        if ident in active:
            return "{...}"
        active.add(ident)
        try:
            return "{%s}" % ", ".join("%r: %r" % kv for kv in self._snapshot())
        finally:
            active.discard(ident)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.to_python()


_repr_tls = threading.local()


def _repr_active():
    a = getattr(_repr_tls, "a", None)
    if a is None:
        a = _repr_tls.a = set()
    return a


class _ViewBase:
    __slots__ = ()

    @property
    def mapping(self):
        """A read-only proxy of the dict this view belongs to."""
        from types import MappingProxyType
        return MappingProxyType(self._mapping)

    def __iter__(self):
        return self._mapping._iter(self._mode)

    def __reversed__(self):
        return self._mapping._iter(self._mode | 4)

    def __repr__(self):
        return "%s(%r)" % (self._name, list(self))


class _Keys(_ViewBase, KeysView):
    __slots__ = ()
    _mode = 0
    _name = "dict_keys"


class _Values(_ViewBase, ValuesView):
    __slots__ = ()
    _mode = 1
    _name = "dict_values"


class _Items(_ViewBase, ItemsView):
    __slots__ = ()
    _mode = 2
    _name = "dict_items"

    def __contains__(self, item):
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        k, v = item
        try:
            mine = self._mapping[k]
        except (KeyError, TypeError):
            return False
        return mine is v or mine == v


def _rebuild(url, name, cid, kind, ident):
    seg = _segment_for(url, name)
    if seg._cid != cid:
        raise SegmentLostError("segment %r was recreated on the server" % name)
    return (RedisDict if kind == b"D" else RedisList)._make(seg, ident)


_segs = {}
_sorting = threading.local()      # list key -> [changes by this thread] while it sorts that list


def _segment_for(url, name, create=False):
    """This process's open handle of segment `name` on `url` (one near-cache
    and one invalidation connection per segment, however often init() or
    attach() runs), opened if there is none."""
    seg = _segs.get((url, name))
    if seg is not None and not seg.closed and seg._client.call(b"HGET", seg._meta, b"cid") != seg._cid:
        seg.close()                 # unlinked or lost since: a new handle says so (created or not found)
        seg = None
    if seg is None or seg.closed:
        seg = _segs[(url, name)] = RedisSegment(name, create=None if create else False, server=url)
    return seg


def open_segment(name, size=None, *, server, create=True):
    """What dshared.init() (create=True) and attach() (create=False) return
    for a server: this process's handle of the segment, opened once."""
    _validate(name)
    return _segment_for(server, name, create)


_SSIZE = 1 << 63


def _index(i):
    """A list index, converted as list's subscript converts it."""
    try:
        i = operator.index(i)
    except TypeError:
        raise TypeError("list indices must be integers or slices, not %s" % type(i).__name__) from None
    if not -_SSIZE <= i < _SSIZE:
        raise IndexError("cannot fit 'int' into an index-sized integer")
    return i


def _as_int(i):
    """An index argument of a method (insert, pop), converted as list's."""
    i = operator.index(i)
    if not -_SSIZE <= i < _SSIZE:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return i


class RedisList(_ListOrder, MutableSequence):
    """A list in a Redis segment (a view: made by the segment). The methods
    of SharedList; single operations are atomic."""

    __slots__ = ("_seg", "_id", "_key", "_nd", "__weakref__")
    _dshared_view = True

    @classmethod
    def _make(cls, seg, cid):
        self = object.__new__(cls)
        self._seg = seg
        self._id = cid
        self._key = seg._prefix + cid
        self._nd = seg._nc.d if seg._nc is not None else {}     # the near-cache's entries
        return self

    def __init__(self, iterable=(), /):
        items = [] if iterable is self else list(iterable)
        self[:] = items

    @property
    def segment(self):
        return self._seg

    def _identity(self):
        return (self._seg._prefix, self._id)

    def __reduce__(self):
        return (_rebuild, (self._seg._url, self._seg._name, self._seg._cid, b"L", self._id))

    def _raw(self):
        """(version, [stored forms]) read in one step (cached)."""
        seg = self._seg
        nc = seg._nc
        if nc is not None:
            ent = nc.d.get(self._key)
            if ent is not None:
                s = ent.get(_SNAP)
                if s is not None:
                    return s

        def fetch():
            raw = seg._client.call(b"HGETALL", self._key)
            h = {}
            items = []
            for i in range(0, len(raw), 2):
                f = raw[i]
                if f[:1] == b"\0":
                    h[f] = raw[i + 1]
                else:
                    items.append((int(f), raw[i + 1]))
            if b"\0t" not in h:
                raise seg._lost_or_stale()
            items.sort(key=lambda t: t[0])
            return (h.get(b"\0v", b"0"), tuple(v for _, v in items)), True

        return seg._cached_read(self._key, _SNAP, fetch)

    def _items(self):
        dec = self._seg._decode
        return [dec(v) for v in self._raw()[1]]

    def _snapshot(self):
        ver, raws = self._raw()
        dec = self._seg._decode
        return ver, [dec(v) for v in raws]

    def __len__(self):
        seg = self._seg
        nc = seg._nc
        if nc is not None:
            ent = nc.d.get(self._key)
            if ent is not None:
                n = ent.get(_LEN)
                if n is not None:
                    return n

        def fetch():
            t, n = seg._client.call(b"HMGET", self._key, b"\0t", b"\0n")
            if t is None:
                raise seg._lost_or_stale()
            return int(n), True

        return seg._cached_read(self._key, _LEN, fetch)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._items()[i]
        i = _index(i)
        nc = self._seg._nc
        if nc is not None:
            ent = nc.d.get(self._key)
            if ent is not None:
                v = ent.get(i, _ABSENT)
                if v is not _ABSENT:
                    return v
        seg = self._seg

        def fetch():
            r = seg._run(b"lget", (self._id, i), write=False)
            return seg._decode(r), True

        try:
            return seg._cached_read(self._key, i, fetch)
        except IndexError:
            raise IndexError("list index out of range") from None

    def __iter__(self):
        """Live, as a list iterator: each step reads the list as it is now
        (a near-cache hit while it is unchanged)."""
        i = 0
        dec = self._seg._decode
        while True:
            raws = self._raw()[1]
            if i >= len(raws):
                return
            yield dec(raws[i])
            i += 1

    def __reversed__(self):
        """A list's reverse iterator over the items as they are now: its
        positions, length hint and __setstate__ are list's."""
        return reversed(self._items())

    def _w(self, op, args, new=()):
        seg = self._seg
        sorting = _sorting.__dict__.get(self._key)
        if sorting is not None:
            sorting[0] += 1             # this thread changed the list during its sort
        try:
            return seg._run(op, args, new)
        finally:
            seg._dropped(self._key)

    def _replace(self, fn):
        """Compare-and-set of the whole list: fn(version, raws) -> new raws
        (and new containers); retried while another writer got between."""
        while True:
            ver, raws = self._raw()
            new = []
            out = fn(list(raws), new)
            if self._w(b"lrepl", (self._id, ver, *out), new) == 1:
                return

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            vals = list(v) if not isinstance(v, RedisList) else v._items()

            def fn(raws, new):
                memo = {}
                enc = [self._seg._encode(x, new, memo) for x in vals]
                cur = list(raws)
                cur[i] = enc
                return cur
            self._replace(fn)
            return
        i = _index(i)
        new = []
        val = self._seg._encode(v, new)
        try:
            self._w(b"lset", (self._id, i, val), new)
        except IndexError:
            raise IndexError("list assignment index out of range") from None

    def __delitem__(self, i):
        if isinstance(i, slice):
            def fn(raws, new):
                del raws[i]
                return raws
            self._replace(fn)
            return
        i = _index(i)
        try:
            self._w(b"lpop", (self._id, i, b""))
        except IndexError:
            raise IndexError("list assignment index out of range") from None

    def insert(self, i, v):
        i = _as_int(i)
        new = []
        val = self._seg._encode(v, new)
        self._w(b"lins", (self._id, i, val), new)

    def append(self, v):
        new = []
        val = self._seg._encode(v, new)
        self._w(b"lext", (self._id, val), new)

    def extend(self, values):
        vals = self._items() if values is self else _shm_codec.as_list(values)
        if not vals:
            return
        new = []
        memo = {}
        enc = [self._seg._encode(x, new, memo) for x in vals]
        self._w(b"lext", (self._id, *enc), new)

    def pop(self, i=-1):
        i = _as_int(i)
        r = self._w(b"lpop", (self._id, i, b""))
        return self._seg._undump(r[0])

    def clear(self):
        self._w(b"lrepl", (self._id, b""))

    def remove(self, value):
        while True:
            ver, items = self._snapshot()
            try:
                i = items.index(value)
            except ValueError:
                raise ValueError("list.remove(x): x not in list") from None
            if self._w(b"lpop", (self._id, i, ver)) != 0:
                return

    def reverse(self):
        self._replace(lambda raws, new: raws[::-1])

    def sort(self, *, key=None, reverse=False):
        """Stable sort in place: keys computed on a snapshot, the order
        published if the list did not change meanwhile (else again)."""
        reverse = _sort_reverse(reverse)
        dec = self._seg._decode
        counter = [0]
        mine = _sorting.__dict__
        outer = mine.get(self._key)
        mine[self._key] = counter

        def fn(raws, new):
            items = [dec(v) for v in raws]
            ks = items if key is None else [key(x) for x in items]
            order = sorted(range(len(items)), key=ks.__getitem__, reverse=reverse)
            if counter[0]:
                raise ValueError("list modified during sort")
            return [raws[j] for j in order]
        try:
            self._replace(fn)
        finally:
            if outer is None:
                mine.pop(self._key, None)
            else:
                mine[self._key] = outer

    def __contains__(self, value):
        return value in self._items()

    def index(self, value, start=0, stop=sys.maxsize):
        return self._items().index(value, start, stop)

    def count(self, value):
        return self._items().count(value)

    def copy(self):
        return self._items()

    def to_python(self, _memo=None):
        memo = {} if _memo is None else _memo
        got = memo.get(self._identity())
        if got is not None:
            return got
        out = memo[self._identity()] = []
        for v in self._items():
            out.append(v.to_python(memo) if isinstance(v, (RedisDict, RedisList)) else v)
        return out

    def __iadd__(self, other):
        self.extend(other)
        return self

    def __add__(self, other):
        if isinstance(other, RedisList):
            return self._items() + other._items()
        if isinstance(other, list):
            return self._items() + other
        return NotImplemented

    def __radd__(self, other):
        if isinstance(other, list):
            return other + self._items()
        return NotImplemented

    def __mul__(self, n):
        if not hasattr(type(n), "__index__"):
            return NotImplemented
        return self._items() * n

    __rmul__ = __mul__

    def __imul__(self, n):
        if not hasattr(type(n), "__index__"):
            return NotImplemented
        n = n.__index__()
        self._replace(lambda raws, new: raws * max(n, 0))
        return self

    __hash__ = None

    def __repr__(self):
        active = _repr_active()
        ident = self._identity()
        if ident in active:
            return "[...]"
        active.add(ident)
        try:
            return "[%s]" % ", ".join(repr(x) for x in self._items())
        finally:
            active.discard(ident)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.to_python()


def unlink(name, *, server):
    """Delete segment `name` from the server `server` (no error if absent)."""
    _validate(name)
    seg = _segs.pop((server, name), None)
    if seg is not None:
        seg.close()
    c = _client(server, name)
    prefix = ("{dshared:%s}:" % name).encode()
    r = c.call(b"EVALSHA", _SHA, 1, prefix + b"meta", prefix, b"unlink", b"0", b"", 0)
    if isinstance(r, Exception) and str(r).startswith("NOSCRIPT"):
        c.call(b"SCRIPT", b"LOAD", _LUA)
        r = c.call(b"EVALSHA", _SHA, 1, prefix + b"meta", prefix, b"unlink", b"0", b"", 0)
    if isinstance(r, Exception):
        raise DsharedError("Redis error: %s" % r)
