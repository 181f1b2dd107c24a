"""Recipe: a WSGI app whose gunicorn workers share a request counter and a
cache of rendered pages.

With gunicorn (not needed to try it), from this directory:

    DSHARED_EXAMPLE_NAME=myapp gunicorn -w 4 -c python:gunicorn_app gunicorn_app:app

`-c python:gunicorn_app` reads the server hooks below from this module: the
master creates the segment before forking the workers (on_starting) and
removes it when it exits (on_exit); each worker's import attaches to it.

Without a server, `python examples/gunicorn_app.py` drives the app from 4
forked processes, 50 requests each, with wsgiref's test environ, and prints
"hits 200, pages rendered 5, cached 195".

The segment's name comes from DSHARED_EXAMPLE_NAME (default "gunicorn-app").
"""
import os
import sys
from wsgiref.util import setup_testing_defaults

import dshared

NAME = os.environ.get("DSHARED_EXAMPLE_NAME", "gunicorn-app")

dshared.init(NAME, 2**26)            # the first process creates it, every other one attaches
counters = dshared.col("counters")
pages = dshared.col("pages")         # the shared cache: path -> rendered body


def render(path):
    counters.incr("rendered")
    return ("<h1>%s</h1>\n" % path).encode()


def app(environ, start_response):
    hits = counters.incr("hits")     # exact across every worker
    path = environ.get("PATH_INFO") or "/"
    body = pages.get(path)
    if body is None:                 # a miss: render once per path (mostly: see the caching guide)
        body = render(path)
        pages[path] = body
    else:
        counters.incr("cached")
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body))),
                              ("X-Hits", str(hits))])
    return [body]


# gunicorn server hooks (read with -c python:gunicorn_app)
def on_starting(server):
    pass                             # the segment exists: this module's import created it


def on_exit(server):
    dshared.unlink(NAME)


def _worker(requests):
    for i in range(requests):
        environ = {"PATH_INFO": "/page/%d" % (i % 5)}
        setup_testing_defaults(environ)
        statuses = []
        body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
        assert statuses == ["200 OK"] and body.startswith(b"<h1>/page/"), (statuses, body)


def main(workers=4, requests=50):
    pids = []
    try:
        for _ in range(workers):     # as gunicorn's pre-fork workers
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    _worker(requests)
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in pids)
        if failed:
            sys.exit("%d workers failed" % failed)
        rendered = counters["rendered"]
        # two workers missing the same page at once may both render it
        print("hits %d, pages rendered %d, cached %d"
              % (counters["hits"], len(pages), counters["hits"] - rendered))
        assert counters["hits"] == workers * requests
        assert counters["cached"] + rendered == counters["hits"]
    finally:
        dshared.unlink(NAME)


if __name__ == "__main__":
    main()
