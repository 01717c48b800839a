"""Expiry: idle TTL sliding on activity, capped by the maximum age, visible at once,
persisted by the purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from codexweb.codex import sessions
from codexweb.extensions import db
from codexweb.models import ChatKitSession, CodexSession
from tests.codex_support import (
    new_session,
    snapshot,
)

START = datetime(2026, 8, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def config_overrides():
    return {
        "CODEX_SESSION_IDLE_TTL": 600,
        "CODEX_SESSION_MAX_AGE": 1500,
        "CHATKIT_TOKEN_TTL": 300,
        "CODEX_SESSION_RETENTION": 86400,
    }


@pytest.fixture
def owner(user, auth_headers):
    return auth_headers(user)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def token(client, headers, session_id):
    return client.get(f"/api/codex/chatkit/token?session_id={session_id}", headers=headers)


def test_an_idle_session_reads_expired_everywhere_at_once(client, owner, frozen_clock):
    frozen_clock(at(0))
    session = new_session(client, owner)
    sid = session["session_id"]
    assert session["expires_at"] == "2026-08-01T10:10:00Z"

    frozen_clock(at(10))  # exactly at expires_at: no longer active
    fetched = client.get(f"/api/codex/sessions/{sid}", headers=owner).get_json()
    assert fetched["status"] == "expired"
    listed = client.get("/api/codex/sessions", headers=owner).get_json()["sessions"]
    assert [s["status"] for s in listed] == ["expired"]
    assert client.get("/api/codex/sessions/current", headers=owner).status_code == 404
    before = snapshot(client.application)
    refused = token(client, owner, sid)
    assert refused.status_code == 404 and refused.get_json()["code"] == "session_not_found"
    assert snapshot(client.application) == before
    chatkit = client.get("/api/codex/chatkit/sessions", headers=owner).get_json()
    assert chatkit["chatkit_sessions"][0]["status"] == "ended"


def test_activity_slides_the_idle_expiry_up_to_the_maximum_age(client, owner, frozen_clock):
    frozen_clock(at(0))
    sid = new_session(client, owner)["session_id"]

    frozen_clock(at(8))
    minted = token(client, owner, sid).get_json()
    assert minted["expires_at"] == "2026-08-01T10:13:00Z"  # token TTL 300 s
    assert client.get(f"/api/codex/sessions/{sid}", headers=owner).get_json()["expires_at"] == (
        "2026-08-01T10:18:00Z"
    )

    frozen_clock(at(16))  # resume via /current
    resumed = client.get("/api/codex/sessions/current", headers=owner).get_json()
    assert resumed["expires_at"] == "2026-08-01T10:25:00Z"  # capped: created + 1500 s

    frozen_clock(at(23))
    minted = token(client, owner, sid).get_json()
    # Two minutes of session left: the token does not outlive it.
    assert minted["expires_at"] == "2026-08-01T10:25:00Z"
    assert client.get(f"/api/codex/sessions/{sid}", headers=owner).get_json()["expires_at"] == (
        "2026-08-01T10:25:00Z"
    )

    frozen_clock(at(25))
    assert token(client, owner, sid).status_code == 404
    assert client.get(f"/api/codex/sessions/{sid}", headers=owner).get_json()["status"] == (
        "expired"
    )


def test_reading_a_session_by_id_is_not_activity(client, owner, frozen_clock):
    frozen_clock(at(0))
    sid = new_session(client, owner)["session_id"]
    frozen_clock(at(5))
    body = client.get(f"/api/codex/sessions/{sid}", headers=owner).get_json()
    assert body["last_active_at"] == "2026-08-01T10:00:00Z"
    assert body["expires_at"] == "2026-08-01T10:10:00Z"


def test_a_stale_session_does_not_block_a_new_one(client, owner, frozen_clock, events, app):
    frozen_clock(at(0))
    old = new_session(client, owner)["session_id"]
    frozen_clock(at(11))
    new = new_session(client, owner)["session_id"]
    assert new != old
    assert [e["session_id"] for e in events.named("codex.session.expired")] == [old]
    with app.app_context():
        stored = db.session.get(CodexSession, old)
        assert stored.status == "expired"
        record = db.session.scalars(
            select(ChatKitSession).where(ChatKitSession.codex_session_id == old)
        ).one()
        assert record.status == "ended" and record.ended_at == at(11)


def test_closing_an_expired_session_closes_it(client, owner, frozen_clock):
    frozen_clock(at(0))
    sid = new_session(client, owner)["session_id"]
    frozen_clock(at(30))
    closed = client.post(f"/api/codex/sessions/{sid}/close", headers=owner).get_json()
    assert closed["status"] == "closed"
    assert closed["closed_at"] == "2026-08-01T10:30:00Z"


def test_purge_persists_expiry_ends_chatkit_and_deletes_after_retention(
    app, client, owner, user, frozen_clock, events
):
    frozen_clock(at(0))
    lapsing = new_session(client, owner, placement="dashboard")["session_id"]
    token(client, owner, lapsing)
    closed = new_session(client, owner, placement="developer-workbench")["session_id"]
    client.post(f"/api/codex/sessions/{closed}/close", headers=owner)
    frozen_clock(at(5))
    deleted = new_session(client, owner, placement="developer-workbench")["session_id"]
    client.delete(f"/api/codex/sessions/{deleted}", headers=owner)

    frozen_clock(at(20))
    with app.app_context():
        report = sessions.purge_expired()
        assert (report.expired, report.deleted) == (1, 0)
        assert db.session.get(CodexSession, lapsing).status == "expired"
        live = db.session.scalars(
            select(ChatKitSession).where(ChatKitSession.status == "active")
        ).all()
        assert live == []
    assert events.named("codex.session.expired") == [
        {
            "event": "codex.session.expired",
            "level": "info",
            "user_id": user.id,
            "session_id": lapsing,
            "placement": "dashboard",
            "agent_id": "agent_123",
        }
    ]

    with app.app_context():  # a second run finds nothing new to do
        again = sessions.purge_expired()
        assert (again.expired, again.chatkit_ended, again.deleted) == (0, 0, 0)

    # Retention (one day) counts from when each session ended.
    with app.app_context():
        report = sessions.purge_expired(now=at(0) + timedelta(days=1, minutes=1))
        assert report.deleted == 1  # the closed one: closed at 10:00, the others later
        report = sessions.purge_expired(now=at(0) + timedelta(days=1, minutes=11))
        assert report.deleted == 2
        assert db.session.scalars(select(CodexSession)).all() == []
        assert db.session.scalars(select(ChatKitSession)).all() == []


def test_purge_leaves_a_session_resumed_meanwhile_active(app, client, owner, frozen_clock):
    frozen_clock(at(0))
    sid = new_session(client, owner)["session_id"]
    frozen_clock(at(9))
    client.get("/api/codex/sessions/current", headers=owner)
    frozen_clock(at(12))
    with app.app_context():
        assert sessions.purge_expired().expired == 0
        assert db.session.get(CodexSession, sid).status == "active"


def test_purge_deletes_in_batches(app, client, owner, frozen_clock):
    frozen_clock(at(0))
    for _ in range(5):
        sid = new_session(client, owner)["session_id"]
        client.post(f"/api/codex/sessions/{sid}/close", headers=owner)
    with app.app_context():
        assert sessions._delete_old(at(1), batch=2) == 5
        assert db.session.scalars(select(CodexSession)).all() == []


def session_writes(app, action) -> int:
    """How many UPDATEs of `codex_sessions` `action()` sends to the database."""
    from sqlalchemy import event

    with app.app_context():
        engine = db.engine
    writes = []

    def record(connection, cursor, sql, parameters, context, executemany):
        if sql.lstrip().upper().startswith("UPDATE CODEX_SESSIONS"):
            writes.append(sql)

    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len(writes)


def test_activity_within_the_touch_interval_is_written_once(app, client, owner, frozen_clock):
    # Default interval (60 s): the sliding expiry moves in steps of at most a minute.
    frozen_clock(at(0))
    sid = new_session(client, owner)["session_id"]
    frozen_clock(at(1))
    first = session_writes(app, lambda: token(client, owner, sid))
    stored = client.get(f"/api/codex/sessions/{sid}", headers=owner).get_json()
    assert first == 1 and stored["expires_at"] == "2026-08-01T10:11:00Z"

    frozen_clock(at(1) + timedelta(seconds=10))
    minted = []
    assert session_writes(app, lambda: minted.append(token(client, owner, sid))) == 0
    # Not written: the stored expiry stays, and the token still never outlives it.
    assert minted[0].status_code == 200
    unchanged = client.get(f"/api/codex/sessions/{sid}", headers=owner).get_json()
    assert unchanged["expires_at"] == "2026-08-01T10:11:00Z"
    assert unchanged["last_active_at"] == "2026-08-01T10:01:00Z"
    assert minted[0].get_json()["expires_at"] == "2026-08-01T10:06:10Z"  # token TTL 300 s
    assert client.get("/api/codex/sessions/current", headers=owner).status_code == 200

    frozen_clock(at(1) + timedelta(seconds=61))
    assert session_writes(app, lambda: token(client, owner, sid)) == 1
    slid = client.get(f"/api/codex/sessions/{sid}", headers=owner).get_json()
    assert slid["expires_at"] == "2026-08-01T10:12:01Z"


def test_a_touch_interval_of_zero_writes_every_activity(app_factory, make_user, frozen_clock):
    from tests.conftest import access_token_for

    app = app_factory(CODEX_SESSION_TOUCH_INTERVAL=0, CODEX_SESSION_IDLE_TTL=600)
    client = app.test_client()
    user = make_user()
    with app.app_context():
        headers = {"Authorization": f"Bearer {access_token_for(user.id)}"}
    frozen_clock(at(0))
    sid = new_session(client, headers)["session_id"]
    frozen_clock(at(0) + timedelta(seconds=10))
    assert session_writes(app, lambda: token(client, headers, sid)) == 1
    slid = client.get(f"/api/codex/sessions/{sid}", headers=headers).get_json()
    assert slid["expires_at"] == "2026-08-01T10:10:10Z"


def test_a_session_closed_after_a_coalesced_touch_gets_no_token(
    app, client, owner, frozen_clock, monkeypatch
):
    # Within the interval `touch` writes nothing, so nothing re-checks the session under the
    # write lock there: the token count must. Another request closes the session in between.
    from codexweb.codex import chatkit

    frozen_clock(at(0))
    sid = new_session(client, owner)["session_id"]
    assert token(client, owner, sid).status_code == 200
    real_touch = chatkit.touch

    def touch_then_close(session, **kwargs):
        touched = real_touch(session, **kwargs)
        closed = app.test_client().post(f"/api/codex/sessions/{sid}/close", headers=owner)
        assert closed.status_code == 200
        return touched

    monkeypatch.setattr(chatkit, "touch", touch_then_close)
    frozen_clock(at(0) + timedelta(seconds=10))
    refused = token(client, owner, sid)
    assert refused.status_code == 404 and refused.get_json()["code"] == "session_not_found"
    monkeypatch.undo()
    records = client.get("/api/codex/chatkit/sessions", headers=owner).get_json()
    assert [(r["status"], r["tokens_issued"]) for r in records["chatkit_sessions"]] == [
        ("ended", 1)
    ]
