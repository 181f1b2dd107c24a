"""A minimal Redis client: one socket per thread, commands packed and replies
parsed by hiredis. redis-py costs several times a round trip per command;
this layer costs a few microseconds (bench/test_bench_redis.py)."""

import os
import socket
import struct
import threading
from urllib.parse import parse_qs, unquote, urlparse

from dshared._errors import DsharedError

__all__ = ["ServerConnectionError", "Config", "Client", "resp"]

try:
    from hiredis import pack_command as hiredis_pack
except ImportError:         # reported when a connection is made (Config.connect imports hiredis)
    def hiredis_pack(args):
        import hiredis
        return hiredis.pack_command(args)


def resp(*args):
    """The RESP encoding of a command (or of the start of one: a hot path
    packs its constant arguments once and appends the others per call).
    Each argument is bytes."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class ServerConnectionError(DsharedError, ConnectionError):
    """The Redis server could not be reached, or the connection broke during
    a call. The next call reconnects; an operation interrupted by this error
    may or may not have been applied (it was applied whole or not at all)."""


_fork_gen = [0]


def _after_fork():
    _fork_gen[0] += 1


os.register_at_fork(after_in_child=_after_fork)


class Config:
    """What a server URL says: redis://[user:password@]host:port/db,
    rediss://... (TLS), unix:///path/to/socket?db=N. Query options:
    lease_ms (lock() lease, default 10000), timeout (seconds a reply may
    take, default 60), near_cache=0 (no near-cache), near_cache_items
    (bound, default 100000)."""

    def __init__(self, url):
        u = urlparse(url)
        if u.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("server URL must start with redis://, rediss:// or unix://, not %r" % url)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        self.url = url
        self.tls = u.scheme == "rediss"
        self.unix = u.path if u.scheme == "unix" else None
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.user = unquote(u.username) if u.username else None
        self.password = unquote(u.password) if u.password else None
        if self.unix is not None:
            self.db = int(q.get("db", 0))
        else:
            path = u.path.strip("/")
            self.db = int(path) if path else int(q.get("db", 0))
        self.lease_ms = int(q.get("lease_ms", 10000))
        self.timeout = float(q.get("timeout", 60))
        self.near_cache = q.get("near_cache", "1") not in ("0", "false", "no")
        self.near_cache_items = int(q.get("near_cache_items", 100000))

    def safe_url(self):
        """The URL without its password."""
        if self.unix is not None:
            return "unix://%s?db=%d" % (self.unix, self.db)
        return "%s://%s:%d/%d" % ("rediss" if self.tls else "redis", self.host, self.port, self.db)

    def connect(self, timeout=None):
        """A connected, authenticated socket with db selected, and its reader."""
        import hiredis
        try:
            if self.unix is not None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(self.unix)
            else:
                s = socket.create_connection((self.host, self.port), timeout=10)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls:
                    import ssl
                    s = ssl.create_default_context().wrap_socket(s, server_hostname=self.host)
        except OSError as e:
            raise ServerConnectionError("cannot connect to the Redis server %s: %s" % (self.safe_url(), e)) from e
        t = self.timeout if timeout is None else timeout
        if self.tls:
            s.settimeout(t)
        else:
            # a blocking socket whose timeouts the kernel keeps: Python's own
            # timeout mode polls before every send and receive
            s.settimeout(None)
            tv = struct.pack("ll", int(t), int((t % 1) * 1e6))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        conn = Conn(self, s, hiredis.Reader(), hiredis.pack_command)
        if self.password is not None:
            args = ("AUTH", self.user, self.password) if self.user else ("AUTH", self.password)
            r = conn.call(*args)
            if isinstance(r, Exception):
                conn.close()
                raise DsharedError("Redis AUTH failed: %s" % r)
        if self.db:
            r = conn.call("SELECT", self.db)
            if isinstance(r, Exception):
                conn.close()
                raise DsharedError("Redis SELECT %d failed: %s" % (self.db, r))
        return conn


class Conn:
    """One connection: call() sends a command and returns its reply (an
    error reply is returned as a hiredis.ReplyError instance, not raised)."""

    __slots__ = ("cfg", "sock", "reader", "pack", "gen", "broken", "buf")

    def __init__(self, cfg, sock, reader, pack):
        self.cfg = cfg
        self.sock = sock
        self.reader = reader
        self.pack = pack
        self.gen = _fork_gen[0]
        self.broken = False
        # replies are read into this buffer: a recv(n) of a large n allocates
        # n bytes per call (past 128 KiB an mmap and munmap: 2x a round trip)
        self.buf = bytearray(65536)

    def call(self, *args):
        return self.callp(self.pack(args))

    def callp(self, data):
        """call() of a command already packed (RESP bytes). Each call reads
        its own reply whole: the reader holds nothing between calls."""
        sock = self.sock
        rd = self.reader
        buf = self.buf
        try:
            sock.sendall(data)
            while True:
                n = sock.recv_into(buf)
                if not n:
                    raise ConnectionResetError("connection closed by the server")
                rd.feed(buf, 0, n)
                r = rd.gets()
                if r is not False:
                    return r
        except BaseException as e:
            # also on an interrupt (KeyboardInterrupt, a signal handler's
            # exception): the reply not read would be the next call's
            self.close()
            if isinstance(e, (OSError, EOFError)) or type(e).__name__ == "ProtocolError":
                raise ServerConnectionError("lost the connection to the Redis server %s: %s"
                                            % (self.cfg.safe_url(), e)) from e
            raise

    def close(self):
        self.broken = True
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """Connections to one server, one per thread (and per process: a child
    made by fork opens its own)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._tls = threading.local()
        self._all = []
        self._mu = threading.Lock()

    def conn(self):
        c = getattr(self._tls, "c", None)
        if c is None or c.broken or c.gen != _fork_gen[0]:
            c = self.cfg.connect()
            self._tls.c = c
            with self._mu:
                self._all = [x for x in self._all if not x.broken and x.gen == _fork_gen[0]]
                self._all.append(c)
        return c

    def call(self, *args):
        """One command; a Cluster's MOVED reply moves this client (each
        segment has its own: its keys share one slot) to the node named,
        and the command is sent there."""
        return self.callp(hiredis_pack(args))

    def callp(self, data):
        """call() of a command already packed (RESP bytes: the hot paths
        keep the constant part of their command packed)."""
        c = getattr(self._tls, "c", None)
        if c is None or c.broken or c.gen != _fork_gen[0]:
            c = self.conn()
        r = c.callp(data)
        if isinstance(r, Exception) and str(r).startswith("MOVED "):
            return self._moved(data, r)
        return r

    def _moved(self, data, r):
        """A Cluster's MOVED reply r: this client moves to the node named
        and sends the command there (at most 5 moves)."""
        for _ in range(5):
            host, _, port = str(r).split()[2].rpartition(":")
            self.cfg.host = host or self.cfg.host
            self.cfg.port = int(port)
            self.close()
            r = self.conn().callp(data)
            if not (isinstance(r, Exception) and str(r).startswith("MOVED ")):
                return r
        return r

    def close(self):
        with self._mu:
            conns, self._all = self._all, []
        for c in conns:
            if c.gen == _fork_gen[0]:
                c.close()
            else:
                c.broken = True     # the parent's socket: leave it to the parent
        self._tls = threading.local()
