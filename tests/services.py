"""PostgreSQL and Redis for tests: where they are, whether they answer, and throwaway
databases and key spaces, so that test runs sharing one server never see each other's rows
or counters.

- PostgreSQL: `CODEXWEB_TEST_DATABASE_URL` when it names PostgreSQL, else
  `CODEXWEB_TEST_POSTGRES_URL`, else the local default below. Each user of it gets a fresh
  database with a random name (`codexweb_test_<hex>`), dropped afterwards.
- Redis: `CODEXWEB_TEST_REDIS_URL` or the local default. Each user gets a random database
  number in 1–15 (0 is left to people) and a random `RATELIMIT_KEY_PREFIX`; its keys are
  deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"


# PostgreSQL ------------------------------------------------------------------------------


def postgres_url() -> str:
    """The PostgreSQL server tests may create databases on (through its maintenance db)."""
    configured = os.environ.get("CODEXWEB_TEST_DATABASE_URL", "")
    if configured.startswith("postgresql"):
        return configured
    return os.environ.get("CODEXWEB_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@cache
def postgres_available(url: str) -> bool:
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def admin_engine(url: str):
    """An autocommit engine on the given database (CREATE/DROP DATABASE need autocommit)."""
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def create_database(url: str) -> str:
    """Create a database with a random name next to `url`'s; return its URL."""
    name = f"codexweb_test_{secrets.token_hex(6)}"
    engine = admin_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str, server_url: str | None = None) -> None:
    """Drop a database made by `create_database`, disconnecting whoever still uses it.

    `server_url` is the URL it was created from (default: `postgres_url()`).
    """
    target = make_url(database_url)
    engine = admin_engine(server_url or postgres_url())
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    finally:
        engine.dispose()


@contextmanager
def fresh_postgres_database(url: str | None = None) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of `url`; dropped on exit."""
    server_url = url or postgres_url()
    database_url = create_database(server_url)
    try:
        yield database_url
    finally:
        drop_database(database_url, server_url)


# Redis -----------------------------------------------------------------------------------


def redis_url() -> str:
    return os.environ.get("CODEXWEB_TEST_REDIS_URL", DEFAULT_REDIS_URL).rstrip("/")


@cache
def redis_available(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@dataclass(frozen=True)
class RedisNamespace:
    """A Redis database number and a key prefix that no other test run uses."""

    storage_uri: str
    key_prefix: str

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.storage_uri, socket_connect_timeout=2)

    def keys(self) -> list[bytes]:
        with self.client() as client:
            return list(client.scan_iter(match=f"*{self.key_prefix}*"))


@contextmanager
def fresh_redis_namespace(url: str | None = None) -> Iterator[RedisNamespace]:
    database = 1 + secrets.randbelow(15)
    namespace = RedisNamespace(
        storage_uri=f"{(url or redis_url()).rstrip('/')}/{database}",
        key_prefix=f"codexweb-test-{secrets.token_hex(6)}",
    )
    try:
        yield namespace
    finally:
        with namespace.client() as client:
            for key in client.scan_iter(match=f"*{namespace.key_prefix}*"):
                client.delete(key)
