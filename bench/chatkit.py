"""`make bench` (second part): the ChatKit runtime's own overhead through `POST /chatkit`.

codexweb under `gunicorn -c gunicorn.conf.py` (its defaults: 2 gthread workers) with one agent
on the loopback stand-in model (tests/model_server.py):

1. **Instant model**: the whole reply is ready at once, so the times are codexweb's: time to
   the first streamed text delta and to the end of the stream, for 1 conversation at a time
   and for 16 at once (`threads.create`: a new thread, the user message stored, the reply
   streamed and stored).
2. **Pages while 16 stream**: the stand-in streams slowly (about 4 s per reply); while 16
   conversations are open, `/healthz`, `/login` and `GET /api/codex/sessions` are fetched one
   after another and their latency recorded.

Prints a markdown table; `--quick` runs fewer rounds, `--db postgres` serves from a fresh
PostgreSQL database (dropped after) instead of SQLite. docs/PERFORMANCE.md reports the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.servers import DEFAULT_POSTGRES_ADMIN_URL, PostgresDatabase
from tests.model_server import ModelServer
from tests.runtime_support import create_request, model_agents
from tests.servers import REPO, VENV_BIN, serve_gunicorn

PASSWORD = "correct horse battery staple"
CONCURRENT = 16
SOLO_MESSAGES = 50


def log_in(server, email: str) -> dict[str, str]:
    subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", "users", "create", email]
        + ["--password", PASSWORD, "--verified"],
        cwd=REPO,
        env=server.env,
        check=True,
        capture_output=True,
    )
    login = httpx.post(server.url + "/api/auth/login", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def chatkit_token(server, owner: dict[str, str]) -> dict[str, str]:
    session = httpx.post(
        server.url + "/api/codex/sessions",
        json={"placement": "dashboard", "agent_id": "modelled"},
        headers=owner,
    ).json()
    minted = httpx.get(
        server.url + "/api/codex/chatkit/token",
        params={"session_id": session["session_id"]},
        headers=owner,
    ).json()
    return {"Authorization": f"Bearer {minted['token']}"}


def converse(client: httpx.Client, token: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first text delta, seconds to the end of the stream) of one message."""
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/chatkit", json=create_request("bench"), headers=token) as reply:
        for line in reply.iter_lines():
            if first is None and '"assistant_message.content_part.text_delta"' in line:
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def http_client(url: str) -> httpx.Client:
    """Made before any clock starts: building an httpx client loads the CA bundle (about
    50 ms on round 5's machine), which earlier rounds counted into every first token."""
    return httpx.Client(base_url=url, timeout=120)


def concurrently(count: int, url: str, task) -> list:
    """`task(client)` in `count` threads started together, each with its own client."""
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        with http_client(url) as client:
            barrier.wait()
            results[index] = task(client)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def measure_streams(server, token, rounds: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for count in (1, CONCURRENT):
        # One at a time: SOLO_MESSAGES in all, one after another on each round's connection
        # (the ChatKit component keeps its own), so the p50 is not that of five samples.
        in_turn = 1 if count > 1 else max(1, SOLO_MESSAGES // rounds)

        def replies(client: httpx.Client, in_turn: int = in_turn) -> list[tuple[float, float]]:
            return [converse(client, token) for _ in range(in_turn)]

        samples = []
        for _ in range(rounds):
            for each in concurrently(count, server.url, replies):
                samples += each
        firsts, totals = [s[0] for s in samples], [s[1] for s in samples]
        results[f"{count} at once"] = {
            "n": len(samples),
            "first_p50": ms(firsts, 0.5),
            "first_p95": ms(firsts, 0.95),
            "full_p50": ms(totals, 0.5),
            "full_p95": ms(totals, 0.95),
        }
    return results


def measure_pages_while_streaming(server, token, owner, model, repeats: int) -> dict[str, dict]:
    model.reply = " ".join(f"word{n}" for n in range(40))
    model.word_delay = 0.1
    before = len(model.chat_requests())
    streams = threading.Thread(
        target=concurrently,
        args=(CONCURRENT, server.url, lambda client: converse(client, token)),
    )
    streams.start()
    while len(model.chat_requests()) < before + CONCURRENT:
        time.sleep(0.05)
    latencies: dict[str, list[float]] = {"/healthz": [], "/login": [], "/api/codex/sessions": []}
    with http_client(server.url) as client:
        for _ in range(repeats):
            for path, samples in latencies.items():
                started = time.perf_counter()
                response = client.get(path, headers=owner if "api" in path else {})
                response.raise_for_status()
                samples.append(time.perf_counter() - started)
    streams.join()
    return {
        path: {"n": len(samples), "p50": ms(samples, 0.5), "max": ms(samples, 1.0)}
        for path, samples in latencies.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the codexweb server, as bench.run's",
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CODEXWEB_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL),
        help="a database on the server to create the bench database on (dropped after)",
    )
    args, _ = parser.parse_known_args(argv)  # `make bench ARGS=…` also carries bench.run's
    rounds, repeats = (2, 5) if args.quick else (5, 10)
    model = ModelServer().start()
    try:
        env = {
            "CODEXWEB_CODEX_AGENTS": json.dumps(model_agents(model.base_url)),
            "CODEXWEB_RATELIMIT_ENABLED": "false",
            **dict(item.split("=", 1) for item in args.set),
        }
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            if args.db == "postgres":  # else the instance folder's SQLite file
                database = PostgresDatabase(args.postgres_url)
                stack.callback(database.drop)
                env["CODEXWEB_DATABASE_URL"] = database.url
            server = stack.enter_context(serve_gunicorn(Path(tmp), env=env))
            owner = log_in(server, "bench-chatkit@example.com")
            token = chatkit_token(server, owner)
            concurrently(4, server.url, lambda client: converse(client, token))  # warm-up
            streams = measure_streams(server, token, rounds)
            pages = measure_pages_while_streaming(server, token, owner, model, repeats)
    finally:
        model.stop()
    print(f"#### /chatkit with an instant stand-in model ({args.db}, ms)\n")
    print("| conversations | messages | first token p50 | p95 | full reply p50 | p95 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in streams.items():
        print(
            f"| {name} | {row['n']} | {row['first_p50']} | {row['first_p95']} "
            f"| {row['full_p50']} | {row['full_p95']} |"
        )
    print(f"\n#### Latency while {CONCURRENT} conversations stream (ms)\n")
    print("| request | n | p50 | max |")
    print("| --- | --- | --- | --- |")
    for path, row in pages.items():
        print(f"| `GET {path}` | {row['n']} | {row['p50']} | {row['max']} |")


if __name__ == "__main__":
    main()
