"""codexweb's ChatKit server: the SDK's `ChatKitServer`, answering with the session's agent.

The SDK speaks the protocol and persists what `respond` yields; this class decides who
answers, moves the session's current thread on a retry (the store moves it with each new
message), keeps the events (never the text), and turns a failing model into the protocol's
`error` event with `allow_retry`, so the user's message stays stored and
`threads.retry_after_item` can answer it later.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageItem,
    ChatKitReq,
    ErrorCode,
    ErrorEvent,
    FeedbackKind,
    SDKHiddenContextItem,
    ThreadItem,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    is_streaming_req,
)
from flask import current_app
from pydantic import TypeAdapter, ValidationError

from .. import metrics
from ..codex import sessions
from ..logging import emit
from .agents import KEPT_CLIENTS, ModelClients, agent_spec, demo_reply, model_reply
from .context import RuntimeContext
from .store import SessionStore

log = logging.getLogger(__name__)

UNAVAILABLE = "The agent is unavailable right now. Please try again."


def message_text(item: UserMessageItem | None) -> str:
    """What the user wrote: the text parts of the message, tags included."""
    if item is None:
        return ""
    return "".join(getattr(part, "text", "") for part in item.content)


# The SDK's `process` builds this adapter (the schema of every request type) on each call:
# ~60 % of a /chatkit request's CPU in a profile. Built once per process instead.
CHATKIT_REQUEST = TypeAdapter(ChatKitReq)


class CodexChatKitServer(ChatKitServer[RuntimeContext]):
    def __init__(self) -> None:
        super().__init__(SessionStore())

    async def process(
        self, request: str | bytes | bytearray, context: RuntimeContext
    ) -> StreamingResult | NonStreamingResult:
        """The SDK's `process`, with the request adapter built once (see CHATKIT_REQUEST)."""
        parsed = CHATKIT_REQUEST.validate_json(request)
        if is_streaming_req(parsed):
            return StreamingResult(self._process_streaming(parsed, context))
        return NonStreamingResult(await self._process_non_streaming(parsed, context))

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RuntimeContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        if input_user_message is not None:
            self._record_message(thread, input_user_message, context)
        started = time.monotonic()
        first_token_ms: int | None = None
        output_chars = 0
        metrics.stream_started()
        try:
            async for event in self._reply(thread, input_user_message, context):
                if first_token_ms is None and isinstance(event, ThreadItemUpdatedEvent):
                    first_token_ms = round((time.monotonic() - started) * 1000)
                    metrics.model_first_token(first_token_ms / 1000)
                if isinstance(event, ThreadItemDoneEvent) and isinstance(
                    event.item, AssistantMessageItem
                ):
                    output_chars += sum(len(part.text) for part in event.item.content)
                yield event
        except GeneratorExit:
            # The client went away and the WSGI server closed the stream. The SDK calls its
            # cancellation hook only on asyncio's CancelledError, which a WSGI request never
            # raises: without this the next reply would carry on the one that was cut.
            await self.handle_stream_cancelled(thread, [], context)
            raise
        except Exception as error:
            metrics.model_failed(_failure_reason(error))
            emit(
                "chatkit.response.failed",
                logging.WARNING,
                **_fields(thread, context),
                error=type(error).__name__,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            raise CustomStreamError(UNAVAILABLE, allow_retry=True) from None
        finally:
            metrics.stream_finished()
        emit(
            "chatkit.response.completed",
            **_fields(thread, context),
            first_token_ms=first_token_ms,
            duration_ms=round((time.monotonic() - started) * 1000),
            output_chars=output_chars,
        )

    def _reply(
        self, thread: ThreadMetadata, message: UserMessageItem | None, context: RuntimeContext
    ) -> AsyncIterator[ThreadStreamEvent]:
        config = current_app.config
        spec = agent_spec(context.agent_id, config["CODEX_AGENTS"])
        if not spec.get("model"):
            name = spec.get("name") or context.agent_id
            delay = float(config["CHATKIT_DEMO_WORD_DELAY"])
            return demo_reply(name, message_text(message), thread, self.store, context, delay)
        return model_reply(
            spec,
            thread,
            self.store,
            context,
            default_api_key=config.get("OPENAI_API_KEY"),
            timeout=float(config["CHATKIT_MODEL_TIMEOUT"]),
        )

    def _record_message(
        self, thread: ThreadMetadata, message: UserMessageItem, context: RuntimeContext
    ) -> None:
        # Both write by id from the row the token check read: no second read of it. The store
        # moved the current thread with a new message already; a retry moves it here.
        sessions.set_current_thread(context.codex_session, thread.id)
        sessions.touch(context.codex_session)
        emit(
            "chatkit.message.received", **_fields(thread, context), chars=len(message_text(message))
        )

    async def add_feedback(
        self, thread_id: str, item_ids: list[str], feedback: FeedbackKind, context: RuntimeContext
    ) -> None:
        """`items.feedback`: kept with the items (the SDK's default drops it)."""
        await self.store.add_feedback(thread_id, item_ids, feedback, context)

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: RuntimeContext
    ) -> None:
        """The client went away mid-reply: keep no half-written answer (the SDK's default
        would store it), only a note so the next reply does not continue the cut one."""
        await self.store.add_thread_item(
            thread.id,
            SDKHiddenContextItem(
                thread_id=thread.id,
                created_at=datetime.now(),
                id=self.store.generate_item_id("sdk_hidden_context", thread, context),
                content="The user cancelled the stream. Stop responding to the prior request.",
            ),
            context=context,
        )


def _failure_reason(error: Exception) -> str:
    """The metrics label of a failed reply: a fixed vocabulary, never the error's text."""
    return (
        "timeout"
        if isinstance(error, TimeoutError) or "Timeout" in type(error).__name__
        else "error"
    )


def _fields(thread: ThreadMetadata, context: RuntimeContext) -> dict:
    return {
        "user_id": context.user_id,
        "session_id": context.session_id,
        "thread_id": thread.id,
        "agent_id": context.agent_id,
        "placement": context.placement,
    }


# Serving: the SDK's async answer on the request's own event loop -----------------------------


class UnknownObject(Exception):
    """The thread or item asked for does not exist for this caller."""


class NotAChatKitRequest(Exception):
    """The body is not a request of the ChatKit protocol."""


class RequestDoesNotFit(Exception):
    """A protocol request the thread cannot take: retrying after an item that is not a user
    message, a tool's output with no tool call pending. The SDK says so with `ValueError`
    before anything is stored; its message (about the caller's own ids) is the reason."""


# The requests whose `ValueError` means "not in this thread's state" (see RequestDoesNotFit).
# Anywhere else a ValueError is a fault of ours and stays a 500, with its traceback logged.
THREAD_STATE_REQUESTS = frozenset(
    {
        "threads.retry_after_item",
        "threads.add_client_tool_output",
        "threads.add_structured_input",
        "items.feedback",
    }
)


def _request_type(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed.get("type") if isinstance(parsed, dict) else None


def chatkit_server() -> CodexChatKitServer:
    """One server per app: it holds no per-request state (the store is stateless)."""
    return current_app.extensions.setdefault("codexweb.chatkit_server", CodexChatKitServer())


def answer(body: bytes, context: RuntimeContext) -> bytes | Iterator[bytes]:
    """The JSON answer to a ChatKit request, or its Server-Sent Events as a generator.

    Flask is WSGI and the SDK is async: each request runs on an event loop of its own for as
    long as it lasts (`RequestLoop`), in its own thread, so the store uses Flask-SQLAlchemy's
    session as any view does, and one slow conversation holds one thread, never another
    conversation. The first event is produced here, so a thread that is not the caller's is
    an error answer rather than a stream that breaks after its headers.
    """
    loop = RequestLoop()
    try:
        result = loop.run(chatkit_server().process(body, context))
        if isinstance(result, NonStreamingResult):
            loop.close()
            return result.json
        stream = result.__aiter__()
        first = loop.run(_next(stream))
    except (NotFoundError, StopAsyncIteration):
        # An empty stream: the SDK found no such item to answer (a retry after an unknown one).
        loop.close()
        raise UnknownObject() from None
    except ValidationError:
        loop.close()
        raise NotAChatKitRequest() from None
    except ValueError as error:
        loop.close()
        if _request_type(body) not in THREAD_STATE_REQUESTS:
            raise
        raise RequestDoesNotFit(str(error)) from None
    except BaseException:
        loop.close()
        raise
    return _events(loop, first, stream)


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


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    # `asyncio.Runner.run` takes a coroutine; `anext()` alone is a bare awaitable.
    return await anext(stream)


def _events(loop: RequestLoop, first: bytes, stream) -> Iterator[bytes]:
    """The SDK's event stream as a WSGI body, driven on the request's event loop.

    When the client goes away the server closes this generator: the async stream is closed
    (no reply is stored half-written) and the request's work on the loop ends with it.
    """
    finished = False
    try:
        yield first
        while True:
            try:
                chunk = loop.run(_next(stream))
            except StopAsyncIteration:
                finished = True
                return
            except Exception as error:
                # After the headers there is no status code left to send: end the stream
                # with the protocol's error event instead of a broken response.
                emit("chatkit.stream.broken", logging.ERROR, error=type(error).__name__)
                failure = ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=True)
                yield b"data: " + failure.model_dump_json(exclude_none=True).encode() + b"\n\n"
                return
            yield chunk
    finally:
        loop.close(cut_short=None if finished else stream)


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
