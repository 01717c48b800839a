"""JSON shapes of the accounts API."""

from __future__ import annotations

from typing import Any

from ..clock import isoformat
from ..models import User


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "created_at": isoformat(user.created_at),
    }
