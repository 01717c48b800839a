"""The embedded default under load: two gunicorn workers writing to one SQLite file never
answer "database is locked" or any 5xx, and every acknowledged write is there afterwards."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from codexweb.auth.accounts import create_user
from codexweb.extensions import db
from tests.conftest import access_token_for
from tests.servers import RawRequest, serve_gunicorn, spread_over_workers

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"


@pytest.fixture
def server(tmp_path):
    env = {"CODEXWEB_RATELIMIT_ENABLED": "false"}
    with serve_gunicorn(tmp_path, workers=2, env=env) as running:
        yield running


def database_url(server) -> str:
    return f"sqlite:///{server.instance_path / 'codexweb.db'}"


def count(server, query: str) -> int:
    engine = create_engine(database_url(server), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(text(query)).scalar_one()
    finally:
        engine.dispose()


def test_two_workers_registering_at_once_never_lock(server):
    registrations = [
        RawRequest(
            "POST", "/api/auth/register", json={"email": f"w{i}@example.com", "password": PASSWORD}
        )
        for i in range(60)
    ]
    responses = spread_over_workers(server.url, registrations, workers=2, rounds=30)
    assert Counter(r.status for r in responses) == {201: 60}
    assert count(server, "SELECT count(*) FROM users") == 60
    log = server.log()
    assert "database is locked" not in log
    assert "Traceback" not in log


def test_many_clients_opening_using_and_closing_sessions_never_lock(server, app_factory):
    seeding = app_factory(
        DATABASE_URL=database_url(server), SECRET_KEY=server.env["CODEXWEB_SECRET_KEY"]
    )
    with seeding.app_context():
        users = [create_user(f"c{i}@example.com", PASSWORD, verified=True) for i in range(12)]
        db.session.commit()
        bearers = [{"Authorization": f"Bearer {access_token_for(u.id)}"} for u in users]

    def client_cycles(headers: dict[str, str]) -> list[int]:
        statuses = []
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            for _ in range(8):
                created = client.post(
                    "/api/codex/sessions", json={"placement": "dashboard", "agent_id": "agent_123"}
                )
                statuses.append(created.status_code)
                session_id = created.json().get("session_id")
                token = client.get("/api/codex/chatkit/token", params={"session_id": session_id})
                closed = client.post(f"/api/codex/sessions/{session_id}/close")
                statuses += [token.status_code, closed.status_code]
        return statuses

    with ThreadPoolExecutor(max_workers=len(bearers)) as pool:
        statuses = [s for per_client in pool.map(client_cycles, bearers) for s in per_client]

    assert Counter(statuses) == {201: 12 * 8, 200: 2 * 12 * 8}
    assert count(server, "SELECT count(*) FROM codex_sessions WHERE status = 'closed'") == 96
    assert count(server, "SELECT sum(tokens_issued) FROM chatkit_sessions") == 96
    log = server.log()
    assert "database is locked" not in log
    assert "Traceback" not in log
