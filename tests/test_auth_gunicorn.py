"""The whole accounts flow once through a real gunicorn, as a browser and an API client."""

from __future__ import annotations

import email
import email.policy
import time

import httpx
import pytest

from tests.auth_support import STRONG_PASSWORD, form_csrf_token, link_token
from tests.servers import serve_gunicorn

pytestmark = pytest.mark.slow


def read_outbox(server, count: int) -> list:
    """The first `count` messages, once the worker's mail thread has delivered them."""
    outbox = server.instance_path / "outbox"
    deadline = time.monotonic() + 20
    while len(list(outbox.glob("*.eml"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(outbox.glob("*.eml"))
    ]


def test_register_verify_login_refresh_logout_under_gunicorn(tmp_path):
    with serve_gunicorn(tmp_path, workers=2) as server:
        browser = httpx.Client(base_url=server.url, timeout=10)
        form = browser.get("/register")
        assert form.status_code == 200
        registered = browser.post(
            "/register",
            data={
                "email": " Gunicorn@Example.com ",
                "password": STRONG_PASSWORD,
                "csrf_token": form_csrf_token(form.text),
            },
        )
        assert registered.status_code == 302
        assert registered.headers["location"] == "/verify-email"
        assert "Verify your email" in browser.get("/verify-email").text

        [message] = read_outbox(server, 1)
        assert message["To"] == "gunicorn@example.com"
        plain = message.get_body(("plain",)).get_content()
        assert "http://127.0.0.1/verify-email/" in plain  # PUBLIC_BASE_URL of the test server
        token = link_token(plain)
        verified = browser.get(f"/verify-email/{token}")
        assert verified.status_code == 302
        assert verified.headers["location"] == "/codex/chatkit"

        # The browser's refresh cookie yields Bearer tokens for its scripts.
        refreshed = browser.post("/api/auth/refresh")
        assert refreshed.status_code == 200
        assert refreshed.json()["email_verified"] is True

        api = httpx.Client(base_url=server.url, timeout=10)
        login = api.post(
            "/api/auth/login", json={"email": "gunicorn@example.com", "password": STRONG_PASSWORD}
        )
        assert login.status_code == 200
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert api.get("/api/auth/me", headers=bearer).json()["user"]["email_verified"] is True
        rotated = api.post("/api/auth/refresh")
        assert rotated.status_code == 200
        assert api.post("/api/auth/logout", headers=bearer).status_code == 204
        assert api.post("/api/auth/refresh").status_code == 401

        log = server.log()
        assert '"event": "auth.email.verified"' in log
        assert '"path": "/verify-email/[redacted]"' in log  # the JSON access log line
        for secret in (
            STRONG_PASSWORD,
            token,
            login.json()["access_token"],
            rotated.json()["access_token"],
        ):
            assert secret not in log
