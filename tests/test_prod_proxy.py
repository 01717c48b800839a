"""PROXY_FIX_COUNT: X-Forwarded-* are trusted from exactly that many proxies, and the rate
limits count per real client address behind them."""

from __future__ import annotations

import pytest
from flask import jsonify, request, url_for


def probed(app):
    """The app with a route that shows what it believes about the request."""

    @app.get("/_probe")
    def _probe():
        return jsonify(
            remote_addr=request.remote_addr,
            scheme=request.scheme,
            host=request.host,
            external=url_for("health.healthz", _external=True),
        )

    return app


FORWARDED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "codex.example.com",
}


def test_without_trusted_proxies_forwarded_headers_are_ignored(app_factory):
    app = probed(app_factory(PROXY_FIX_COUNT=0))
    seen = app.test_client().get(
        "/_probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": "10.0.0.2"}
    )
    assert seen.get_json() == {
        "remote_addr": "10.0.0.2",
        "scheme": "http",
        "host": "localhost",
        "external": "http://localhost/healthz",
    }


def test_one_trusted_proxy_gives_the_client_address_scheme_and_host(app_factory):
    app = probed(app_factory(PROXY_FIX_COUNT=1))
    seen = app.test_client().get(
        "/_probe", headers=FORWARDED, environ_base={"REMOTE_ADDR": "10.0.0.2"}
    )
    assert seen.get_json() == {
        "remote_addr": "203.0.113.7",
        "scheme": "https",
        "host": "codex.example.com",
        "external": "https://codex.example.com/healthz",
    }


def test_a_forged_forwarded_for_entry_is_not_believed(app_factory):
    # The client sends its own X-Forwarded-For; the one trusted proxy appends the address it
    # saw. Only that last entry counts.
    app = probed(app_factory(PROXY_FIX_COUNT=1))
    seen = app.test_client().get(
        "/_probe", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    )
    assert seen.get_json()["remote_addr"] == "203.0.113.7"


@pytest.mark.parametrize(
    ("count", "second_client_status"),
    [(1, 401), (0, 429)],  # behind the proxy: own budget; not trusted: one shared budget
)
def test_limits_count_per_forwarded_client(app_factory, count, second_client_status):
    app = app_factory(PROXY_FIX_COUNT=count, RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2/minute")
    client = app.test_client()

    def me(address: str) -> int:
        return client.get("/api/auth/me", headers={"X-Forwarded-For": address}).status_code

    assert [me("203.0.113.7") for _ in range(3)] == [401, 401, 429]
    assert me("203.0.113.8") == second_client_status
