"""Security headers on every response (CONTRACT.md §6, issue 4 item 6)."""

from __future__ import annotations

import pytest

from codexweb.security import chatkit_origins, content_security_policy


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


@pytest.mark.parametrize("path", ["/login", "/healthz", "/static/app.css", "/no-such-page"])
def test_every_response_carries_the_security_headers(client, path):
    response = client.get(path)
    assert "Content-Security-Policy" in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "HX-Request" in response.headers["Vary"]


def test_the_policy_allows_only_this_origin_without_chatkit(client):
    policy = directives(client.get("/login").headers["Content-Security-Policy"])
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"  # no 'unsafe-inline': the pages have none
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["frame-src"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["form-action"] == "'self'"


def test_the_configured_chatkit_origins_join_the_policy(app_factory):
    app = app_factory(
        CHATKIT_SCRIPT_URL="https://cdn.platform.openai.com/deployments/chatkit/chatkit.js",
        CHATKIT_CSP_ORIGINS=["https://api.openai.com/", "https://cdn.platform.openai.com"],
    )
    assert chatkit_origins(app) == ["https://cdn.platform.openai.com", "https://api.openai.com"]
    policy = directives(app.test_client().get("/login").headers["Content-Security-Policy"])
    both = "'self' https://cdn.platform.openai.com https://api.openai.com"
    assert policy["script-src"] == both
    assert policy["connect-src"] == both
    assert policy["frame-src"] == "https://cdn.platform.openai.com https://api.openai.com"
    assert policy["default-src"] == "'self'"


def test_extra_origins_are_ignored_without_a_chatkit_script(app_factory):
    app = app_factory(CHATKIT_CSP_ORIGINS=["https://api.openai.com"])
    assert chatkit_origins(app) == []
    assert "openai" not in content_security_policy(app)


def test_html_is_never_stored_by_caches(client):
    response = client.get("/login")
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"


def test_hsts_only_in_production(client, app_factory):
    assert "Strict-Transport-Security" not in client.get("/login").headers
    production = app_factory(ENV="production")
    headers = production.test_client().get("/login").headers
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_production_cookies_are_secure(app_factory):
    production = app_factory(ENV="production")
    assert production.config["SESSION_COOKIE_SECURE"] is True
    assert production.config["SESSION_COOKIE_HTTPONLY"] is True


def test_a_self_hosted_chatkit_server_may_only_answer_fetches(app_factory):
    app = app_factory(
        CHATKIT_SCRIPT_URL="https://cdn.platform.openai.com/deployments/chatkit/chatkit.js",
        CHATKIT_API_URL="https://chat.example.com/chatkit",
    )
    policy = directives(app.test_client().get("/login").headers["Content-Security-Policy"])
    assert policy["connect-src"] == (
        "'self' https://cdn.platform.openai.com https://chat.example.com"
    )
    assert "chat.example.com" not in policy["script-src"]
    assert "chat.example.com" not in policy["frame-src"]
