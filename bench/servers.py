"""The servers under test and their databases.

codexweb and the baseline both run as `gunicorn -c gunicorn.conf.py <app>` from the repository
with the same `GUNICORN_*` settings, each on a free loopback port. codexweb gets its own
instance folder and database (a SQLite file, or a fresh PostgreSQL database that is dropped
afterwards), is migrated like an operator would (`flask db upgrade`) and has every rate limit
raised far above what the load can reach, so limits are evaluated but never hit.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text

from tests.servers import REPO, VENV_BIN, codexweb_env, free_port, migrate, stop, wait_for_http

from .wrk import USER_AGENT

SECRET_KEY = "bench-secret-key-not-for-production"
UNREACHABLE_LIMIT = "1000000/minute"
RATE_LIMIT_KEYS = (
    "DEFAULT",
    "LOGIN",
    "REGISTER",
    "RESEND",
    "PASSWORD_RESET",
    "SESSION_CREATE",
    "TOKEN",
)
DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class GunicornSettings:
    workers: int = 2
    worker_class: str = "gthread"  # gunicorn.conf.py's default
    threads: int = 24  # gthread only

    def env(self) -> dict[str, str]:
        # gunicorn runs a `sync` worker given more than one thread as gthread, unannounced.
        threads = self.threads if self.worker_class == "gthread" else 1
        return {
            "GUNICORN_WORKERS": str(self.workers),
            "GUNICORN_WORKER_CLASS": self.worker_class,
            "GUNICORN_THREADS": str(threads),
        }


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the gunicorn master and its workers."""
        return sum(_cpu_seconds(pid) for pid in [self.process.pid, *_children(self.process.pid)])

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def bench_requests_since(self, offset: int) -> int:
        """Requests from wrk in the access log since `offset` (it logs the User-Agent).

        wrk counts only answers it read before stopping; the server also answered those in
        flight, and their CPU time is in `cpu_seconds`.
        """
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().count(USER_AGENT.encode())


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields after "pid (comm)"


def _cpu_seconds(pid: int) -> float:
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    children.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
    return children


def start_gunicorn(
    name: str, app_spec: str, env: dict[str, str], log_dir: Path, health_path: str
) -> Server:
    port = free_port()
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", app_spec],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_for_http(server.url + health_path, timeout=60, process=process)
    except RuntimeError as error:
        stop(process)
        raise RuntimeError(f"{name}: {error}\n{log_path.read_text(errors='replace')}") from error
    return server


def baseline_env(gunicorn: GunicornSettings) -> dict[str, str]:
    env = codexweb_env(Path("/nonexistent"), gunicorn.env())
    env.pop("CODEXWEB_INSTANCE_PATH")
    return env


# Databases ---------------------------------------------------------------------------------


class Database:
    """A database for one codexweb server; `url` is what `CODEXWEB_DATABASE_URL` gets."""

    url: str
    kind: str

    def drop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, instance: Path) -> None:
        self.url = f"sqlite:///{instance / 'codexweb.db'}"

    def drop(self) -> None:
        pass  # lives in the instance folder, removed with the work folder


class PostgresDatabase(Database):
    """A fresh, randomly named database on the server of `admin_url`, dropped afterwards."""

    kind = "postgres"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"codexweb_bench_{secrets.token_hex(4)}"
        self._admin("CREATE DATABASE {name}")
        self.url = make_url(admin_url).set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        self._admin("DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement.format(name=self.name)))
        finally:
            engine.dispose()


BENCH_POSTGRES_POOL_SIZE = 12


def codexweb_server_env(
    instance: Path,
    database: Database,
    gunicorn: GunicornSettings,
    ratelimit_storage: str,
) -> dict[str, str]:
    extra = {
        "CODEXWEB_DATABASE_URL": database.url,
        "CODEXWEB_SECRET_KEY": SECRET_KEY,
        "CODEXWEB_RATELIMIT_STORAGE_URI": ratelimit_storage,
        # Long enough for the whole run: a bench token must not expire between rounds.
        "CODEXWEB_ACCESS_TOKEN_TTL": "7200",
        **{f"CODEXWEB_RATELIMIT_{key}": UNREACHABLE_LIMIT for key in RATE_LIMIT_KEYS},
        **gunicorn.env(),
    }
    if database.url.startswith("postgresql"):
        # A full run keeps three codexweb servers (one per scale) on one PostgreSQL server
        # with 100 connections. gunicorn's default pool (one connection per thread, 24 + 4 per
        # worker) would need up to 168 and ran out (errors in the run). 12 + 4 per worker
        # covers the 16 requests wrk keeps open per worker, in 96 connections at most.
        extra["CODEXWEB_DATABASE_POOL_SIZE"] = str(BENCH_POSTGRES_POOL_SIZE)
    return codexweb_env(instance, extra)


def app_config(database: Database) -> dict[str, Any]:
    """Config for the bench's own in-process app (seeding, tokens, cookies): same secret and
    database as the servers, so what it signs the servers accept."""
    return {
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": database.url,
        "MAIL_BACKEND": "locmem",
        "LOG_LEVEL": "WARNING",
        "ACCESS_TOKEN_TTL": 7200,
        "RATELIMIT_ENABLED": False,
    }


class Fleet(ExitStack):
    """Stops every server and drops every database it was handed, in reverse order."""

    def server(self, server: Server) -> Server:
        self.callback(stop, server.process)
        return server

    def database(self, database: Database) -> Database:
        self.callback(database.drop)
        return database


__all__ = [
    "DEFAULT_POSTGRES_ADMIN_URL",
    "Fleet",
    "GunicornSettings",
    "PostgresDatabase",
    "SqliteDatabase",
    "app_config",
    "baseline_env",
    "codexweb_server_env",
    "migrate",
    "start_gunicorn",
]
