"""Helpers for the accounts tests: CSRF tokens scraped from real pages, links read from
emails, JSON logins, and a snapshot of the account tables to prove a bad request changed
nothing."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from codexweb.extensions import db
from codexweb.models import RefreshToken, User

STRONG_PASSWORD = "a long enough passphrase"


_FORM_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
_META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_LINK = re.compile(r"https?://\S+/(verify-email|reset-password|confirm-email)/([A-Za-z0-9._-]+)")


def form_csrf_token(html: str) -> str:
    match = _FORM_CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def meta_csrf_token(html: str) -> str:
    match = _META_CSRF.search(html)
    assert match, "the page has no csrf-token meta tag"
    return match.group(1)


def submit_form(client, url: str, data: dict[str, str], *, page: str | None = None, **kwargs):
    """GET the page (`page`, default `url`), then POST `data` with the form's real CSRF token."""
    html = client.get(page or url).get_data(as_text=True)
    return client.post(url, data={**data, "csrf_token": form_csrf_token(html)}, **kwargs)


def link_token(message, kind: str = "verify-email") -> str:
    """The token of the `kind` link in a sent email (plain-text body)."""
    body = message.body if hasattr(message, "body") else str(message)
    for found_kind, token in _LINK.findall(body):
        if found_kind == kind:
            return token
    raise AssertionError(f"no {kind} link in {body!r}")


def link_in(message, kind: str = "verify-email") -> str:
    match = re.search(rf"https?://\S+/{kind}/[A-Za-z0-9._-]+", message.body)
    assert match, f"no {kind} link in the email"
    return match.group(0)


def login_json(client, email: str, password: str):
    return client.post("/api/auth/login", json={"email": email, "password": password})


def refresh_cookie(client) -> str | None:
    cookie = client.get_cookie("refresh_token", path="/api/auth")
    return cookie.value if cookie else None


def snapshot(app: Flask) -> dict[str, Any]:
    """Everything a bad request must leave alone: users and refresh tokens, field by field."""
    with app.app_context():
        users = db.session.execute(db.select(User).order_by(User.id)).scalars().all()
        tokens = db.session.execute(db.select(RefreshToken).order_by(RefreshToken.id)).scalars()
        return {
            "users": [
                (u.id, u.email, u.password_hash, u.email_verified_at, u.created_at) for u in users
            ],
            "refresh_tokens": [
                (t.id, t.family_id, t.token_hash, t.rotated_at, t.revoked_at) for t in tokens
            ],
        }


def user_row(app: Flask, email: str) -> User | None:
    with app.app_context():
        user = db.session.execute(db.select(User).where(User.email == email)).scalar_one_or_none()
        if user is not None:
            db.session.expunge(user)
        return user


def refresh_rows(app: Flask, user_id: str) -> list[RefreshToken]:
    with app.app_context():
        rows = (
            db.session.execute(db.select(RefreshToken).where(RefreshToken.user_id == user_id))
            .scalars()
            .all()
        )
        for row in rows:
            db.session.expunge(row)
        return rows
