"""Engine settings that must hold on every database connection.

SQLite is the embedded default and several gunicorn workers may share one file, so every new
SQLite connection gets:

- `journal_mode=WAL`: readers never block the writer and the writer never blocks readers;
- `busy_timeout`: a writer that finds the file locked waits (up to `SQLITE_BUSY_TIMEOUT_MS`)
  instead of failing at once with "database is locked";
- `foreign_keys=ON`: SQLite ignores `REFERENCES … ON DELETE CASCADE` unless asked, per
  connection, and PostgreSQL always enforces them: both backends then behave alike.

The settings are applied in a `connect` event, so connections the pool opens later (after a
pre-ping found a dead one, for instance) get them too. PostgreSQL needs nothing here.
"""

from __future__ import annotations

import sqlite3

from flask import Flask
from sqlalchemy import Engine, event

from .extensions import db


def sqlite_pragmas(app: Flask) -> list[str]:
    """The statements run on each new SQLite connection, in order."""
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA busy_timeout={int(app.config['SQLITE_BUSY_TIMEOUT_MS'])}",
        "PRAGMA foreign_keys=ON",
    ]


def init_app(app: Flask) -> None:
    """Attach the per-connection settings to the app's engine (after `db.init_app`)."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        _apply_on_connect(engine, sqlite_pragmas(app))


def _apply_on_connect(engine: Engine, statements: list[str]) -> None:
    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
