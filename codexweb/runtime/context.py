"""Who a `/chatkit` request speaks for: the request context the SDK hands the store and agents.

Its own small module, free of the SDKs, so resolving a caller never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RuntimeContext:
    """Resolved from the ChatKit token before the SDK runs."""

    user_id: str
    session_id: str
    agent_id: str
    placement: str
    context: dict[str, Any]
