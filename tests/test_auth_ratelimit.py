"""Rate limits of the accounts flow (CONTRACT.md §5): exact 429 problems and HTMX toasts."""

from __future__ import annotations

import json

import pytest

from codexweb.ratelimit import humanised_wait
from tests.auth_support import (
    STRONG_PASSWORD,
    form_csrf_token,
    snapshot,
    submit_form,
)
from tests.conftest import TEST_PASSWORD

WRONG = {"email": "owner@example.com", "password": "not the password at all"}


@pytest.fixture
def limited_app(app_factory):
    return app_factory(
        RATELIMIT_ENABLED=True,
        RATELIMIT_LOGIN="2/minute",
        RATELIMIT_REGISTER="1/hour",
        RATELIMIT_RESEND="1/hour",
        RATELIMIT_PASSWORD_RESET="1/hour",
    )


def assert_rate_limited(response, max_seconds: int, action: str) -> int:
    """An exact 429 problem whose detail names the action and the wait in words."""
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit()
    seconds = int(retry_after)
    assert 1 <= seconds <= max_seconds
    assert response.get_json() == {
        "type": "https://codexweb.dev/problems/rate_limited",
        "title": "Too many requests",
        "status": 429,
        "detail": f"{action} Try again in {humanised_wait(seconds)}.",
        "code": "rate_limited",
        "retry_after": seconds,
    }
    return seconds


SIGN_IN = "Too many sign-in attempts."
SIGN_UP = "Too many sign-up attempts."
RESEND = "Too many verification emails asked for."
RESET = "Too many password reset requests."


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (60, "1 minute"),
        (61, "2 minutes"),
        (240, "4 minutes"),
        (3534, "59 minutes"),
        (3600, "1 hour"),
        (3660, "1 hour 1 minute"),
        (5400, "1 hour 30 minutes"),
        (7200, "2 hours"),
    ],
)
def test_waits_read_as_a_person_says_them(seconds, words):
    assert humanised_wait(seconds) == words


def test_login_is_limited_with_an_exact_problem(limited_app, events):
    client = limited_app.test_client()
    for _ in range(2):
        assert client.post("/api/auth/login", json=WRONG).status_code == 401
    assert_rate_limited(client.post("/api/auth/login", json=WRONG), 60, SIGN_IN)
    [event] = events.named("http.rate_limited")
    assert event["path"] == "/api/auth/login"


def test_the_login_page_and_the_api_share_one_budget(limited_app):
    client = limited_app.test_client()
    assert client.post("/api/auth/login", json=WRONG).status_code == 401
    html = client.get("/login").get_data(as_text=True)
    page = client.post("/login", data={**WRONG, "csrf_token": form_csrf_token(html)})
    assert page.status_code == 200
    csrf = {"X-CSRFToken": form_csrf_token(html)}  # the browser now holds a session cookie
    assert_rate_limited(client.post("/api/auth/login", json=WRONG, headers=csrf), 60, SIGN_IN)


def test_an_htmx_login_gets_the_toast(limited_app):
    client = limited_app.test_client()
    html = client.get("/login").get_data(as_text=True)
    data = {**WRONG, "csrf_token": form_csrf_token(html)}
    for _ in range(2):
        client.post("/login", data=data)
    response = client.post("/login", data=data, headers={"HX-Request": "true"})
    assert response.status_code == 429
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= 60
    assert json.loads(response.headers["HX-Trigger"]) == {
        "codexweb:toast": {
            "message": f"Too many sign-in attempts. Try again in {humanised_wait(seconds)}.",
            "level": "error",
        }
    }


def test_a_limited_login_page_keeps_the_form_and_the_typed_email(limited_app):
    client = limited_app.test_client()
    html = client.get("/login?next=/codex/sessions").get_data(as_text=True)
    data = {**WRONG, "csrf_token": form_csrf_token(html)}
    for _ in range(2):
        client.post("/login?next=/codex/sessions", data=data)
    response = client.post("/login?next=/codex/sessions", data=data)
    assert response.status_code == 429
    assert response.mimetype == "text/html"
    seconds = int(response.headers["Retry-After"])
    page = response.get_data(as_text=True)
    message = f"Too many sign-in attempts. Try again in {humanised_wait(seconds)}."
    assert f'<p class="form-error" id="limit-message" role="alert">{message}</p>' in page
    assert 'value="owner@example.com"' in page
    assert WRONG["password"] not in page
    assert 'action="/login?next=/codex/sessions"' in page
    assert f'data-retry-after="{seconds}"' in page
    assert ">Log in</button>" in page
    assert "Codex is busy" not in page


def test_successful_responses_carry_no_retry_after(limited_app):
    response = limited_app.test_client().post("/api/auth/login", json=WRONG)
    assert response.status_code == 401
    assert "Retry-After" not in response.headers


def test_viewing_the_login_page_costs_nothing(limited_app):
    client = limited_app.test_client()
    for _ in range(5):
        assert client.get("/login").status_code == 200


def test_register_is_limited_and_the_limited_request_creates_nothing(limited_app):
    client = limited_app.test_client()
    body = {"email": "first@example.com", "password": STRONG_PASSWORD}
    assert client.post("/api/auth/register", json=body).status_code == 201
    before = snapshot(limited_app)
    second = client.post(
        "/api/auth/register", json={"email": "second@example.com", "password": STRONG_PASSWORD}
    )
    assert_rate_limited(second, 3600, SIGN_UP)
    assert snapshot(limited_app) == before


def test_resend_is_limited(limited_app):
    client = limited_app.test_client()
    body = {"email": "someone@example.com"}
    assert client.post("/api/auth/verify-email/resend", json=body).status_code == 202
    assert_rate_limited(client.post("/api/auth/verify-email/resend", json=body), 3600, RESEND)


def test_password_forgot_and_reset_share_a_limit(limited_app):
    client = limited_app.test_client()
    forgot = client.post("/api/auth/password/forgot", json={"email": "someone@example.com"})
    assert forgot.status_code == 202
    reset = client.post(
        "/api/auth/password/reset", json={"token": "whatever", "password": STRONG_PASSWORD}
    )
    assert_rate_limited(reset, 3600, RESET)


def test_a_limited_reset_link_keeps_its_token_out_of_the_log(limited_app, events):
    # The refused request never used its token: logged, it would let a log reader reset
    # the password within the hour.
    client = limited_app.test_client()
    forgot = client.post("/api/auth/password/forgot", json={"email": "someone@example.com"})
    assert forgot.status_code == 202
    token = "secret-reset-token.abc"
    assert client.post(f"/reset-password/{token}", data={}).status_code == 429
    (refused,) = events.named("http.rate_limited")
    assert refused["path"] == "/reset-password/[redacted]"
    assert not [event for event in events if token in json.dumps(event)]


def test_limits_count_per_address(limited_app):
    first = limited_app.test_client()
    for _ in range(3):
        first.post("/api/auth/login", json=WRONG)
    other = limited_app.test_client()
    response = other.post(
        "/api/auth/login",
        json={"email": "someone-else@example.com", "password": TEST_PASSWORD},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert response.status_code == 401  # not 429: another address has its own budget


# Limits that forgive typos (CONTRACT.md §5) ------------------------------------------------


def test_ten_mistyped_registrations_then_a_correct_one_succeeds(limited_app):
    client = limited_app.test_client()
    for body in [{"email": "typo@example", "password": STRONG_PASSWORD}] * 5 + [
        {"email": "typo@example.com", "password": "short"}
    ] * 5:
        assert client.post("/api/auth/register", json=body).status_code == 422
    correct = {"email": "typo@example.com", "password": STRONG_PASSWORD}
    assert client.post("/api/auth/register", json=correct).status_code == 201
    again = {"email": "other@example.com", "password": STRONG_PASSWORD}
    assert_rate_limited(client.post("/api/auth/register", json=again), 3600, SIGN_UP)


def test_ten_mistyped_registrations_on_the_page_then_a_correct_one_succeeds(limited_app):
    client = limited_app.test_client()
    for _ in range(10):
        response = submit_form(
            client, "/register", {"email": "typo@example.com", "password": "short"}
        )
        assert response.status_code == 422
    response = submit_form(
        client, "/register", {"email": "typo@example.com", "password": STRONG_PASSWORD}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/verify-email"


def test_a_taken_address_counts_against_the_register_budget(limited_app, user):
    client = limited_app.test_client()
    taken = {"email": "owner@example.com", "password": STRONG_PASSWORD}
    assert client.post("/api/auth/register", json=taken).status_code == 409
    fresh = {"email": "fresh@example.com", "password": STRONG_PASSWORD}
    assert_rate_limited(client.post("/api/auth/register", json=fresh), 3600, SIGN_UP)


def test_a_limited_register_page_keeps_the_form(limited_app):
    client = limited_app.test_client()
    first = {"email": "first@example.com", "password": STRONG_PASSWORD}
    assert submit_form(client, "/register", first).status_code == 302
    client.post(
        "/logout",
        data={"csrf_token": form_csrf_token(client.get("/verify-email").get_data(as_text=True))},
    )
    response = submit_form(
        client, "/register", {"email": "second@example.com", "password": STRONG_PASSWORD}
    )
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    seconds = int(response.headers["Retry-After"])
    assert f"Too many sign-up attempts. Try again in {humanised_wait(seconds)}." in page
    assert 'value="second@example.com"' in page
    assert STRONG_PASSWORD not in page
    assert ">Create account</button>" in page


def test_mistyped_resend_addresses_cost_nothing(limited_app):
    client = limited_app.test_client()
    for _ in range(5):
        response = client.post("/api/auth/verify-email/resend", json={"email": "nope"})
        assert response.status_code == 422
    body = {"email": "someone@example.com"}
    assert client.post("/api/auth/verify-email/resend", json=body).status_code == 202
    assert_rate_limited(client.post("/api/auth/verify-email/resend", json=body), 3600, RESEND)


def test_mistyped_reset_passwords_cost_nothing(limited_app):
    client = limited_app.test_client()
    for _ in range(5):
        response = client.post(
            "/api/auth/password/reset", json={"token": "whatever", "password": "short"}
        )
        assert response.status_code == 422
    response = client.post("/api/auth/password/forgot", json={"email": "someone@example.com"})
    assert response.status_code == 202
    forgot = client.post("/api/auth/password/forgot", json={"email": "someone@example.com"})
    assert_rate_limited(forgot, 3600, RESET)


def test_a_limited_forgot_password_page_keeps_the_address(limited_app):
    client = limited_app.test_client()
    assert submit_form(client, "/forgot-password", {"email": "a@example.com"}).status_code == 302
    response = submit_form(client, "/forgot-password", {"email": "b@example.com"})
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    assert "Too many password reset requests. Try again in " in page
    assert 'value="b@example.com"' in page


def test_the_login_budget_does_not_forgive(limited_app):
    """A login refused as invalid input still counts: guessing is what this limit is for."""
    client = limited_app.test_client()
    for _ in range(2):
        assert client.post("/api/auth/login", json={"email": "", "password": ""}).status_code == 422
    assert_rate_limited(client.post("/api/auth/login", json=WRONG), 60, SIGN_IN)


# Keyed on the target account and the client address, never on the caller ----------------


def test_other_accounts_bearer_tokens_buy_no_extra_guesses_at_one_account(
    limited_app, make_user_on_limited
):
    """Issue 12, finding 5: each Bearer token of another account used to reset the budget."""
    make_user_on_limited("owner@example.com")
    attackers = [make_user_on_limited(f"attacker{i}@example.com") for i in range(4)]
    answers = [
        limited_app.test_client()
        .post("/api/auth/login", json=WRONG, headers={"Authorization": f"Bearer {token}"})
        .status_code
        for token in attackers
    ]
    assert answers == [401, 401, 429, 429]


def test_many_addresses_buy_no_extra_guesses_at_one_account(limited_app, make_user_on_limited):
    make_user_on_limited("owner@example.com")
    answers = [
        limited_app.test_client()
        .post("/api/auth/login", json=WRONG, environ_base={"REMOTE_ADDR": f"10.0.0.{i}"})
        .status_code
        for i in range(1, 5)
    ]
    assert answers == [401, 401, 429, 429]


def test_one_address_gets_no_extra_guesses_by_switching_accounts(limited_app):
    client = limited_app.test_client()
    answers = [
        client.post(
            "/api/auth/login", json={"email": f"someone{i}@example.com", "password": "guess"}
        ).status_code
        for i in range(3)
    ]
    assert answers == [401, 401, 429]


def test_the_targeted_account_still_logs_in_from_its_own_address_limit(limited_app):
    """An attack from elsewhere exhausts the account's budget; that is the price of
    not letting a crowd guess: the owner waits a minute like the attacker."""
    for i in range(2):
        limited_app.test_client().post(
            "/api/auth/login", json=WRONG, environ_base={"REMOTE_ADDR": f"10.0.1.{i}"}
        )
    owner = limited_app.test_client().post(
        "/api/auth/login", json={"email": "owner@example.com", "password": TEST_PASSWORD}
    )
    assert owner.status_code == 429


@pytest.fixture
def make_user_on_limited(limited_app):
    """Create a verified user on the limited app; returns an access token of theirs."""
    from tests.conftest import access_token_for

    def make(email: str) -> str:
        from codexweb.auth.accounts import create_user
        from codexweb.extensions import db

        with limited_app.app_context():
            user = create_user(email, TEST_PASSWORD, verified=True)
            db.session.commit()
            return access_token_for(user.id)

    return make
