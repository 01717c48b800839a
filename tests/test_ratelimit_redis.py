"""Rate limits shared through Redis, and what happens when Redis is down.

The unreachable-Redis tests point at a closed local port and need no Redis; the others use a
real Redis (a random database 1–15 and key prefix per test) and skip without one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from codexweb.extensions import limiter
from codexweb.ratelimit_storage import describe_storage, storage_options
from tests.servers import free_port, serve_gunicorn, spread_over_workers

CHEAP = "/api/auth/me"  # answers 401 to anonymous callers without touching the database
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def closed_port_redis(password: str = "") -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{free_port()}/3"


def limited_app(app_factory, storage_uri: str, limit: str = "3/minute", **overrides):
    return app_factory(
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI=storage_uri,
        RATELIMIT_DEFAULT=limit,
        **overrides,
    )


# Redis unreachable -----------------------------------------------------------------------


def test_fail_open_lets_requests_through_and_logs_once_per_interval(
    app_factory, events, frozen_clock
):
    app = limited_app(
        app_factory,
        closed_port_redis(),
        limit="1/minute",
        RATELIMIT_STORAGE_RETRY_INTERVAL=5,
        RATELIMIT_STORAGE_ALERT_INTERVAL=60,
    )
    client = app.test_client()

    def statuses(count: int) -> list[int]:
        return [client.get(CHEAP).status_code for _ in range(count)]

    frozen_clock(T0)
    assert statuses(4) == [401] * 4  # far past the 1/minute limit, none refused
    assert [e["failures"] for e in events.named("ratelimit.storage_unavailable")] == [1]

    frozen_clock(T0 + timedelta(seconds=6))  # retry interval over: Redis is tried again
    assert statuses(3) == [401] * 3
    assert len(events.named("ratelimit.storage_unavailable")) == 1  # within the alert interval

    frozen_clock(T0 + timedelta(seconds=61))
    assert statuses(1) == [401]
    reported = events.named("ratelimit.storage_unavailable")
    assert [e["failures"] for e in reported] == [1, 2]
    assert reported[-1]["level"] == "warning"
    assert reported[-1]["fail_open"] is True
    assert reported[-1]["error"] == "ConnectionError"


def test_the_event_never_shows_the_redis_password(app_factory, events):
    uri = closed_port_redis(password="hunter2-secret")
    app = limited_app(app_factory, uri)
    assert app.test_client().get(CHEAP).status_code == 401
    (event,) = events.named("ratelimit.storage_unavailable")
    assert "hunter2" not in json.dumps(event)
    assert event["storage"] == describe_storage(uri) == uri.replace(":hunter2-secret@", "")


def test_fail_closed_refuses_with_503_and_no_driver_text(app_factory, events):
    app = limited_app(app_factory, closed_port_redis(), RATELIMIT_FAIL_OPEN=False)
    client = app.test_client()
    responses = [client.get(CHEAP) for _ in range(3)]
    for response in responses:
        assert response.status_code == 503
        assert response.mimetype == "application/problem+json"
        body = response.get_json()
        assert body["code"] == "unavailable"
        text = response.get_data(as_text=True).lower()
        for leak in ("redis", "connection refused", "error 111", "6379", "traceback"):
            assert leak not in text
    assert len(events.named("ratelimit.storage_unavailable")) == 1


def test_redis_gets_timeouts_and_every_storage_wraps_its_errors():
    redis_options = storage_options(
        {"RATELIMIT_STORAGE_URI": "redis://10.0.0.1:6379/1", "RATELIMIT_STORAGE_TIMEOUT": 0.25}
    )
    assert redis_options == {
        "wrap_exceptions": True,
        "socket_connect_timeout": 0.25,
        "socket_timeout": 0.25,
    }
    memory_options = storage_options(
        {"RATELIMIT_STORAGE_URI": "memory://", "RATELIMIT_STORAGE_TIMEOUT": 1}
    )
    assert memory_options == {"wrap_exceptions": True}


# Real Redis ------------------------------------------------------------------------------


def test_limits_count_in_redis_under_the_configured_prefix(app_factory, redis_namespace):
    app = limited_app(
        app_factory,
        redis_namespace.storage_uri,
        limit="3/minute",
        RATELIMIT_KEY_PREFIX=redis_namespace.key_prefix,
    )
    client = app.test_client()
    statuses = [client.get(CHEAP).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert redis_namespace.keys(), "no counter was written under the test's key prefix"


def test_a_limited_request_costs_one_redis_round_trip(app_factory, redis_namespace, monkeypatch):
    # The hit's answer also gives the X-RateLimit-* headers (ratelimit_storage.RedisFixedWindow):
    # without it each request also sent a GET and a TTL for them.
    app = limited_app(
        app_factory,
        redis_namespace.storage_uri,
        limit="5/minute",
        RATELIMIT_KEY_PREFIX=redis_namespace.key_prefix,
    )
    client = app.test_client()
    assert client.get(CHEAP).status_code == 401  # the first one also loads the script
    connection = limiter.storage.get_connection()
    commands: list[str] = []
    send = connection.execute_command

    def counted(*args, **options):
        commands.append(str(args[0]))
        return send(*args, **options)

    monkeypatch.setattr(connection, "execute_command", counted)
    responses = [client.get(CHEAP) for _ in range(5)]
    assert [response.status_code for response in responses] == [401] * 4 + [429]
    assert commands == ["EVALSHA"] * 5
    assert [response.headers["X-RateLimit-Remaining"] for response in responses] == [
        "3",
        "2",
        "1",
        "0",
        "0",
    ]


@pytest.mark.slow
def test_four_gunicorn_workers_admit_exactly_the_limit(tmp_path, redis_namespace):
    # With memory:// storage the same requests admit 4 × the limit (one count per worker):
    # `spread_over_workers` makes every worker serve a quarter of them.
    limit, workers, rounds = 7, 4, 12
    env = {
        "CODEXWEB_RATELIMIT_STORAGE_URI": redis_namespace.storage_uri,
        "CODEXWEB_RATELIMIT_KEY_PREFIX": redis_namespace.key_prefix,
        "CODEXWEB_RATELIMIT_DEFAULT": f"{limit}/minute",
    }
    with serve_gunicorn(tmp_path, workers=workers, env=env) as server:
        responses = spread_over_workers(server.url, CHEAP, workers=workers, rounds=rounds)
    statuses = sorted(response.status for response in responses)
    assert statuses == [401] * limit + [429] * (workers * rounds - limit)
    for response in responses:
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert json.loads(response.body)["code"] == "rate_limited"


@pytest.mark.slow
def test_gunicorn_with_redis_down_serves_and_logs_once_per_worker(tmp_path):
    workers = 2
    env = {
        "CODEXWEB_RATELIMIT_STORAGE_URI": closed_port_redis(),
        "CODEXWEB_RATELIMIT_DEFAULT": "1/minute",
        "CODEXWEB_RATELIMIT_STORAGE_RETRY_INTERVAL": "0",
        # Sync workers: `spread_over_workers` then puts a request in each worker for sure.
        "GUNICORN_WORKER_CLASS": "sync",
    }
    with serve_gunicorn(tmp_path, workers=workers, env=env) as server:
        responses = spread_over_workers(server.url, CHEAP, workers=workers, rounds=10)
        log = server.log()
    assert [response.status for response in responses] == [401] * 20
    reported = [
        entry
        for entry in map(parse_json_line, log.splitlines())
        if entry and entry.get("event") == "ratelimit.storage_unavailable"
    ]
    pids = [entry["worker_pid"] for entry in reported]
    assert len(reported) == workers  # both workers met the failure, each logged it once
    assert len(set(pids)) == len(pids), "a worker logged twice within one interval"
    assert "Traceback" not in log


def parse_json_line(line: str) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None
