"""Recipe: a job queue between unrelated processes.

A producer and consumers are separate programs (`python job_queue.py
produce`, `python job_queue.py consume ID`), started independently: they
find each other only through the segment's name. The queue is a SharedList
that consumers take from under `lock()` (so "the queue is empty and the
producer is done" is one consistent observation); the results go into a
SharedDict, each with the consumer that computed it.

Nobody polls: an idle consumer sleeps in `dshared.wait_any()` until the queue
or the producer's "done" flag changes, and the starter waits for the count of
results with `wait()`. The version is read before looking, so a change made
between the look and the wait still wakes it at once.

    python examples/job_queue.py       # starts the producer and 2 consumers as separate
                                       # `python` processes; prints "60 jobs, 60 results, all correct: True"

The segment's name comes from DSHARED_EXAMPLE_NAME (default "job-queue");
run without arguments, this script creates the segment, starts the others,
and removes the segment at the end.
"""
import os
import subprocess
import sys
import time

import dshared

NAME = os.environ.get("DSHARED_EXAMPLE_NAME", "job-queue")
JOBS = 60


def produce():
    shm = dshared.attach(NAME).col()
    queue = shm["queue"]
    for batch in range(0, JOBS, 10):
        queue.extend(range(batch, batch + 10))      # one atomic step per batch
        time.sleep(0.01)                            # jobs keep arriving
    shm["producer_done"] = True


def consume(ident):
    shm = dshared.attach(NAME).col()
    queue, results = shm["queue"], shm["results"]
    watched = [queue, (shm, "producer_done")]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = dshared.versions(watched)            # before looking: no change is missed
        with dshared.lock():                        # look and take as one step
            if queue:
                job = queue.pop(0)
            elif shm["producer_done"]:
                return
            else:
                job = None
        if job is None:
            # nothing yet: sleep (no CPU) until the queue or the flag changes
            dshared.wait_any(watched, versions=seen, timeout=deadline - time.monotonic())
            continue
        results[job] = {"square": job * job, "by": ident}     # work outside the lock
        shm.incr("processed")
    sys.exit("consumer %s: timed out" % ident)


def main():
    seg = dshared.Segment(NAME, 2**22, create=True)
    procs = []
    try:
        shm = seg.col()
        shm.update(queue=[], results={}, producer_done=False, processed=0)
        me = os.path.abspath(__file__)
        procs += [subprocess.Popen([sys.executable, me, "consume", str(i)]) for i in (1, 2)]
        procs.append(subprocess.Popen([sys.executable, me, "produce"]))
        # wait for the results: woken by each increment, never polling
        v = shm.version("processed")
        deadline = time.monotonic() + 60
        while shm["processed"] < JOBS and time.monotonic() < deadline:
            v = shm.wait("processed", version=v, timeout=deadline - time.monotonic())
        codes = [p.wait(timeout=60) for p in procs]
        assert codes == [0, 0, 0], codes
        results = shm["results"]
        ok = sorted(results) == list(range(JOBS)) and all(r["square"] == j * j for j, r in results.items())
        by = {}
        for r in results.values():
            by[r["by"]] = by.get(r["by"], 0) + 1
        print("by consumer:", dict(sorted(by.items())))
        print("%d jobs, %d results, all correct: %s" % (JOBS, shm["processed"], ok))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        seg.unlink()


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"]:
        produce()
    elif sys.argv[1:2] == ["consume"]:
        consume(sys.argv[2])
    else:
        main()
