"""Floors: what the work itself costs on the stack codexweb must use, under issue 16's targets.

A ratio target can only be read against the least any implementation would cost. Two floors:

**Runtime** (`python -m bench.floor runtime [--conversations 40]`, the default). The first
streamed token (instant model) has a 15 ms target. Part of that time is codexweb's (the token
check, the database store, limits, logging) and part is the ChatKit server SDK's and the Agents
SDK's, which the runtime must use. In one process and one run, on the same loopback stand-in
model (in a process of its own):

- **SDKs only**: `ChatKitServer.process(threads.create)` with an in-memory store, an Agents SDK
  agent on one long-lived event loop and one shared OpenAI client: no Flask, no database, no
  token, no limits. Nothing codexweb adds could make its own path faster than this.
- **codexweb**: the same request through `POST /chatkit` (Flask's test client, the SQLite
  store, a real ChatKit token), as `bench.inprocess` runs its paths.

Both report the time from the request to the first text delta and the CPU of a whole
conversation; their ratio is what carries over to another machine.

**API** (`python -m bench.floor api [--rounds 3 --seconds 5]`). The token and `/current`
targets against `bench/floor_app.py`, each endpoint's own work on the DB-API and nothing else
(see its docstring), under the same `gunicorn.conf.py`, on the same seeded SQLite database (1k
sessions) and with the same wrk requests as codexweb's scenarios; bare Flask is measured in
the same rounds. Reports req/s, server CPU per request, and both as ratios to bare Flask.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import Page, ThreadItem, ThreadMetadata, ThreadStreamEvent, UserMessageItem
from openai import AsyncOpenAI

from bench.inprocess import Caller, build_app
from tests.codex_support import new_session
from tests.runtime_support import chatkit_token, create_request, model_agents

set_tracing_disabled(True)
REPO = Path(__file__).resolve().parent.parent

MODEL_SERVER = """
import sys
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


async def sdk_conversation(server: FloorServer, body: bytes) -> float:
    """Seconds to the first text delta of one `threads.create`, its stream read to the end."""
    started = time.perf_counter()
    first = None
    result = await server.process(body, {})
    assert isinstance(result, StreamingResult)
    async for chunk in result:
        if first is None and b"text_delta" in chunk:
            first = time.perf_counter() - started
    return first or 0.0


def measure_sdk_floor(base_url: str, conversations: int) -> dict[str, float]:
    body = json.dumps(create_request("bench")).encode()

    async def run() -> dict[str, float]:
        server = FloorServer(base_url)
        for _ in range(10):
            await sdk_conversation(server, body)
        cpu = time.process_time()
        firsts = [await sdk_conversation(server, body) for _ in range(conversations)]
        return _summary(firsts, time.process_time() - cpu, conversations)

    return asyncio.run(run())


def measure_codexweb(base_url: str, conversations: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="codexweb-floor-") as folder:
        app = build_app(
            Path(folder), {"CODEX_AGENTS": model_agents(base_url), "CHATKIT_TOKEN_TTL": 7200}
        )
        caller = Caller(app)
        api = caller.api
        session = new_session(api, caller.bearer, agent_id="modelled")
        token = chatkit_token(api, caller.bearer, session["session_id"])

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


def _summary(firsts: list[float], cpu: float, count: int) -> dict[str, float]:
    return {
        "first_p50": round(statistics.median(firsts) * 1000, 1),
        "cpu": round(cpu * 1000 / count, 1),
    }


def runtime_floor(args: argparse.Namespace) -> None:
    model = subprocess.Popen(
        [sys.executable, "-c", MODEL_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
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


# The API endpoints -----------------------------------------------------------------------

API_SCENARIOS = ("token", "current")


def api_floor(args: argparse.Namespace) -> None:
    from bench import run, wrk
    from bench.servers import GunicornSettings

    bench_args = run.parse_args(["--scales", "1000", "--only", ",".join(API_SCENARIOS)])
    plan = run.plan_from(bench_args)
    gunicorn = GunicornSettings(
        workers=bench_args.workers, worker_class=bench_args.worker_class, threads=bench_args.threads
    )
    load = wrk.Load(threads=plan.threads, connections=plan.connections, seconds=args.seconds)
    workdir = Path(tempfile.mkdtemp(prefix="codexweb-floor-"))
    try:
        results = _measure_api_floor(args, bench_args, plan, gunicorn, load, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for key, rows in results.items():
        print(f"\n{key}\n")
        print_api_table(rows)


def _measure_api_floor(args, bench_args, plan, gunicorn, load, workdir: Path) -> dict:
    from bench import run, scenarios, wrk
    from bench.seed import PASSWORD
    from bench.servers import Fleet, baseline_env, start_gunicorn

    chosen = [s for s in scenarios.SCENARIOS if s.key in API_SCENARIOS]
    with Fleet() as fleet:
        baseline = fleet.server(
            start_gunicorn("baseline", "bench.baseline:app", baseline_env(gunicorn), workdir, "/")
        )
        target = run.start_target(
            1000,
            plan,
            bench_args,
            workdir,
            fleet,
            gunicorn,
            "memory://",
            run.hash_password(PASSWORD),
        )
        for scenario in chosen:
            run.prepare_one(scenario, target, workdir)
        database = target.app.config["DATABASE_URL"].removeprefix("sqlite:///")
        floor_env = {
            **baseline_env(gunicorn),
            "FLOOR_DATABASE": database,
            "FLOOR_SECRET_KEY": target.app.config["SECRET_KEY"],
        }
        floor = fleet.server(
            start_gunicorn("floor", "bench.floor_app:app", floor_env, workdir, "/healthz")
        )
        baseline_data = scenarios.write_lines(workdir / "baseline.tsv", scenarios.baseline_lines())
        runs: dict[str, dict] = {}
        for scenario in chosen:
            data = target.data[scenario.key]
            scenarios.probe(floor.url, data.read_text().splitlines()[0])
            runs[scenario.key] = {
                "bare Flask": (baseline, baseline_data, baseline.url + "/"),
                "codexweb": (target.server, data, target.health_url),
                "floor": (floor, data, floor.url + "/healthz"),
            }
        warm = wrk.Load(load.threads, load.connections, 1)
        for servers in runs.values():
            for server, lines, drain in servers.values():
                run.metered(server, "requests.lua", lines, warm, [], drain)
        results = {key: {name: [] for name in servers} for key, servers in runs.items()}
        for round_ in range(args.rounds):
            for key, servers in runs.items():
                for name, (server, lines, drain) in servers.items():
                    measured = run.metered(server, "requests.lua", lines, load, [], drain)
                    results[key][name].append(measured)
            run.log(f"round {round_ + 1}/{args.rounds} done")
    return results


def print_api_table(results: dict[str, list]) -> None:
    base = results["bare Flask"]
    print(
        "| app | req/s | server CPU ms/req | req/s ÷ bare Flask | CPU: bare Flask ÷ app | errors |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        cpu = statistics.median(r.server_cpu_ms for r in runs)
        ratio = statistics.median(r.rps / b.rps for r, b in zip(runs, base, strict=True))
        cpu_ratio = statistics.median(
            b.server_cpu_ms / r.server_cpu_ms for r, b in zip(runs, base, strict=True)
        )
        errors = sum(r.errors for r in runs)
        print(f"| {name} | {rps:.0f} | {cpu:.2f} | {ratio:.2f} | {cpu_ratio:.2f} | {errors} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("runtime", "api"), nargs="?", default="runtime")
    parser.add_argument("--conversations", type=int, default=40, help="runtime: per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="api: one wrk measurement")
    args = parser.parse_args(argv)
    if args.what == "api":
        api_floor(args)
    else:
        runtime_floor(args)


if __name__ == "__main__":
    main()
