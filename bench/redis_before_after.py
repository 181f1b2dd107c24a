"""The Redis backend now and at an earlier git revision, side by side in one
run: alternating rounds of test_bench_redis.measure() on one loopback
redis-server, the earlier backend copied out of git as the package
dshared_redis_before (its reader child too). Ratios are taken within each
round (the host's load moves whole stretches of a run), then the median.

    python bench/redis_before_after.py REV [ROUNDS [SCALE]]

writes bench/results_redis_before_after.md. The revision's dshared/redis
must use the same Lua script layout as this benchmark expects (any revision
since the Redis backend landed)."""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

RATIOS = [
    ("miss / raw hiredis HGET", "miss d[k] (one round trip)", "raw hiredis HGET"),
    ("invalidation p50 / raw round trip (tight loop)", "invalidation p50", "raw hiredis HGET"),
    ("invalidation p99 / raw round trip (tight loop)", "invalidation p99", "raw hiredis HGET"),
    ("invalidation p50 / lone raw round trip p50", "invalidation p50",
     "raw hiredis HGET, lone (as a trial's write starts), p50"),
    ("invalidation p99 / lone raw round trip p99", "invalidation p99", "raw hiredis HGET, lone, p99"),
    ("invalidation p50 / invalidation after a raw HSET p50", "invalidation p50",
     "invalidation after a raw hiredis HSET (floor of the writer's part), p50"),
    ("invalidation after a raw HSET p50 / lone raw round trip p50",
     "invalidation after a raw hiredis HSET (floor of the writer's part), p50",
     "raw hiredis HGET, lone (as a trial's write starts), p50"),
    ("incr / raw round trip (same rounds)", "incr", "raw hiredis HGET, second run"),
    ("lock() step / raw round trip (same rounds)", "lock() read-modify-write", "raw hiredis HGET, second run"),
]


def copy_backend(rev, into):
    """dshared/redis at git revision rev as the package dshared_redis_before under into."""
    pkg = os.path.join(into, "dshared_redis_before")
    os.makedirs(pkg)
    for f in ("__init__.py", "_client.py", "_codec.py", "_script.lua"):
        text = subprocess.run(["git", "-C", ROOT, "show", "%s:dshared/redis/%s" % (rev, f)],
                              check=True, capture_output=True).stdout
        if f.endswith(".py"):
            text = text.replace(b"dshared.redis.", b"dshared_redis_before.")
        with open(os.path.join(pkg, f), "wb") as out:
            out.write(text)


def main(rev, rounds=6, scale=0.25):
    import _redis
    import test_bench_redis as b
    tmp = tempfile.mkdtemp(prefix="dsh-before-")
    try:
        copy_backend(rev, tmp)
        sys.path.insert(0, tmp)
        os.environ["PYTHONPATH"] = tmp + os.pathsep + os.environ.get("PYTHONPATH", "")   # the reader child
        srv = _redis.RedisServer(_redis.redis_server_binary())
        res = {"before": [], "after": []}
        try:
            for r in range(rounds):
                order = [("before", "dshared_redis_before"), ("after", "dshared.redis")]
                for label, impl in (order if r % 2 == 0 else order[::-1]):
                    res[label].append(b.measure(srv.url, scale, impl))
                    print("round %d %s done" % (r, label), flush=True)
        finally:
            srv.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(label, k):
        xs = [o[k] for o in res[label] if isinstance(o.get(k), float)]
        return statistics.median(xs) if xs else None

    def ratio(label, num, den):
        xs = [o[num] / o[den] for o in res[label] if isinstance(o.get(num), float)]
        return statistics.median(xs) if xs else None

    lines = ["# Redis backend: %s (before) and the working tree (after), %d alternating rounds, scale %s"
             % (rev, rounds, scale), "", "| figure (median of the rounds) | before | after |", "| --- | --- | --- |"]
    for k, v in res["after"][0].items():
        if isinstance(v, float):
            a, z = med("before", k), med("after", k)
            lines.append("| %s | %s | %.2f us |" % (k, "%.2f us" % (a * 1e6) if a is not None else "n/a", z * 1e6))
    lines += ["", "| ratio (within each round, median) | before | after |", "| --- | --- | --- |"]
    for name, num, den in RATIOS:
        a, z = ratio("before", num, den), ratio("after", num, den)
        lines.append("| %s | %s | %s |" % (name, "%.2fx" % a if a else "n/a", "%.2fx" % z if z else "n/a"))
    lines += ["", "stale reads after the invalidation: before %s; after %s" % tuple(
        ", ".join(o["stale reads after invalidation"] for o in res[label]) for label in ("before", "after"))]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(HERE, "results_redis_before_after.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    main(a[0], int(a[1]) if len(a) > 1 else 6, float(a[2]) if len(a) > 2 else 0.25)
