"""Engine settings: SQLite pragmas on every connection, foreign keys enforced on every backend,
idle PostgreSQL connections pinged before use, and the PostgreSQL connect timeout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from codexweb import create_app, database
from codexweb.clock import utcnow
from codexweb.extensions import db
from codexweb.models import CodexSession, RefreshToken, User
from tests.conftest import base_test_config


def sqlite_app(app_factory, tmp_path, **overrides):
    """An app on SQLite even when the run as a whole is on PostgreSQL."""
    return app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'pragmas.db'}", **overrides)


def pragma(connection, name: str):
    return connection.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_every_sqlite_connection_gets_wal_busy_timeout_and_foreign_keys(app_factory, tmp_path):
    app = sqlite_app(app_factory, tmp_path, SQLITE_BUSY_TIMEOUT_MS=4321)
    with app.app_context():
        # Two connections open at once (so they cannot be the same pooled one), then a third
        # one opened after the pool was emptied: the settings hold on each of them.
        with db.engine.connect() as first, db.engine.connect() as second:
            for connection in (first, second):
                assert pragma(connection, "journal_mode") == "wal"
                assert pragma(connection, "busy_timeout") == 4321
                assert pragma(connection, "foreign_keys") == 1
        db.engine.dispose()
        with db.engine.connect() as later:
            assert pragma(later, "foreign_keys") == 1
            assert pragma(later, "busy_timeout") == 4321


def test_sqlite_synchronous_is_normal_by_default_and_configurable(app_factory, tmp_path):
    # synchronous=NORMAL is 1, FULL is 2 (SQLite reports the level as a number).
    default = sqlite_app(app_factory, tmp_path)
    with default.app_context(), db.engine.connect() as connection:
        assert pragma(connection, "synchronous") == 1
    full = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'full.db'}", SQLITE_SYNCHRONOUS="full")
    with full.app_context(), db.engine.connect() as connection:
        assert pragma(connection, "synchronous") == 2


def test_an_unknown_sqlite_synchronous_level_refuses_to_start(app_factory, tmp_path):
    with pytest.raises(RuntimeError, match="SQLITE_SYNCHRONOUS must be one of"):
        sqlite_app(app_factory, tmp_path, SQLITE_SYNCHRONOUS="NORMAL; DROP TABLE users")


def test_wal_mode_is_persisted_in_the_database_file(app_factory, tmp_path):
    import sqlite3

    app = sqlite_app(app_factory, tmp_path)
    with app.app_context(), db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    # A plain sqlite3 connection (an operator's `sqlite3` shell, a backup tool) sees WAL too.
    plain = sqlite3.connect(tmp_path / "pragmas.db")
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


def test_a_row_pointing_at_a_missing_user_is_refused(app):
    with app.app_context():
        db.session.add(
            RefreshToken(
                user_id="usr_does_not_exist",
                family_id="fam",
                token_hash="0" * 64,
                expires_at=utcnow() + timedelta(days=1),
            )
        )
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        assert db.session.scalar(db.select(db.func.count()).select_from(RefreshToken)) == 0


def test_deleting_a_user_deletes_their_sessions_and_tokens(app, user):
    with app.app_context():
        now = utcnow()
        db.session.add_all(
            [
                CodexSession(
                    user_id=user.id,
                    placement="dashboard",
                    agent_id="agent_123",
                    expires_at=now + timedelta(hours=1),
                ),
                RefreshToken(
                    user_id=user.id,
                    family_id="fam",
                    token_hash="1" * 64,
                    expires_at=now + timedelta(days=1),
                ),
            ]
        )
        db.session.commit()
        db.session.execute(db.delete(User).where(User.id == user.id))
        db.session.commit()
        for model in (CodexSession, RefreshToken):
            assert db.session.scalar(db.select(db.func.count()).select_from(model)) == 0


def test_no_connection_is_pinged_on_every_checkout(app_factory, tmp_path):
    # SQLite: a file in this process, no connection to lose. PostgreSQL: only idle connections
    # are pinged (below); a ping per checkout would be a round trip on every request.
    sqlite = sqlite_app(app_factory, tmp_path)
    with sqlite.app_context():
        assert db.engine.pool._pre_ping is False
    config = base_test_config(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/never_connected")
    server = create_app(config)
    assert "pool_pre_ping" not in server.config["SQLALCHEMY_ENGINE_OPTIONS"]
    with server.app_context():
        assert db.engine.pool._pre_ping is False


def test_postgresql_connections_time_out_instead_of_hanging(tmp_path):
    config = base_test_config(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/never_connected")
    config["DATABASE_CONNECT_TIMEOUT"] = 7
    app = create_app(config)
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert options["connect_args"] == {"connect_timeout": 7}


def test_the_pool_keeps_as_many_connections_as_requests_served_at_once(app_factory, tmp_path):
    # gunicorn.conf.py sets it to the worker's threads: a busy worker never opens and closes a
    # connection per request through the pool's overflow.
    app = sqlite_app(app_factory, tmp_path, DATABASE_POOL_SIZE=24)
    with app.app_context():
        held = [db.engine.connect() for _ in range(24)]
        for connection in held:
            connection.close()
        assert db.engine.pool.checkedin() == 24  # all kept for the next requests
        assert db.engine.pool.overflow() == 0


def test_the_pool_follows_the_worker_threads_unless_set(app_factory, tmp_path):
    # gunicorn.conf.py tells the app its threads per worker; DATABASE_POOL_SIZE, from the
    # instance config or the environment, still wins.
    by_threads = sqlite_app(app_factory, tmp_path, WORKER_THREADS=24)
    assert by_threads.config["SQLALCHEMY_ENGINE_OPTIONS"]["pool_size"] == 24
    chosen = sqlite_app(app_factory, tmp_path, WORKER_THREADS=24, DATABASE_POOL_SIZE=8)
    assert chosen.config["SQLALCHEMY_ENGINE_OPTIONS"]["pool_size"] == 8
    plain = sqlite_app(app_factory, tmp_path)
    assert "pool_size" not in plain.config["SQLALCHEMY_ENGINE_OPTIONS"]


def end_the_apps_connections(database_url: str) -> int:
    """Have PostgreSQL end every other connection to the database, as a restart would."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
            )
    finally:
        engine.dispose()


def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    app_factory, postgres_database, monkeypatch
):
    app = app_factory(DATABASE_URL=postgres_database)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200  # one connection, back in the pool
    assert end_the_apps_connections(postgres_database) >= 1
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)  # it has sat idle "long"
    assert client.get("/healthz").status_code == 200


def test_a_connection_dropped_while_in_steady_use_costs_one_503(app_factory, postgres_database):
    # Not pinged (it was used a moment ago): the first statement finds it dead, that request
    # is a 503, and the worker's pool is discarded, so the next request reconnects.
    app = app_factory(DATABASE_URL=postgres_database)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert end_the_apps_connections(postgres_database) >= 1
    assert client.get("/healthz").status_code == 503
    assert client.get("/healthz").status_code == 200


NUL = "a\u0000b"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/auth/register", {"email": f"{NUL}@example.com", "password": "x" * 14}),
        ("post", "/api/auth/login", {"email": f"{NUL}@example.com", "password": "x" * 14}),
        ("post", "/api/auth/password/forgot", {"email": f"{NUL}@example.com"}),
        ("get", f"/api/codex/sessions/current?placement={NUL}", None),
        ("get", "/api/codex/sessions/cxs_%00", None),
        ("get", "/api/codex/chatkit/token?session_id=cxs_%00", None),
    ],
)
def test_a_nul_character_in_input_is_never_a_500(client, auth_headers, user, method, path, body):
    # SQLite stores NUL; PostgreSQL refuses it (DataError). Neither may turn into a 500.
    response = getattr(client, method)(path, json=body, headers=auth_headers(user))
    assert response.status_code < 500, response.get_data(as_text=True)
