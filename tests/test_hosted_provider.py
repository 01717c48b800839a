"""CHATKIT_PROVIDER=openai end to end: codexweb's API in front of a real HTTP stand-in of
OpenAI's ChatKit sessions API on loopback (no mocked HTTP client)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from codexweb.clock import isoformat
from codexweb.codex.openai_provider import lifetime_seconds, upstream_user_id
from tests.hosted_support import (  # noqa: F401 (fixtures)
    AGENT,
    API_KEY,
    PLACEMENT,
    WORKFLOW,
    _close_upstream_clients,
    config_overrides_fixture,
    hosted_config_fixture,
    new_session,
    problem,
    records,
    token_for,
    upstream_fixture,
)


@pytest.fixture
def owner(user, auth_headers):
    return auth_headers(user)


def listed(client, headers, query: str = "") -> list[dict]:
    response = client.get(f"/api/codex/chatkit/sessions{query}", headers=headers)
    assert response.status_code == 200
    return response.get_json()["chatkit_sessions"]


# Minting ---------------------------------------------------------------------------------


def test_a_token_is_the_client_secret_of_a_new_upstream_session(
    app, client, owner, user, upstream, events
):
    session = new_session(client, owner)
    response = token_for(client, owner, session["session_id"])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    (created,) = upstream.created
    assert response.get_json() == {
        "token": created["client_secret"],
        "expires_at": isoformat(datetime.fromtimestamp(created["expires_at"], UTC)),
        "session_id": session["session_id"],
        "chatkit_session_id": created["id"],
    }
    assert created["id"].startswith("cksess_")

    (request,) = upstream.calls("create")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["openai-beta"] == "chatkit_beta=v1"
    assert request.body == {
        "workflow": {
            "id": WORKFLOW,
            "state_variables": {
                "placement": PLACEMENT,
                "codex_session_id": session["session_id"],
            },
        },
        "user": upstream_user_id(user.id, app.config["SECRET_KEY"]),
        "expires_after": {"anchor": "created_at", "seconds": 600},
        "rate_limits": {"max_requests_per_1_minute": 10},
    }

    (issued,) = events.named("codex.chatkit.token.issued")
    assert issued["chatkit_session_id"] == created["id"]
    assert issued["jti"] == created["id"]
    assert issued["expires_at"] == response.get_json()["expires_at"]
    # Neither the client secret nor our key reaches a log line.
    log = "".join(events.lines())
    assert created["client_secret"] not in log and API_KEY not in log


def test_the_upstream_user_is_stable_per_user_and_reveals_nothing(
    app, client, owner, user, make_user, auth_headers, upstream
):
    other = auth_headers(make_user("other@example.com"))
    first = new_session(client, owner)
    token_for(client, owner, first["session_id"])
    token_for(client, owner, first["session_id"])
    second = new_session(client, other)
    token_for(client, other, second["session_id"])

    users = [request.body["user"] for request in upstream.calls("create")]
    assert users[0] == users[1] != users[2]
    assert user.id not in users[0] and "owner@example.com" not in users[0]
    assert users[0] != upstream_user_id(user.id, "a different secret key")


@pytest.mark.parametrize(
    "hosted_config",
    [{"CHATKIT_RATE_LIMIT_PER_MINUTE": 25, "CHATKIT_TOKEN_TTL": 900}],
)
def test_lifetime_and_rate_limit_come_from_config(client, owner, upstream):
    session = new_session(client, owner)
    token_for(client, owner, session["session_id"])
    (request,) = upstream.calls("create")
    assert request.body["rate_limits"] == {"max_requests_per_1_minute": 25}
    assert request.body["expires_after"] == {"anchor": "created_at", "seconds": 900}


@pytest.mark.parametrize("hosted_config", [{"CODEX_SESSION_MAX_AGE": 240}])
def test_the_upstream_session_never_outlives_the_codex_session(
    client, owner, upstream, frozen_clock
):
    start = datetime.now(UTC).replace(microsecond=0)
    frozen_clock(start)
    session = new_session(client, owner)
    frozen_clock(start + timedelta(seconds=100))
    body = token_for(client, owner, session["session_id"]).get_json()
    (request,) = upstream.calls("create")
    # 240 s maximum age, 100 s gone: at most 140 s left, well under the 600 s token TTL.
    assert request.body["expires_after"]["seconds"] == 140
    codex = client.get(f"/api/codex/sessions/{session['session_id']}", headers=owner)
    assert body["expires_at"] <= codex.get_json()["expires_at"]


def test_lifetime_seconds_is_bounded_by_ttl_and_remaining_time():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert lifetime_seconds(now, now + timedelta(hours=1), 600) == 600
    assert lifetime_seconds(now, now + timedelta(seconds=90.9), 600) == 90
    assert lifetime_seconds(now, now + timedelta(seconds=0.5), 600) == 1


def test_each_token_is_a_new_upstream_session_listed_in_the_registry(
    client, owner, upstream, frozen_clock
):
    board = new_session(client, owner)
    bench = new_session(client, owner, placement="developer-workbench")
    # Nothing exists upstream until a token is asked for: nothing is listed yet.
    assert listed(client, owner) == []

    start = datetime.now(UTC).replace(microsecond=0)
    tokens = []
    for minute in (0, 1):
        frozen_clock(start + timedelta(minutes=minute))
        tokens.append(token_for(client, owner, board["session_id"]).get_json())
    assert tokens[0]["chatkit_session_id"] != tokens[1]["chatkit_session_id"]
    assert tokens[0]["token"] != tokens[1]["token"]
    # A refresh leaves the previous upstream session alone: another tab may still use it.
    assert upstream.cancelled == []

    rows = listed(client, owner)
    assert [row["chatkit_session_id"] for row in rows] == [
        tokens[1]["chatkit_session_id"],
        tokens[0]["chatkit_session_id"],
    ]
    assert rows[0] == {
        "chatkit_session_id": tokens[1]["chatkit_session_id"],
        "session_id": board["session_id"],
        "status": "active",
        "placement": PLACEMENT,
        "agent_id": AGENT,
        "created_at": isoformat(start + timedelta(minutes=1)),
        "expires_at": tokens[1]["expires_at"],
        "last_token_at": isoformat(start + timedelta(minutes=1)),
        "tokens_issued": 1,
    }
    assert listed(client, owner, f"?session_id={bench['session_id']}") == []


def test_an_upstream_session_past_its_expiry_is_listed_as_expired(
    client, owner, upstream, frozen_clock
):
    session = new_session(client, owner)
    body = token_for(client, owner, session["session_id"]).get_json()
    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    frozen_clock(expires_at + timedelta(seconds=1))
    client.get("/api/codex/sessions/current", headers=owner)  # still active (idle 30 min)
    (row,) = listed(client, owner)
    assert row["status"] == "expired"


# Ending ----------------------------------------------------------------------------------


def test_closing_cancels_every_live_upstream_session(app, client, owner, upstream, events):
    session = new_session(client, owner)
    first = token_for(client, owner, session["session_id"]).get_json()
    second = token_for(client, owner, session["session_id"]).get_json()

    closed = client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    assert closed.status_code == 200 and closed.get_json()["status"] == "closed"
    assert sorted(upstream.cancelled) == sorted(
        [first["chatkit_session_id"], second["chatkit_session_id"]]
    )
    assert {upstream.sessions[sid]["status"] for sid in upstream.cancelled} == {"cancelled"}
    assert {row["status"] for row in listed(client, owner)} == {"ended"}
    assert not any(record.cancel_pending for record in records(app))
    assert len(events.named("codex.chatkit.upstream.cancelled")) == 2
    # Closing again cancels nothing twice.
    client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    assert len(upstream.calls("cancel")) == 2


def test_deleting_cancels_the_upstream_session(client, owner, upstream):
    session = new_session(client, owner)
    body = token_for(client, owner, session["session_id"]).get_json()
    response = client.delete(f"/api/codex/sessions/{session['session_id']}", headers=owner)
    assert response.status_code == 204
    assert upstream.cancelled == [body["chatkit_session_id"]]


def test_an_upstream_session_that_already_expired_is_not_cancelled(
    client, owner, upstream, frozen_clock
):
    session = new_session(client, owner)
    body = token_for(client, owner, session["session_id"]).get_json()
    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    frozen_clock(expires_at + timedelta(seconds=1))
    client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    assert upstream.calls("cancel") == []


def test_expiring_a_codex_session_cancels_an_upstream_session_that_outlives_it(
    app, client, owner, upstream, runner, frozen_clock
):
    # The service may grant more than asked (a minimum lifetime): it runs past our session.
    upstream.lifetime_override = 3 * 3600
    start = datetime.now(UTC).replace(microsecond=0)
    frozen_clock(start)
    session = new_session(client, owner)
    body = token_for(client, owner, session["session_id"]).get_json()
    frozen_clock(start + timedelta(hours=1))  # idle for 1 h > CODEX_SESSION_IDLE_TTL

    result = runner.invoke(args=["sessions", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert "expired 1 session(s)" in result.output
    assert upstream.cancelled == [body["chatkit_session_id"]]


@pytest.mark.parametrize("hosted_config", [{"CHATKIT_UPSTREAM_TIMEOUT": 0.5}])
@pytest.mark.parametrize("failure", ["error", "reset", "slow"])
def test_a_failed_cancel_never_fails_the_close_and_the_purge_retries_it(
    app, client, owner, upstream, runner, events, failure
):
    session = new_session(client, owner)
    body = token_for(client, owner, session["session_id"]).get_json()
    options = {"status": 500, "body": {"error": {"message": "boom"}}} if failure == "error" else {}
    upstream.fail_next("cancel", failure, **options)

    closed = client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    assert closed.status_code == 200 and closed.get_json()["status"] == "closed"
    (record,) = records(app)
    assert record.cancel_pending is True
    (failed,) = events.named("codex.chatkit.upstream.cancel_failed")
    assert failed["chatkit_session_id"] == body["chatkit_session_id"]
    assert failed["level"] == "warning"
    assert upstream.sessions[body["chatkit_session_id"]]["status"] == "active"

    result = runner.invoke(args=["sessions", "purge-expired"])
    assert result.exit_code == 0, result.output
    (record,) = records(app)
    assert record.cancel_pending is False
    assert upstream.sessions[body["chatkit_session_id"]]["status"] == "cancelled"
    assert len(events.named("codex.chatkit.upstream.cancelled")) == 1


def test_a_pending_cancel_stays_pending_while_upstream_is_down(
    app, client, owner, upstream, runner
):
    session = new_session(client, owner)
    token_for(client, owner, session["session_id"])
    upstream.fail_next("cancel", "error", times=2, status=503, body=None)
    client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    assert runner.invoke(args=["sessions", "purge-expired"]).exit_code == 0
    (record,) = records(app)
    assert record.cancel_pending is True
    assert runner.invoke(args=["sessions", "purge-expired"]).exit_code == 0
    (record,) = records(app)
    assert record.cancel_pending is False


# Upstream failures -----------------------------------------------------------------------


def assert_nothing_recorded(app, client, owner) -> None:
    assert records(app) == []
    assert listed(client, owner) == []


@pytest.mark.parametrize("hosted_config", [{"OPENAI_API_KEY": "sk-rotated-away-0000"}])
def test_a_rejected_key_is_a_502_that_names_the_setting_not_the_key(
    app, client, owner, upstream, events
):
    session = new_session(client, owner)
    response = token_for(client, owner, session["session_id"])
    body = problem(response, 502, "upstream_error")
    assert body["title"] == "The ChatKit service refused the request"
    assert "OPENAI_API_KEY" in body["detail"] and "401" in body["detail"]
    assert body["upstream_status"] == 401
    assert "sk-rotated-away-0000" not in response.get_data(as_text=True)
    assert "sk-" not in response.get_data(as_text=True)  # not even the masked form
    (failed,) = events.named("codex.chatkit.upstream.failed")
    assert failed["error_code"] == "invalid_api_key"
    assert "sk-rotated-away-0000" not in "".join(events.lines())
    assert_nothing_recorded(app, client, owner)


@pytest.mark.parametrize(
    "hosted_config",
    [
        {
            "CODEX_AGENTS": {
                AGENT: {"name": "Demo", "placements": [PLACEMENT], "workflow_id": "wf_deleted"}
            }
        }
    ],
)
def test_an_unknown_workflow_is_a_502_with_the_upstream_reason(app, client, owner, upstream):
    session = new_session(client, owner)
    body = problem(token_for(client, owner, session["session_id"]), 502, "upstream_error")
    assert body["detail"] == (
        f"The ChatKit service refused to open a session for agent {AGENT} (HTTP 404): "
        "Workflow with id 'wf_deleted' not found."
    )
    assert body["upstream_status"] == 404
    assert body["upstream_request_id"].startswith("req_")
    assert_nothing_recorded(app, client, owner)


def test_an_upstream_429_is_our_429_with_its_retry_after(app, client, owner, upstream, events):
    session = new_session(client, owner)
    upstream.fail_next("create", "rate_limit", retry_after="17")
    response = token_for(client, owner, session["session_id"])
    body = problem(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "17"
    assert body["retry_after"] == 17
    assert body["detail"] == "Codex is busy, please retry in 17 seconds"
    assert events.named("codex.chatkit.upstream.rate_limited")[0]["retry_after"] == 17
    assert_nothing_recorded(app, client, owner)


def test_an_upstream_429_shows_the_busy_toast_to_htmx(client, owner, upstream):
    session = new_session(client, owner)
    upstream.fail_next("create", "rate_limit", retry_after="9")
    response = client.get(
        f"/api/codex/chatkit/token?session_id={session['session_id']}",
        headers={**owner, "HX-Request": "true"},
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "9"
    assert json.loads(response.headers["HX-Trigger"]) == {
        "codexweb:toast": {"message": "Codex is busy, please retry in 9 seconds", "level": "error"}
    }


@pytest.mark.parametrize("hosted_config", [{"CHATKIT_UPSTREAM_TIMEOUT": 0.5}])
@pytest.mark.parametrize(
    ("failure", "options", "detail"),
    [
        ("slow", {}, "The ChatKit service did not answer in time; try again shortly."),
        ("reset", {}, "The ChatKit service could not be reached; try again shortly."),
        (
            "error",
            {"status": 503, "body": {"error": {"message": "overloaded"}}},
            "The ChatKit service is having trouble; try again shortly.",
        ),
    ],
)
def test_timeouts_lost_connections_and_upstream_outages_are_503(
    app, client, owner, upstream, failure, options, detail
):
    session = new_session(client, owner)
    upstream.fail_next("create", failure, **options)
    body = problem(token_for(client, owner, session["session_id"]), 503, "upstream_unavailable")
    assert body["title"] == "The ChatKit service is unavailable"
    assert body["detail"] == detail
    # A create that may have reached the service is never sent twice.
    assert len(upstream.calls("create")) == 1
    assert_nothing_recorded(app, client, owner)
    # The session itself is fine: the next attempt succeeds.
    assert token_for(client, owner, session["session_id"]).status_code == 200


def test_an_unreachable_service_is_503(app, client, owner, upstream):
    session = new_session(client, owner)
    upstream.stop()
    body = problem(token_for(client, owner, session["session_id"]), 503, "upstream_unavailable")
    assert body["detail"] == "The ChatKit service could not be reached; try again shortly."
    # Closing still works: the cancel is not even needed, nothing was opened upstream.
    closed = client.post(f"/api/codex/sessions/{session['session_id']}/close", headers=owner)
    assert closed.status_code == 200


# Waiting for upstream ----------------------------------------------------------------------


@pytest.mark.parametrize("hosted_config", [{"CHATKIT_UPSTREAM_TIMEOUT": 20}])
def test_no_database_write_is_held_while_waiting_for_upstream(app, owner, upstream):
    """SQLite has one writer at a time: a token request waiting on OpenAI must not hold it,
    or every other write in the application would queue behind the HTTP call."""
    minting, other = app.test_client(), app.test_client()
    session = new_session(other, owner)
    held = upstream.fail_next("create", "slow")
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(response=token_for(minting, owner, session["session_id"]))
    )
    thread.start()
    try:
        while not upstream.calls("create"):  # the token request is now waiting on upstream
            thread.join(0.01)
        # Meanwhile another request writes: it does not wait for the upstream call.
        new_session(other, owner, placement="developer-workbench")
        assert thread.is_alive() and not held.release.is_set()
    finally:
        held.release.set()
        thread.join()
    assert result["response"].status_code == 200


@pytest.mark.parametrize("hosted_config", [{"CHATKIT_UPSTREAM_TIMEOUT": 20}])
def test_no_database_write_is_held_while_a_close_cancels_upstream(app, owner, upstream):
    """Closing commits first and cancels upstream afterwards: other writes never queue behind
    OpenAI's answer, and the close still ends with the upstream session cancelled."""
    closing, other = app.test_client(), app.test_client()
    session = new_session(other, owner)
    assert token_for(other, owner, session["session_id"]).status_code == 200
    held = upstream.fail_next("cancel", "slow")
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(
            response=closing.post(
                f"/api/codex/sessions/{session['session_id']}/close", headers=owner
            )
        )
    )
    thread.start()
    try:
        while not upstream.calls("cancel"):  # the close is now waiting on upstream
            thread.join(0.01)
        new_session(other, owner, placement="developer-workbench")
        assert thread.is_alive() and not held.release.is_set()
    finally:
        held.release.set()
        thread.join()
    assert result["response"].status_code == 200
    assert result["response"].get_json()["status"] == "closed"
