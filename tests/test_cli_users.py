"""`flask --app codexweb users create EMAIL --password PW [--verified]`."""

from __future__ import annotations

from tests.auth_support import login_json, snapshot, user_row


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
