"""Recipe: a ProcessPoolExecutor whose workers write their results straight
into shared memory and count their progress with an atomic incr, while the
main process watches the progress grow.

Each worker attaches to the segment once, in the pool's initializer (the
pool uses spawn: nothing is inherited), and the tasks return nothing: the
results never travel back through the pool's pipe.

    python examples/pool_progress.py            # prints "done 40/40, sum 20540"

The segment's name comes from DSHARED_EXAMPLE_NAME (default "pool-progress");
the main process creates it and removes it at the end.
"""
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, wait

import dshared

NAME = os.environ.get("DSHARED_EXAMPLE_NAME", "pool-progress")
TASKS = 40


def attach(name):
    dshared.attach(name)                 # the worker's default segment


def task(i):
    shm = dshared.col()
    time.sleep(0.005)                    # the work
    shm["results"][i] = i * i            # the result, where everyone can read it
    shm.incr("progress")                 # exact, however many workers


def main():
    seg = dshared.Segment(NAME, 2**22, create=True)
    try:
        shm = seg.col()
        shm["results"] = {}
        shm["progress"] = 0
        with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn"),
                                 initializer=attach, initargs=(NAME,)) as pool:
            futures = [pool.submit(task, i) for i in range(TASKS)]
            seen = -1
            while True:
                done, _ = wait(futures, timeout=0.05)
                if shm["progress"] != seen:      # read without a lock, at any time
                    seen = shm["progress"]
                    print("progress %d/%d" % (seen, TASKS), flush=True)
                if len(done) == TASKS:
                    break
            for f in futures:
                f.result()                       # a task's exception surfaces here
        results = shm["results"]
        assert sorted(results) == list(range(TASKS))
        print("done %d/%d, sum %d" % (shm["progress"], TASKS, sum(results.values())))
    finally:
        seg.unlink()


if __name__ == "__main__":
    main()
