"""Recipe: an asyncio service run by several processes that share their
state through dshared.

Each server process runs its own event loop with a TCP server on 127.0.0.1
(a port of its own, published in the segment) and answers a line protocol:
`SET key value`, `GET key`, `INCR key`, `STATS`. The store, the counters and
the list of servers live in the segment, so whichever process a client
talks to, it sees every other one's writes. A shared flag stops them.

    python examples/asyncio_service.py     # prints "counter 40 (exact), seen by every server: True"

The segment's name comes from DSHARED_EXAMPLE_NAME (default
"asyncio-service"); the main process creates it and removes it at the end.
Everything is bounded in time: servers stop on the flag, or after 30 s.
"""
import asyncio
import multiprocessing as mp
import os

import dshared

NAME = os.environ.get("DSHARED_EXAMPLE_NAME", "asyncio-service")
SERVERS = 2


async def handle(reader, writer):
    shm = dshared.col()
    store = shm["store"]
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd, _, rest = line.decode().strip().partition(" ")
        if cmd == "SET":
            key, _, value = rest.partition(" ")
            store[key] = value
            reply = "OK"
        elif cmd == "GET":
            reply = str(store.get(rest))
        elif cmd == "INCR":
            reply = str(store.incr(rest))            # atomic across every server process
        elif cmd == "STATS":
            reply = "pid=%d requests=%d" % (os.getpid(), shm["requests"])
        else:
            reply = "ERR unknown command"
        shm.incr("requests")
        writer.write(reply.encode() + b"\n")
        await writer.drain()
    writer.close()


async def serve(name):
    dshared.attach(name)
    shm = dshared.col()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    shm["servers"].append(server.sockets[0].getsockname()[1])     # publish the port
    async with server:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not shm["stop"] and loop.time() < deadline:          # a shared stop flag
            await asyncio.sleep(0.02)


def server_process(name):
    asyncio.run(serve(name))


async def request(port, line):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line.encode() + b"\n")
    await writer.drain()
    reply = (await reader.readline()).decode().strip()
    writer.close()
    await writer.wait_closed()
    return reply


async def client(shm):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(shm["servers"]) < SERVERS:                           # wait for every server
        if loop.time() > deadline:
            raise TimeoutError("servers did not start")
        await asyncio.sleep(0.02)
    ports = list(shm["servers"])
    assert await request(ports[0], "SET greeting hello") == "OK"
    seen = [await request(p, "GET greeting") for p in ports]       # written through one, read through all
    incrs = [request(ports[i % len(ports)], "INCR counter") for i in range(40)]
    await asyncio.gather(*incrs)                                   # concurrent, to both servers
    counts = [await request(p, "GET counter") for p in ports]
    return seen, counts


def main():
    seg = dshared.Segment(NAME, 2**22, create=True)
    procs = []
    try:
        shm = seg.col()
        shm.update(store={}, servers=[], stop=False, requests=0)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=server_process, args=(NAME,)) for _ in range(SERVERS)]
        for p in procs:
            p.start()
        try:
            seen, counts = asyncio.run(asyncio.wait_for(client(shm), 30))
        finally:
            shm["stop"] = True
            for p in procs:
                p.join(10)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        print("greeting %s, requests %d" % (seen, shm["requests"]))
        print("counter %s (exact), seen by every server: %s"
              % (counts[0], seen == ["hello"] * SERVERS and counts == ["40"] * SERVERS))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        seg.unlink()


if __name__ == "__main__":
    main()
