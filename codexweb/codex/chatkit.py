"""ChatKit tokens: minting behind a provider interface, the signing keys, the JWKS.

`mint_chatkit_token` checks ownership, status and expiry, counts as activity, and hands the
actual minting to the configured provider (`CHATKIT_PROVIDER`):

- `local` (here): an Ed25519 JWT (`alg: EdDSA`, header `kid`) that anyone can verify with
  `/.well-known/jwks.json`. Its keys live in the database, shared by every host
  (`codexweb/codex/keys.py`).
- `openai`: hosted ChatKit sessions (`codexweb/codex/openai_provider.py`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, current_app, has_request_context, request
from joserfc import jwt
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm.attributes import set_committed_value

from .. import metrics
from ..clock import isoformat, utcnow
from ..extensions import db
from ..logging import emit
from ..models import ChatKitSession, CodexSession, User
from .keys import ALGORITHM, KeyStore, SigningKey, jwks, key_store, prune_keys, rotate_keys
from .sessions import (
    LIMIT_DEFAULT,
    OWNED_SESSION_FILTER,
    checked_session_id,
    effective_status,
    get_owned_session,
    keyset_page,
    page_with_cursor,
    parse_page,
    session_not_found,
    touch,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProviderToken:
    token: str
    expires_at: datetime
    jti: str
    # The ChatKit record's new expiry, written by the same UPDATE that counts the token (one
    # statement, not two); None when the provider has stored the record's expiry itself.
    record_expires_at: datetime | None = None


@dataclass(frozen=True)
class MintedToken:
    token: str
    expires_at: datetime
    session_id: str
    chatkit_session_id: str
    jti: str


# Providers -------------------------------------------------------------------------------


class ChatKitProvider:
    """What a ChatKit backend must do. Subclasses set `name` and implement `mint`."""

    name = "base"
    # A provider that calls a remote service while minting: the activity is committed first,
    # so no database write transaction (on SQLite, a database-wide lock) spans the HTTP call.
    calls_upstream = False

    def __init__(self, app: Flask) -> None:
        self.app = app

    def open_record(self, session: CodexSession) -> ChatKitSession:
        """The ChatKit session record of a new Codex session (same transaction, no commit)."""
        record = ChatKitSession(
            codex_session_id=session.id,
            user_id=session.user_id,
            provider=self.name,
            status="active",
            created_at=utcnow(),
            expires_at=session.expires_at,
        )
        db.session.add(record)
        db.session.flush()
        return record

    def record_for_mint(self, session: CodexSession, live: ChatKitSession | None) -> ChatKitSession:
        """The record a new token belongs to: the session's `live` one, opened if missing."""
        return live or self.open_record(session)

    def prepare(self) -> None:
        """Whatever minting needs, fetched before the mint's write transaction begins."""

    def mint(
        self,
        user: User,
        session: CodexSession,
        record: ChatKitSession,
        max_expires_at: datetime,
        login_id: str,
    ) -> ProviderToken:
        """A token for `session`, asked for by `login_id` (the login the caller used)."""
        raise NotImplementedError

    def end(self, record: ChatKitSession) -> None:
        """Release anything held outside our database; the record is already marked ended."""


class LocalProvider(ChatKitProvider):
    """Self-signed Ed25519 JWTs; nothing upstream to open or end."""

    name = "local"

    def prepare(self) -> None:
        # The very first key is written on a connection of its own; on SQLite it would wait
        # for the write lock that the mint's own transaction holds once it has begun.
        key_store().current()

    def mint(
        self,
        user: User,
        session: CodexSession,
        record: ChatKitSession,
        max_expires_at: datetime,
        login_id: str,
    ) -> ProviderToken:
        now = utcnow()
        ttl = timedelta(seconds=self.app.config["CHATKIT_TOKEN_TTL"])
        expires_at = min(now + ttl, max_expires_at)
        jti = secrets.token_urlsafe(16)
        claims = {
            "iss": token_issuer(),
            "aud": self.app.config["CHATKIT_AUDIENCE"],
            "sub": user.id,
            "sid": session.id,
            "cks": record.id,
            "agent_id": session.agent_id,
            "placement": session.placement,
            # The login that asked: ending it (logout, a password reset, "log out other
            # devices") stops this token at once, as it stops the login's access tokens.
            "lid": login_id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            # Rounded down: the token never outlives the session, not even by a fraction.
            "exp": int(expires_at.timestamp()),
            "jti": jti,
        }
        key = key_store().current()
        header = {"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}
        token = jwt.encode(header, claims, key.key, algorithms=[ALGORITHM])
        # The record lives as long as its Codex session (its stored expiry, after `touch`).
        return ProviderToken(
            token,
            datetime.fromtimestamp(claims["exp"], UTC),
            jti,
            record_expires_at=session.expires_at,
        )


PROVIDERS: dict[str, str] = {
    "local": "codexweb.codex.chatkit:LocalProvider",
    "openai": "codexweb.codex.openai_provider:OpenAIProvider",
}


def get_provider(app: Flask | None = None, name: str | None = None) -> ChatKitProvider:
    """The provider called `name` (default: `CHATKIT_PROVIDER`), one instance per app."""
    app = app or current_app._get_current_object()
    name = name or app.config["CHATKIT_PROVIDER"]
    cache = app.extensions.setdefault("codexweb.chatkit_providers", {})
    if name not in cache:
        if name not in PROVIDERS:
            raise RuntimeError(f"CHATKIT_PROVIDER must be one of {', '.join(PROVIDERS)}")
        module_name, _, class_name = PROVIDERS[name].partition(":")
        cache[name] = getattr(importlib.import_module(module_name), class_name)(app)
    return cache[name]


def token_issuer() -> str:
    """`iss`: CHATKIT_ISSUER, else PUBLIC_BASE_URL, else the host this request came to."""
    config = current_app.config
    issuer = config.get("CHATKIT_ISSUER") or config.get("PUBLIC_BASE_URL")
    if not issuer and has_request_context():
        issuer = request.host_url
    return (issuer or "codexweb").rstrip("/")


# Minting ---------------------------------------------------------------------------------


def mint_chatkit_token(user: User, session_id: Any, *, login_id: str) -> MintedToken:
    """A ChatKit client token for the caller's active session; 404 for anything else.

    `login_id` is the login the request came with: the token is good while that login is.
    """
    session, live = _owned_session_and_live_record(user, session_id)
    if effective_status(session) != "active":
        raise session_not_found()
    provider = get_provider()
    provider.prepare()
    if not touch(session, commit=provider.calls_upstream):
        raise session_not_found()
    record = provider.record_for_mint(session, live)
    minted = provider.mint(user, session, record, session.expires_at, login_id)
    if not _count_token(session, record, minted):
        db.session.rollback()  # closed meanwhile: no token, and no record opened for it
        raise session_not_found()
    db.session.commit()
    metrics.token_minted(provider.name)
    emit(
        "codex.chatkit.token.issued",
        user_id=user.id,
        session_id=session.id,
        chatkit_session_id=public_chatkit_session_id(record),
        placement=session.placement,
        agent_id=session.agent_id,
        provider=provider.name,
        jti=minted.jti,
        expires_at=isoformat(minted.expires_at),
    )
    return MintedToken(
        minted.token, minted.expires_at, session.id, public_chatkit_session_id(record), minted.jti
    )


def _count_token(session: CodexSession, record: ChatKitSession, minted: ProviderToken) -> bool:
    """One UPDATE: the token count, its time and (if the provider says) the record's expiry.

    Counted in the database, not in Python: concurrent mints must not lose increments.
    Conditional on the Codex session still being active: `touch` may have skipped its own
    conditional write (coalesced), and a session closed since we read it gets no token.
    Returns False when it was not.
    """
    now = utcnow()
    sets_expiry = minted.record_expires_at is not None
    parameters = {"record_id": record.id, "session_id": session.id, "now": now}
    if sets_expiry:
        parameters["expires_at"] = minted.record_expires_at
    result = db.session.execute(_count_statement(sets_expiry), parameters)
    if result.rowcount != 1:
        return False
    # The loaded record matches the row again (the count is only known to the database).
    set_committed_value(record, "last_token_at", now)
    if minted.record_expires_at is not None:
        set_committed_value(record, "expires_at", minted.record_expires_at)
    return True


@functools.cache
def _count_statement(sets_expiry: bool):
    """Built once per shape: the token path runs it on every mint.

    On the tables, not the mapped classes: a core UPDATE skips the ORM's bulk-update machinery,
    which cost as much Python as running the statement (`_count_token` keeps the loaded record
    in step).
    """
    records, sessions_table = ChatKitSession.__table__, CodexSession.__table__
    values: dict[str, Any] = {
        "tokens_issued": records.c.tokens_issued + 1,
        "last_token_at": bindparam("now"),
    }
    if sets_expiry:
        values["expires_at"] = bindparam("expires_at")
    still_active = (
        select(sessions_table.c.id)
        .where(
            sessions_table.c.id == bindparam("session_id"),
            sessions_table.c.status == "active",
            sessions_table.c.expires_at > bindparam("now"),
        )
        .exists()
    )
    return (
        update(records).where(records.c.id == bindparam("record_id"), still_active).values(values)
    )


def public_chatkit_session_id(record: ChatKitSession) -> str:
    """A hosted session is known by its upstream id (`cksess_…`), a local one by ours."""
    return record.upstream_id or record.id


# The newest live record of the session the outer query reads (normally its only one; two
# mints racing on a session without one may each open one, and the newest wins).
_LIVE_RECORD_ID = (
    select(ChatKitSession.id)
    .where(ChatKitSession.codex_session_id == CodexSession.id, ChatKitSession.status == "active")
    .order_by(ChatKitSession.created_at.desc())
    .limit(1)
    .correlate(CodexSession)
    .scalar_subquery()
)
# Built once with bound parameters: on the token path, building statements and their cache
# keys cost more Python than running them (docs/PERFORMANCE.md, round 2). One statement loads
# both rows a mint needs.
_OWNED_SESSION_AND_LIVE_RECORD = (
    select(CodexSession, ChatKitSession)
    .outerjoin(ChatKitSession, ChatKitSession.id == _LIVE_RECORD_ID)
    .where(*OWNED_SESSION_FILTER)
)


def _owned_session_and_live_record(
    user: User, session_id: Any
) -> tuple[CodexSession, ChatKitSession | None]:
    """The caller's session (404 as `get_owned_session`) and its live ChatKit record, if any."""
    parameters = {"session_id": checked_session_id(session_id), "user_id": user.id}
    row = db.session.execute(_OWNED_SESSION_AND_LIVE_RECORD, parameters).first()
    if row is None:
        raise session_not_found()
    return row[0], row[1]


def end_chatkit_sessions(session: CodexSession) -> list[ChatKitSession]:
    """Mark the ChatKit sessions of an ended Codex session ended (the caller's transaction);
    the records it ended.

    Records whose provider holds something upstream get `cancel_pending`: the caller commits,
    then calls `release_chatkit_sessions`, so no upstream call ever runs while we hold a write
    lock, and a release that never happens (a crash, an outage) is retried by the purge.
    """
    records = db.session.scalars(
        select(ChatKitSession).where(
            ChatKitSession.codex_session_id == session.id, ChatKitSession.status == "active"
        )
    ).all()
    now = utcnow()
    for record in records:
        record.status = "ended"
        record.ended_at = record.ended_at or now
        record.cancel_pending = get_provider(name=record.provider).calls_upstream
    db.session.flush()
    return list(records)


def release_chatkit_sessions(codex_session_ids: list[str] | None = None) -> int:
    """Tell providers about ended ChatKit sessions still `cancel_pending` (after a commit).

    Only those of `codex_session_ids`, or every pending one (the purge's retry). A provider
    that fails leaves the flag set; an upstream outage never fails the close that caused it.
    Returns how many are still pending.
    """
    query = select(ChatKitSession).where(ChatKitSession.cancel_pending.is_(True))
    if codex_session_ids is not None:
        if not codex_session_ids:
            return 0
        query = query.where(ChatKitSession.codex_session_id.in_(codex_session_ids))
    records = db.session.scalars(query).all()
    for record in records:
        record.cancel_pending = False
        try:
            get_provider(name=record.provider).end(record)
        except Exception:  # an upstream outage must not block closing the Codex session
            record.cancel_pending = True
            log.warning("ending ChatKit session %s failed; will retry", record.id, exc_info=True)
    db.session.commit()
    return sum(1 for record in records if record.cancel_pending)


# Listing ---------------------------------------------------------------------------------


def list_chatkit_sessions(
    user: User,
    *,
    session_id: str | None = None,
    limit: int = LIMIT_DEFAULT,
    cursor: str | None = None,
) -> tuple[list[tuple[ChatKitSession, CodexSession]], str | None]:
    """The caller's ChatKit sessions (of sessions not deleted), newest first, keyset paged."""
    after = parse_page(limit, cursor)
    query = (
        select(ChatKitSession, CodexSession)
        .join(CodexSession, CodexSession.id == ChatKitSession.codex_session_id)
        .where(ChatKitSession.user_id == user.id, CodexSession.deleted_at.is_(None))
    )
    if session_id is not None:
        get_owned_session(user, session_id)  # someone else's id is a 404, not an empty list
        query = query.where(ChatKitSession.codex_session_id == session_id)
    query = keyset_page(query, ChatKitSession.created_at, ChatKitSession.id, after, limit)
    rows = db.session.execute(query).all()
    records, next_cursor = page_with_cursor([row[0] for row in rows], limit)
    return [(row[0], row[1]) for row in rows[: len(records)]], next_cursor


def tokens_issued(session: CodexSession) -> int:
    """Every ChatKit token minted for a Codex session, over all its ChatKit sessions."""
    total = db.session.scalar(
        select(func.coalesce(func.sum(ChatKitSession.tokens_issued), 0)).where(
            ChatKitSession.codex_session_id == session.id
        )
    )
    return int(total)


def chatkit_session_json(record: ChatKitSession, session: CodexSession) -> dict[str, Any]:
    status = record.status
    if status == "active" and effective_status(session) != "active":
        status = "ended"  # the Codex session lapsed; the purge will persist it
    elif status == "active" and record.upstream_id and record.expires_at <= utcnow():
        status = "expired"  # an upstream session ends at its own expiry, refreshed or not
    return {
        "chatkit_session_id": public_chatkit_session_id(record),
        "session_id": session.id,
        "status": status,
        "placement": session.placement,
        "agent_id": session.agent_id,
        "created_at": isoformat(record.created_at),
        "expires_at": isoformat(record.expires_at),
        "last_token_at": isoformat(record.last_token_at),
        "tokens_issued": record.tokens_issued,
    }


# Signing keys live in their own module; these names stay importable from here.
__all__ = ["SigningKey", "KeyStore", "jwks", "key_store", "prune_keys", "rotate_keys"]
