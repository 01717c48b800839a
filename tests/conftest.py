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

from codexweb import clock, create_app
from codexweb.auth.accounts import create_user
from codexweb.auth.tokens import issue_access_token
from codexweb.extensions import db
from codexweb.logging import EVENTS_LOGGER
from codexweb.models import User

TEST_PASSWORD = "correct horse battery staple"


# Services and the browser ----------------------------------------------------------------


def require(flag: str, reason: str) -> None:
    """Skip with `reason`, or fail when CI set `flag` (CODEXWEB_REQUIRE_SERVICES/BROWSER=1)."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{reason} (and {flag}=1 forbids skipping)")
    pytest.skip(reason)


# The application -------------------------------------------------------------------------


def base_test_config(tmp_path) -> dict[str, Any]:
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "DATABASE_URL": f"sqlite:///{instance / 'test.db'}",
        "MAIL_BACKEND": "locmem",
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


@pytest.fixture
def app_factory(tmp_path) -> Iterator[Callable[..., Flask]]:
    """Build apps on a fresh database; each gets its schema and is torn down after the test."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        config = base_test_config(tmp_path)
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


@pytest.fixture
def app(app_factory, config_overrides) -> Flask:
    return app_factory(**config_overrides)


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


@pytest.fixture
def auth_headers(app) -> Callable[[User], dict[str, str]]:
    def headers(user: User) -> dict[str, str]:
        with app.app_context():
            return {"Authorization": f"Bearer {issue_access_token(user.id)}"}

    return headers


@pytest.fixture
def user(make_user) -> User:
    return make_user("owner@example.com")


@pytest.fixture
def unverified_user(make_user) -> User:
    return make_user("pending@example.com", verified=False)


# Mail and events -------------------------------------------------------------------------


@pytest.fixture
def outbox(app) -> list:
    """Messages sent through the locmem backend during the test."""
    state = app.extensions["mailman"]  # the locmem backend appends to `state.outbox`
    state.outbox = []
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
