"""`/codex/sessions/<id>` (CONTRACT.md §6): one session's details and transcript, `Resume
session` while it is active, 404 for anyone else's; and the history's links and filter."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import render_template

from codexweb.codex import chatkit
from codexweb.extensions import db
from codexweb.models import User

from .pages_support import AGENT, Browser, close_session, is_full_page, open_session

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def browser(client, user) -> Browser:
    return Browser(client, user)


def facts(html: str) -> dict[str, str]:
    """The details list as {term: text}, tags stripped."""
    pairs = re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", html, re.S)
    return {term: re.sub(r"<[^>]+>", "", value).strip() for term, value in pairs}


def mint(app, user, session_id: str, times: int) -> None:
    with app.app_context():
        owner = db.session.get(User, user.id)
        for _ in range(times):
            chatkit.mint_chatkit_token(owner, session_id, login_id="lgn_pytest")


def test_an_active_session_shows_its_details_and_resume(app, browser, user, frozen_clock):
    frozen_clock(START)
    session_id = open_session(app, user)
    mint(app, user, session_id, 2)
    response = browser.get(f"/codex/sessions/{session_id}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and is_full_page(html)
    assert "<h1>Session with Demo agent</h1>" in html
    assert facts(html) == {
        "Agent": "Demo agent",
        "Placement": "dashboard",
        "Status": "Active",
        "Started": "01 Mar 2026, 09:00 UTC",
        "Last active": "01 Mar 2026, 09:00 UTC",
        "Expires": "01 Mar 2026, 09:30 UTC",
        "Access tokens issued": "2",
    }
    resume = f'<a class="button" href="/codex/chatkit/sessions/{session_id}">Resume session</a>'
    assert resume in html
    assert 'aria-current="page">Sessions</a>' in html  # the nav says where we are


def test_a_closed_session_shows_when_it_closed_and_no_resume(app, browser, user, frozen_clock):
    frozen_clock(START)
    session_id = open_session(app, user)
    frozen_clock(START + timedelta(minutes=5))
    close_session(app, user, session_id)
    html = browser.get(f"/codex/sessions/{session_id}").get_data(as_text=True)
    details = facts(html)
    assert details["Status"] == "Closed"
    assert details["Closed"] == "01 Mar 2026, 09:05 UTC"
    assert "Expires" not in details
    assert details["Access tokens issued"] == "0"
    assert "Resume session" not in html


def test_a_lapsed_session_reads_expired(app, browser, user, frozen_clock):
    frozen_clock(START)
    session_id = open_session(app, user)
    frozen_clock(START + timedelta(hours=1))
    html = browser.get(f"/codex/sessions/{session_id}").get_data(as_text=True)
    details = facts(html)
    assert details["Status"] == "Expired"
    assert details["Expired"] == "01 Mar 2026, 09:30 UTC"
    assert "Resume session" not in html


def test_the_transcript_section_is_there_and_empty_for_now(app, browser, user):
    session_id = open_session(app, user)
    html = browser.get(f"/codex/sessions/{session_id}").get_data(as_text=True)
    assert (
        '<section id="transcript" class="card transcript" aria-labelledby="transcript-title">'
        in (html)
    )
    assert '<h2 id="transcript-title">Transcript</h2>' in html
    assert "No messages in this session yet." in html


def test_the_transcript_partial_labels_who_wrote_each_message_and_pages(app):
    transcript = {
        "session_id": "cxs_x",
        "thread_id": "thr_1",
        "items": [
            {"id": "m1", "role": "user", "text": "Hello <b>there</b>", "created_at": START},
            {
                "id": "m2",
                "role": "assistant",
                "text": "Hi, I am the demo.",
                "created_at": "2026-03-01T09:00:05Z",
            },
        ],
        "next_cursor": "abc",
    }
    session = {"id": "cxs_x", "agent_name": "Demo agent"}
    with app.test_request_context("/"):
        html = render_template("partials/_transcript.html", transcript=transcript, session=session)
    messages = re.findall(r"<li class=\"message message-(\w+)\">(.*?)</li>", html, re.S)
    assert [role for role, _ in messages] == ["user", "assistant"]
    assert "<strong>You</strong>" in messages[0][1]
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in messages[0][1]  # text, never markup
    assert "<strong>Demo agent</strong>" in messages[1][1]
    assert 'datetime="2026-03-01T09:00:05Z"' in messages[1][1]
    assert 'href="/codex/sessions/cxs_x?cursor=abc#transcript">Later messages</a>' in html


def test_someone_elses_session_is_not_found(app, browser, make_user):
    stranger = make_user("stranger@example.com")
    session_id = open_session(app, stranger)
    response = browser.get(f"/codex/sessions/{session_id}")
    assert response.status_code == 404
    assert "stranger" not in response.get_data(as_text=True)


def test_an_unknown_session_is_not_found(browser):
    assert browser.get("/codex/sessions/cxs_nope").status_code == 404


def test_anonymous_visitors_go_to_the_login_page(client):
    response = client.get("/codex/sessions/cxs_whatever")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_history_rows_link_to_their_session_page(app, browser, user, frozen_clock):
    frozen_clock(START)
    session_id = open_session(app, user)
    html = browser.get("/codex/sessions").get_data(as_text=True)
    assert re.search(
        rf'<a class="cell-strong" href="/codex/sessions/{session_id}">Demo agent'
        r'<span class="visually-hidden"> session, started 01 Mar 2026, 09:00 UTC</span></a>',
        html,
    )


def history_rows(html: str) -> list[str]:
    return re.findall(r'<tr id="row-(cxs_[^"]+)"', html)


def test_the_history_filters_by_status(app, browser, user, frozen_clock):
    frozen_clock(START)
    closed = open_session(app, user)
    close_session(app, user, closed)
    frozen_clock(START + timedelta(minutes=1))
    active = open_session(app, user, placement="developer-workbench")

    page = browser.get("/codex/sessions").get_data(as_text=True)
    assert history_rows(page) == [active, closed]
    assert '<label for="status">Show</label>' in page
    assert 'hx-get="/codex/sessions" hx-target="#sessions-list"' in page
    assert '<option value="" selected>All sessions</option>' in page

    only_active = browser.get("/codex/sessions?status=active").get_data(as_text=True)
    assert history_rows(only_active) == [active]
    assert '<option value="active" selected>Active sessions</option>' in only_active

    partial = browser.hx_get("/codex/sessions?status=closed", current="/codex/sessions")
    html = partial.get_data(as_text=True)
    assert not is_full_page(html)
    assert history_rows(html) == [closed]
    assert "Closed sessions, newest first" in html

    none = browser.get("/codex/sessions?status=expired").get_data(as_text=True)
    assert "No expired sessions" in none


def test_an_unknown_status_shows_every_session(app, browser, user):
    session_id = open_session(app, user)
    response = browser.get("/codex/sessions?status=bogus")
    assert response.status_code == 200
    assert history_rows(response.get_data(as_text=True)) == [session_id]


def test_paging_keeps_the_filter(app, browser, user, frozen_clock):
    for minute in range(21):
        frozen_clock(START + timedelta(minutes=minute))
        close_session(app, user, open_session(app, user, agent_id=AGENT))
    html = browser.get("/codex/sessions?status=closed").get_data(as_text=True)
    older = re.search(r'hx-get="(/codex/sessions\?[^"]+)"', html.split('class="pager"')[1])
    assert older and "status=closed" in older.group(1) and "cursor=" in older.group(1)
    second = browser.hx_get(older.group(1).replace("&amp;", "&"), current="/codex/sessions")
    page = second.get_data(as_text=True)
    assert len(history_rows(page)) == 1
    assert 'href="/codex/sessions?status=closed"' in page  # "Newest sessions", still filtered
