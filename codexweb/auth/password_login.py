"""`PASSWORD_LOGIN_ENABLED=false`: single sign-on is the only way in.

Every endpoint that logs in, signs up or recovers with a password (JSON API and pages) then
answers 403 `password_login_disabled`, as problem+json or as a page. Operators still set a
password from the shell (`flask --app codexweb users set-password`) and turn password login
back on with `PASSWORD_LOGIN_ENABLED=true` when the provider is gone for good.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from flask import Flask, current_app

from ..errors import Problem

F = TypeVar("F", bound=Callable)


def init_app(app: Flask) -> None:
    # The layout hides "Create account" when nobody may create one with a password.
    app.jinja_env.globals["password_login_enabled"] = password_login_enabled


def password_login_enabled() -> bool:
    return bool(current_app.config["PASSWORD_LOGIN_ENABLED"])


def password_login_disabled() -> Problem:
    return Problem(
        403,
        "password_login_disabled",
        "Password login is turned off on this site: sign in with single sign-on.",
    )


def password_login_required(view: F) -> F:
    """Refuse the view while password login is off (before its rate limit counts)."""

    @wraps(view)
    def guarded(*args, **kwargs):
        if not password_login_enabled():
            raise password_login_disabled()
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]
