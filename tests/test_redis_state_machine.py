"""The state machine of tests/test_state_machine.py on the Redis backend.

The same rules and invariants (random operations through two handles
against a plain model, shapes compared one to one: aliases, shared
sub-structures and cycles; check(); stale views; collect() frees nothing
without a garbage cycle; a failed operation changes nothing; nothing left
after clearing and collecting), with what differs on Redis:

* the first handle reads through its near-cache, the second has none
  (?near_cache=0); after each operation the first handle waits until its
  invalidation connection has delivered everything the server sent so far
  (a marker key written after the operation comes back invalidated), so
  both handles must show the model at once;
* tuples hold plain values only (a documented difference): the values drawn
  put no container in a tuple;
* "used" is the container count and the free queue (a Redis segment has no
  byte count);
* freeing is queued: the containers inside a removed one are freed when the
  queue reaches it (about 256 fields per write script), so before a held
  view is asserted stale the queue is drained.
"""
import time

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import test_state_machine as SM
from dshared import SharedDict, SharedList

# values without containers inside tuples
_plain_tuples = st.recursive(SM.scalars, lambda c: st.lists(c, max_size=3).map(tuple), max_leaves=4)
_values = st.recursive(st.one_of(SM.scalars, _plain_tuples),
                       lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(SM.keys, c, max_size=4)),
                       max_leaves=8)
_top_values = st.one_of(_values, st.lists(_values, max_size=5))

_URL = [None]


class RedisStateMachine(SM.SharedStateMachine):
    VALUES = _top_values

    def __init__(self):
        from dshared.redis import RedisSegment
        RuleBasedStateMachine.__init__(self)
        self.name = "%s%d-%s" % (SM.PREFIX, next(SM._names), SM.uuid.uuid4().hex[:8])
        url = _URL[0]
        self.segs = [RedisSegment(self.name, create=True, server=url)]
        try:
            self.segs.append(self._second())
            self.used0 = self._used()
            self.roots = [seg.col() for seg in self.segs]
        except BaseException:
            for seg in self.segs:
                seg.close()
            self._unlink()
            raise
        self.model = {}
        self.known = {}
        self.held = []
        self.steps = 0
        self.full_errors = 0
        self._cache = None
        self._fresh = []

    def _second(self):
        from dshared.redis import RedisSegment
        return RedisSegment(self.name, create=False, server=_URL[0] + "?near_cache=0")

    def _unlink(self):
        from dshared.redis import unlink
        unlink(self.name, server=_URL[0])

    def _used(self):
        st_ = self.segs[0].stats()
        return (st_["containers"], st_["pending_free"])

    def _sync(self):
        """Wait until the first handle's near-cache has applied every
        invalidation the server sent before now."""
        seg = self.segs[0]
        nc = seg._nc
        if nc is None or not nc.enabled:
            return
        key = seg._prefix + b"sync"
        nc.d[key] = {}
        seg._client.call(b"SET", key, b"1")
        deadline = time.monotonic() + 10
        while key in nc.d and nc.enabled:
            if time.monotonic() > deadline:
                raise AssertionError("no invalidation came back in 10 s")
            time.sleep(0.0002)

    def _mv(self, data, h, aliases):
        """As the shared-memory machine's, without containers in tuples."""
        how = data.draw(st.sampled_from(["plain", "plain", "plain", "shaped", "alias", "embed"]),
                        label="value kind")
        if how == "alias":
            return self._alias_view(data, h, aliases)
        mv = data.draw(self.VALUES, label="value")
        self._fresh.append(mv)
        if how == "plain":
            return mv
        if type(mv) is not list and type(mv) is not dict:
            mv = [mv]
            self._fresh.append(mv)
        conts = [o for _, o in SM._model_containers(mv)]
        for _ in range(data.draw(st.integers(1, 3), label="links")):
            a = conts[data.draw(st.integers(0, len(conts) - 1), label="link from")]
            if how == "embed":
                b = self._alias_view(data, h, aliases)
            else:
                b = conts[data.draw(st.integers(0, len(conts) - 1), label="link to")]
            if type(a) is list:
                a.insert(data.draw(st.integers(0, len(a)), label="at"), b)
            else:
                a[data.draw(SM.keys, label="link key")] = b
        return mv

    def _do(self, shared_op, model_op, result=None):
        def op():
            try:
                return shared_op()
            finally:
                self._sync()
        return super()._do(op, model_op, result)

    @invariant()
    def same_through_both_handles(self):
        self._sync()
        super().same_through_both_handles()

    def _assert_stale(self, view):
        if self.segs[0].stats()["pending_free"]:
            self.segs[0].drain()
            self._sync()
        super()._assert_stale(view)

    @rule()
    def reattach(self):
        self.held = [x for x in self.held if x[0] != 1]
        self.roots.pop()
        self.segs.pop().close()
        self.segs.append(self._second())
        self.roots.append(self.segs[1].col())

    def teardown(self):
        import sys
        failing = sys.exc_info()[0] is not None
        try:
            if not failing:
                self._sync()
                self.steps = 0
                self._check_heap()
                self.held = []
                self.roots[1].clear()
                self.model.clear()
                self.segs[0].collect()
                report = self.segs[0].check()
                assert report.ok, report.problems
                assert self._used() == self.used0, "leak: %r, %r after creation" % (self._used(), self.used0)
        finally:
            self.held = []
            self.roots = []
            for seg in self.segs:
                seg.close()
            self._unlink()


@pytest.fixture
def redis_views(monkeypatch, redis_url):
    """The machine's comparisons accept the Redis views where they expect
    SharedDict / SharedList."""
    from dshared.redis import RedisDict, RedisList
    monkeypatch.setattr(SM, "SharedDict", (SharedDict, RedisDict))
    monkeypatch.setattr(SM, "SharedList", (SharedList, RedisList))
    _URL[0] = redis_url
    yield
    _URL[0] = None


_FAST = SM.settings(SM.SETTINGS, max_examples=3)      # the default run; 600 random ones under -m slow


@pytest.mark.timeout(600)
def test_redis_state_machine(redis_views):
    run_state_machine_as_test(RedisStateMachine, settings=_FAST)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_redis_state_machine_long(redis_views):
    run_state_machine_as_test(RedisStateMachine, settings=SM.SLOW_SETTINGS)
