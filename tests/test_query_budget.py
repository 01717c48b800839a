"""Query budgets of the hot paths, and whether their queries use an index (issue 6).

Deterministic by design: statements are counted with a `before_cursor_execute` listener and
plans read with the database's own EXPLAIN; nothing here is timed (docs/PERFORMANCE.md has
the timings, measured side by side by `make bench`).

- Budgets: the ChatKit token endpoint, `/api/codex/sessions/current` and the session panel
  partial (`/codex/chatkit` over HTMX) run at most a fixed number of statements, and that
  number does not grow with the caller's history or with other users' rows (no query per row).
- Indexes: every statement those paths and the session list run against the codex tables is
  replayed under EXPLAIN (SQLite: `EXPLAIN QUERY PLAN`; PostgreSQL: `EXPLAIN` with sequential
  scans discouraged, so a plan that still scans has no index to use) and must not scan a table.
  The PostgreSQL half runs on a fresh, randomly named database (`postgres_database`: on the
  server of `CODEXWEB_TEST_DATABASE_URL` when that names PostgreSQL, else the local one),
  dropped afterwards; it skips without PostgreSQL, or fails with `CODEXWEB_REQUIRE_SERVICES=1`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert

from codexweb.auth.accounts import create_user
from codexweb.clock import utcnow
from codexweb.extensions import db
from codexweb.models import ChatKitSession, CodexSession, User
from tests.codex_support import AGENT, PLACEMENT, new_session
from tests.conftest import access_token_for, browser_session_for
from tests.runtime_support import (
    add_message_request,
    chatkit_token,
    create_request,
    model_agents,
    sse_events,
)

# Statements per request, counted after the first call (which may create the ChatKit record
# and load the signing key). Raise a budget only with a reason in the commit.
# No reloads after the commit (`expire_on_commit=False`, codexweb/extensions.py).
BUDGETS = {
    # user, session with its live ChatKit record (one statement), touch, one UPDATE for the
    # record's expiry and the token count.
    "token": 4,
    "current": 3,  # user, current session, touch
    "panel": 2,  # user, current session: nothing to spare
}


@pytest.fixture
def config_overrides():
    # Every call writes its activity (no coalescing): budgets and plans cover the worst case,
    # the `touch` UPDATE included; within the interval a call runs one statement fewer.
    return {"CODEX_SESSION_TOUCH_INTERVAL": 0}


CODEX_TABLES = ("codex_sessions", "chatkit_sessions", "users")
OTHER_PLACEMENT = "developer-workbench"


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any

    def touches_codex_tables(self) -> bool:
        return any(re.search(rf"\b{table}\b", self.sql) for table in CODEX_TABLES)

    def is_query(self) -> bool:
        return self.sql.lstrip().split(None, 1)[0].upper() in {"SELECT", "UPDATE", "DELETE"}


@contextmanager
def _engine_events(app, name: str, entry: Callable[..., Any]) -> Iterator[list]:
    """`entry(*arguments)` of each `name` event of the app's engine inside the block."""
    with app.app_context():
        engine = db.engine
    seen: list = []

    def record(*arguments):
        seen.append(entry(*arguments))

    event.listen(engine, name, record)
    try:
        yield seen
    finally:
        event.remove(engine, name, record)


def recorded_statements(app):
    """Every statement the app's engine sends to the database inside the block."""
    return _engine_events(
        app,
        "before_cursor_execute",
        lambda _conn, _cursor, sql, parameters, *_: Statement(sql, parameters),
    )


def recorded_commits(app):
    """One entry per transaction the app's engine commits inside the block."""
    return _engine_events(app, "commit", lambda _connection: None)


def listing(statements: list[Statement]) -> str:
    return "\n".join(f"  {statement.sql}" for statement in statements)


# Data: the caller with an active session and some history, among other users' rows --------


@dataclass
class Caller:
    user_id: str
    headers: dict[str, str]
    session_id: str


def add_history(client, headers, closed: int) -> None:
    """`closed` sessions on another placement, opened and closed over the API."""
    for _ in range(closed):
        session = new_session(client, headers, placement=OTHER_PLACEMENT)
        response = client.post(
            f"/api/codex/sessions/{session['session_id']}/close", headers=headers
        )
        assert response.status_code == 200


def make_caller(app, make_user_fn, email: str, history: int = 0) -> Caller:
    user = make_user_fn(email)
    with app.app_context():
        headers = {"Authorization": f"Bearer {access_token_for(user.id)}"}
    client = app.test_client()
    add_history(client, headers, history)
    session = new_session(client, headers)
    return Caller(user.id, headers, session["session_id"])


@dataclass(frozen=True)
class HotPath:
    name: str
    path: Callable[[Caller], str]
    cookie: bool = False  # a browser's login session instead of a Bearer token
    headers: dict[str, str] = field(default_factory=dict)
    shows: str = ""  # text the answer must contain (the page rendered what it should)

    def client(self, app, caller: Caller):
        client = app.test_client()
        if self.cookie:
            with app.app_context():
                logged_in = browser_session_for(caller.user_id)
            with client.session_transaction() as session:
                session.update(logged_in)
        return client

    def headers_for(self, caller: Caller) -> dict[str, str]:
        return {**self.headers, **({} if self.cookie else caller.headers)}


HOT_PATHS = [
    HotPath("token", lambda caller: f"/api/codex/chatkit/token?session_id={caller.session_id}"),
    HotPath("current", lambda caller: CURRENT_PATH),
    # The session panel partial (HTMX swap of /codex/chatkit) with the caller's session card.
    HotPath(
        "panel",
        lambda caller: "/codex/chatkit",
        cookie=True,
        headers={"HX-Request": "true"},
        shows="Resume session",
    ),
]
CURRENT_PATH = f"/api/codex/sessions/current?placement={PLACEMENT}&agent_id={AGENT}"


def count_statements(app, hot_path: HotPath, caller: Caller) -> list[Statement]:
    client = hot_path.client(app, caller)
    path, headers = hot_path.path(caller), hot_path.headers_for(caller)
    assert client.get(path, headers=headers).status_code == 200  # first call: set-up work
    with recorded_statements(app) as statements:
        response = client.get(path, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert hot_path.shows in response.get_data(as_text=True)
    return statements


# Budgets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hot_path", HOT_PATHS, ids=lambda hot_path: hot_path.name)
def test_hot_path_stays_within_its_statement_budget(app, make_user, hot_path):
    caller = make_caller(app, make_user, "caller@example.com")

    statements = count_statements(app, hot_path, caller)

    budget = BUDGETS[hot_path.name]
    assert len(statements) <= budget, (
        f"{hot_path.name} ran {len(statements)} statements, budget {budget}:\n"
        + listing(statements)
    )


@pytest.mark.parametrize("hot_path", HOT_PATHS, ids=lambda hot_path: hot_path.name)
def test_hot_path_statements_do_not_grow_with_stored_sessions(app, make_user, hot_path):
    quiet = make_caller(app, make_user, "quiet@example.com")
    busy = make_caller(app, make_user, "busy@example.com", history=12)
    for index in range(3):
        make_caller(app, make_user, f"other{index}@example.com", history=4)

    quiet_count = len(count_statements(app, hot_path, quiet))
    busy_statements = count_statements(app, hot_path, busy)

    assert len(busy_statements) == quiet_count, listing(busy_statements)


# A conversation turn (`POST /chatkit`) ---------------------------------------------------

# Statements of one turn with a model agent (a new thread, then a second message). The store
# reads each thread's ownership once per request (`known_threads`), however often the SDKs ask.
TURN_BUDGETS = {
    # caller's session; the new thread (its id is the store's own: no read first); user
    # item; the session's current thread; history (the SDK's read of the last two items is
    # its beginning, from the store's memo); the reply.
    "threads.create": 6,
    # caller's session; thread (ownership); user item; history; the reply.
    "threads.add_user_message": 5,
}
# Commits of the same turns. Each one before the first token delays it (a round trip, and on
# PostgreSQL a wait for the WAL flush): the thread; the user's message with the session's
# current thread; the reply.
TURN_COMMITS = {"threads.create": 3, "threads.add_user_message": 2}


def test_conversation_turn_stays_within_its_statement_budget(app_factory, model_server):
    app = app_factory(
        CODEX_AGENTS=model_agents(model_server.base_url), CODEX_SESSION_TOUCH_INTERVAL=3600
    )
    with app.app_context():
        owner = create_user("turn@example.com", "a long enough password", verified=True)
        db.session.commit()
        headers = {"Authorization": f"Bearer {access_token_for(owner.id)}"}
    client = app.test_client()
    session = new_session(client, headers, agent_id="modelled")
    token = chatkit_token(client, headers, session["session_id"])
    client.post("/chatkit", json=create_request("warm up"), headers=token).get_data()

    counted: dict[str, list[Statement]] = {}
    commits: dict[str, int] = {}
    with recorded_statements(app) as statements, recorded_commits(app) as committed:
        created = client.post("/chatkit", json=create_request("hello"), headers=token)
        events = sse_events(created.get_data(as_text=True))
    counted["threads.create"], commits["threads.create"] = list(statements), len(committed)
    thread_id = next(e["thread"]["id"] for e in events if e["type"] == "thread.created")
    with recorded_statements(app) as statements, recorded_commits(app) as committed:
        added = client.post("/chatkit", json=add_message_request(thread_id, "more"), headers=token)
        assert "assistant_message" in added.get_data(as_text=True)
    counted["threads.add_user_message"] = list(statements)
    commits["threads.add_user_message"] = len(committed)

    for turn, budget in TURN_BUDGETS.items():
        assert len(counted[turn]) <= budget, (
            f"{turn} ran {len(counted[turn])} statements, budget {budget}:\n"
            + listing(counted[turn])
        )
    assert commits == TURN_COMMITS
    with app.app_context():  # the message made its thread the current one
        assert db.session.get(CodexSession, session["session_id"]).thread_id == thread_id


# Index use -------------------------------------------------------------------------------


def explain_sqlite(connection, statement: Statement) -> tuple[list[str], list[str]]:
    """The plan, and its lines that read a whole codex table or a whole index of one."""
    rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement.sql}", statement.parameters)
    plan = [row[-1] for row in rows]
    tables = "|".join(CODEX_TABLES)
    return plan, [line for line in plan if re.match(rf"SCAN ({tables})\b", line)]


def explain_postgres(connection, statement: Statement) -> tuple[list[str], list[str]]:
    """The plan's nodes, and those that read a codex table without seeking an index: a
    sequential scan, or an index scan with no `Index Cond` (a walk over the whole index)."""
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    explained = connection.exec_driver_sql(
        f"EXPLAIN (FORMAT JSON) {statement.sql}", statement.parameters
    ).scalar_one()
    root = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    plan, problems = [], []
    for node in _plan_nodes(root):
        line = " ".join(
            str(node[key]) for key in ("Node Type", "Index Name", "Relation Name") if key in node
        )
        if "Index Cond" in node:
            line += f" [{node['Index Cond']}]"
        plan.append(line)
        kind = node["Node Type"]
        whole_index = kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in node
        if node.get("Relation Name") in CODEX_TABLES and (kind == "Seq Scan" or whole_index):
            problems.append(line)
    return plan, problems


def _plan_nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


EXPLAINERS = {"sqlite": explain_sqlite, "postgresql": explain_postgres}


def add_other_users_rows(app, users: int = 40, sessions_each: int = 50) -> None:
    """Rows of other people, so the planner weighs real alternatives (an empty table makes
    every plan cheap). PostgreSQL then gathers statistics, as autovacuum would; SQLite keeps
    none in production (codexweb never runs ANALYZE), so it plans without them here too."""
    now = utcnow()
    user_rows = [
        {
            "id": f"usr_other{index}",
            "email": f"other-user-{index}@example.com",
            "password_hash": "x",
            "email_verified_at": now,
            "created_at": now,
        }
        for index in range(users)
    ]
    session_rows = [
        {
            "id": f"cxs_other{index}_{number}",
            "user_id": f"usr_other{index}",
            "placement": PLACEMENT if number == 0 else OTHER_PLACEMENT,
            "agent_id": AGENT,
            "context": {},
            "metadata": {},
            "status": "active" if number == 0 else "closed",
            "created_at": now - timedelta(hours=number),
            "last_active_at": now - timedelta(hours=number),
            "expires_at": now + timedelta(minutes=30),
        }
        for index in range(users)
        for number in range(sessions_each)
    ]
    chatkit_rows = [
        {
            "id": f"cks_{row['id']}",
            "codex_session_id": row["id"],
            "user_id": row["user_id"],
            "status": "active" if row["status"] == "active" else "ended",
            "created_at": row["created_at"],
            "tokens_issued": 0,
            "cancel_pending": False,
        }
        for row in session_rows
    ]
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(insert(User.__table__), user_rows)
        connection.execute(insert(CodexSession.__table__), session_rows)
        connection.execute(insert(ChatKitSession.__table__), chatkit_rows)
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_app(request, app_factory, tmp_path, config_overrides):
    """The app on each database in turn, whatever database the rest of the run uses."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_database")
    else:
        url = f"sqlite:///{tmp_path / 'explain.db'}"
    return app_factory(DATABASE_URL=url, **config_overrides)


def hot_path_statements(app, make_user_fn) -> dict[str, list[Statement]]:
    caller = make_caller(app, make_user_fn, "caller@example.com", history=3)
    add_other_users_rows(app)
    recorded = {}
    for hot_path in HOT_PATHS:
        client = hot_path.client(app, caller)
        with recorded_statements(app) as statements:
            response = client.get(hot_path.path(caller), headers=hot_path.headers_for(caller))
        assert response.status_code == 200, response.get_data(as_text=True)
        recorded[hot_path.name] = statements
    client = app.test_client()
    with recorded_statements(app) as statements:
        response = client.get("/api/codex/sessions?limit=2", headers=caller.headers)
    assert response.status_code == 200
    recorded["list"] = statements
    # The second page of the list runs the keyset (cursor) query.
    cursor = response.get_json()["next_cursor"]
    assert cursor, "three closed sessions and an active one make more than one page of two"
    with recorded_statements(app) as statements:
        response = client.get(
            f"/api/codex/sessions?limit=2&cursor={cursor}", headers=caller.headers
        )
    assert response.status_code == 200
    recorded["list, next page"] = statements
    return recorded


@pytest.fixture
def make_backend_user(backend_app):
    from codexweb.auth.accounts import create_user

    counter = iter(range(1, 1000))

    def make(email: str | None = None):
        with backend_app.app_context():
            user = create_user(email or f"u{next(counter)}@example.com", "x" * 12, verified=True)
            db.session.commit()
            db.session.refresh(user)
            db.session.expunge(user)
            return user

    return make


def test_hot_path_queries_use_an_index(backend_app, make_backend_user):
    recorded = hot_path_statements(backend_app, make_backend_user)
    with backend_app.app_context():
        dialect = db.engine.dialect.name
        explain = EXPLAINERS[dialect]
        problems = []
        with db.engine.connect() as connection:
            for name, statements in recorded.items():
                queries = [s for s in statements if s.is_query() and s.touches_codex_tables()]
                assert queries, f"{name}: no query against the codex tables was recorded"
                for statement in queries:
                    with connection.begin():
                        plan, scans = explain(connection, statement)
                    if scans:
                        problems.append(f"{name}: {statement.sql}\n    " + "\n    ".join(plan))
    assert not problems, f"{dialect}: full scans:\n" + "\n".join(problems)


def test_explain_check_flags_a_query_no_index_serves(backend_app):
    """The check above can fail: a filter on an unindexed column is reported as a scan."""
    add_other_users_rows(backend_app)
    with backend_app.app_context():
        dialect = db.engine.dialect.name
        statement = {
            "sqlite": Statement("SELECT id FROM codex_sessions WHERE closed_at > ?", ("2026",)),
            "postgresql": Statement(
                "SELECT id FROM codex_sessions WHERE closed_at > %(closed)s",
                {"closed": "2026-01-01"},
            ),
        }[dialect]
        with db.engine.connect() as connection, connection.begin():
            _, scans = EXPLAINERS[dialect](connection, statement)
    assert scans
