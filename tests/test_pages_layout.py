"""The layout every page extends: nav, flashes, toasts region, CSRF meta, htmx config, no
inline script or style (the CSP forbids them), and the vendored htmx."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from flask import flash, render_template_string
from flask_login import login_user

STATIC = Path(__file__).resolve().parent.parent / "static"


def render_layout(app, user=None, *, flashes=()) -> str:
    with app.test_request_context("/"):
        if user is not None:
            login_user(user)
        for category, message in flashes:
            flash(message, category)
        return render_template_string(
            '{% extends "base.html" %}{% block content %}<h1>Body</h1>{% endblock %}'
        )


def test_anonymous_nav_offers_login_and_account_creation(app):
    html = render_layout(app)
    assert '<a href="/login"' in html
    assert re.search(r'href="/register"[^>]*>Create account</a>', html)
    assert "Log out" not in html


def test_logged_in_nav_shows_the_email_sessions_and_a_logout_form_with_csrf(app, user):
    html = render_layout(app, user)
    assert "owner@example.com" in html
    assert 'href="/codex/sessions"' in html and ">Sessions</a>" in html
    form = re.search(
        r'<form class="nav-logout" method="post" action="/logout">(.*?)</form>', html, re.S
    )
    assert form, html
    assert re.search(r'name="csrf_token" value="[^"]+"', form.group(1))
    assert "Log out</button>" in form.group(1)
    assert "Create account" not in html


def test_flashed_messages_are_shown(app):
    html = render_layout(app, flashes=[("success", "Email verified."), ("error", "Nope.")])
    assert '<li class="flash flash-success">Email verified.</li>' in html
    assert '<li class="flash flash-error">Nope.</li>' in html


def test_toasts_live_region_and_csrf_meta(app):
    html = render_layout(app)
    assert re.search(r'<div id="toasts"[^>]*aria-live="polite"', html)
    assert re.search(r'<meta name="csrf-token" content="[^"]+">', html)


def test_htmx_is_configured_by_meta_tag_for_history_and_the_csp(app):
    html = render_layout(app)
    raw = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", html).group(1)
    config = json.loads(raw)
    assert config["historyRestoreAsHxRequest"] is False
    assert config["includeIndicatorStyles"] is False  # htmx would inject an inline <style>
    assert config["allowEval"] is False
    codes = {rule["code"]: rule for rule in config["responseHandling"]}
    assert codes["409"]["swap"] is True and codes["422"]["swap"] is True


def test_no_inline_scripts_styles_or_handlers(app, user):
    html = render_layout(app, user)
    for script in re.findall(r"<script[^>]*>", html):
        assert "src=" in script, script
    assert "<style" not in html
    assert not re.search(r"\son[a-z]+=", html)
    assert " style=" not in html


def test_htmx_is_vendored_with_its_licence(client):
    script = client.get("/static/vendor/htmx-2.0.11.min.js")
    assert script.status_code == 200
    assert b'version:"2.0.11"' in script.data
    # The exact bytes of dist/htmx.min.js in the npm package htmx.org@2.0.11.
    assert (
        hashlib.sha256(script.data).hexdigest()
        == "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
    )
    assert "Zero-Clause BSD" in (STATIC / "vendor" / "htmx-2.0.11.LICENSE").read_text()
    script.close()


def test_layout_loads_htmx_app_js_and_css_from_this_origin(app):
    html = render_layout(app)
    assert '<script src="/static/vendor/htmx-2.0.11.min.js" defer></script>' in html
    assert '<script src="/static/app.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/static/app.css">' in html
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', html))


def test_the_error_page_renders_even_when_the_database_is_down(app, client, user):
    from sqlalchemy.exc import OperationalError

    def database_down(user_id):
        raise OperationalError("SELECT users", {}, Exception("connection refused"))

    with client.session_transaction() as state:
        state["_user_id"] = user.id
    app.login_manager.user_loader(database_down)
    response = client.get("/codex/chatkit")
    html = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "The service is temporarily unavailable" in html
    assert ">Log in</a>" in html  # the nav could not tell who is logged in
    assert "connection refused" not in html


def test_htmx_sends_the_csrf_token_from_hx_headers(app):
    html = render_layout(app)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', html).group(1)
    headers = re.search(r"<body hx-headers='([^']+)'>", html).group(1)
    assert json.loads(headers) == {"X-CSRFToken": token}


def test_the_token_keeper_is_loaded_only_by_the_chatkit_page(app, user, client):
    from .pages_support import Browser

    browser = Browser(client, user)
    keeper = '<script src="/static/token_keeper.js" defer></script>'
    assert keeper in browser.get("/codex/chatkit").get_data(as_text=True)
    assert keeper not in browser.get("/codex/sessions").get_data(as_text=True)
    assert keeper not in render_layout(app, user)
    assert "TokenKeeper" not in (STATIC / "app.js").read_text()
