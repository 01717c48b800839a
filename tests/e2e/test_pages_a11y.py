"""Every page state against axe-core (WCAG 2.1 AA), and the pages this issue changed run
from the keyboard alone, at 390 px wide and without JavaScript (CONTRACT.md §6).

axe-core is injected as a script tag, which the pages' CSP would refuse: these browser
contexts bypass the CSP (test_pages_security.py and the other browser tests keep it)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import PASSWORD, link_path, mails_to, wait_for_mail
from .test_browser_flow import create_verified_user, log_in, start_session, toasts


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "bypass_csp": True}


def test_every_page_state_has_no_axe_violation(
    page: Page, serve, watch, steps, assert_no_axe_violations
):
    server = serve(RATELIMIT_SESSION_CREATE="4/hour")
    address = "axe@example.com"
    check = assert_no_axe_violations
    nav = page.get_by_role("navigation", name="Main")
    watch.expect(r"status of (400|404|409|422|429)|Error Code 429")  # states visited on purpose

    with steps("landing"):
        page.goto(server.url + "/")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        check(page, "landing")

    with steps("login, empty and with an error"):
        page.goto(server.url + "/login")
        check(page, "login")
        page.get_by_label("Email").fill("nobody@example.com")
        page.get_by_label("Password").fill("wrong password, long enough")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_be_visible()
        check(page, "login with an error")

    with steps("register with errors"):
        page.goto(server.url + "/register")
        check(page, "register")
        page.get_by_label("Email").fill("not an email")
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_text("Enter a valid email address.")).to_be_visible()
        check(page, "register with errors")

    with steps("forgot and reset password pages"):
        page.goto(server.url + "/forgot-password")
        check(page, "forgot password")
        page.goto(server.url + "/reset-password/not-a-token")
        check(page, "reset link failed")
        page.goto(server.url + "/verify-email/not-a-token")
        check(page, "verify link failed")

    with steps("error pages"):
        page.goto(server.url + "/no-such-page")
        check(page, "404 page")

    with steps("register, then the verify banner and its confirmation"):
        page.goto(server.url + "/register")
        page.get_by_label("Email").fill(address)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(nav).to_contain_text(address)
        nav.get_by_role("link", name="ChatKit").click()
        expect(page.get_by_role("heading", name="Verify your email")).to_be_visible()
        check(page, "verify banner")
        page.get_by_role("button", name="Resend verification email").click()
        expect(page.locator("#verify-banner")).to_contain_text("A new link is on its way")
        check(page, "verify banner, resent")

    with steps("the reset form from an emailed link"):
        page.goto(server.url + "/forgot-password")
        page.get_by_label("Email").fill(address)
        page.get_by_role("button").filter(has_text=re.compile("reset", re.I)).click()
        check(page, "forgot password, sent")
        wait_for_mail(page, server, address, 3)
        reset = [m for m in mails_to(server, address) if "reset" in str(m["Subject"]).lower()]
        page.goto(server.url + link_path(reset[-1], "/reset-password/"))
        check(page, "reset password form")

    with steps("verify, then the session panel"):
        verify = [m for m in mails_to(server, address) if "verif" in str(m["Subject"]).lower()]
        page.goto(server.url + link_path(verify[-1], "/verify-email/"))
        expect(page.get_by_role("button", name="Start session")).to_be_visible()
        check(page, "start form with the success flash")

    with steps("the ChatKit area, its details open, and the success toast"):
        start_session(page)
        expect(page.locator("[data-token-state]")).to_have_text("Connected.")
        page.get_by_text("Details").click()
        check(page, "ChatKit area")
        page.get_by_role("button", name="Close session").click()
        expect(toasts(page)).to_have_text(["Session closed."])
        check(page, "success toast")

    with steps("the resume card and the info toast"):
        other = page.context.new_page()
        other.goto(server.url + "/codex/chatkit")
        start_session(page)
        other.get_by_role("button", name="Start session").click()  # 409: offers to resume
        expect(toasts(other)).to_have_text([re.compile("already have an active session")])
        check(other, "resume card with the info toast")
        other.close()

    with steps("the sessions list, filtered, and a session's page"):
        nav.get_by_role("link", name="Sessions").click()
        expect(page.locator(".badge-active")).to_be_visible()
        check(page, "sessions list")
        page.get_by_label("Show").select_option("expired")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("heading", name="No expired sessions")).to_be_visible()
        check(page, "sessions list, filtered to nothing")
        page.goto(server.url + "/codex/sessions")
        page.locator(".sessions-table tbody tr").first.get_by_role("link").click()
        expect(page.get_by_role("heading", name="Transcript")).to_be_visible()
        check(page, "session page")
        page.goto(server.url + "/codex/sessions/cxs_nope")
        check(page, "unknown session")
        page.goto(server.url + "/codex/sessions?cursor=bogus")
        check(page, "bad cursor")

    with steps("the busy toast and the error toast"):
        page.goto(server.url + "/codex/sessions")
        page.locator(".sessions-table tbody tr").first.get_by_role("button", name="Close").click()
        nav.get_by_role("link", name="ChatKit").click()
        start_session(page)  # the fourth start of the hour (the 409 counted too)
        page.get_by_role("button", name="Close session").click()
        page.get_by_role("button", name="Start session").click()
        expect(toasts(page)).to_contain_text([re.compile(r"^Codex is busy")])
        check(page, "busy toast")
        # `Start session` now waits out its limit (disabled), so the error toast comes from
        # another htmx request: the sessions filter, sent while offline.
        expect(page.get_by_role("button", name="Start session")).to_be_disabled()
        nav.get_by_role("link", name="Sessions").click()
        expect(page.get_by_role("button", name="Filter")).to_be_visible()
        watch.expect(r"htmx:afterRequest|htmx:sendError|ERR_INTERNET_DISCONNECTED")
        page.context.set_offline(True)
        page.get_by_role("button", name="Filter").click()
        expect(toasts(page).last).to_have_text(re.compile("Could not reach codexweb"))
        check(page, "error toast")
        page.context.set_offline(False)


def no_sideways_scroll(page: Page) -> int:
    return page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )


def test_the_changed_pages_at_390_px(page: Page, serve, watch, steps, assert_no_axe_violations):
    server = serve()
    page.set_viewport_size({"width": 390, "height": 844})
    with steps("landing"):
        page.goto(server.url + "/")
        assert no_sideways_scroll(page) == 0
        assert_no_axe_violations(page, "landing at 390 px")
    create_verified_user(server, "narrow@example.com")
    log_in(page, server, "narrow@example.com")
    start_session(page)
    session_id = page.locator("[data-chatkit-area]").get_attribute("data-session-id")
    expect(page.locator("[data-token-state]")).to_have_text("Connected.")
    page.get_by_text("Details").click()
    for name, path in (
        ("ChatKit area", None),
        ("sessions", "/codex/sessions"),
        ("session page", f"/codex/sessions/{session_id}"),
    ):
        with steps(name):
            if path:
                page.goto(server.url + path)
            assert no_sideways_scroll(page) == 0, f"{name} scrolls sideways"
            assert_no_axe_violations(page, f"{name} at 390 px")
            # The dark scheme has its own colours: they must pass too.
            page.emulate_media(color_scheme="dark", reduced_motion="reduce")  # no fades
            assert_no_axe_violations(page, f"{name} at 390 px, dark")
            page.emulate_media(color_scheme="light")


def tab_to(page: Page, target, presses: int = 30) -> None:
    for _ in range(presses):
        if target.evaluate("element => document.activeElement === element"):
            return
        page.keyboard.press("Tab")
    expect(target).to_be_focused()


def test_the_changed_pages_from_the_keyboard(page: Page, serve, watch, steps):
    server = serve(RATELIMIT_SESSION_CREATE="100/minute")
    create_verified_user(server, "keyboard@example.com")
    main = page.locator("main")

    with steps("landing: Log in"):
        page.goto(server.url + "/")
        tab_to(page, main.get_by_role("link", name="Log in"))
        page.keyboard.press("Enter")
        expect(page).to_have_url(server.url + "/login")

    log_in(page, server, "keyboard@example.com")
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    for _ in range(21):  # two pages of history: 20 closed, then the newest, active
        created = page.request.post(
            server.url + "/api/codex/sessions",
            data={"placement": "dashboard", "agent_id": "agent_123"},
            headers={"X-CSRFToken": csrf},
        ).json()
        page.request.post(
            server.url + f"/api/codex/sessions/{created['session_id']}/close",
            headers={"X-CSRFToken": csrf},
        )
    page.goto(server.url + "/codex/chatkit")
    start_session(page)
    table = page.locator(".sessions-table")

    with steps("filter the history from the keyboard"):
        page.goto(server.url + "/codex/sessions")
        select = page.get_by_label("Show")
        tab_to(page, select)
        select.select_option("active")  # what arrow keys do on a focused <select>
        page.keyboard.press("Tab")
        expect(page.get_by_role("button", name="Filter")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page).to_have_url(server.url + "/codex/sessions?status=active")
        expect(table.locator("tbody tr")).to_have_count(1)
        expect(table).to_be_focused()  # the list, not the page body

    with steps("older sessions: focus on the list, scrolled to its top"):
        page.goto(server.url + "/codex/sessions?status=closed")
        older = page.get_by_role("link", name="Older sessions")
        tab_to(page, older, presses=80)
        assert page.evaluate("() => window.scrollY") > 0  # the link sits below 20 rows
        page.keyboard.press("Enter")
        expect(table.locator("tbody tr")).to_have_count(1)
        expect(table).to_be_focused()
        # The list's top is in view (the short page may not scroll all the way up to it).
        top = table.evaluate("element => element.getBoundingClientRect().top")
        assert 0 <= top < 400, f"the list starts {top}px from the top of the window"

    with steps("a row's link opens the session page; Resume goes back to ChatKit"):
        page.goto(server.url + "/codex/sessions?status=active")
        tab_to(page, table.get_by_role("link").first)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Transcript")).to_be_visible()
        tab_to(page, page.get_by_role("link", name="Resume session"))
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/codex/chatkit/sessions/cxs_"))
        expect(page.locator("[data-token-state]")).to_have_text("Connected.")

    with steps("the Details disclosure opens from the keyboard"):
        summary = page.get_by_text("Details")
        tab_to(page, summary)
        page.keyboard.press("Enter")
        expect(page.locator("[data-chatkit-session]")).to_be_visible()


def test_without_javascript_the_chatkit_area_says_so_and_links_the_transcript(
    browser, serve, tmp_path, assert_no_axe_violations
):
    server = serve()
    create_verified_user(server, "plain@example.com")
    context = browser.new_context(java_script_enabled=False, bypass_csp=True)
    page = context.new_page()
    try:
        log_in(page, server, "plain@example.com")
        page.get_by_role("button", name="Start session").click()
        note = page.locator("[data-needs-js]")
        expect(note.get_by_role("heading")).to_have_text("The live conversation needs JavaScript")
        expect(page.get_by_text("Connecting…")).to_be_hidden()
        expect(page.get_by_text("Fetching")).to_have_count(0)
        note.get_by_role("link", name="read this session's transcript").click()
        expect(page.get_by_role("heading", name="Transcript")).to_be_visible()
    finally:
        context.close()
