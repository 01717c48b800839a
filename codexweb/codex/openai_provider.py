"""Hosted ChatKit (`CHATKIT_PROVIDER=openai`): tokens are client secrets of real ChatKit sessions.

Each token request opens a new session with OpenAI's ChatKit sessions API for the Codex
session's agent (its `workflow_id`), and records it in our ChatKit session registry: the API
offers only create and cancel, so this registry is the only place that knows which upstream
sessions a user has and which are still live. A refresh opens a new upstream session rather
than cancelling the previous one: another tab may still be using it, and it expires on its own
within `CHATKIT_TOKEN_TTL`. Closing, deleting or expiring the Codex session cancels every live
one; a cancel that fails is flagged `cancel_pending` and retried by `sessions purge-expired`.

Upstream failures become problems a client can act on: a rejected key or workflow is a 502
`upstream_error` (an operator must fix the configuration; the detail says what, never the
key), a 429 is our own 429 `rate_limited` with the upstream `Retry-After`, and a timeout, a
lost connection or an upstream 5xx is a 503 `upstream_unavailable` (try again shortly).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Flask

from ..clock import isoformat, utcnow
from ..errors import Problem
from ..extensions import db
from ..logging import emit
from ..models import ChatKitSession, CodexSession, User
from .chatkit import ChatKitProvider, ProviderToken
from .upstream import (
    ChatKitSessionsClient,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)

PROVIDER_NAME = "openai"
PROVIDER_NAMES = ("local", PROVIDER_NAME)
# Keys an operator sets for the hosted provider, with the place to set them (for messages).
REQUIRED_KEY_HINT = "set CODEXWEB_{key} in the environment or {key} in instance/config.py"


# Configuration, checked when the application starts ----------------------------------------


def validate_chatkit_config(config: Mapping[str, Any]) -> None:
    """Refuse to start with a ChatKit configuration that cannot work; say which key is wrong."""
    provider = config.get("CHATKIT_PROVIDER")
    if provider not in PROVIDER_NAMES:
        raise RuntimeError(
            f"CHATKIT_PROVIDER must be one of {', '.join(PROVIDER_NAMES)}, not {provider!r}"
        )
    if provider != PROVIDER_NAME:
        return
    if not config.get("OPENAI_API_KEY"):
        raise RuntimeError(
            "CHATKIT_PROVIDER=openai needs OPENAI_API_KEY: "
            + REQUIRED_KEY_HINT.format(key="OPENAI_API_KEY")
        )
    missing = [
        agent_id
        for agent_id, agent in (config.get("CODEX_AGENTS") or {}).items()
        if not (isinstance(agent, Mapping) and _non_empty_string(agent.get("workflow_id")))
    ]
    if missing:
        raise RuntimeError(
            "CHATKIT_PROVIDER=openai needs a workflow_id for every agent in CODEX_AGENTS; "
            f"missing for: {', '.join(sorted(missing))}"
        )
    timeout = config.get("CHATKIT_UPSTREAM_TIMEOUT")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise RuntimeError("CHATKIT_UPSTREAM_TIMEOUT must be a positive number of seconds")
    per_minute = config.get("CHATKIT_RATE_LIMIT_PER_MINUTE")
    if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 1:
        raise RuntimeError("CHATKIT_RATE_LIMIT_PER_MINUTE must be a positive integer")


def _non_empty_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def upstream_user_id(user_id: str, secret_key: str) -> str:
    """The `user` we give OpenAI: stable per user, unlinkable to our ids without SECRET_KEY.

    ChatKit scopes threads and history to this value, so it must not change between
    sessions; rotating SECRET_KEY therefore starts every user with an empty hosted history.
    """
    digest = hmac.new(
        secret_key.encode(), b"codexweb.chatkit.user:" + user_id.encode(), hashlib.sha256
    )
    return f"cwu_{digest.hexdigest()}"


def lifetime_seconds(now: datetime, max_expires_at: datetime, token_ttl: int) -> int:
    """`expires_after.seconds`: the token TTL, cut to what is left of the Codex session."""
    remaining = math.floor((max_expires_at - now).total_seconds())
    return max(1, min(int(token_ttl), remaining))


# The provider ------------------------------------------------------------------------------


class OpenAIProvider(ChatKitProvider):
    """ChatKit sessions opened and cancelled upstream, recorded one row per upstream session."""

    name = PROVIDER_NAME
    calls_upstream = True

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self._client: ChatKitSessionsClient | None = None
        self._client_pid: int | None = None
        self._lock = threading.Lock()

    # The HTTP client

    @property
    def client(self) -> ChatKitSessionsClient:
        """One pooled client per process: built on first use, so gunicorn workers never share
        a socket inherited across fork."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                config = self.app.config
                self._client = ChatKitSessionsClient(
                    api_base=config["CHATKIT_API_BASE"],
                    api_key=config["OPENAI_API_KEY"],
                    timeout=float(config["CHATKIT_UPSTREAM_TIMEOUT"]),
                )
                self._client_pid = os.getpid()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._client_pid == os.getpid():
                self._client.close()
            self._client = None

    # Records: one per upstream session, written only once the upstream session exists

    def open_record(self, session: CodexSession) -> ChatKitSession:
        """An unsaved record: there is no upstream session until a token is asked for."""
        return ChatKitSession(
            codex_session_id=session.id,
            user_id=session.user_id,
            provider=self.name,
            status="active",
            created_at=utcnow(),
        )

    def record_for_mint(self, session: CodexSession, live: ChatKitSession | None) -> ChatKitSession:
        # Every hosted token is its own upstream session, with a record of its own.
        return self.open_record(session)

    # Minting

    def mint(
        self,
        user: User,
        session: CodexSession,
        record: ChatKitSession,
        max_expires_at: datetime,
        login_id: str,
    ) -> ProviderToken:
        # `login_id` goes nowhere: the hosted session is OpenAI's, ended when the Codex
        # session closes (`end`), not when the login that minted it does.
        config = self.app.config
        now = utcnow()
        context = {"user_id": user.id, "session_id": session.id, "agent_id": session.agent_id}
        try:
            upstream = self.client.create_session(
                workflow_id=self._workflow_id(session.agent_id),
                user=upstream_user_id(user.id, config["SECRET_KEY"]),
                state_variables={"placement": session.placement, "codex_session_id": session.id},
                expires_after_seconds=lifetime_seconds(
                    now, max_expires_at, config["CHATKIT_TOKEN_TTL"]
                ),
                max_requests_per_minute=int(config["CHATKIT_RATE_LIMIT_PER_MINUTE"]),
            )
        except UpstreamError as error:
            raise self._failure(error, "create", session, context) from None
        record.upstream_id = upstream.id
        record.expires_at = upstream.expires_at
        record.created_at = now
        if record not in db.session:
            db.session.add(record)
        db.session.flush()
        emit(
            "codex.chatkit.upstream.session_created",
            chatkit_session_id=upstream.id,
            expires_at=isoformat(upstream.expires_at),
            placement=session.placement,
            **context,
        )
        # There is no JWT id: the upstream session id names the one secret it issued.
        return ProviderToken(upstream.client_secret, upstream.expires_at, upstream.id)

    def _workflow_id(self, agent_id: str) -> str:
        agent = self.app.config["CODEX_AGENTS"].get(agent_id) or {}
        workflow_id = agent.get("workflow_id")
        if not _non_empty_string(workflow_id):  # validated at start; config changed since?
            raise Problem(
                502,
                "upstream_error",
                f"Agent {agent_id} has no ChatKit workflow configured.",
            )
        return workflow_id

    def _failure(
        self, error: UpstreamError, operation: str, session: CodexSession, context: dict
    ) -> Problem:
        """Log what went wrong (for the operator) and turn it into the client's problem."""
        fields = {"operation": operation, **context}
        if isinstance(error, UpstreamRateLimited):
            emit(
                "codex.chatkit.upstream.rate_limited",
                logging.WARNING,
                retry_after=error.retry_after,
                upstream_request_id=error.request_id,
                **fields,
            )
            return Problem(
                429,
                "rate_limited",
                f"Codex is busy, please retry in {error.retry_after} seconds",
                headers={"Retry-After": str(error.retry_after)},
                retry_after=error.retry_after,
            )
        if isinstance(error, UpstreamUnavailable):
            emit(
                "codex.chatkit.upstream.unavailable",
                logging.ERROR,
                reason=error.reason,
                error=error.description,
                **fields,
            )
            return unavailable_problem(error.reason)
        assert isinstance(error, UpstreamRejected)
        emit(
            "codex.chatkit.upstream.failed",
            logging.ERROR,
            upstream_status=error.status,
            error_type=error.error_type,
            error_code=error.error_code,
            param=error.param,
            message=error.message,
            upstream_request_id=error.request_id,
            **fields,
        )
        if error.status >= 500:
            return unavailable_problem("error")
        return Problem(
            502,
            "upstream_error",
            rejection_detail(error, session.agent_id),
            upstream_status=error.status,
            upstream_request_id=error.request_id,
        )

    # Ending

    def end(self, record: ChatKitSession) -> None:
        """Cancel the upstream session; on failure flag it for the purge, never raise."""
        if not record.upstream_id:
            record.cancel_pending = False
            return
        if record.expires_at is not None and record.expires_at <= utcnow():
            record.cancel_pending = False  # it has expired upstream on its own
            return
        try:
            status = self.client.cancel_session(record.upstream_id)
        except UpstreamError as error:
            record.cancel_pending = True
            emit(
                "codex.chatkit.upstream.cancel_failed",
                logging.WARNING,
                chatkit_session_id=record.upstream_id,
                session_id=record.codex_session_id,
                user_id=record.user_id,
                error=str(error),
            )
            return
        record.cancel_pending = False
        emit(
            "codex.chatkit.upstream.cancelled",
            chatkit_session_id=record.upstream_id,
            session_id=record.codex_session_id,
            user_id=record.user_id,
            upstream_status=status,
        )


def unavailable_problem(reason: str) -> Problem:
    detail = {
        "timeout": "The ChatKit service did not answer in time; try again shortly.",
        "connection": "The ChatKit service could not be reached; try again shortly.",
    }.get(reason, "The ChatKit service is having trouble; try again shortly.")
    return Problem(503, "upstream_unavailable", detail)


def rejection_detail(error: UpstreamRejected, agent_id: str) -> str:
    """What the operator needs to fix. An auth failure's own message may quote part of the
    key, so it is replaced by ours."""
    if error.status in (401, 403):
        return (
            f"The ChatKit service rejected codexweb's API key (HTTP {error.status}); "
            "check OPENAI_API_KEY."
        )
    if error.status == 200:
        return f"The ChatKit service gave an unusable answer: {error.message}."
    return (
        f"The ChatKit service refused to open a session for agent {agent_id} "
        f"(HTTP {error.status}): {error.message}"
    )
