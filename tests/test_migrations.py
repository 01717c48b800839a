"""The Alembic migrations, run the way an operator runs them (`flask --app codexweb db …`), on
SQLite and on PostgreSQL: upgrade, no drift against the models, downgrade to nothing and up
again, and the partial unique index that keeps one active session per (user, placement, agent).
"""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from codexweb.clock import utcnow
from tests.servers import REPO, VENV_BIN, codexweb_env

pytestmark = pytest.mark.slow

TABLES = {
    "users",
    "refresh_tokens",
    "codex_sessions",
    "chatkit_sessions",
    "logins",
    "used_tokens",
    "mail_outbox",
    "identities",
    "signing_keys",
    "chatkit_threads",
    "chatkit_items",
    "chatkit_attachments",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrated.db'}"
    return request.getfixturevalue("postgres_database")


def flask_db(database_url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = codexweb_env(tmp_path / "instance", {"CODEXWEB_DATABASE_URL": database_url})
    return subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", "db", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def table_names(database_url: str) -> set[str]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_check_downgrade_and_upgrade_again(database_url, tmp_path):
    ok(flask_db(database_url, tmp_path, "upgrade"))
    assert table_names(database_url) == TABLES
    assert "No new upgrade operations detected" in ok(flask_db(database_url, tmp_path, "check"))

    ok(flask_db(database_url, tmp_path, "downgrade", "base"))
    assert table_names(database_url) == set()

    ok(flask_db(database_url, tmp_path, "upgrade"))
    assert table_names(database_url) == TABLES
    assert "No new upgrade operations detected" in ok(flask_db(database_url, tmp_path, "check"))


def test_the_one_active_session_index_is_partial_and_unique(database_url, tmp_path):
    ok(flask_db(database_url, tmp_path, "upgrade"))
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            definition = index_definition(connection, "uq_codex_sessions_one_active")
        assert "UNIQUE" in definition.upper()
        assert "status" in definition and "'active'" in definition
        assert_database_enforces_one_active_session(engine)
    finally:
        engine.dispose()


def index_definition(connection, name: str) -> str:
    if connection.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    return connection.execute(text(query), {"name": name}).scalar_one()


def assert_database_enforces_one_active_session(engine) -> None:
    now = utcnow().replace(tzinfo=None)
    later = now + timedelta(hours=1)

    def insert_session(connection, session_id: str, status: str) -> None:
        connection.execute(
            text(
                "INSERT INTO codex_sessions (id, user_id, placement, agent_id, context, metadata,"
                " status, created_at, last_active_at, expires_at)"
                " VALUES (:id, 'usr_1', 'dashboard', 'agent_123', '{}', '{}', :status,"
                " :now, :now, :later)"
            ),
            {"id": session_id, "status": status, "now": now, "later": later},
        )

    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, email, password_hash, created_at)"
                " VALUES ('usr_1', 'a@example.com', 'x', :now)"
            ),
            {"now": now},
        )
        insert_session(connection, "cxs_closed_1", "closed")
        insert_session(connection, "cxs_closed_2", "closed")
        insert_session(connection, "cxs_active_1", "active")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        insert_session(connection, "cxs_active_2", "active")
