"""Through real gunicorn workers on SQLite: the one-active-session race, the published JWKS
as the only thing a verifier needs, and signing keys that survive a restart."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter

import pytest

from tests.codex_support import verify_with_jwks
from tests.servers import REPO, VENV_BIN, serve_gunicorn

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
CONCURRENT_CREATES = 32
# Rate limits are not the subject here (and memory storage counts per worker anyway).
GENEROUS_LIMITS = {
    "CODEXWEB_RATELIMIT_SESSION_CREATE": "1000/minute",
    "CODEXWEB_RATELIMIT_TOKEN": "1000/minute",
}


def call(url: str, method: str = "GET", body: dict | None = None, token: str | None = None):
    """(status, parsed JSON body or None) of one plain HTTP request."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def verified_user_token(server, email: str) -> str:
    """Create a verified user with the CLI in the server's environment, then log in."""
    subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", "users", "create", email]
        + ["--password", PASSWORD, "--verified"],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        check=True,
    )
    status, body = call(
        server.url + "/api/auth/login", "POST", {"email": email, "password": PASSWORD}
    )
    assert status == 200 and body["email_verified"] is True, body
    return body["access_token"]


def active_rows(server) -> list[tuple]:
    with sqlite3.connect(server.instance_path / "codexweb.db") as connection:
        return connection.execute(
            "SELECT id, placement, agent_id FROM codex_sessions WHERE status = 'active'"
        ).fetchall()


def test_concurrent_creates_yield_exactly_one_active_session(tmp_path):
    with serve_gunicorn(tmp_path, workers=4, env=GENEROUS_LIMITS) as server:
        token = verified_user_token(server, "racer@example.com")
        start = threading.Barrier(CONCURRENT_CREATES)
        results: list[tuple[int, dict]] = []

        def create():
            start.wait()
            results.append(
                call(
                    server.url + "/api/codex/sessions",
                    "POST",
                    {"placement": "dashboard", "agent_id": "agent_123"},
                    token,
                )
            )

        threads = [threading.Thread(target=create) for _ in range(CONCURRENT_CREATES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        statuses = Counter(status for status, _ in results)
        assert statuses == {201: 1, 409: CONCURRENT_CREATES - 1}, (statuses, server.log()[-3000:])
        (winner,) = [body for status, body in results if status == 201]
        conflicts = [body for status, body in results if status == 409]
        assert {body["code"] for body in conflicts} == {"session_exists"}
        assert {body["session_id"] for body in conflicts} == {winner["session_id"]}
        assert active_rows(server) == [(winner["session_id"], "dashboard", "agent_123")]


def test_tokens_verify_with_the_published_jwks_across_workers_and_restarts(tmp_path):
    with serve_gunicorn(tmp_path, workers=4, env=GENEROUS_LIMITS) as server:
        token = verified_user_token(server, "keys@example.com")
        status, session = call(
            server.url + "/api/codex/sessions",
            "POST",
            {"placement": "dashboard", "agent_id": "agent_123"},
            token,
        )
        assert status == 201
        url = f"{server.url}/api/codex/chatkit/token?session_id={session['session_id']}"
        # The first tokens ever: every worker must end up with the same, single key.
        barrier = threading.Barrier(8)
        minted: list[dict] = []

        def mint():
            barrier.wait()
            minted.append(call(url, token=token)[1])

        threads = [threading.Thread(target=mint) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        status, jwks = call(server.url + "/.well-known/jwks.json")
        assert status == 200 and len(jwks["keys"]) == 1
        kid = jwks["keys"][0]["kid"]
        for body in minted:
            decoded = verify_with_jwks(
                body["token"], jwks, sid=session["session_id"], aud="chatkit"
            )
            assert decoded.header["kid"] == kid
        _, listed = call(server.url + "/api/codex/chatkit/sessions", token=token)
        assert listed["chatkit_sessions"][0]["tokens_issued"] == 8
        first_token = minted[0]["token"]

    with serve_gunicorn(
        tmp_path, workers=2, env=GENEROUS_LIMITS
    ) as restarted:  # same instance folder
        status, jwks_after = call(restarted.url + "/.well-known/jwks.json")
        assert jwks_after == jwks
        verify_with_jwks(first_token, jwks_after)
        again = call(url.replace(server.url, restarted.url), token=token)[1]
        assert verify_with_jwks(again["token"], jwks_after).header["kid"] == kid
