"""The operators' commands: `flask --app codexweb users create|list|set-password|disable|
enable|delete` (CONTRACT.md §1)."""

from __future__ import annotations

import re

from codexweb.extensions import db
from codexweb.models import CodexSession, RefreshToken
from tests.auth_support import (
    STRONG_PASSWORD,
    link_token,
    login_json,
    refresh_cookie,
    refresh_rows,
    snapshot,
    submit_form,
    user_row,
)
from tests.conftest import TEST_PASSWORD
from tests.pages_support import open_session

NEW_PASSWORD = "an operator's new passphrase"
DISABLED = "This account is disabled. Contact your administrator."


def create(runner, *args: str):
    return runner.invoke(args=["users", "create", *args])


def test_creates_an_unverified_user_who_can_log_in(runner, app, client):
    result = create(runner, " Seed@Example.com ", "--password", "seeded passphrase")
    assert result.exit_code == 0, result.output
    user = user_row(app, "seed@example.com")
    assert f"created {user.id} seed@example.com verified=False" in result.output
    assert not user.email_verified
    body = login_json(client, "seed@example.com", "seeded passphrase").get_json()
    assert body["email_verified"] is False


def test_verified_flag(runner, app):
    result = create(runner, "ops@example.com", "--password", "seeded passphrase", "--verified")
    assert result.exit_code == 0, result.output
    assert "verified=True" in result.output
    assert user_row(app, "ops@example.com").email_verified


def test_a_duplicate_email_in_any_case_is_refused(runner, app, user):
    before = snapshot(app)
    result = create(runner, "OWNER@example.com", "--password", "another passphrase")
    assert result.exit_code == 1
    assert "owner@example.com is already registered" in result.output
    assert snapshot(app) == before


def test_a_short_password_is_refused(runner, app):
    result = create(runner, "short@example.com", "--password", "elevenchars")
    assert result.exit_code == 2
    assert "at least 12 characters" in result.output
    assert user_row(app, "short@example.com") is None


def test_the_password_is_required(runner, app):
    result = create(runner, "nopw@example.com")
    assert result.exit_code == 2
    assert "--password" in result.output
    assert user_row(app, "nopw@example.com") is None


def test_the_password_is_stored_hashed(runner, app):
    create(runner, "hash@example.com", "--password", "seeded passphrase")
    stored = user_row(app, "hash@example.com").password_hash
    assert stored.startswith("$argon2id$")
    assert "seeded passphrase" not in stored


def test_an_invalid_email_is_refused(runner, app):
    before = snapshot(app)
    result = create(runner, "not an email", "--password", "seeded passphrase")
    assert result.exit_code == 2
    assert "Enter a valid email address." in result.output
    assert snapshot(app) == before


def test_a_too_long_password_is_refused(runner, app):
    result = create(runner, "long@example.com", "--password", "x" * 257)
    assert result.exit_code == 2
    assert user_row(app, "long@example.com") is None


def test_create_can_send_the_verification_email(runner, app, outbox):
    result = create(
        runner, "linked@example.com", "--password", STRONG_PASSWORD, "--send-verification"
    )
    assert result.exit_code == 0, result.output
    assert "verification email sent to linked@example.com" in result.output
    [message] = outbox
    assert message.to == ["linked@example.com"]
    verified = app.test_client().post("/api/auth/verify-email", json={"token": link_token(message)})
    assert verified.get_json()["user"]["email_verified"] is True


def test_create_sends_nothing_unless_asked(runner, outbox):
    assert create(runner, "quiet@example.com", "--password", STRONG_PASSWORD).exit_code == 0
    assert outbox == []


def test_send_verification_and_verified_do_not_go_together(runner, app):
    result = create(
        runner,
        "both@example.com",
        "--password",
        STRONG_PASSWORD,
        "--verified",
        "--send-verification",
    )
    assert result.exit_code == 2
    assert "--send-verification is for unverified accounts" in result.output
    assert user_row(app, "both@example.com") is None


# users list -----------------------------------------------------------------------------


def test_list_shows_every_account_in_a_table(runner, app, client, make_user, frozen_clock):
    from datetime import UTC, datetime

    frozen_clock(datetime(2026, 11, 1, 9, 30, tzinfo=UTC))
    make_user("bob.long@example.com", verified=False)
    make_user("ada@example.com")
    frozen_clock(datetime(2026, 11, 2, 10, 15, tzinfo=UTC))
    assert login_json(client, "ada@example.com", TEST_PASSWORD).status_code == 200
    frozen_clock(datetime(2026, 11, 3, 8, 0, tzinfo=UTC))
    runner.invoke(args=["users", "disable", "bob.long@example.com"])
    result = runner.invoke(args=["users", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "EMAIL                 VERIFIED  CREATED (UTC)     LAST LOGIN (UTC)  DISABLED",
        "ada@example.com       yes       2026-11-01 09:30  2026-11-02 10:15  no",
        "bob.long@example.com  no        2026-11-01 09:30  -                 2026-11-03 08:00",
    ]


def test_list_with_no_accounts_prints_the_header(runner):
    result = runner.invoke(args=["users", "list"])
    assert result.exit_code == 0
    assert result.output.split() == [
        "EMAIL",
        "VERIFIED",
        "CREATED",
        "(UTC)",
        "LAST",
        "LOGIN",
        "(UTC)",
        "DISABLED",
    ]


# users set-password ---------------------------------------------------------------------


def test_set_password_prompts_twice_without_echo(runner, app, client, user):
    result = runner.invoke(
        args=["users", "set-password", "Owner@Example.com"],
        input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "New password: \nRepeat the new password: \n" in result.output
    assert NEW_PASSWORD not in result.output
    assert "password set for owner@example.com; their logins have ended" in result.output
    assert login_json(client, "owner@example.com", NEW_PASSWORD).status_code == 200
    assert login_json(client, "owner@example.com", TEST_PASSWORD).status_code == 401


def test_set_password_asks_again_when_the_two_differ(runner, client, user):
    result = runner.invoke(
        args=["users", "set-password", "owner@example.com"],
        input=f"{NEW_PASSWORD}\nsomething else entirely\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Error: The two entered values do not match." in result.output
    assert login_json(client, "owner@example.com", NEW_PASSWORD).status_code == 200


def test_set_password_from_stdin_for_scripts(runner, client, user):
    result = runner.invoke(
        args=["users", "set-password", "owner@example.com", "--password-stdin"],
        input=f"{NEW_PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "New password" not in result.output
    assert login_json(client, "owner@example.com", NEW_PASSWORD).status_code == 200


def test_set_password_is_never_an_argument(runner):
    result = runner.invoke(args=["users", "set-password", "owner@example.com", "--password", "x"])
    assert result.exit_code == 2
    assert "No such option '--password'" in result.output


def test_set_password_ends_every_login(runner, app, user):
    api, browser = app.test_client(), app.test_client()
    login_json(api, "owner@example.com", TEST_PASSWORD)
    submit_form(browser, "/login", {"email": "owner@example.com", "password": TEST_PASSWORD})
    runner.invoke(
        args=["users", "set-password", "owner@example.com", "--password-stdin"],
        input=NEW_PASSWORD,
    )
    assert all(row.revoked_at is not None for row in refresh_rows(app, user.id))
    assert api.post("/api/auth/refresh").status_code == 401
    assert browser.get("/verify-email").headers["Location"] == "/login?next=/verify-email"


def test_set_password_refuses_a_short_password(runner, app, user):
    before = snapshot(app)
    result = runner.invoke(
        args=["users", "set-password", "owner@example.com", "--password-stdin"],
        input="too short\n",
    )
    assert result.exit_code == 2
    assert "The password needs at least 12 characters (and at most 256)." in result.output
    assert snapshot(app) == before


def test_set_password_for_nobody(runner):
    result = runner.invoke(
        args=["users", "set-password", "ghost@example.com", "--password-stdin"],
        input=NEW_PASSWORD,
    )
    assert result.exit_code == 1
    assert "Error: No account uses ghost@example.com." in result.output


# users disable / enable -----------------------------------------------------------------


def test_a_disabled_user_is_refused_by_the_api(runner, app, client, user):
    assert runner.invoke(args=["users", "disable", "owner@example.com"]).output == (
        "disabled owner@example.com\n"
    )
    response = login_json(client, "owner@example.com", TEST_PASSWORD)
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert response.get_json() == {
        "type": "https://codexweb.dev/problems/account_disabled",
        "title": "Account disabled",
        "status": 403,
        "detail": DISABLED,
        "code": "account_disabled",
    }
    assert refresh_cookie(client) is None


def test_a_disabled_account_tells_only_someone_with_its_password(runner, client, user):
    runner.invoke(args=["users", "disable", "owner@example.com"])
    response = login_json(client, "owner@example.com", "not the password at all")
    assert response.status_code == 401
    assert response.get_json()["code"] == "invalid_credentials"


def test_a_disabled_user_is_refused_by_the_login_page(runner, client, user):
    runner.invoke(args=["users", "disable", "owner@example.com"])
    response = submit_form(
        client, "/login", {"email": "owner@example.com", "password": TEST_PASSWORD}
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'<p class="form-error" role="alert">{DISABLED}</p>' in page
    assert 'value="owner@example.com"' in page
    with client.session_transaction() as session:
        assert "_user_id" not in session


def test_disabling_ends_the_current_logins(runner, app, user, auth_headers):
    api, browser = app.test_client(), app.test_client()
    login_json(api, "owner@example.com", TEST_PASSWORD)
    submit_form(browser, "/login", {"email": "owner@example.com", "password": TEST_PASSWORD})
    bearer = auth_headers(user)
    assert api.get("/api/auth/me", headers=bearer).status_code == 200
    runner.invoke(args=["users", "disable", "owner@example.com"])
    assert all(row.revoked_at is not None for row in refresh_rows(app, user.id))
    assert api.post("/api/auth/refresh").status_code == 401
    assert api.get("/api/auth/me", headers=bearer).status_code == 401
    assert browser.get("/api/auth/me").status_code == 401


def test_enable_lets_the_user_in_again(runner, client, user):
    runner.invoke(args=["users", "disable", "owner@example.com"])
    result = runner.invoke(args=["users", "enable", "owner@example.com"])
    assert result.exit_code == 0
    assert result.output == "enabled owner@example.com\n"
    assert login_json(client, "owner@example.com", TEST_PASSWORD).status_code == 200


def test_disable_and_enable_name_an_unknown_address(runner):
    for command in ("disable", "enable", "delete"):
        result = runner.invoke(
            args=[
                "users",
                command,
                "ghost@example.com",
                *(["--yes"] if command == "delete" else []),
            ]
        )
        assert result.exit_code == 1
        assert "Error: No account uses ghost@example.com." in result.output


# users delete ---------------------------------------------------------------------------


def _rows(app, model, user_id):
    with app.app_context():
        return db.session.execute(db.select(model).where(model.user_id == user_id)).scalars().all()


def test_delete_asks_first_and_a_no_keeps_the_account(runner, app, user):
    result = runner.invoke(args=["users", "delete", "owner@example.com"], input="n\n")
    assert result.exit_code == 1
    assert "Delete owner@example.com with all their sessions and logins?" in result.output
    assert "Aborted!" in result.output
    assert user_row(app, "owner@example.com") is not None


def test_delete_removes_the_account_its_sessions_and_logins(runner, app, client, user):
    login_json(client, "owner@example.com", TEST_PASSWORD)
    open_session(app, user)
    result = runner.invoke(args=["users", "delete", "owner@example.com"], input="y\n")
    assert result.exit_code == 0, result.output
    assert re.search(r"deleted owner@example.com\n$", result.output)
    assert user_row(app, "owner@example.com") is None
    assert _rows(app, CodexSession, user.id) == []
    assert _rows(app, RefreshToken, user.id) == []
    assert client.post("/api/auth/refresh").status_code == 401


def test_delete_with_yes_asks_nothing_and_the_address_can_register_again(runner, client, user):
    result = runner.invoke(args=["users", "delete", "owner@example.com", "--yes"])
    assert result.exit_code == 0
    assert result.output == "deleted owner@example.com\n"
    again = {"email": "owner@example.com", "password": STRONG_PASSWORD}
    assert client.post("/api/auth/register", json=again).status_code == 201
