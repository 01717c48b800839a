"""Shared fixtures: the app, its client and CLI runner, users, auth headers, mail, events,
the frozen clock, and the `require_*` helpers that turn a skip into a failure in CI."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from codexweb import clock, create_app
from codexweb.auth.accounts import create_user
from codexweb.auth.logins import LOGIN_SESSION_KEY, start_login
from codexweb.auth.tokens import issue_access_token
from codexweb.extensions import db
from codexweb.logging import EVENTS_LOGGER
from codexweb.models import User
from codexweb.outbox import stop_drainer
from tests.services import (
    RedisNamespace,
    admin_engine,
    fresh_postgres_database,
    fresh_redis_namespace,
    postgres_available,
    postgres_url,
    redis_available,
    redis_url,
)

TEST_PASSWORD = "correct horse battery staple"


# Which tests a run selects ----------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--only-on-test-database",
        action="store_true",
        help="run only the tests whose apps use the test database (CODEXWEB_TEST_DATABASE_URL)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--only-on-test-database`: CI's second pass, on PostgreSQL, drops the tests whose result
    cannot depend on CODEXWEB_TEST_DATABASE_URL, because no app of theirs uses it.

    Those are the tests without the `test_database_url` fixture (the `app` and `app_factory`
    fixtures build on it): the browser tests and the other real-server tests, whose servers
    get their own environment (tests/servers.py) with the database each test names, and the
    tests with no database at all. The first pass, on SQLite, has already run them.
    """
    if not config.getoption("--only-on-test-database"):
        return
    kept, dropped = [], []
    for item in items:
        uses_test_database = "test_database_url" in getattr(item, "fixturenames", ())
        (kept if uses_test_database else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# Services and the browser ----------------------------------------------------------------


def require(flag: str, reason: str) -> None:
    """Skip with `reason`, or fail when CI set `flag` (CODEXWEB_REQUIRE_SERVICES/BROWSER=1)."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{reason} (and {flag}=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (URL) for this test alone; skips without PostgreSQL."""
    server = postgres_url()
    if not postgres_available(server):
        shown = make_url(server).render_as_string(hide_password=True)
        require("CODEXWEB_REQUIRE_SERVICES", f"PostgreSQL is not reachable at {shown}")
    with fresh_postgres_database(server) as database_url:
        yield database_url


@pytest.fixture
def redis_namespace() -> Iterator[RedisNamespace]:
    """A Redis database (1–15) and key prefix for this test alone; skips without Redis."""
    server = redis_url()
    if not redis_available(server):
        require("CODEXWEB_REQUIRE_SERVICES", f"Redis is not reachable at {server}")
    with fresh_redis_namespace(server) as namespace:
        yield namespace


# The application -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _mail_drainer_ends_with_its_test() -> Iterator[None]:
    """MAIL_QUEUE=thread starts a drainer thread serving the app of the test that enqueued;
    left running, it would deliver (or fail on) the mail of later tests sharing its database."""
    yield
    stop_drainer()


def base_test_config(tmp_path, database_url: str | None = None) -> dict[str, Any]:
    """Test config on `database_url`, or on a fresh SQLite file in `tmp_path` without one."""
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "DATABASE_URL": database_url or f"sqlite:///{instance / 'test.db'}",
        "MAIL_BACKEND": "locmem",
        "MAIL_QUEUE": "manual",  # the `outbox` fixture (or `deliver_mail`) drains it
        "MAIL_FILE_DIR": str(instance / "outbox"),
        "CHATKIT_KEYS_DIR": str(instance / "chatkit_keys"),
        "RATELIMIT_ENABLED": False,
        "LOG_FORMAT": "json",
        "PUBLIC_BASE_URL": "http://localhost",
        "INSTANCE_PATH_FOR_TESTS": str(instance),
    }


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Override in a test module (or with `@pytest.mark.parametrize`) to change the config."""
    return {}


@pytest.fixture(scope="session")
def test_database_url() -> Iterator[str | None]:
    """The database every test app uses: None (a fresh SQLite file per test) by default.

    With `CODEXWEB_TEST_DATABASE_URL` (e.g. `postgresql+psycopg://postgres@127.0.0.1:5432/test`)
    the whole run gets one fresh PostgreSQL database with a random name, created from that
    URL, emptied after each test and dropped at the end of the run.
    """
    url = os.environ.get("CODEXWEB_TEST_DATABASE_URL")
    if not url:
        yield None
        return
    with fresh_postgres_database(url) as database_url:
        yield database_url


@pytest.fixture
def app_factory(tmp_path, test_database_url) -> Iterator[Callable[..., Flask]]:
    """Build apps on a fresh database; each gets its schema and is torn down after the test."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        config = base_test_config(tmp_path, test_database_url)
        config.update(overrides)
        app = create_app(config)
        with app.app_context():
            db.create_all()
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    if test_database_url and any(a.config["DATABASE_URL"] == test_database_url for a in apps):
        empty_tables(test_database_url)


def empty_tables(database_url: str) -> None:
    """Remove every row the test wrote to the shared PostgreSQL database."""
    tables = ", ".join(f'"{table.name}"' for table in db.metadata.sorted_tables)
    engine = admin_engine(database_url)
    try:
        with engine.connect() as connection:
            # A connection the test leaked must not make the whole run hang on a lock.
            connection.exec_driver_sql("SET lock_timeout = '10s'")
            connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


@pytest.fixture
def app(app_factory, config_overrides) -> Flask:
    return app_factory(**config_overrides)


@pytest.fixture(autouse=True)
def _push_request_context():
    """Replaces pytest-flask's autouse fixture of this name, which keeps one request context
    pushed for a whole test so that every client request shares one `g`. Here each request
    gets its own context, as it does in production."""
    yield


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(autouse=True)
def _unfrozen_clock() -> Iterator[None]:
    yield
    clock.freeze(None)


@pytest.fixture
def frozen_clock() -> Callable[[datetime], None]:
    """`frozen_clock(moment)` pins codexweb's clock; it is released after the test."""
    return clock.freeze


# Users and credentials -------------------------------------------------------------------


@pytest.fixture
def make_user(app) -> Callable[..., User]:
    counter = iter(range(1, 10_000))

    def make(email: str | None = None, *, verified: bool = True, password: str = TEST_PASSWORD):
        with app.app_context():
            user = create_user(
                email or f"user{next(counter)}@example.com", password, verified=verified
            )
            db.session.commit()
            db.session.refresh(user)
            db.session.expunge(user)
            return user

    return make


def access_token_for(user_id: str) -> str:
    """An access token of a fresh API login of `user_id` (inside an app context)."""
    user = db.session.get(User, user_id)
    login = start_login(user, "api", user_agent="pytest")
    db.session.commit()
    return issue_access_token(user_id, login.id)


def browser_session_for(user_id: str) -> dict[str, Any]:
    """What a browser's session cookie holds after logging in on the pages (inside an app
    context): a live browser login of `user_id` and flask-login's keys."""
    user = db.session.get(User, user_id)
    login = start_login(user, "browser", user_agent="pytest")
    db.session.commit()
    return {"_user_id": user_id, "_fresh": True, LOGIN_SESSION_KEY: login.id}


@pytest.fixture
def auth_headers(app) -> Callable[[User], dict[str, str]]:
    def headers(user: User) -> dict[str, str]:
        with app.app_context():
            return {"Authorization": f"Bearer {access_token_for(user.id)}"}

    return headers


@pytest.fixture
def user(make_user) -> User:
    return make_user("owner@example.com")


@pytest.fixture
def unverified_user(make_user) -> User:
    return make_user("pending@example.com", verified=False)


# Mail and events -------------------------------------------------------------------------


def deliver_mail(app: Flask) -> int:
    """Send what the mail queue holds now (tests run it with MAIL_QUEUE=manual)."""
    from codexweb.outbox import deliver_due

    with app.app_context():
        return deliver_due()


class DrainingOutbox(list):
    """The locmem backend's outbox that first delivers the queue whenever it is read, so a
    test reads mail as a user would find it in the inbox once the worker has run."""

    def __init__(self, app: Flask) -> None:
        super().__init__()
        self.app = app

    def _drain(self) -> None:
        deliver_mail(self.app)

    def __getitem__(self, index):
        self._drain()
        return super().__getitem__(index)

    def __iter__(self):
        self._drain()
        return super().__iter__()

    def __len__(self) -> int:
        self._drain()
        return super().__len__()

    def __bool__(self) -> bool:
        return len(self) > 0


@pytest.fixture
def outbox(app) -> list:
    """Messages sent through the locmem backend during the test (the queue delivered first)."""
    state = app.extensions["mailman"]  # the locmem backend appends to `state.outbox`
    state.outbox = DrainingOutbox(app)
    return state.outbox


class EventLog(list):
    def named(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self if entry["event"] == name]

    def lines(self) -> list[str]:
        return [json.dumps(entry, default=str) for entry in self]


class _EventCapture(logging.Handler):
    def __init__(self, sink: EventLog) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "event_fields", None)
        if fields is not None:
            self.sink.append(
                {"event": record.getMessage(), "level": record.levelname.lower(), **fields}
            )


@pytest.fixture
def events() -> Iterator[EventLog]:
    """Structured events emitted during the test, as dicts (`events.named("…")`)."""
    sink = EventLog()
    handler = _EventCapture(sink)
    logger = logging.getLogger(EVENTS_LOGGER)
    logger.addHandler(handler)
    yield sink
    logger.removeHandler(handler)


# Single sign-on ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory) -> Iterator[Any]:
    """A real OpenID provider (Node + oidc-provider) on loopback for the whole run; skips
    with the reason when Node or the npm package is missing (fails under
    CODEXWEB_REQUIRE_SERVICES=1)."""
    from tests.oidc_provider import run_provider, unavailable_reason

    reason = unavailable_reason()
    if reason:
        require("CODEXWEB_REQUIRE_SERVICES", reason)
    with run_provider(tmp_path_factory.mktemp("oidc")) as provider:
        yield provider


# The ChatKit runtime ---------------------------------------------------------------------


@pytest.fixture
def model_server() -> Iterator[Any]:
    """A stand-in OpenAI-compatible model server on loopback (tests/model_server.py)."""
    from tests.model_server import ModelServer

    server = ModelServer().start()
    yield server
    server.stop()
