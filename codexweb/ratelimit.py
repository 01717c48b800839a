"""Who a rate limit counts against, and how many seconds a limited client must wait.

Limits count per user when the request is authenticated (Bearer token or login session) and
per client address otherwise, so people behind one NAT do not share a login budget once
signed in, and one account cannot dodge its budget by switching addresses.
"""

from __future__ import annotations

import math
import time

from flask import Response, current_app, request, session
from flask_limiter import Limiter

from .auth.credentials import bearer_claim, bearer_token


def rate_limit_key() -> str:
    if bearer_token():
        claim = bearer_claim()
        if claim:
            return f"user:{claim.user_id}"
    elif session.get("_user_id"):
        return f"user:{session['_user_id']}"
    return f"addr:{request.remote_addr or 'unknown'}"


def configured(key: str):
    """A limit read from config at request time, so tests and env can change it."""
    return lambda: current_app.config[key]


def retry_after_seconds(limiter: Limiter) -> int:
    """Whole seconds until the breached limit resets (at least 1)."""
    limit = limiter.current_limit
    if limit is None:
        return 60
    # `reset_at` is already rounded up to the next whole second; round the exact reset time
    # once, so a 1/minute limit never asks for 61 seconds.
    reset_time = limit.window[0]
    return max(1, math.ceil(reset_time - time.time()))


def counts_unless_invalid(response: Response) -> bool:
    """`deduct_when` of the forgiving limits: input refused as invalid (422) costs nothing,
    and neither does the refusal (429) itself."""
    return response.status_code not in (422, 429)


# Limits that guard an action a person takes by hand, by scope, with the words that name it.
# Every other limit guards Codex and keeps the seed's "Codex is busy" message.
_LIMITED_ACTIONS: dict[str, str] = {}


def describe_limited_action(scope: str, action: str) -> None:
    _LIMITED_ACTIONS[scope] = action


def is_account_limit(scope: object) -> bool:
    return scope in _LIMITED_ACTIONS


def rate_limit_message(scope: object, seconds: int) -> str:
    """What a limited client is told (CONTRACT.md §5)."""
    action = _LIMITED_ACTIONS.get(scope) if isinstance(scope, str) else None
    if action is None:
        return f"Codex is busy, please retry in {seconds} seconds"
    return f"{action} Try again in {humanised_wait(seconds)}."


def humanised_wait(seconds: int) -> str:
    """A wait as a person says it: "45 seconds", "4 minutes", "1 hour 5 minutes".

    Minutes round up, so nobody who waits the time they were told is refused again.
    """
    if seconds < 60:
        return _plural(seconds, "second")
    minutes = math.ceil(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    parts = [_plural(hours, "hour")] if hours else []
    if minutes:
        parts.append(_plural(minutes, "minute"))
    return " ".join(parts)


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
