"""(g) populate from empty, per key; (j) bytes per entry."""
import pytest

import _dshbench as B


@pytest.mark.parametrize("name", B.ALL)
def test_g_populate(benchmark, bench_cfg, store_factory, name):
    n = bench_cfg.keys_for(name)
    order = B.shuffled(n)
    state = {"c": None}

    def fresh():
        old, state["c"] = state["c"], None
        if old is not None:
            old.close()
            store_factory.made.remove(old)
        c = store_factory.empty(name, "str", n)
        state["c"] = c
        keys = c.prep_keys([B.key(i) for i in order])
        values = c.prep_values([B.str_value(i) for i in order])
        return (c, keys, values), {}

    def populate(c, keys, values):
        c.set_batch(keys, values)       # one natural insert per key (lmdb: one txn per key)

    benchmark.group = "g_populate"
    benchmark.pedantic(populate, setup=fresh, rounds=bench_cfg.populate_rounds, iterations=1)
    c = state["c"]
    B.record(benchmark, n, n_keys=n, rounds=bench_cfg.populate_rounds, contender_note=c.note,
             workload="populate n keys (8-char key, 16-char str) into an empty store; per key")
    for i in order[:50]:
        assert c.get(c.prep_keys([B.key(i)])[0]) == c.prep_values([B.str_value(i)])[0]


# manager is left out: its dict lives in the server process, where it is a plain dict
# (the `dict` row is its figure).
@pytest.mark.parametrize("name", [n for n in B.ALL if n != "manager"])
def test_j_bytes_per_entry(benchmark, bench_cfg, store_factory, name):
    n = bench_cfg.keys_for(name)
    c = store_factory.empty(name, "str", n)
    before = c.footprint()
    items = c.prep_items(B.dataset_items("str", n))
    benchmark.group = "j_bytes_per_entry"
    # the timed part is a single bulk load; the figure that matters is in extra_info
    benchmark.pedantic(c.bulk_load, args=(items,), rounds=1, iterations=1)
    mem = c.bytes_per_entry(n, before)
    assert mem is not None and mem["bytes_per_entry"] > 0, mem
    B.record(benchmark, n, n_keys=n, contender_note=c.note,
             workload="bytes per entry, 8-char keys, 16-char str values", **mem)
