"""flask-limiter's before-request pass, skipped where it cannot find a limit (CodexLimiter)."""

from __future__ import annotations

from flask import request
from flask_limiter.util import get_qualified_name

from codexweb.auth import credentials
from codexweb.extensions import limiter
from tests.conftest import access_token_for

CHEAP = "/api/auth/me"


def test_the_skipped_before_request_pass_would_have_found_no_limit(app_factory):
    # ratelimit.CodexLimiter skips flask-limiter's before-request pass where it finds nothing:
    # check that claim against flask-limiter's own resolution, for every endpoint of the app.
    app = app_factory(RATELIMIT_ENABLED=True)
    manager = limiter.limit_manager
    skipped = []
    for rule in app.url_map.iter_rules():
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        with app.test_request_context(rule.rule, method=method) as context:
            context.request.url_rule, context.request.view_args = rule, {}
            if not limiter._middleware_finds_nothing():
                continue
            skipped.append(rule.endpoint)
            name = get_qualified_name(app.view_functions[rule.endpoint])
            marked = name in limiter._marked_for_limiting
            resolved = manager.resolve_limits(
                app, rule.endpoint, request.blueprint, name, True, marked
            )
            assert resolved == ([], []), rule.endpoint
    for endpoint in ("health.healthz", "codex_api.chatkit_token", "auth_api.login"):
        assert endpoint in skipped
    assert "codex_api.current_session" not in skipped  # the default limit: counted there


def test_default_and_decorated_limits_still_count(app_factory):
    app = app_factory(
        RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2/minute", RATELIMIT_LOGIN="1/minute"
    )
    client = app.test_client()
    assert [client.get(CHEAP).status_code for _ in range(3)] == [401, 401, 429]
    wrong = {"email": "nobody@example.com", "password": "not the password"}
    statuses = [client.post("/api/auth/login", json=wrong).status_code for _ in range(2)]
    assert statuses == [401, 429]


def test_a_limited_bearer_request_decodes_its_token_once(app_factory, make_user, monkeypatch):
    # The limiter's key and the guard both need the Bearer claim (auth/credentials.py).
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="100/minute")
    with app.app_context():
        token = access_token_for(make_user().id)
    decoded = []
    real = credentials.read_access_token
    monkeypatch.setattr(
        credentials, "read_access_token", lambda raw: decoded.append(raw) or real(raw)
    )
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(CHEAP, headers=headers).status_code == 200
    assert decoded == [token]


def test_the_default_limit_counts_each_caller_in_a_shared_app_context(app_factory, make_user):
    # A script or shell that pushes one app context around several requests shares one `g`:
    # the second caller must be counted as itself, not as the claim the first one left there.
    app = app_factory(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2/minute")
    client = app.test_client()
    with app.app_context():
        first = {"Authorization": f"Bearer {access_token_for(make_user().id)}"}
        second = {"Authorization": f"Bearer {access_token_for(make_user().id)}"}
        assert [client.get(CHEAP, headers=first).status_code for _ in range(3)] == [200, 200, 429]
        assert client.get(CHEAP, headers=second).status_code == 200
