"""Server CPU per request without gunicorn or the network: Flask's test client, in one process.

On a shared machine the gunicorn runs of `bench.run` follow whatever else is running; the CPU
this process spends (`time.process_time()`) over N requests hardly does. It prices the app's own
per-request work (what a change to the hot paths can move), not gunicorn's.

    python -m bench.inprocess                      # every path, median of 5 × 500 requests
    python -m bench.inprocess --only token --profile   # + cProfile of the path, top functions

Same settings as the gunicorn bench: SQLite file with codexweb's own pragmas, rate limits
evaluated on every request (`1000000/minute`, memory storage), JSON event lines (to a null
stream), `CODEX_SESSION_TOUCH_INTERVAL` at its default.

    python -m bench.inprocess --ratelimit-storage redis://127.0.0.1:6379/5   # limits in Redis
    python -m bench.inprocess --set RATELIMIT_ENABLED=false    # any config key (JSON values)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from codexweb import create_app
from codexweb.auth.accounts import create_user
from codexweb.auth.logins import LOGIN_SESSION_KEY, start_login
from codexweb.auth.tokens import issue_access_token
from codexweb.extensions import db
from codexweb.models import User
from codexweb.ratelimit_storage import describe_storage
from tests.runtime_support import create_request

LIMIT = "1000000/minute"
AGENT, PLACEMENT = "agent_123", "dashboard"


def build_app(folder: Path, overrides: dict[str, Any] | None = None) -> Flask:
    limits = ("LOGIN", "REGISTER", "RESEND", "PASSWORD_RESET", "SESSION_CREATE", "TOKEN")
    config = {
        "SECRET_KEY": "bench-secret-key",
        "DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
        "MAIL_BACKEND": "locmem",
        "MAIL_QUEUE": "manual",
        "CHATKIT_KEYS_DIR": str(folder / "keys"),
        "PUBLIC_BASE_URL": "http://localhost",
        "INSTANCE_PATH_FOR_TESTS": str(folder),
        "RATELIMIT_DEFAULT": LIMIT,
        **{f"RATELIMIT_{name}": LIMIT for name in limits},
        "ACCESS_TOKEN_TTL": 7200,
        # A full run outlasts the default 10 minutes, and one token serves every call.
        "CHATKIT_TOKEN_TTL": 7200,
        # The demo agent paces its words for people; here it would only add idle wall time.
        "CHATKIT_DEMO_WORD_DELAY": 0,
        "CHATKIT_MESSAGES_PER_MINUTE": 1_000_000,
        **(overrides or {}),
    }
    app = create_app(config)
    with app.app_context():
        db.create_all()
    # Event lines are formatted as in production, then dropped.
    for handler in logging.getLogger().handlers + logging.getLogger("codexweb").handlers:
        if hasattr(handler, "setStream"):
            handler.setStream(open("/dev/null", "w"))  # noqa: SIM115
    return app


class Caller:
    def __init__(self, app: Flask) -> None:
        with app.app_context():
            user = create_user("bench@example.com", "bench-password-123", verified=True)
            db.session.commit()
            self.user_id = user.id
            login = start_login(db.session.get(User, user.id), "api", user_agent="bench")
            browser = start_login(db.session.get(User, user.id), "browser", user_agent="bench")
            db.session.commit()
            self.bearer = {"Authorization": f"Bearer {issue_access_token(user.id, login.id)}"}
            browser_id = browser.id
        self.api = app.test_client()
        self.browser = app.test_client()
        with self.browser.session_transaction() as cookie:
            cookie.update({"_user_id": self.user_id, "_fresh": True, LOGIN_SESSION_KEY: browser_id})
        body = {"placement": PLACEMENT, "agent_id": AGENT}
        created = self.api.post("/api/codex/sessions", json=body, headers=self.bearer)
        self.session_id = created.get_json()["session_id"]


def scenarios(caller: Caller) -> dict[str, Callable[[], None]]:
    api, bearer = caller.api, caller.bearer

    def get(client: FlaskClient, path: str, **kwargs) -> Callable[[], None]:
        def run() -> None:
            response = client.get(path, **kwargs)
            assert response.status_code == 200, response.get_data(as_text=True)

        return run

    def cycle() -> None:
        body = {"placement": "developer-workbench", "agent_id": AGENT}
        created = api.post("/api/codex/sessions", json=body, headers=bearer)
        assert created.status_code == 201, created.get_data(as_text=True)
        session_id = created.get_json()["session_id"]
        closed = api.post(f"/api/codex/sessions/{session_id}/close", headers=bearer)
        assert closed.status_code == 200

    minted = api.get(f"/api/codex/chatkit/token?session_id={caller.session_id}", headers=bearer)
    chatkit_bearer = {"Authorization": f"Bearer {minted.get_json()['token']}"}

    def runtime_list() -> None:
        body = {"type": "threads.list", "params": {}}
        response = api.post("/chatkit", json=body, headers=chatkit_bearer)
        assert response.status_code == 200, response.get_data(as_text=True)

    def runtime_message() -> None:
        body = create_request("How fast is this?")
        response = api.post("/chatkit", json=body, headers=chatkit_bearer)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert b"thread.item.done" in response.get_data()

    return {
        "healthz": get(api, "/healthz"),
        "message": runtime_message,  # a new thread, the demo agent's reply streamed and stored
        "chatkit": runtime_list,  # the runtime's per-request work: token check, loop, store
        "current": get(
            api,
            f"/api/codex/sessions/current?placement={PLACEMENT}&agent_id={AGENT}",
            headers=bearer,
        ),
        "token": get(
            api, f"/api/codex/chatkit/token?session_id={caller.session_id}", headers=bearer
        ),
        "cycle": cycle,  # two requests per call
        "page": get(caller.browser, "/codex/chatkit"),
    }


def describe_limits(app: Flask) -> str:
    if not app.config["RATELIMIT_ENABLED"]:
        return "disabled"
    return describe_storage(app.config["RATELIMIT_STORAGE_URI"])


def config_item(item: str) -> tuple[str, Any]:
    key, _, text = item.partition("=")
    try:
        return key, json.loads(text)
    except ValueError:
        return key, text


def measure(run: Callable[[], None], requests: int, repeats: int) -> tuple[float, float]:
    """Median CPU ms and wall-clock ms per call over `repeats` batches of `requests` calls.

    Wall time adds what CPU leaves out, such as waiting for Redis, but it also follows the
    machine's load."""
    for _ in range(min(100, requests)):
        run()
    cpu, wall = [], []
    for _ in range(repeats):
        start, started = time.process_time(), time.perf_counter()
        for _ in range(requests):
            run()
        cpu.append((time.process_time() - start) * 1000 / requests)
        wall.append((time.perf_counter() - started) * 1000 / requests)
    return statistics.median(cpu), statistics.median(wall)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="healthz,current,token,cycle,page,chatkit,message")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile each path once")
    parser.add_argument(
        "--ratelimit-storage",
        metavar="URI",
        help="RATELIMIT_STORAGE_URI, e.g. redis://127.0.0.1:6379/5 (default: memory://)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key for the app (value parsed as JSON when it can be, as from env)",
    )
    args = parser.parse_args(argv)
    overrides = dict(config_item(item) for item in args.set)
    if args.ratelimit_storage:
        overrides["RATELIMIT_STORAGE_URI"] = args.ratelimit_storage
    with tempfile.TemporaryDirectory(prefix="codexweb-inprocess-") as folder:
        app = build_app(Path(folder), overrides)
        print(f"rate limits: {describe_limits(app)}")
        runs = scenarios(Caller(app))
        for name in args.only.split(","):
            cpu, wall = measure(runs[name], args.requests, args.repeats)
            print(
                f"{name:8} {cpu:6.3f} ms CPU per call, {wall:6.3f} ms wall"
                f" (median of {args.repeats} × {args.requests})"
            )
            if args.profile:
                profile = cProfile.Profile()
                run = runs[name]
                profile.runcall(lambda: [run() for _ in range(args.requests)])  # noqa: B023
                out = io.StringIO()
                stats = pstats.Stats(profile, stream=out)
                print(f"  {stats.total_calls / args.requests:.0f} Python calls per call")
                stats.sort_stats("cumulative").print_stats(40)
                print(out.getvalue())
        sys.stdout.flush()


if __name__ == "__main__":
    main()
