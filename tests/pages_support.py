"""Helpers for the page tests: a logged-in browser-like client that speaks HTMX, and
sessions created through the domain functions (the same ones the pages call)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from codexweb.codex import sessions
from codexweb.extensions import db
from codexweb.models import CodexSession, User
from tests.conftest import browser_session_for

PLACEMENT = "dashboard"
AGENT = "agent_123"


class Browser:
    """A Flask test client logged in through the login session cookie, like a browser.

    `hx_get`/`hx_post` send what htmx sends (`HX-Request`, `HX-Current-URL`, the CSRF
    header app.js adds); `post` is a plain form post with the hidden `csrf_token` field.
    """

    def __init__(self, client: FlaskClient, user: User | None = None) -> None:
        self.client = client
        if user is not None:
            with client.application.app_context():
                logged_in = browser_session_for(user.id)
            with client.session_transaction() as state:
                state.update(logged_in)
        self._csrf: str | None = None

    def csrf(self) -> str:
        if self._csrf is None:
            page = self.client.get("/login", follow_redirects=True).get_data(as_text=True)
            self._csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)
        return self._csrf

    def htmx_headers(self, current: str = "/codex/chatkit") -> dict[str, str]:
        return {"HX-Request": "true", "HX-Current-URL": f"http://localhost{current}"}

    def get(self, path: str, **kwargs: Any):
        return self.client.get(path, **kwargs)

    def hx_get(self, path: str, current: str = "/codex/chatkit"):
        return self.client.get(path, headers=self.htmx_headers(current))

    def hx_post(
        self, path: str, data: dict[str, str] | None = None, current: str = "/codex/chatkit"
    ):
        headers = {**self.htmx_headers(current), "X-CSRFToken": self.csrf()}
        return self.client.post(path, data=data or {}, headers=headers)

    def post(self, path: str, data: dict[str, str] | None = None):
        return self.client.post(path, data={**(data or {}), "csrf_token": self.csrf()})


def open_session(app: Flask, user: User, placement: str = PLACEMENT, agent_id: str = AGENT) -> str:
    with app.app_context():
        owner = db.session.get(User, user.id)
        return sessions.open_session(owner, placement=placement, agent_id=agent_id).id


def close_session(app: Flask, user: User, session_id: str) -> None:
    with app.app_context():
        sessions.close_session(db.session.get(User, user.id), session_id)


def stored_status(app: Flask, session_id: str) -> str:
    with app.app_context():
        return db.session.get(CodexSession, session_id).status


def toast(response) -> dict[str, str]:
    return json.loads(response.headers["HX-Trigger"])["codexweb:toast"]


def is_full_page(html: str) -> bool:
    return html.lstrip().lower().startswith("<!doctype html>")


def user_in(app: Flask, email: str, *, verified: bool = True) -> User:
    """A user stored in `app`'s database (for tests that build their own app)."""
    from codexweb.auth.accounts import create_user

    with app.app_context():
        user = create_user(email, "correct horse battery staple", verified=verified)
        db.session.commit()
        db.session.refresh(user)
        db.session.expunge(user)
        return user
