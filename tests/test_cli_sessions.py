"""`flask --app codexweb sessions purge-expired`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from codexweb.extensions import db
from codexweb.models import CodexSession
from tests.codex_support import (
    new_session,
)

START = datetime(2026, 10, 1, tzinfo=UTC)


def test_purge_expired_persists_expiry_and_prints_a_summary(
    app, client, runner, user, auth_headers, frozen_clock, events
):
    headers = auth_headers(user)
    frozen_clock(START)
    lapsing = new_session(client, headers, placement="dashboard")["session_id"]
    closed = new_session(client, headers, placement="developer-workbench")["session_id"]
    client.post(f"/api/codex/sessions/{closed}/close", headers=headers)

    frozen_clock(START + timedelta(hours=1))
    result = runner.invoke(args=["sessions", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        "expired 1 session(s), ended 1 ChatKit session(s), deleted 0 old session(s)\n"
    )
    with app.app_context():
        assert db.session.get(CodexSession, lapsing).status == "expired"
    assert [e["session_id"] for e in events.named("codex.session.expired")] == [lapsing]

    frozen_clock(START + timedelta(days=31))  # default retention: 30 days
    result = runner.invoke(args=["sessions", "purge-expired"])
    assert result.output == (
        "expired 0 session(s), ended 0 ChatKit session(s), deleted 2 old session(s)\n"
    )
    with app.app_context():
        assert db.session.query(CodexSession).count() == 0


def test_purge_expired_prunes_retired_signing_keys(app, runner, frozen_clock):
    frozen_clock(START)
    first = runner.invoke(args=["keys", "rotate"]).output.split()[-1]
    frozen_clock(START + timedelta(minutes=1))
    runner.invoke(args=["keys", "rotate"])
    frozen_clock(START + timedelta(minutes=12))  # first retired at +1 min, token TTL 10 min
    result = runner.invoke(args=["sessions", "purge-expired"])
    assert f"pruned 1 retired signing key(s): {first}" in result.output


def test_purge_expired_on_an_empty_instance(runner):
    result = runner.invoke(args=["sessions", "purge-expired"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        "expired 0 session(s), ended 0 ChatKit session(s), deleted 0 old session(s)\n"
    )
