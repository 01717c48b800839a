"""The codex JSON API, row by row of CONTRACT.md §4, with the bad inputs of issue 3."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.codex_support import (
    AGENT,
    PLACEMENT,
    new_session,
    snapshot,
)
from tests.conftest import browser_session_for

ISO_Z = "%Y-%m-%dT%H:%M:%SZ"


@pytest.fixture
def owner(user, auth_headers):
    return auth_headers(user)


@pytest.fixture
def stranger(make_user, auth_headers):
    return auth_headers(make_user("stranger@example.com"))


def problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code and body["status"] == status
    return body


# Agents ----------------------------------------------------------------------------------


def test_agents_lists_the_configured_agents(client, owner):
    response = client.get("/api/codex/agents", headers=owner)
    assert response.status_code == 200
    assert response.get_json() == {
        "agents": [
            {
                "agent_id": "agent_123",
                "name": "Demo agent",
                "placements": ["developer-workbench", "dashboard"],
            }
        ]
    }


@pytest.mark.parametrize(
    "config_overrides",
    [
        {
            "CODEX_PLACEMENTS": ["dashboard", "ide"],
            "CODEX_AGENTS": {
                "writer": {"name": "Writer", "placements": ["ide", "retired"]},
                "helper": {"name": "Helper", "workflow_id": "wf_1"},
            },
        }
    ],
)
def test_agent_placements_are_limited_to_configured_placements(client, owner):
    agents = client.get("/api/codex/agents", headers=owner).get_json()["agents"]
    assert agents == [
        {"agent_id": "writer", "name": "Writer", "placements": ["ide"]},
        {"agent_id": "helper", "name": "Helper", "placements": ["dashboard", "ide"]},
    ]
    refused = client.post(
        "/api/codex/sessions", json={"placement": "dashboard", "agent_id": "writer"}, headers=owner
    )
    assert problem(refused, 422, "invalid_request")["errors"] == [
        {"field": "placement", "message": "Agent writer is not offered here."}
    ]


# Create ----------------------------------------------------------------------------------


def test_create_returns_the_session_with_location(client, owner, frozen_clock, events, user):
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    frozen_clock(moment)
    response = client.post(
        "/api/codex/sessions",
        json={
            "placement": PLACEMENT,
            "agent_id": AGENT,
            "context": {"repo": "acme/app", "files": ["a.py"]},
            "metadata": {"source": "test"},
        },
        headers=owner,
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body["session_id"].startswith("cxs_")
    assert response.headers["Location"] == f"/api/codex/sessions/{body['session_id']}"
    assert body == {
        "session_id": body["session_id"],
        "status": "active",
        "placement": PLACEMENT,
        "agent_id": AGENT,
        "context": {"repo": "acme/app", "files": ["a.py"]},
        "metadata": {"source": "test"},
        "created_at": "2026-01-02T03:04:05Z",
        "last_active_at": "2026-01-02T03:04:05Z",
        "expires_at": "2026-01-02T03:34:05Z",  # idle TTL 1800 s
        "closed_at": None,
        "thread_id": None,
    }
    assert events.named("codex.session.created") == [
        {
            "event": "codex.session.created",
            "level": "info",
            "user_id": user.id,
            "session_id": body["session_id"],
            "placement": PLACEMENT,
            "agent_id": AGENT,
        }
    ]
    fetched = client.get(response.headers["Location"], headers=owner)
    assert fetched.get_json() == body


def test_second_create_for_same_slot_is_409_with_the_current_session(client, owner, events):
    first = new_session(client, owner)
    before = snapshot(client.application)
    response = client.post(
        "/api/codex/sessions", json={"placement": PLACEMENT, "agent_id": AGENT}, headers=owner
    )
    body = problem(response, 409, "session_exists")
    assert body["session_id"] == first["session_id"]
    assert body["current"] == "/api/codex/sessions/current?placement=dashboard&agent_id=agent_123"
    assert snapshot(client.application) == before
    assert [e["session_id"] for e in events.named("codex.session.conflict")] == [
        first["session_id"]
    ]
    current = client.get(body["current"], headers=owner)
    assert current.get_json()["session_id"] == first["session_id"]


def test_other_placement_agent_or_user_gets_its_own_session(client, owner, stranger):
    first = new_session(client, owner, placement="dashboard")
    second = new_session(client, owner, placement="developer-workbench")
    third = new_session(client, stranger, placement="dashboard")
    assert len({first["session_id"], second["session_id"], third["session_id"]}) == 3


def test_a_closed_slot_can_be_reopened(client, owner):
    first = new_session(client, owner)
    client.post(f"/api/codex/sessions/{first['session_id']}/close", headers=owner)
    second = new_session(client, owner)
    assert second["session_id"] != first["session_id"]


BAD_CREATE_BODIES = [
    pytest.param(
        {"agent_id": AGENT}, [("placement", "This field is required.")], id="missing-placement"
    ),
    pytest.param(
        {"placement": PLACEMENT, "agent_id": "agent_999"},
        [("agent_id", "Unknown agent.")],
        id="unknown-agent",
    ),
    pytest.param(
        {"placement": "kitchen", "agent_id": AGENT},
        [("placement", "Unknown placement; one of: developer-workbench, dashboard.")],
        id="unknown-placement",
    ),
    pytest.param(
        {"placement": 7, "agent_id": AGENT},
        [("placement", "Must be a string.")],
        id="placement-not-a-string",
    ),
    pytest.param(
        {"placement": PLACEMENT, "agent_id": ["agent_123"]},
        [("agent_id", "Must be a string.")],
        id="agent-an-array",
    ),
    pytest.param(
        {"placement": PLACEMENT, "agent_id": AGENT, "context": ["not", "an", "object"]},
        [("context", "Must be a JSON object.")],
        id="context-an-array",
    ),
    pytest.param(
        {"placement": PLACEMENT, "agent_id": AGENT, "context": "text"},
        [("context", "Must be a JSON object.")],
        id="context-a-string",
    ),
    pytest.param(
        {"placement": PLACEMENT, "agent_id": AGENT, "metadata": 3},
        [("metadata", "Must be a JSON object.")],
        id="metadata-a-number",
    ),
    pytest.param(
        {"placement": PLACEMENT, "agent_id": AGENT, "context": {"blob": "x" * 20_000}},
        [("context", "Must be at most 16384 bytes as JSON.")],
        id="context-too-large",
    ),
    pytest.param(
        {"placement": PLACEMENT, "agent_id": AGENT, "metadata": {"blob": "x" * 20_000}},
        [("metadata", "Must be at most 16384 bytes as JSON.")],
        id="metadata-too-large",
    ),
    pytest.param(
        {"placement": PLACEMENT, "agent_id": AGENT, "user_id": "usr_other"},
        [("user_id", "Unknown field.")],
        id="unknown-field",
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD_CREATE_BODIES)
def test_bad_create_bodies_are_422_and_write_nothing(client, owner, body, expected):
    before = snapshot(client.application)
    response = client.post("/api/codex/sessions", json=body, headers=owner)
    errors = problem(response, 422, "invalid_request")["errors"]
    assert [(e["field"], e["message"]) for e in errors] == expected
    assert snapshot(client.application) == before


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        pytest.param("placement=dashboard", "application/x-www-form-urlencoded", id="form"),
        pytest.param("{not json", "application/json", id="broken-json"),
        pytest.param('["dashboard", "agent_123"]', "application/json", id="array"),
        pytest.param('"dashboard"', "application/json", id="string"),
        pytest.param("null", "application/json", id="null"),
        pytest.param("", "application/json", id="empty"),
        pytest.param(
            '{"placement": "dashboard", "agent_id": "agent_123", "context": {"x": NaN}}',
            "application/json",
            id="nan",
        ),
        pytest.param(
            '{"placement": "dashboard", "agent_id": "agent_123", "context": '
            + '{"a": ' * 100_000
            + "1"
            + "}" * 100_001,
            "application/json",
            id="nested-too-deep",
        ),
        pytest.param(b'{"placement": "\xff"}', "application/json", id="not-utf8"),
    ],
)
def test_non_object_bodies_are_422(client, owner, data, content_type):
    before = snapshot(client.application)
    response = client.post(
        "/api/codex/sessions", data=data, content_type=content_type, headers=owner
    )
    errors = problem(response, 422, "invalid_request")["errors"]
    assert errors[0]["field"] == "body"
    assert snapshot(client.application) == before


def test_a_5_mb_body_is_413(client, owner):
    before = snapshot(client.application)
    huge = '{"placement": "dashboard", "agent_id": "agent_123", "context": {"x": "%s"}}' % (
        "x" * (5 * 1024 * 1024)
    )
    response = client.post(
        "/api/codex/sessions", data=huge, content_type="application/json", headers=owner
    )
    problem(response, 413, "payload_too_large")
    assert snapshot(client.application) == before


# Get, current, list ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "session_id",
    ["cxs_doesnotexist000000000000", "not-an-id", "x" * 300, "cxs_%00", "%F0%9F%92%A9"],
)
def test_unknown_or_malformed_ids_are_404(client, owner, session_id):
    response = client.get(f"/api/codex/sessions/{session_id}", headers=owner)
    problem(response, 404, "session_not_found")


def test_current_picks_the_most_recently_active_matching_session(client, owner, frozen_clock, app):
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    frozen_clock(start)
    board = new_session(client, owner, placement="dashboard")
    frozen_clock(start + timedelta(minutes=1))
    bench = new_session(client, owner, placement="developer-workbench")

    frozen_clock(start + timedelta(minutes=2))
    latest = client.get("/api/codex/sessions/current", headers=owner).get_json()
    assert latest["session_id"] == bench["session_id"]
    # Resuming the dashboard session makes it the most recently active one.
    frozen_clock(start + timedelta(minutes=3))
    resumed = client.get("/api/codex/sessions/current?placement=dashboard", headers=owner)
    assert resumed.get_json()["session_id"] == board["session_id"]
    assert resumed.get_json()["last_active_at"] == "2026-03-01T12:03:00Z"
    assert resumed.get_json()["expires_at"] == "2026-03-01T12:33:00Z"
    frozen_clock(start + timedelta(minutes=4))
    latest = client.get("/api/codex/sessions/current", headers=owner).get_json()
    assert latest["session_id"] == board["session_id"]

    filtered = client.get(
        "/api/codex/sessions/current?placement=developer-workbench&agent_id=agent_123",
        headers=owner,
    )
    assert filtered.get_json()["session_id"] == bench["session_id"]
    none = client.get("/api/codex/sessions/current?agent_id=agent_999", headers=owner)
    problem(none, 404, "session_not_found")


def test_current_is_404_without_an_active_session(client, owner):
    problem(client.get("/api/codex/sessions/current", headers=owner), 404, "session_not_found")
    session = new_session(client, owner)
    client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    problem(client.get("/api/codex/sessions/current", headers=owner), 404, "session_not_found")


def test_a_query_value_no_database_can_compare_is_a_422_naming_it(client, owner):
    """Found by the schema fuzzer: a NUL in `placement` reached PostgreSQL, which refused it."""
    body = problem(
        client.get("/api/codex/sessions/current?placement=a%00b", headers=owner),
        422,
        "invalid_request",
    )
    assert body["errors"] == [{"field": "placement", "message": "Must not contain NUL characters."}]


def test_list_is_newest_first_with_a_cursor_that_is_stable_under_inserts(
    client, owner, frozen_clock
):
    start = datetime(2026, 4, 1, tzinfo=UTC)
    ids = []
    for minute, placement in enumerate(["dashboard", "developer-workbench"] * 3):
        frozen_clock(start + timedelta(minutes=minute))
        session = new_session(client, owner, placement=placement)
        ids.append(session["session_id"])
        client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    newest_first = ids[::-1]

    page = client.get("/api/codex/sessions?limit=4", headers=owner).get_json()
    assert [s["session_id"] for s in page["sessions"]] == newest_first[:4]
    assert page["next_cursor"]

    frozen_clock(start + timedelta(hours=1))
    inserted = new_session(client, owner)  # arrives between the pages

    rest = client.get(
        f"/api/codex/sessions?limit=4&cursor={page['next_cursor']}", headers=owner
    ).get_json()
    assert [s["session_id"] for s in rest["sessions"]] == newest_first[4:]
    assert rest["next_cursor"] is None

    everything = client.get("/api/codex/sessions", headers=owner).get_json()
    assert [s["session_id"] for s in everything["sessions"]] == [
        inserted["session_id"],
        *newest_first,
    ]


def test_list_with_equal_timestamps_pages_without_gaps_or_repeats(client, owner, frozen_clock):
    frozen_clock(datetime(2026, 4, 2, tzinfo=UTC))
    for _ in range(5):
        session = new_session(client, owner)
        client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    seen, cursor = [], None
    while True:
        url = "/api/codex/sessions?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=owner).get_json()
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5


def test_list_filters_by_effective_status(client, owner, frozen_clock):
    start = datetime(2026, 5, 1, tzinfo=UTC)
    frozen_clock(start)
    closed = new_session(client, owner, placement="dashboard")
    client.post(f"/api/codex/sessions/{closed['session_id']}/close", headers=owner)
    lapsed = new_session(client, owner, placement="developer-workbench")
    frozen_clock(start + timedelta(hours=1))  # past the idle TTL: `lapsed` reads expired
    active = new_session(client, owner, placement="dashboard")

    def listed(status):
        page = client.get(f"/api/codex/sessions?status={status}", headers=owner).get_json()
        return [(s["session_id"], s["status"]) for s in page["sessions"]]

    assert listed("active") == [(active["session_id"], "active")]
    assert listed("closed") == [(closed["session_id"], "closed")]
    assert listed("expired") == [(lapsed["session_id"], "expired")]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("status=open", "status"),
        ("cursor=garbage", "cursor"),
        ("cursor=WyJ4IiwxXQ", "cursor"),  # base64 of a JSON array we never issued
    ],
)
def test_list_rejects_bad_paging(client, owner, query, field):
    response = client.get(f"/api/codex/sessions?{query}", headers=owner)
    assert [e["field"] for e in problem(response, 422, "invalid_request")["errors"]] == [field]


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=x", "limit"), ("cursor=%%%", "cursor")],
)
def test_chatkit_list_rejects_bad_paging(client, owner, query, field):
    response = client.get(f"/api/codex/chatkit/sessions?{query}", headers=owner)
    assert [e["field"] for e in problem(response, 422, "invalid_request")["errors"]] == [field]


# Close and delete ------------------------------------------------------------------------


def test_close_is_idempotent(client, owner, events, frozen_clock):
    frozen_clock(datetime(2026, 6, 1, tzinfo=UTC))
    session = new_session(client, owner)
    frozen_clock(datetime(2026, 6, 1, 0, 5, tzinfo=UTC))
    url = f"/api/codex/sessions/{session['session_id']}/close"
    first = client.post(url, headers=owner)
    assert first.status_code == 200
    assert first.get_json()["status"] == "closed"
    assert first.get_json()["closed_at"] == "2026-06-01T00:05:00Z"
    frozen_clock(datetime(2026, 6, 1, 0, 6, tzinfo=UTC))
    second = client.post(url, headers=owner)
    assert second.status_code == 200
    assert second.get_json() == first.get_json()
    assert len(events.named("codex.session.closed")) == 1
    assert client.get(f"/api/codex/sessions/{session['session_id']}", headers=owner).get_json()[
        "status"
    ] == ("closed")


def test_delete_hides_the_session_for_good(client, owner, events):
    session = new_session(client, owner)
    url = f"/api/codex/sessions/{session['session_id']}"
    response = client.delete(url, headers=owner)
    assert response.status_code == 204 and response.data == b""
    problem(client.get(url, headers=owner), 404, "session_not_found")
    problem(client.delete(url, headers=owner), 404, "session_not_found")
    problem(client.post(url + "/close", headers=owner), 404, "session_not_found")
    problem(
        client.get(f"/api/codex/chatkit/token?session_id={session['session_id']}", headers=owner),
        404,
        "session_not_found",
    )
    assert client.get("/api/codex/sessions", headers=owner).get_json()["sessions"] == []
    assert client.get("/api/codex/chatkit/sessions", headers=owner).get_json() == {
        "chatkit_sessions": [],
        "next_cursor": None,
    }
    assert [e["session_id"] for e in events.named("codex.session.deleted")] == [
        session["session_id"]
    ]
    # The slot is free again: deleting closed the session.
    new_session(client, owner)


# ChatKit token and sessions --------------------------------------------------------------


def test_token_for_the_owners_active_session(client, owner, user, events, frozen_clock):
    frozen_clock(datetime(2026, 7, 1, 9, 0, tzinfo=UTC))
    session = new_session(client, owner)
    frozen_clock(datetime(2026, 7, 1, 9, 10, tzinfo=UTC))
    response = client.get(
        f"/api/codex/chatkit/token?session_id={session['session_id']}", headers=owner
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"token", "expires_at", "session_id", "chatkit_session_id"}
    assert body["session_id"] == session["session_id"]
    assert body["chatkit_session_id"].startswith("cks_")
    assert body["expires_at"] == "2026-07-01T09:20:00Z"  # CHATKIT_TOKEN_TTL 600 s
    # Minting is activity: the idle expiry slid.
    refreshed = client.get(f"/api/codex/sessions/{session['session_id']}", headers=owner)
    assert refreshed.get_json()["last_active_at"] == "2026-07-01T09:10:00Z"
    assert refreshed.get_json()["expires_at"] == "2026-07-01T09:40:00Z"

    issued = events.named("codex.chatkit.token.issued")
    assert len(issued) == 1
    assert issued[0]["user_id"] == user.id
    assert issued[0]["session_id"] == session["session_id"]
    assert issued[0]["chatkit_session_id"] == body["chatkit_session_id"]
    assert issued[0]["expires_at"] == body["expires_at"]
    assert issued[0]["jti"]
    assert body["token"] not in events.lines()[0] + "".join(events.lines())


def test_chatkit_sessions_count_tokens_per_codex_session(client, owner, frozen_clock):
    frozen_clock(datetime(2026, 7, 2, tzinfo=UTC))
    board = new_session(client, owner, placement="dashboard")
    bench = new_session(client, owner, placement="developer-workbench")
    for minute in (1, 2, 3):
        frozen_clock(datetime(2026, 7, 2, 0, minute, tzinfo=UTC))
        token = client.get(
            f"/api/codex/chatkit/token?session_id={board['session_id']}", headers=owner
        ).get_json()
    listed = client.get("/api/codex/chatkit/sessions", headers=owner).get_json()
    assert listed["next_cursor"] is None
    by_session = {row["session_id"]: row for row in listed["chatkit_sessions"]}
    assert by_session[board["session_id"]] == {
        "chatkit_session_id": token["chatkit_session_id"],
        "session_id": board["session_id"],
        "status": "active",
        "placement": "dashboard",
        "agent_id": AGENT,
        "created_at": "2026-07-02T00:00:00Z",
        "expires_at": "2026-07-02T00:33:00Z",
        "last_token_at": "2026-07-02T00:03:00Z",
        "tokens_issued": 3,
    }
    assert by_session[bench["session_id"]]["tokens_issued"] == 0
    assert by_session[bench["session_id"]]["last_token_at"] is None

    only = client.get(
        f"/api/codex/chatkit/sessions?session_id={bench['session_id']}", headers=owner
    ).get_json()["chatkit_sessions"]
    assert [row["session_id"] for row in only] == [bench["session_id"]]

    first = client.get("/api/codex/chatkit/sessions?limit=1", headers=owner).get_json()
    second = client.get(
        f"/api/codex/chatkit/sessions?limit=1&cursor={first['next_cursor']}", headers=owner
    ).get_json()
    assert second["next_cursor"] is None
    assert {
        first["chatkit_sessions"][0]["session_id"],
        second["chatkit_sessions"][0]["session_id"],
    } == {
        board["session_id"],
        bench["session_id"],
    }

    client.post(f"/api/codex/sessions/{board['session_id']}/close", headers=owner)
    ended = client.get(
        f"/api/codex/chatkit/sessions?session_id={board['session_id']}", headers=owner
    ).get_json()["chatkit_sessions"]
    assert ended[0]["status"] == "ended"


@pytest.mark.parametrize("query", ["", "?session_id=", "?sid=cxs_x"])
def test_token_without_session_id_is_422(client, owner, query):
    response = client.get(f"/api/codex/chatkit/token{query}", headers=owner)
    errors = problem(response, 422, "invalid_request")["errors"]
    assert errors == [{"field": "session_id", "message": "Required."}]


@pytest.mark.parametrize("session_id", ["cxs_unknown00000000000000000", "garbage", "x" * 500])
def test_token_for_unknown_session_is_404(client, owner, session_id):
    before = snapshot(client.application)
    response = client.get(f"/api/codex/chatkit/token?session_id={session_id}", headers=owner)
    problem(response, 404, "session_not_found")
    assert snapshot(client.application) == before


def test_token_for_a_closed_session_is_404(client, owner):
    session = new_session(client, owner)
    client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    before = snapshot(client.application)
    response = client.get(
        f"/api/codex/chatkit/token?session_id={session['session_id']}", headers=owner
    )
    problem(response, 404, "session_not_found")
    assert snapshot(client.application) == before


@pytest.mark.parametrize(
    "config_overrides", [{"RATELIMIT_ENABLED": True, "RATELIMIT_TOKEN": "2/minute"}]
)
def test_token_endpoint_is_rate_limited(client, owner):
    session = new_session(client, owner)
    url = f"/api/codex/chatkit/token?session_id={session['session_id']}"
    assert [client.get(url, headers=owner).status_code for _ in range(2)] == [200, 200]
    limited = client.get(url, headers=owner)
    body = problem(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"] == str(body["retry_after"])
    assert 1 <= body["retry_after"] <= 60
    assert body["detail"] == f"Codex is busy, please retry in {body['retry_after']} seconds"


@pytest.mark.parametrize(
    "config_overrides", [{"RATELIMIT_ENABLED": True, "RATELIMIT_SESSION_CREATE": "1/minute"}]
)
def test_create_is_rate_limited(client, owner):
    new_session(client, owner)
    response = client.post(
        "/api/codex/sessions",
        json={"placement": "developer-workbench", "agent_id": AGENT},
        headers=owner,
    )
    problem(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1


# Events ----------------------------------------------------------------------------------


def test_client_events_are_logged(client, owner, user, events):
    session = new_session(client, owner)
    response = client.post(
        "/api/codex/events",
        json={
            "event": "chatkit.opened",
            "session_id": session["session_id"],
            "properties": {"latency_ms": 120, "access_token": "leak-me"},
        },
        headers=owner,
    )
    assert response.status_code == 202
    assert events.named("client.chatkit.opened") == [
        {
            "event": "client.chatkit.opened",
            "level": "info",
            "user_id": user.id,
            "session_id": session["session_id"],
            "properties": {"latency_ms": 120, "access_token": "[redacted]"},
        }
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "chatkit.exploded"}, "event"),
        ({"event": 5}, "event"),
        ({}, "event"),
        ({"event": "chatkit.error", "properties": ["a"]}, "properties"),
        ({"event": "chatkit.error", "properties": {"nested": {"a": 1}}}, "properties.nested"),
        ({"event": "chatkit.error", "properties": {"big": "x" * 5000}}, "properties"),
        ({"event": "chatkit.error", "session_id": 12}, "session_id"),
    ],
)
def test_bad_client_events_are_422(client, owner, events, body, field):
    response = client.post("/api/codex/events", json=body, headers=owner)
    errors = problem(response, 422, "invalid_request")["errors"]
    assert errors[0]["field"].startswith(field)
    assert [e for e in events if e["event"].startswith("client.")] == []


def test_client_event_for_someone_elses_session_is_404(client, owner, stranger, events):
    session = new_session(client, owner)
    response = client.post(
        "/api/codex/events",
        json={"event": "chatkit.closed", "session_id": session["session_id"]},
        headers=stranger,
    )
    problem(response, 404, "session_not_found")
    assert events.named("client.chatkit.closed") == []


# JWKS ------------------------------------------------------------------------------------


def test_jwks_is_public_and_cacheable(client):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    (key,) = response.get_json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    assert key["kid"] and "d" not in key


# The ownership matrix --------------------------------------------------------------------

ENDPOINTS = {
    "agents": ("GET", "/api/codex/agents", None, 200),
    "create": ("POST", "/api/codex/sessions", {"placement": "developer-workbench"}, 201),
    "get": ("GET", "/api/codex/sessions/{sid}", None, 200),
    "current": ("GET", "/api/codex/sessions/current?placement=dashboard", None, 200),
    "list": ("GET", "/api/codex/sessions", None, 200),
    "close": ("POST", "/api/codex/sessions/{sid}/close", None, 200),
    "delete": ("DELETE", "/api/codex/sessions/{sid}", None, 204),
    "token": ("GET", "/api/codex/chatkit/token?session_id={sid}", None, 200),
    "chatkit-list": ("GET", "/api/codex/chatkit/sessions?session_id={sid}", None, 200),
    "events": (
        "POST",
        "/api/codex/events",
        {"event": "chatkit.opened", "session_id": "{sid}"},
        202,
    ),
}
# Endpoints that name the owner's session answer a stranger with 404; the others answer
# the stranger about their own (empty) data.
STRANGER_STATUS = {
    "agents": 200,
    "create": 201,
    "current": 404,
    "list": 200,
}


def _call(client, endpoint: str, sid: str, headers: dict):
    method, path, body, _ = ENDPOINTS[endpoint]
    if isinstance(body, dict):
        body = {k: (v.format(sid=sid) if isinstance(v, str) else v) for k, v in body.items()}
        if endpoint == "create":
            body["agent_id"] = AGENT
    return client.open(path.format(sid=sid), method=method, json=body, headers=headers)


@pytest.fixture
def owners_session(client, owner):
    return new_session(client, owner)["session_id"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_anonymous_callers_get_401_with_www_authenticate(client, owners_session, endpoint):
    before = snapshot(client.application)
    response = _call(client, endpoint, owners_session, {})
    problem(response, 401, "authentication_required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot(client.application) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unverified_callers_get_403(
    client, owners_session, unverified_user, auth_headers, endpoint
):
    before = snapshot(client.application)
    response = _call(client, endpoint, owners_session, auth_headers(unverified_user))
    problem(response, 403, "email_not_verified")
    assert snapshot(client.application) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_other_users_never_see_the_owners_session(client, owners_session, stranger, endpoint):
    response = _call(client, endpoint, owners_session, stranger)
    expected = STRANGER_STATUS.get(endpoint, 404)
    assert response.status_code == expected, response.get_data(as_text=True)
    if expected == 404:
        assert response.get_json()["code"] == "session_not_found"
    assert owners_session not in response.get_data(as_text=True)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_owner_is_served(client, owners_session, owner, endpoint):
    response = _call(client, endpoint, owners_session, owner)
    assert response.status_code == ENDPOINTS[endpoint][3], response.get_data(as_text=True)


def test_an_invalid_bearer_token_is_401_even_with_a_cookie(client):
    response = client.get("/api/codex/agents", headers={"Authorization": "Bearer forged"})
    problem(response, 401, "authentication_required")
    assert "invalid_token" in response.headers["WWW-Authenticate"]


# CSRF for cookie-authenticated posts ------------------------------------------------------


@pytest.mark.parametrize("config_overrides", [{"WTF_CSRF_ENABLED": True}])
def test_cookie_posts_need_a_csrf_token(app, client, user):
    from flask import session as cookie_session
    from flask_wtf.csrf import generate_csrf

    # The browser's state after logging in on the pages: a flask-login session cookie
    # holding the user id and the CSRF secret the page's token was made from.
    with app.test_request_context():
        token = generate_csrf()
        csrf_secret = cookie_session["csrf_token"]
        logged_in = browser_session_for(user.id)
    with client.session_transaction() as browser:
        browser.update({**logged_in, "csrf_token": csrf_secret})

    body = {"placement": PLACEMENT, "agent_id": AGENT}
    refused = client.post("/api/codex/sessions", json=body)
    problem(refused, 403, "csrf_failed")
    assert snapshot(app)["codex_sessions"] == []

    accepted = client.post("/api/codex/sessions", json=body, headers={"X-CSRFToken": token})
    assert accepted.status_code == 201
    sid = accepted.get_json()["session_id"]
    problem(client.post(f"/api/codex/sessions/{sid}/close"), 403, "csrf_failed")
    problem(client.delete(f"/api/codex/sessions/{sid}"), 403, "csrf_failed")
    closed = client.post(f"/api/codex/sessions/{sid}/close", headers={"X-CSRFToken": token})
    assert closed.get_json()["status"] == "closed"
    # Reads need no token.
    assert client.get(f"/api/codex/sessions/{sid}").status_code == 200


def test_current_url_is_well_formed_for_odd_names(app):
    from codexweb.codex.sessions import current_url

    url = current_url("a&b=c", "x y")
    assert parse_qs(urlsplit(url).query) == {"placement": ["a&b=c"], "agent_id": ["x y"]}


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59", "2026-01-01T00:00:00"]
)
@pytest.mark.parametrize("path", ["/api/codex/sessions", "/api/codex/chatkit/sessions"])
def test_a_cursor_we_never_issued_is_422_even_when_it_parses(client, owner, path, moment):
    """A well-formed cursor whose time overflows or has no zone is refused, never a 500."""
    raw = json.dumps([moment, "cxs_x"]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = client.get(path, query_string={"cursor": cursor}, headers=owner)
    errors = problem(response, 422, "invalid_request")["errors"]
    assert [error["field"] for error in errors] == ["cursor"]
