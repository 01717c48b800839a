"""Tabs of one browser agree (CONTRACT.md §6): they share one ChatKit token per session, and
a session closed in one tab, from the sessions page or elsewhere, ends in every other tab
within 5 seconds, without waiting for the next token refresh."""

from __future__ import annotations

import re

from playwright.sync_api import BrowserContext, Page, expect

from .test_browser_flow import create_verified_user, log_in, start_session, toasts

TOKEN_PATH = "/api/codex/chatkit/token"
ENDED = "Your Codex session has ended. Start a new one to continue."


def count_token_requests(context: BrowserContext) -> list[str]:
    seen: list[str] = []
    context.on(
        "request", lambda request: seen.append(request.url) if TOKEN_PATH in request.url else None
    )
    return seen


def connected(page: Page) -> None:
    expect(page.locator("[data-token-state]")).to_have_text("Connected.")


def resume_in_new_tab(page: Page, server) -> Page:
    tab = page.context.new_page()
    tab.goto(server.url + "/codex/chatkit")
    tab.get_by_role("button", name="Resume session").click()
    connected(tab)
    return tab


def test_two_tabs_on_one_session_mint_one_token(page: Page, serve, watch, steps):
    server = serve()
    create_verified_user(server, "tabs@example.com")
    log_in(page, server, "tabs@example.com")
    minted = count_token_requests(page.context)

    with steps("the first tab starts the session and mints"):
        start_session(page)
        connected(page)

    with steps("the second tab resumes it and is handed the same token"):
        second = resume_in_new_tab(page, server)
        ids = [tab.locator("[data-chatkit-session]") for tab in (page, second)]
        assert ids[0].text_content() == ids[1].text_content()
        page.wait_for_timeout(2000)  # time for a stray second mint to show up
        assert len(minted) == 1, minted


def test_the_token_is_refreshed_once_for_all_tabs_and_survives_the_minting_tab(
    page: Page, serve, watch, steps
):
    server = serve(CHATKIT_TOKEN_TTL=10)
    create_verified_user(server, "refresh-tabs@example.com")
    log_in(page, server, "refresh-tabs@example.com")
    minted = count_token_requests(page.context)
    start_session(page)
    connected(page)
    second = resume_in_new_tab(page, server)
    area = second.locator("[data-chatkit-area]")

    with steps("the refresh at 80 % reaches both tabs from one mint"):
        expect(area).to_have_attribute("data-tokens-issued", "2", timeout=15_000)
        assert len(minted) == 2, minted

    with steps("the minting tab closes; the other carries on minting"):
        page.close()
        expect(area).to_have_attribute("data-tokens-issued", "3", timeout=15_000)
        connected(second)
        assert len(minted) == 3, minted


def test_a_close_in_one_tab_ends_the_session_in_the_other(page: Page, serve, watch, steps):
    server = serve()
    create_verified_user(server, "close-tabs@example.com")
    log_in(page, server, "close-tabs@example.com")
    start_session(page)
    connected(page)
    second = resume_in_new_tab(page, server)
    watch.expect(r"status of 404")  # /current: no active session left

    with steps("close in the first tab"):
        page.get_by_role("button", name="Close session").click()
        expect(page.get_by_role("button", name="Start session")).to_be_visible()

    with steps("the second tab offers a new session within 5 s"):
        expect(second.get_by_role("button", name="Start session")).to_be_visible(timeout=5_000)
        expect(toasts(second)).to_contain_text([ENDED])


def test_a_close_from_the_sessions_page_ends_the_session_in_the_chatkit_tab(
    page: Page, serve, watch, steps
):
    server = serve()
    create_verified_user(server, "list-tabs@example.com")
    log_in(page, server, "list-tabs@example.com")
    start_session(page)
    connected(page)
    watch.expect(r"status of 404")  # /current: no active session left

    with steps("close the session from the sessions page in another tab"):
        history = page.context.new_page()
        history.goto(server.url + "/codex/sessions")
        row = history.locator(".sessions-table tbody tr").first
        row.get_by_role("button", name="Close").click()
        expect(row).to_contain_text("Closed")

    with steps("the ChatKit tab learns it within 5 s"):
        expect(page.get_by_role("button", name="Start session")).to_be_visible(timeout=5_000)
        expect(toasts(page)).to_contain_text([ENDED])


def test_a_close_in_another_browser_is_noticed_within_5_seconds(
    page: Page, browser, serve, watch, steps
):
    server = serve()
    create_verified_user(server, "elsewhere@example.com")
    log_in(page, server, "elsewhere@example.com")
    start_session(page)
    connected(page)
    session_id = page.locator("[data-chatkit-area]").get_attribute("data-session-id")
    watch.expect(r"status of 404")  # /current: no active session left

    with steps("another browser (no shared channel) closes the session"):
        laptop = browser.new_context()
        try:
            other = laptop.new_page()
            log_in(other, server, "elsewhere@example.com")
            csrf = other.locator('meta[name="csrf-token"]').get_attribute("content")
            closed = other.request.post(
                server.url + f"/api/codex/sessions/{session_id}/close",
                headers={"X-CSRFToken": csrf},
            )
            assert closed.ok
        finally:
            laptop.close()

    with steps("this tab notices within 5 s"):
        expect(page.get_by_role("button", name="Start session")).to_be_visible(timeout=5_000)
        expect(toasts(page)).to_contain_text([ENDED])
        expect(page).to_have_url(re.compile(r"/codex/chatkit"))
