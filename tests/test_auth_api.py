"""The accounts JSON API, row by row of CONTRACT.md §3, with its bad inputs (§5)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import itsdangerous
import pytest

from codexweb.auth.tokens import (
    issue_reset_token,
    issue_verification_token,
)
from codexweb.extensions import db
from codexweb.models import User
from tests.auth_support import (
    STRONG_PASSWORD,
    link_token,
    login_json,
    refresh_cookie,
    refresh_rows,
    snapshot,
    user_row,
)
from tests.conftest import TEST_PASSWORD, access_token_for

PROBLEM = "application/problem+json"


NOW = datetime(2030, 1, 1, tzinfo=UTC)


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"].endswith("/" + code)
    assert body["title"] and body["detail"]
    return body


@contextmanager
def issued_in_the_past(monkeypatch, seconds: int):
    """Tokens signed inside this block carry a timestamp `seconds` ago."""
    with monkeypatch.context() as patch:
        patch.setattr(
            itsdangerous.timed.TimestampSigner,
            "get_timestamp",
            lambda self: int(time.time()) - seconds,
        )
        yield


def token_for(app, make, *args) -> str:
    with app.app_context():
        return make(*args)


# register ---------------------------------------------------------------------------------


def test_register_creates_an_unverified_user_and_mails_the_verification_link(client, app, outbox):
    response = client.post(
        "/api/auth/register",
        json={"email": "  New.Person@Example.COM ", "password": STRONG_PASSWORD},
    )
    assert response.status_code == 201
    user = response.get_json()["user"]
    assert set(user) == {"id", "email", "email_verified", "created_at"}
    assert user["email"] == "new.person@example.com"
    assert user["email_verified"] is False
    assert user["id"].startswith("usr_")
    datetime.strptime(user["created_at"], "%Y-%m-%dT%H:%M:%SZ")
    [message] = outbox
    assert message.to == ["new.person@example.com"]
    assert "http://localhost/verify-email/" in message.body
    stored = user_row(app, "new.person@example.com")
    assert stored.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert STRONG_PASSWORD not in stored.password_hash


@pytest.mark.parametrize(
    "variant", ["owner@example.com", " OWNER@Example.com\t", "Owner@EXAMPLE.com"]
)
def test_register_with_a_taken_email_in_any_case_is_409(client, app, user, variant):
    before = snapshot(app)
    response = client.post(
        "/api/auth/register", json={"email": variant, "password": STRONG_PASSWORD}
    )
    assert_problem(response, 409, "email_taken")
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com", "password": "x" * 11}, "password"),
        ({"email": "a@example.com", "password": "x" * 257}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"password": STRONG_PASSWORD}, "email"),
        ({"email": "not-an-email", "password": STRONG_PASSWORD}, "email"),
        ({"email": "two words@example.com", "password": STRONG_PASSWORD}, "email"),
        ({"email": "nul\u0000byte@example.com", "password": STRONG_PASSWORD}, "email"),
        ({"email": "bell\u0007@example.com", "password": STRONG_PASSWORD}, "email"),
        ({"email": "   ", "password": STRONG_PASSWORD}, "email"),
        ({"email": 42, "password": STRONG_PASSWORD}, "email"),
        ({"email": "a@example.com", "password": 123456789012345}, "password"),
        ({"email": ["a@example.com"], "password": STRONG_PASSWORD}, "email"),
        ({"email": None, "password": STRONG_PASSWORD}, "email"),
    ],
)
def test_register_rejects_bad_fields_with_422_and_changes_nothing(client, app, body, field):
    before = snapshot(app)
    response = client.post("/api/auth/register", json=body)
    problem = assert_problem(response, 422, "invalid_request")
    assert field in {error["field"] for error in problem["errors"]}
    assert all(set(error) == {"field", "message"} for error in problem["errors"])
    assert snapshot(app) == before


def test_register_accepts_passwords_of_exactly_12_and_256_characters(client):
    for length, email in ((12, "short@example.com"), (256, "long@example.com")):
        response = client.post(
            "/api/auth/register", json={"email": email, "password": "p" * length}
        )
        assert response.status_code == 201


@pytest.mark.parametrize(
    "endpoint",
    [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/verify-email",
        "/api/auth/password/forgot",
        "/api/auth/password/reset",
    ],
)
@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"email": "a@example.com", ', "application/json"),
        ("[]", "application/json"),
        ('["a@example.com", "password"]', "application/json"),
        ('"just a string"', "application/json"),
        ("null", "application/json"),
        ("", "application/json"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_422(client, app, user, endpoint, data, content_type):
    before = snapshot(app)
    response = client.post(endpoint, data=data, content_type=content_type)
    problem = assert_problem(response, 422, "invalid_request")
    assert problem["errors"][0]["field"] == "body"
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("email=owner@example.com&password=whatever", "application/x-www-form-urlencoded"),
        ('{"email": "owner@example.com", "password": "whatever"}', "text/plain"),
    ],
)
def test_a_non_json_post_to_the_api_needs_a_csrf_token(client, app, user, data, content_type):
    """A cross-site HTML form can send these content types: they meet the CSRF rule first."""
    before = snapshot(app)
    response = client.post("/api/auth/login", data=data, content_type=content_type)
    assert_problem(response, 403, "csrf_failed")
    assert snapshot(app) == before


def test_a_10_mb_body_is_a_413_problem_and_changes_nothing(client, app):
    before = snapshot(app)
    huge = '{"email": "big@example.com", "password": "' + "x" * (10 * 1024 * 1024) + '"}'
    response = client.post("/api/auth/register", data=huge, content_type="application/json")
    assert_problem(response, 413, "payload_too_large")
    assert snapshot(app) == before


# login -----------------------------------------------------------------------------------


def test_login_returns_a_bearer_token_and_sets_the_refresh_cookie(client, user, frozen_clock):
    frozen_clock(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    response = login_json(client, " Owner@Example.com ", TEST_PASSWORD)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "expires_at",
        "email_verified",
        "user",
    }
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["expires_at"] == "2030-01-02T03:19:05Z"
    assert body["email_verified"] is True
    assert body["user"]["email"] == "owner@example.com"
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("refresh_token=")]
    attributes = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in attributes
    assert "SameSite=Strict" in attributes
    assert "Path=/api/auth" in attributes
    assert "Secure" not in attributes  # development default
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.get_json() == {"user": body["user"]}


def test_the_refresh_cookie_is_secure_when_configured(app_factory, user):
    secure_app = app_factory(COOKIE_SECURE=True)
    with secure_app.app_context():
        from codexweb.auth.accounts import create_user

        create_user("secure@example.com", TEST_PASSWORD, verified=True)
        db.session.commit()
    response = login_json(secure_app.test_client(), "secure@example.com", TEST_PASSWORD)
    [cookie] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("refresh_token=")]
    assert "Secure" in [part.strip() for part in cookie.split(";")]


def test_unverified_users_may_log_in_and_are_told_so(client, unverified_user):
    body = login_json(client, "pending@example.com", TEST_PASSWORD).get_json()
    assert body["email_verified"] is False
    assert body["user"]["email_verified"] is False


def test_wrong_password_and_unknown_email_get_the_same_401(client, app, user):
    before = snapshot(app)
    wrong = login_json(client, "owner@example.com", "not the password at all")
    unknown = login_json(client, "nobody@example.com", TEST_PASSWORD)
    assert_problem(wrong, 401, "invalid_credentials")
    assert_problem(unknown, 401, "invalid_credentials")
    assert wrong.get_json() == unknown.get_json()
    assert "refresh_token=" not in " ".join(wrong.headers.getlist("Set-Cookie"))
    assert snapshot(app) == before


def test_an_unknown_email_still_costs_a_password_hash(client, app, user, monkeypatch):
    """Same time for both failures: the unknown email is checked against a dummy hash with
    the same argon2id parameters as a real one."""
    import codexweb.auth.accounts as accounts

    checked = []
    real = accounts.hash_matches
    monkeypatch.setattr(accounts, "hash_matches", lambda h, p: checked.append(h) or real(h, p))
    login_json(client, "nobody@example.com", TEST_PASSWORD)
    login_json(client, "owner@example.com", "a wrong password")
    unknown, wrong = checked
    assert unknown.rsplit("$", 2)[0] == wrong.rsplit("$", 2)[0] == "$argon2id$v=19$m=19456,t=2,p=1"
    assert unknown != user_row(app, "owner@example.com").password_hash


def test_an_old_scrypt_hash_is_upgraded_to_argon2id_at_the_next_login(client, app, user, events):
    from werkzeug.security import generate_password_hash

    with app.app_context():
        row = db.session.get(User, user.id)
        row.password_hash = generate_password_hash(TEST_PASSWORD, method="scrypt")
        db.session.commit()
    assert login_json(client, "owner@example.com", "a wrong password").status_code == 401
    assert user_row(app, "owner@example.com").password_hash.startswith("scrypt:")

    assert login_json(client, "owner@example.com", TEST_PASSWORD).status_code == 200
    assert user_row(app, "owner@example.com").password_hash.startswith("$argon2id$")
    assert login_json(client, "owner@example.com", TEST_PASSWORD).status_code == 200
    [event] = events.named("auth.password.rehashed")
    assert event["user_id"] == user.id


@pytest.mark.parametrize(
    "body",
    [
        {"email": "owner@example.com"},
        {"password": TEST_PASSWORD},
        {"email": "owner@example.com", "password": 5},
        {"email": True, "password": TEST_PASSWORD},
        {"email": "owner@example.com", "password": ""},
    ],
)
def test_login_with_bad_fields_is_422(client, app, user, body):
    before = snapshot(app)
    assert_problem(client.post("/api/auth/login", json=body), 422, "invalid_request")
    assert snapshot(app) == before


# refresh ---------------------------------------------------------------------------------


def test_refresh_rotates_the_cookie_and_returns_a_new_access_token(client, app, user):
    login = login_json(client, "owner@example.com", TEST_PASSWORD).get_json()
    first = refresh_cookie(client)
    response = client.post("/api/auth/refresh")
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["user"] == login["user"]
    second = refresh_cookie(client)
    assert second and second != first
    assert (
        client.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        ).status_code
        == 200
    )
    rows = refresh_rows(app, user.id)
    assert len(rows) == 2
    assert len({row.family_id for row in rows}) == 1
    assert all(first not in row.token_hash and second not in row.token_hash for row in rows)


def test_a_reused_refresh_token_revokes_the_whole_family(client, app, user, events, frozen_clock):
    frozen_clock(NOW)
    login_json(client, "owner@example.com", TEST_PASSWORD)
    stolen = refresh_cookie(client)
    assert client.post("/api/auth/refresh").status_code == 200
    legitimate = refresh_cookie(client)

    frozen_clock(NOW + timedelta(seconds=31))  # past the grace for two tabs refreshing at once
    client.set_cookie("refresh_token", stolen, path="/api/auth")
    reused = client.post("/api/auth/refresh")
    assert_problem(reused, 401, "authentication_required")
    assert refresh_cookie(client) is None  # the dead cookie is cleared

    client.set_cookie("refresh_token", legitimate, path="/api/auth")
    assert_problem(client.post("/api/auth/refresh"), 401, "authentication_required")
    assert all(row.revoked_at is not None for row in refresh_rows(app, user.id))
    [event] = events.named("auth.refresh.reuse_detected")
    assert event["user_id"] == user.id


def test_another_login_family_survives_a_reuse_elsewhere(app, user, frozen_clock):
    frozen_clock(NOW)
    laptop, phone = app.test_client(), app.test_client()
    login_json(laptop, "owner@example.com", TEST_PASSWORD)
    login_json(phone, "owner@example.com", TEST_PASSWORD)
    stolen = refresh_cookie(laptop)
    laptop.post("/api/auth/refresh")
    frozen_clock(NOW + timedelta(seconds=31))
    laptop.set_cookie("refresh_token", stolen, path="/api/auth")
    assert laptop.post("/api/auth/refresh").status_code == 401
    assert phone.post("/api/auth/refresh").status_code == 200


@pytest.mark.parametrize("cookie", [None, "", "made-up-token", "x" * 600])
def test_refresh_without_a_valid_cookie_is_401(client, app, user, cookie):
    if cookie is not None:
        client.set_cookie("refresh_token", cookie, path="/api/auth")
    before = snapshot(app)
    response = client.post("/api/auth/refresh")
    assert_problem(response, 401, "authentication_required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert snapshot(app) == before


def test_the_refresh_token_of_a_deleted_account_is_401(client, app, user):
    login_json(client, "owner@example.com", TEST_PASSWORD)
    with app.app_context():
        db.session.execute(db.delete(User).where(User.id == user.id))
        db.session.commit()
    assert_problem(client.post("/api/auth/refresh"), 401, "authentication_required")


def test_an_expired_refresh_token_is_401(client, user, frozen_clock):
    frozen_clock(datetime(2030, 1, 1, tzinfo=UTC))
    login_json(client, "owner@example.com", TEST_PASSWORD)
    frozen_clock(datetime(2030, 1, 15, 0, 0, 1, tzinfo=UTC))  # 14 days + 1 s later
    assert_problem(client.post("/api/auth/refresh"), 401, "authentication_required")


# logout ----------------------------------------------------------------------------------


def test_logout_revokes_the_refresh_token_and_clears_the_cookie(client, app, user):
    token = login_json(client, "owner@example.com", TEST_PASSWORD).get_json()["access_token"]
    old = refresh_cookie(client)
    response = client.post("/api/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 204
    assert response.get_data() == b""
    assert refresh_cookie(client) is None
    assert all(row.revoked_at is not None for row in refresh_rows(app, user.id))
    client.set_cookie("refresh_token", old, path="/api/auth")
    assert client.post("/api/auth/refresh").status_code == 401


def test_logout_works_with_an_expired_access_token_and_without_any(client, app, user):
    login_json(client, "owner@example.com", TEST_PASSWORD)
    response = client.post(
        "/api/auth/logout", headers={"Authorization": "Bearer expired-or-garbage"}
    )
    assert response.status_code == 204
    assert all(row.revoked_at is not None for row in refresh_rows(app, user.id))
    assert app.test_client().post("/api/auth/logout", json={}).status_code == 204


# me --------------------------------------------------------------------------------------


def test_me_needs_credentials(client):
    response = client.get("/api/auth/me")
    assert_problem(response, 401, "authentication_required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_me_with_a_tampered_access_token_is_401(client, user, auth_headers):
    token = auth_headers(user)["Authorization"][len("Bearer ") :]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {tampered}"})
    assert_problem(response, 401, "authentication_required")


def test_me_with_an_expired_access_token_is_401(client, app, user, monkeypatch):
    with issued_in_the_past(monkeypatch, 901):
        token = token_for(app, access_token_for, user.id)
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "authentication_required")


# verify-email ----------------------------------------------------------------------------


def test_verify_email_with_the_mailed_token(client, app, outbox):
    client.post("/api/auth/register", json={"email": "v@example.com", "password": STRONG_PASSWORD})
    access = login_json(client, "v@example.com", STRONG_PASSWORD).get_json()["access_token"]
    # The link is opened elsewhere (another device: no cookies, no CSRF token needed).
    response = app.test_client().post(
        "/api/auth/verify-email", json={"token": link_token(outbox[0])}
    )
    assert response.status_code == 200
    assert response.get_json()["user"]["email_verified"] is True
    assert user_row(app, "v@example.com").email_verified
    # Verifying logs nobody out: the access token and the refresh cookie still work.
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {access}"})
    assert me.get_json()["user"]["email_verified"] is True
    assert client.post("/api/auth/refresh").get_json()["email_verified"] is True


def test_verify_email_is_idempotent(client, app, unverified_user):
    token = token_for(app, issue_verification_token, unverified_user.id, unverified_user.email)
    first = client.post("/api/auth/verify-email", json={"token": token})
    verified_at = user_row(app, unverified_user.email).email_verified_at
    second = client.post("/api/auth/verify-email", json={"token": token})
    assert first.status_code == second.status_code == 200
    assert second.get_json() == first.get_json()
    assert user_row(app, unverified_user.email).email_verified_at == verified_at


def test_an_expired_verification_token_is_400_token_expired(
    client, app, unverified_user, monkeypatch
):
    with issued_in_the_past(monkeypatch, 172800 + 1):
        token = token_for(app, issue_verification_token, unverified_user.id, unverified_user.email)
    before = snapshot(app)
    assert_problem(
        client.post("/api/auth/verify-email", json={"token": token}), 400, "token_expired"
    )
    assert snapshot(app) == before


def _bad_verification_tokens(app, user):
    good = token_for(app, issue_verification_token, user.id, user.email)
    return {
        "tampered": good[:-3] + ("abc" if not good.endswith("abc") else "xyz"),
        "garbage": "not-a-token",
        "reset token": token_for(app, issue_reset_token, user.id, "hash"),
        "access token": token_for(app, access_token_for, user.id),
        "other address": token_for(app, issue_verification_token, user.id, "old@example.com"),
        "unknown user": token_for(app, issue_verification_token, "usr_gone", user.email),
    }


def test_bad_verification_tokens_are_400_token_invalid(client, app, unverified_user):
    before = snapshot(app)
    for name, token in _bad_verification_tokens(app, unverified_user).items():
        response = client.post("/api/auth/verify-email", json={"token": token})
        assert response.status_code == 400, name
        assert_problem(response, 400, "token_invalid")
    assert snapshot(app) == before


@pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": 7}, {"token": None}])
def test_verify_email_with_a_bad_body_is_422(client, body):
    assert_problem(client.post("/api/auth/verify-email", json=body), 422, "invalid_request")


# resend ----------------------------------------------------------------------------------


def test_resend_for_the_logged_in_user(client, unverified_user, auth_headers, outbox):
    response = client.post("/api/auth/verify-email/resend", headers=auth_headers(unverified_user))
    assert response.status_code == 202
    [message] = outbox
    assert message.to == ["pending@example.com"]


def test_resend_is_202_for_known_unknown_and_verified_addresses(
    client, unverified_user, user, outbox
):
    for email in ("PENDING@example.com", "nobody@example.com", "owner@example.com"):
        response = client.post("/api/auth/verify-email/resend", json={"email": email})
        assert response.status_code == 202
        assert response.get_json() == {"status": "accepted"}
    assert [message.to for message in outbox] == [["pending@example.com"]]


def test_a_client_holding_only_the_refresh_cookie_needs_no_csrf_token(
    client, unverified_user, outbox
):
    """The refresh cookie is SameSite=Strict: no cross-site request carries it."""
    login_json(client, "pending@example.com", TEST_PASSWORD)
    assert refresh_cookie(client)
    response = client.post("/api/auth/verify-email/resend", json={"email": "pending@example.com"})
    assert response.status_code == 202
    assert len(outbox) == 1


def test_resend_for_a_verified_user_sends_nothing(client, user, auth_headers, outbox):
    assert (
        client.post("/api/auth/verify-email/resend", headers=auth_headers(user)).status_code == 202
    )
    assert outbox == []


def test_anonymous_resend_needs_an_email(client):
    assert_problem(client.post("/api/auth/verify-email/resend", json={}), 422, "invalid_request")


# password forgot / reset -----------------------------------------------------------------


def test_forgot_password_mails_a_reset_link_to_a_known_address(client, user, outbox):
    response = client.post("/api/auth/password/forgot", json={"email": " Owner@Example.com"})
    assert response.status_code == 202
    [message] = outbox
    assert message.to == ["owner@example.com"]
    assert "http://localhost/reset-password/" in message.body


def test_forgot_password_is_202_and_silent_for_an_unknown_address(client, app, outbox):
    before = snapshot(app)
    response = client.post("/api/auth/password/forgot", json={"email": "nobody@example.com"})
    assert response.status_code == 202
    assert outbox == []
    assert snapshot(app) == before


def test_reset_password_sets_the_password_and_revokes_every_refresh_token(
    client, app, user, outbox
):
    laptop, phone = app.test_client(), app.test_client()
    login_json(laptop, "owner@example.com", TEST_PASSWORD)
    login_json(phone, "owner@example.com", TEST_PASSWORD)
    client.post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    token = link_token(outbox[0], "reset-password")

    response = client.post(
        "/api/auth/password/reset", json={"token": token, "password": "a brand new passphrase"}
    )
    assert response.status_code == 200
    assert response.get_json()["user"]["email"] == "owner@example.com"
    assert laptop.post("/api/auth/refresh").status_code == 401
    assert phone.post("/api/auth/refresh").status_code == 401
    assert login_json(client, "owner@example.com", TEST_PASSWORD).status_code == 401
    assert login_json(client, "owner@example.com", "a brand new passphrase").status_code == 200


def test_a_reset_token_works_once(client, app, user, outbox):
    client.post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    token = link_token(outbox[0], "reset-password")
    body = {"token": token, "password": "first new passphrase"}
    assert client.post("/api/auth/password/reset", json=body).status_code == 200
    before = snapshot(app)
    again = client.post(
        "/api/auth/password/reset", json={"token": token, "password": "second new passphrase"}
    )
    assert_problem(again, 400, "token_invalid")
    assert snapshot(app) == before


def test_an_expired_reset_token_is_400_token_expired(client, app, user, monkeypatch):
    with app.app_context():
        password_hash = db.session.get(User, user.id).password_hash
    with issued_in_the_past(monkeypatch, 3601):
        token = token_for(app, issue_reset_token, user.id, password_hash)
    before = snapshot(app)
    response = client.post(
        "/api/auth/password/reset", json={"token": token, "password": "a brand new passphrase"}
    )
    assert_problem(response, 400, "token_expired")
    assert snapshot(app) == before


def test_a_verification_token_is_not_a_reset_token(client, app, user):
    token = token_for(app, issue_verification_token, user.id, user.email)
    before = snapshot(app)
    response = client.post(
        "/api/auth/password/reset", json={"token": token, "password": "a brand new passphrase"}
    )
    assert_problem(response, 400, "token_invalid")
    assert snapshot(app) == before


def test_reset_with_a_short_password_is_422_and_keeps_the_token_usable(client, app, user, outbox):
    client.post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    token = link_token(outbox[0], "reset-password")
    before = snapshot(app)
    short = client.post("/api/auth/password/reset", json={"token": token, "password": "short"})
    assert_problem(short, 422, "invalid_request")
    assert snapshot(app) == before
    ok = client.post(
        "/api/auth/password/reset", json={"token": token, "password": "long enough now!"}
    )
    assert ok.status_code == 200


def test_a_reset_verifies_an_unverified_address(client, app, unverified_user, outbox):
    client.post("/api/auth/password/forgot", json={"email": "pending@example.com"})
    token = link_token(outbox[0], "reset-password")
    response = client.post(
        "/api/auth/password/reset", json={"token": token, "password": "a brand new passphrase"}
    )
    assert response.get_json()["user"]["email_verified"] is True


def test_of_two_racing_refreshes_the_loser_gets_a_sibling_within_the_grace(
    client, app, user, monkeypatch
):
    """The loser read the token before the winner rotated it: the conditional UPDATE finds it
    rotated a moment ago, which is two tabs, not a thief. Both stay logged in."""
    import codexweb.auth.logins as logins

    login_json(client, "owner@example.com", TEST_PASSWORD)
    raw = refresh_cookie(client)
    with app.app_context():
        stale = logins._find_refresh(raw)  # read by the loser, before the winner commits
        db.session.expunge(stale)
    assert client.post("/api/auth/refresh").status_code == 200  # the winner
    monkeypatch.setattr(logins, "_find_refresh", lambda value: db.session.merge(stale, load=False))
    with app.test_request_context():
        grant = logins.rotate_refresh_token(raw)
    assert grant.login_id == stale.family_id
    rows = refresh_rows(app, user.id)
    assert len(rows) == 3 and all(row.revoked_at is None for row in rows)
