"""Faults: the database out of reach gives 503s that say nothing about the driver, and the
app recovers by itself when the database is back."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from codexweb.extensions import db
from tests.conftest import access_token_for
from tests.servers import serve_gunicorn, spread_over_workers
from tests.tcp_proxy import tcp_proxy

# What a driver error says; none of it may reach a client.
DRIVER_WORDS = (
    "psycopg",
    "sqlalchemy",
    "connection refused",
    "server closed",
    "operationalerror",
    "select",
    "5432",
    "traceback",
)


def assert_unavailable_problem(status: int, content_type: str, body: bytes) -> None:
    assert status == 503
    assert content_type.startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["code"] == "unavailable"
    assert problem["status"] == 503
    text = body.decode().lower()
    for word in DRIVER_WORDS:
        assert word not in text, f"{word!r} leaked to the client"


class _DriverError(Exception):
    """Stands in for a DBAPI exception, with the kind of text a driver puts in it."""


def driver_error(kind, **kwargs):
    orig = _DriverError("connection to server at 127.0.0.1:5432 failed: Connection refused")
    return kind("SELECT users.id FROM users", {}, orig, **kwargs)


@pytest.mark.parametrize(
    "error",
    [
        driver_error(OperationalError),
        driver_error(InterfaceError),
        driver_error(DBAPIError, connection_invalidated=True),
        PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out"),
    ],
    ids=["operational", "interface", "invalidated", "pool-timeout"],
)
def test_disconnect_errors_are_503_unavailable(app, error, events):
    @app.get("/api/_fault")
    def _fault():
        raise error

    response = app.test_client().get("/api/_fault")
    assert_unavailable_problem(response.status_code, response.content_type, response.data)
    assert len(events.named("db.unavailable")) == 1


def test_a_value_the_database_refuses_is_a_422_that_leaks_nothing(app, events):
    @app.get("/api/_fault")
    def _fault():
        raise driver_error(DataError)

    response = app.test_client().get("/api/_fault")
    assert response.status_code == 422
    assert response.get_json()["code"] == "invalid_request"
    assert response.get_json()["errors"] == [
        {"field": "body", "message": "Contains a value that cannot be stored."}
    ]
    assert "select" not in response.get_data(as_text=True).lower()
    assert len(events.named("db.value_refused")) == 1


def test_a_constraint_error_is_a_500_that_leaks_nothing(app):
    @app.get("/api/_fault")
    def _fault():
        raise driver_error(IntegrityError)

    response = app.test_client().get("/api/_fault")
    assert response.status_code == 500
    problem = response.get_json()
    assert problem["code"] == "internal_error"
    assert problem["request_id"] == response.headers["X-Request-ID"]
    assert "select" not in response.get_data(as_text=True).lower()


# A real outage -------------------------------------------------------------------------


def through_proxy(database_url: str, proxy) -> str:
    return make_url(database_url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


def pg_host_port(database_url: str) -> tuple[str, int]:
    url = make_url(database_url)
    return url.host or "127.0.0.1", url.port or 5432


def test_database_outage_gives_503_and_the_app_recovers_by_itself(
    app_factory, postgres_database, make_user_on
):
    with tcp_proxy(*pg_host_port(postgres_database)) as proxy:
        app = app_factory(DATABASE_URL=through_proxy(postgres_database, proxy))
        user_id = make_user_on(app)
        client = app.test_client()
        with app.app_context():
            bearer = {"Authorization": f"Bearer {access_token_for(user_id)}"}

        assert client.get("/healthz").status_code == 200
        assert client.get("/api/auth/me", headers=bearer).status_code == 200

        proxy.stop()  # pooled connections are cut, new ones refused
        for _ in range(3):
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.get_json() == {"status": "unavailable"}
            me = client.get("/api/auth/me", headers=bearer)
            assert_unavailable_problem(me.status_code, me.content_type, me.data)

        proxy.start()  # the database is back: no restart, no manual step
        assert client.get("/healthz").status_code == 200
        me = client.get("/api/auth/me", headers=bearer)
        assert me.status_code == 200
        assert me.get_json()["user"]["id"] == user_id


@pytest.fixture
def make_user_on():
    def make(app) -> str:
        from codexweb.auth.accounts import create_user

        with app.app_context():
            user = create_user("outage@example.com", "correct horse battery staple", verified=True)
            db.session.commit()
            return user.id

    return make


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


@pytest.mark.slow
def test_gunicorn_workers_answer_503_during_an_outage_and_recover(
    tmp_path, app_factory, postgres_database, make_user_on
):
    workers = 2
    with tcp_proxy(*pg_host_port(postgres_database)) as proxy:
        env = {
            "CODEXWEB_DATABASE_URL": through_proxy(postgres_database, proxy),
            # Sync workers: `spread_over_workers` can put a request in each worker only when a
            # worker takes one connection at a time. A gthread worker may take both of a
            # round's, and the other, never having met the outage, then answers the first
            # request after it with its dead connection (503), as designed (database.py).
            "GUNICORN_WORKER_CLASS": "sync",
        }
        with serve_gunicorn(tmp_path, workers=workers, env=env) as server:
            assert '"Using worker: sync"' in server.log()
            # A user and an access token the server accepts (same database, same secret).
            seeding = app_factory(
                DATABASE_URL=postgres_database, SECRET_KEY=server.env["CODEXWEB_SECRET_KEY"]
            )
            user_id = make_user_on(seeding)
            with seeding.app_context():
                bearer = {"Authorization": f"Bearer {access_token_for(user_id)}"}
            # Every worker holds a pooled connection before the outage.
            before = spread_over_workers(server.url, "/healthz", workers=workers, rounds=2)
            assert [r.status for r in before] == [200] * 4
            assert get(server.url + "/api/auth/me", bearer)[0] == 200

            proxy.stop()
            during = spread_over_workers(server.url, "/healthz", workers=workers, rounds=2)
            assert [r.status for r in during] == [503] * 4
            for _ in range(workers):
                assert_unavailable_problem(*get(server.url + "/api/auth/me", bearer))

            proxy.start()
            after = spread_over_workers(server.url, "/healthz", workers=workers, rounds=2)
            assert [r.status for r in after] == [200] * 4
            assert get(server.url + "/api/auth/me", bearer)[0] == 200
            log = server.log()
    assert "Traceback" not in log
