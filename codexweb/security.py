"""Security headers on every response, decided in one place.

The pages carry no inline script or style (htmx is configured through a meta tag and its
indicator styles are off), so the Content-Security-Policy can be "self only". The one
exception is the ChatKit web component: when `CHATKIT_SCRIPT_URL` is configured, its origin
(plus any `CHATKIT_CSP_ORIGINS`) may serve scripts, frames and answer fetches, and a
self-hosted ChatKit server (`CHATKIT_API_URL`) may answer the page's fetches.

Every response also says `Vary: HX-Request`: the same URL answers a full page or a partial,
and a shared cache or the browser's own must never hand one out for the other. HTML is
`no-store` unless a view decided otherwise, and so is every other answer but static files:
JSON under `/api/` carries a user's data or tokens (`/me`, sessions, a login's access token),
and an error page may name the user. Views that serve something public say so themselves
(the JWKS is `public, max-age=…`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request

from .config import is_production

# One year, the common preload floor; only ever sent in production (behind TLS).
HSTS = "max-age=31536000; includeSubDomains"


def origin_of(url: str | None) -> str | None:
    """`https://cdn.example.com` for `https://cdn.example.com/x/chatkit.js`, else None."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def chatkit_origins(app: Flask) -> list[str]:
    """Where the ChatKit web component comes from and frames: its script's origin plus
    `CHATKIT_CSP_ORIGINS`, in a stable order, without duplicates."""
    if not app.config.get("CHATKIT_SCRIPT_URL"):
        return []
    urls = [app.config["CHATKIT_SCRIPT_URL"], *(app.config.get("CHATKIT_CSP_ORIGINS") or [])]
    return _unique(origin_of(url) for url in urls)


def chatkit_api_origins(app: Flask) -> list[str]:
    """A self-hosted ChatKit server (`CHATKIT_API_URL`): the page's own fetch talks to it."""
    if not app.config.get("CHATKIT_SCRIPT_URL"):
        return []
    return _unique([origin_of(app.config.get("CHATKIT_API_URL"))])


def sso_origins(app: Flask) -> list[str]:
    """The OpenID provider's origin: a form posted here (link an identity, log out) may be
    redirected there, and browsers check `form-action` on every step of that redirect. Its
    authorization and end-session endpoints live there (Keycloak, Entra ID, Google)."""
    if not all(app.config.get(key) for key in ("OIDC_ISSUER", "OIDC_CLIENT_ID")):
        return []
    return _unique([origin_of(app.config["OIDC_ISSUER"])])


def _unique(origins) -> list[str]:
    return [origin for origin in dict.fromkeys(origins) if origin]


def content_security_policy(app: Flask) -> str:
    component = chatkit_origins(app)
    connect = _unique([*component, *chatkit_api_origins(app)])
    directives = {
        "default-src": "'self'",
        "script-src": _sources("'self'", component),
        "style-src": "'self'",
        "img-src": _sources("'self'", component) + " data:",
        "font-src": "'self'",
        "connect-src": _sources("'self'", connect),
        "frame-src": " ".join(component) or "'none'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": _sources("'self'", sso_origins(app)),
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def _sources(first: str, origins: list[str]) -> str:
    return " ".join([first, *origins])


def add_security_headers(response: Response) -> Response:
    app = current_app
    headers = response.headers
    headers.setdefault("Content-Security-Policy", app.extensions["codexweb.csp"])
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    # For browsers that predate frame-ancestors.
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if is_production(app):
        headers.setdefault("Strict-Transport-Security", HSTS)
    if "Cache-Control" not in headers and request.endpoint != "static":
        # Pages and API answers are per user: never stored, so the back button after logging
        # out, a shared machine or a proxy cannot show someone's data from a cache.
        headers["Cache-Control"] = "no-store"
    response.vary.add("HX-Request")
    return response


def init_app(app: Flask) -> None:
    # Computed once: the policy only depends on configuration.
    app.extensions["codexweb.csp"] = content_security_policy(app)
    app.after_request(add_security_headers)
