"""CODEX_AGENTS entries as responders: an OpenAI Agents SDK agent, or the offline demo.

An agent with a `model` answers through the Agents SDK, streaming, against OpenAI or any
OpenAI-compatible server (`base_url`; Chat Completions by default there, `api: "responses"`
to use the Responses API). Its instructions are followed by the session's placement and
`context`, so the agent knows where the user came from. An agent without a `model` is the
local demo: it streams a short reply word by word and needs no key and no network.

Each responder is an async iterator of ChatKit events built with the SDK's own types; the
server persists what it yields.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    set_tracing_disabled,
)
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
)
from openai import APIConnectionError, APITimeoutError, AsyncOpenAI, DefaultAsyncHttpxClient

from ..logging import emit
from .context import RuntimeContext
from .store import SessionStore

# Traces would be exported to OpenAI's platform: no network we were not asked for.
set_tracing_disabled(True)
# The OpenAI client logs whole requests (the conversation) at DEBUG, the ChatKit SDK each
# request's type at INFO: no message text may reach a log line, whatever LOG_LEVEL says.
for _logger in ("openai", "openai.agents", "httpx", "httpcore", "chatkit"):
    logging.getLogger(_logger).setLevel(logging.WARNING)

# The Agents SDK reads this many earlier items of a thread as the conversation so far.
HISTORY_ITEMS = 100


class ChatCompletionsConverter(ThreadItemConverter):
    """Earlier assistant replies as plain text content.

    The SDK's default sends them as `output_text` parts, which the Agents SDK's Chat
    Completions path refuses (`UserError: Unknown content`) from the second turn on.
    """

    async def assistant_message_to_input(self, item: AssistantMessageItem):
        return {
            "type": "message",
            "role": "assistant",
            "content": "".join(part.text for part in item.content),
        }


def agent_spec(agent_id: str, agents_config: dict[str, Any]) -> dict[str, Any]:
    return dict(agents_config.get(agent_id) or {})


def instructions_for(spec: dict[str, Any], context: RuntimeContext) -> str:
    """The agent's instructions, then where the user came from."""
    base = spec.get("instructions") or "You are a helpful assistant."
    session_context = json.dumps(context.context, ensure_ascii=False, sort_keys=True)
    return (
        f"{base}\n\nThe user opened this conversation in the placement "
        f"{context.placement!r}. Session context (JSON): {session_context}"
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every model client: building it reads the system's CA bundle,
    a quarter of a conversation's cost when each conversation built its own (measured)."""
    return ssl.create_default_context()


class ModelClients:
    """The model clients kept on one event loop, by their settings, most recently used last.

    A client's connections belong to the loop they were opened on, so the clients are kept
    with the loop (`loops.RequestLoop`): the next conversation on it reuses an open
    connection instead of a new TCP (and TLS) handshake. At most `MAX` settings are kept; the
    least recently used client beyond them is closed.
    """

    MAX = 8

    def __init__(self) -> None:
        self._clients: OrderedDict[tuple, AsyncOpenAI] = OrderedDict()

    async def client(self, settings: tuple) -> AsyncOpenAI:
        client = self._clients.get(settings)
        if client is None:
            client = self._clients[settings] = _new_client(*settings)
        self._clients.move_to_end(settings)
        while len(self._clients) > self.MAX:
            _, evicted = self._clients.popitem(last=False)
            await evicted.close()
        return client

    async def close_all(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.close()


# The clients kept on the loop this request runs on; None on a loop that ends with the
# request, whose conversation closes its own client.
KEPT_CLIENTS: ContextVar[ModelClients | None] = ContextVar("codexweb_model_clients", default=None)


def _new_client(base_url: str | None, api_key: str, timeout: float) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        timeout=timeout,
        max_retries=0,
        http_client=DefaultAsyncHttpxClient(verify=_tls_context(), timeout=timeout),
    )


async def _model(spec: dict[str, Any], default_api_key: str | None, timeout: float):
    """The agent's model, its API, and its client if this conversation must close it."""
    base_url = spec.get("base_url")
    settings = (base_url, spec.get("api_key") or default_api_key or "not-needed", timeout)
    kept = KEPT_CLIENTS.get()
    if kept is None:
        client = own_client = _new_client(*settings)
    else:
        client, own_client = await kept.client(settings), None
    api = spec.get("api") or ("chat_completions" if base_url else "responses")
    if api == "responses":
        return OpenAIResponsesModel(model=spec["model"], openai_client=client), api, own_client
    return OpenAIChatCompletionsModel(model=spec["model"], openai_client=client), api, own_client


async def model_reply(
    spec: dict[str, Any],
    thread: ThreadMetadata,
    store: SessionStore,
    context: RuntimeContext,
    *,
    default_api_key: str | None,
    timeout: float,
) -> AsyncIterator[ThreadStreamEvent]:
    """Stream the configured model's answer to the thread so far."""
    model, api, own_client = await _model(spec, default_api_key, timeout)
    agent = Agent(
        name=spec.get("name") or context.agent_id,
        instructions=instructions_for(spec, context),
        model=model,
    )
    history = await store.load_thread_items(thread.id, None, HISTORY_ITEMS, "desc", context)
    items: list[ThreadItem] = list(reversed(history.data))
    converter = ChatCompletionsConverter() if api == "chat_completions" else ThreadItemConverter()
    agent_input = await converter.to_agent_input(items)
    try:
        for attempt in range(2):
            tasks_before = asyncio.all_tasks()
            agent_context = AgentContext(thread=thread, store=store, request_context=context)
            result = Runner.run_streamed(agent, agent_input, context=agent_context)
            answered = False
            try:
                async for event in _with_real_ids(
                    stream_agent_response(agent_context, result), store, thread, context
                ):
                    answered = True
                    yield event
                return
            except APIConnectionError as error:
                if answered or attempt or own_client or isinstance(error, APITimeoutError):
                    raise
                # A kept connection the model server closed just as the request went out
                # (its idle timeout): nothing reached the user, so ask once more, on a new
                # connection. A timeout is not retried: it would double the user's wait.
                # (Safe while agents have no tools: a tool run before the failure would run
                # again.)
                emit(
                    "chatkit.model.retried",
                    **context.event_fields(thread.id),
                    error=type(error).__name__,
                )
            finally:
                result.cancel()
            await _end_tasks(asyncio.all_tasks() - tasks_before - {asyncio.current_task()})
    finally:
        if own_client is not None:
            await own_client.close()


async def _end_tasks(tasks: set[asyncio.Task]) -> None:
    """End what a failed attempt left running (the SDKs' stream readers), before the next."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _with_real_ids(
    events: AsyncIterator[ThreadStreamEvent],
    store: SessionStore,
    thread: ThreadMetadata,
    context: RuntimeContext,
) -> AsyncIterator[ThreadStreamEvent]:
    """Give every item the model adds an id of our store's, whatever the model named it.

    The ChatKit SDK uses the model's item id as the thread item's id, and a thread's item ids
    must be unique. The Agents SDK names every Chat Completions output item `__fake_id__`
    (openai/chatkit-python#36), and an OpenAI-compatible Responses server may reuse its ids
    too: either way the second reply of a thread would collide with the first. No id goes
    back to the model (the history is sent as content), so the names are ours to choose.
    """
    current: dict[str, str] = {}

    def for_item(model_id: str) -> str:
        return current.get(model_id, model_id)

    async for event in events:
        if isinstance(event, ThreadItemAddedEvent):
            current[event.item.id] = store.generate_item_id("message", thread, context)
        if isinstance(event, (ThreadItemAddedEvent, ThreadItemDoneEvent)):
            event.item.id = for_item(event.item.id)
        elif isinstance(event, ThreadItemUpdatedEvent):
            event.item_id = for_item(event.item_id)
        yield event


async def demo_reply(
    agent_name: str,
    message_text: str,
    thread: ThreadMetadata,
    store: SessionStore,
    context,
    word_delay: float,
) -> AsyncIterator[ThreadStreamEvent]:
    """The offline demo agent: says what it is and echoes the message, word by word
    (`word_delay` seconds apart, CHATKIT_DEMO_WORD_DELAY)."""
    text = (
        f"This is {agent_name}, codexweb's offline demo agent (no model is configured). "
        f"You said: {message_text}"
    )
    item = AssistantMessageItem(
        id=store.generate_item_id("message", thread, context),
        thread_id=thread.id,
        created_at=datetime.now(),
        content=[AssistantMessageContent(text="")],
    )
    yield ThreadItemAddedEvent(item=item)
    words = text.split(" ")
    for index, word in enumerate(words):
        delta = word if index == 0 else f" {word}"
        yield ThreadItemUpdatedEvent(
            item_id=item.id,
            update=AssistantMessageContentPartTextDelta(content_index=0, delta=delta),
        )
        await asyncio.sleep(word_delay)
    done = item.model_copy(update={"content": [AssistantMessageContent(text=text)]})
    yield ThreadItemDoneEvent(item=done)
