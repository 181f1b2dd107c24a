"""The Redis backend on a three-master Cluster (slow: the cluster takes
seconds to form). Segments whose names hash to each of the masters run the
behaviour suite; no CROSSSLOT (or other) error may appear: every key of a
segment carries its hash tag."""
import pytest

import test_backends as B


def _names_per_master(cluster, base):
    """Segment names, one on each master (by the slot of their hash tag)."""
    from dshared.redis._client import Client, Config
    c = Client(Config(cluster.url))
    try:
        ranges = [(lo, hi, master[1]) for lo, hi, master, *_ in c.call(b"CLUSTER", b"SLOTS")]
        found = {}
        for i in range(1000):
            name = "%s-%d" % (base, i)
            slot = c.call(b"CLUSTER", b"KEYSLOT", b"{dshared:%s}:meta" % name.encode())
            port = next(p for lo, hi, p in ranges if lo <= slot <= hi)
            found.setdefault(port, name)
            if len(found) == len(cluster.ports):
                return [(found[p], p) for p in sorted(found)]
    finally:
        c.close()
    raise AssertionError("no name found for every master")


@pytest.fixture(scope="module")
def cluster():
    import _redis
    binary = _redis.redis_server_binary()
    if binary is None:
        if _redis.required():
            pytest.fail(_redis.SKIP_REASON)
        pytest.skip(_redis.SKIP_REASON)
    c = _redis.RedisCluster(binary)
    yield c
    c.close()


@pytest.mark.slow
@pytest.mark.parametrize("master", range(3))
def test_behaviour_on_a_cluster(cluster, shm_name, master):
    """The URL names the first node; a segment on another master is reached
    through MOVED."""
    from dshared.redis import RedisSegment
    name, port = _names_per_master(cluster, shm_name)[master]
    seg = RedisSegment(name, create=True, server=cluster.url)
    try:
        root = seg.col()
        B.test_scalars_round_trip(root)
        root.clear()
        B.test_dict_api(root)
        root.clear()
        B.test_nested_live_views(root)
        B.test_incr(root)
        B.test_list_api(root)
        B.test_random_operations_match_python(root, 200)
        with seg.lock():
            root["locked"] = 1
        try:                                  # the journal and its rollback stay in the segment's slot
            with seg.transaction():
                root["tx"] = {"x": [1, 2]}
                del root["locked"]
                raise KeyError("undo")
        except KeyError:
            pass
        assert "tx" not in root and root["locked"] == 1
        root["c"] = {"a": []}
        root["c"]["a"].append(root["c"])
        del root["c"]
        assert seg.collect() == 2
        report = seg.check()
        assert report.ok and report.garbage == 0, report.problems
        assert root["locked"] == 1 and seg.stats()["near_cache"]["enabled"]
        assert seg._cfg.port == port          # moved to the master that owns its slot
    finally:
        seg.unlink()
        seg.close()
