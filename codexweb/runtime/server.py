"""codexweb's ChatKit server: the SDK's `ChatKitServer`, answering with the session's agent.

The SDK speaks the protocol and persists what `respond` yields; this class decides who
answers, moves the session's current thread on a retry (the store moves it with each new
message), keeps the events (never the text), and turns a failing model into the protocol's
`error` event with `allow_retry`, so the user's message stays stored and
`threads.retry_after_item` can answer it later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
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
from .agents import agent_spec, demo_reply, model_reply
from .context import RuntimeContext
from .loops import RequestLoop
from .store import SessionStore

UNAVAILABLE = "The agent is unavailable right now. Please try again."


def message_text(item: UserMessageItem | None) -> str:
    """What the user wrote: the text parts of the message, tags included."""
    if item is None:
        return ""
    return "".join(getattr(part, "text", "") for part in item.content)


class _UnknownObjectsAreAnswered(logging.Filter):
    """The SDK logs every exception that ends a stream with its traceback before re-raising
    it, a client's unknown thread or item too. That one is answered by the view: 404, or,
    once the stream has started, an `error` event logged as `chatkit.stream.broken`. Only
    that record is dropped: a `NotFoundError` the SDK catches and turns into an `error`
    event itself (a store call of its own inside a reply) is ours to see, and stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            isinstance(error, NotFoundError)
            and record.msg == "Error while generating streamed response"
        )


logging.getLogger("chatkit").addFilter(_UnknownObjectsAreAnswered())


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
                **context.event_fields(thread.id),
                error=type(error).__name__,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            raise CustomStreamError(UNAVAILABLE, allow_retry=True) from None
        finally:
            metrics.stream_finished()
        emit(
            "chatkit.response.completed",
            **context.event_fields(thread.id),
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
            "chatkit.message.received",
            **context.event_fields(thread.id),
            chars=len(message_text(message)),
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


# Serving: the SDK's async answer on the request's own event loop -----------------------------


class UnknownObject(Exception):
    """The thread or item asked for does not exist for this caller."""


class NotAChatKitRequest(Exception):
    """The body is not a request of the ChatKit protocol."""


class SdkRefused(Exception):
    """The SDK refused the request with `ValueError` before storing anything. Whether that is
    the thread's state (retrying after an item that is not a user message, a tool's output
    with no tool call pending: the message is the reason) or a fault of ours depends on the
    request's type, which the view knows (`views.THREAD_STATE_REQUESTS`)."""

    def __init__(self, error: ValueError) -> None:
        super().__init__(str(error))
        self.error = error


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
        raise SdkRefused(error) from error
    except BaseException:
        loop.close()
        raise
    return _events(loop, first, stream)


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
