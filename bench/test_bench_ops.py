"""Single-process workloads (a)-(f): one batch of operations per round, keys in a
shuffled order fixed by a seed; per-op figures in extra_info."""
import itertools
import time

import pytest

import _dshbench as B


def _keys(bench_cfg, name):
    n = bench_cfg.keys_for(name)
    batch = min(bench_cfg.batch_for(name), n)
    return n, batch, B.shuffled(n)[: n - n % batch]


def _cycle(seq):
    return itertools.cycle(seq).__next__


def _write_rounds(bench_cfg, fn, target=1.0, cap=200):
    """Rounds for a write benchmark: about ``target`` seconds, at most ``cap`` batches
    (bounded so that stores that defer reclamation do not grow without limit)."""
    if bench_cfg.smoke:
        return 1
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return max(5, min(cap, int(target / max(dt, 1e-9))))


def _info(c, n, what):
    return dict(n_keys=n, contender_note=c.note, workload=what)


@pytest.mark.parametrize("name", B.ALL)
def test_a_get_str(benchmark, bench_cfg, store_factory, name):
    n, batch, order = _keys(bench_cfg, name)
    c = store_factory(name, "str", n)
    keys = c.prep_keys([B.key(i) for i in order])
    nxt = _cycle(B.batches(keys, batch))
    get_batch = c.get_batch
    benchmark.group = "a_get_str16"
    benchmark(lambda: get_batch(nxt()))
    B.record(benchmark, batch, **_info(c, n, "get hit, 16-char str value"))
    for i in order[:50]:
        assert c.get(c.prep_keys([B.key(i)])[0]) == c.prep_values([B.str_value(i)])[0]


@pytest.mark.parametrize("name", B.ALL)
def test_b_get_int(benchmark, bench_cfg, store_factory, name):
    n, batch, order = _keys(bench_cfg, name)
    c = store_factory(name, "int", n)
    keys = c.prep_keys([B.key(i) for i in order])
    nxt = _cycle(B.batches(keys, batch))
    get_batch = c.get_batch
    benchmark.group = "b_get_int"
    benchmark(lambda: get_batch(nxt()))
    B.record(benchmark, batch, **_info(c, n, "get hit, int value"))
    for i in order[:50]:
        assert c.get(c.prep_keys([B.key(i)])[0]) == c.prep_values([i])[0]


@pytest.mark.parametrize("name", B.ALL)
def test_c_miss_contains(benchmark, bench_cfg, store_factory, name):
    n, batch, order = _keys(bench_cfg, name)
    c = store_factory(name, "str", n)
    keys = c.prep_keys([B.miss_key(i) for i in order])
    nxt = _cycle(B.batches(keys, batch))
    contains_batch = c.contains_batch
    benchmark.group = "c_miss_contains"
    benchmark(lambda: contains_batch(nxt()))
    B.record(benchmark, batch, **_info(c, n, "miss: `k in m`"))
    for i in order[:20]:
        assert not c.contains(c.prep_keys([B.miss_key(i)])[0])
        assert c.contains(c.prep_keys([B.key(i)])[0])


@pytest.mark.parametrize("name", B.ALL)
def test_d_overwrite_str(benchmark, bench_cfg, store_factory, name):
    n, batch, order = _keys(bench_cfg, name)
    c = store_factory(name, "str", n)
    kb = B.batches(c.prep_keys([B.key(i) for i in order]), batch)
    vb = B.batches(c.prep_values([B.str_value(i, "w") for i in order]), batch)
    nxt = _cycle(list(zip(kb, vb)))
    set_batch = c.set_batch

    def run():
        k, v = nxt()
        set_batch(k, v)

    benchmark.group = "d_overwrite_str16"
    rounds = _write_rounds(bench_cfg, run)
    benchmark.pedantic(run, rounds=rounds, iterations=1)
    B.record(benchmark, batch, rounds=rounds, **_info(c, n, "overwrite an existing key with a 16-char str"))
    for i in order[:50]:
        assert c.get(c.prep_keys([B.key(i)])[0]) == c.prep_values([B.str_value(i, "w")])[0]


@pytest.mark.parametrize("name", B.ALL)
def test_e_set_kib(benchmark, bench_cfg, store_factory, name):
    n, batch, order = _keys(bench_cfg, name)
    c = store_factory(name, "kib", n)
    kb = B.batches(c.prep_keys([B.key(i) for i in order]), batch)
    vb = B.batches(c.prep_values([B.kib_value(i, "b") for i in order]), batch)
    nxt = _cycle(list(zip(kb, vb)))
    set_batch = c.set_batch

    def run():
        k, v = nxt()
        set_batch(k, v)

    benchmark.group = "e_set_1kib"
    rounds = _write_rounds(bench_cfg, run)
    benchmark.pedantic(run, rounds=rounds, iterations=1)
    B.record(benchmark, batch, rounds=rounds,
             **_info(c, n, "set a 1 KiB str over an existing 1 KiB str value"))
    for i in order[:20]:
        assert c.get(c.prep_keys([B.key(i)])[0]) == c.prep_values([B.kib_value(i, "b")])[0]


@pytest.mark.parametrize("name", B.ALL)
def test_f_nested_read(benchmark, bench_cfg, store_factory, name):
    # every key holds {'key': <16-char str>}; the read is m[k]['key'].  Contenders without
    # nested containers return an unpickled copy of the inner dict (manager, lmdb_pickle,
    # ultradict, smd, diskcache); lmdb_raw reads the composite key b"k.../key".
    n, batch, order = _keys(bench_cfg, name)
    c = store_factory(name, "nested", n)
    raw = [B.key(i) for i in order]
    keys = c.nested_keys(raw) if hasattr(c, "nested_keys") else c.prep_keys(raw)
    nxt = _cycle(B.batches(keys, batch))
    nested_batch = c.nested_batch
    benchmark.group = "f_nested_read"
    benchmark(lambda: nested_batch(nxt()))
    B.record(benchmark, batch, **_info(c, n, "nested read m[k]['key']"))
    if hasattr(c, "nested_keys"):
        assert c.get(keys[0]) == B.str_value(order[0]).encode()
    else:
        for i in order[:20]:
            assert c.get(c.prep_keys([B.key(i)])[0])["key"] == B.str_value(i)
