"""Engine settings that must hold on every database connection.

SQLite is the embedded default and several gunicorn workers may share one file, so every new
SQLite connection gets:

- `journal_mode=WAL`: readers never block the writer and the writer never blocks readers;
- `busy_timeout`: a writer that finds the file locked waits (up to `SQLITE_BUSY_TIMEOUT_MS`)
  instead of failing at once with "database is locked";
- `synchronous` (`SQLITE_SYNCHRONOUS`, default `NORMAL`): with WAL, `NORMAL` syncs the WAL
  only at checkpoints, `FULL` fsyncs it on every commit. WAL + `NORMAL` stays consistent after
  a crash of the application or the OS; a power loss may lose the last commits (never corrupt
  the file). Every token mint and `/current` commits, and workers queue for the one write lock
  while a commit fsyncs: `NORMAL` doubled req/s of the writing paths (docs/PERFORMANCE.md);
- `foreign_keys=ON`: SQLite ignores `REFERENCES … ON DELETE CASCADE` unless asked, per
  connection, and PostgreSQL always enforces them: both backends then behave alike.

The settings are applied in a `connect` event, so connections the pool opens later (after a
ping found a dead one, for instance) get them too.

A server database (PostgreSQL) gets a ping before a pooled connection that sat idle for
`PING_AFTER_IDLE_SECONDS` is handed out (`ping_idle_connections`), so a database restart or a
firewall that dropped a quiet connection costs a reconnect, not an error. SQLAlchemy's
`pool_pre_ping` pings on *every* checkout: one more round trip on every request, a tenth of the
token path's CPU on PostgreSQL (docs/PERFORMANCE.md). A connection in steady use is not pinged;
if the database goes away under load, the first statement on each dead connection fails as a
disconnect: that request gets 503 `unavailable`, and SQLAlchemy then discards every connection
the pool held, so the requests after it reconnect.
"""

from __future__ import annotations

import sqlite3
import time

from flask import Flask
from sqlalchemy import Engine, event, exc

from .extensions import db


def sqlite_pragmas(app: Flask) -> list[str]:
    """The statements run on each new SQLite connection, in order."""
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA busy_timeout={int(app.config['SQLITE_BUSY_TIMEOUT_MS'])}",
        f"PRAGMA synchronous={sqlite_synchronous(app)}",
        "PRAGMA foreign_keys=ON",
    ]


SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def sqlite_synchronous(app: Flask) -> str:
    """`SQLITE_SYNCHRONOUS`, checked: it is pasted into a PRAGMA, and a typo must not start."""
    level = str(app.config["SQLITE_SYNCHRONOUS"]).strip().upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise RuntimeError(
            f"SQLITE_SYNCHRONOUS must be one of {', '.join(SYNCHRONOUS_LEVELS)}, "
            f"not {app.config['SQLITE_SYNCHRONOUS']!r}"
        )
    return level


def init_app(app: Flask) -> None:
    """Attach the per-connection settings to the app's engine (after `db.init_app`)."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        _apply_on_connect(engine, sqlite_pragmas(app))
    else:
        ping_idle_connections(engine)


def _apply_on_connect(engine: Engine, statements: list[str]) -> None:
    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()


PING_AFTER_IDLE_SECONDS = 10.0
_CHECKED_IN_AT = "codexweb_checked_in_at"


def ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection before use when it sat idle (see the module doc).

    SQLAlchemy's documented pessimistic disconnect handling: a `checkout` listener that raises
    `DisconnectionError` makes the pool discard that connection and check out another.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return  # new, or in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError("idle connection failed its ping") from error
