"""Who a rate limit counts against, and how many seconds a limited client must wait.

Limits count per user when the request is authenticated (Bearer token or login session) and
per client address otherwise, so people behind one NAT do not share a login budget once
signed in, and one account cannot dodge its budget by switching addresses.
"""

from __future__ import annotations

import math
import time

from flask import Response, current_app, request, session
from flask_limiter import ExemptionScope, Limiter
from flask_limiter.util import get_qualified_name

from .auth.credentials import bearer_claim, bearer_token


def rate_limit_key() -> str:
    if bearer_token():
        claim = bearer_claim()
        if claim:
            return f"user:{claim.user_id}"
    elif session.get("_user_id"):
        return f"user:{session['_user_id']}"
    return f"addr:{request.remote_addr or 'unknown'}"


class CodexLimiter(Limiter):
    """flask-limiter's `Limiter`, minus its before-request pass where it cannot find a limit.

    Every request runs that pass (the "middleware"); a view decorated with a limit runs a
    second one in its decorator. For decorated views the first pass only looks for
    application, meta and blueprint limits (the decorator owns the rest), and for views
    exempt from the default limit it finds nothing either. codexweb declares none of those
    three kinds, so on these views (every Codex and account endpoint with its own limit,
    /healthz, /readyz, /metrics, the OpenAPI document) the pass resolves an empty list at
    the cost of exemption lookups on every request. `_check_request_limit` is the method
    flask-limiter registers as its before_request hook; it still runs whenever one of those
    kinds of limits, the in-memory fallback or a view-less limit hint could apply.
    """

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        if in_middleware and self._middleware_finds_nothing():
            return
        super()._check_request_limit(callable_name=callable_name, in_middleware=in_middleware)

    def _middleware_finds_nothing(self) -> bool:
        manager = self.limit_manager
        if (
            manager._application_limits
            or manager._blueprint_limits
            or self._meta_limits
            or self._in_memory_fallback_enabled
        ):
            return False
        endpoint = self.identify_request()
        view = current_app.view_functions.get(endpoint) if endpoint else None
        if view is None or manager.has_hints(endpoint):
            return False
        name = get_qualified_name(view)
        exempt = manager._route_exemptions.get(name, ExemptionScope.NONE)
        return name in self._marked_for_limiting or bool(exempt & ExemptionScope.DEFAULT)


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
