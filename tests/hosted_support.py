"""Fixtures and helpers for the hosted ChatKit tests: codexweb configured with
`CHATKIT_PROVIDER=openai` against the loopback stand-in of OpenAI (tests/upstream_server.py).

Test modules import the fixtures they use: `upstream_fixture` (fixture `upstream`),
`hosted_config_fixture`, `config_overrides_fixture` and
`_close_upstream_clients` (the `_fixture` names keep imports and parameters apart).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from codexweb.extensions import db
from codexweb.models import ChatKitSession
from tests.upstream_server import FakeChatKit

API_KEY = "sk-test-hosted-0123456789abcdef"
WORKFLOW = "wf_support_agent"
PLACEMENT = "dashboard"
AGENT = "agent_123"


@pytest.fixture(name="upstream")
def upstream_fixture() -> Iterator[FakeChatKit]:
    with FakeChatKit(api_key=API_KEY, workflows={WORKFLOW}) as server:
        yield server


def hosted_settings(upstream: FakeChatKit, **overrides: Any) -> dict[str, Any]:
    settings = {
        "CHATKIT_PROVIDER": "openai",
        "OPENAI_API_KEY": API_KEY,
        "CHATKIT_API_BASE": upstream.url,
        "CHATKIT_UPSTREAM_TIMEOUT": 2,
        "CODEX_AGENTS": {
            AGENT: {
                "name": "Demo agent",
                "placements": ["developer-workbench", "dashboard"],
                "workflow_id": WORKFLOW,
            }
        },
    }
    settings.update(overrides)
    return settings


@pytest.fixture(name="hosted_config")
def hosted_config_fixture(upstream) -> dict[str, Any]:
    """Extra settings for a test module or parametrisation; merged into `config_overrides`."""
    return {}


@pytest.fixture(name="config_overrides")
def config_overrides_fixture(upstream, hosted_config) -> dict[str, Any]:
    return hosted_settings(upstream, **hosted_config)


@pytest.fixture(autouse=True)
def _close_upstream_clients(request) -> Iterator[None]:
    """Close the pooled HTTP clients of the apps a test built (no sockets left behind)."""
    yield
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    for provider in app.extensions.get("codexweb.chatkit_providers", {}).values():
        close = getattr(provider, "close", None)
        if close is not None:
            close()


def new_session(client, headers, placement: str = PLACEMENT, agent_id: str = AGENT) -> dict:
    response = client.post(
        "/api/codex/sessions",
        json={"placement": placement, "agent_id": agent_id},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def token_for(client, headers, session_id: str):
    return client.get(f"/api/codex/chatkit/token?session_id={session_id}", headers=headers)


def problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code and body["status"] == status
    return body


def records(app) -> list[ChatKitSession]:
    """Every ChatKit session row, oldest first, detached from the database session."""
    with app.app_context():
        rows = db.session.scalars(select(ChatKitSession).order_by(ChatKitSession.created_at))
        result = list(rows)
        for row in result:
            db.session.expunge(row)
        return result
