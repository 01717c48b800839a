"""The account pages: real forms with real CSRF tokens, inline errors, safe redirects."""

from __future__ import annotations

import re
import time

import itsdangerous
import pytest

from codexweb.auth.tokens import issue_reset_token, issue_verification_token
from codexweb.auth.views import safe_next
from tests.auth_support import (
    STRONG_PASSWORD,
    form_csrf_token,
    link_token,
    meta_csrf_token,
    refresh_cookie,
    refresh_rows,
    snapshot,
    submit_form,
    user_row,
)
from tests.conftest import TEST_PASSWORD


def flashes(client) -> list[tuple[str, str]]:
    with client.session_transaction() as session:
        return list(session.get("_flashes", []))


def logged_in_user_id(client) -> str | None:
    with client.session_transaction() as session:
        return session.get("_user_id")


def page_login(client, email="owner@example.com", password=TEST_PASSWORD, url="/login"):
    return submit_form(client, url, {"email": email, "password": password}, page="/login")


def inline_errors(html: str, field: str) -> list[str]:
    block = re.search(rf'<ul class="field-errors" id="{field}-errors">(.*?)</ul>', html, re.S)
    return re.findall(r"<li>(.*?)</li>", block.group(1)) if block else []


# safe_next --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["/codex/sessions", "/codex/chatkit?placement=dashboard", "/verify-email#top", "/"],
)
def test_safe_next_keeps_local_paths(target):
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "//evil.com",
        "//evil.com/codex",
        "https://evil.com",
        "http://evil.com/login",
        "/\\evil.com",
        "\\\\evil.com",
        "/\t/evil.com",
        "/\n/evil.com",
        "javascript:alert(1)",
        "evil.com",
        "///evil.com",
        "https:/evil.com",
    ],
)
def test_safe_next_refuses_everything_else(target):
    assert safe_next(target) == "/codex/chatkit"


# register ---------------------------------------------------------------------------------


def test_register_page_has_labelled_fields_and_the_button(client):
    html = client.get("/register").get_data(as_text=True)
    assert re.search(r'<label for="email">Email</label>', html)
    assert re.search(r'<label for="password">Password</label>', html)
    assert ">Create account</button>" in html
    assert form_csrf_token(html)


def test_register_page_creates_the_account_logs_in_and_shows_the_pending_page(client, app, outbox):
    response = submit_form(
        client, "/register", {"email": " Page@Example.com ", "password": STRONG_PASSWORD}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/verify-email"
    user = user_row(app, "page@example.com")
    assert user is not None and not user.email_verified
    assert logged_in_user_id(client) == user.id
    assert refresh_cookie(client)  # the browser's scripts can refresh tokens
    assert ("success", "Account created. We sent a verification link to page@example.com.") in (
        flashes(client)
    )
    [message] = outbox
    assert message.to == ["page@example.com"]
    pending = client.get("/verify-email").get_data(as_text=True)
    assert "Verify your email" in pending
    assert "page@example.com" in pending
    assert "Resend verification email" in pending


@pytest.mark.parametrize(
    ("data", "field", "message", "status"),
    [
        ({"email": "someone@example.com", "password": "short"}, "password", "Use 12 to 256", 422),
        ({"email": "not an email", "password": STRONG_PASSWORD}, "email", "valid email", 422),
        ({"email": "", "password": STRONG_PASSWORD}, "email", "Enter your email", 422),
        (
            {"email": "owner@example.com", "password": STRONG_PASSWORD},
            "email",
            "already exists",
            409,
        ),
    ],
)
def test_register_page_shows_errors_next_to_the_field(
    client, app, user, data, field, message, status
):
    """Refused input answers 422 (it costs no attempt against the register limit); a taken
    address is a 409, like the API's, and counts."""
    before = snapshot(app)
    response = submit_form(client, "/register", data)
    assert response.status_code == status
    html = response.get_data(as_text=True)
    [error] = inline_errors(html, field)
    assert message in error
    assert f'aria-describedby="{field}-errors"' in html
    assert snapshot(app) == before
    assert logged_in_user_id(client) is None


# login ------------------------------------------------------------------------------------


def test_login_page_has_labelled_fields_and_the_button(client):
    html = client.get("/login").get_data(as_text=True)
    assert '<label for="email">Email</label>' in html
    assert '<label for="password">Password</label>' in html
    assert ">Log in</button>" in html


def test_login_page_logs_in_sets_the_refresh_cookie_and_goes_to_codex(client, app, user):
    response = page_login(client, email=" OWNER@example.com ")
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/chatkit"
    assert logged_in_user_id(client) == user.id
    assert refresh_cookie(client)
    # The login session authenticates API calls, and the refresh cookie yields Bearer tokens.
    assert client.get("/api/auth/me").get_json()["user"]["id"] == user.id
    assert client.post("/api/auth/refresh").status_code == 200


def test_login_page_follows_a_local_next(client, user):
    response = page_login(client, url="/login?next=/codex/sessions")
    assert response.headers["Location"] == "/codex/sessions"


@pytest.mark.parametrize("target", ["//evil.com", "https://evil.com", "/\\evil.com"])
def test_login_page_ignores_a_foreign_next(client, user, target):
    form = client.get("/login", query_string={"next": target}).get_data(as_text=True)
    assert "evil.com" not in form
    response = client.post(
        "/login",
        query_string={"next": target},
        data={
            "email": "owner@example.com",
            "password": TEST_PASSWORD,
            "csrf_token": form_csrf_token(form),
        },
    )
    assert response.headers["Location"] == "/codex/chatkit"


def test_login_page_keeps_next_in_the_form_action(client):
    html = client.get("/login?next=/codex/sessions").get_data(as_text=True)
    assert 'action="/login?next=/codex/sessions"' in html


def test_login_page_with_wrong_credentials_says_so_and_logs_nobody_in(client, app, user, events):
    before = snapshot(app)
    wrong = page_login(client, password="not the password at all")
    unknown = page_login(client, email="nobody@example.com")
    for response in (wrong, unknown):
        assert response.status_code == 200
        assert "The email or password is wrong." in response.get_data(as_text=True)
    assert logged_in_user_id(client) is None
    assert snapshot(app) == before
    assert [event["reason"] for event in events.named("auth.login.failed")] == [
        "wrong_password",
        "unknown_email",
    ]


def test_login_page_with_empty_fields_shows_inline_errors(client):
    response = submit_form(client, "/login", {"email": "", "password": ""})
    html = response.get_data(as_text=True)
    assert inline_errors(html, "email") == ["Enter your email address."]
    assert inline_errors(html, "password") == ["Enter your password."]


def test_a_logged_in_user_visiting_login_goes_on(client, user):
    page_login(client)
    assert client.get("/login?next=/codex/sessions").headers["Location"] == "/codex/sessions"


# CSRF --------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/login", "/register", "/forgot-password", "/logout"])
def test_form_posts_without_the_csrf_token_are_refused(client, app, user, url):
    before = snapshot(app)
    client.get("/login")  # the browser holds a session with a CSRF secret
    response = client.post(url, data={"email": "owner@example.com", "password": TEST_PASSWORD})
    assert response.status_code == 403
    assert "CSRF" in response.get_data(as_text=True)
    assert snapshot(app) == before


def test_a_csrf_token_from_another_session_is_refused(app, user):
    attacker, victim = app.test_client(), app.test_client()
    token = form_csrf_token(attacker.get("/login").get_data(as_text=True))
    victim.get("/login")
    response = victim.post(
        "/login",
        data={"email": "owner@example.com", "password": TEST_PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 403
    assert logged_in_user_id(victim) is None


def test_cookie_authenticated_api_posts_need_the_csrf_header(client, app, user):
    page_login(client)
    html = client.get("/verify-email").get_data(as_text=True)
    refused = client.post("/api/auth/logout")
    assert refused.status_code == 403
    assert refused.get_json()["code"] == "csrf_failed"
    assert logged_in_user_id(client) == user.id
    accepted = client.post("/api/auth/logout", headers={"X-CSRFToken": meta_csrf_token(html)})
    assert accepted.status_code == 204
    assert logged_in_user_id(client) is None


def test_bearer_api_posts_need_no_csrf_token_even_with_cookies(client, app, user, auth_headers):
    page_login(client)  # the browser has session and refresh cookies
    response = client.post("/api/auth/logout", headers=auth_headers(user))
    assert response.status_code == 204


# logout ------------------------------------------------------------------------------------


def test_logout_get_shows_a_confirm_form_and_post_logs_out(client, app, user):
    page_login(client)
    html = client.get("/logout").get_data(as_text=True)
    assert "owner@example.com" in html
    assert ">Log out</button>" in html
    response = client.post("/logout", data={"csrf_token": form_csrf_token(html)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert logged_in_user_id(client) is None
    assert refresh_cookie(client) is None
    assert all(row.revoked_at is not None for row in refresh_rows(app, user.id))
    assert client.get("/api/auth/me").status_code == 401
    assert ("info", "You have been logged out.") in flashes(client)


def test_logout_get_when_logged_out_goes_to_login(client):
    assert client.get("/logout").headers["Location"] == "/login"


# verification ------------------------------------------------------------------------------


def test_verification_link_verifies_and_redirects_to_codex(client, app, outbox):
    submit_form(client, "/register", {"email": "link@example.com", "password": STRONG_PASSWORD})
    response = client.get(f"/verify-email/{link_token(outbox[0])}")
    assert response.status_code == 302
    assert response.headers["Location"] == "/codex/chatkit"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert ("success", "Your email address is verified.") in flashes(client)
    assert user_row(app, "link@example.com").email_verified
    assert logged_in_user_id(client) is not None  # verifying logs nobody out
    # Following the link twice is harmless.
    assert client.get(f"/verify-email/{link_token(outbox[0])}").status_code == 302


def test_an_expired_link_says_so_with_a_resend_button_when_logged_in(
    client, app, make_user, monkeypatch
):
    pending = make_user("late@example.com", verified=False)
    page_login(client, email="late@example.com")
    with monkeypatch.context() as patch:
        patch.setattr(
            itsdangerous.timed.TimestampSigner,
            "get_timestamp",
            lambda self: int(time.time()) - 172801,
        )
        with app.app_context():
            token = issue_verification_token(pending.id, pending.email)
    response = client.get(f"/verify-email/{token}")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "This verification link has expired" in html
    assert "Resend verification email" in html
    assert not user_row(app, "late@example.com").email_verified


def test_a_bad_link_says_so_with_a_login_link_when_logged_out(client, app, unverified_user):
    with app.app_context():
        reset_token = issue_reset_token(unverified_user.id, "whatever")
    for token in ("garbage", reset_token):
        response = client.get(f"/verify-email/{token}")
        assert response.status_code == 400
        html = response.get_data(as_text=True)
        assert "This verification link is not valid" in html
        assert 'href="/login?next=/verify-email"' in html
        assert "Resend verification email" not in html
    assert not user_row(app, "pending@example.com").email_verified


def test_resend_button_sends_a_new_email(client, unverified_user, outbox):
    page_login(client, email="pending@example.com")
    html = client.get("/verify-email").get_data(as_text=True)
    response = client.post("/verify-email/resend", data={"csrf_token": form_csrf_token(html)})
    assert response.headers["Location"] == "/verify-email"
    [message] = outbox
    assert message.to == ["pending@example.com"]
    assert ("success", "A new verification email is on its way to pending@example.com.") in (
        flashes(client)
    )


def test_resend_over_htmx_answers_with_a_fragment_and_a_toast(client, unverified_user, outbox):
    page_login(client, email="pending@example.com")
    html = client.get("/verify-email").get_data(as_text=True)
    response = client.post(
        "/verify-email/resend",
        headers={"HX-Request": "true", "X-CSRFToken": meta_csrf_token(html)},
    )
    assert response.status_code == 200
    assert "A new verification email is on its way" in response.get_data(as_text=True)
    assert "codexweb:toast" in response.headers["HX-Trigger"]
    assert len(outbox) == 1


def test_pending_page_needs_a_login(client):
    response = client.get("/verify-email")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/verify-email"


def test_pending_page_of_a_verified_user_points_to_codex(client, user):
    page_login(client)
    html = client.get("/verify-email").get_data(as_text=True)
    assert "Your email is verified" in html
    assert "Resend" not in html


# password reset ----------------------------------------------------------------------------


def test_forgot_and_reset_password_through_the_pages(client, app, user, outbox):
    response = submit_form(client, "/forgot-password", {"email": "Owner@Example.com"})
    assert response.headers["Location"] == "/login"
    assert any("we have emailed it a link" in message for _, message in flashes(client))
    reset_url = f"/reset-password/{link_token(outbox[0], 'reset-password')}"

    form = client.get(reset_url)
    assert form.headers["Referrer-Policy"] == "no-referrer"
    assert '<label for="password">New password</label>' in form.get_data(as_text=True)
    short = submit_form(client, reset_url, {"password": "short"})
    assert inline_errors(short.get_data(as_text=True), "password")

    done = submit_form(client, reset_url, {"password": "my new long passphrase"})
    assert done.headers["Location"] == "/login"
    assert page_login(client, password="my new long passphrase").status_code == 302
    # The link worked once.
    again = client.get(reset_url)
    assert again.status_code == 400
    assert "This reset link is not valid" in again.get_data(as_text=True)


def test_forgot_password_page_says_the_same_for_unknown_addresses(client, outbox):
    response = submit_form(client, "/forgot-password", {"email": "nobody@example.com"})
    assert response.headers["Location"] == "/login"
    assert any("we have emailed it a link" in message for _, message in flashes(client))
    assert outbox == []


def test_a_reset_logs_the_browser_out(client, app, user, outbox):
    page_login(client)
    submit_form(client, "/forgot-password", {"email": "owner@example.com"})
    reset_url = f"/reset-password/{link_token(outbox[0], 'reset-password')}"
    submit_form(client, reset_url, {"password": "my new long passphrase"})
    assert logged_in_user_id(client) is None
    assert all(row.revoked_at is not None for row in refresh_rows(app, user.id))


def test_a_reset_elsewhere_ends_every_browser_session(app, user, outbox):
    """The login session is bound to the password: another device's reset logs this one out."""
    laptop, phone = app.test_client(), app.test_client()
    page_login(laptop)
    page_login(phone)
    app.test_client().post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    reset = {"token": link_token(outbox[0], "reset-password"), "password": "a brand new passphrase"}
    assert app.test_client().post("/api/auth/password/reset", json=reset).status_code == 200
    assert laptop.get("/api/auth/me").status_code == 401
    assert laptop.get("/verify-email").headers["Location"] == "/login?next=/verify-email"
    assert phone.get("/api/auth/me").status_code == 401


def test_a_session_cookie_without_a_live_login_logs_nobody_in(client, user):
    """A cookie from before logins existed (or forged without one) names no login to end."""
    with client.session_transaction() as session:
        session["_user_id"] = user.id
        session["_fresh"] = True
    assert client.get("/api/auth/me").status_code == 401
    with client.session_transaction() as session:
        session["_login_id"] = "lgn_never_issued"
    assert client.get("/api/auth/me").status_code == 401
