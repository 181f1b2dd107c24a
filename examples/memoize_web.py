"""Recipe: a WSGI app served by 4 gunicorn workers that share one cache of
an expensive function (@dshared.memoize) and exact request counters (incr).

    python examples/memoize_web.py

starts gunicorn (`python -m gunicorn -w 4 -c python:memoize_web
memoize_web:app`, from this directory) on a free loopback port, sends 400
requests for 8 reports from 8 client threads, stops it, and prints
"requests 400, reports computed 8, served from the cache 392": each report
is computed once for all 4 workers, even when several ask for it at once.

`-c python:memoize_web` reads the server hooks below from this module: the
master creates the segment before forking the workers (on_starting: the
module's import creates it) and removes it when it exits (on_exit).

The segment's name comes from DSHARED_EXAMPLE_NAME (default "memoize-web").
"""
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import dshared

NAME = os.environ.get("DSHARED_EXAMPLE_NAME", "memoize-web")

dshared.init(NAME, 2**26)            # the master creates it; each worker attaches
counters = dshared.col("counters")


# named: the workers import this file as memoize_web, `python memoize_web.py` runs it as __main__
@dshared.memoize("memoize_web.report", max_entries=1000, ttl=300)
def report(n):
    """The expensive part: computed once per n for all the workers."""
    counters.incr("computed")
    time.sleep(0.2)
    return {"report": n, "total": sum(i * i for i in range(n * 1000))}


def app(environ, start_response):
    counters.incr("requests")        # exact across every worker
    n = int((environ.get("PATH_INFO") or "/0").strip("/") or 0)
    body = ("%r\n" % (report(n),)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# gunicorn server hooks (read with -c python:memoize_web)
def on_exit(server):
    dshared.unlink(NAME)


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main(requests=400, reports=8, clients=8):
    here = os.path.dirname(os.path.abspath(__file__))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "4", "-b", "127.0.0.1:%d" % port,
                               "-c", "python:memoize_web", "--log-level", "warning", "memoize_web:app"],
                              cwd=here, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                  [here, os.environ.get("PYTHONPATH", "")])))
    try:
        url = "http://127.0.0.1:%d/" % port
        for _ in range(300):             # until the workers answer
            try:
                urllib.request.urlopen(url + "0", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit("gunicorn exited with %s" % server.returncode)
                time.sleep(0.1)
        errors = []

        def client(i):
            try:
                for j in range(requests // clients):
                    body = urllib.request.urlopen(url + str(1 + (i + j) % reports), timeout=30).read()
                    assert body.startswith(b"{'report': "), body
            except BaseException as e:        # reported below
                errors.append(e)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit("client failed: %r" % errors[0])
        served = counters["requests"] - 1          # less the first, warm-up request
        computed = counters["computed"] - 1
        print("requests %d, reports computed %d, served from the cache %d"
              % (served, computed, served - computed))
        assert served == requests and computed == reports
        info = report.cache_info()
        assert info.currsize == reports + 1
    finally:
        server.terminate()
        server.wait(30)
        if os.path.exists("/dev/shm/" + NAME):     # on_exit did not run (killed server)
            dshared.unlink(NAME)


if __name__ == "__main__":
    main()
