"""Who is calling, and may they: the one place that resolves a request's user.

A request authenticates with `Authorization: Bearer <access token>` or with the browser's
login session cookie. A present but bad Bearer token is a 401 (no silent fallback to the
cookie). `require_verified` is the verified gate of CONTRACT.md §4, used by every codex
endpoint and page.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from flask import current_app, request

from ..errors import Problem
from ..extensions import csrf
from ..models import User
from .credentials import bearer_token, forget_credentials
from .logins import CallerRefused, forget_caller, request_caller

F = TypeVar("F", bound=Callable)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Endpoints that may be posted without a CSRF token, and why:
# - auth_api.refresh: authenticated by the refresh cookie alone, which is SameSite=Strict
#   (never sent cross-site) and scoped to /api/auth; its answer is unreadable cross-origin.
# - runtime.chatkit: authenticated by its Bearer ChatKit token only; cookies grant nothing there.
CSRF_EXEMPT_ENDPOINTS = frozenset({"auth_api.refresh", "runtime.chatkit"})
# Cookies set SameSite=Strict: a request carrying only these comes from our own site.
STRICT_COOKIES = frozenset({"refresh_token"})

# Content types a cross-site HTML form can send without a CORS preflight.
CROSS_SITE_FORM_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)


def authentication_required(
    detail: str = "Log in to continue.", challenge: str = "Bearer"
) -> Problem:
    return Problem(401, "authentication_required", detail, headers={"WWW-Authenticate": challenge})


def forget_previous_user() -> None:
    """Resolve each request's credentials and caller afresh (a before_request hook)."""
    forget_credentials()
    forget_caller()


def current_request_user() -> User | None:
    """The user of this request (Bearer first, then the login session), memoised per request.

    A Bearer token that is bad, expired or names an ended login is a 401.
    """
    try:
        return request_caller()
    except CallerRefused:
        raise authentication_required(
            "The access token is invalid or expired.", 'Bearer error="invalid_token"'
        ) from None


def require_user(view: F) -> F:
    """Any logged-in user, verified or not."""

    @wraps(view)
    def guarded(*args, **kwargs):
        if current_request_user() is None:
            raise authentication_required()
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]


def require_verified(view: F) -> F:
    """The verified gate: 401 without credentials, 403 `email_not_verified` before verifying."""

    @wraps(view)
    def guarded(*args, **kwargs):
        user = current_request_user()
        if user is None:
            raise authentication_required()
        if not user.email_verified:
            raise Problem(
                403,
                "email_not_verified",
                "Verify your email address to use Codex.",
            )
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]


def csrf_required() -> bool:
    """Unsafe requests need a CSRF token unless they carry a Bearer token, or carry neither a
    cookie nor a body a browser could send cross-site.

    A script posting JSON (or nothing) without cookies has no ambient authority to abuse. A
    browser always sends its cookies, and a cross-site form can only send the "simple" content
    types, so those are checked even without a cookie (login CSRF on a first visit).
    The refresh cookie does not count: it is SameSite=Strict, so no cross-site request ever
    carries it, and an API client holding only it (after a JSON login) needs no CSRF token.
    """
    if request.method in SAFE_METHODS or not current_app.config.get("WTF_CSRF_ENABLED", True):
        return False
    if bearer_token() is not None or request.endpoint in CSRF_EXEMPT_ENDPOINTS:
        return False
    ambient_cookies = set(request.cookies) - STRICT_COOKIES
    return bool(ambient_cookies) or request.mimetype in CROSS_SITE_FORM_TYPES


def enforce_csrf() -> None:
    if csrf_required():
        csrf.protect()
