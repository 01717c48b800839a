"""The built-in conversation of /codex/chatkit in a real browser (CONTRACT.md §6, issue 11):
a person signs up, talks to the demo agent through /chatkit and watches the reply stream in,
finds the same messages after a reload and on the session page; the keyboard, a phone, a busy
runtime and a failing agent.

With CODEXWEB_DOCS_SCREENSHOTS=docs these tests also refresh the README's conversation
screenshots.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from ..servers import REPO, free_port
from .conftest import PASSWORD, link_path, mails_to, wait_for_mail
from .test_browser_flow import BUSY, create_verified_user, docs_screenshot, log_in, toasts
from .test_pages_a11y import no_sideways_scroll, tab_to

# Slow enough to watch the reply grow several times, fast enough for a short test.
WORD_DELAY = 0.15
DEMO_REPLY = re.compile(r"^This is Demo agent, codexweb's offline demo agent .* You said: (.*)$")


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "bypass_csp": True}  # axe-core is injected


def docs_page_screenshot(page: Page, name: str) -> None:
    """The whole page, messages and composer included, for the README."""
    folder = os.environ.get("CODEXWEB_DOCS_SCREENSHOTS")
    if folder:
        target = Path(folder) if Path(folder).is_absolute() else REPO / folder
        page.evaluate("() => window.scrollTo(0, 0)")  # the sticky header stays at the top
        page.screenshot(path=str(target / f"{name}.png"), animations="disabled", full_page=True)


def conversation(page: Page):
    return page.get_by_role("log", name="Conversation")


def message_box(page: Page):
    return page.get_by_role("textbox", name="Message")


def send_button(page: Page):
    return page.get_by_role("button", name="Send")


def messages(page: Page):
    return conversation(page).get_by_role("listitem")


def start_session(page: Page) -> None:
    page.get_by_role("button", name="Start session").click()
    expect(conversation(page)).to_be_visible()
    expect(page.locator("[data-token-state]")).to_have_text("Connected.")


def reply_lengths_while_streaming(page: Page) -> list[int]:
    """The streaming reply's text length, sampled every 200 ms until it is done."""
    reply = conversation(page).locator(".message-assistant").last
    # A fresh worker loads the ChatKit SDKs before its first answer: seconds on a busy machine.
    expect(reply).to_have_attribute("data-streaming", "true", timeout=30_000)
    lengths = []
    for _ in range(150):
        streaming = reply.get_attribute("data-streaming") == "true"
        lengths.append(len(reply.locator(".message-text").inner_text()))
        if not streaming:
            return lengths
        page.wait_for_timeout(200)
    raise AssertionError(f"the reply never finished streaming: {lengths}")


def expect_message(item, author: str, text: str | re.Pattern[str]) -> None:
    expect(item.locator(".message-meta")).to_have_text(author)
    expect(item.locator(".message-text")).to_have_text(text)


def test_a_conversation_streams_survives_a_reload_and_ends_with_the_session(
    page: Page, serve, watch, steps, assert_no_axe_violations
):
    server = serve(CHATKIT_DEMO_WORD_DELAY=WORD_DELAY)
    address = "talker@example.com"

    with steps("sign up and verify by the emailed link"):
        page.goto(server.url + "/register")
        page.get_by_label("Email").fill(address)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("navigation", name="Main")).to_contain_text(address)
        wait_for_mail(page, server, address, 1)
        page.goto(server.url + link_path(mails_to(server, address)[-1], "/verify-email/"))
        expect(page).to_have_url(server.url + "/codex/chatkit")
        page.wait_for_load_state()

    with steps("start: an empty conversation"):
        start_session(page)
        expect(conversation(page)).to_contain_text("No messages yet. Say hello to Demo agent.")
        expect(messages(page)).to_have_count(0)
        expect(send_button(page)).to_be_enabled()
        assert_no_axe_violations(page, "the empty conversation")

    with steps("send: the reply streams in word by word"):
        message_box(page).fill("Hello there")
        send_button(page).click()
        expect(send_button(page)).to_be_disabled()  # while the reply streams
        expect(message_box(page)).to_be_focused()
        expect(message_box(page)).to_have_value("")
        expect_message(messages(page).first, "You", "Hello there")
        lengths = reply_lengths_while_streaming(page)
        growing = [b for a, b in zip(lengths, lengths[1:], strict=False) if b > a]
        assert len(growing) >= 3, f"the reply did not grow while streaming: {lengths}"
        assert lengths == sorted(lengths), f"the reply shrank while streaming: {lengths}"
        expect_message(messages(page).nth(1), "Demo agent", DEMO_REPLY)
        expect(messages(page).nth(1)).to_contain_text("You said: Hello there")
        expect(send_button(page)).to_be_enabled()
        assert_no_axe_violations(page, "the conversation after a reply")

    with steps("Enter sends the next message into the same thread; Shift+Enter breaks a line"):
        message_box(page).press_sequentially("Two")
        message_box(page).press("Shift+Enter")
        message_box(page).press_sequentially("lines")
        expect(message_box(page)).to_have_value("Two\nlines")
        message_box(page).press("Enter")
        expect(messages(page)).to_have_count(4, timeout=20_000)
        expect_message(messages(page).nth(2), "You", "Two\nlines")
        expect(messages(page).nth(3)).to_contain_text("You said: Two\nlines", timeout=20_000)
        expect(send_button(page)).to_be_enabled()
        docs_page_screenshot(page, "conversation")

    with steps("reload and resume: the same messages"):
        page.reload()
        page.locator(".session-card").get_by_role("button", name="Resume session").click()
        expect(messages(page)).to_have_count(4)
        expect_message(messages(page).nth(0), "You", "Hello there")
        expect(messages(page).nth(1)).to_contain_text("You said: Hello there")
        expect_message(messages(page).nth(2), "You", "Two\nlines")
        expect(messages(page).nth(3)).to_contain_text("You said: Two\nlines")

    with steps("the session page shows the transcript"):
        session_id = page.locator("[data-chatkit-area]").get_attribute("data-session-id")
        page.goto(f"{server.url}/codex/sessions/{session_id}")
        transcript = page.locator("#transcript").get_by_role("listitem")
        expect(transcript).to_have_count(4)
        expect(transcript.nth(0).locator(".message-meta strong")).to_have_text("You")
        expect(transcript.nth(0).locator(".message-text")).to_have_text("Hello there")
        expect(transcript.nth(1).locator(".message-meta strong")).to_have_text("Demo agent")
        expect(transcript.nth(1).locator(".message-text")).to_have_text(DEMO_REPLY)
        assert_no_axe_violations(page, "the session page with its transcript")

    with steps("close: Send is no longer there"):
        page.get_by_role("link", name="Resume session").click()
        expect(send_button(page)).to_be_enabled()
        page.get_by_role("button", name="Close session").click()
        expect(page.get_by_role("button", name="Start session")).to_be_visible()
        expect(send_button(page)).to_have_count(0)
        expect(message_box(page)).to_have_count(0)


def test_a_close_in_another_tab_takes_send_away(page: Page, serve, watch):
    server = serve()
    create_verified_user(server, "twotabs@example.com")
    log_in(page, server, "twotabs@example.com")
    start_session(page)
    session_id = page.locator("[data-chatkit-area]").get_attribute("data-session-id")
    other = page.context.new_page()
    other.goto(f"{server.url}/codex/chatkit/sessions/{session_id}")
    expect(send_button(other)).to_be_enabled()
    watch.expect(r"status of 404")  # the other tab's recovery asks /current and finds none
    page.get_by_role("button", name="Close session").click()
    expect(send_button(other)).to_have_count(0, timeout=6_000)
    expect(other.get_by_role("button", name="Start session")).to_be_visible()


def test_the_conversation_from_the_keyboard_only(page: Page, serve, watch, steps):
    server = serve()
    create_verified_user(server, "keys@example.com")
    log_in(page, server, "keys@example.com")
    start = page.get_by_role("button", name="Start session")
    tab_to(page, start)
    page.keyboard.press("Enter")
    expect(conversation(page)).to_be_visible()

    with steps("tab to the textbox, type, Enter"):
        tab_to(page, message_box(page))
        page.keyboard.type("Typed with keys")
        page.keyboard.press("Enter")
        expect(messages(page).nth(1)).to_contain_text("You said: Typed with keys", timeout=30_000)
        expect(message_box(page)).to_be_focused()  # focus never left the textbox

    with steps("Tab reaches Send, which sends too"):
        page.keyboard.type("And the button")
        page.keyboard.press("Tab")
        expect(send_button(page)).to_be_focused()
        page.keyboard.press("Enter")
        expect(messages(page).nth(3)).to_contain_text("You said: And the button", timeout=20_000)
        expect(message_box(page)).to_be_focused()


def test_the_conversation_at_390_px(page: Page, serve, watch, steps, assert_no_axe_violations):
    server = serve()
    create_verified_user(server, "narrow@example.com")
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, server, "narrow@example.com")
    start_session(page)
    message_box(page).fill("A message long enough to wrap on a phone screen, " * 3)
    send_button(page).click()
    expect(messages(page).nth(1)).to_contain_text("You said:", timeout=30_000)
    expect(send_button(page)).to_be_enabled()
    with steps("no sideways scroll, no axe violation"):
        assert no_sideways_scroll(page) == 0
        box = send_button(page).bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390
        assert_no_axe_violations(page, "the conversation at 390 px")
        docs_page_screenshot(page, "conversation-phone")


def test_a_busy_runtime_disables_send_and_says_until_when(
    page: Page, serve, watch, steps, assert_no_axe_violations
):
    server = serve(CHATKIT_MESSAGES_PER_MINUTE=1)
    create_verified_user(server, "busy@example.com")
    log_in(page, server, "busy@example.com")
    start_session(page)
    watch.expect(r"429")
    message_box(page).fill("First")
    send_button(page).click()
    expect(messages(page).nth(1)).to_contain_text("You said: First", timeout=30_000)

    with steps("the second message in a minute is refused"):
        message_box(page).fill("Second")
        send_button(page).click()
        expect(toasts(page).last).to_have_text(BUSY)
        expect(send_button(page)).to_be_disabled()
        hint = page.locator("[data-composer-hint]")
        expect(hint).to_have_text(
            re.compile(r"^Codex is busy: you can send again at \d\d:\d\d:\d\d\.$")
        )
        # The refused message was not stored: it is back in the textbox, not in the log.
        expect(messages(page)).to_have_count(2)
        expect(message_box(page)).to_have_value("Second")
        message_box(page).press("Enter")
        expect(messages(page)).to_have_count(2)  # Enter does not send while it lasts
        assert_no_axe_violations(page, "the 429 toast")
        send_button(page).scroll_into_view_if_needed()
        docs_screenshot(page, "conversation-busy")


def test_an_agent_error_becomes_a_toast_and_the_message_stays(
    page: Page, serve, watch, steps, assert_no_axe_violations
):
    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # a model server that is down
    agents = {
        "agent_123": {
            "name": "Remote agent",
            "placements": ["dashboard", "developer-workbench"],
            "model": "test-model",
            "base_url": nowhere,
            "api_key": "not-a-real-key",
        }
    }
    server = serve(CODEX_AGENTS=json.dumps(agents), CHATKIT_MODEL_TIMEOUT=5)
    create_verified_user(server, "broken@example.com")
    log_in(page, server, "broken@example.com")
    page.get_by_role("button", name="Start session").click()
    expect(conversation(page)).to_be_visible()

    with steps("the agent fails: a toast, and the message stays shown"):
        message_box(page).fill("Are you there?")
        send_button(page).click()
        expect(toasts(page).last).to_contain_text("unavailable", timeout=30_000)
        expect(messages(page)).to_have_count(1)
        expect_message(messages(page).first, "You", "Are you there?")
        expect(send_button(page)).to_be_enabled()
        expect(message_box(page)).to_be_focused()
        assert_no_axe_violations(page, "the agent error toast")


# Cuts the next /chatkit reply off mid-stream as a dropped connection would: the page reads
# what arrived until the assistant's reply began, then the read fails.
CUT_THE_NEXT_REPLY = """
(() => {
  const realFetch = window.fetch;
  window.fetch = function (url, options) {
    return realFetch(url, options).then(function (response) {
      if (!String(url).endsWith("/chatkit") || !response.body || window.__replyCut) {
        return response;
      }
      window.__replyCut = true;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let seen = "";
      let cut = false;
      const body = new ReadableStream({
        pull(controller) {
          if (cut) {
            reader.cancel();
            controller.error(new TypeError("network error"));
            return undefined;
          }
          return reader.read().then(function (chunk) {
            if (chunk.done) return controller.close();
            seen += decoder.decode(chunk.value, { stream: true });
            cut = seen.includes('"assistant_message"');
            controller.enqueue(chunk.value);
            return undefined;
          });
        },
      });
      return new Response(body, { status: response.status, headers: response.headers });
    });
  };
})();
"""


def test_a_dropped_connection_keeps_the_stored_message_and_drops_the_cut_reply(
    page: Page, serve, watch, steps
):
    server = serve(CHATKIT_DEMO_WORD_DELAY=WORD_DELAY)
    create_verified_user(server, "dropped@example.com")
    log_in(page, server, "dropped@example.com")
    start_session(page)
    message_box(page).fill("Hello")
    send_button(page).click()
    expect(messages(page).nth(1)).to_contain_text("You said: Hello", timeout=30_000)

    def resume() -> None:
        page.reload()
        page.locator(".session-card").get_by_role("button", name="Resume session").click()
        expect(messages(page).first).to_be_visible()

    resume()  # the earlier messages are the server's now, not this page's
    page.evaluate(CUT_THE_NEXT_REPLY)

    with steps("the connection drops while the reply streams"):
        message_box(page).fill("Still stored?")
        send_button(page).click()
        expect(toasts(page).last).to_have_text(
            "Could not reach codexweb. Check your connection and try again.", timeout=30_000
        )
        # The server had stored the message: it stays in the log, not back in the textbox
        # (sending it again would store it twice); the half reply is gone.
        expect(messages(page)).to_have_count(3)
        expect_message(messages(page).last, "You", "Still stored?")
        expect(message_box(page)).to_have_value("")
        expect(send_button(page)).to_be_enabled()

    with steps("reload and resume: the message is there, once"):
        resume()
        expect(messages(page)).to_have_count(3)
        expect_message(messages(page).last, "You", "Still stored?")


def delete_thread_through_the_api(server, address: str, thread_id: str) -> None:
    """What another client of the same account does: its own login, token and request."""
    login = httpx.post(
        server.url + "/api/auth/login", json={"email": address, "password": PASSWORD}
    )
    owner = {"Authorization": f"Bearer {login.json()['access_token']}"}
    current = httpx.get(server.url + "/api/codex/sessions/current", headers=owner).json()
    token = httpx.get(
        server.url + "/api/codex/chatkit/token",
        params={"session_id": current["session_id"]},
        headers=owner,
    ).json()["token"]
    deleted = httpx.post(
        server.url + "/chatkit",
        json={"type": "threads.delete", "params": {"thread_id": thread_id}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert deleted.status_code == 200, deleted.text


def test_a_thread_deleted_elsewhere_keeps_the_session_and_the_typed_message(
    page: Page, serve, watch, steps
):
    server = serve(CHATKIT_DEMO_WORD_DELAY=0)
    address = "deleted-elsewhere@example.com"
    create_verified_user(server, address)
    log_in(page, server, address)
    start_session(page)
    message_box(page).fill("First")
    send_button(page).click()
    expect(messages(page)).to_have_count(2, timeout=30_000)
    page.reload()  # the messages shown are the server's
    page.locator(".session-card").get_by_role("button", name="Resume session").click()
    expect(messages(page)).to_have_count(2)
    thread_id = page.locator("[data-thread-id]").get_attribute("data-thread-id")
    delete_thread_through_the_api(server, address, thread_id)

    watch.expect(r"404")  # the browser logs the refused request
    with steps("the next message meets the deleted thread: the session stays"):
        message_box(page).fill("Second")
        send_button(page).click()
        expect(toasts(page).last).to_have_text(
            "This conversation was deleted elsewhere. Send your message again to start a new one."
        )
        expect(message_box(page)).to_have_value("Second")
        expect(messages(page)).to_have_count(0)
        expect(page.locator("[data-token-state]")).to_have_text("Connected.")
        expect(page.get_by_text("Your Codex session has ended")).to_have_count(0)

    with steps("sending again starts a new thread"):
        send_button(page).click()
        expect(messages(page)).to_have_count(2, timeout=30_000)
        expect(messages(page).last).to_contain_text("You said: Second")
