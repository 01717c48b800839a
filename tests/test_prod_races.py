"""Races on PostgreSQL under four gunicorn workers: requests that really run at the same time
in different processes (see `spread_over_workers`), and the rows they leave behind."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from codexweb.auth.accounts import create_user
from codexweb.extensions import db
from tests.conftest import access_token_for
from tests.servers import RawRequest, serve_gunicorn, spread_over_workers

pytestmark = pytest.mark.slow

WORKERS = 4
NEW_SESSION = {"placement": "dashboard", "agent_id": "agent_123"}


@pytest.fixture
def server(tmp_path, postgres_database):
    env = {"CODEXWEB_DATABASE_URL": postgres_database, "CODEXWEB_RATELIMIT_ENABLED": "false"}
    with serve_gunicorn(tmp_path, workers=WORKERS, env=env) as running:
        yield running


@pytest.fixture
def bearers(app_factory, postgres_database, server):
    """`bearers(n)`: n verified users on the server's database, as Authorization headers."""

    def make(count: int) -> list[dict[str, str]]:
        app = app_factory(
            DATABASE_URL=postgres_database, SECRET_KEY=server.env["CODEXWEB_SECRET_KEY"]
        )
        with app.app_context():
            users = [
                create_user(f"racer{i}@example.com", "correct horse battery staple", verified=True)
                for i in range(count)
            ]
            db.session.commit()
            return [{"Authorization": f"Bearer {access_token_for(u.id)}"} for u in users]

    return make


def rows(database_url: str, query: str, **params) -> list[dict]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(query), params)]
    finally:
        engine.dispose()


def body(response) -> dict:
    return json.loads(response.body) if response.body else {}


def test_64_concurrent_creates_give_one_session_and_63_conflicts(
    server, bearers, postgres_database
):
    (owner,) = bearers(1)
    create = RawRequest("POST", "/api/codex/sessions", json=NEW_SESSION, headers=owner)
    responses = spread_over_workers(server.url, [create] * 64, workers=WORKERS, rounds=16)

    assert Counter(r.status for r in responses) == {201: 1, 409: 63}
    (created,) = [body(r) for r in responses if r.status == 201]
    for conflict in (body(r) for r in responses if r.status == 409):
        assert conflict["code"] == "session_exists"
        assert conflict["session_id"] == created["session_id"]
    active = rows(
        postgres_database,
        "SELECT id FROM codex_sessions WHERE placement = 'dashboard' AND status = 'active'",
    )
    assert active == [{"id": created["session_id"]}]
    assert "Traceback" not in server.log()


# Every order of close, delete and two token requests, each raced on its own session.
ORDERS = list(itertools.permutations(["token", "close", "token2", "delete"]))[::3]


def test_close_delete_and_token_racing_on_one_session_stay_consistent(
    server, bearers, postgres_database
):
    users = bearers(len(ORDERS))
    session_ids = []
    for headers in users:
        (created,) = spread_over_workers(
            server.url,
            [RawRequest("POST", "/api/codex/sessions", json=NEW_SESSION, headers=headers)],
            workers=1,
            rounds=1,
        )
        assert created.status == 201
        session_ids.append(body(created)["session_id"])

    def request(kind: str, session_id: str, headers: dict) -> RawRequest:
        path = {
            "token": f"/api/codex/chatkit/token?session_id={session_id}",
            "token2": f"/api/codex/chatkit/token?session_id={session_id}",
            "close": f"/api/codex/sessions/{session_id}/close",
            "delete": f"/api/codex/sessions/{session_id}",
        }[kind]
        method = {"close": "POST", "delete": "DELETE"}.get(kind, "GET")
        return RawRequest(method, path, headers=headers)

    batches = [
        [request(kind, session_id, headers) for kind in order]
        for order, session_id, headers in zip(ORDERS, session_ids, users, strict=True)
    ]
    responses = spread_over_workers(
        server.url, [r for batch in batches for r in batch], workers=WORKERS, rounds=len(ORDERS)
    )

    allowed = {"token": {200, 404}, "token2": {200, 404}, "close": {200, 404}, "delete": {204}}
    for index, (order, session_id) in enumerate(zip(ORDERS, session_ids, strict=True)):
        answers = dict(zip(order, responses[index * WORKERS : (index + 1) * WORKERS], strict=True))
        for kind, response in answers.items():
            assert response.status in allowed[kind], (kind, response.status, response.body)
        minted = sum(answers[kind].status == 200 for kind in ("token", "token2"))
        assert_consistent(postgres_database, session_id, minted)
    assert "Traceback" not in server.log()


def assert_consistent(database_url: str, session_id: str, tokens_minted: int) -> None:
    (session,) = rows(
        database_url,
        "SELECT status, closed_at, deleted_at FROM codex_sessions WHERE id = :id",
        id=session_id,
    )
    assert session["status"] == "closed"
    assert session["closed_at"] is not None and session["deleted_at"] is not None
    chatkit = rows(
        database_url,
        "SELECT status, ended_at, tokens_issued FROM chatkit_sessions WHERE codex_session_id = :id",
        id=session_id,
    )
    assert all(record["status"] != "active" for record in chatkit), chatkit
    assert all(record["ended_at"] is not None for record in chatkit), chatkit
    assert sum(record["tokens_issued"] for record in chatkit) == tokens_minted
