"""(m) memory the system backs, against memory in use; (n) bulk operations per
entry from 1k to 1M keys (10M when DSHARED_BENCH_10M=1), side by side with a
private dict and lmdb (raw bytes, one transaction).

Keys "k%07d", values 16-character str, as in (j). `backed` is the segment
file's allocated blocks (st_blocks * 512: what /dev/shm and the memory cgroup
charge), from stats()['backed']; lmdb's is its data file's allocated blocks.

Smoke mode (the default, --benchmark-disable) runs the small sizes only.
Environment: DSHARED_BENCH_MEM_KEYS (comma-separated sizes, default
"100000,1000000", smoke "1000,10000"), DSHARED_BENCH_BULK_KEYS (default
"1000,10000,100000,1000000", smoke "1000,10000"), DSHARED_BENCH_10M=1 adds
10,000,000 to both.
"""
import gc
import os
import shutil
import tempfile
import time

import pytest

import _dshbench as B
import dshared



def _sizes(var, real, smoke, config):
    raw = os.environ.get(var)
    if raw:
        sizes = [int(x) for x in raw.split(",") if x.strip()]
    else:
        disabled = config.getoption("benchmark_disable", False) and not config.getoption("benchmark_enable", False)
        sizes = smoke if disabled else real
    if os.environ.get("DSHARED_BENCH_10M") == "1" and 10_000_000 not in sizes:
        sizes = sizes + [10_000_000]
    return sizes


def pytest_generate_tests(metafunc):
    cfg = metafunc.config
    if "mem_n" in metafunc.fixturenames:
        metafunc.parametrize("mem_n", _sizes("DSHARED_BENCH_MEM_KEYS", [100_000, 1_000_000], [1000, 10_000], cfg))
    if "bulk_n" in metafunc.fixturenames:
        metafunc.parametrize("bulk_n", _sizes("DSHARED_BENCH_BULK_KEYS", [1000, 10_000, 100_000, 1_000_000],
                                              [1000, 10_000], cfg))


def _data(n):
    return ["k%07d" % i for i in range(n)], ["v%015d" % i for i in range(n)]


def _segment(n):
    name = B.unique_name("mem-")
    size = max(64 << 20, n * 400)
    return name, dshared.Segment(name, size, create=True)


def _file_backed(path):
    return os.stat(path).st_blocks * 512


def _lmdb_file(n, keys, vals, pickled):
    """lmdb's data file, allocated bytes per entry, after one transaction."""
    import pickle

    import lmdb
    path = tempfile.mkdtemp(prefix=B.unique_name("lmdbm-"), dir=B.SHM_DIR)
    try:
        env = lmdb.open(path, map_size=1 << 40, sync=False, metasync=False, readahead=False)
        with env.begin(write=True) as txn:
            for k, v in zip(keys, vals):
                txn.put(k.encode(), pickle.dumps(v, 5) if pickled else v.encode())
        env.close()
        return _file_backed(os.path.join(path, "data.mdb")) / n
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- (m) -------------------------------------------------------------------------------

SCENARIOS = ["one_by_one", "update", "chunked_update", "grow_delete_90"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_m_backed_memory(benchmark, mem_n, scenario):
    n = mem_n
    keys, vals = _data(n)
    name, seg = _segment(n)
    other = dshared.Segment(name)           # two handles open, as an application has
    fig = {}
    try:
        d = seg.col()

        def load():
            if scenario == "one_by_one":
                for k, v in zip(keys, vals):
                    d[k] = v
            elif scenario == "update":
                d.update(zip(keys, vals))
            elif scenario == "chunked_update":
                step = max(n // 10, 1)
                for i in range(0, n, step):
                    d.update(zip(keys[i:i + step], vals[i:i + step]))
            else:
                # values of ~100 bytes (a block each), grown to n, then 90% deleted
                # (oldest first) while a reader process walks the dict
                for i, k in enumerate(keys):
                    d[k] = vals[i] * 6
                st = seg.stats()
                fig["peak_used"], fig["peak_backed"] = st["used"], st["backed"]
                for k in keys[:n * 9 // 10]:
                    del d[k]

        reader = None
        if scenario == "grow_delete_90":
            import subprocess
            import sys
            code = ("import dshared, sys\nseg = dshared.Segment(sys.argv[1])\nd = seg.col()\n"
                    "while 'stop' not in seg.col('ctl'):\n    try:\n        for k, v in d.items(): pass\n"
                    "    except RuntimeError:\n        pass\n")
            seg.col("ctl")
            env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(dshared.__file__))))
            reader = subprocess.Popen([sys.executable, "-c", code, name], cwd="/", env=env)
        try:
            benchmark.group = "m_backed_memory"
            benchmark.pedantic(load, rounds=1, iterations=1)
        finally:
            if reader is not None:
                seg.col("ctl")["stop"] = 1
                assert reader.wait(60) == 0
        st = seg.stats()
        live = len(d)
        fig.update(used_B_per_entry=st["used"] / n, backed_B_per_entry=st["backed"] / n,
                   backed_vs_used=st["backed"] / st["used"], reserved_B_per_entry=st["reserved"] / n,
                   live_entries=live)
        if scenario in ("one_by_one", "update"):
            fig["lmdb_raw_file_B_per_entry"] = _lmdb_file(n, keys, vals, False)
            fig["lmdb_pickle_file_B_per_entry"] = _lmdb_file(n, keys, vals, True)
        B.record(benchmark, n, n_keys=n, scenario=scenario, contender_note=B.DsharedC.note,
                 workload="memory backed vs used after %s, %d keys" % (scenario, n), **fig)
        assert seg.check().ok
    finally:
        other.close()
        seg.close()
        dshared.unlink(name)


# -- (n) -------------------------------------------------------------------------------

OPS = ["to_python", "copy", "items_loop", "update_chunked", "populate"]


class _Lmdb:
    def __init__(self, keys, vals):
        import lmdb
        self.path = tempfile.mkdtemp(prefix=B.unique_name("lmdbn-"), dir=B.SHM_DIR)
        self.env = lmdb.open(self.path, map_size=1 << 40, sync=False, metasync=False, readahead=False)
        self.bkeys = [k.encode() for k in keys]
        self.bvals = [v.encode() for v in vals]

    def load(self):
        with self.env.begin(write=True) as txn:
            for k, v in zip(self.bkeys, self.bvals):
                txn.put(k, v)

    def close(self):
        self.env.close()
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.mark.parametrize("name", ["dict", "dshared", "lmdb_raw"])
@pytest.mark.parametrize("op", OPS)
def test_n_bulk(benchmark, bulk_n, op, name):
    contender = name
    n = bulk_n
    keys, vals = _data(n)
    step = max(n // 10, 1)
    seg = name = lm = None
    if contender == "dshared":
        name, seg = _segment(n)
        m = seg.col()
    elif contender == "dict":
        m = {}
    else:
        lm = _Lmdb(keys, vals)
    try:
        if op not in ("update_chunked", "populate"):
            if lm is not None:
                lm.load()
            else:
                m.update(zip(keys, vals))

        def run():
            if lm is not None:
                env = lm.env
                if op in ("to_python", "copy"):
                    with env.begin() as txn:
                        return dict(txn.cursor())
                if op == "items_loop":
                    with env.begin() as txn:
                        for k, v in txn.cursor():
                            pass
                    return None
                if op == "update_chunked":
                    for i in range(0, n, step):
                        with env.begin(write=True) as txn:
                            txn.cursor().putmulti(zip(lm.bkeys[i:i + step], lm.bvals[i:i + step]))
                    return None
                with env.begin(write=True) as txn:
                    put = txn.put
                    for k, v in zip(lm.bkeys, lm.bvals):
                        put(k, v)
                return None
            if op == "to_python":
                return dshared.to_python(m) if contender == "dshared" else {k: v for k, v in m.items()}
            if op == "copy":
                return m.copy()
            if op == "items_loop":
                for k, v in m.items():
                    pass
                return None
            if op == "update_chunked":
                for i in range(0, n, step):
                    m.update(zip(keys[i:i + step], vals[i:i + step]))
                return None
            for k, v in zip(keys, vals):
                m[k] = v
            return None

        gc.collect()
        benchmark.group = "n_bulk"
        benchmark.pedantic(run, rounds=1, iterations=1)
        B.record(benchmark, n, n_keys=n, op=op,
                 workload="%s of %d keys (8-char keys, 16-char str values), per entry" % (op, n))
    finally:
        if seg is not None:
            seg.close()
            dshared.unlink(name)
        if lm is not None:
            lm.close()


# -- (n) at every size, one process per size: bulk_scaling.py ----------------------------

def test_bulk_scaling_smoke(tmp_path):
    """bench/bulk_scaling.py (issue 14's table, run by hand) keeps working:
    each contender's child at 1,000 keys, and the report of its figures."""
    import json
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bulk_scaling.py")
    out = tmp_path / "bulk.json"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(dshared.__file__))))
    p = subprocess.run([sys.executable, script, "--sizes", "1000", "--out", str(out)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    figs = {r["contender"]: r["fig"] for r in data["rows"]}
    assert set(figs) == {"dict", "dshared", "lmdb_raw"}
    for op in ("populate", "update_one", "update_chunked", "to_python", "copy", "items_loop", "dict_of",
               "list_extend", "list_clear"):
        assert figs["dshared"][op]["cpu_ns"] > 0, op
    assert figs["dshared"]["mem"]["one_by_one"]["backed"] >= figs["dshared"]["mem"]["one_by_one"]["used"] > 0
    assert "| inserts one by one, per key | dshared |" in p.stdout
