"""Input that cannot be stored is a 422 naming its field, a body over the limit is a 413
however it is framed, and answers with a user's data are never stored by a cache (issue 12,
findings 7, 8 and 10)."""

from __future__ import annotations

import io
import json

import pytest

from tests.auth_support import login_json
from tests.codex_support import AGENT, PLACEMENT
from tests.conftest import TEST_PASSWORD


def raw_json(client, path: str, text: str, **kwargs):
    return client.post(path, data=text.encode(), content_type="application/json", **kwargs)


def field_errors(response) -> dict[str, str]:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return {error["field"]: error["message"] for error in response.get_json()["errors"]}


@pytest.mark.parametrize(
    "path",
    ["/api/auth/register", "/api/auth/password/forgot", "/api/auth/verify-email/resend"],
)
def test_a_lone_surrogate_in_email_is_a_422_naming_the_field(client, path):
    body = '{"email": "a\\ud800@example.com", "password": "long enough password"}'
    errors = field_errors(raw_json(client, path, body))
    assert errors == {"email": "Must be valid Unicode text (a lone surrogate is not)."}


def test_a_nul_character_is_a_422_naming_the_field(client):
    body = json.dumps({"email": "a\u0000b@example.com", "password": "long enough password"})
    errors = field_errors(raw_json(client, "/api/auth/register", body))
    assert errors == {"email": "Must not contain NUL characters."}


@pytest.mark.parametrize("depth", [33, 500, 960, 5000])
def test_deep_nesting_in_context_is_a_422_naming_the_field(client, user, auth_headers, depth):
    """Past the parser's own recursion limit the field cannot be known: the body is named."""
    context = "[" * depth + "]" * depth
    body = f'{{"placement": "{PLACEMENT}", "agent_id": "{AGENT}", "context": {{"x": {context}}}}}'
    response = raw_json(client, "/api/codex/sessions", body, headers=auth_headers(user))
    errors = field_errors(response)
    assert list(errors) in (["context"], ["body"])
    assert set(errors.values()) == {"Nested too deeply (at most 32 levels)."}


def test_a_chunked_body_over_the_limit_is_a_413_not_a_cut_body(app, client):
    """Chunked transfer encoding: no Content-Length, the server terminates the stream."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({"email": "owner@example.com", "padding": "x" * limit}).encode()
    response = client.post(
        "/api/auth/password/forgot",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"


def test_a_chunked_body_within_the_limit_is_read_whole(client):
    body = json.dumps({"email": "owner@example.com"}).encode()
    response = client.post(
        "/api/auth/password/forgot",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 202


def test_answers_with_a_users_data_are_never_stored(client, app, user, auth_headers):
    login = login_json(client, "owner@example.com", TEST_PASSWORD)
    headers = auth_headers(user)
    answers = [
        login,
        client.post("/api/auth/refresh"),
        client.get("/api/auth/me", headers=headers),
        client.get("/api/codex/sessions", headers=headers),
        client.get("/api/codex/sessions/current", headers=headers),
        client.get("/api/auth/me"),  # a 401 problem is no one's to keep either
    ]
    for response in answers:
        assert response.headers["Cache-Control"] == "no-store", response.request.path
    assert client.get("/.well-known/jwks.json").headers["Cache-Control"].startswith("public")
    assert "no-store" not in client.get("/static/app.css").headers.get("Cache-Control", "")
