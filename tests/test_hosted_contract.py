"""One contract, two providers: the token endpoint and the ChatKit session list (CONTRACT.md
§4) answer alike whether tokens are signed locally or are client secrets of hosted ChatKit
sessions. Every test here runs once per provider."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from codexweb.clock import isoformat
from tests.hosted_support import (  # noqa: F401 (fixtures)
    AGENT,
    PLACEMENT,
    _close_upstream_clients,
    hosted_settings,
    new_session,
    problem,
    token_for,
    upstream_fixture,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TOKEN_KEYS = {"token", "expires_at", "session_id", "chatkit_session_id"}
LISTED_KEYS = {
    "chatkit_session_id",
    "session_id",
    "status",
    "placement",
    "agent_id",
    "created_at",
    "expires_at",
    "last_token_at",
    "tokens_issued",
}


@pytest.fixture(params=["local", "openai"])
def provider(request) -> str:
    return request.param


@pytest.fixture
def provider_config(provider, upstream) -> dict:
    """Per-test additions (parametrise it); merged over the provider's settings."""
    return {}


@pytest.fixture
def config_overrides(provider, upstream, provider_config) -> dict:
    base = hosted_settings(upstream) if provider == "openai" else {}
    return {**base, **provider_config}


@pytest.fixture
def owner(user, auth_headers) -> dict:
    return auth_headers(user)


@pytest.fixture
def start(frozen_clock) -> datetime:
    """Now, frozen (the hosted stand-in dates its sessions by the real clock)."""
    moment = datetime.now(UTC).replace(microsecond=0)
    frozen_clock(moment)
    return moment


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def listed(client, headers, query: str = "") -> dict:
    response = client.get(f"/api/codex/chatkit/sessions{query}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_a_token_has_the_contract_shape_and_counts_as_activity(
    client, owner, user, start, frozen_clock, events
):
    session = new_session(client, owner)
    frozen_clock(start + timedelta(minutes=5))
    response = token_for(client, owner, session["session_id"])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == TOKEN_KEYS
    assert body["session_id"] == session["session_id"]
    assert body["token"] and body["chatkit_session_id"]
    assert ISO_Z.match(body["expires_at"])
    refreshed = client.get(f"/api/codex/sessions/{session['session_id']}", headers=owner)
    assert refreshed.get_json()["last_active_at"] == isoformat(start + timedelta(minutes=5))
    # Never beyond CHATKIT_TOKEN_TTL, nor beyond the Codex session's own expiry.
    assert start < parse(body["expires_at"]) <= start + timedelta(minutes=5, seconds=601)
    assert parse(body["expires_at"]) <= parse(refreshed.get_json()["expires_at"])

    (issued,) = events.named("codex.chatkit.token.issued")
    assert issued["user_id"] == user.id
    assert issued["session_id"] == session["session_id"]
    assert issued["chatkit_session_id"] == body["chatkit_session_id"]
    assert issued["expires_at"] == body["expires_at"]
    assert issued["jti"]
    assert body["token"] not in "".join(events.lines())


def test_the_chatkit_session_of_a_token_is_listed(client, owner, start, frozen_clock):
    session = new_session(client, owner)
    frozen_clock(start + timedelta(minutes=1))
    token = token_for(client, owner, session["session_id"]).get_json()

    page = listed(client, owner)
    assert page["next_cursor"] is None
    (row,) = [r for r in page["chatkit_sessions"] if r["tokens_issued"]]
    assert set(row) == LISTED_KEYS
    assert row["chatkit_session_id"] == token["chatkit_session_id"]
    assert row["session_id"] == session["session_id"]
    assert row["status"] == "active"
    assert (row["placement"], row["agent_id"]) == (PLACEMENT, AGENT)
    assert row["last_token_at"] == isoformat(start + timedelta(minutes=1))
    assert row["tokens_issued"] == 1
    assert ISO_Z.match(row["created_at"]) and ISO_Z.match(row["expires_at"])


def test_closing_ends_the_chatkit_sessions_and_stops_tokens(client, owner):
    session = new_session(client, owner)
    token_for(client, owner, session["session_id"])
    closed = client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    assert closed.status_code == 200

    rows = listed(client, owner, f"?session_id={session['session_id']}")["chatkit_sessions"]
    assert rows and {row["status"] for row in rows} == {"ended"}
    problem(token_for(client, owner, session["session_id"]), 404, "session_not_found")


def test_a_deleted_session_takes_its_chatkit_sessions_out_of_the_list(client, owner):
    kept = new_session(client, owner, placement="developer-workbench")
    gone = new_session(client, owner)
    for session in (kept, gone):
        token_for(client, owner, session["session_id"])
    assert client.delete(f"/api/codex/sessions/{gone['session_id']}", headers=owner).status_code
    rows = listed(client, owner)["chatkit_sessions"]
    assert {row["session_id"] for row in rows} == {kept["session_id"]}
    problem(
        client.get(f"/api/codex/chatkit/sessions?session_id={gone['session_id']}", headers=owner),
        404,
        "session_not_found",
    )


def test_someone_elses_session_is_a_404_for_tokens_and_the_list(
    client, owner, make_user, auth_headers
):
    session = new_session(client, owner)
    stranger = auth_headers(make_user("stranger@example.com"))
    problem(token_for(client, stranger, session["session_id"]), 404, "session_not_found")
    problem(
        client.get(
            f"/api/codex/chatkit/sessions?session_id={session['session_id']}", headers=stranger
        ),
        404,
        "session_not_found",
    )
    assert listed(client, stranger) == {"chatkit_sessions": [], "next_cursor": None}


def test_the_list_pages_newest_first(client, owner, start, frozen_clock):
    for minute, placement in enumerate(["dashboard", "developer-workbench"], start=1):
        frozen_clock(start + timedelta(minutes=minute))
        session = new_session(client, owner, placement=placement)
        token_for(client, owner, session["session_id"])
    first = listed(client, owner, "?limit=1")
    second = listed(client, owner, f"?limit=1&cursor={first['next_cursor']}")
    assert first["next_cursor"] and second["next_cursor"] is None
    assert [
        first["chatkit_sessions"][0]["placement"],
        second["chatkit_sessions"][0]["placement"],
    ] == [
        "developer-workbench",
        "dashboard",
    ]


@pytest.mark.parametrize(
    "provider_config", [{"RATELIMIT_ENABLED": True, "RATELIMIT_TOKEN": "2/minute"}]
)
def test_the_token_endpoint_is_rate_limited_before_any_upstream_call(
    client, owner, provider, upstream
):
    session = new_session(client, owner)
    statuses = [token_for(client, owner, session["session_id"]).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    if provider == "openai":
        assert len(upstream.calls("create")) == 2
