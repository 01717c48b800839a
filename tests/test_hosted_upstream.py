"""The ChatKit sessions client against a real HTTP server on loopback (tests/upstream_server.py).

No mocked HTTP: every case here is a real request over a socket, including the failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from codexweb.codex.upstream import (
    DEFAULT_RETRY_AFTER,
    ChatKitSessionsClient,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    retry_after_from,
)
from tests.servers import free_port
from tests.upstream_server import FakeChatKit

API_KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def upstream() -> Iterator[FakeChatKit]:
    with FakeChatKit(api_key=API_KEY, workflows={"wf_support"}) as server:
        yield server


@pytest.fixture
def client(upstream) -> Iterator[ChatKitSessionsClient]:
    client = ChatKitSessionsClient(api_base=upstream.url, api_key=API_KEY, timeout=5)
    yield client
    client.close()


def create(client: ChatKitSessionsClient, **overrides):
    arguments = {
        "workflow_id": "wf_support",
        "user": "cwu_abc",
        "state_variables": {"placement": "dashboard", "codex_session_id": "cxs_1"},
        "expires_after_seconds": 300,
        "max_requests_per_minute": 12,
    }
    arguments.update(overrides)
    return client.create_session(**arguments)


def test_create_sends_the_documented_request_and_reads_the_session(upstream, client):
    before = datetime.now(UTC).replace(microsecond=0)
    session = create(client)

    (request,) = upstream.calls("create")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["openai-beta"] == "chatkit_beta=v1"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "workflow": {
            "id": "wf_support",
            "state_variables": {"placement": "dashboard", "codex_session_id": "cxs_1"},
        },
        "user": "cwu_abc",
        "expires_after": {"anchor": "created_at", "seconds": 300},
        "rate_limits": {"max_requests_per_1_minute": 12},
    }
    (created,) = upstream.created
    assert session.id == created["id"] and session.id.startswith("cksess_")
    assert session.client_secret == created["client_secret"]
    assert session.status == "active"
    assert session.workflow_id == "wf_support"
    assert session.expires_at == datetime.fromtimestamp(created["expires_at"], UTC)
    assert before + timedelta(seconds=299) <= session.expires_at <= before + timedelta(seconds=302)


def test_a_base_url_ending_in_v1_is_accepted(upstream):
    client = ChatKitSessionsClient(api_base=upstream.url + "/v1/", api_key=API_KEY, timeout=5)
    try:
        assert create(client).id.startswith("cksess_")
    finally:
        client.close()


def test_the_pooled_client_reuses_its_connection(upstream, client):
    create(client)
    create(client)
    cancelled = client.cancel_session(upstream.created[0]["id"])
    assert cancelled == "cancelled"
    assert len({request.peer for request in upstream.requests}) == 1


def test_a_wrong_key_is_rejected_without_echoing_it(upstream):
    client = ChatKitSessionsClient(api_base=upstream.url, api_key="sk-wrong-key-123", timeout=5)
    try:
        with pytest.raises(UpstreamRejected) as caught:
            create(client)
    finally:
        client.close()
    assert caught.value.status == 401
    assert caught.value.error_code == "invalid_api_key"
    assert "sk-wrong-key-123" not in str(caught.value)
    assert upstream.created == []


def test_an_unknown_workflow_is_rejected_with_the_upstream_reason(client):
    with pytest.raises(UpstreamRejected) as caught:
        create(client, workflow_id="wf_missing")
    assert caught.value.status == 404
    assert caught.value.param == "workflow.id"
    assert "wf_missing" in caught.value.message
    assert caught.value.request_id.startswith("req_")


def test_an_upstream_message_that_quotes_our_key_is_scrubbed(upstream, client):
    upstream.fail_next(
        "create",
        "error",
        status=400,
        body={"error": {"message": f"bad key {API_KEY} here", "type": "invalid_request_error"}},
    )
    with pytest.raises(UpstreamRejected) as caught:
        create(client)
    assert API_KEY not in caught.value.message
    assert caught.value.message == "bad key [redacted] here"


def test_an_error_without_openai_error_json_still_says_what_happened(upstream, client):
    upstream.fail_next("create", "error", status=502, body=["not", "an", "error object"])
    with pytest.raises(UpstreamRejected) as caught:
        create(client)
    assert caught.value.status == 502
    assert caught.value.message == "HTTP 502 Bad Gateway"


def test_a_success_without_a_client_secret_is_a_rejection(upstream, client):
    upstream.fail_next("create", "error", status=200, body={"id": "cksess_1", "expires_at": 1})
    with pytest.raises(UpstreamRejected, match="no session id or client secret"):
        create(client)


def test_429_carries_its_retry_after(upstream, client):
    upstream.fail_next("create", "rate_limit", retry_after="17")
    with pytest.raises(UpstreamRateLimited) as caught:
        create(client)
    assert caught.value.retry_after == 17


def test_a_slow_upstream_times_out(upstream):
    upstream.fail_next("create", "slow")
    client = ChatKitSessionsClient(api_base=upstream.url, api_key=API_KEY, timeout=0.3)
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            create(client)
    finally:
        client.close()
    assert caught.value.reason == "timeout"


def test_a_reset_after_the_request_was_sent_is_not_retried(upstream, client):
    upstream.fail_next("create", "reset")
    with pytest.raises(UpstreamUnavailable) as caught:
        create(client)
    assert caught.value.reason == "connection"
    # The service saw the request once: repeating a create could open a second session.
    assert len(upstream.calls("create")) == 1


def test_a_refused_connection_is_unavailable():
    client = ChatKitSessionsClient(
        api_base=f"http://127.0.0.1:{free_port()}", api_key=API_KEY, timeout=2
    )
    try:
        with pytest.raises(UpstreamUnavailable) as caught:
            create(client)
    finally:
        client.close()
    assert caught.value.reason == "connection"


def test_cancel_marks_the_session_cancelled_upstream(upstream, client):
    session = create(client)
    assert client.cancel_session(session.id) == "cancelled"
    assert upstream.sessions[session.id]["status"] == "cancelled"
    (request,) = upstream.calls("cancel")
    assert request.path == f"/v1/chatkit/sessions/{session.id}/cancel"
    assert request.headers["openai-beta"] == "chatkit_beta=v1"


def test_cancelling_a_session_upstream_no_longer_knows_counts_as_done(client):
    assert client.cancel_session("cksess_gone") == "cancelled"


def test_cancel_reports_an_already_expired_session_as_expired(upstream, client):
    session = create(client)
    upstream.expire(session.id)
    assert client.cancel_session(session.id) == "expired"


def test_a_failed_cancel_raises(upstream, client):
    session = create(client)
    upstream.fail_next("cancel", "error", status=500, body={"error": {"message": "boom"}})
    with pytest.raises(UpstreamRejected):
        client.cancel_session(session.id)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("12", 12),
        ("0.2", 1),
        ("0", 1),
        (None, DEFAULT_RETRY_AFTER),
        ("soon", DEFAULT_RETRY_AFTER),
    ],
)
def test_retry_after_header_values(header, expected):
    assert retry_after_from(header) == expected


def test_retry_after_as_an_http_date():
    moment = datetime.now(UTC) + timedelta(seconds=90)
    assert 85 <= retry_after_from(format_datetime(moment, usegmt=True)) <= 91
