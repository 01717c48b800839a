"""Bulk seeding: users, Codex sessions and their ChatKit records, with SQLAlchemy core.

The scale run needs a million stored sessions inside the time budget, so rows are built as
plain dicts and written with `executemany` in large batches inside one transaction (no ORM
objects, no per-row flush). Only columns whose meaning the bench relies on are given; every
other column takes its model default, so the seed keeps working when a column is added.

The database holds three kinds of users:

- **bench users** (`api_users`): verified, each with one active session on the bench placement
  and `HISTORY` closed ones. Every load scenario that reads (`/current`, token, page, login)
  walks these users. Their own row count is the same at every scale, so the scale run
  measures the table growing around them, not their own history growing.
- **cycle users**: verified, no sessions; one fresh set per round of the create+close cycle,
  so a round never meets a session left active by the previous one.
- **filler users**: everyone else, 100 sessions each (one active, the rest closed or expired,
  spread over the retention window) until the table holds the requested total.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from flask import Flask
from sqlalchemy import JSON, Boolean, Connection, Engine, Table

from codexweb.auth.accounts import hash_password
from codexweb.auth.tokens import issue_access_token
from codexweb.clock import utcnow
from codexweb.extensions import db
from codexweb.ids import new_id
from codexweb.models import ChatKitSession, CodexSession, Login, User, UTCDateTime

PASSWORD = "bench password, long enough"
PLACEMENT = "developer-workbench"
OTHER_PLACEMENT = "dashboard"
AGENT_ID = "agent_123"
HISTORY = 10  # closed sessions per bench user
FILLER_SESSIONS_PER_USER = 100
BATCH = 20_000
EMPTY_JSON = "{}"


@dataclass(frozen=True)
class BenchUser:
    id: str
    email: str
    login_id: str  # a live browser login: its access token and session cookie both name it
    access_token: str
    session_id: str | None = None  # the active session on PLACEMENT, if any


@dataclass
class Population:
    api_users: list[BenchUser]
    cycle_users: list[list[BenchUser]]
    sessions: int = 0
    seconds: float = 0.0
    details: dict[str, int] = field(default_factory=dict)


def seed(
    app: Flask,
    *,
    total_sessions: int,
    api_users: int,
    cycle_rounds: int,
    cycle_users_per_round: int,
    password_hash: str | None = None,
) -> Population:
    """Fill an empty, migrated database; returns who to log in as and what was written."""
    started = time.perf_counter()
    rng = random.Random(total_sessions)  # the same data for the same size, run after run
    with app.app_context():
        password_hash = password_hash or hash_password(PASSWORD)
        # Naive UTC throughout: the driver-level insert below stores it as SQLAlchemy would.
        now = utcnow().replace(tzinfo=None)
        engine = db.engine
        bench = _new_users("bench", api_users, password_hash, now)
        cycles = [
            _new_users(f"cycle{round_}", cycle_users_per_round, password_hash, now)
            for round_ in range(cycle_rounds)
        ]
        bench_count = len(bench) * (HISTORY + 1)
        filler_needed = max(0, total_sessions - bench_count)
        # Random ids, handed out in sorted order: the primary key indexes then grow at their
        # end instead of splitting pages all over a table larger than the cache.
        session_ids = iter(sorted(islice(SESSION_IDS, bench_count + filler_needed)))
        chatkit_ids = iter(sorted(islice(CHATKIT_IDS, bench_count + filler_needed)))
        bench_sessions = list(_bench_sessions(bench, now, rng, session_ids))
        filler_count = -(-filler_needed // FILLER_SESSIONS_PER_USER)
        filler = _new_users("filler", filler_count, password_hash, now)
        with engine.begin() as connection, _secondary_indexes_deferred(connection):
            _bulk_load_settings(connection)
            _insert(connection, User, [*bench, *(u for group in cycles for u in group), *filler])
            _insert(connection, Login, _logins([*bench, *(u for g in cycles for u in g)], now))
            _insert_sessions(connection, bench_sessions, chatkit_ids)
            _insert_sessions(
                connection,
                _filler_sessions(filler, filler_needed, now, rng, session_ids),
                chatkit_ids,
            )
        active = {row["user_id"]: row["id"] for row in bench_sessions if row["status"] == "active"}
        population = Population(
            api_users=[_bench_user(row, active.get(row["id"])) for row in bench],
            cycle_users=[[_bench_user(row) for row in group] for group in cycles],
            sessions=len(bench_sessions) + filler_needed,
        )
        _analyze(engine)
    population.seconds = time.perf_counter() - started
    population.details = {
        "users": len(bench) + len(filler) + sum(len(group) for group in cycles),
        "bench_users": len(bench),
        "filler_users": len(filler),
    }
    return population


def _new_users(kind: str, count: int, password_hash: str, now: datetime) -> list[dict]:
    return [
        {
            "id": next(USER_IDS),
            "email": f"{kind}-{index}@bench.example.com",
            "password_hash": password_hash,
            "email_verified_at": now,
            "created_at": now - timedelta(days=60),
        }
        for index in range(count)
    ]


def _logins(users: list[dict], now: datetime) -> list[dict]:
    """One live browser login per user; its id is kept on the user row for `_bench_user`."""
    rows = []
    for user in users:
        user["login_id"] = new_id("lgn")
        rows.append(
            {
                "id": user["login_id"],
                "user_id": user["id"],
                "kind": "browser",
                "created_at": now,
                "last_used_at": now,
                "remember": False,
                "expires_at": now + timedelta(days=14),
            }
        )
    return rows


def _bench_user(row: dict, session_id: str | None = None) -> BenchUser:
    token = issue_access_token(row["id"], row["login_id"])
    return BenchUser(row["id"], row["email"], row["login_id"], token, session_id)


def _session(
    session_id: str,
    user_id: str,
    placement: str,
    status: str,
    created_at: datetime,
    idle: timedelta,
) -> dict:
    last_active = created_at + idle
    return {
        "id": session_id,
        "user_id": user_id,
        "placement": placement,
        "agent_id": AGENT_ID,
        "context": {},
        "metadata": {},
        "status": status,
        "created_at": created_at,
        "last_active_at": last_active,
        "expires_at": last_active + timedelta(minutes=30),
        "closed_at": last_active if status == "closed" else None,
    }


def _bench_sessions(
    users: list[dict], now: datetime, rng: random.Random, ids: Iterator[str]
) -> Iterator[dict]:
    for user in users:
        for _ in range(HISTORY):
            created = now - timedelta(days=rng.uniform(1, 29))
            yield _session(
                next(ids), user["id"], PLACEMENT, "closed", created, timedelta(minutes=20)
            )
        # Active until well after the run: token mints and /current slide it further.
        started = now - timedelta(minutes=1)
        yield _session(next(ids), user["id"], PLACEMENT, "active", started, timedelta(0))


def _filler_sessions(
    users: list[dict], count: int, now: datetime, rng: random.Random, ids: Iterator[str]
) -> Iterator[dict]:
    written = 0
    for user in users:
        for index in range(FILLER_SESSIONS_PER_USER):
            if written == count:
                return
            if index == 0:
                row = _session(next(ids), user["id"], OTHER_PLACEMENT, "active", now, timedelta(0))
            else:
                created = now - timedelta(days=rng.uniform(1, 29), seconds=index)
                status = "closed" if index % 3 else "expired"
                row = _session(
                    next(ids), user["id"], PLACEMENT, status, created, timedelta(minutes=5)
                )
            written += 1
            yield row


def _insert_sessions(
    connection, rows: Iterator[dict] | list[dict], chatkit_ids: Iterator[str]
) -> None:
    """Sessions, each with its one ChatKit record (the local provider keeps one per session)."""
    for batch in _batches(iter(rows), BATCH):
        bulk_insert(connection, CodexSession.__table__, batch)
        bulk_insert(
            connection,
            ChatKitSession.__table__,
            [
                {
                    "id": next(chatkit_ids),
                    "codex_session_id": row["id"],
                    "user_id": row["user_id"],
                    "provider": "local",
                    "status": "active" if row["status"] == "active" else "ended",
                    "created_at": row["created_at"],
                    "expires_at": row["expires_at"],
                    "ended_at": None if row["status"] == "active" else row["last_active_at"],
                    "tokens_issued": 0,
                    "cancel_pending": False,
                }
                for row in batch
            ],
        )


def _insert(connection, model, rows: list[dict]) -> None:
    for batch in _batches(iter(rows), BATCH):
        bulk_insert(connection, model.__table__, batch)


def bulk_insert(connection: Connection, table: Table, rows: list[dict]) -> None:
    """Insert dict rows through the driver: `executemany` on SQLite, `COPY` on PostgreSQL.

    SQLAlchemy's per-value bind processing cost more than SQLite's own work here, so values
    are converted once per column kind instead. Columns the rows leave out get their model's
    Python default, as an ORM insert would give them.
    """
    if not rows:
        return
    given = list(rows[0])
    defaults = _python_defaults(table, given)
    columns = [*given, *defaults]
    dialect = connection.dialect.name
    converters = [_converter(table.c[name].type, dialect) for name in given]
    tuples = [
        (
            *[convert(row[name]) for name, convert in zip(given, converters, strict=True)],
            *[default() for default in defaults.values()],
        )
        for row in rows
    ]
    names = ", ".join(f'"{name}"' for name in columns)
    cursor = connection.connection.driver_connection.cursor()
    try:
        if dialect == "postgresql":
            with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for values in tuples:
                    copy.write_row(values)
        else:
            marks = ", ".join("?" for _ in columns)
            # Names come from the model's Table, never from input.
            statement = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'  # noqa: S608
            cursor.executemany(statement, tuples)
    finally:
        cursor.close()


def _python_defaults(table: Table, given: list[str]) -> dict[str, Callable[[], Any]]:
    defaults = {}
    for column in table.columns:
        if column.name in given or column.default is None:
            continue
        default = column.default
        if default.is_callable:
            defaults[column.name] = lambda fn=default.arg: fn(None)
        elif default.is_scalar:
            defaults[column.name] = lambda value=default.arg: value
    return defaults


def _converter(column_type, dialect: str) -> Callable[[Any], Any]:
    """Python value -> what the driver stores for that column, as SQLAlchemy would store it.

    Times are naive UTC here (the models' `UTCDateTime` stores them so).
    """
    if isinstance(column_type, UTCDateTime):
        if dialect == "sqlite":
            # SQLAlchemy's SQLite DATETIME text format; comparisons are textual, so it must match.
            return lambda value: None if value is None else value.isoformat(" ", "microseconds")
        return _same
    if isinstance(column_type, JSON):
        return lambda value: EMPTY_JSON if value == {} else json.dumps(value)
    if isinstance(column_type, Boolean) and dialect == "sqlite":
        return lambda value: None if value is None else int(value)
    return _same


def _same(value: Any) -> Any:
    return value


def _batches(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ids(prefix: str) -> Iterator[str]:
    """Ids in `codexweb.ids.new_id`'s format (prefix, 24 URL-safe characters), made in bulk:
    one `urandom` call per 10,000 ids instead of one per id."""
    while True:
        chunk = base64.urlsafe_b64encode(os.urandom(18 * 10_000)).decode()
        for start in range(0, len(chunk), 24):
            yield f"{prefix}_{chunk[start : start + 24]}"


USER_IDS = _ids("usr")
SESSION_IDS = _ids("cxs")
CHATKIT_IDS = _ids("cks")


@contextmanager
def _secondary_indexes_deferred(connection: Connection) -> Iterator[None]:
    """Drop the seeded tables' secondary indexes, and create them again, exactly as the
    migration defined them (their SQL is read back from the database), once the rows are in:
    one sort per index instead of a million random inserts into each. Indexes behind a
    primary key or unique constraint stay (they cannot be dropped without the constraint)."""
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            " AND tbl_name IN ('users', 'codex_sessions', 'chatkit_sessions')"
        )
    else:
        rows = connection.exec_driver_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename IN ('users', 'codex_sessions', 'chatkit_sessions')"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
    indexes = list(rows)
    for name, _ in indexes:
        connection.exec_driver_sql(f'DROP INDEX "{name}"')
    yield
    for _, definition in indexes:
        connection.exec_driver_sql(definition)


def _bulk_load_settings(connection: Connection) -> None:
    """SQLite: no fsync and a large page cache for this connection only (the servers keep
    their own settings). A crash mid-seed only loses a bench database."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA synchronous=OFF")
        connection.exec_driver_sql("PRAGMA cache_size=-262144")


def _analyze(engine: Engine) -> None:
    """PostgreSQL: the statistics autovacuum would gather after a bulk load, gathered now.

    SQLite keeps none unless asked (codexweb never runs ANALYZE), so it is left as production
    would have it.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
