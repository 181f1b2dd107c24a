"""The dshared quick start: one process writes a nested dict into shared
memory, another reads it. Works with the fork and spawn start methods."""
import multiprocessing as mp
import os
import sys

import dshared

NAME = os.environ.get("DSHARED_EXAMPLE_NAME", "mymem")

dshared.init(NAME, 2 ** 10)   # creates shared mem of size 2 ** 10 (rounded up to 64 KiB)

shm = dshared.col()


def in_process_1():
    shm['d'] = {'key': 'val'}


def later_on_in_process_2():
    print(shm['d']['key'])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        mp.set_start_method(sys.argv[1])
    try:
        p = mp.Process(target=in_process_1); p.start(); p.join()
        p = mp.Process(target=later_on_in_process_2); p.start(); p.join()
    finally:
        dshared.unlink(NAME)   # the creator removes the segment when done
