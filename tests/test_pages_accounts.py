"""Small things on the account pages users noticed: where a logged-in visitor goes, what the
verify page says to someone who was never sent a link, the Show password toggle, one inline
error per field, and the verify banner at its rate limit."""

from __future__ import annotations

import re

import pytest

from tests.auth_support import STRONG_PASSWORD, submit_form
from tests.pages_support import Browser, toast, user_in

NEVER_SENT = "No verification link has been sent to <strong>pending@example.com</strong> yet."


@pytest.fixture
def pending_browser(client, unverified_user) -> Browser:
    """An unverified user made like `users create` makes one: no link was ever mailed."""
    return Browser(client, unverified_user)


# A logged-in visitor goes on ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/register", "/login"])
def test_register_and_login_while_logged_in_go_to_chatkit(client, user, path):
    Browser(client, user)
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/chatkit"


# Never sent a link ----------------------------------------------------------------------


def test_the_verify_page_tells_a_user_never_sent_a_link_to_ask_for_one(pending_browser):
    page = pending_browser.get("/verify-email").get_data(as_text=True)
    assert NEVER_SENT in page
    assert "We sent" not in page
    assert ">Resend verification email</button>" in page


def test_the_banner_tells_a_user_never_sent_a_link_to_ask_for_one(pending_browser):
    page = pending_browser.get("/codex/chatkit").get_data(as_text=True)
    assert NEVER_SENT in page
    assert "We sent" not in page


def test_once_a_link_went_out_the_pages_say_so(pending_browser, outbox):
    pending_browser.post("/verify-email/resend")
    assert len(outbox) == 1
    page = pending_browser.get("/verify-email").get_data(as_text=True)
    assert "We sent a verification link to <strong>pending@example.com</strong>" in page
    assert "No verification link" not in page
    banner = pending_browser.get("/codex/chatkit").get_data(as_text=True)
    assert "We sent a link to <strong>pending@example.com</strong>" in banner


def test_a_registered_user_was_sent_a_link(client, outbox):
    submit_form(client, "/register", {"email": "new@example.com", "password": STRONG_PASSWORD})
    page = client.get("/verify-email").get_data(as_text=True)
    assert "We sent a verification link to <strong>new@example.com</strong>" in page


# Fields ---------------------------------------------------------------------------------


def test_password_fields_have_an_accessible_show_toggle(client):
    page = client.get("/register").get_data(as_text=True)
    [toggle] = re.findall(r"<button[^>]*data-password-toggle[^>]*>[^<]*</button>", page)
    assert 'type="button"' in toggle
    assert 'aria-pressed="false"' in toggle
    assert 'aria-controls="password"' in toggle
    assert " hidden>" in toggle  # revealed by static/forms.js, useless without it
    assert toggle.endswith(">Show password</button>")


def test_a_field_shows_its_hint_until_it_has_an_error(client):
    page = client.get("/register").get_data(as_text=True)
    assert '<p class="hint" id="password-hint">At least 12 characters.</p>' in page
    assert 'aria-describedby="password-hint"' in page


def test_a_refused_password_gets_one_message_under_it(client):
    response = submit_form(client, "/register", {"email": "a@example.com", "password": "short"})
    page = response.get_data(as_text=True)
    assert re.findall(r"<li>([^<]*)</li>", page) == ["Use 12 to 256 characters."]
    assert "At least 12 characters." not in page
    assert 'aria-describedby="password-errors"' in page


# The verify banner at its limit ---------------------------------------------------------


@pytest.fixture
def limited_pending(app_factory) -> Browser:
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_RESEND="1/hour")
    browser = Browser(app.test_client(), user_in(app, "slow@example.com", verified=False))
    assert browser.hx_post("/codex/verify-email/resend").status_code == 200
    return browser


def test_a_limited_resend_over_htmx_says_why_and_swaps_nothing(limited_pending):
    response = limited_pending.hx_post("/codex/verify-email/resend")
    assert response.status_code == 429
    assert "HX-Retarget" not in response.headers
    seconds = int(response.headers["Retry-After"])
    assert 3500 < seconds <= 3600
    message = toast(response)["message"]
    assert re.fullmatch(
        r"Too many verification emails asked for\. Try again in (59|60) minutes\.|"
        r"Too many verification emails asked for\. Try again in 1 hour\.",
        message,
    )
    assert response.get_data(as_text=True) == message


def test_a_limited_resend_without_javascript_keeps_the_banner_and_claims_nothing(
    limited_pending,
):
    response = limited_pending.post("/codex/verify-email/resend")
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    seconds = int(response.headers["Retry-After"])
    assert '<section id="verify-banner"' in page
    assert "Too many verification emails asked for. Try again in" in page
    assert "on its way" not in page
    assert f'data-retry-after="{seconds}"' in page


def test_a_limited_resend_on_the_verify_page_keeps_the_page(limited_pending):
    response = limited_pending.post("/verify-email/resend")
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    assert "<h1>Verify your email</h1>" in page
    assert '<p class="form-error" id="limit-message" role="alert">Too many verification' in page
