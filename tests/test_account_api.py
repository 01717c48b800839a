"""The caller's own account over the JSON API (CONTRACT.md §3): change password, change email
and its confirmation, the list of logins and their ending, deleting the account; each refusal
(wrong password, taken address, someone else's login, a reused link) changes nothing."""

from __future__ import annotations

import re
import threading

import pytest

from codexweb.auth.tokens import issue_verification_token
from codexweb.extensions import db
from codexweb.models import ChatKitSession, CodexSession, Identity, Login, RefreshToken, User
from tests.auth_support import STRONG_PASSWORD, login_json, snapshot, user_row
from tests.conftest import TEST_PASSWORD, access_token_for, deliver_mail
from tests.pages_support import Browser, open_session
from tests.test_auth_api import assert_problem, issued_in_the_past

NEW_ADDRESS = "new.me@example.com"
_CONFIRM_LINK = re.compile(r"(https?://\S+)/confirm-email/([A-Za-z0-9._-]+)")


def bearer(app, user_id: str) -> dict[str, str]:
    """The headers of a fresh API login of `user_id`."""
    with app.app_context():
        return {"Authorization": f"Bearer {access_token_for(user_id)}"}


def is_logged_in(client, headers: dict[str, str]) -> bool:
    return client.get("/api/auth/me", headers=headers).status_code == 200


def confirm_token(message) -> str:
    match = _CONFIRM_LINK.search(message.body)
    assert match, f"no confirm-email link in {message.body!r}"
    return match.group(2)


def ask_for_new_address(client, headers, outbox, new_email: str = NEW_ADDRESS) -> str:
    """Ask to move the account to `new_email`; the token of the mailed confirmation link."""
    response = client.post(
        "/api/auth/email/change",
        json={"password": TEST_PASSWORD, "new_email": new_email},
        headers=headers,
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    [link] = [message for message in outbox if message.to == [new_email]]
    return confirm_token(link)


def live_login_ids(app, user_id: str) -> set[str]:
    with app.app_context():
        return {
            login.id
            for login in db.session.execute(
                db.select(Login).where(Login.user_id == user_id, Login.ended_at.is_(None))
            ).scalars()
        }


# Who may ask ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/auth/password/change", {"current_password": "x", "new_password": "y"}),
        ("post", "/api/auth/email/change", {"password": "x", "new_email": NEW_ADDRESS}),
        ("get", "/api/auth/logins", None),
        ("delete", "/api/auth/logins/lgn_anything", None),
        ("post", "/api/auth/logins/revoke-others", None),
        ("delete", "/api/auth/account", {"password": "x"}),
    ],
)
def test_anonymous_callers_are_401(client, method, path, body):
    response = getattr(client, method)(path, json=body)
    assert_problem(response, 401, "authentication_required")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_cookie_authenticated_change_needs_the_csrf_token(app, client, user):
    browser = Browser(client, user)
    body = {"current_password": TEST_PASSWORD, "new_password": STRONG_PASSWORD}
    before = snapshot(app)
    refused = client.post("/api/auth/password/change", json=body)
    assert_problem(refused, 403, "csrf_failed")
    assert snapshot(app) == before
    accepted = client.post(
        "/api/auth/password/change", json=body, headers={"X-CSRFToken": browser.csrf()}
    )
    assert accepted.status_code == 200


# Change password --------------------------------------------------------------------------


def test_changing_the_password_ends_every_other_login_and_keeps_this_one(app, client, user):
    this, other, third = (bearer(app, user.id) for _ in range(3))
    response = client.post(
        "/api/auth/password/change",
        json={"current_password": TEST_PASSWORD, "new_password": STRONG_PASSWORD},
        headers=this,
    )
    assert response.status_code == 200
    assert response.get_json() == {
        "user": {
            "id": user.id,
            "email": "owner@example.com",
            "email_verified": True,
            "created_at": response.get_json()["user"]["created_at"],
        }
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert is_logged_in(client, this)
    assert not is_logged_in(client, other)
    assert not is_logged_in(client, third)
    assert login_json(client, "owner@example.com", TEST_PASSWORD).status_code == 401
    assert login_json(client, "owner@example.com", STRONG_PASSWORD).status_code == 200


def test_changing_the_password_revokes_the_other_logins_refresh_tokens(app, client, user):
    other = login_json(app.test_client(), "owner@example.com", TEST_PASSWORD)
    other_login = other.get_json()
    this = bearer(app, user.id)
    client.post(
        "/api/auth/password/change",
        json={"current_password": TEST_PASSWORD, "new_password": STRONG_PASSWORD},
        headers=this,
    )
    assert not is_logged_in(client, {"Authorization": f"Bearer {other_login['access_token']}"})
    with app.app_context():
        tokens = db.session.execute(db.select(RefreshToken)).scalars().all()
        assert tokens and all(token.revoked_at is not None for token in tokens)


def test_a_wrong_current_password_is_400_and_changes_nothing(app, client, user):
    this, other = bearer(app, user.id), bearer(app, user.id)
    before = snapshot(app)
    response = client.post(
        "/api/auth/password/change",
        json={"current_password": "not my password", "new_password": STRONG_PASSWORD},
        headers=this,
    )
    problem = assert_problem(response, 400, "invalid_credentials")
    assert problem["detail"] == "The password is wrong."
    assert snapshot(app) == before
    assert is_logged_in(client, other)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"current_password": TEST_PASSWORD, "new_password": "x" * 11}, "new_password"),
        ({"current_password": TEST_PASSWORD, "new_password": "x" * 257}, "new_password"),
        ({"current_password": TEST_PASSWORD}, "new_password"),
        ({"new_password": STRONG_PASSWORD}, "current_password"),
        ({"current_password": 12, "new_password": STRONG_PASSWORD}, "current_password"),
    ],
)
def test_a_bad_password_change_body_is_422(app, client, user, body, field):
    before = snapshot(app)
    response = client.post("/api/auth/password/change", json=body, headers=bearer(app, user.id))
    problem = assert_problem(response, 422, "invalid_request")
    assert field in {error["field"] for error in problem["errors"]}
    assert snapshot(app) == before


# Change email -----------------------------------------------------------------------------


def test_changing_the_email_mails_a_link_to_the_new_address_and_a_notice_to_the_old(
    app, client, user, outbox
):
    headers = bearer(app, user.id)
    response = client.post(
        "/api/auth/email/change",
        json={"password": TEST_PASSWORD, "new_email": "  New.Me@Example.COM "},
        headers=headers,
    )
    assert response.status_code == 202
    assert response.get_json() == {"status": "accepted"}
    link, notice = sorted(outbox, key=lambda message: message.to != [NEW_ADDRESS])
    assert link.to == [NEW_ADDRESS]
    assert link.subject == "Confirm your new email address for codexweb"
    assert _CONFIRM_LINK.search(link.body).group(1) == "http://localhost"
    assert notice.to == ["owner@example.com"]
    assert notice.subject == "Your codexweb email address is being changed"
    assert NEW_ADDRESS in notice.body
    assert "/confirm-email/" not in notice.body  # only the new address can confirm
    # Nothing changes until the link is opened.
    assert client.get("/api/auth/me", headers=headers).get_json()["user"]["email"] == (
        "owner@example.com"
    )
    assert user_row(app, NEW_ADDRESS) is None


def test_the_mailed_link_moves_the_account_to_the_new_address_verified(
    app, client, user, outbox, events
):
    headers = bearer(app, user.id)
    token = ask_for_new_address(client, headers, outbox)
    response = client.post("/api/auth/email/confirm", json={"token": token})
    assert response.status_code == 200
    body = response.get_json()["user"]
    assert (body["id"], body["email"], body["email_verified"]) == (user.id, NEW_ADDRESS, True)
    assert is_logged_in(client, headers)  # confirming logs nobody out
    assert login_json(client, NEW_ADDRESS, TEST_PASSWORD).status_code == 200
    assert login_json(client, "owner@example.com", TEST_PASSWORD).status_code == 401
    [changed] = events.named("auth.email.changed")
    assert changed["user_id"] == user.id
    assert token not in "\n".join(events.lines())


def test_an_unverified_user_is_verified_by_confirming_the_new_address(
    app, client, unverified_user, outbox
):
    token = ask_for_new_address(client, bearer(app, unverified_user.id), outbox)
    response = client.post("/api/auth/email/confirm", json={"token": token})
    assert response.get_json()["user"]["email_verified"] is True


def test_the_old_address_can_register_again_once_the_change_is_confirmed(app, client, user, outbox):
    token = ask_for_new_address(client, bearer(app, user.id), outbox)
    client.post("/api/auth/email/confirm", json={"token": token})
    response = client.post(
        "/api/auth/register", json={"email": "owner@example.com", "password": STRONG_PASSWORD}
    )
    assert response.status_code == 201


def test_a_confirmation_link_works_once(app, client, user, outbox):
    token = ask_for_new_address(client, bearer(app, user.id), outbox)
    assert client.post("/api/auth/email/confirm", json={"token": token}).status_code == 200
    before = snapshot(app)
    again = client.post("/api/auth/email/confirm", json={"token": token})
    assert_problem(again, 400, "token_invalid")
    assert snapshot(app) == before


def test_verification_links_of_the_old_address_die_with_it(app, client, unverified_user, outbox):
    with app.app_context():
        old_link = issue_verification_token(unverified_user.id, unverified_user.email)
    token = ask_for_new_address(client, bearer(app, unverified_user.id), outbox)
    client.post("/api/auth/email/confirm", json={"token": token})
    response = client.post("/api/auth/verify-email", json={"token": old_link})
    assert_problem(response, 400, "token_invalid")


def test_an_older_change_link_dies_when_another_change_is_confirmed(app, client, user, outbox):
    headers = bearer(app, user.id)
    first = ask_for_new_address(client, headers, outbox, "first@example.com")
    second = ask_for_new_address(client, headers, outbox, "second@example.com")
    assert client.post("/api/auth/email/confirm", json={"token": second}).status_code == 200
    assert_problem(
        client.post("/api/auth/email/confirm", json={"token": first}), 400, "token_invalid"
    )
    assert user_row(app, "second@example.com").id == user.id


def test_an_address_taken_before_the_link_is_opened_is_409_and_the_link_stays_unused(
    app, client, user, make_user, outbox
):
    token = ask_for_new_address(client, bearer(app, user.id), outbox)
    squatter = make_user(NEW_ADDRESS)
    response = client.post("/api/auth/email/confirm", json={"token": token})
    assert_problem(response, 409, "email_taken")
    assert user_row(app, "owner@example.com").id == user.id
    assert user_row(app, NEW_ADDRESS).id == squatter.id


def test_an_expired_confirmation_link_is_400_token_expired(app, client, user, outbox, monkeypatch):
    max_age = app.config["EMAIL_VERIFY_MAX_AGE"]
    with issued_in_the_past(monkeypatch, max_age + 5):
        token = ask_for_new_address(client, bearer(app, user.id), outbox)
    response = client.post("/api/auth/email/confirm", json={"token": token})
    assert_problem(response, 400, "token_expired")
    assert user_row(app, "owner@example.com") is not None


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        ("garbage", 400, "token_invalid"),
        ("a" * 1025, 422, "invalid_request"),
        ("", 422, "invalid_request"),
    ],
)
def test_a_bad_confirmation_token_is_refused(client, token, status, code):
    assert_problem(client.post("/api/auth/email/confirm", json={"token": token}), status, code)


def test_a_verification_token_is_no_confirmation_token(app, client, user):
    with app.app_context():
        other_purpose = issue_verification_token(user.id, user.email)
    response = client.post("/api/auth/email/confirm", json={"token": other_purpose})
    assert_problem(response, 400, "token_invalid")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"password": "not my password", "new_email": NEW_ADDRESS}, 400, "invalid_credentials"),
        ({"password": TEST_PASSWORD, "new_email": "taken@example.com"}, 409, "email_taken"),
        ({"password": TEST_PASSWORD, "new_email": "TAKEN@example.com "}, 409, "email_taken"),
        ({"password": TEST_PASSWORD, "new_email": "owner@example.com"}, 422, "invalid_request"),
        ({"password": TEST_PASSWORD, "new_email": "not-an-address"}, 422, "invalid_request"),
        ({"password": TEST_PASSWORD}, 422, "invalid_request"),
    ],
)
def test_a_refused_email_change_mails_nothing_and_changes_nothing(
    app, client, user, make_user, outbox, body, status, code
):
    make_user("taken@example.com")
    before = snapshot(app)
    response = client.post("/api/auth/email/change", json=body, headers=bearer(app, user.id))
    problem = assert_problem(response, status, code)
    if status == 422:
        assert [error["field"] for error in problem["errors"]] == ["new_email"]
    assert len(outbox) == 0
    assert snapshot(app) == before


@pytest.fixture(params=["sqlite", "postgresql"])
def racing_app(request, app_factory):
    if request.param == "sqlite":
        return app_factory()
    return app_factory(DATABASE_URL=request.getfixturevalue("postgres_database"))


def test_a_confirmation_link_opened_four_times_at_once_works_exactly_once(racing_app):
    app = racing_app
    from codexweb.auth.accounts import create_user

    with app.app_context():
        owner = create_user("owner@example.com", TEST_PASSWORD, verified=True)
        db.session.commit()
        owner_id = owner.id
    outbox = app.extensions["mailman"].outbox = []
    client = app.test_client()
    client.post(
        "/api/auth/email/change",
        json={"password": TEST_PASSWORD, "new_email": NEW_ADDRESS},
        headers=bearer(app, owner_id),
    )
    deliver_mail(app)
    [link] = [message for message in outbox if message.to == [NEW_ADDRESS]]
    token = confirm_token(link)
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def confirm() -> None:
        barrier.wait()
        response = app.test_client().post("/api/auth/email/confirm", json={"token": token})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=confirm) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 400, 400, 400]
    assert user_row(app, NEW_ADDRESS).id == owner_id


# Logins -----------------------------------------------------------------------------------


def test_the_login_list_shows_the_live_logins_and_which_one_is_asking(app, client, user):
    other_client = app.test_client()
    other = login_json(other_client, "owner@example.com", TEST_PASSWORD).get_json()
    this = bearer(app, user.id)
    ended = bearer(app, user.id)
    client.post("/api/auth/logout", headers=ended)
    response = client.get("/api/auth/logins", headers=this)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    found = response.get_json()["logins"]
    assert len(found) == 2
    for login in found:
        assert set(login) == {"id", "kind", "created_at", "last_used_at", "user_agent", "current"}
        assert login["kind"] == "api"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", login["created_at"])
    [current] = [login for login in found if login["current"]]
    assert current["user_agent"] == "pytest"
    [elsewhere] = [login for login in found if not login["current"]]
    assert elsewhere["user_agent"].startswith("Werkzeug/")
    assert is_logged_in(client, {"Authorization": f"Bearer {other['access_token']}"})


def test_another_users_logins_are_not_listed(app, client, user, make_user):
    stranger = make_user("stranger@example.com")
    bearer(app, stranger.id)
    found = client.get("/api/auth/logins", headers=bearer(app, user.id)).get_json()["logins"]
    assert len(found) == 1


def test_ending_one_login_ends_it_everywhere(app, client, user):
    this, other = bearer(app, user.id), bearer(app, user.id)
    [other_id] = live_login_ids(app, user.id) - {
        login["id"]
        for login in client.get("/api/auth/logins", headers=this).get_json()["logins"]
        if login["current"]
    }
    response = client.delete(f"/api/auth/logins/{other_id}", headers=this)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert not is_logged_in(client, other)
    assert is_logged_in(client, this)
    again = client.delete(f"/api/auth/logins/{other_id}", headers=this)
    assert_problem(again, 404, "not_found")


def test_someone_elses_login_is_404_and_stays_live(app, client, user, make_user):
    stranger = make_user("stranger@example.com")
    theirs = bearer(app, stranger.id)
    [their_login] = live_login_ids(app, stranger.id)
    response = client.delete(f"/api/auth/logins/{their_login}", headers=bearer(app, user.id))
    assert_problem(response, 404, "not_found")
    assert is_logged_in(client, theirs)
    unknown = client.delete("/api/auth/logins/lgn_nothing", headers=bearer(app, user.id))
    assert_problem(unknown, 404, "not_found")


def test_revoke_others_ends_every_login_but_this_one(app, client, user, make_user):
    this = bearer(app, user.id)
    others = [bearer(app, user.id) for _ in range(3)]
    stranger = bearer(app, make_user("stranger@example.com").id)
    response = client.post("/api/auth/logins/revoke-others", headers=this)
    assert response.status_code == 204
    assert is_logged_in(client, this)
    assert not any(is_logged_in(client, headers) for headers in others)
    assert is_logged_in(client, stranger)
    assert len(client.get("/api/auth/logins", headers=this).get_json()["logins"]) == 1


def test_a_browser_can_end_its_other_logins_with_the_csrf_token(app, client, user):
    browser = Browser(client, user)
    api = bearer(app, user.id)
    response = client.post(
        "/api/auth/logins/revoke-others", headers={"X-CSRFToken": browser.csrf()}
    )
    assert response.status_code == 204
    assert not is_logged_in(client.application.test_client(), api)
    assert client.get("/api/auth/me").status_code == 200


# Delete the account -----------------------------------------------------------------------


def _rows(app, model, user_id: str) -> int:
    with app.app_context():
        column = model.user_id
        return len(db.session.execute(db.select(model).where(column == user_id)).all())


def test_deleting_the_account_takes_its_sessions_logins_and_tokens_and_frees_the_address(
    app, client, user, make_user
):
    other_user = make_user("stranger@example.com")
    open_session(app, user)
    open_session(app, other_user)
    with app.app_context():
        db.session.add(Identity(user_id=user.id, issuer="https://idp", subject="42"))
        db.session.commit()
    login = login_json(client, "owner@example.com", TEST_PASSWORD).get_json()
    headers = {"Authorization": f"Bearer {login['access_token']}"}
    other = bearer(app, user.id)
    response = client.delete("/api/auth/account", json={"password": TEST_PASSWORD}, headers=headers)
    assert response.status_code == 204
    assert "refresh_token=;" in response.headers["Set-Cookie"]
    assert user_row(app, "owner@example.com") is None
    for model in (CodexSession, ChatKitSession, Login, RefreshToken, Identity):
        assert _rows(app, model, user.id) == 0, model.__name__
    assert _rows(app, CodexSession, other_user.id) == 1
    assert not is_logged_in(client, other)
    assert client.post("/api/auth/refresh").status_code == 401
    again = client.post(
        "/api/auth/register", json={"email": "owner@example.com", "password": STRONG_PASSWORD}
    )
    assert again.status_code == 201
    assert again.get_json()["user"]["id"] != user.id


def test_a_wrong_password_deletes_nothing(app, client, user):
    open_session(app, user)
    headers = bearer(app, user.id)
    before = snapshot(app)
    response = client.delete(
        "/api/auth/account", json={"password": "not my password"}, headers=headers
    )
    assert_problem(response, 400, "invalid_credentials")
    assert snapshot(app) == before
    assert _rows(app, CodexSession, user.id) == 1
    assert is_logged_in(client, headers)


def test_deleting_without_a_password_is_422(app, client, user):
    response = client.delete("/api/auth/account", json={}, headers=bearer(app, user.id))
    problem = assert_problem(response, 422, "invalid_request")
    assert [error["field"] for error in problem["errors"]] == ["password"]
    with app.app_context():
        assert db.session.get(User, user.id) is not None


# Limits -----------------------------------------------------------------------------------


@pytest.fixture
def limited_app(app_factory):
    return app_factory(RATELIMIT_ENABLED=True, RATELIMIT_ACCOUNT_CHANGE="2/minute")


def test_wrong_passwords_are_limited_per_user_across_the_account_changes(limited_app):
    app = limited_app
    from codexweb.auth.accounts import create_user

    with app.app_context():
        owner = create_user("owner@example.com", TEST_PASSWORD, verified=True)
        db.session.commit()
        owner_id = owner.id
    client = app.test_client()
    wrong = "not my password"
    # Typos in the new value (422) cost nothing.
    for _ in range(3):
        typo = client.post(
            "/api/auth/password/change",
            json={"current_password": TEST_PASSWORD, "new_password": "short"},
            headers=bearer(app, owner_id),
        )
        assert typo.status_code == 422
    first = client.post(
        "/api/auth/password/change",
        json={"current_password": wrong, "new_password": STRONG_PASSWORD},
        headers=bearer(app, owner_id),
    )
    second = client.delete(
        "/api/auth/account", json={"password": wrong}, headers=bearer(app, owner_id)
    )
    assert (first.status_code, second.status_code) == (400, 400)
    # A new login of the same user buys no new budget, and the right password waits too.
    third = client.post(
        "/api/auth/email/change",
        json={"password": TEST_PASSWORD, "new_email": NEW_ADDRESS},
        headers=bearer(app, owner_id),
    )
    problem = assert_problem(third, 429, "rate_limited")
    assert re.fullmatch(
        r"Too many attempts to change your account\. Try again in (\d+ seconds|1 minute)\.",
        problem["detail"],
    )
    assert third.headers["Retry-After"] == str(problem["retry_after"])


def test_a_users_limit_is_not_anothers(limited_app):
    app = limited_app
    from codexweb.auth.accounts import create_user

    with app.app_context():
        first = create_user("first@example.com", TEST_PASSWORD, verified=True)
        second = create_user("second@example.com", TEST_PASSWORD, verified=True)
        db.session.commit()
        ids = (first.id, second.id)
    client = app.test_client()
    for _ in range(2):
        client.delete("/api/auth/account", json={"password": "wrong"}, headers=bearer(app, ids[0]))
    limited = client.delete(
        "/api/auth/account", json={"password": "x"}, headers=bearer(app, ids[0])
    )
    assert limited.status_code == 429
    other = client.delete(
        "/api/auth/account", json={"password": TEST_PASSWORD}, headers=bearer(app, ids[1])
    )
    assert other.status_code == 204


def test_the_change_link_is_bound_to_the_user_it_was_sent_for(app, client, user, outbox):
    token = ask_for_new_address(client, bearer(app, user.id), outbox)
    with app.app_context():
        stored = db.session.get(User, user.id)
        db.session.delete(stored)
        db.session.commit()
    assert_problem(
        client.post("/api/auth/email/confirm", json={"token": token}), 400, "token_invalid"
    )
    assert user_row(app, NEW_ADDRESS) is None
