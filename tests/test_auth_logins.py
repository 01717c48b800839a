"""Logins are server-side records: logout, a reset and "sign out elsewhere" end them, and with
them the refresh family, every access token they issued and a copied session cookie."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from codexweb.auth import logins
from codexweb.extensions import db
from codexweb.models import Login, User
from tests.auth_support import (
    link_token,
    login_json,
    meta_csrf_token,
    refresh_cookie,
    submit_form,
)
from tests.conftest import TEST_PASSWORD

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def page_login(client, email: str = "owner@example.com", **extra: str):
    return submit_form(client, "/login", {"email": email, "password": TEST_PASSWORD, **extra})


def session_cookie(client) -> str:
    return client.get_cookie("session").value


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login_rows(app, user_id: str) -> list[Login]:
    with app.app_context():
        return list(db.session.execute(db.select(Login).filter_by(user_id=user_id)).scalars())


def test_a_session_cookie_copied_before_logout_is_dead_after_it(app, user):
    browser = app.test_client()
    page_login(browser)
    copied = session_cookie(browser)
    assert browser.get("/api/auth/me").status_code == 200

    submit_form(browser, "/logout", {})

    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/api/auth/me").status_code == 401
    assert thief.get("/codex/chatkit").headers["Location"] == "/login?next=/codex/chatkit"


def test_logging_in_again_in_a_browser_ends_the_login_it_held(app, user, make_user, events):
    """A second login in the same browser (as someone else, or the same person) replaces the
    first: the first ends on the server, so a copy of its cookie opens nothing."""
    other = make_user("other@example.com")
    browser = app.test_client()
    page_login(browser)
    copied = session_cookie(browser)
    # The login page sends a logged-in visitor on, but a form opened in another tab posts.
    csrf = meta_csrf_token(browser.get("/account").get_data(as_text=True))
    form = {"email": "other@example.com", "password": TEST_PASSWORD, "csrf_token": csrf}
    assert browser.post("/login", data=form).status_code == 302
    assert browser.get("/api/auth/me").get_json()["user"]["id"] == other.id

    assert [row.ended_at is not None for row in login_rows(app, user.id)] == [True]
    (ended,) = events.named("auth.login.ended")
    assert ended["user_id"] == user.id
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/api/auth/me").status_code == 401


def test_a_session_cookie_copied_before_an_api_logout_is_dead_after_it(app, user):
    browser = app.test_client()
    page_login(browser)
    copied = session_cookie(browser)
    token = meta_csrf_token(browser.get("/verify-email").get_data(as_text=True))
    assert browser.post("/api/auth/logout", headers={"X-CSRFToken": token}).status_code == 204
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/api/auth/me").status_code == 401


def test_access_tokens_die_with_their_login_at_logout(client, app, user):
    token = login_json(client, "owner@example.com", TEST_PASSWORD).get_json()["access_token"]
    refreshed = client.post("/api/auth/refresh").get_json()["access_token"]
    other = app.test_client()
    other_token = login_json(other, "owner@example.com", TEST_PASSWORD).get_json()["access_token"]

    assert client.post("/api/auth/logout", headers=bearer(token)).status_code == 204
    for dead in (token, refreshed):
        response = app.test_client().get("/api/auth/me", headers=bearer(dead))
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # Another login of the same user is not this login.
    assert app.test_client().get("/api/auth/me", headers=bearer(other_token)).status_code == 200


def test_a_reset_ends_every_login_access_tokens_included(app, user, outbox):
    api, browser = app.test_client(), app.test_client()
    token = login_json(api, "owner@example.com", TEST_PASSWORD).get_json()["access_token"]
    page_login(browser)
    app.test_client().post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    reset = {"token": link_token(outbox[0], "reset-password"), "password": "a brand new passphrase"}
    assert app.test_client().post("/api/auth/password/reset", json=reset).status_code == 200

    assert app.test_client().get("/api/auth/me", headers=bearer(token)).status_code == 401
    assert browser.get("/api/auth/me").status_code == 401
    assert api.post("/api/auth/refresh").status_code == 401
    assert all(row.ended_at is not None for row in login_rows(app, user.id))


def test_two_tabs_refreshing_at_once_both_stay_logged_in(app, user):
    """Both tabs send the same refresh cookie at the same instant (threads and a barrier)."""
    tab = app.test_client()
    login_json(tab, "owner@example.com", TEST_PASSWORD)
    cookie = refresh_cookie(tab)
    barrier = threading.Barrier(2)
    answers: list = [None, None]

    def refresh(index: int) -> None:
        client = app.test_client()
        client.set_cookie("refresh_token", cookie, path="/api/auth")
        barrier.wait()
        response = client.post("/api/auth/refresh")
        answers[index] = (response.status_code, refresh_cookie(client), response.get_json())

    threads = [threading.Thread(target=refresh, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _, _ in answers] == [200, 200]
    for _, new_cookie, body in answers:
        follow_up = app.test_client()
        follow_up.set_cookie("refresh_token", new_cookie, path="/api/auth")
        assert follow_up.post("/api/auth/refresh").status_code == 200
        assert (
            follow_up.get("/api/auth/me", headers=bearer(body["access_token"])).status_code == 200
        )


def test_a_rotated_token_presented_after_the_grace_ends_the_login(app, user, frozen_clock):
    frozen_clock(NOW)
    client = app.test_client()
    login_json(client, "owner@example.com", TEST_PASSWORD)
    stolen = refresh_cookie(client)
    assert client.post("/api/auth/refresh").status_code == 200
    frozen_clock(NOW + timedelta(seconds=app.config["REFRESH_REUSE_GRACE"]))
    late_tab = app.test_client()
    late_tab.set_cookie("refresh_token", stolen, path="/api/auth")
    assert late_tab.post("/api/auth/refresh").status_code == 200  # still inside the grace

    frozen_clock(NOW + timedelta(seconds=app.config["REFRESH_REUSE_GRACE"] + 1))
    thief = app.test_client()
    thief.set_cookie("refresh_token", stolen, path="/api/auth")
    assert thief.post("/api/auth/refresh").status_code == 401
    assert client.post("/api/auth/refresh").status_code == 401
    [login] = login_rows(app, user.id)
    assert login.ended_at is not None


def test_remember_me_makes_both_cookies_outlive_the_browser(app, user):
    """The "Remember me" box is the account pages' (issue 13); its rule is `log_in_browser`'s."""

    @app.post("/test-login/<int:remember>")
    def remembering_login(remember: int):
        logins.log_in_browser(db.session.get(User, user.id), remember=bool(remember))
        return "", 204

    forgetful, remembered = app.test_client(), app.test_client()
    forgetful.post("/test-login/0")
    remembered.post("/test-login/1")
    assert forgetful.get_cookie("session").expires is None
    assert forgetful.get_cookie("refresh_token", path="/api/auth").expires is None
    assert forgetful.get("/api/auth/me").status_code == 200
    assert remembered.get("/api/auth/me").status_code == 200
    days = app.config["REMEMBER_ME_DAYS"]
    session_expires = remembered.get_cookie("session").expires
    assert session_expires - datetime.now(UTC) > timedelta(days=days - 1)
    assert remembered.get_cookie("refresh_token", path="/api/auth").expires is not None
    [row] = [r for r in login_rows(app, user.id) if r.remember]
    assert row.expires_at - row.created_at == timedelta(days=days)


def test_the_login_record_knows_its_device_times_and_kind(app, user, frozen_clock):
    frozen_clock(NOW)
    browser = app.test_client()
    browser.environ_base["HTTP_USER_AGENT"] = "Firefox/" + "x" * 400
    page_login(browser)
    api = app.test_client()
    login_json(api, "owner@example.com", TEST_PASSWORD)
    rows = {row.kind: row for row in login_rows(app, user.id)}
    assert set(rows) == {"browser", "api"}
    assert (
        rows["browser"].user_agent.startswith("Firefox/") and len(rows["browser"].user_agent) == 256
    )
    assert rows["browser"].created_at == NOW and rows["browser"].last_used_at == NOW
    assert rows["browser"].remember is False and rows["browser"].expires_at > NOW

    frozen_clock(NOW + timedelta(minutes=5))
    assert browser.get("/api/auth/me").status_code == 200
    [browser_row] = [row for row in login_rows(app, user.id) if row.kind == "browser"]
    assert browser_row.last_used_at == NOW + timedelta(minutes=5)


def test_end_all_logins_keeps_the_one_asked_and_live_logins_lists_the_rest(app, user):
    clients = [app.test_client() for _ in range(3)]
    tokens = [
        login_json(c, "owner@example.com", TEST_PASSWORD).get_json()["access_token"]
        for c in clients
    ]
    with app.app_context():
        live = logins.live_logins(user.id)
        assert len(live) == 3
        keep = live[0].id
        assert logins.end_all_logins(user.id, keep=keep) == 2
        assert [login.id for login in logins.live_logins(user.id)] == [keep]
        assert logins.end_login(keep, user_id="usr_someone_else") is False
    answers = [app.test_client().get("/api/auth/me", headers=bearer(t)).status_code for t in tokens]
    assert sorted(answers) == [200, 401, 401]


def test_current_login_id_names_the_login_of_the_bearer_or_the_cookie(app, user):
    api = app.test_client()
    token = login_json(api, "owner@example.com", TEST_PASSWORD).get_json()["access_token"]
    with app.test_request_context(headers=bearer(token)):
        assert logins.current_login_id() == logins.bearer_claim().login_id
    with app.test_request_context(headers=bearer("forged")):
        assert logins.current_login_id() is None
