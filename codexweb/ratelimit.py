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

from .auth.tokens import user_id_from_access_token


def rate_limit_key() -> str:
    bearer = bearer_token()
    if bearer:
        user_id = user_id_from_access_token(bearer)
        if user_id:
            return f"user:{user_id}"
    elif session.get("_user_id"):
        return f"user:{session['_user_id']}"
    return f"addr:{request.remote_addr or 'unknown'}"


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


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
