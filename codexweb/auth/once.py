"""Single-use tokens, single-use under any concurrency.

A signed token (a reset link, an email-change link) proves who it is for; whether it was
used already is the database's to say. `consume_once` inserts the token's hash into
`used_tokens` inside the caller's transaction: the primary key lets exactly one of any
number of simultaneous uses insert; the others fail on the unique key (PostgreSQL makes them
wait for the winner's commit first, SQLite serialises writers) and get `token_invalid`. When
the caller's transaction rolls back, the token stays unused.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from ..clock import utcnow
from ..extensions import db
from ..models import UsedToken
from .tokens import TokenError


def consume_once(purpose: str, token: str, *, expires_at: datetime) -> None:
    """Mark `token` used (flushed, not committed: the caller commits with its own change), or
    raise `TokenError("token_invalid")` when it was used before. Rolls back on refusal."""
    digest = hashlib.sha256(f"{purpose}:{token}".encode()).hexdigest()
    db.session.add(UsedToken(token_hash=digest, purpose=purpose, expires_at=expires_at))
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise TokenError("token_invalid") from None


def purge_used_tokens() -> int:
    """Forget used tokens that have expired on their own; how many. Commits."""
    removed = db.session.execute(delete(UsedToken).where(UsedToken.expires_at <= utcnow()))
    db.session.commit()
    return removed.rowcount
