"""Accounts in the browser: limits that forgive typos and keep the form, buttons that wait
out a limit, and the Show password toggle."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from .conftest import PASSWORD

WAITING = re.compile(r"^Available again in \d+:\d\d(:\d\d)?$")


def test_ten_mistyped_registrations_then_a_correct_one_succeeds(page: Page, serve, watch, steps):
    server = serve(RATELIMIT_REGISTER="1/hour")
    watch.expect(r"status of 422")  # the browser logs each refused form
    page.goto(server.url + "/register")
    for attempt in range(10):
        with steps(f"mistyped registration {attempt + 1}"):
            page.get_by_label("Email").fill("typo@example.com")
            page.get_by_label("Password").fill("too short")
            page.get_by_role("button", name="Create account").click()
            errors = page.locator("#password-errors")
            expect(errors).to_have_text("Use 12 to 256 characters.")
            # One honest message under the field: the hint gives way to the error.
            expect(page.get_by_text("At least 12 characters.")).to_have_count(0)
    with steps("the correct one"):
        expect(page.get_by_label("Email")).to_have_value("typo@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page).to_have_url(server.url + "/verify-email")
        expect(page.get_by_role("heading", name="Verify your email")).to_be_visible()


def test_the_login_limit_keeps_the_typed_email(page: Page, serve, watch, steps):
    server = serve(RATELIMIT_LOGIN="2/minute")
    watch.expect(r"status of 429")
    page.goto(server.url + "/login")
    for attempt in range(2):
        with steps(f"wrong password {attempt + 1}"):
            page.get_by_label("Email").fill("someone@example.com")
            page.get_by_label("Password").fill("not the password at all")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("alert")).to_have_text("The email or password is wrong.")
    with steps("the third attempt is limited, the form stays"):
        page.get_by_label("Password").fill("still not the password")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#limit-message")).to_have_text(
            re.compile(r"^Too many sign-in attempts\. Try again in (\d+ seconds|1 minute)\.$")
        )
        expect(page.get_by_label("Email")).to_have_value("someone@example.com")
        expect(page.get_by_label("Password")).to_have_value("")
    with steps("the button waits out the limit, showing the time"):
        button = page.get_by_role("button", name="Log in")
        expect(button).to_be_disabled()
        expect(page.locator(".cooldown-note")).to_have_text(WAITING)
        first = page.locator(".cooldown-note").inner_text()
        expect(page.locator(".cooldown-note")).not_to_have_text(first)  # it counts down


def test_the_verify_banner_button_waits_and_claims_nothing(page: Page, serve, watch, steps):
    server = serve(RATELIMIT_RESEND="1/hour")
    watch.expect(r"status of 429|Response Status Error Code 429")
    address = "banner@example.com"
    with steps("sign up and see the banner"):
        page.goto(server.url + "/register")
        page.get_by_label("Email").fill(address)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        page.goto(server.url + "/codex/chatkit")
        banner = page.locator("#verify-banner")
        expect(banner).to_contain_text(f"We sent a link to {address}")
    with steps("one resend goes out"):
        page.get_by_role("button", name="Resend verification email").click()
        expect(banner).to_contain_text(f"A new link is on its way to {address}")
    with steps("the next is refused and the banner says so"):
        page.get_by_role("button", name="Resend verification email").click()
        refusal = re.compile(r"Too many verification emails asked for\. Try again in 1 hour\.")
        expect(page.locator("#toasts")).to_contain_text(refusal)
        expect(banner).not_to_contain_text("A new link is on its way")
        expect(banner.locator(".limit-message")).to_have_text(refusal)
        expect(page.get_by_role("button", name="Resend verification email")).to_be_disabled()
        expect(banner.locator(".cooldown-note")).to_have_text(WAITING)


def test_show_password_toggle_by_mouse_and_keyboard(page: Page, serve, watch, steps):
    server = serve()
    page.goto(server.url + "/login")
    password = page.get_by_label("Password")
    toggle = page.get_by_role("button", name="Show password")
    with steps("hidden by default"):
        password.fill("a secret passphrase")
        expect(password).to_have_attribute("type", "password")
        expect(toggle).to_have_attribute("aria-pressed", "false")
    with steps("shown with a click"):
        toggle.click()
        expect(password).to_have_attribute("type", "text")
        expect(toggle).to_have_attribute("aria-pressed", "true")
    with steps("hidden again from the keyboard"):
        password.focus()
        page.keyboard.press("Tab")
        expect(toggle).to_be_focused()
        page.keyboard.press("Space")
        expect(password).to_have_attribute("type", "password")
        expect(toggle).to_have_attribute("aria-pressed", "false")
        page.keyboard.press("Enter")
        expect(password).to_have_attribute("type", "text")
    with steps("sent hidden"):
        page.get_by_label("Email").fill("someone@example.com")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("The email or password is wrong.")
        expect(page.get_by_label("Password")).to_have_attribute("type", "password")
