"""A failure outside Flask's handlers (the teardown's rollback on a cut connection) still
answers through the app's error rendering, with the request's X-Request-ID (issue 12,
finding 4), and no log line quotes a token path."""

from __future__ import annotations

import logging

import pytest
from flask import g
from sqlalchemy.exc import OperationalError

from codexweb.logging import JsonFormatter


@pytest.fixture
def failing_teardown(app):
    """What a cut connection does at a request's end: the rollback raises (only inside
    requests: the fixtures' own clean-up pops app contexts too)."""

    @app.before_request
    def connection_cut_mid_request():
        g.connection_cut = True

    @app.teardown_appcontext
    def rollback_on_a_dead_connection(_error):
        if g.pop("connection_cut", False):
            raise OperationalError("ROLLBACK", {}, Exception("server closed the connection"))

    return app


def test_a_teardown_failure_is_a_503_problem_with_the_request_id(failing_teardown, client):
    response = client.get("/api/auth/me", headers={"X-Request-ID": "req-teardown-1"})
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "unavailable"
    assert response.headers["X-Request-ID"] == "req-teardown-1"
    assert response.headers["Cache-Control"] == "no-store"


def test_a_teardown_failure_on_a_page_is_the_html_error_page(failing_teardown, client):
    response = client.get("/login", headers={"Accept": "text/html"})
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert response.headers["X-Request-ID"]


def test_the_fault_is_logged_without_the_token_of_its_path(
    failing_teardown, client, events, caplog
):
    caplog.set_level(logging.INFO)
    token = "IjEyMyI.secret-reset-token"
    client.get(f"/reset-password/{token}")
    [event] = events.named("http.fault_outside_handlers")
    assert event["path"] == "/reset-password/[redacted]"
    assert event["error"] == "Exception"  # the driver error the test wrapped
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert lines and all(token not in line for line in lines)


def test_an_unexpected_error_logged_with_its_path_never_shows_the_token(app, client, caplog):
    @app.get("/verify-email/<token>/boom")
    def boom(token):
        raise RuntimeError("boom")

    caplog.set_level(logging.ERROR)
    client.get("/verify-email/live-token-value/boom")
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert any("unhandled exception" in line for line in lines)
    assert all("live-token-value" not in line for line in lines)
