"""`/metrics` (CONTRACT.md §8): off by default, only for METRICS_ALLOW addresses (as the app
sees them behind ProxyFix), counters that move with what users do, and under gunicorn with 2
workers counts that add up to the requests sent."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import REGISTRY

from tests.codex_support import new_session
from tests.servers import serve_gunicorn, spread_over_workers

ENABLED = {"METRICS_ENABLED": True}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (labels in any order)."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if found == labels:
            return float(match.group(4))
    return 0.0


def json_line(line: str) -> dict:
    try:
        entry = json.loads(line)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def test_metrics_are_off_by_default(client):
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize("config_overrides", [ENABLED])
def test_loopback_may_scrape_and_counts_show_route_templates(client, user, auth_headers):
    headers = auth_headers(user)
    before = sample(
        "codexweb_http_requests_total",
        route="/api/codex/sessions/<session_id>",
        method="GET",
        status="404",
    )
    client.get("/api/codex/sessions/cxs_nope", headers=headers)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    after = scrape_value(
        response.get_data(as_text=True),
        "codexweb_http_requests_total",
        route="/api/codex/sessions/<session_id>",
        method="GET",
        status="404",
    )
    assert after == before + 1


@pytest.mark.parametrize(
    "config_overrides", [{**ENABLED, "METRICS_ALLOW": ["10.0.0.0/8"], "PROXY_FIX_COUNT": 1}]
)
def test_only_allowed_addresses_as_the_app_sees_them(client):
    assert client.get("/metrics").status_code == 404  # 127.0.0.1 is not in 10/8 here
    allowed = client.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    assert allowed.status_code == 200
    refused = client.get("/metrics", headers={"X-Forwarded-For": "192.0.2.7"})
    assert refused.status_code == 404
    assert b"codexweb_" not in refused.data


@pytest.mark.parametrize("config_overrides", [{**ENABLED, "RATELIMIT_ENABLED": True}])
def test_tokens_rate_limits_and_active_sessions_are_counted(client, user, auth_headers, app):
    app.config["RATELIMIT_TOKEN"] = "2/minute"
    headers = auth_headers(user)
    minted = sample("codexweb_chatkit_tokens_minted_total", provider="local")
    limited = sample("codexweb_rate_limited_total", route="/api/codex/chatkit/token")
    session = new_session(client, headers)
    statuses = [
        client.get(
            f"/api/codex/chatkit/token?session_id={session['session_id']}", headers=headers
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        scrape_value(text, "codexweb_chatkit_tokens_minted_total", provider="local") == minted + 2
    )
    assert (
        scrape_value(text, "codexweb_rate_limited_total", route="/api/codex/chatkit/token")
        == limited + 1
    )
    assert scrape_value(text, "codexweb_codex_sessions_active") == 1


def test_the_runtime_hooks_record_streams_and_model_latency():
    from codexweb import metrics

    streaming = sample("codexweb_chatkit_streams_active")
    first_tokens = sample("codexweb_chatkit_model_first_token_seconds_count")
    failures = sample("codexweb_chatkit_model_failures_total", reason="timeout")
    metrics.stream_started()
    assert sample("codexweb_chatkit_streams_active") == streaming + 1
    metrics.model_first_token(0.4)
    metrics.model_failed("timeout")
    metrics.stream_finished()
    assert sample("codexweb_chatkit_streams_active") == streaming
    assert sample("codexweb_chatkit_model_first_token_seconds_count") == first_tokens + 1
    assert sample("codexweb_chatkit_model_failures_total", reason="timeout") == failures + 1


@pytest.mark.slow
def test_two_workers_counts_add_up_to_the_requests_sent(tmp_path):
    env = {
        "CODEXWEB_METRICS_ENABLED": "true",
        "CODEXWEB_RATELIMIT_ENABLED": "false",
        # Sync workers: `spread_over_workers` then puts a request in each worker for sure.
        "GUNICORN_WORKER_CLASS": "sync",
    }
    with serve_gunicorn(tmp_path, workers=2, env=env) as server:
        responses = spread_over_workers(server.url, "/healthz", workers=2, rounds=15)
        missing = spread_over_workers(server.url, "/no-such-page", workers=2, rounds=2)
        text = spread_over_workers(server.url, "/metrics", workers=1, rounds=1)[0].body.decode()
        log = server.log()
    assert [response.status for response in responses] == [200] * 30
    assert [response.status for response in missing] == [404] * 4
    access = [
        entry for entry in map(json_line, log.splitlines()) if entry.get("path") == "/healthz"
    ]
    assert len({entry["worker_pid"] for entry in access}) == 2, "both workers served /healthz"
    # serve_gunicorn's own readiness probes asked /healthz too; they count as well.
    probes = len(access) - 30
    healthz = scrape_value(
        text, "codexweb_http_requests_total", route="/healthz", method="GET", status="200"
    )
    assert healthz == 30 + probes
    assert (
        scrape_value(
            text, "codexweb_http_request_duration_seconds_count", route="/healthz", method="GET"
        )
        == 30 + probes
    )
    assert (
        scrape_value(
            text, "codexweb_http_requests_total", route="<unmatched>", method="GET", status="404"
        )
        == 4
    )
