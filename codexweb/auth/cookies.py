"""The `refresh_token` cookie, set and cleared in one place.

The refresh cookie is HttpOnly (scripts never read it), SameSite=Strict (never sent
cross-site) and scoped to `/api/auth`, the only place that reads it; Secure unless
`COOKIE_SECURE` is off (development). The login session cookie itself is Flask's, managed by
`codexweb.auth.logins`.
"""

from __future__ import annotations

from flask import Response, current_app, request

REFRESH_COOKIE = "refresh_token"
REFRESH_COOKIE_PATH = "/api/auth"


def refresh_cookie_value() -> str | None:
    return request.cookies.get(REFRESH_COOKIE)


def set_refresh_cookie(response: Response, refresh_token: str, *, persistent: bool) -> None:
    """`persistent`: the cookie outlives the browser (API logins and remembered browser logins);
    otherwise it dies with the browser, like the login session it belongs to."""
    response.set_cookie(
        REFRESH_COOKIE,
        refresh_token,
        max_age=int(current_app.config["REFRESH_TOKEN_TTL"]) if persistent else None,
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
