"""Who a rate limit counts against, and how many seconds a limited client must wait.

Limits count per user when the request is authenticated (Bearer token or login session) and
per client address otherwise, so people behind one NAT do not share a login budget once
signed in, and one account cannot dodge its budget by switching addresses.
"""

from __future__ import annotations

import math
import time

from flask import current_app, request, session
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
