"""The account page in a real browser (issue 13): a password changed in one browser ends the
login of another, the email changed end to end by the mailed link, another device signed out,
the account deleted, Remember me across a browser restart (and not without it), and axe-core
on /account in its states."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from playwright.sync_api import Browser, BrowserContext, Page, expect

from ..servers import Server
from .conftest import PASSWORD, link_path, mails_to
from .test_browser_flow import create_verified_user

NEW_PASSWORD = "an entirely new passphrase"


def log_in(page: Page, server: Server, address: str, *, remember: bool = False) -> None:
    page.goto(server.url + "/login?next=/account")
    page.get_by_label("Email").fill(address)
    page.get_by_label("Password").fill(PASSWORD)
    if remember:
        page.get_by_label("Remember me").check()
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(server.url + "/account")
    # htmx wires the forms at DOMContentLoaded: a click before that is a plain form post.
    page.wait_for_load_state()


def section(page: Page, name: str):
    return page.get_by_role("region", name=name)


def wait_for_mail(server: Server, address: str, count: int = 1) -> list:
    """The mail worker thread sends shortly after the request: wait for it (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        found = mails_to(server, address)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def expect_logged_out(page: Page, server: Server) -> None:
    page.goto(server.url + "/account")
    expect(page).to_have_url(server.url + "/login?next=/account")


def test_changing_the_password_in_one_browser_ends_the_login_in_another(
    page: Page, browser: Browser, serve, watch, steps
):
    server = serve()
    address = "changer@example.com"
    create_verified_user(server, address)
    laptop = browser.new_context()
    try:
        other = laptop.new_page()
        with steps("logged in on two browsers"):
            log_in(other, server, address)
            log_in(page, server, address)
            expect(section(page, "Where you are logged in").locator(".login-row")).to_have_count(2)
        with steps("change the password here"):
            form = section(page, "Change password")
            form.get_by_label("Current password").fill(PASSWORD)
            form.get_by_label("New password").fill(NEW_PASSWORD)
            form.get_by_role("button", name="Change password").click()
            expect(form.get_by_role("status")).to_have_text(
                "✓ Your password has been changed. Your other devices are signed out."
            )
            # The list refreshes itself: only this device is left.
            logins = section(page, "Where you are logged in")
            expect(logins.locator(".login-row")).to_have_count(1)
            expect(logins.get_by_text("This device")).to_be_visible()
        with steps("the other browser is logged out"):
            expect_logged_out(other, server)
        with steps("this one is not"):
            page.reload()
            expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    finally:
        laptop.close()


def test_changing_the_email_end_to_end_by_the_mailed_link(page: Page, serve, watch, steps):
    server = serve()
    old, new = "before@example.com", "after@example.com"
    create_verified_user(server, old)
    log_in(page, server, old)
    with steps("ask for the new address"):
        form = section(page, "Email address")
        form.get_by_label("New email address").fill(new)
        form.get_by_label("Your password").fill(PASSWORD)
        form.get_by_role("button", name="Change email").click()
        expect(form.get_by_role("status")).to_have_text(
            f"✓ We sent a confirmation link to {new}. Your address stays {old} until you open it."
        )
        expect(form.locator("dd").first).to_have_text(old)
    with steps("the old address is told, the new one gets the link"):
        [notice] = wait_for_mail(server, old)
        assert notice["Subject"] == "Your codexweb email address is being changed"
        [confirmation] = wait_for_mail(server, new)
        path = link_path(confirmation, "/confirm-email/")
    with steps("open the link"):
        page.goto(server.url + path)
        expect(page).to_have_url(server.url + "/account")
        expect(page.get_by_text(f"Your email address is now {new}.")).to_be_visible()
        expect(section(page, "Email address").locator("dd").first).to_have_text(new)
        expect(page.get_by_role("navigation", name="Main")).to_contain_text(new)
    with steps("the link's token reaches no log"):
        token = path.rsplit("/", 1)[1]
        assert token not in server.log()
        assert "/confirm-email/[redacted]" in server.log()
    with steps("the link works once"):
        page.goto(server.url + path)
        expect(
            page.get_by_role("heading", name="Your email address was not changed")
        ).to_be_visible()
        watch.expect(r"status of 400")
    with steps("log in with the new address"):
        page.goto(server.url + "/account")
        page.get_by_role("button", name="Log out").click()
        log_in(page, server, new)


def test_signing_out_another_device(page: Page, browser: Browser, serve, watch, steps):
    server = serve()
    address = "two.devices@example.com"
    create_verified_user(server, address)
    phone = browser.new_context()
    try:
        other = phone.new_page()
        log_in(other, server, address)
        log_in(page, server, address)
        logins = section(page, "Where you are logged in")
        with steps("two devices, this one marked"):
            expect(logins.locator(".login-row")).to_have_count(2)
            expect(logins.get_by_text("This device")).to_have_count(1)
            expect(logins.locator(".cell-strong", has_text="Chrome on Linux")).to_have_count(2)
        with steps("sign out the other"):
            logins.get_by_role(
                "button", name=re.compile(r"^Sign out Chrome on Linux, logged in")
            ).click()
            expect(page.locator("#toasts")).to_contain_text("That device is signed out.")
            expect(logins.locator(".login-row")).to_have_count(1)
            expect(logins.get_by_role("button", name="Sign out other devices")).to_have_count(0)
        with steps("it is logged out"):
            expect_logged_out(other, server)
    finally:
        phone.close()


def test_deleting_the_account(page: Page, serve, watch, steps):
    server = serve()
    address = "leaving@example.com"
    create_verified_user(server, address)
    log_in(page, server, address)
    watch.expect(r"status of 422")
    danger = section(page, "Delete account")
    with steps("the form is behind a disclosure"):
        expect(danger.get_by_label("Your password")).to_be_hidden()
        danger.get_by_text("I want to delete my account").click()
    with steps("a wrong password deletes nothing"):
        danger.get_by_label("Your password").fill("not the password at all")
        danger.get_by_role("button", name="Delete account").click()
        expect(danger.locator(".field-errors")).to_have_text("The password is wrong.")
    with steps("the right one deletes the account"):
        danger.get_by_label("Your password").fill(PASSWORD)
        danger.get_by_role("button", name="Delete account").click()
        expect(page).to_have_url(server.url + "/")
        expect(page.get_by_text("Your account has been deleted.")).to_be_visible()
    with steps("the address may register again"):
        page.goto(server.url + "/login")
        page.get_by_label("Email").fill(address)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("The email or password is wrong.")
        page.goto(server.url + "/register")
        page.get_by_label("Email").fill(address)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page).to_have_url(server.url + "/verify-email")


def restarted(browser: Browser, context: BrowserContext) -> BrowserContext:
    """The same profile after closing the browser: cookies without an expiry are gone."""
    state = context.storage_state()
    context.close()
    state["cookies"] = [cookie for cookie in state["cookies"] if cookie["expires"] != -1]
    return browser.new_context(storage_state=state)


def test_remember_me_survives_a_browser_restart_and_not_without_it(browser: Browser, serve, steps):
    server = serve()
    create_verified_user(server, "remembered@example.com")
    create_verified_user(server, "forgotten@example.com")
    for address, remember in (("remembered@example.com", True), ("forgotten@example.com", False)):
        context = browser.new_context()
        log_in(context.new_page(), server, address, remember=remember)
        again = restarted(browser, context)
        try:
            page = again.new_page()
            page.goto(server.url + "/account")
            if remember:
                expect(page).to_have_url(server.url + "/account")
                expect(page.get_by_role("navigation", name="Main")).to_contain_text(address)
            else:
                expect(page).to_have_url(server.url + "/login?next=/account")
        finally:
            again.close()


def test_the_account_page_has_no_axe_violations(
    browser: Browser, serve, assert_no_axe_violations: Callable[..., None]
):
    server = serve()
    address = "accessible@example.com"
    create_verified_user(server, address)
    for scheme in ("light", "dark"):
        context = browser.new_context(bypass_csp=True, color_scheme=scheme)
        try:
            page = context.new_page()
            page.emulate_media(reduced_motion="reduce")
            log_in(page, server, address)
            assert_no_axe_violations(page, f"/account ({scheme})")
            form = section(page, "Change password")
            form.get_by_label("Current password").fill("wrong password here")
            form.get_by_label("New password").fill(NEW_PASSWORD)
            form.get_by_role("button", name="Change password").click()
            expect(form.locator(".field-errors")).to_have_text("The password is wrong.")
            section(page, "Delete account").get_by_text("I want to delete my account").click()
            assert_no_axe_violations(page, f"/account with an error, delete open ({scheme})")
            page.set_viewport_size({"width": 390, "height": 844})
            assert_no_axe_violations(page, f"/account at 390 px ({scheme})")
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"/account scrolls sideways at 390 px ({width} px)"
        finally:
            context.close()


def test_without_javascript_the_forms_still_work(browser: Browser, serve, steps):
    server = serve()
    address = "plain@example.com"
    create_verified_user(server, address)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        log_in(page, server, address)
        form = section(page, "Change password")
        form.get_by_label("Current password").fill(PASSWORD)
        form.get_by_label("New password").fill(NEW_PASSWORD)
        form.get_by_role("button", name="Change password").click()
        expect(page).to_have_url(server.url + "/account")
        expect(page.get_by_text(re.compile("Your password has been changed"))).to_be_visible()
    finally:
        context.close()
