"""ChatKit tokens: minting behind a provider interface, the signing keys, the JWKS.

`mint_chatkit_token` checks ownership, status and expiry, counts as activity, and hands the
actual minting to the configured provider (`CHATKIT_PROVIDER`):

- `local` (here): an Ed25519 JWT (`alg: EdDSA`, header `kid`) that anyone can verify with
  `/.well-known/jwks.json`. Keys live in `CHATKIT_KEYS_DIR` (`<instance>/chatkit_keys/`)
  as JWK files (0600), created on first use and kept across restarts and workers.
- `openai`: hosted ChatKit sessions (`codexweb/codex/openai_provider.py`).
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import os
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, current_app, has_request_context, request
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey
from sqlalchemy import func, select, update
from sqlalchemy.orm.attributes import set_committed_value

from ..clock import isoformat, utcnow
from ..extensions import db
from ..logging import emit
from ..models import ChatKitSession, CodexSession, User
from .sessions import (
    LIMIT_DEFAULT,
    effective_status,
    get_owned_session,
    keyset_page,
    page_with_cursor,
    parse_page,
    session_not_found,
    touch,
)

ALGORITHM = "EdDSA"
# CONTRACT.md §4 fixes `alg: EdDSA` (RFC 8037), which every JOSE library verifies; joserfc
# warns on each use because RFC 9864 prefers the newer name `Ed25519`.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

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

    def record_for_mint(self, session: CodexSession) -> ChatKitSession:
        """The record a new token belongs to: the session's live one, opened if missing."""
        return _live_record(session) or self.open_record(session)

    def mint(
        self,
        user: User,
        session: CodexSession,
        record: ChatKitSession,
        max_expires_at: datetime,
    ) -> ProviderToken:
        raise NotImplementedError

    def end(self, record: ChatKitSession) -> None:
        """Release anything held outside our database; the record is already marked ended."""


class LocalProvider(ChatKitProvider):
    """Self-signed Ed25519 JWTs; nothing upstream to open or end."""

    name = "local"

    def mint(
        self,
        user: User,
        session: CodexSession,
        record: ChatKitSession,
        max_expires_at: datetime,
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


def mint_chatkit_token(user: User, session_id: Any) -> MintedToken:
    """A ChatKit client token for the caller's active session; 404 for anything else."""
    session = get_owned_session(user, session_id)
    if effective_status(session) != "active":
        raise session_not_found()
    provider = get_provider()
    if not touch(session, commit=provider.calls_upstream):
        raise session_not_found()
    record = provider.record_for_mint(session)
    minted = provider.mint(user, session, record, session.expires_at)
    if not _count_token(session, record, minted):
        db.session.rollback()  # closed meanwhile: no token, and no record opened for it
        raise session_not_found()
    db.session.commit()
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
    values: dict[str, Any] = {
        "tokens_issued": ChatKitSession.tokens_issued + 1,
        "last_token_at": now,
    }
    if minted.record_expires_at is not None:
        values["expires_at"] = minted.record_expires_at
    still_active = (
        select(CodexSession.id)
        .where(
            CodexSession.id == session.id,
            CodexSession.status == "active",
            CodexSession.expires_at > now,
        )
        .exists()
    )
    result = db.session.execute(
        update(ChatKitSession)
        .where(ChatKitSession.id == record.id, still_active)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    # The loaded record matches the row again (the count is only known to the database).
    set_committed_value(record, "last_token_at", now)
    if minted.record_expires_at is not None:
        set_committed_value(record, "expires_at", minted.record_expires_at)
    return True


def public_chatkit_session_id(record: ChatKitSession) -> str:
    """A hosted session is known by its upstream id (`cksess_…`), a local one by ours."""
    return record.upstream_id or record.id


def _live_record(session: CodexSession) -> ChatKitSession | None:
    return db.session.scalars(
        select(ChatKitSession)
        .where(ChatKitSession.codex_session_id == session.id, ChatKitSession.status == "active")
        .order_by(ChatKitSession.created_at.desc())
        .limit(1)
    ).first()


def end_chatkit_sessions(session: CodexSession) -> int:
    """Mark the ChatKit sessions of an ended Codex session ended (the caller's transaction).

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
    return len(records)


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


# Signing keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: OKPKey
    created_at: datetime
    sequence: int


class KeyStore:
    """Ed25519 keys as JWK files in one directory, shared by every worker and restart.

    Files are only ever added (atomically, by rename) or removed, never rewritten, so the
    sorted file listing identifies a version of the store: a worker re-reads the keys when
    the listing changes, which is how it notices a rotation made by another process.
    A key is retired when a newer one exists; it stays published until tokens it signed
    (at most `CHATKIT_TOKEN_TTL`) have expired.
    """

    _cache: dict[str, tuple[tuple[str, ...], list[SigningKey]]] = {}

    def __init__(self, directory: Path, token_ttl: int) -> None:
        self.directory = directory
        self.token_ttl = timedelta(seconds=token_ttl)

    # reading

    def keys(self) -> list[SigningKey]:
        """Every stored key, oldest first."""
        names = self._listing()
        cached = self._cache.get(str(self.directory))
        if cached is not None and cached[0] == names:
            return cached[1]
        keys = sorted(
            (self._read(self.directory / name) for name in names), key=lambda k: k.sequence
        )
        self._cache[str(self.directory)] = (names, keys)
        return keys

    def current(self) -> SigningKey:
        keys = self.keys()
        if not keys:
            with self.locked():
                keys = self.keys()  # another worker may have created it while we waited
                if not keys:
                    self._write_new_key(1)
                    keys = self.keys()
        return keys[-1]

    def published(self, now: datetime | None = None) -> list[SigningKey]:
        """The keys a verifier may still meet: the current one and recently retired ones."""
        now = now or utcnow()
        keys = self.keys()
        return [
            key
            for key, successor in zip(keys, [*keys[1:], None], strict=False)
            if successor is None or successor.created_at + self.token_ttl > now
        ]

    # writing

    def rotate(self) -> SigningKey:
        with self.locked():
            keys = self.keys()
            self._write_new_key(keys[-1].sequence + 1 if keys else 1)
            self.prune()
            return self.keys()[-1]

    def prune(self, now: datetime | None = None) -> list[str]:
        """Delete retired keys whose tokens have all expired; returns their kids."""
        keep = {key.kid for key in self.published(now)}
        removed = []
        for key in self.keys():
            if key.kid not in keep:
                (self.directory / self._file_name(key)).unlink(missing_ok=True)
                removed.append(key.kid)
        return removed

    # files

    def _listing(self) -> tuple[str, ...]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return ()
        return tuple(sorted(name for name in names if name.endswith(".json")))

    @staticmethod
    def _file_name(key: SigningKey) -> str:
        return f"{key.sequence:08d}-{key.kid}.json"

    def _read(self, path: Path) -> SigningKey:
        data = json.loads(path.read_text())
        return SigningKey(
            kid=data["jwk"]["kid"],
            key=OKPKey.import_key(data["jwk"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            sequence=int(data["sequence"]),
        )

    def _write_new_key(self, sequence: int) -> None:
        key = OKPKey.generate_key("Ed25519", private=True)
        kid = key.thumbprint()
        jwk = {**key.as_dict(private=True), "kid": kid, "alg": ALGORITHM, "use": "sig"}
        record = {"created_at": utcnow().isoformat(), "sequence": sequence, "jwk": jwk}
        signing_key = SigningKey(kid, key, utcnow(), sequence)
        final = self.directory / self._file_name(signing_key)
        temporary = self.directory / f".{final.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)  # readers see the whole file or none of it

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time across processes (gunicorn workers, the CLI)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def key_store(app: Flask | None = None) -> KeyStore:
    app = app or current_app._get_current_object()
    return KeyStore(Path(app.config["CHATKIT_KEYS_DIR"]), app.config["CHATKIT_TOKEN_TTL"])


def jwks() -> dict[str, Any]:
    """The public keys that verify ChatKit tokens (JWK Set, RFC 7517)."""
    store = key_store()
    store.current()  # a fresh instance publishes the key its first token will use
    return {
        "keys": [
            {**key.key.as_dict(private=False), "kid": key.kid, "alg": ALGORITHM, "use": "sig"}
            for key in store.published()
        ]
    }


def rotate_keys() -> str:
    """Make a new current signing key; returns its kid."""
    return key_store().rotate().kid


def prune_keys() -> list[str]:
    store = key_store()
    with store.locked():
        return store.prune()
