"""The one source of "now" for the whole application.

Every rule that compares times (token lifetimes, session expiry) asks `utcnow()`, so tests
can freeze or advance the clock with `clock.freeze(...)` instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime

_frozen: datetime | None = None


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (frozen in tests when asked)."""
    return _frozen if _frozen is not None else datetime.now(UTC)


def freeze(moment: datetime | None) -> None:
    """Pin `utcnow()` to `moment` (aware UTC); `None` lets time run again. For tests only."""
    global _frozen
    _frozen = moment


def isoformat(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a `Z`, second precision: the one time format of the API."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
