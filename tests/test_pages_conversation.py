"""The conversation as the server renders it (CONTRACT.md §6): the built-in conversation of
`/codex/chatkit` shows the session's current thread before it goes live, the session page
shows its transcript page by page, and `<openai-chatkit>` learns where to resume."""

from __future__ import annotations

import re

import pytest

from codexweb.codex import views
from tests.codex_support import new_session
from tests.runtime_support import add_message_request, chatkit_token, create_request, sse_events

from .pages_support import Browser


@pytest.fixture
def browser(client, user) -> Browser:
    return Browser(client, user)


@pytest.fixture
def conversed(app, client, user, auth_headers) -> dict[str, str]:
    """A session in which the user said two things to the demo agent through /chatkit."""
    app.config["CHATKIT_DEMO_WORD_DELAY"] = 0
    owner = auth_headers(user)
    session = new_session(client, owner)
    token = chatkit_token(client, owner, session["session_id"])
    first = client.post("/chatkit", json=create_request("Hello <b>there</b>"), headers=token)
    thread_id = next(
        event["thread"]["id"]
        for event in sse_events(first.get_data(as_text=True))
        if event["type"] == "thread.created"
    )
    second = client.post(
        "/chatkit", json=add_message_request(thread_id, "And again"), headers=token
    )
    assert second.status_code == 200
    second.get_data()  # the reply is written while the stream is read
    return {"session_id": session["session_id"], "thread_id": thread_id}


def rendered_messages(html: str) -> list[tuple[str, str, str]]:
    """(role, author, text) of each message, in order."""
    found = re.findall(
        r'<li class="message message-(\w+)"(?: data-item-id="[^"]+")?>\s*'
        r'<p class="message-meta"><strong>(.*?)</strong>'
        r'.*?<div class="message-text">(.*?)</div>',
        html,
        re.S,
    )
    return [(role, author, text) for role, author, text in found]


def test_resuming_shows_the_conversation_so_far_and_loads_its_script(browser, conversed):
    response = browser.get(f"/codex/chatkit/sessions/{conversed['session_id']}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'role="log" aria-labelledby="conversation-title"' in html
    assert '<h3 id="conversation-title">Conversation</h3>' in html
    assert f'data-thread-id="{conversed["thread_id"]}"' in html
    assert 'data-chatkit-url="/chatkit"' in html
    messages = rendered_messages(html)
    assert [(role, author) for role, author, _ in messages] == [
        ("user", "You"),
        ("assistant", "Demo agent"),
        ("user", "You"),
        ("assistant", "Demo agent"),
    ]
    assert messages[0][2] == "Hello &lt;b&gt;there&lt;/b&gt;"  # text, never markup
    assert messages[3][2].endswith("You said: And again")
    assert '<label for="message-' in html and ">Message</label>" in html
    assert "data-send>Send</button>" in html
    assert "/static/conversation.js" in html
    assert "No messages yet" in html and "data-conversation-empty hidden" in html


def test_a_new_session_shows_an_empty_conversation(browser):
    csrf = browser.csrf()
    response = browser.client.post(
        "/codex/chatkit/sessions",
        data={"agent_id": "agent_123", "placement": "dashboard", "csrf_token": csrf},
        headers=browser.htmx_headers(),
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'data-thread-id=""' in html
    assert rendered_messages(html) == []
    assert "No messages yet. Say hello to Demo agent." in html
    assert "data-conversation-empty hidden" not in html


def test_the_conversation_shows_the_latest_messages_and_points_to_the_rest(
    browser, conversed, monkeypatch
):
    monkeypatch.setattr(views, "CONVERSATION_SHOWN", 3)
    html = browser.get(f"/codex/chatkit/sessions/{conversed['session_id']}").get_data(as_text=True)
    messages = rendered_messages(html)
    assert [role for role, _, _ in messages] == ["assistant", "user", "assistant"]
    assert messages[1][2] == "And again"
    assert "Earlier messages are on" in html
    assert f'href="/codex/sessions/{conversed["session_id"]}#transcript"' in html


def test_the_session_page_shows_the_transcript_page_by_page(browser, conversed, monkeypatch):
    monkeypatch.setattr(views, "TRANSCRIPT_PER_PAGE", 3)
    page_url = f"/codex/sessions/{conversed['session_id']}"
    html = browser.get(page_url).get_data(as_text=True)
    first = rendered_messages(html)
    assert [(role, author) for role, author, _ in first] == [
        ("user", "You"),
        ("assistant", "Demo agent"),
        ("user", "You"),
    ]
    assert first[0][2] == "Hello &lt;b&gt;there&lt;/b&gt;"
    later = re.search(r'href="([^"]+)#transcript">Later messages</a>', html)
    assert later, html
    rest = browser.get(later.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert [role for role, _, _ in rendered_messages(rest)] == ["assistant"]
    assert "Later messages" not in rest
    assert f'href="{page_url}#transcript">First messages</a>' in rest


def test_a_cursor_the_page_did_not_hand_out_shows_the_first_page(browser, conversed):
    html = browser.get(f"/codex/sessions/{conversed['session_id']}?cursor=nonsense").get_data(
        as_text=True
    )
    assert len(rendered_messages(html)) == 4


def test_the_chatkit_component_gets_the_runtime_domain_key_and_thread(app, browser, conversed):
    app.config.update(
        CHATKIT_SCRIPT_URL="https://cdn.example.com/chatkit.js", CHATKIT_DOMAIN_KEY="domain_pk_1"
    )
    html = browser.get(f"/codex/chatkit/sessions/{conversed['session_id']}").get_data(as_text=True)
    assert (
        '<openai-chatkit data-chatkit-element data-api-url="/chatkit"'
        f' data-domain-key="domain_pk_1" data-initial-thread="{conversed["thread_id"]}">'
    ) in html
    assert "/static/conversation.js" not in html
    assert 'role="log"' not in html
