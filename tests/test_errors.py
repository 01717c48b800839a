"""How errors reach clients (CONTRACT.md §5): problem+json, HTML pages, HTMX headers."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import OperationalError

from codexweb.extensions import db
from codexweb.models import User
from tests.auth_support import snapshot


@pytest.fixture
def failing_app(app_factory):
    """An app with routes that fail the ways production code can."""
    app = app_factory()

    @app.post("/api/test/boom")
    def boom():
        db.session.add(User(email="half@example.com", password_hash="x"))
        db.session.flush()
        raise RuntimeError("secret internals: SELECT * FROM users")

    @app.get("/api/test/db-down")
    def db_down():
        raise OperationalError("SELECT 1", {}, Exception("connection refused to 10.0.0.5"))

    @app.get("/test/boom-page")
    def boom_page():
        raise RuntimeError("secret internals")

    return app


def test_unknown_api_path_is_a_404_problem(client):
    response = client.get("/api/does-not-exist")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json() == {
        "type": "https://codexweb.dev/problems/not_found",
        "title": "Not found",
        "status": 404,
        "detail": "Not found.",
        "code": "not_found",
    }


def test_unknown_page_is_an_html_404(client):
    response = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Not found" in response.get_data(as_text=True)


def test_wrong_method_is_a_405_problem_with_allow(client):
    response = client.get("/api/auth/login")
    assert response.status_code == 405
    assert response.get_json()["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_a_huge_form_post_is_413_before_anything_happens(client, app):
    before = snapshot(app)
    response = client.post(
        "/register",
        data={"email": "big@example.com", "password": "x" * (10 * 1024 * 1024)},
    )
    assert response.status_code == 413
    assert snapshot(app) == before


def test_an_unexpected_error_is_a_500_problem_with_the_request_id_and_no_trace(failing_app):
    client = failing_app.test_client()
    response = client.post("/api/test/boom", json={}, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "req-42"
    text = response.get_data(as_text=True)
    assert "secret internals" not in text and "SELECT" not in text and "Traceback" not in text
    # The half-written row was rolled back.
    with failing_app.app_context():
        assert db.session.execute(db.select(User)).first() is None


def test_an_unexpected_error_on_a_page_is_an_html_page(failing_app):
    response = failing_app.test_client().get("/test/boom-page", headers={"Accept": "text/html"})
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    assert "secret internals" not in response.get_data(as_text=True)


def test_a_database_outage_is_503_unavailable_without_driver_text(failing_app):
    response = failing_app.test_client().get("/api/test/db-down")
    assert response.status_code == 503
    assert response.get_json()["code"] == "unavailable"
    assert "10.0.0.5" not in response.get_data(as_text=True)


def test_missing_login_on_a_page_redirects_to_login_with_next(client):
    response = client.get("/verify-email?x=1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/verify-email?x%3D1"


def test_missing_login_over_htmx_is_an_hx_redirect(client):
    response = client.get(
        "/verify-email",
        headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/verify-email"},
    )
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/login?next=/verify-email"


def test_a_csrf_failure_on_the_api_is_a_403_problem(client):
    client.get("/login")  # a browser session cookie
    response = client.post("/api/auth/login", json={"email": "a@example.com", "password": "x"})
    assert response.status_code == 403
    assert response.get_json()["code"] == "csrf_failed"


def test_an_htmx_problem_becomes_a_toast(client):
    client.get("/login")
    response = client.post("/api/auth/login", json={}, headers={"HX-Request": "true"})
    assert response.status_code == 403
    toast = json.loads(response.headers["HX-Trigger"])["codexweb:toast"]
    assert toast["level"] == "error"
    assert "CSRF" in toast["message"]


@pytest.mark.parametrize("offered", ["bad id with spaces", "x" * 200, "<script>"])
def test_an_insane_request_id_is_replaced(client, offered):
    response = client.get("/healthz", headers={"X-Request-ID": offered})
    assert response.headers["X-Request-ID"] != offered
    assert len(response.headers["X-Request-ID"]) == 32
