"""gunicorn.conf.py: worker count, threaded workers, timeouts, the JSON access log (no query
strings, no token paths) and worker lifecycle events, checked on a real gunicorn."""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.servers import REPO, serve_gunicorn

CONF = Path(REPO) / "gunicorn.conf.py"


def load_conf(monkeypatch, **env: str) -> dict:
    for name in (
        "GUNICORN_WORKERS",
        "WEB_CONCURRENCY",
        "GUNICORN_TIMEOUT",
        "GUNICORN_GRACEFUL_TIMEOUT",
        "GUNICORN_BIND",
        "GUNICORN_THREADS",
        "GUNICORN_WORKER_CLASS",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The file makes its own metrics folder, as in production, and names it in os.environ;
    # monkeypatch takes the name out again, or every later test's /metrics would read that
    # empty folder instead of the test process's own samples.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    try:
        return runpy.run_path(str(CONF))
    finally:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def test_defaults_are_two_threaded_workers(monkeypatch):
    conf = load_conf(monkeypatch)
    assert conf["workers"] == 2
    assert conf["worker_class"] == "gthread"
    assert conf["threads"] == 24
    assert conf["bind"] == "127.0.0.1:8000"
    assert conf["timeout"] == 30
    assert conf["graceful_timeout"] == 30
    assert conf["preload_app"] is False


def test_environment_sets_workers_and_timeouts(monkeypatch):
    conf = load_conf(
        monkeypatch,
        GUNICORN_WORKERS="3",
        GUNICORN_TIMEOUT="45",
        GUNICORN_GRACEFUL_TIMEOUT="20",
        GUNICORN_BIND="0.0.0.0:9000",
    )
    assert (conf["workers"], conf["timeout"], conf["graceful_timeout"]) == (3, 45, 20)
    assert conf["bind"] == "0.0.0.0:9000"
    assert load_conf(monkeypatch, WEB_CONCURRENCY="5")["workers"] == 5
    assert load_conf(monkeypatch, GUNICORN_THREADS="8")["threads"] == 8


def test_sync_workers_are_sync(monkeypatch):
    # gunicorn turns `sync` with more than one thread into gthread without a word; the tests
    # and benches that ask for sync workers rely on one request per worker at a time.
    conf = load_conf(monkeypatch, GUNICORN_WORKER_CLASS="sync")
    assert (conf["worker_class"], conf["threads"]) == ("sync", 1)


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/healthz", "/healthz"),
        ("/verify-email/abc.def-ghi", "/verify-email/[redacted]"),
        ("/reset-password/tok.en", "/reset-password/[redacted]"),
        ("/verify-email", "/verify-email"),
        ("/api/codex/sessions/cxs_1", "/api/codex/sessions/cxs_1"),
    ],
)
def test_token_paths_are_redacted_in_the_access_log(monkeypatch, path, logged):
    assert load_conf(monkeypatch)["access_path"](path) == logged


def json_lines(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


@pytest.mark.slow
def test_access_log_is_json_without_secrets_and_workers_are_logged(tmp_path):
    with serve_gunicorn(tmp_path, workers=2) as server:
        request = urllib.request.Request(
            server.url + "/healthz?token=query-secret-1&email=someone%40example.com",
            headers={"X-Request-ID": "req-access-1", "User-Agent": "access-test"},
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 200
        # Whatever it answers, the token must not be logged.
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(server.url + "/reset-password/path-secret-2")
    log = server.log()  # complete: the server has stopped

    assert "query-secret-1" not in log
    assert "path-secret-2" not in log
    assert "someone" not in log
    entries = json_lines(log)
    (access,) = [e for e in entries if e.get("request_id") == "req-access-1"]
    assert access["event"] == "http.access"
    assert access["path"] == "/healthz"
    assert access["method"] == "GET"
    assert access["status"] == 200
    assert access["user_agent"] == "access-test"
    assert isinstance(access["duration_ms"], float)
    assert any(e.get("path") == "/reset-password/[redacted]" for e in entries)

    events = [e["event"] for e in entries]
    assert events.count("gunicorn.ready") == 1
    assert events.count("gunicorn.worker.started") == 2
    assert events.count("gunicorn.worker.exited") == 2  # graceful stop: each worker said bye
    assert events[-1] == "gunicorn.stopped"
