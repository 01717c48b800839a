"""At most `REQUEST_CONCURRENCY` requests run the app at once in each worker process.

gunicorn's threaded worker keeps 24 threads so that conversations can stream for seconds
without holding up the pages (gunicorn.conf.py). When those threads all carry short requests
at once, they mostly wait on each other: for the GIL, and on SQLite for the one write lock,
whose busy handler sleeps 1, 2, 5 … 100 ms between tries while the lock changes hands
without them. On the 2-core machine (docs/PERFORMANCE.md, round 4), 32 clients asking for
ChatKit tokens on SQLite got 576 a second with a p99 of 1.2 s; with 4 requests in the app at
a time, 1,023 a second with a p99 of 0.17 s, for a third less CPU per request.

So the threads stay (a stream needs its own), and the app itself lets only a few of them in
at a time; the others wait on a semaphore, which costs nothing while they wait and wakes them
in turn. A streamed answer (`POST /chatkit`) leaves the gate when its view returns: the
stream is written afterwards, outside it, so streams never count against the limit.

`REQUEST_CONCURRENCY` is per worker process. Unset, it is `DEFAULT_UNDER_GUNICORN` when
gunicorn.conf.py runs the app (it passes `WORKER_THREADS`) and off otherwise (the dev server,
tests); 0 turns it off.

A request that waits on another server (the identity provider during an SSO login, OpenAI's
ChatKit API) gives its place up while it waits (`waiting_on_network`), so a slow provider
stalls only the requests that need it, never the worker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from flask import Flask, has_request_context, request

# Measured on the 2-core machine (docs/PERFORMANCE.md, round 4): best of 2, 4 and 8 for SQLite;
# on PostgreSQL it helps the writing paths and leaves the reads where they were.
DEFAULT_UNDER_GUNICORN = 4
_ENVIRON_KEY = "codexweb.request_gate"


class RequestGate:
    """WSGI middleware: a counting semaphore around the app's call."""

    def __init__(self, wsgi_app, limit: int) -> None:
        self.wsgi_app = wsgi_app
        self.limit = limit
        self.slots = threading.BoundedSemaphore(limit)

    def __call__(self, environ, start_response):
        environ[_ENVIRON_KEY] = self
        with self.slots:
            return self.wsgi_app(environ, start_response)


@contextlib.contextmanager
def waiting_on_network() -> Iterator[None]:
    """Around a call to another server: this request's place is free until it returns."""
    gate = request.environ.get(_ENVIRON_KEY) if has_request_context() else None
    if gate is None:
        yield
        return
    gate.slots.release()
    try:
        yield
    finally:
        gate.slots.acquire()


def request_concurrency(config: Any) -> int:
    """The limit for this process (see the module doc); 0 for none."""
    configured = config.get("REQUEST_CONCURRENCY")
    if configured is None:
        return DEFAULT_UNDER_GUNICORN if config.get("WORKER_THREADS") else 0
    return max(int(configured), 0)


def init_app(app: Flask) -> None:
    """Outermost middleware: a waiting request has not started any of the app's work."""
    limit = request_concurrency(app.config)
    if limit:
        app.wsgi_app = RequestGate(app.wsgi_app, limit)  # type: ignore[method-assign]
