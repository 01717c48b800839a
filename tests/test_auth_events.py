"""Structured events of the accounts flow (CONTRACT.md §7), and no secret in any log line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from codexweb.auth.redaction import TokenPathFilter, redact_token_paths
from codexweb.logging import JsonFormatter, TextFormatter
from tests.auth_support import (
    STRONG_PASSWORD,
    link_token,
    login_json,
    refresh_cookie,
    user_row,
)


def run_whole_flow(client, outbox) -> dict[str, str]:
    """register → verify → login → refresh → forgot → reset → login → logout; the secrets."""
    email = "flow@example.com"
    assert (
        client.post("/api/auth/register", json={"email": email, "password": STRONG_PASSWORD})
    ).status_code == 201
    verification = link_token(outbox[-1])
    assert client.post("/api/auth/verify-email", json={"token": verification}).status_code == 200
    login = login_json(client, email, STRONG_PASSWORD).get_json()
    first_refresh = refresh_cookie(client)
    refreshed = client.post("/api/auth/refresh").get_json()
    assert client.post("/api/auth/password/forgot", json={"email": email}).status_code == 202
    reset = link_token(outbox[-1], "reset-password")
    new_password = "the second passphrase"
    assert (
        client.post("/api/auth/password/reset", json={"token": reset, "password": new_password})
    ).status_code == 200
    assert login_json(client, email, "a wrong password!!").status_code == 401
    last = login_json(client, email, new_password).get_json()
    bearer = {"Authorization": f"Bearer {last['access_token']}"}
    assert client.post("/api/auth/logout", headers=bearer).status_code == 204
    return {
        "password": STRONG_PASSWORD,
        "new password": new_password,
        "access token": login["access_token"],
        "refreshed access token": refreshed["access_token"],
        "refresh token": first_refresh,
        "verification token": verification,
        "reset token": reset,
        "last access token": last["access_token"],
    }


def test_the_flow_emits_each_auth_event_with_the_user_id(client, app, outbox, events):
    run_whole_flow(client, outbox)
    user_id = user_row(app, "flow@example.com").id
    expected = [
        "auth.user.registered",
        "auth.email.verification_sent",
        "auth.email.verified",
        "auth.login.succeeded",
        "auth.token.refreshed",
        "auth.password.reset_requested",
        "auth.password.reset",
        "auth.login.failed",
        "auth.logout",
    ]
    for name in expected:
        found = events.named(name)
        assert found, name
        assert all(event["user_id"] == user_id for event in found), name
    assert events.named("auth.login.failed")[0]["reason"] == "wrong_password"
    assert events.named("auth.login.succeeded")[0]["via"] == "api"


def test_no_log_line_of_the_whole_flow_holds_a_secret(client, app, outbox, events, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = run_whole_flow(client, outbox)
    json_lines = [JsonFormatter().format(record) for record in caplog.records]
    text_lines = [TextFormatter().format(record) for record in caplog.records]
    assert len(json_lines) >= 10
    for line in json_lines + text_lines + events.lines():
        for name, secret in secrets.items():
            assert secret not in line, f"{name} leaked into {line}"
        assert "/verify-email/" not in line and "/reset-password/" not in line


def test_reuse_detection_and_failed_logins_are_warnings(client, app, user, events, frozen_clock):
    frozen_clock(datetime(2030, 1, 1, tzinfo=UTC))
    login_json(client, "owner@example.com", "definitely wrong")
    login_json(client, "owner@example.com", "correct horse battery staple")
    stolen = refresh_cookie(client)
    client.post("/api/auth/refresh")
    frozen_clock(datetime(2030, 1, 1, 0, 1, tzinfo=UTC))  # past the grace of two tabs
    client.set_cookie("refresh_token", stolen, path="/api/auth")
    client.post("/api/auth/refresh")
    assert events.named("auth.login.failed")[0]["level"] == "warning"
    [reuse] = events.named("auth.refresh.reuse_detected")
    assert reuse["level"] == "warning"
    assert reuse["user_id"] == user.id
    assert reuse["login_id"].startswith("lgn_")


def test_an_unknown_email_is_logged_without_the_address(client, events):
    login_json(client, "Stranger@Example.com", "whatever it is")
    [failed] = events.named("auth.login.failed")
    assert failed["user_id"] is None
    assert failed["reason"] == "unknown_email"
    assert "stranger" not in str(failed).lower()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '"GET /verify-email/abc.DEF-1_x HTTP/1.1" 302',
            '"GET /verify-email/[redacted] HTTP/1.1" 302',
        ),
        ("POST /reset-password/tok.en?x=1", "POST /reset-password/[redacted]?x=1"),
        ("POST /verify-email/resend HTTP/1.1", "POST /verify-email/resend HTTP/1.1"),
        ("POST /api/auth/verify-email/resend", "POST /api/auth/verify-email/resend"),
        ("GET /verify-email/resendXYZ", "GET /verify-email/[redacted]"),
        ("GET /verify-email HTTP/1.1", "GET /verify-email HTTP/1.1"),
    ],
)
def test_access_log_lines_lose_the_tokens_of_emailed_links(line, expected):
    assert redact_token_paths(line) == expected


def test_the_dev_server_request_log_is_redacted(app):
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '%s - - "%s" %s',
        ("127.0.0.1", "GET /reset-password/s3cr3t HTTP/1.1", "302"),
        None,
    )
    assert any(isinstance(f, TokenPathFilter) for f in logging.getLogger("werkzeug").filters)
    TokenPathFilter().filter(record)
    assert "s3cr3t" not in record.getMessage()
