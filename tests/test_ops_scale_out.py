"""Outgrowing one machine (issue 15): two gunicorn "hosts", each with its own instance folder,
sharing one PostgreSQL database and one Redis, behave as one deployment; `/readyz` names the
dependency that is down."""

from __future__ import annotations

import subprocess
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from tests.codex_support import verify_with_jwks
from tests.servers import REPO, VENV_BIN, serve_gunicorn
from tests.tcp_proxy import tcp_proxy
from tests.test_codex_race import call, verified_user_token

pytestmark = [pytest.mark.slow, pytest.mark.services]


def shared_env(database_url: str, redis_namespace, **extra: str) -> dict[str, str]:
    return {
        "CODEXWEB_DATABASE_URL": database_url,
        "CODEXWEB_RATELIMIT_STORAGE_URI": redis_namespace.storage_uri,
        "CODEXWEB_RATELIMIT_KEY_PREFIX": redis_namespace.key_prefix,
        **extra,
    }


def flask_cli(server, *args: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "codexweb", *args],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def mint(server, token: str, session_id: str) -> tuple[int, dict]:
    return call(f"{server.url}/api/codex/chatkit/token?session_id={session_id}", token=token)


def jwks(server) -> dict:
    status, body = call(server.url + "/.well-known/jwks.json")
    assert status == 200
    return body


def test_two_hosts_sign_publish_rotate_and_limit_as_one(
    tmp_path, postgres_database, redis_namespace
):
    env = shared_env(
        postgres_database,
        redis_namespace,
        CODEXWEB_CHATKIT_KEYS_CACHE_SECONDS="3",
        CODEXWEB_RATELIMIT_TOKEN="6/minute",
    )
    with (
        serve_gunicorn(tmp_path / "host-a", workers=1, env=env) as host_a,
        serve_gunicorn(tmp_path / "host-b", workers=1, env=env) as host_b,
    ):
        assert host_a.instance_path != host_b.instance_path
        token = verified_user_token(host_a, "ops@example.com")
        status, session = call(
            host_a.url + "/api/codex/sessions",
            "POST",
            {"placement": "dashboard", "agent_id": "agent_123"},
            token=token,
        )
        assert status == 201, session

        # A token minted on either host verifies with either host's JWKS.
        minted = {
            name: mint(host, token, session["session_id"])
            for name, host in (("a", host_a), ("b", host_b))
        }
        assert all(status == 200 for status, _ in minted.values()), minted
        for _, body in minted.values():
            for host in (host_a, host_b):
                verify_with_jwks(body["token"], jwks(host), sid=session["session_id"])
        assert jwks(host_a) == jwks(host_b)
        old_kid = jwks(host_a)["keys"][0]["kid"]

        # `keys rotate` on host A: host B signs with and publishes the new key within a minute.
        new_kid = flask_cli(host_a, "keys", "rotate").split()[-1]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            published = {key["kid"] for key in jwks(host_b)["keys"]}
            if new_kid in published:
                break
            time.sleep(0.5)
        assert published == {old_kid, new_kid}
        status, body = mint(host_b, token, session["session_id"])
        assert status == 200
        decoded = verify_with_jwks(body["token"], jwks(host_a), sid=session["session_id"])
        assert decoded.header["kid"] == new_kid

        # Limits are counted once across both hosts: 6/minute, three mints so far.
        statuses = [
            mint(host, token, session["session_id"])[0]
            for host in (host_a, host_b, host_a, host_b, host_a)
        ]
        assert statuses == [200, 200, 200, 429, 429]


def test_readyz_names_each_dependency_that_is_down(tmp_path, postgres_database, redis_namespace):
    """Each dependency behind a TCP proxy the test cuts: a real outage (refused connections,
    pooled ones dying), without touching the PostgreSQL and Redis other tests share."""
    database = make_url(postgres_database)
    redis_parts = urlsplit(redis_namespace.storage_uri)
    with (
        tcp_proxy(database.host, database.port or 5432) as pg_proxy,
        tcp_proxy(redis_parts.hostname, redis_parts.port or 6379) as redis_proxy,
    ):
        proxied_database = database.set(host="127.0.0.1", port=pg_proxy.port)
        proxied_redis = f"redis://127.0.0.1:{redis_proxy.port}{redis_parts.path}"
        env = {
            "CODEXWEB_DATABASE_URL": proxied_database.render_as_string(hide_password=False),
            "CODEXWEB_RATELIMIT_STORAGE_URI": proxied_redis,
            "CODEXWEB_RATELIMIT_KEY_PREFIX": redis_namespace.key_prefix,
        }
        with serve_gunicorn(tmp_path, workers=1, env=env) as server:
            ready = server.url + "/readyz"
            all_ok = {"database": "ok", "ratelimit_storage": "ok", "signing_keys": "ok"}
            assert call(ready) == (200, {"status": "ok", "checks": all_ok, "failed": []})

            redis_proxy.stop()
            status, body = call(ready)
            assert status == 503
            assert body["failed"] == ["ratelimit_storage"]
            assert body["checks"] == {**all_ok, "ratelimit_storage": "failed"}
            assert call(server.url + "/healthz")[0] == 200  # liveness is not readiness
            redis_proxy.start()
            assert call(ready)[0] == 200

            pg_proxy.stop()
            status, body = call(ready)
            assert status == 503
            # The keys live in the database: they are not ready without it either.
            assert body["failed"] == ["database", "signing_keys"]
            assert body["checks"]["ratelimit_storage"] == "ok"
            pg_proxy.start()
            assert call(ready)[0] == 200
            assert "Traceback" not in server.log()
