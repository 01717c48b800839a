"""`/codex/sessions`: the history, newest first, with `Close` on active rows, paginated."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from .pages_support import (
    AGENT,
    Browser,
    close_session,
    is_full_page,
    open_session,
    stored_status,
    toast,
)

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def browser(client, user) -> Browser:
    return Browser(client, user)


def rows(html: str) -> list[str]:
    return re.findall(r'<tr id="row-(cxs_[^"]+)"', html)


def row_html(html: str, session_id: str) -> str:
    return re.search(rf'<tr id="row-{session_id}".*?</tr>', html, re.S).group(0)


def make_history(app, user, frozen_clock, count: int) -> list[str]:
    """`count` sessions a minute apart, all closed but the newest; oldest first."""
    ids = []
    for minute in range(count):
        frozen_clock(START + timedelta(minutes=minute))
        session_id = open_session(app, user)
        if minute < count - 1:
            close_session(app, user, session_id)
        ids.append(session_id)
    return ids


def test_history_lists_newest_first_with_status_times_and_close_on_active(
    app, browser, user, frozen_clock
):
    oldest, middle, newest = make_history(app, user, frozen_clock, 3)
    html = browser.get("/codex/sessions").get_data(as_text=True)
    assert is_full_page(html)
    assert rows(html) == [newest, middle, oldest]

    active = row_html(html, newest)
    assert '<span class="badge badge-active">Active</span>' in active
    assert 'datetime="2026-03-01T09:02:00Z"' in active  # started
    assert "Demo agent" in active and "dashboard" in active
    assert f'hx-post="/codex/sessions/{newest}/close"' in active
    assert ">Close</button>" in active

    closed = row_html(html, oldest)
    assert '<span class="badge badge-closed">Closed</span>' in closed
    assert "<button" not in closed


def test_a_lapsed_session_reads_expired_without_a_close_button(app, browser, user, frozen_clock):
    frozen_clock(START)
    session_id = open_session(app, user)
    frozen_clock(START + timedelta(days=2))
    html = browser.get("/codex/sessions").get_data(as_text=True)
    row = row_html(html, session_id)
    assert '<span class="badge badge-expired">Expired</span>' in row
    assert "<button" not in row


def test_history_is_paginated(app, browser, user, frozen_clock):
    ids = make_history(app, user, frozen_clock, 21)
    first = browser.get("/codex/sessions").get_data(as_text=True)
    assert rows(first) == list(reversed(ids))[:20]
    older = re.search(r'hx-get="(/codex/sessions\?cursor=[^"]+)"', first).group(1)
    assert 'hx-swap="innerHTML show:#sessions-list:top"' in first
    assert 'hx-push-url="true"' in first
    assert "Newest sessions" not in first

    second = browser.hx_get(older.replace("&amp;", "&"), current="/codex/sessions")
    html = second.get_data(as_text=True)
    assert not is_full_page(html)
    assert rows(html) == [ids[0]]
    assert "Older sessions" not in html
    assert 'hx-get="/codex/sessions"' in html and "Newest sessions" in html


def test_a_bad_cursor_is_a_clear_error_not_a_crash(browser):
    response = browser.get("/codex/sessions?cursor=not-a-cursor")
    assert response.status_code == 422
    assert "Invalid request" in response.get_data(as_text=True)


def test_no_sessions_yet(browser):
    html = browser.get("/codex/sessions").get_data(as_text=True)
    assert "No sessions yet" in html
    assert 'href="/codex/chatkit"' in html


def test_other_peoples_sessions_are_not_listed(app, browser, make_user):
    stranger = make_user("stranger@example.com")
    open_session(app, stranger)
    assert rows(browser.get("/codex/sessions").get_data(as_text=True)) == []


def test_closing_a_row_over_htmx_swaps_just_that_row(app, browser, user):
    session_id = open_session(app, user)
    response = browser.hx_post(f"/codex/sessions/{session_id}/close", current="/codex/sessions")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.startswith(f'<tr id="row-{session_id}"')
    assert '<span class="badge badge-closed">Closed</span>' in html
    assert "<button" not in html
    assert toast(response)["message"] == "Session closed."
    assert stored_status(app, session_id) == "closed"


def test_closing_a_row_without_javascript_redirects_back(app, browser, user):
    session_id = open_session(app, user, agent_id=AGENT)
    response = browser.post(f"/codex/sessions/{session_id}/close")
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/sessions"
    assert stored_status(app, session_id) == "closed"


def test_closing_someone_elses_row_is_not_found(app, browser, make_user):
    stranger = make_user("stranger@example.com")
    theirs = open_session(app, stranger)
    assert browser.hx_post(f"/codex/sessions/{theirs}/close").status_code == 404
    assert stored_status(app, theirs) == "active"


def test_htmx_gets_the_list_partial(app, browser, user):
    open_session(app, user)
    response = browser.hx_get("/codex/sessions", current="/codex/sessions")
    html = response.get_data(as_text=True)
    assert not is_full_page(html)
    assert '<table class="sessions-table" tabindex="-1" autofocus>' in html
    assert "HX-Request" in response.headers["Vary"]


def test_unverified_users_see_the_banner_instead(client, unverified_user):
    html = Browser(client, unverified_user).get("/codex/sessions").get_data(as_text=True)
    assert "Verify your email" in html
    assert "<table" not in html


def test_anonymous_visitors_go_to_the_login_page(client):
    response = client.get("/codex/sessions")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/codex/sessions"
