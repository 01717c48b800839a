"""What the mandated SDKs cost on their own: the floor under the runtime's first-token target.

Issue "Performance" asks for the first streamed token (instant model) in under 15 ms. Part of
that time is codexweb's (HTTP, the ChatKit token, the database store, limits, logging) and part
is the ChatKit server SDK's and the Agents SDK's, which the runtime must use. This measures, in
one process and one run, on the same loopback stand-in model (in a process of its own):

- **SDKs only**: `ChatKitServer.process(threads.create)` with an in-memory store, an Agents SDK
  agent on one long-lived event loop and one shared OpenAI client: no Flask, no database, no
  token, no limits. Nothing codexweb adds could make its own path faster than this.
- **codexweb**: the same request through `POST /chatkit` (Flask's test client, the SQLite
  store, a real ChatKit token), as `bench.inprocess` runs its paths.

Both report the time from the request to the first text delta and the CPU of a whole
conversation. The ratio of the two is what carries over to another machine.

    python -m bench.floor [--conversations 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import Page, ThreadItem, ThreadMetadata, ThreadStreamEvent, UserMessageItem
from openai import AsyncOpenAI

from bench.inprocess import Caller, build_app
from tests.runtime_support import create_request, model_agents

set_tracing_disabled(True)

MODEL_SERVER = """
import sys, time
from tests.model_server import ModelServer
server = ModelServer().start()
print(server.base_url, flush=True)
sys.stdin.read()
"""


class MemoryStore(Store[dict]):
    """The least a Store can do: dictionaries, no ownership checks, no persistence."""

    def __init__(self) -> None:
        self.threads: dict[str, ThreadMetadata] = {}
        self.items: dict[str, list[ThreadItem]] = {}

    async def load_thread(self, thread_id: str, context: dict) -> ThreadMetadata:
        if thread_id not in self.threads:
            raise NotFoundError(thread_id)
        return self.threads[thread_id]

    async def save_thread(self, thread: ThreadMetadata, context: dict) -> None:
        self.threads[thread.id] = thread
        self.items.setdefault(thread.id, [])

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: dict
    ) -> Page[ThreadItem]:
        items = list(self.items.get(thread_id, []))
        if order == "desc":
            items.reverse()
        return Page(data=items[:limit], has_more=len(items) > limit)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: dict) -> None:
        self.items.setdefault(thread_id, []).append(item)

    async def save_item(self, thread_id: str, item: ThreadItem, context: dict) -> None:
        items = self.items.setdefault(thread_id, [])
        for index, existing in enumerate(items):
            if existing.id == item.id:
                items[index] = item
                return
        items.append(item)

    async def load_item(self, thread_id: str, item_id: str, context: dict) -> ThreadItem:
        for item in self.items.get(thread_id, []):
            if item.id == item_id:
                return item
        raise NotFoundError(item_id)

    async def load_threads(self, limit, after, order, context) -> Page[ThreadMetadata]:
        return Page(data=list(self.threads.values())[:limit], has_more=False)

    async def delete_thread(self, thread_id: str, context: dict) -> None:
        self.threads.pop(thread_id, None)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: dict) -> None:
        pass

    async def save_attachment(self, attachment, context: dict) -> None:
        raise NotImplementedError

    async def load_attachment(self, attachment_id: str, context: dict):
        raise NotImplementedError

    async def delete_attachment(self, attachment_id: str, context: dict) -> None:
        raise NotImplementedError


class FloorServer(ChatKitServer[dict]):
    """An Agents SDK agent with one OpenAI client for all conversations (the cheapest setup)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(MemoryStore())
        client = AsyncOpenAI(base_url=base_url, api_key="sk-stand-in", max_retries=0)
        self.agent = Agent(
            name="floor",
            instructions="You answer briefly.",
            model=OpenAIChatCompletionsModel(model="stand-in-model", openai_client=client),
        )

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: dict
    ) -> AsyncIterator[ThreadStreamEvent]:
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        history = await self.store.load_thread_items(thread.id, None, 100, "asc", context)
        agent_input = await ThreadItemConverter().to_agent_input(history.data)
        result = Runner.run_streamed(self.agent, agent_input, context=agent_context)
        async for event in stream_agent_response(agent_context, result):
            yield event


async def sdk_conversation(server: FloorServer, body: bytes) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    result = await server.process(body, {})
    assert isinstance(result, StreamingResult)
    async for chunk in result:
        if first is None and b"text_delta" in chunk:
            first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


def measure_sdk_floor(base_url: str, conversations: int) -> dict[str, float]:
    body = _json(create_request("bench"))

    async def run() -> dict[str, float]:
        server = FloorServer(base_url)
        for _ in range(10):
            await sdk_conversation(server, body)
        cpu = time.process_time()
        firsts = [(await sdk_conversation(server, body))[0] for _ in range(conversations)]
        return _summary(firsts, time.process_time() - cpu, conversations)

    return asyncio.run(run())


def measure_codexweb(base_url: str, conversations: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="codexweb-floor-") as folder:
        app = build_app(
            Path(folder), {"CODEX_AGENTS": model_agents(base_url), "CHATKIT_TOKEN_TTL": 7200}
        )
        caller = Caller(app)
        api = caller.api
        body = {"placement": "dashboard", "agent_id": "modelled"}
        session = api.post("/api/codex/sessions", json=body, headers=caller.bearer).get_json()
        minted = api.get(
            f"/api/codex/chatkit/token?session_id={session['session_id']}", headers=caller.bearer
        ).get_json()
        token = {"Authorization": f"Bearer {minted['token']}"}

        def conversation() -> float:
            started = time.perf_counter()
            first = None
            response = api.post("/chatkit", json=create_request("bench"), headers=token)
            # The test client runs the streamed body as it is read: read it chunk by chunk.
            for chunk in response.response:
                if first is None and b"text_delta" in chunk:
                    first = time.perf_counter() - started
            response.close()
            return first or 0.0

        for _ in range(10):
            conversation()
        cpu = time.process_time()
        firsts = [conversation() for _ in range(conversations)]
        return _summary(firsts, time.process_time() - cpu, conversations)


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def _summary(firsts: list[float], cpu: float, count: int) -> dict[str, float]:
    return {
        "first_p50": round(statistics.median(firsts) * 1000, 1),
        "cpu": round(cpu * 1000 / count, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    model = subprocess.Popen(
        [sys.executable, "-c", MODEL_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        base_url = model.stdout.readline().strip()
        rows: dict[str, list[dict[str, float]]] = {"SDKs only": [], "codexweb": []}
        for _ in range(args.rounds):  # alternated, so both see the same machine
            rows["SDKs only"].append(measure_sdk_floor(base_url, args.conversations))
            rows["codexweb"].append(measure_codexweb(base_url, args.conversations))
    finally:
        model.stdin.close()
        model.wait(timeout=10)
    print("| path | first text delta p50 ms | CPU ms per conversation |")
    print("| --- | ---: | ---: |")
    for name, runs in rows.items():
        first = statistics.median(run["first_p50"] for run in runs)
        cpu = statistics.median(run["cpu"] for run in runs)
        print(f"| {name} | {first} | {cpu} |")


if __name__ == "__main__":
    main()
