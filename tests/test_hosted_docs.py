"""The verified example of docs/HOSTED_CHATKIT.md: a self-hosted ChatKit server checks
codexweb's local tokens with nothing but `/.well-known/jwks.json`.

The example script runs as its own process against codexweb served over real HTTP, exactly
as the documentation tells an operator to run it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from werkzeug.serving import make_server

from tests.servers import REPO, free_port

EXAMPLE = REPO / "docs" / "examples" / "verify_local_token.py"


@pytest.fixture
def server_port() -> int:
    return free_port()


@pytest.fixture
def config_overrides(server_port) -> dict:
    # The tokens' issuer is PUBLIC_BASE_URL: the address the verifier knows codexweb by.
    return {"PUBLIC_BASE_URL": f"http://127.0.0.1:{server_port}"}


@pytest.fixture
def served(app, server_port) -> Iterator[str]:
    server = make_server("127.0.0.1", server_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def minted(served, user, auth_headers) -> dict:
    headers = auth_headers(user)
    with httpx.Client(base_url=served, headers=headers, timeout=10) as http:
        session = http.post(
            "/api/codex/sessions", json={"placement": "dashboard", "agent_id": "agent_123"}
        ).json()
        token = http.get("/api/codex/chatkit/token", params={"session_id": session["session_id"]})
    assert token.status_code == 200, token.text
    return token.json()


def run_example(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_the_example_verifies_a_local_token_through_the_jwks(served, minted, user):
    result = run_example(served, minted["token"])
    assert result.returncode == 0, result.stdout + result.stderr
    claims = json.loads(result.stdout)
    # The claims docs/HOSTED_CHATKIT.md shows.
    assert set(claims) == {
        "agent_id",
        "aud",
        "cks",
        "exp",
        "iat",
        "iss",
        "jti",
        "lid",
        "nbf",
        "placement",
        "sid",
        "sub",
    }
    assert claims["sub"] == user.id
    assert claims["sid"] == minted["session_id"]
    assert claims["cks"] == minted["chatkit_session_id"]
    assert claims["iss"] == served and claims["aud"] == "chatkit"
    assert result.stderr == ""  # no warnings for the operator to puzzle over


def test_the_example_refuses_a_tampered_token(served, minted):
    header, payload, signature = minted["token"].split(".")
    forged = ".".join(
        [header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")]
    )
    result = run_example(served, forged)
    assert result.returncode == 1
    assert result.stdout == "refused: bad_signature\n"


@pytest.fixture
def expired(served, user, auth_headers, frozen_clock) -> str:
    frozen_clock(datetime.now(UTC) - timedelta(hours=1))  # minted an hour ago, TTL 10 min
    with httpx.Client(base_url=served, headers=auth_headers(user), timeout=10) as http:
        session = http.post(
            "/api/codex/sessions", json={"placement": "dashboard", "agent_id": "agent_123"}
        ).json()
        token = http.get("/api/codex/chatkit/token", params={"session_id": session["session_id"]})
    frozen_clock(None)
    return token.json()["token"]


def test_the_example_refuses_an_expired_token(served, expired):
    result = run_example(served, expired)
    assert result.returncode == 1
    assert result.stdout.startswith("refused: expired_token")


def test_the_example_refuses_a_token_for_another_issuer(served, minted):
    result = run_example(served, minted["token"], "https://chat.example.com")
    assert result.returncode == 1
    assert result.stdout == "refused: invalid_claim: Invalid claim: 'iss'\n"
