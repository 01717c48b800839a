"""One-time tokens are used once, even when presented several times at the same instant
(issue 12, finding 1): four simultaneous resets with one link, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from codexweb.auth.once import consume_once, purge_used_tokens
from codexweb.auth.tokens import TokenError
from codexweb.clock import utcnow
from codexweb.extensions import db
from tests.auth_support import link_token
from tests.conftest import deliver_mail

SIMULTANEOUS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def racing_app(request, app_factory):
    if request.param == "sqlite":
        return app_factory()
    return app_factory(DATABASE_URL=request.getfixturevalue("postgres_database"))


def simultaneously(count: int, action) -> list:
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = action(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_reset_link_used_four_times_at_once_works_exactly_once(racing_app):
    app = racing_app
    from codexweb.auth.accounts import create_user

    with app.app_context():
        create_user("owner@example.com", "correct horse battery staple", verified=True)
        db.session.commit()
    outbox = app.extensions["mailman"].outbox = []
    app.test_client().post("/api/auth/password/forgot", json={"email": "owner@example.com"})
    deliver_mail(app)
    token = link_token(outbox[0], "reset-password")

    def reset(index: int) -> tuple[int, str]:
        password = f"new passphrase number {index}"
        response = app.test_client().post(
            "/api/auth/password/reset", json={"token": token, "password": password}
        )
        return response.status_code, password

    results = simultaneously(SIMULTANEOUS, reset)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [400] * (SIMULTANEOUS - 1)
    [winner] = [password for status, password in results if status == 200]
    logins = [
        app.test_client()
        .post("/api/auth/login", json={"email": "owner@example.com", "password": p})
        .status_code
        for _, p in results
    ]
    assert logins.count(200) == 1
    assert results[logins.index(200)][1] == winner


def test_consume_once_refuses_the_second_use_and_purge_forgets_expired_ones(app):
    with app.app_context():
        consume_once("email_change", "tok", expires_at=utcnow() + timedelta(hours=1))
        db.session.commit()
        with pytest.raises(TokenError) as error:
            consume_once("email_change", "tok", expires_at=utcnow() + timedelta(hours=1))
        assert error.value.code == "token_invalid"
        # Another purpose is another token.
        consume_once("password_reset", "tok", expires_at=utcnow() - timedelta(seconds=1))
        db.session.commit()
        assert purge_used_tokens() == 1
