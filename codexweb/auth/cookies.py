"""The `refresh_token` cookie and the login session, set and cleared in one place.

The refresh cookie is HttpOnly (scripts never read it), SameSite=Strict (never sent
cross-site) and scoped to `/api/auth`, the only place that reads it; Secure unless
`COOKIE_SECURE` is off (development). The browser's login session remembers the refresh
family too, because `/logout` lies outside the cookie's path and must still revoke it.
"""

from __future__ import annotations

from flask import Response, current_app, g, request, session
from flask_login import login_user, logout_user

from .accounts import SESSION_BINDING_KEY, AccessGrant, login_session_binding

REFRESH_COOKIE = "refresh_token"
REFRESH_COOKIE_PATH = "/api/auth"
_SESSION_FAMILY = "refresh_family"


def refresh_cookie_value() -> str | None:
    return request.cookies.get(REFRESH_COOKIE)


def set_refresh_cookie(response: Response, grant: AccessGrant) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        grant.refresh_token,
        max_age=int(current_app.config["REFRESH_TOKEN_TTL"]),
        path=REFRESH_COOKIE_PATH,
        secure=current_app.config["COOKIE_SECURE"],
        httponly=True,
        samesite="Strict",
    )


def clear_refresh_cookie(response: Response) -> None:
    response.delete_cookie(
        REFRESH_COOKIE,
        path=REFRESH_COOKIE_PATH,
        secure=current_app.config["COOKIE_SECURE"],
        httponly=True,
        samesite="Strict",
    )


def open_login_session(grant: AccessGrant) -> None:
    """flask-login's session, bound to the current password and to the refresh family."""
    login_user(grant.user)
    session[SESSION_BINDING_KEY] = login_session_binding(grant.user)
    session[_SESSION_FAMILY] = grant.family_id


def remembered_family() -> str | None:
    return session.get(_SESSION_FAMILY)


def end_login_session() -> None:
    """Forget the flask-login user and everything else in the session cookie."""
    logout_user()
    session.clear()
    # Flask-WTF caches this request's signed CSRF token in `g`; its secret just went away.
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)
