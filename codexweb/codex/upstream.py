"""The HTTP client for OpenAI's ChatKit sessions API (create and cancel; there is nothing else).

`ChatKitSessionsClient` speaks to `{CHATKIT_API_BASE}/v1/chatkit/sessions` over one pooled
`httpx.Client` per process and turns every way a call can go wrong into one of three
exceptions, which the hosted provider maps to problems:

- `UpstreamRejected`: the service answered with an error (bad key, unknown workflow, bad
  request, its own 5xx) or with something that is not a ChatKit session;
- `UpstreamRateLimited`: HTTP 429, with the seconds it asked us to wait;
- `UpstreamUnavailable`: no answer in time, or the connection failed.

Creating a session is not idempotent, so it is retried only when the connection never reached
the server (httpx's transport `retries` covers exactly connect errors and connect timeouts);
a request that was sent and then lost is never repeated, or a user could end up with two
upstream sessions and two bills.

This module knows HTTP and the wire format only: no Flask request, no database.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from ..concurrency import waiting_on_network

SESSIONS_PATH = "/v1/chatkit/sessions"
BETA_HEADER = {"OpenAI-Beta": "chatkit_beta=v1"}
# Upstream error messages are shown to operators (and in a 502 detail): keep them short.
MAX_MESSAGE_LENGTH = 300
# When a 429 carries no usable Retry-After, ask the client to wait this long.
DEFAULT_RETRY_AFTER = 5
# A cancel is best effort (a failure is retried by the purge) and runs while a Codex session
# is being closed: it never waits longer than this, whatever the configured timeout.
CANCEL_TIMEOUT = 3.0


class UpstreamError(Exception):
    """Base class: the ChatKit sessions API could not do what we asked."""


class UpstreamRejected(UpstreamError):
    """The service answered with an error status, or with a body we cannot use."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.error_type = error_type
        self.error_code = error_code
        self.param = param
        self.request_id = request_id


class UpstreamRateLimited(UpstreamError):
    def __init__(self, retry_after: int, message: str, request_id: str | None = None) -> None:
        super().__init__(f"HTTP 429 (retry after {retry_after} s): {message}")
        self.retry_after = retry_after
        self.message = message
        self.request_id = request_id


class UpstreamUnavailable(UpstreamError):
    """No usable answer: `reason` is "timeout" or "connection"."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason = reason
        self.description = description


@dataclass(frozen=True)
class UpstreamSession:
    """The parts of a `chatkit.session` object that codexweb uses."""

    id: str
    client_secret: str
    expires_at: datetime
    status: str
    user: str
    workflow_id: str


class ChatKitSessionsClient:
    """Create and cancel ChatKit sessions. Thread-safe; share one per process."""

    def __init__(
        self,
        *,
        api_base: str,
        api_key: str,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Accept the OpenAI SDK's habit of a base URL ending in /v1.
        self.api_base = api_base.rstrip("/").removesuffix("/v1")
        self._api_key = api_key
        self._cancel_timeout = httpx.Timeout(min(timeout, CANCEL_TIMEOUT))
        self._http = httpx.Client(
            base_url=self.api_base,
            # Connect gets half the budget: a failed connect is retried once (below), and the
            # whole call should still give up after about `timeout` seconds.
            timeout=httpx.Timeout(timeout, connect=timeout / 2),
            transport=transport or httpx.HTTPTransport(retries=1),
            headers={"User-Agent": "codexweb"},
        )

    def create_session(
        self,
        *,
        workflow_id: str,
        user: str,
        state_variables: dict[str, str | int | float | bool],
        expires_after_seconds: int,
        max_requests_per_minute: int,
    ) -> UpstreamSession:
        """`POST /v1/chatkit/sessions`: a new session and its client secret."""
        body = {
            "workflow": {"id": workflow_id, "state_variables": state_variables},
            "user": user,
            "expires_after": {"anchor": "created_at", "seconds": expires_after_seconds},
            "rate_limits": {"max_requests_per_1_minute": max_requests_per_minute},
        }
        return _parse_session(self._post(SESSIONS_PATH, body))

    def cancel_session(self, session_id: str) -> str:
        """`POST /v1/chatkit/sessions/{id}/cancel`; returns the session's status after it.

        Cancelling is idempotent upstream, so a session the service no longer knows (404)
        counts as cancelled: there is nothing left that its client secret could open.
        """
        try:
            payload = self._post(
                f"{SESSIONS_PATH}/{session_id}/cancel", None, timeout=self._cancel_timeout
            )
        except UpstreamRejected as error:
            if error.status == 404:
                return "cancelled"
            raise
        status = payload.get("status")
        return status if isinstance(status, str) else "cancelled"

    def close(self) -> None:
        self._http.close()

    def _post(
        self, path: str, body: dict[str, Any] | None, *, timeout: httpx.Timeout | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._api_key}", **BETA_HEADER}
        extra = {"timeout": timeout} if timeout is not None else {}
        try:
            with waiting_on_network():
                response = self._http.post(path, json=body, headers=headers, **extra)
        except httpx.TimeoutException as error:
            raise UpstreamUnavailable("timeout", type(error).__name__) from None
        except httpx.TransportError as error:
            raise UpstreamUnavailable("connection", type(error).__name__) from None
        return self._payload(response)

    def _payload(self, response: httpx.Response) -> dict[str, Any]:
        request_id = response.headers.get("x-request-id")
        if response.status_code == 429:
            raise UpstreamRateLimited(
                retry_after_from(response.headers.get("Retry-After")),
                self._scrub(_error_fields(response)["message"]),
                request_id,
            )
        if response.status_code >= 400:
            fields = _error_fields(response)
            raise UpstreamRejected(
                response.status_code,
                self._scrub(fields["message"]),
                error_type=fields["type"],
                error_code=fields["code"],
                param=fields["param"],
                request_id=request_id,
            )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise UpstreamRejected(
                response.status_code, "the answer is not a JSON object", request_id=request_id
            )
        return payload

    def _scrub(self, message: str) -> str:
        """Never pass on our key, even if an upstream message quotes it."""
        if self._api_key:
            message = message.replace(self._api_key, "[redacted]")
        return message[:MAX_MESSAGE_LENGTH]


def _error_fields(response: httpx.Response) -> dict[str, str | None]:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}`, tolerating anything else."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return {
            "message": f"HTTP {response.status_code} {response.reason_phrase}".strip(),
            "type": None,
            "code": None,
            "param": None,
        }
    return {
        "message": str(error.get("message") or response.reason_phrase or "error"),
        "type": _str_or_none(error.get("type")),
        "code": _str_or_none(error.get("code")),
        "param": _str_or_none(error.get("param")),
    }


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _parse_session(payload: dict[str, Any]) -> UpstreamSession:
    session_id = payload.get("id")
    secret = payload.get("client_secret")
    expires_at = payload.get("expires_at")
    workflow = payload.get("workflow")
    if not (isinstance(session_id, str) and session_id and isinstance(secret, str) and secret):
        raise UpstreamRejected(200, "the answer has no session id or client secret")
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise UpstreamRejected(200, "the answer has no expires_at timestamp")
    return UpstreamSession(
        id=session_id,
        client_secret=secret,
        expires_at=datetime.fromtimestamp(int(expires_at), UTC),
        status=str(payload.get("status") or "active"),
        user=str(payload.get("user") or ""),
        workflow_id=str(workflow.get("id") or "") if isinstance(workflow, dict) else "",
    )


def retry_after_from(header: str | None) -> int:
    """Whole seconds from a Retry-After header (delta-seconds or an HTTP date), at least 1."""
    if not header:
        return DEFAULT_RETRY_AFTER
    header = header.strip()
    try:
        return max(1, math.ceil(float(header)))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(1, math.ceil(moment.timestamp() - time.time()))
