"""The tables: users, refresh tokens, Codex sessions, ChatKit sessions, and the ChatKit
runtime's threads, items and attachments.

Times are stored as naive UTC (SQLite has no time zones) and come back aware through
`UTCDateTime`, so every comparison in the domain code is between aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, TypeDecorator, text
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


class ChatKitAttachment(db.Model):
    """Attachment metadata only; codexweb's runtime accepts no uploads of its own."""

    __tablename__ = "chatkit_attachments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    codex_session_id: Mapped[str] = mapped_column(
        ForeignKey("codex_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
