"""Request bodies of the codex API (pydantic v2) and their translation into 422 problems.

Strict models: a number is not a string, an array is not an object, and unknown fields are
named in the error rather than silently dropped. The rules that need configuration (which
agents and placements exist, how large a context may be) live in `sessions.py`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from flask import request
from pydantic import BaseModel, ConfigDict, Field

from ..bodies import unstorable_values
from ..errors import invalid_request

# Browser lifecycle analytics that `POST /api/codex/events` accepts (CONTRACT.md §4).
CLIENT_EVENTS = (
    "chatkit.opened",
    "chatkit.ready",
    "chatkit.token.refreshed",
    "chatkit.token.failed",
    "chatkit.error",
    "chatkit.thread.changed",
    "chatkit.closed",
    "codex.session.resumed",
)
PROPERTIES_MAX_BYTES = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class CreateSessionBody(_Strict):
    placement: str = Field(min_length=1, max_length=64)
    agent_id: str = Field(min_length=1, max_length=64)
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


Scalar = str | int | float | bool | None


class ClientEventBody(_Strict):
    event: Literal[CLIENT_EVENTS]  # type: ignore[valid-type]
    session_id: str | None = Field(default=None, max_length=64)
    # Flat and small: analytics, not a place to park data (or secrets) in our logs.
    properties: dict[str, Scalar] | None = Field(default=None, max_length=32)


def check_properties_size(properties: dict[str, Any] | None) -> None:
    if properties is None:
        return
    if len(json.dumps(properties).encode()) > PROPERTIES_MAX_BYTES:
        raise invalid_request(
            [
                {
                    "field": "properties",
                    "message": f"Must be at most {PROPERTIES_MAX_BYTES} bytes as JSON.",
                }
            ]
        )


def query_text(name: str, *, required: bool = False) -> str | None:
    """A single query-string value; `required` turns a missing one into a 422, and so is a
    value no database could compare (NUL, a lone surrogate), named like a body's field."""
    value = request.args.get(name)
    if value is None or value == "":
        if required:
            raise invalid_request([{"field": name, "message": "Required."}])
        return None
    errors = unstorable_values({name: value})
    if errors:
        raise invalid_request(errors)
    return value
