"""The credentials a request presents, read once per request.

The rate-limit key and the guard both need the Bearer token's claim: it is decoded here once
and memoised in `g` (ARCHITECTURE.md: decide who is calling once per request).
"""

from __future__ import annotations

from flask import g, request

from .tokens import AccessClaim, read_access_token

_UNREAD = object()


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def bearer_claim() -> AccessClaim | None:
    """The claim of this request's Bearer token (None when absent or bad), decoded once."""
    claim = g.get("_codexweb_bearer_claim", _UNREAD)
    if claim is _UNREAD:
        token = bearer_token()
        claim = read_access_token(token) if token is not None else None
        g._codexweb_bearer_claim = claim
    return claim


def forget_credentials() -> None:
    g.pop("_codexweb_bearer_claim", None)
