"""The rules of a Codex session's life, in one place for the JSON API, the pages and the CLI.

- At most one **active** session per (user, placement, agent): the partial unique index
  `uq_codex_sessions_one_active` decides, so concurrent creates cannot both win.
- Expiry: idle `CODEX_SESSION_IDLE_TTL`, sliding on activity (create, resume, token mint),
  capped by `CODEX_SESSION_MAX_AGE` from creation. A session past `expires_at` reads
  `expired` everywhere at once (`effective_status`); `purge_expired` persists that later.
- Someone else's session, or a deleted one, does not exist for the caller (404).

No `request`, no templates: callers pass the user and plain values.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import current_app
from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from ..clock import isoformat, utcnow
from ..errors import Problem, invalid_request
from ..extensions import db
from ..logging import emit
from ..models import (
    ChatKitAttachment,
    ChatKitItem,
    ChatKitSession,
    ChatKitThread,
    CodexSession,
    User,
)

STATUSES = ("active", "closed", "expired")
LIMIT_MAX = 100
LIMIT_DEFAULT = 20
# A lost race for the one active slot is retried this often when the winner vanished
# (closed or expired between our insert and our look-up) before giving up with a 503.
_OPEN_ATTEMPTS = 3


class SessionExists(Exception):
    """An active session for this user + placement + agent already exists: `.session`."""

    def __init__(self, session: CodexSession) -> None:
        super().__init__(session.id)
        self.session = session


@dataclass(frozen=True)
class Agent:
    agent_id: str
    name: str
    placements: list[str]
    workflow_id: str | None = None


@dataclass(frozen=True)
class PurgeReport:
    expired: int
    chatkit_ended: int
    deleted: int

    def summary(self) -> str:
        return (
            f"expired {self.expired} session(s), ended {self.chatkit_ended} ChatKit "
            f"session(s), deleted {self.deleted} old session(s)"
        )


# Agents and placements -------------------------------------------------------------------


def available_agents() -> list[Agent]:
    """The configured agents, each with the configured placements it may be used in."""
    placements = list(current_app.config["CODEX_PLACEMENTS"])
    agents = []
    for agent_id, spec in current_app.config["CODEX_AGENTS"].items():
        allowed = spec.get("placements") or placements
        agents.append(
            Agent(
                agent_id=agent_id,
                name=spec.get("name") or agent_id,
                placements=[name for name in allowed if name in placements],
                workflow_id=spec.get("workflow_id"),
            )
        )
    return agents


def find_agent(agent_id: str) -> Agent | None:
    return next((agent for agent in available_agents() if agent.agent_id == agent_id), None)


def _validate_new_session(
    placement: Any, agent_id: Any, context: Any, metadata: Any
) -> list[dict[str, str]]:
    errors = []
    placements = current_app.config["CODEX_PLACEMENTS"]
    agent = find_agent(agent_id) if isinstance(agent_id, str) else None
    if agent is None:
        errors.append({"field": "agent_id", "message": "Unknown agent."})
    if not isinstance(placement, str) or placement not in placements:
        known = ", ".join(placements)
        errors.append({"field": "placement", "message": f"Unknown placement; one of: {known}."})
    elif agent is not None and placement not in agent.placements:
        errors.append(
            {"field": "placement", "message": f"Agent {agent.agent_id} is not offered here."}
        )
    for field, value in (("context", context), ("metadata", metadata)):
        message = _json_object_problem(value)
        if message:
            errors.append({"field": field, "message": message})
    return errors


def _json_object_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "Must be a JSON object."
    limit = current_app.config["CODEX_CONTEXT_MAX_BYTES"]
    try:
        size = len(
            json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        )
    except (TypeError, ValueError):
        return "Must be a JSON object."
    if size > limit:
        return f"Must be at most {limit} bytes as JSON."
    return None


# Time ------------------------------------------------------------------------------------


def effective_status(session: CodexSession, now: datetime | None = None) -> str:
    """The status a user sees: an active session past its expiry is already `expired`."""
    if session.status == "active" and session.expires_at <= (now or utcnow()):
        return "expired"
    return session.status


def _expiry(created_at: datetime, now: datetime) -> datetime:
    config = current_app.config
    idle = now + timedelta(seconds=config["CODEX_SESSION_IDLE_TTL"])
    return min(idle, created_at + timedelta(seconds=config["CODEX_SESSION_MAX_AGE"]))


# The hot paths' statements are built once (with bound parameters): building a statement and
# its cache key per request cost more Python than running it (docs/PERFORMANCE.md, round 2).
_TOUCH = (
    update(CodexSession)
    .where(
        CodexSession.id == bindparam("session_id"),
        CodexSession.status == "active",
        CodexSession.expires_at > bindparam("now"),
    )
    .values(last_active_at=bindparam("now"), expires_at=bindparam("expires_at"))
    .execution_options(synchronize_session=False)
)


def touch(session: CodexSession, *, commit: bool = True) -> bool:
    """Record activity: slide the idle expiry (capped by the maximum age).

    One conditional UPDATE, so a session closed or expired meanwhile is never revived.
    Returns False (and changes nothing) when the session is no longer active.

    Coalesced: a session touched less than `CODEX_SESSION_TOUCH_INTERVAL` seconds ago is not
    written again (its expiry then lags by less than that interval, against an idle TTL of
    half an hour), so most `/current` calls and token mints stay read-only: no write lock,
    no WAL append. The caller keeps the stored expiry, which is what it must not exceed.
    """
    now = utcnow()
    if _touched_recently(session, now):
        return effective_status(session, now) == "active"
    expires_at = _expiry(session.created_at, now)
    result = db.session.execute(
        _TOUCH, {"session_id": session.id, "now": now, "expires_at": expires_at}
    )
    if result.rowcount != 1:
        return False
    # The row is already written: update the loaded object without a second UPDATE.
    set_committed_value(session, "last_active_at", now)
    set_committed_value(session, "expires_at", expires_at)
    if commit:
        db.session.commit()
    return True


def _touched_recently(session: CodexSession, now: datetime) -> bool:
    interval = timedelta(seconds=current_app.config["CODEX_SESSION_TOUCH_INTERVAL"])
    return timedelta(0) <= now - session.last_active_at < interval


# Opening ---------------------------------------------------------------------------------


def open_session(
    user: User,
    *,
    placement: str,
    agent_id: str,
    context: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> CodexSession:
    """Create the user's active session for this placement and agent.

    Raises `invalid_request` (422) for an unknown agent or placement or a bad context, and
    `SessionExists` with the winner when an active session already holds the slot.
    """
    errors = _validate_new_session(placement, agent_id, context, metadata)
    if errors:
        raise invalid_request(errors)
    for _ in range(_OPEN_ATTEMPTS):
        try:
            session = _insert_session(user, placement, agent_id, context or {}, metadata or {})
        except IntegrityError:
            db.session.rollback()
            winner = resolve_current(user, placement=placement, agent_id=agent_id)
            if winner is None:
                continue  # the winner ended in between: the slot is free again
            emit("codex.session.conflict", **_event_fields(winner))
            raise SessionExists(winner) from None
        emit("codex.session.created", **_event_fields(session))
        return session
    raise Problem(503, "unavailable", "Could not start the session; please retry.")


def _insert_session(
    user: User, placement: str, agent_id: str, context: dict, metadata: dict
) -> CodexSession:
    from .chatkit import get_provider  # chatkit imports this module: import at call time

    now = utcnow()
    # The index counts stored statuses: an active row past its expiry would block the new
    # session, so persist its expiry first, in the same transaction as the insert.
    stale, ended = _expire_stale(user.id, placement, agent_id, now)
    session = CodexSession(
        user_id=user.id,
        placement=placement,
        agent_id=agent_id,
        context=context,
        meta=metadata,
        status="active",
        created_at=now,
        last_active_at=now,
        expires_at=_expiry(now, now),
    )
    db.session.add(session)
    db.session.flush()  # IntegrityError here when another active session holds the slot
    get_provider().open_record(session)
    db.session.commit()
    _release_pending(ended)
    for expired in stale:
        emit("codex.session.expired", **_event_fields(expired))
    return session


def _expire_stale(
    user_id: str, placement: str, agent_id: str, now: datetime
) -> tuple[list[CodexSession], list[ChatKitSession]]:
    """Mark the slot's lapsed active sessions expired; they and the ChatKit records ended."""
    parameters = {"user_id": user_id, "placement": placement, "agent": agent_id, "now": now}
    stale = db.session.scalars(_STALE_IN_SLOT, parameters).all()
    ended = []
    for session in stale:
        session.status = "expired"
        ended += _end_chatkit_sessions(session)
    db.session.flush()
    return list(stale), ended


# Built once: every session start runs it (see `_OWNED_SESSION`).
_STALE_IN_SLOT = select(CodexSession).where(
    CodexSession.user_id == bindparam("user_id"),
    CodexSession.placement == bindparam("placement"),
    CodexSession.agent_id == bindparam("agent"),
    CodexSession.status == "active",
    CodexSession.expires_at <= bindparam("now"),
)


# Reading ---------------------------------------------------------------------------------


def resolve_current(
    user: User, *, placement: str | None = None, agent_id: str | None = None
) -> CodexSession | None:
    """The user's most recently active, unexpired session matching the filters."""
    query = _current_query(placement is not None, agent_id is not None)
    parameters = {"user_id": user.id, "now": utcnow(), "placement": placement, "agent": agent_id}
    return db.session.scalars(query, parameters).first()


@functools.cache
def _current_query(by_placement: bool, by_agent: bool):
    query = select(CodexSession).where(
        CodexSession.user_id == bindparam("user_id"),
        CodexSession.status == "active",
        CodexSession.expires_at > bindparam("now"),
        CodexSession.deleted_at.is_(None),
    )
    if by_placement:
        query = query.where(CodexSession.placement == bindparam("placement"))
    if by_agent:
        query = query.where(CodexSession.agent_id == bindparam("agent"))
    query = query.order_by(
        CodexSession.last_active_at.desc(), CodexSession.created_at.desc(), CodexSession.id
    )
    return query.limit(1)


def session_not_found() -> Problem:
    return Problem(404, "session_not_found", "No such session.")


def checked_session_id(session_id: Any) -> str:
    """`session_id` if it could name a session at all; a 404 otherwise (never a 500)."""
    if not _could_be_session_id(session_id):
        raise session_not_found()
    return session_id


def _could_be_session_id(value: Any) -> bool:
    # PostgreSQL refuses NUL in text (DataError, a 500) where SQLite just finds no row.
    return isinstance(value, str) and 0 < len(value) <= 40 and "\x00" not in value


def get_owned_session(user: User, session_id: Any) -> CodexSession:
    """The caller's session; anything else (unknown, malformed, deleted, not theirs) is 404."""
    session = find_owned_session(user.id, session_id)
    if session is None:
        raise session_not_found()
    return session


def find_owned_session(user_id: str, session_id: Any) -> CodexSession | None:
    """The user's session by id, unless deleted; None for anything else, malformed ids too."""
    if not _could_be_session_id(session_id):
        return None
    return db.session.scalars(
        _OWNED_SESSION, {"session_id": session_id, "user_id": user_id}
    ).first()


# Whose session it is, and that it is not deleted: every owned-session lookup filters by these.
OWNED_SESSION_FILTER = (
    CodexSession.id == bindparam("session_id"),
    CodexSession.user_id == bindparam("user_id"),
    CodexSession.deleted_at.is_(None),
)
_OWNED_SESSION = select(CodexSession).where(*OWNED_SESSION_FILTER)


def list_sessions(
    user: User, *, status: str | None = None, limit: int = LIMIT_DEFAULT, cursor: str | None = None
) -> tuple[list[CodexSession], str | None]:
    """The user's sessions, newest first, one page at a time.

    Keyset pagination on (created_at, id): a session created while a client pages through
    the list lands before the first page and never shifts or repeats later pages.
    """
    errors = []
    if status is not None and status not in STATUSES:
        errors.append({"field": "status", "message": f"One of: {', '.join(STATUSES)}."})
    after = parse_page(limit, cursor, errors)

    query = select(CodexSession).where(
        CodexSession.user_id == user.id, CodexSession.deleted_at.is_(None)
    )
    if status is not None:
        query = query.where(_status_filter(status, utcnow()))
    rows = db.session.scalars(
        keyset_page(query, CodexSession.created_at, CodexSession.id, after, limit)
    ).all()
    return page_with_cursor(list(rows), limit)


def _status_filter(status: str, now: datetime):
    lapsed = and_(CodexSession.status == "active", CodexSession.expires_at <= now)
    if status == "active":
        return and_(CodexSession.status == "active", CodexSession.expires_at > now)
    if status == "expired":
        return or_(CodexSession.status == "expired", lapsed)
    return CodexSession.status == status


def parse_page(
    limit: Any, cursor: str | None, errors: list[dict[str, str]] | None = None
) -> tuple[datetime, str] | None:
    """Check a keyset-paged list's `limit` and `cursor` (422 naming every bad argument, with
    the caller's own `errors`); return the (created_at, id) to continue after."""
    errors = list(errors or [])
    if not isinstance(limit, int) or not 1 <= limit <= LIMIT_MAX:
        errors.append({"field": "limit", "message": f"An integer from 1 to {LIMIT_MAX}."})
    after = decode_cursor(cursor) if cursor is not None else None
    if cursor is not None and after is None:
        errors.append({"field": "cursor", "message": "Not a cursor this API returned."})
    if errors:
        raise invalid_request(errors)
    return after


def keyset_page(query, created_column, id_column, after: tuple[datetime, str] | None, limit: int):
    """`query` narrowed to the page after `after`, newest first, with one look-ahead row."""
    if after is not None:
        created_at, row_id = after
        query = query.where(
            or_(
                created_column < created_at,
                and_(created_column == created_at, id_column < row_id),
            )
        )
    # One extra row tells whether another page exists.
    return query.order_by(created_column.desc(), id_column.desc()).limit(limit + 1)


def page_with_cursor(rows: list, limit: int) -> tuple[list, str | None]:
    """Trim the look-ahead row; the cursor points after the last row returned."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """The (created_at, id) a cursor stands for, or None for anything we did not issue."""
    if not isinstance(cursor, str) or len(cursor) > 200:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None or not isinstance(row_id, str):
            return None
        # Normalised here: an offset that pushes the time past year 1 or 9999 is no cursor.
        return created_at.astimezone(UTC), row_id
    except (binascii.Error, ValueError, TypeError, OverflowError):
        return None


def parse_limit(limit: Any) -> int:
    """A query-string `limit` as an int (422 when it is not one); its range is checked later."""
    if limit is None or limit == "":
        return LIMIT_DEFAULT
    try:
        return int(limit)
    except (TypeError, ValueError):
        raise invalid_request(
            [{"field": "limit", "message": f"An integer from 1 to {LIMIT_MAX}."}]
        ) from None


# Ending ----------------------------------------------------------------------------------


def close_session(user: User, session_id: str) -> CodexSession:
    """Close the caller's session. Idempotent: closing a closed session changes nothing.

    An expired session is closed too: the user's explicit "close" is the last word.
    """
    session = get_owned_session(user, session_id)
    if session.status == "closed":
        return session
    session.status = "closed"
    session.closed_at = utcnow()
    ended = _end_chatkit_sessions(session)
    db.session.commit()
    _release_pending(ended)
    emit("codex.session.closed", **_event_fields(session))
    return session


def delete_session(user: User, session_id: str) -> None:
    """Close the caller's session and hide it from every read for good (404 from now on)."""
    session = get_owned_session(user, session_id)
    now = utcnow()
    if session.status == "active":
        session.status = "closed"
        session.closed_at = now
    session.deleted_at = now
    ended = _end_chatkit_sessions(session)
    delete_transcripts([session.id])
    db.session.commit()
    _release_pending(ended)
    emit("codex.session.deleted", **_event_fields(session))


def _end_chatkit_sessions(session: CodexSession) -> list[ChatKitSession]:
    """End the ChatKit side of a Codex session that is no longer active."""
    from .chatkit import end_chatkit_sessions  # chatkit imports this module

    return end_chatkit_sessions(session)


def _release_pending(ended: list[ChatKitSession]) -> None:
    """After the commit: let providers release what they hold upstream.

    Only records left `cancel_pending` hold anything (hosted ones); a local record holds
    nothing, and closing its session needs no further query nor commit.
    """
    from .chatkit import release_chatkit_sessions

    pending = sorted({record.codex_session_id for record in ended if record.cancel_pending})
    if pending:
        release_chatkit_sessions(pending)


def delete_transcripts(codex_session_ids: list[str]) -> None:
    """Remove the ChatKit threads, items and attachments of these sessions (no commit).

    Explicit, children first, rather than left to ON DELETE CASCADE: a deleted session's row
    stays for audit, but its conversation must not.
    """
    for model in (ChatKitItem, ChatKitThread, ChatKitAttachment):
        db.session.execute(delete(model).where(model.codex_session_id.in_(codex_session_ids)))


# The conversation ------------------------------------------------------------------------


# Built once: every message in a thread other than the current one runs it.
_SET_CURRENT_THREAD = (
    update(CodexSession)
    .where(CodexSession.id == bindparam("session_id"))
    .values(thread_id=bindparam("thread_id"))
    .execution_options(synchronize_session=False)
)


def set_current_thread(session: CodexSession, thread_id: str, *, commit: bool = True) -> None:
    """Make `thread_id` the session's current thread (the last one the user wrote in).

    A one-column UPDATE that leaves status and expiry to their own rules; the loaded object
    is kept in step without a second statement.
    """
    if session.thread_id == thread_id:
        return
    db.session.execute(_SET_CURRENT_THREAD, {"session_id": session.id, "thread_id": thread_id})
    set_committed_value(session, "thread_id", thread_id)
    if commit:
        db.session.commit()


_CLEAR_CURRENT_THREAD = (
    update(CodexSession)
    .where(
        CodexSession.id == bindparam("session_id"),
        CodexSession.thread_id == bindparam("deleted_thread"),
    )
    .values(thread_id=None)
    .execution_options(synchronize_session=False)
)


def clear_current_thread(session: CodexSession, thread_id: str) -> None:
    """The session has no current thread once `thread_id`, if it is the current one, is
    deleted. Conditional in the database: a message that made another thread current
    meanwhile keeps it so. The caller commits."""
    db.session.execute(
        _CLEAR_CURRENT_THREAD, {"session_id": session.id, "deleted_thread": thread_id}
    )
    if session.thread_id == thread_id:
        set_committed_value(session, "thread_id", None)


# Housekeeping ----------------------------------------------------------------------------


def purge_expired(now: datetime | None = None) -> PurgeReport:
    """Persist lapsed expiries, end their ChatKit sessions, delete what retention allows."""
    from .chatkit import end_chatkit_sessions, release_chatkit_sessions

    now = now or utcnow()
    lapsed = db.session.scalars(
        select(CodexSession).where(CodexSession.status == "active", CodexSession.expires_at <= now)
    ).all()
    expired = []
    for session in lapsed:
        # Conditional: a session resumed by a request since we read it stays active.
        result = db.session.execute(
            update(CodexSession)
            .where(
                CodexSession.id == session.id,
                CodexSession.status == "active",
                CodexSession.expires_at <= now,
            )
            .values(status="expired")
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            expired.append(session)
    db.session.commit()
    for session in expired:
        db.session.refresh(session)
        emit("codex.session.expired", **_event_fields(session))

    ended = 0
    # IN (subquery), not JOIN + DISTINCT: PostgreSQL has no equality for `json` columns, so
    # DISTINCT over a whole CodexSession row fails there.
    leftovers = db.session.scalars(
        select(CodexSession).where(
            CodexSession.status != "active",
            CodexSession.id.in_(
                select(ChatKitSession.codex_session_id).where(ChatKitSession.status == "active")
            ),
        )
    ).all()
    for session in leftovers:
        ended += len(end_chatkit_sessions(session))
    db.session.commit()
    # Every pending release, including earlier failures: outside any write transaction.
    release_chatkit_sessions()

    deleted = _delete_old(now - timedelta(seconds=current_app.config["CODEX_SESSION_RETENTION"]))
    return PurgeReport(expired=len(expired), chatkit_ended=ended, deleted=deleted)


def _delete_old(cutoff: datetime, batch: int = 500) -> int:
    old = or_(
        CodexSession.deleted_at < cutoff,
        and_(CodexSession.status == "closed", CodexSession.closed_at < cutoff),
        and_(CodexSession.status == "expired", CodexSession.expires_at < cutoff),
    )
    deleted = 0
    # In batches: one transaction per batch, and within SQLite's bound-parameter limit.
    while ids := db.session.scalars(select(CodexSession.id).where(old).limit(batch)).all():
        # Explicit child delete: SQLite enforces ON DELETE CASCADE only with a pragma.
        db.session.execute(delete(ChatKitSession).where(ChatKitSession.codex_session_id.in_(ids)))
        delete_transcripts(ids)
        db.session.execute(delete(CodexSession).where(CodexSession.id.in_(ids)))
        db.session.commit()
        deleted += len(ids)
    return deleted


# Shapes and events -----------------------------------------------------------------------


def session_json(session: CodexSession, now: datetime | None = None) -> dict[str, Any]:
    """The SESSION shape of CONTRACT.md §4."""
    return {
        "session_id": session.id,
        "status": effective_status(session, now),
        "placement": session.placement,
        "agent_id": session.agent_id,
        "context": session.context or {},
        "metadata": session.meta or {},
        "created_at": isoformat(session.created_at),
        "last_active_at": isoformat(session.last_active_at),
        "expires_at": isoformat(session.expires_at),
        "closed_at": isoformat(session.closed_at),
        "thread_id": session.thread_id,
    }


def current_url(placement: str, agent_id: str) -> str:
    """Where a client finds the session that holds a slot (the 409's `current`)."""
    query = urlencode({"placement": placement, "agent_id": agent_id})
    return f"/api/codex/sessions/current?{query}"


def _event_fields(session: CodexSession) -> dict[str, Any]:
    return {
        "user_id": session.user_id,
        "session_id": session.id,
        "placement": session.placement,
        "agent_id": session.agent_id,
    }
