"""Who a `/chatkit` request speaks for: the request context the SDK hands the store and agents.

Its own small module, free of the SDKs, so resolving a caller never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatkit.types import ThreadItem

    from ..models import CodexSession


@dataclass(frozen=True)
class RuntimeContext:
    """Resolved from the ChatKit token before the SDK runs."""

    user_id: str
    session_id: str
    agent_id: str
    placement: str
    context: dict[str, Any]
    # The session row the token check read. The streamed part of a reply runs after the view
    # returned, on a fresh database session: this spares it reading the row again.
    codex_session: CodexSession = field(compare=False, repr=False)
    # The threads this request has already found to be the caller's (the store's memo): a
    # conversation turn asks about its thread half a dozen times. One request's, never shared.
    known_threads: set[str] = field(default_factory=set, compare=False, repr=False)
    # Thread ids the store made in this request (`threads.create`) and has not stored yet:
    # nothing can exist under them, so their first save writes without reading first.
    new_threads: set[str] = field(default_factory=set, compare=False, repr=False)
    # The newest items of a thread as this request last read them (newest first, and whether
    # the thread has more), until it writes to that thread: the SDK asks for the last two
    # right after the agent's history (the store's `_newest_remembered`).
    newest_items: dict[str, tuple[tuple[ThreadItem, ...], bool]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def event_fields(self, thread_id: str) -> dict[str, str]:
        """Who and where, for the runtime's events about a thread (never what was said)."""
        return {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "thread_id": thread_id,
            "agent_id": self.agent_id,
            "placement": self.placement,
        }
