"""The X-RateLimit-* headers (RATELIMIT_HEADERS_ENABLED), in memory and in Redis.

They describe the limit a request counted against, after its own hit: its size, what is left,
when it resets (epoch seconds) and, in `X-RateLimit-Retry-After` (renamed so it never
overwrites the 429's own `Retry-After`), the seconds until then. A forgiven request (422 on a
`deduct_when` limit) leaves the count where it was; exempt endpoints carry none.
"""

from __future__ import annotations

import time

import pytest

from tests.auth_support import STRONG_PASSWORD

CHEAP = "/api/auth/me"  # default limit; 401 to anonymous callers without touching the database
HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture(params=["memory", "redis"])
def limited_app(request, app_factory):
    overrides = {
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_DEFAULT": "3/minute",
        "RATELIMIT_REGISTER": "2/hour",
    }
    if request.param == "redis":
        namespace = request.getfixturevalue("redis_namespace")
        overrides["RATELIMIT_STORAGE_URI"] = namespace.storage_uri
        overrides["RATELIMIT_KEY_PREFIX"] = namespace.key_prefix
    return app_factory(**overrides)


def limit_headers(response) -> tuple[int, int, int, int]:
    limit, remaining, reset = (int(response.headers[name]) for name in HEADERS)
    return limit, remaining, reset, int(response.headers["X-RateLimit-Retry-After"])


def test_each_hit_counts_down_to_the_refusal(limited_app):
    client = limited_app.test_client()
    started = time.time()
    responses = [client.get(CHEAP) for _ in range(4)]
    assert [response.status_code for response in responses] == [401, 401, 401, 429]
    seen = [limit_headers(response) for response in responses]
    assert [(limit, remaining) for limit, remaining, _, _ in seen] == [
        (3, 2),
        (3, 1),
        (3, 0),
        (3, 0),
    ]
    resets = {reset for _, _, reset, _ in seen}
    assert len(resets) == 1, "one fixed window: one reset time"
    (reset,) = resets
    assert started < reset <= started + 62
    for _, _, _, retry_after in seen:
        assert 0 <= retry_after <= 60
    refused = responses[-1]
    assert refused.headers["Retry-After"] == str(refused.get_json()["retry_after"])


def test_a_forgiven_request_leaves_the_count_alone(limited_app):
    client = limited_app.test_client()
    typo = client.post("/api/auth/register", json={"email": "not an address"})
    assert typo.status_code == 422
    assert limit_headers(typo)[:2] == (2, 2)
    body = {"email": "new@example.com", "password": STRONG_PASSWORD}
    created = client.post("/api/auth/register", json=body)
    assert created.status_code == 201
    limit, remaining, reset, retry_after = limit_headers(created)
    assert (limit, remaining) == (2, 1)
    assert time.time() + 3500 < reset <= time.time() + 3602
    assert 3500 < retry_after <= 3600


def test_exempt_endpoints_carry_no_limit_headers(limited_app):
    response = limited_app.test_client().get("/healthz")
    assert response.status_code == 200
    for name in (*HEADERS, "X-RateLimit-Retry-After"):
        assert name not in response.headers
