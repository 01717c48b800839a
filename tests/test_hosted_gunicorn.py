"""Hosted ChatKit under the production server: gunicorn with two sync workers, configured only
through CODEXWEB_* environment variables, talking to OpenAI's stand-in over loopback.

Each worker builds its pooled HTTP client on first use, after the fork; whichever worker mints
a token, it is recorded in the one registry, and closing the session cancels every one.
"""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from codexweb import create_app
from codexweb.models import User
from tests.conftest import access_token_for as api_login_token
from tests.hosted_support import AGENT, API_KEY, PLACEMENT, WORKFLOW
from tests.servers import REPO, VENV_BIN, serve_gunicorn
from tests.upstream_server import FakeChatKit

pytestmark = pytest.mark.slow


def access_token_for(env: dict[str, str], email: str) -> str:
    """Seed a verified user with the operator's CLI; sign an access token with the server's
    own configuration (the accounts API is not what this test is about)."""
    subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", "users", "create", email]
        + ["--password", "correct horse battery staple", "--verified"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    app = create_app(
        {
            "SECRET_KEY": env["CODEXWEB_SECRET_KEY"],
            "DATABASE_URL": f"sqlite:///{env['CODEXWEB_INSTANCE_PATH']}/codexweb.db",
            "CHATKIT_PROVIDER": "openai",
            "OPENAI_API_KEY": API_KEY,
            "CODEX_AGENTS": json.loads(env["CODEXWEB_CODEX_AGENTS"]),
        }
    )
    with app.app_context():
        from codexweb.extensions import db

        user = db.session.query(User).filter_by(email=email).one()
        return api_login_token(user.id)


def test_tokens_from_both_workers_are_recorded_and_cancelled_on_close(tmp_path):
    with FakeChatKit(api_key=API_KEY, workflows={WORKFLOW}) as upstream:
        env = {
            "CODEXWEB_CHATKIT_PROVIDER": "openai",
            "CODEXWEB_OPENAI_API_KEY": API_KEY,
            "CODEXWEB_CHATKIT_API_BASE": upstream.url,
            "CODEXWEB_CODEX_AGENTS": json.dumps(
                {AGENT: {"name": "Demo", "placements": [PLACEMENT], "workflow_id": WORKFLOW}}
            ),
            "CODEXWEB_CODEX_PLACEMENTS": json.dumps([PLACEMENT]),
        }
        with serve_gunicorn(tmp_path, workers=2, env=env) as server:
            bearer = access_token_for(server.env, "hosted@example.com")
            headers = {"Authorization": f"Bearer {bearer}"}
            # A fresh connection per request: any worker may answer any of them.
            created = httpx.post(
                server.url + "/api/codex/sessions",
                json={"placement": PLACEMENT, "agent_id": AGENT},
                headers=headers,
            )
            assert created.status_code == 201, created.text
            session_id = created.json()["session_id"]
            tokens = [
                httpx.get(
                    server.url + "/api/codex/chatkit/token",
                    params={"session_id": session_id},
                    headers=headers,
                ).json()
                for _ in range(6)
            ]
            ids = {token["chatkit_session_id"] for token in tokens}
            assert ids == {session["id"] for session in upstream.created}
            assert len(ids) == 6

            listed = httpx.get(
                server.url + "/api/codex/chatkit/sessions", params={"limit": 100}, headers=headers
            ).json()["chatkit_sessions"]
            assert {row["chatkit_session_id"] for row in listed} == ids

            closed = httpx.post(
                server.url + f"/api/codex/sessions/{session_id}/close", headers=headers
            )
            assert closed.status_code == 200
            assert set(upstream.cancelled) == ids
            assert API_KEY not in server.log()
            assert not any(token["token"] in server.log() for token in tokens)
