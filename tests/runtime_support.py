"""Helpers for the ChatKit runtime's tests: speak the protocol to `/chatkit` through any
client (Flask's test client or httpx against gunicorn) and read its Server-Sent Events."""

from __future__ import annotations

import json
from typing import Any

from tests.codex_support import AGENT, PLACEMENT
from tests.model_server import MODEL


def user_input(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


def create_request(text: str) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": user_input(text)}}


def add_message_request(thread_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": user_input(text)},
    }


def sse_events(body: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")
    ]


def deltas(events: list[dict[str, Any]]) -> list[str]:
    return [
        event["update"]["delta"]
        for event in events
        if event["type"] == "thread.item.updated"
        and event["update"]["type"] == "assistant_message.content_part.text_delta"
    ]


def done_items(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        event["item"]
        for event in events
        if event["type"] == "thread.item.done" and event["item"]["type"] == kind
    ]


def assistant_text(item: dict[str, Any]) -> str:
    return "".join(part["text"] for part in item["content"])


def model_agents(base_url: str, **extra: Any) -> dict[str, Any]:
    """CODEX_AGENTS with the demo agent and one agent on the stand-in model server."""
    return {
        AGENT: {"name": "Demo agent"},
        "modelled": {
            "name": "Stand-in",
            "model": MODEL,
            "base_url": base_url,
            "api_key": "sk-stand-in",
            "instructions": "You answer briefly.",
            **extra,
        },
    }


def chatkit_token(client, headers, session_id: str) -> dict[str, str]:
    response = client.get(f"/api/codex/chatkit/token?session_id={session_id}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {"Authorization": f"Bearer {response.get_json()['token']}"}


__all__ = ["AGENT", "PLACEMENT"]
