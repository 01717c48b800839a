"""The verified gate and who a request belongs to (Bearer first, then the login session)."""

from __future__ import annotations

import pytest

from codexweb.auth.guards import current_request_user, require_verified
from tests.auth_support import (
    form_csrf_token,
    link_token,
    login_json,
)
from tests.conftest import TEST_PASSWORD, DrainingOutbox


@pytest.fixture
def gated_app(app_factory):
    app = app_factory()

    @app.get("/api/test/gated")
    @require_verified
    def gated():
        return {"user": current_request_user().email}

    return app


def browser_login(client, email: str) -> None:
    html = client.get("/login").get_data(as_text=True)
    response = client.post(
        "/login",
        data={"email": email, "password": TEST_PASSWORD, "csrf_token": form_csrf_token(html)},
    )
    assert response.status_code == 302


def test_no_credentials_is_401_with_www_authenticate(gated_app):
    response = gated_app.test_client().get("/api/test/gated")
    assert response.status_code == 401
    assert response.get_json()["code"] == "authentication_required"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_an_unverified_bearer_is_403_email_not_verified(gated_app, make_user):
    make_user("pending@example.com", verified=False)
    client = gated_app.test_client()
    token = login_json(client, "pending@example.com", TEST_PASSWORD).get_json()["access_token"]
    response = client.get("/api/test/gated", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.get_json()["code"] == "email_not_verified"


def test_verifying_opens_the_gate_for_the_same_access_token(gated_app):
    outbox = gated_app.extensions["mailman"].outbox = DrainingOutbox(gated_app)
    client = gated_app.test_client()
    client.post("/api/auth/register", json={"email": "new@example.com", "password": TEST_PASSWORD})
    token = login_json(client, "new@example.com", TEST_PASSWORD).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/test/gated", headers=headers).status_code == 403
    gated_app.test_client().post("/api/auth/verify-email", json={"token": link_token(outbox[0])})
    assert client.get("/api/test/gated", headers=headers).get_json() == {"user": "new@example.com"}


def test_a_verified_login_session_passes(gated_app, make_user):
    make_user("owner@example.com")
    client = gated_app.test_client()
    browser_login(client, "owner@example.com")
    assert client.get("/api/test/gated").get_json() == {"user": "owner@example.com"}


def test_an_unverified_login_session_is_403(gated_app, make_user):
    make_user("pending@example.com", verified=False)
    client = gated_app.test_client()
    browser_login(client, "pending@example.com")
    response = client.get("/api/test/gated")
    assert response.status_code == 403
    assert response.get_json()["code"] == "email_not_verified"


def test_a_bad_bearer_is_401_even_with_a_valid_login_session(gated_app, make_user):
    make_user("owner@example.com")
    client = gated_app.test_client()
    browser_login(client, "owner@example.com")
    response = client.get("/api/test/gated", headers={"Authorization": "Bearer forged"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_the_bearer_wins_over_the_login_session(gated_app, make_user, auth_headers):
    make_user("owner@example.com")
    other = make_user("other@example.com")
    client = gated_app.test_client()
    browser_login(client, "owner@example.com")
    response = client.get("/api/test/gated", headers=auth_headers(other))
    assert response.get_json() == {"user": "other@example.com"}


def test_a_deleted_user_s_token_is_401(gated_app, make_user, auth_headers):
    from codexweb.extensions import db
    from codexweb.models import User

    gone = make_user("gone@example.com")
    headers = auth_headers(gone)
    with gated_app.app_context():
        db.session.delete(db.session.get(User, gone.id))
        db.session.commit()
    response = gated_app.test_client().get("/api/test/gated", headers=headers)
    assert response.status_code == 401
