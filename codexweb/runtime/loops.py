"""Where the runtime's async work runs: event loops lent to one request at a time.

Flask is WSGI and the ChatKit and Agents SDKs are async. A `/chatkit` request runs the SDK on
an event loop it has to itself for as long as it lasts, in its own thread (`RequestLoop`), so
the store uses the request's database session as any view does. The loops outlive their
requests (`LoopPool`), and so do the model clients kept on them: the next reply reuses an open
connection to the model. What a request leaves on its loop is closed at its end, in its own
context (`_end_request`), so nothing of one request runs in the next.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .agents import KEPT_CLIENTS, ModelClients

log = logging.getLogger(__name__)


class RequestLoop:
    """Where one request's async work runs, with the request's context (Flask's app and
    request, so the store uses the request's database session).

    Normally on an event loop borrowed from the process's `LOOPS` for the request, in the
    request's own thread, and given back at its end: a loop and the model clients kept on it
    serve conversation after conversation. A new loop and a new client with a new connection
    per conversation cost CPU, and against a remote model a TCP and TLS handshake before the
    first token (docs/PERFORMANCE.md, round 8). When the thread already runs an event loop
    (an async host, or a test harness such as Playwright's sync API), asyncio allows no second
    one there: the request then runs on a loop of its own in a helper thread, closed with it.
    """

    def __init__(self) -> None:
        self._context = contextvars.copy_context()
        if _thread_runs_a_loop():
            self._kept = None
            self._runner = asyncio.Runner()
            self._helper = ThreadPoolExecutor(1)
        else:
            self._kept = LOOPS.borrow()
            self._runner = self._kept.runner
            self._helper = None
            self._context.run(KEPT_CLIENTS.set, self._kept.clients)

    def run(self, coroutine):
        if self._helper is None:
            return self._runner.run(coroutine, context=self._context)
        return self._helper.submit(self._runner.run, coroutine, context=self._context).result()

    def close(self, *, cut_short=None) -> None:
        """End the request's work on the loop: close `cut_short` (a stream the client left)
        and whatever the request left running, in the request's context."""
        if self._helper is not None:
            try:
                if cut_short is not None:
                    self.run(_close_stream(cut_short))
            finally:
                self._helper.submit(self._runner.close).result()
                self._helper.shutdown()
            return
        kept, self._kept = self._kept, None
        if kept is None:
            return  # closed already
        try:
            self.run(_end_request(cut_short))
        except BaseException:
            _close_quietly(kept)  # a loop in an unknown state is not lent again
            raise
        LOOPS.give_back(kept)


@dataclass
class KeptLoop:
    runner: asyncio.Runner
    clients: ModelClients
    returned_at: float = 0.0

    @classmethod
    def new(cls) -> KeptLoop:
        # Made by a factory, the loop is never any thread's "current" loop: a loop lent to
        # several threads in turn must not be what `asyncio.get_event_loop()` finds in one.
        runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        # Started in an empty context: the runner and the loop's own handles keep the context
        # they start in, for the loop's life, and it must not be a request's (its data, `g`).
        contextvars.Context().run(runner.get_loop)
        return cls(runner, ModelClients())

    def close(self) -> None:
        """Close the loop and its model clients' connections (the loop is not running)."""
        try:
            self.runner.run(self.clients.close_all(), context=contextvars.Context())
        finally:
            self.runner.close()


class LoopPool:
    """The event loops of this process's /chatkit requests, lent to one request at a time.

    The most recently given back is lent first, so a quiet server keeps using one loop and its
    model connections stay warm. The pool grows to the number of conversations at once (a
    gthread worker's threads at most); a loop unused for `IDLE_SECONDS` is closed, with its
    connections, when a request next borrows one. A loop is not tied to a thread: with Flask's
    development server, a thread per request, the loops still outlive their requests.
    """

    IDLE_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: list[KeptLoop] = []  # least recently given back first
        self._pid = os.getpid()

    def borrow(self) -> KeptLoop:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its parent's loops are not its own
                self._idle, self._pid = [], os.getpid()
            stale = self._take_stale(self._clock() - self.IDLE_SECONDS)
            kept = self._idle.pop() if self._idle else None
        for loop in stale:
            _close_quietly(loop)
        return kept or KeptLoop.new()

    def give_back(self, kept: KeptLoop) -> None:
        with self._lock:
            kept.returned_at = self._clock()
            if self._pid == os.getpid():
                self._idle.append(kept)

    def _take_stale(self, before: float) -> list[KeptLoop]:
        count = 0
        while count < len(self._idle) and self._idle[count].returned_at < before:
            count += 1
        stale, self._idle[:count] = self._idle[:count], []
        return stale


def _close_quietly(kept: KeptLoop) -> None:
    try:
        kept.close()
    except Exception as error:
        _log_failures("closing an event loop of /chatkit", [error])


LOOPS = LoopPool()


def _thread_runs_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _end_request(cut_short=None) -> None:
    """What closing the request's own loop did, leaving the loop open for the next request.

    A stream cut short is closed first, then the SDK's generators inside it (the reply's
    among them) and any task the request left (the Agents SDK's run of a reply cut short):
    here, in the request's context (its app and database session), so a reply cut short
    stores its note now and nothing of this request runs in the next one.
    """
    if cut_short is not None:
        await cut_short.aclose()
    await _close_generators()
    current = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not current]
    for task in left:
        task.cancel()
    if left:
        ended = await asyncio.gather(*left, return_exceptions=True)
        _log_failures("a task the request left", ended)
    await _close_generators()


async def _close_stream(stream) -> None:
    """`_end_request` for a loop that ends with the request (its close does the rest)."""
    await stream.aclose()
    await _close_generators()


async def _close_generators() -> None:
    """Close the async generators begun on this loop and not closed yet.

    `loop.shutdown_asyncgens()` does this too, but then refuses every generator begun on the
    loop after it: a loop kept for the next request cannot use it. The loop's own record of
    its generators (`_asyncgens`, what `shutdown_asyncgens` reads) is private to asyncio.
    """
    loop = asyncio.get_running_loop()
    generators = list(loop._asyncgens)
    loop._asyncgens.clear()
    if generators:
        closed = await asyncio.gather(
            *(agen.aclose() for agen in generators), return_exceptions=True
        )
        _log_failures("closing an async generator of the request", closed)


def _log_failures(what: str, results: list) -> None:
    """Log what failed while a request's work ended, as asyncio's own shutdown would: the
    error's type and where it was raised, not its message (a model's or driver's message can
    quote what the user wrote)."""
    for result in results:
        if isinstance(result, Exception):
            where = "".join(traceback.format_tb(result.__traceback__))
            log.error("%s failed: %s\n%s", what, type(result).__name__, where)
