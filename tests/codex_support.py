"""Helpers for the codex tests: create sessions over HTTP, snapshot tables, verify tokens
the way an outside party would (with nothing but the published JWKS)."""

from __future__ import annotations

import warnings
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import text

from codexweb.extensions import db

PLACEMENT = "dashboard"
AGENT = "agent_123"
TABLES = ("codex_sessions", "chatkit_sessions")


def new_session(client, headers, placement: str = PLACEMENT, agent_id: str = AGENT, **extra):
    response = client.post(
        "/api/codex/sessions",
        json={"placement": placement, "agent_id": agent_id, **extra},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def snapshot(app) -> dict[str, list[tuple]]:
    """Every row of the codex tables, to show that a refused request wrote nothing."""
    with app.app_context():
        return {
            table: [
                tuple(row)
                for row in db.session.execute(text(f"SELECT * FROM {table} ORDER BY id"))  # noqa: S608
            ]
            for table in TABLES
        }


def verify_with_jwks(token: str, jwks: dict[str, Any], *, now: int | None = None, **expected):
    """Decode and validate `token` using only a JWK Set (as a third-party verifier would)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc's RFC 9864 note about the name "EdDSA"
        decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["EdDSA"])
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=0,
        **{name: {"essential": True, "value": value} for name, value in expected.items()},
    )
    registry.validate(decoded.claims)
    return decoded
