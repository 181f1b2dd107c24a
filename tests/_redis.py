"""A real redis-server for the Redis backend's tests: started on 127.0.0.1 on
a free port, without persistence, stopped (and reaped) at the end.

Without a redis-server binary the Redis tests are skipped with one reason
line, except when DSHARED_REQUIRE_REDIS=1 (CI), where they fail."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

SKIP_REASON = "redis-server is not installed here (apt-get install redis-server): the Redis backend's tests need it"


def redis_server_binary():
    """The redis-server to run: $DSHARED_REDIS_SERVER ("none": as if there
    were none), else the one on PATH or in /usr/bin; None if there is none."""
    env = os.environ.get("DSHARED_REDIS_SERVER")
    if env:
        return None if env == "none" else env
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


def required():
    return os.environ.get("DSHARED_REQUIRE_REDIS") == "1"


def _die_with_parent():
    """In the server's process before exec: SIGKILL when the test process
    dies (a killed pytest leaves no redis-server behind)."""
    import ctypes
    import signal
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on a free loopback port; .url, .stop(), .restart()
    (a restart loses every key: no persistence)."""

    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="dsh-redis-")
        self.port = None
        self.proc = None
        self.start()

    def start(self):
        for _ in range(5):
            self.port = self.port or _free_port()
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.dir, "--protected-mode", "yes", "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            return
                except OSError:
                    time.sleep(0.02)
            self.stop()
            self.port = None
        raise RuntimeError("could not start %s" % self.binary)

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def stop(self):
        p, self.proc = self.proc, None
        if p is not None:
            p.kill()
            p.wait(10)
            if p.stderr:
                p.stderr.close()

    def restart(self):
        self.stop()
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Three masters (no replicas) on free loopback ports, joined with
    redis-cli --cluster create; .url names the first node."""

    def __init__(self, binary, masters=3):
        self.dir = tempfile.mkdtemp(prefix="dsh-redis-cluster-")
        cli = shutil.which("redis-cli") or os.path.join(os.path.dirname(binary), "redis-cli")
        self.procs = []
        self.ports = []
        try:
            for i in range(masters):
                port = _free_cluster_port()
                d = os.path.join(self.dir, str(i))
                os.mkdir(d)
                self.procs.append(subprocess.Popen(
                    [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", d, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--loglevel", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent))
                self.ports.append(port)
            for port in self.ports:
                _wait_ping(port)
            r = subprocess.run([cli, "--cluster", "create"] + ["127.0.0.1:%d" % p for p in self.ports]
                               + ["--cluster-replicas", "0", "--cluster-yes"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError("redis-cli --cluster create failed: " + r.stdout + r.stderr)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = [subprocess.run([cli, "-p", str(p), "cluster", "info"], capture_output=True,
                                         text=True, timeout=10).stdout for p in self.ports]
                if all("cluster_state:ok" in s for s in states):
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
        except BaseException:
            self.close()
            raise

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.ports[0]

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait(10)
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_cluster_port():
    """A free port whose cluster bus port (port + 10000) is free too."""
    import random
    rnd = random.SystemRandom()
    for _ in range(200):
        port = rnd.randrange(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports for a cluster node")


def _wait_ping(port):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server on port %d did not answer" % port)


# Tests of the dict/list behaviour suites that the Redis backend fails on
# purpose: each a documented difference (docs/more-than-one-host.md). They
# are strict xfails there, so that a fixed one is noticed.
DIFFERENCES = [
    (r"test_pop_container_value_returns_its_content|test_slice_get_of_containers_gives_equal_values"
     r"|test_append\[|test_pop_container_returns_its_content|test_container_roundtrip\[redis-c1[01]\]"
     r"|test_nested_containers_read_back_as_live_views|test_to_python_is_a_plain_deep_copy"
     r"|test_dict_reached_twice_at_different_depths_is_stored_once|test_cycle_through_a_tuple",
     "tuples hold plain values only on Redis"),
    (r"test_iterators_pickle_and_copy_as_(dict|list)_iterators\[redis-\d-(keys|values|items|iter|reversed"
     r"|reversed-items|False)\]|test_iterator_pickle_after_a_change_raises_as_dict|test_iterator_length_hint"
     r"|test_iterator_setstate_rejects_what_list_iterators_reject"
     # (reversed() of a Redis list is a list's reverse iterator over its items)
     r"|test_iterator_setstate_clamps_as_list_iterators\[redis-steps\d-iter\]",
     "iterators of Redis views are generators: no pickling, copy, __length_hint__ or __setstate__"),
]


def mark_difference(request):
    """Mark the running test xfail (strict) if it is a known difference."""
    import re
    import pytest
    for pattern, reason in DIFFERENCES:
        if re.search(pattern, request.node.name):
            request.applymarker(pytest.mark.xfail(strict=True, reason="Redis backend: " + reason))
