"""Bulk operations per entry from 1k to 10M keys, side by side with a private
dict and lmdb (raw bytes), and memory per entry (used / backed), one fresh
interpreter per size and contender (issue 14's table).

    python bench/bulk_scaling.py                       # 1k, 10k, 100k, 1M
    DSHARED_BENCH_10M=1 nice python bench/bulk_scaling.py  # adds 10M (minutes, ~8 GiB)
    python bench/bulk_scaling.py --sizes 1000,10000 --out /tmp/x.json
    python bench/bulk_scaling.py --report bench/bulk_scaling.json   # table only
    python bench/bulk_scaling.py --runs 3              # each figure the median of 3 runs

Keys "k%07d" (8 chars), values 16-character str. Each figure is CPU time
(time.process_time: the machine is shared, so wall time would measure the
neighbours) divided by the number of entries; wall time is kept beside it in
the JSON. `backed` is the segment file's allocated blocks (stats()['backed']),
lmdb's the data file's.
"""
import argparse
import gc
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CONTENDERS = ["dict", "dshared", "lmdb_raw"]

# (op, what it is) in table order
OPS = [
    ("populate", "inserts one by one, per key"),
    ("update_one", "one `update()` of all pairs"),
    ("update_chunked", "ten `update()` calls"),
    ("to_python", "`to_python()` (dict: comprehension; lmdb: `dict(cursor)`)"),
    ("copy", "`copy()`"),
    ("items_loop", "`for k, v in d.items()`"),
    ("values_loop", "`for v in d.values()`"),
    ("dict_of", "`dict(d)`"),
    ("list_of", "`list(d)` (keys)"),
    ("clear", "`clear()`"),
    ("list_extend", "list: ten `extend()` calls"),
    ("list_list", "list: `list(l)`"),
    ("list_to_python", "list: `to_python()` (list: `l.copy()`)"),
    ("list_clear", "list: `clear()`"),
]


def _name(tag):
    # not the benchmark suite's "dshb-" prefix: a suite run beside this one
    # removes the "dshb-" objects it finds left over
    import uuid
    return "dsbulk-%s%d-%s" % (tag, os.getpid(), uuid.uuid4().hex[:10])


def _data(n):
    data = ["k%07d" % i for i in range(n)], ["v%015d" % i for i in range(n)]
    # a program's data is old by the time it writes it: collected once here,
    # the two lists leave the young generation, and no first collection
    # traverses them inside whichever timed operation happens to trigger it
    # (it fell inside the ten update()s: ~36 ns a key at 1M)
    gc.collect()
    return data


def _timed(fig, op, n, fn):
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    r = fn()
    c1, w1 = time.process_time(), time.perf_counter()
    fig[op] = {"cpu_ns": (c1 - c0) * 1e9 / n, "wall_ns": (w1 - w0) * 1e9 / n}
    return r


def _chunks(n):
    step = max(n // 10, 1)
    return [(i, i + step) for i in range(0, n, step)]


def child_dict(n):
    keys, vals = _data(n)
    fig = {}
    d = {}

    def populate():
        for k, v in zip(keys, vals):
            d[k] = v
    _timed(fig, "populate", n, populate)
    u = {}
    _timed(fig, "update_one", n, lambda: u.update(zip(keys, vals)))
    del u
    u = {}

    def chunked():
        for a, b in _chunks(n):
            u.update(zip(keys[a:b], vals[a:b]))
    _timed(fig, "update_chunked", n, chunked)
    del u
    r = _timed(fig, "to_python", n, lambda: {k: v for k, v in d.items()})
    del r
    r = _timed(fig, "copy", n, d.copy)
    del r

    def items():
        for k, v in d.items():
            pass
    _timed(fig, "items_loop", n, items)

    def values():
        for v in d.values():
            pass
    _timed(fig, "values_loop", n, values)
    r = _timed(fig, "dict_of", n, lambda: dict(d))
    del r
    r = _timed(fig, "list_of", n, lambda: list(d))
    del r
    _timed(fig, "clear", n, d.clear)
    lst = []

    def extend():
        for a, b in _chunks(n):
            lst.extend(vals[a:b])
    _timed(fig, "list_extend", n, extend)
    r = _timed(fig, "list_list", n, lambda: list(lst))
    del r
    r = _timed(fig, "list_to_python", n, lst.copy)
    del r
    _timed(fig, "list_clear", n, lst.clear)
    return fig


def child_dshared(n):
    import dshared
    keys, vals = _data(n)
    fig = {}
    mem = {}
    names = []

    def segment():
        name = _name("")
        names.append(name)
        seg = dshared.Segment(name, max(64 << 20, n * 400), create=True)
        return seg, dshared.Segment(name)          # two handles open, as an application has

    def done(seg, other, tag):
        st = seg.stats()
        mem[tag] = {"used": st["used"] / n, "backed": st["backed"] / n}
        assert seg.check().ok
        other.close()
        seg.close()
        dshared.unlink(names.pop())

    try:
        seg, other = segment()
        d = seg.col()

        def populate():
            for k, v in zip(keys, vals):
                d[k] = v
        _timed(fig, "populate", n, populate)
        st = seg.stats()
        mem["one_by_one"] = {"used": st["used"] / n, "backed": st["backed"] / n}
        r = _timed(fig, "to_python", n, lambda: dshared.to_python(d))
        del r
        r = _timed(fig, "copy", n, d.copy)
        del r

        def items():
            for k, v in d.items():
                pass
        _timed(fig, "items_loop", n, items)

        def values():
            for v in d.values():
                pass
        _timed(fig, "values_loop", n, values)
        r = _timed(fig, "dict_of", n, lambda: dict(d))
        del r
        r = _timed(fig, "list_of", n, lambda: list(d))
        del r
        _timed(fig, "clear", n, d.clear)
        done(seg, other, "after_clear")

        seg, other = segment()
        d = seg.col()
        _timed(fig, "update_one", n, lambda: d.update(zip(keys, vals)))
        done(seg, other, "update_one")

        seg, other = segment()
        d = seg.col()

        def chunked():
            for a, b in _chunks(n):
                d.update(zip(keys[a:b], vals[a:b]))
        _timed(fig, "update_chunked", n, chunked)
        done(seg, other, "update_chunked")

        seg, other = segment()
        lst = seg.col()
        lst["l"] = []
        lst = lst["l"]

        def extend():
            for a, b in _chunks(n):
                lst.extend(vals[a:b])
        _timed(fig, "list_extend", n, extend)
        r = _timed(fig, "list_list", n, lambda: list(lst))
        del r
        r = _timed(fig, "list_to_python", n, lambda: dshared.to_python(lst))
        del r
        _timed(fig, "list_clear", n, lst.clear)
        done(seg, other, "list")
    finally:
        for name in names:
            try:
                dshared.unlink(name)
            except Exception:
                pass
    fig["mem"] = mem
    return fig


def child_lmdb(n):
    import shutil
    import tempfile

    import lmdb
    keys, vals = _data(n)
    bk = [k.encode() for k in keys]
    bv = [v.encode() for v in vals]
    fig = {}
    mem = {}
    paths = []

    def env():
        p = tempfile.mkdtemp(prefix=_name("lmdb-"), dir="/dev/shm")
        paths.append(p)
        return lmdb.open(p, map_size=1 << 40, sync=False, metasync=False, readahead=False), p

    try:
        e, p = env()

        def populate():
            with e.begin(write=True) as txn:
                put = txn.put
                for k, v in zip(bk, bv):
                    put(k, v)
        _timed(fig, "populate", n, populate)
        mem["one_by_one"] = {"backed": os.stat(os.path.join(p, "data.mdb")).st_blocks * 512 / n}

        def to_python():
            with e.begin() as txn:
                return dict(txn.cursor())
        r = _timed(fig, "to_python", n, to_python)
        del r

        def items():
            with e.begin() as txn:
                for k, v in txn.cursor():
                    pass
        _timed(fig, "items_loop", n, items)

        def values():
            with e.begin() as txn:
                for v in txn.cursor().iternext(keys=False, values=True):
                    pass
        _timed(fig, "values_loop", n, values)

        def list_of():
            with e.begin() as txn:
                return list(txn.cursor().iternext(keys=True, values=False))
        r = _timed(fig, "list_of", n, list_of)
        del r

        def clear():
            with e.begin(write=True) as txn:
                txn.drop(e.open_db(txn=txn), delete=False)
        _timed(fig, "clear", n, clear)
        e.close()
        e, p = env()

        def update_one():
            with e.begin(write=True) as txn:
                txn.cursor().putmulti(zip(bk, bv))
        _timed(fig, "update_one", n, update_one)
        mem["update_one"] = {"backed": os.stat(os.path.join(p, "data.mdb")).st_blocks * 512 / n}
        e.close()
        e, p = env()

        def chunked():
            for a, b in _chunks(n):
                with e.begin(write=True) as txn:
                    txn.cursor().putmulti(zip(bk[a:b], bv[a:b]))
        _timed(fig, "update_chunked", n, chunked)
        e.close()
    finally:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
    fig["mem"] = mem
    return fig


def run_child(contender, n):
    fn = {"dict": child_dict, "dshared": child_dshared, "lmdb_raw": child_lmdb}[contender]
    return fn(n)


def fmt_ns(x):
    return "%.0f" % x if x >= 10 else "%.1f" % x


def report(rows, sizes):
    """Markdown tables: per op, ns per entry for each contender at each size,
    and the ratio of the biggest size to 10k."""
    by = {(r["contender"], r["n"]): r["fig"] for r in rows}
    out = []
    head = "| operation | contender | " + " | ".join("{:,}".format(n) for n in sizes)
    ref = 10_000 if 10_000 in sizes else sizes[0]
    big = sizes[-1]
    head += " | %s / %s |" % (_short(big), _short(ref))
    out.append(head)
    out.append("|" + " --- |" * (len(sizes) + 3))
    for op, what in OPS:
        for c in CONTENDERS:
            cells = []
            for n in sizes:
                f = by.get((c, n), {}).get(op)
                cells.append(fmt_ns(f["cpu_ns"]) if f else "")
            if not any(cells):
                continue
            a = by.get((c, ref), {}).get(op)
            b = by.get((c, big), {}).get(op)
            ratio = "%.1fx" % (b["cpu_ns"] / a["cpu_ns"]) if a and b and a["cpu_ns"] > 0 else ""
            out.append("| %s | %s | %s | %s |" % (what, c, " | ".join(cells), ratio))
    out.append("")
    out.append("Bytes per entry (dshared `used` / `backed`, two handles open; lmdb raw: data file):")
    out.append("")
    out.append("| load | " + " | ".join("{:,}".format(n) for n in sizes) + " |")
    out.append("|" + " --- |" * (len(sizes) + 1))
    for tag, what in [("one_by_one", "dshared, one by one: used / backed"),
                      ("update_one", "dshared, one `update()`: used / backed"),
                      ("update_chunked", "dshared, ten `update()` calls: used / backed")]:
        cells = []
        for n in sizes:
            m = by.get(("dshared", n), {}).get("mem", {}).get(tag)
            cells.append("%.1f / %.1f" % (m["used"], m["backed"]) if m else "")
        out.append("| %s | %s |" % (what, " | ".join(cells)))
    for tag, what in [("one_by_one", "lmdb raw, one transaction of puts"),
                      ("update_one", "lmdb raw, one putmulti")]:
        cells = []
        for n in sizes:
            m = by.get(("lmdb_raw", n), {}).get("mem", {}).get(tag)
            cells.append("%.1f" % m["backed"] if m else "")
        out.append("| %s | %s |" % (what, " | ".join(cells)))
    return "\n".join(out) + "\n"


def _short(n):
    return "%dM" % (n // 1_000_000) if n >= 1_000_000 else "%dk" % (n // 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--out", default=os.path.join(HERE, "bulk_scaling.json"))
    ap.add_argument("--report", help="print the table of this JSON file and exit")
    ap.add_argument("--runs", type=int, default=1,
                    help="run every (size, contender) this many times, interleaved; each "
                         "timing is the median (memory figures: the first run's)")
    ap.add_argument("--child", nargs=2, metavar=("CONTENDER", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_child(a.child[0], int(a.child[1]))))
        return
    if a.report:
        with open(a.report) as f:
            data = json.load(f)
        print(report(data["rows"], data["sizes"]), end="")
        return
    sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    if os.environ.get("DSHARED_BENCH_10M") == "1" and 10_000_000 not in sizes:
        sizes.append(10_000_000)
    runs = []
    # the children import the dshared this interpreter imports (installed, or
    # the checkout through the caller's PYTHONPATH): never the checkout as such,
    # which has no built extensions when dshared is installed
    env = dict(os.environ)
    for r in range(max(1, a.runs)):
        runs.append([])
        for n in sizes:
            for c in a.contenders.split(","):
                t = time.time()
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", c, str(n)],
                                   env=env, stdout=subprocess.PIPE, check=True, text=True)
                runs[-1].append({"contender": c, "n": n, "fig": json.loads(p.stdout.strip().splitlines()[-1])})
                print("run %d, %s %d: %.1f s" % (r + 1, c, n, time.time() - t), file=sys.stderr, flush=True)
                rows = _medians(runs)
                with open(a.out, "w") as f:
                    json.dump({"sizes": sizes, "runs": len(runs), "rows": rows}, f, indent=1)
    print(report(rows, sizes), end="")


def _medians(runs):
    """The rows of the first run, each timing the median over the runs that have it."""
    import statistics
    rows = json.loads(json.dumps(runs[0]))
    for i, row in enumerate(rows):
        for op, v in row["fig"].items():
            if op != "mem":
                for k in v:
                    v[k] = statistics.median(run[i]["fig"][op][k] for run in runs if i < len(run))
    return rows


if __name__ == "__main__":
    main()
