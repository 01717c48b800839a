"""gunicorn under load: a graceful reload (HUP) and a worker killed with SIGKILL lose no
acknowledged write, and only a request inside the killed worker may go unanswered."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.servers import Server, serve_gunicorn

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"


@dataclass
class Load:
    """Clients registering new accounts, each on a new connection, until stopped."""

    url: str
    clients: int = 4
    acknowledged: list[str] = field(default_factory=list)
    other_statuses: list[int] = field(default_factory=list)
    connection_errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, client_number: int) -> None:
        sent = 0
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                email = f"load{client_number}-{sent}@example.com"
                sent += 1
                try:
                    response = client.post(
                        "/api/auth/register",
                        json={"email": email, "password": PASSWORD},
                        headers={"Connection": "close"},
                    )
                except httpx.TransportError as error:
                    with self._lock:
                        self.connection_errors.append(f"{email}: {type(error).__name__}")
                    continue
                with self._lock:
                    if response.status_code == 201:
                        self.acknowledged.append(email)
                    else:
                        self.other_statuses.append(response.status_code)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} writes acknowledged"
            time.sleep(0.05)


def stored_emails(server: Server) -> set[str]:
    engine = create_engine(f"sqlite:///{server.instance_path / 'codexweb.db'}", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(connection.execute(text("SELECT email FROM users")).scalars())
    finally:
        engine.dispose()


def lifecycle(server: Server, event: str) -> list[dict]:
    entries = []
    for line in server.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            entries.append(entry)
    return entries


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path):
    with serve_gunicorn(
        tmp_path, workers=2, env={"CODEXWEB_RATELIMIT_ENABLED": "false"}
    ) as running:
        yield running


def test_graceful_reload_under_load_loses_nothing_and_fails_nothing(server):
    with Load(server.url) as load:
        load.wait_for(10)
        os.kill(server.process.pid, signal.SIGHUP)
        wait_until(lambda: len(lifecycle(server, "gunicorn.worker.started")) >= 4)
        wait_until(lambda: len(lifecycle(server, "gunicorn.worker.exited")) >= 2)
        settled = len(load.acknowledged)
        load.wait_for(settled + 10)  # the new workers serve
    assert lifecycle(server, "gunicorn.reloading")
    assert load.connection_errors == []
    assert load.other_statuses == []
    assert set(load.acknowledged) <= stored_emails(server)


def test_a_killed_worker_loses_only_its_own_request(server):
    with Load(server.url) as load:
        load.wait_for(10)
        victim = lifecycle(server, "gunicorn.worker.started")[0]["worker_pid"]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(lifecycle(server, "gunicorn.worker.started")) >= 3)  # replaced
        settled = len(load.acknowledged)
        load.wait_for(settled + 10)
    assert any(e["worker_pid"] == victim for e in lifecycle(server, "gunicorn.worker.gone"))
    # A threaded worker holds several requests at once: only those it held are cut off (at
    # most one per client of the load), and each client carries on through the other worker.
    assert len(load.connection_errors) <= load.clients, load.connection_errors
    assert load.other_statuses == []
    assert set(load.acknowledged) <= stored_emails(server)
    assert "database is locked" not in server.log()
