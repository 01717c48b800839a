"""The per-process limit on requests running the app at once (codexweb/concurrency.py).

Each test drives the real middleware from several threads through Flask's test client, with
routes that hold their request until the test lets it go, so what is asserted is who got in,
never how long anything took.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask, Response, stream_with_context

from codexweb.concurrency import DEFAULT_UNDER_GUNICORN, RequestGate, waiting_on_network

PATIENCE = 10  # seconds a test waits for something that must happen before it fails


class Holds:
    """A route's view that counts who is inside and keeps them until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.entered = 0
        self.someone_entered = threading.Condition(self.lock)

    def __call__(self) -> str:
        with self.lock:
            self.inside += 1
            self.entered += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.someone_entered.notify_all()
        try:
            assert self.release.wait(PATIENCE)
            return "done"
        finally:
            with self.lock:
                self.inside -= 1

    def wait_for_entries(self, count: int, timeout: float = PATIENCE) -> bool:
        with self.lock:
            return self.someone_entered.wait_for(lambda: self.entered >= count, timeout)


def in_threads(app: Flask, path: str, count: int) -> tuple[list[threading.Thread], list[int]]:
    statuses: list[int] = []

    def ask() -> None:
        statuses.append(app.test_client().get(path).status_code)

    threads = [threading.Thread(target=ask) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, statuses


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(PATIENCE)
        assert not thread.is_alive()


def gated_app(app_factory: Callable[..., Flask], limit: int, **routes) -> Flask:
    app = app_factory(REQUEST_CONCURRENCY=limit)
    for path, view in routes.items():
        app.add_url_rule(f"/_test/{path}", path, view)
    return app


def test_no_more_requests_than_the_limit_run_the_app_at_once(app_factory):
    holds = Holds()
    app = gated_app(app_factory, 2, hold=holds)
    threads, statuses = in_threads(app, "/_test/hold", 6)
    assert holds.wait_for_entries(2)
    # The other four wait at the gate: given time, none of them gets in.
    assert not holds.wait_for_entries(3, timeout=0.5)
    holds.release.set()
    join_all(threads)
    assert statuses == [200] * 6
    assert holds.entered == 6
    assert holds.most_inside == 2


def test_a_request_waiting_on_another_server_gives_its_place_up(app_factory):
    provider = Holds()

    def calls_a_slow_provider() -> str:
        with waiting_on_network():
            return provider()

    quick = Holds()
    quick.release.set()
    app = gated_app(app_factory, 1, slow=calls_a_slow_provider, quick=quick)
    slow_threads, slow_statuses = in_threads(app, "/_test/slow", 1)
    assert provider.wait_for_entries(1)
    quick_threads, quick_statuses = in_threads(app, "/_test/quick", 3)
    join_all(quick_threads)  # served while the slow one waits on its provider
    assert quick_statuses == [200] * 3
    provider.release.set()
    join_all(slow_threads)
    assert slow_statuses == [200]


def test_a_streamed_answer_leaves_the_gate_when_its_view_returns(app_factory):
    stream_may_end = threading.Event()
    quick = Holds()
    quick.release.set()

    def stream() -> Response:
        def events():
            yield b"data: first\n\n"
            assert stream_may_end.wait(PATIENCE)
            yield b"data: last\n\n"

        return Response(stream_with_context(events()), mimetype="text/event-stream")

    app = gated_app(app_factory, 1, stream=stream, quick=quick)
    streaming = app.test_client().get("/_test/stream", buffered=False)
    chunks = iter(streaming.response)
    assert next(chunks) == b"data: first\n\n"
    quick_threads, quick_statuses = in_threads(app, "/_test/quick", 2)
    join_all(quick_threads)  # the open stream holds no place
    assert quick_statuses == [200, 200]
    stream_may_end.set()
    assert list(chunks) == [b"data: last\n\n"]
    streaming.close()


def test_the_limit_applies_under_gunicorn_unless_set(app_factory):
    def gate_of(app: Flask) -> RequestGate | None:
        # The outermost middleware when there is one: nothing of the app runs before it.
        return app.wsgi_app if isinstance(app.wsgi_app, RequestGate) else None

    assert gate_of(app_factory()) is None  # tests, `flask run`: no limit
    under_gunicorn = gate_of(app_factory(WORKER_THREADS=24))
    assert under_gunicorn is not None and under_gunicorn.limit == DEFAULT_UNDER_GUNICORN
    chosen = gate_of(app_factory(WORKER_THREADS=24, REQUEST_CONCURRENCY=8))
    assert chosen is not None and chosen.limit == 8
    assert gate_of(app_factory(WORKER_THREADS=24, REQUEST_CONCURRENCY=0)) is None
