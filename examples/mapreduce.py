"""Recipe: a word count as a map-reduce over a multiprocessing.Pool, reduced
into one shared dict.

Each map task counts the words of its chunk in a private Counter (fast, no
sharing), then merges its counts into the shared dict under `lock()`: the
whole merge is one atomic step, so no count is lost and no reader ever sees
half of a chunk merged. The main process reads the result directly; nothing
is sent back through the pool but a number.

    python examples/mapreduce.py        # prints the top words and "matches a serial count: True"

The segment's name comes from DSHARED_EXAMPLE_NAME (default "mapreduce");
the main process creates it and removes it at the end.
"""
import multiprocessing as mp
import os
import random
from collections import Counter

import dshared

NAME = os.environ.get("DSHARED_EXAMPLE_NAME", "mapreduce")
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def make_text(n_lines, seed=7):
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))) for _ in range(n_lines)]


def init_worker(name):
    dshared.attach(name)


def count_chunk(lines):
    local = Counter(w for line in lines for w in line.split())      # map, privately
    counts = dshared.col("counts")
    with dshared.lock():                                             # reduce, as one step
        for word, n in local.items():
            counts[word] = counts.get(word, 0) + n
    return len(lines)


def main():
    lines = make_text(2000)
    chunks = [lines[i:i + 100] for i in range(0, len(lines), 100)]
    seg = dshared.Segment(NAME, 2**22, create=True)
    try:
        with mp.get_context("spawn").Pool(2, initializer=init_worker, initargs=(NAME,)) as pool:
            done = sum(pool.map(count_chunk, chunks))
        counts = seg.col("counts")
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        print("lines %d, words %d" % (done, sum(counts.values())))
        print("top 3:", ", ".join("%s=%d" % kv for kv in top))
        serial = Counter(w for line in lines for w in line.split())
        print("matches a serial count:", dict(counts) == dict(serial))
    finally:
        seg.unlink()


if __name__ == "__main__":
    main()
