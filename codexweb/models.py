"""The tables: users, refresh tokens, Codex sessions, ChatKit sessions, and the ChatKit
runtime's threads, items and attachments.

Times are stored as naive UTC (SQLite has no time zones) and come back aware through
`UTCDateTime`, so every comparison in the domain code is between aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .clock import utcnow
from .extensions import db
from .ids import new_id


class UTCDateTime(TypeDecorator):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use codexweb.clock.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr"))
    # Stored normalised (trimmed, lower case): the unique index is the case-insensitive check.
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # Operators' view and rules (codexweb/auth/accounts.py): when a link was last mailed (None:
    # never, e.g. created from the CLI), the last successful login, and a disabled account.
    verification_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None


class RefreshToken(db.Model):
    """One issued refresh token. Only its SHA-256 is stored.

    Tokens of one login form a family: each refresh rotates to a new member; presenting a
    member that was already rotated revokes the whole family (reuse detection).
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rt"))
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    family_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CodexSession(db.Model):
    __tablename__ = "codex_sessions"
    __table_args__ = (
        # The rule "at most one active session per (user, placement, agent)" is the
        # database's to enforce: a partial unique index, on SQLite and PostgreSQL alike.
        Index(
            "uq_codex_sessions_one_active",
            "user_id",
            "placement",
            "agent_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_codex_sessions_user_activity", "user_id", "status", "last_active_at"),
        Index("ix_codex_sessions_user_created", "user_id", "created_at", "id"),
        Index("ix_codex_sessions_status_expiry", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cxs"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    placement: Mapped[str] = mapped_column(String(64), nullable=False)
    agent_id: Mapped[str] = mapped_column(String(64), nullable=False)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # `metadata` is reserved on declarative classes: the attribute is `meta`, the column is not.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # DELETE hides a session from the API for good; the row stays for audit until purged.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The session's current ChatKit thread (CONTRACT §4 `thread_id`): moved by each new message.
    thread_id: Mapped[str | None] = mapped_column(String(64))


class ChatKitSession(db.Model):
    """The ChatKit side of a Codex session: one per Codex session for the local provider,
    one per upstream ChatKit session for a hosted provider."""

    __tablename__ = "chatkit_sessions"
    __table_args__ = (Index("ix_chatkit_sessions_user_created", "user_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cks"))
    codex_session_id: Mapped[str] = mapped_column(
        ForeignKey("codex_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    provider: Mapped[str] = mapped_column(String(16), nullable=False, default="local")
    upstream_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_token_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tokens_issued: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # A hosted session whose upstream cancel failed: the purge command tries again.
    cancel_pending: Mapped[bool] = mapped_column(db.Boolean, nullable=False, default=False)


class Identity(db.Model):
    """An account at an OpenID provider that signs a user in: (issuer, subject) is who it is.

    The address the provider last reported is kept for display only; it never links anyone,
    because the provider may let its users change it.
    """

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_identities_issuer_subject"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("idn"))
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    issuer: Mapped[str] = mapped_column(String(255), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Login(db.Model):
    """One way in for one user: a browser login session or an API login.

    Its refresh tokens are the family whose `family_id` is this id; its access tokens carry
    this id; a browser's session cookie carries it too. Ending the login (`ended_at`) ends all
    of them at once, on every host, because each request checks the row.
    """

    __tablename__ = "logins"
    __table_args__ = (Index("ix_logins_user_live", "user_id", "ended_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("lgn"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    user_agent: Mapped[str | None] = mapped_column(String(256))
    remember: Mapped[bool] = mapped_column(db.Boolean, nullable=False, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsedToken(db.Model):
    """A one-time token that has been used (its SHA-256): the primary key makes "use once"
    the database's rule, so of simultaneous uses exactly one inserts (`auth/once.py`)."""

    __tablename__ = "used_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # After this the token is refused by its own expiry anyway: the row may be purged.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class MailMessage(db.Model):
    """One email in the outbox (`codexweb/outbox.py`): what to send to whom, not the email
    itself, so no link or token is ever stored; its status and delivery attempts."""

    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("msg"))
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    # None: a stand-in queued for an unknown address (same work either way); dropped unsent.
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    base_url: Mapped[str] = mapped_column(String(512), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # pending -> sent | dropped | failed (given up after MAIL_MAX_ATTEMPTS)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(64))


class SigningKeyRecord(db.Model):
    """A ChatKit signing key (Ed25519), its private JWK sealed (codexweb/codex/keys.py).

    `sequence` orders the keys and, being the primary key, makes creating the first key
    race-free across workers and hosts. The current key is the newest not retired.
    """

    __tablename__ = "signing_keys"

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kid: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sealed_jwk: Mapped[str] = mapped_column(db.Text, nullable=False)


# The ChatKit runtime's store (CONTRACT §4b) ------------------------------------------------
# Each row names its Codex session, so every query of the store is scoped by one indexed
# column, and deleting a session (ON DELETE CASCADE) takes its whole transcript with it.
# `data` holds the SDK's own JSON of the thread, item or attachment, as it saved it.


class ChatKitThread(db.Model):
    __tablename__ = "chatkit_threads"
    __table_args__ = (
        Index("ix_chatkit_threads_session_created", "codex_session_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    codex_session_id: Mapped[str] = mapped_column(
        ForeignKey("codex_sessions.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class ChatKitItem(db.Model):
    """One thread item. `position` is the insertion order, the transcript's order."""

    __tablename__ = "chatkit_items"
    __table_args__ = (
        Index("uq_chatkit_items_thread_item", "thread_id", "item_id", unique=True),
        Index("ix_chatkit_items_session", "codex_session_id"),
    )

    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(String(64), nullable=False)
    thread_id: Mapped[str] = mapped_column(
        ForeignKey("chatkit_threads.id", ondelete="CASCADE"), nullable=False
    )
    codex_session_id: Mapped[str] = mapped_column(
        ForeignKey("codex_sessions.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # The user's verdict on the item (`items.feedback`): "positive" or "negative", the last
    # one given, and when.
    feedback: Mapped[str | None] = mapped_column(String(16))
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChatKitAttachment(db.Model):
    """Attachment metadata only; codexweb's runtime accepts no uploads of its own."""

    __tablename__ = "chatkit_attachments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    codex_session_id: Mapped[str] = mapped_column(
        ForeignKey("codex_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
