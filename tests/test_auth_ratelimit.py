"""Rate limits of the accounts flow (CONTRACT.md §5): exact 429 problems and HTMX toasts."""

from __future__ import annotations

import json

import pytest

from tests.auth_support import (
    STRONG_PASSWORD,
    form_csrf_token,
    snapshot,
)
from tests.conftest import TEST_PASSWORD

WRONG = {"email": "owner@example.com", "password": "not the password at all"}


@pytest.fixture
def limited_app(app_factory):
    return app_factory(
        RATELIMIT_ENABLED=True,
        RATELIMIT_LOGIN="2/minute",
        RATELIMIT_REGISTER="1/hour",
        RATELIMIT_RESEND="1/hour",
        RATELIMIT_PASSWORD_RESET="1/hour",
    )


def assert_rate_limited(response, max_seconds: int) -> int:
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit()
    seconds = int(retry_after)
    assert 1 <= seconds <= max_seconds
    assert response.get_json() == {
        "type": "https://codexweb.dev/problems/rate_limited",
        "title": "Too many requests",
        "status": 429,
        "detail": f"Codex is busy, please retry in {seconds} seconds",
        "code": "rate_limited",
        "retry_after": seconds,
    }
    return seconds


def test_login_is_limited_with_an_exact_problem(limited_app, events):
    client = limited_app.test_client()
    for _ in range(2):
        assert client.post("/api/auth/login", json=WRONG).status_code == 401
    assert_rate_limited(client.post("/api/auth/login", json=WRONG), 60)
    [event] = events.named("http.rate_limited")
    assert event["path"] == "/api/auth/login"


def test_the_login_page_and_the_api_share_one_budget(limited_app):
    client = limited_app.test_client()
    assert client.post("/api/auth/login", json=WRONG).status_code == 401
    html = client.get("/login").get_data(as_text=True)
    page = client.post("/login", data={**WRONG, "csrf_token": form_csrf_token(html)})
    assert page.status_code == 200
    csrf = {"X-CSRFToken": form_csrf_token(html)}  # the browser now holds a session cookie
    assert_rate_limited(client.post("/api/auth/login", json=WRONG, headers=csrf), 60)


def test_an_htmx_login_gets_the_toast(limited_app):
    client = limited_app.test_client()
    html = client.get("/login").get_data(as_text=True)
    data = {**WRONG, "csrf_token": form_csrf_token(html)}
    for _ in range(2):
        client.post("/login", data=data)
    response = client.post("/login", data=data, headers={"HX-Request": "true"})
    assert response.status_code == 429
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= 60
    assert json.loads(response.headers["HX-Trigger"]) == {
        "codexweb:toast": {
            "message": f"Codex is busy, please retry in {seconds} seconds",
            "level": "error",
        }
    }


def test_a_limited_browser_gets_a_page(limited_app):
    client = limited_app.test_client()
    html = client.get("/login").get_data(as_text=True)
    data = {**WRONG, "csrf_token": form_csrf_token(html)}
    for _ in range(2):
        client.post("/login", data=data)
    response = client.post("/login", data=data)
    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert "Codex is busy, please retry in" in response.get_data(as_text=True)
    assert response.headers["Retry-After"].isdigit()


def test_successful_responses_carry_no_retry_after(limited_app):
    response = limited_app.test_client().post("/api/auth/login", json=WRONG)
    assert response.status_code == 401
    assert "Retry-After" not in response.headers


def test_viewing_the_login_page_costs_nothing(limited_app):
    client = limited_app.test_client()
    for _ in range(5):
        assert client.get("/login").status_code == 200


def test_register_is_limited_and_the_limited_request_creates_nothing(limited_app):
    client = limited_app.test_client()
    body = {"email": "first@example.com", "password": STRONG_PASSWORD}
    assert client.post("/api/auth/register", json=body).status_code == 201
    before = snapshot(limited_app)
    second = client.post(
        "/api/auth/register", json={"email": "second@example.com", "password": STRONG_PASSWORD}
    )
    assert_rate_limited(second, 3600)
    assert snapshot(limited_app) == before


def test_resend_is_limited(limited_app):
    client = limited_app.test_client()
    body = {"email": "someone@example.com"}
    assert client.post("/api/auth/verify-email/resend", json=body).status_code == 202
    assert_rate_limited(client.post("/api/auth/verify-email/resend", json=body), 3600)


def test_password_forgot_and_reset_share_a_limit(limited_app):
    client = limited_app.test_client()
    forgot = client.post("/api/auth/password/forgot", json={"email": "someone@example.com"})
    assert forgot.status_code == 202
    reset = client.post(
        "/api/auth/password/reset", json={"token": "whatever", "password": STRONG_PASSWORD}
    )
    assert_rate_limited(reset, 3600)


def test_limits_count_per_address(limited_app):
    first = limited_app.test_client()
    for _ in range(3):
        first.post("/api/auth/login", json=WRONG)
    other = limited_app.test_client()
    response = other.post(
        "/api/auth/login",
        json={"email": "owner@example.com", "password": TEST_PASSWORD},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert response.status_code == 401  # not 429: another address has its own budget
