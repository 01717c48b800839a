"""The /account page (CONTRACT.md §6): email and its verification, Change password, Change
email and its mailed link, the logins with Sign out each and Sign out other devices, linked
single sign-on accounts, Delete account behind the password; and Remember me on /login.
Each form answers HTMX with its section and a plain post with a redirect or the whole page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from codexweb.auth.devices import describe_device
from codexweb.auth.redaction import redact_token_paths
from codexweb.extensions import db
from codexweb.models import CodexSession, Identity, Login, User
from tests.auth_support import STRONG_PASSWORD, form_csrf_token, login_json, user_row
from tests.conftest import TEST_PASSWORD, access_token_for
from tests.pages_support import Browser, is_full_page, open_session, toast

CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
NEW_ADDRESS = "new.me@example.com"


@pytest.fixture
def browser(client, user) -> Browser:
    return Browser(client, user)


def text(response) -> str:
    return response.get_data(as_text=True)


def live_logins(app, user_id: str) -> list[Login]:
    with app.app_context():
        return list(
            db.session.execute(
                db.select(Login).where(Login.user_id == user_id, Login.ended_at.is_(None))
            ).scalars()
        )


def other_login(app, user_id: str, user_agent: str = CHROME_LINUX) -> str:
    """Another live login of the user (an API login from another device); its id."""
    with app.app_context():
        access_token_for(user_id)
        login = (
            db.session.execute(
                db.select(Login).where(Login.user_id == user_id).order_by(Login.created_at.desc())
            )
            .scalars()
            .first()
        )
        login.user_agent = user_agent
        db.session.commit()
        return login.id


def is_live(app, login_id: str) -> bool:
    with app.app_context():
        return db.session.get(Login, login_id).ended_at is None


# The page ---------------------------------------------------------------------------------


def test_the_account_page_needs_a_login(client):
    response = client.get("/account")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/account"


def test_the_page_shows_the_address_its_state_the_forms_and_this_device(app, browser, user):
    other_login(app, user.id)
    page = text(browser.get("/account"))
    assert '<a href="/account" aria-current="page">Account</a>' in page
    assert "<dt>Email</dt><dd>owner@example.com</dd>" in page
    assert '<span class="badge badge-active">Verified</span>' in page
    for button in ("Change password", "Change email", "Sign out other devices", "Delete account"):
        assert f">{button}</button>" in page
    assert '<label for="password-current_password">Current password</label>' in page
    assert '<label for="email-new_email">New email address</label>' in page
    assert '<label for="delete-password">Your password</label>' in page
    rows = re.findall(r'<tr id="login-(lgn_[\w-]+)" class="login-row">(.*?)</tr>', page, re.S)
    assert len(rows) == 2
    [this_row] = [row for _, row in rows if "This device" in row]
    assert "Unknown device" in this_row  # the test client sends no browser's user agent
    assert "Sign out" not in this_row  # the header's Log out is for this one
    [that_row] = [row for _, row in rows if "This device" not in row]
    assert '<span class="cell-strong">Chrome on Linux</span>' in that_row
    assert ">Sign out<span" in that_row
    assert '<td data-label="Kind">API</td>' in that_row


def test_an_unverified_address_says_so_and_links_to_verifying(client, unverified_user):
    page = text(Browser(client, unverified_user).get("/account"))
    assert '<span class="badge badge-expired">Not verified</span>' in page
    assert '<a href="/verify-email">Verify your email</a>' in page


def test_a_single_login_offers_no_sign_out_of_others(browser):
    assert "Sign out other devices" not in text(browser.get("/account"))


def test_the_logins_partial_is_a_partial(app, browser, user):
    response = browser.hx_get("/account/logins", current="/account")
    assert response.status_code == 200
    assert not is_full_page(text(response))
    assert text(response).lstrip().startswith('<section id="logins-section"')


# Change password --------------------------------------------------------------------------


def test_changing_the_password_signs_out_the_other_devices_and_keeps_this_one(
    app, browser, client, user
):
    other = other_login(app, user.id)
    response = browser.hx_post(
        "/account/password",
        {"password-current_password": TEST_PASSWORD, "password-new_password": STRONG_PASSWORD},
        current="/account",
    )
    assert response.status_code == 200
    body = text(response)
    assert body.lstrip().startswith('<section id="password-section"')
    message = "Your password has been changed. Your other devices are signed out."
    assert message in body
    assert toast(response) == {"message": message, "level": "success"}
    assert response.headers["HX-Trigger-After-Swap"] == "codexweb:logins-changed"
    assert not is_live(app, other)
    assert client.get("/account").status_code == 200
    assert login_json(app.test_client(), "owner@example.com", STRONG_PASSWORD).status_code == 200


def test_without_javascript_a_changed_password_redirects_with_the_message(app, browser, client):
    response = browser.post(
        "/account/password",
        {"password-current_password": TEST_PASSWORD, "password-new_password": STRONG_PASSWORD},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/account"
    page = text(client.get("/account"))
    assert "Your password has been changed. Your other devices are signed out." in page


def test_a_wrong_current_password_is_shown_under_its_field(app, browser, user):
    other = other_login(app, user.id)
    response = browser.hx_post(
        "/account/password",
        {"password-current_password": "not my password", "password-new_password": STRONG_PASSWORD},
        current="/account",
    )
    assert response.status_code == 422
    body = text(response)
    assert (
        '<ul class="field-errors" id="password-current_password-errors">\n'
        "    <li>The password is wrong.</li>"
    ) in body
    assert 'aria-invalid="true"' in body
    assert is_live(app, other)
    assert login_json(app.test_client(), "owner@example.com", TEST_PASSWORD).status_code == 200


def test_a_short_new_password_is_refused_without_a_javascript(browser):
    response = browser.post(
        "/account/password",
        {"password-current_password": TEST_PASSWORD, "password-new_password": "short"},
    )
    assert response.status_code == 422
    page = text(response)
    assert is_full_page(page)
    assert "<li>Use 12 to 256 characters.</li>" in page


# Change email -----------------------------------------------------------------------------


def change_email(browser, new_email: str = NEW_ADDRESS, password: str = TEST_PASSWORD):
    return browser.hx_post(
        "/account/email",
        {"email-new_email": new_email, "email-password": password},
        current="/account",
    )


def confirm_path(outbox, address: str = NEW_ADDRESS) -> str:
    [message] = [message for message in outbox if message.to == [address]]
    return re.search(r"https?://[^/\s]+(/confirm-email/\S+)", message.body).group(1)


def test_changing_the_email_sends_the_link_and_keeps_the_address_until_it_is_opened(
    app, browser, outbox
):
    response = change_email(browser, " New.Me@Example.com ")
    assert response.status_code == 200
    message = (
        "We sent a confirmation link to new.me@example.com. "
        "Your address stays owner@example.com until you open it."
    )
    assert message in text(response)
    assert sorted(m.to[0] for m in outbox) == [NEW_ADDRESS, "owner@example.com"]
    assert "<dd>owner@example.com</dd>" in text(browser.get("/account"))


def test_the_mailed_link_changes_the_address_and_comes_back_to_the_account(
    app, browser, client, outbox
):
    change_email(browser)
    path = confirm_path(outbox)
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == "/account"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    page = text(client.get("/account"))
    assert f"Your email address is now {NEW_ADDRESS}." in page
    assert f"<dd>{NEW_ADDRESS}</dd>" in page
    again = client.get(path)
    assert again.status_code == 400
    assert "This link is not valid: it may have been used already" in text(again)
    assert again.headers["Referrer-Policy"] == "no-referrer"


def test_the_links_token_is_masked_in_access_logs():
    line = '127.0.0.1 - - "GET /confirm-email/ab.c-d_e HTTP/1.1" 302 -'
    assert (
        redact_token_paths(line) == '127.0.0.1 - - "GET /confirm-email/[redacted] HTTP/1.1" 302 -'
    )


def test_the_link_works_in_a_browser_that_is_not_logged_in(app, browser, outbox):
    change_email(browser)
    stranger = app.test_client()
    response = stranger.get(confirm_path(outbox))
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert user_row(app, NEW_ADDRESS) is not None


@pytest.mark.parametrize(
    ("new_email", "password", "status", "field", "message"),
    [
        ("taken@example.com", TEST_PASSWORD, 409, "email-new_email", "An account with this email"),
        (NEW_ADDRESS, "not my password", 422, "email-password", "The password is wrong."),
        ("owner@example.com", TEST_PASSWORD, 422, "email-new_email", "already your email address"),
        ("nonsense", TEST_PASSWORD, 422, "email-new_email", "Enter a valid email address."),
    ],
)
def test_a_refused_email_change_says_why_under_the_field(
    browser, make_user, outbox, new_email, password, status, field, message
):
    make_user("taken@example.com")
    response = change_email(browser, new_email, password)
    assert response.status_code == status
    errors = re.search(rf'id="{field}-errors">(.*?)</ul>', text(response), re.S)
    assert errors and message in errors.group(1)
    assert len(outbox) == 0


# Logins -----------------------------------------------------------------------------------


def test_sign_out_ends_that_login_and_answers_with_the_list(app, browser, user):
    other = other_login(app, user.id)
    response = browser.hx_post(f"/account/logins/{other}/end", current="/account")
    assert response.status_code == 200
    assert toast(response)["message"] == "That device is signed out."
    assert not is_live(app, other)
    assert f"login-{other}" not in text(response)
    assert "This device" in text(response)


def test_sign_out_other_devices_keeps_only_this_one(app, browser, user, make_user):
    others = [other_login(app, user.id) for _ in range(2)]
    stranger = make_user("stranger@example.com")
    theirs = other_login(app, stranger.id)
    response = browser.post("/account/logins/end-others")
    assert response.status_code == 302
    assert not any(is_live(app, login) for login in others)
    assert is_live(app, theirs)
    assert len(live_logins(app, user.id)) == 1
    assert "2 other devices are signed out." in text(browser.get("/account"))


def test_someone_elses_login_cannot_be_signed_out(app, browser, make_user):
    stranger = make_user("stranger@example.com")
    theirs = other_login(app, stranger.id)
    response = browser.hx_post(f"/account/logins/{theirs}/end", current="/account")
    assert toast(response)["message"] == "That device was already signed out."
    assert is_live(app, theirs)


def test_signing_out_this_device_logs_this_browser_out(app, browser, client, user):
    [mine] = live_logins(app, user.id)
    response = browser.hx_post(f"/account/logins/{mine.id}/end", current="/account")
    assert response.headers["HX-Redirect"] == "/"
    assert client.get("/account").status_code == 302


# Linked identities ------------------------------------------------------------------------


def link(app, user_id: str, email: str = "me@idp.example") -> str:
    with app.app_context():
        identity = Identity(user_id=user_id, issuer="https://idp.example", subject="7", email=email)
        db.session.add(identity)
        db.session.commit()
        return identity.id


def test_linked_identities_are_listed_with_unlink(app, browser, user):
    identity = link(app, user.id)
    page = text(browser.get("/account"))
    assert '<h2 id="identities-title">Single sign-on</h2>' in page
    assert '<span class="cell-strong">https://idp.example</span> · me@idp.example' in page
    response = browser.hx_post(f"/account/identities/{identity}/unlink", current="/account")
    assert response.status_code == 200
    assert "The sign-in is unlinked." in text(response)
    assert "No single sign-on account is linked." in text(response)


def test_without_identities_or_sso_the_section_is_not_shown(browser):
    assert "identities-section" not in text(browser.get("/account"))


def test_the_last_way_in_cannot_be_unlinked(app, client):
    from codexweb.auth.accounts import create_user

    with app.app_context():
        sso_only = create_user("sso@example.com", None, verified=True)
        db.session.commit()
        db.session.refresh(sso_only)
        db.session.expunge(sso_only)
    identity = link(app, sso_only.id)
    browser = Browser(client, sso_only)
    page = text(browser.get("/account"))
    assert page.count("this account has no password") == 3
    assert "Change password</button>" not in page
    response = browser.hx_post(f"/account/identities/{identity}/unlink", current="/account")
    assert response.status_code == 409
    assert "Set a password first" in text(response)
    with app.app_context():
        assert db.session.get(Identity, identity) is not None


def test_with_password_login_off_an_sso_account_is_sent_to_the_administrator(app_factory):
    """No forgot-password link where that page answers 403: the operator's CLI (`users
    delete`, `users set-password`) is the way to change such an account."""
    from codexweb.auth.accounts import create_user

    app = app_factory(PASSWORD_LOGIN_ENABLED=False)
    with app.app_context():
        sso_only = create_user("sso@example.com", None, verified=True)
        db.session.commit()
        db.session.refresh(sso_only)
        db.session.expunge(sso_only)
    page = text(Browser(app.test_client(), sso_only).get("/account"))
    assert page.count("ask your administrator to make this change for you") == 3
    assert "Forgot your password?" not in page


# Delete the account -----------------------------------------------------------------------


def test_deleting_the_account_needs_the_password(app, browser, user):
    response = browser.hx_post(
        "/account/delete", {"delete-password": "not my password"}, current="/account"
    )
    assert response.status_code == 422
    assert "<li>The password is wrong.</li>" in text(response)
    assert '<details class="danger-zone" open>' in text(response)
    assert user_row(app, "owner@example.com") is not None


def test_deleting_the_account_removes_it_and_logs_this_browser_out(app, browser, client, user):
    session_id = open_session(app, user)
    response = browser.post("/account/delete", {"delete-password": TEST_PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert "refresh_token=;" in response.headers.get("Set-Cookie", "") or any(
        "refresh_token=;" in value for value in response.headers.getlist("Set-Cookie")
    )
    assert user_row(app, "owner@example.com") is None
    with app.app_context():
        assert db.session.get(CodexSession, session_id) is None
        assert db.session.execute(db.select(Login)).first() is None
    landing = text(client.get("/"))
    assert "Your account has been deleted." in landing
    assert client.get("/account").status_code == 302


def test_deleting_over_htmx_redirects_the_whole_page(app, browser):
    response = browser.hx_post(
        "/account/delete", {"delete-password": TEST_PASSWORD}, current="/account"
    )
    assert response.headers["HX-Redirect"] == "/"
    with app.app_context():
        assert db.session.execute(db.select(User)).first() is None


# Limits -----------------------------------------------------------------------------------


def test_a_limited_form_keeps_the_page_and_says_why(app_factory):
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_ACCOUNT_CHANGE="2/minute")
    from tests.pages_support import user_in

    owner = user_in(app, "owner@example.com")
    browser = Browser(app.test_client(), owner)
    wrong = {"delete-password": "not my password"}
    for _ in range(2):
        assert browser.post("/account/delete", wrong).status_code == 422
    response = browser.post("/account/delete", {"delete-password": TEST_PASSWORD})
    assert response.status_code == 429
    page = text(response)
    assert is_full_page(page)
    assert re.search(
        r'id="limit-message" role="alert">Too many attempts to change your account\. '
        r"Try again in (\d+ seconds|1 minute)\.</p>",
        page,
    )
    assert re.search(
        r'data-retry-after="\d+" aria-describedby="limit-message">Delete account', page
    )
    assert user_row(app, "owner@example.com") is not None
    htmx = browser.hx_post("/account/password", {}, current="/account")
    assert htmx.status_code == 429
    assert toast(htmx)["message"].startswith("Too many attempts to change your account.")


# Remember me ------------------------------------------------------------------------------


def log_in(client, **extra: str):
    page = text(client.get("/login"))
    assert '<input id="remember" name="remember" type="checkbox" value="y">' in page
    assert '<label for="remember">Remember me</label>' in page
    data = {"email": "owner@example.com", "password": TEST_PASSWORD, **extra}
    return client.post("/login", data={**data, "csrf_token": form_csrf_token(page)})


def test_remember_me_keeps_the_login_past_the_browser(app, user):
    client = app.test_client()
    assert log_in(client, remember="y").status_code == 302
    expires = client.get_cookie("session").expires
    days = app.config["REMEMBER_ME_DAYS"]
    assert expires - datetime.now(UTC) > timedelta(days=days - 1)
    assert client.get_cookie("refresh_token", path="/api/auth").expires is not None
    [login] = live_logins(app, user.id)
    assert login.remember is True


def test_without_remember_me_the_login_ends_with_the_browser(app, user):
    client = app.test_client()
    assert log_in(client).status_code == 302
    assert client.get_cookie("session").expires is None
    assert client.get_cookie("refresh_token", path="/api/auth").expires is None
    [login] = live_logins(app, user.id)
    assert login.remember is False


# Devices in words -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "words"),
    [
        (CHROME_LINUX, "Chrome on Linux"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like "
            "Gecko) Version/17.5 Safari/605.1.15",
            "Safari on macOS",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Safari on iPhone",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox on Linux",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        ("curl/8.5.0", "curl"),
        ("python-requests/2.32.3", "Python"),
        ("", "Unknown device"),
        (None, "Unknown device"),
        ("SomethingElse/1.0", "Unknown device"),
    ],
)
def test_a_device_is_named_in_words(user_agent, words):
    assert describe_device(user_agent) == words
