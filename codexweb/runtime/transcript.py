"""A Codex session's conversation as people read it (CONTRACT §4, the transcript endpoint).

One rule for the JSON API and the session page: the messages of one thread of the session
(its current thread unless another of its threads is asked for), oldest first, one page at a
time. User and assistant messages keep their role; tool calls read as `tool`; everything
else the SDK stores (widgets, hidden context, tasks) is not part of a transcript.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..clock import isoformat
from ..codex.sessions import LIMIT_DEFAULT, LIMIT_MAX
from ..errors import invalid_request
from ..extensions import db
from ..models import ChatKitItem, ChatKitThread, CodexSession

ROLES = {"user_message": "user", "assistant_message": "assistant", "client_tool_call": "tool"}


class ThreadNotFound(Exception):
    """The thread asked for is not one of this session's threads."""


@dataclass(frozen=True)
class TranscriptItem:
    id: str
    role: str
    text: str
    created_at: datetime


@dataclass(frozen=True)
class TranscriptPage:
    session_id: str
    thread_id: str | None
    items: list[TranscriptItem]
    next_cursor: str | None


def transcript_page(
    session: CodexSession,
    thread_id: str | None = None,
    limit: int = LIMIT_DEFAULT,
    cursor: str | None = None,
) -> TranscriptPage:
    """One page of the session's transcript; `ThreadNotFound` for a thread not of it.

    The caller has already checked that the session is the user's and not deleted; any
    status reads (a closed or expired session's conversation stays readable).
    """
    errors = []
    if not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
        errors.append({"field": "limit", "message": f"An integer from 1 to {LIMIT_MAX}."})
    after = _decode_cursor(cursor) if cursor is not None else None
    if cursor is not None and after is None:
        errors.append({"field": "cursor", "message": "Not a cursor this API returned."})
    if errors:
        raise invalid_request(errors)

    thread_id = thread_id or session.thread_id
    if thread_id is None:
        return TranscriptPage(session.id, None, [], None)
    _check_thread(session, thread_id)
    query = select(ChatKitItem).where(
        ChatKitItem.thread_id == thread_id,
        ChatKitItem.codex_session_id == session.id,
        ChatKitItem.kind.in_(ROLES),
    )
    if after is not None:
        query = query.where(ChatKitItem.position > after)
    rows = db.session.scalars(query.order_by(ChatKitItem.position).limit(limit + 1)).all()
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].position) if len(rows) > limit else None
    return TranscriptPage(session.id, thread_id, [_item(row) for row in page], next_cursor)


def _check_thread(session: CodexSession, thread_id: str) -> None:
    if not isinstance(thread_id, str) or len(thread_id) > 64 or "\x00" in thread_id:
        raise ThreadNotFound(thread_id)
    found = db.session.scalar(
        select(ChatKitThread.id).where(
            ChatKitThread.id == thread_id, ChatKitThread.codex_session_id == session.id
        )
    )
    if found is None:
        raise ThreadNotFound(thread_id)


def _item(row: ChatKitItem) -> TranscriptItem:
    return TranscriptItem(
        id=row.item_id, role=ROLES[row.kind], text=item_text(row.data), created_at=row.created_at
    )


def item_text(data: dict[str, Any]) -> str:
    """The readable text of a stored message or tool call."""
    if data.get("type") == "client_tool_call":
        arguments = json.dumps(data.get("arguments") or {}, ensure_ascii=False, sort_keys=True)
        return f"{data.get('name', '')}({arguments})"
    parts = [part.get("text", "") for part in data.get("content") or [] if isinstance(part, dict)]
    return "".join(parts)


def transcript_json(page: TranscriptPage) -> dict[str, Any]:
    return {
        "session_id": page.session_id,
        "thread_id": page.thread_id,
        "items": [
            {
                "id": item.id,
                "role": item.role,
                "text": item.text,
                "created_at": isoformat(item.created_at),
            }
            for item in page.items
        ],
        "next_cursor": page.next_cursor,
    }


def _encode_cursor(position: int) -> str:
    raw = json.dumps({"after": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# The largest position a cursor may name: one the database can compare with.
_MAX_POSITION = 2**62


def _decode_cursor(cursor: str) -> int | None:
    if not isinstance(cursor, str) or len(cursor) > 100:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        position = raw["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        return None
    if not isinstance(position, int) or isinstance(position, bool):
        return None
    # 10**30 overflowed the database driver (a 500).
    return position if 0 <= position <= _MAX_POSITION else None
