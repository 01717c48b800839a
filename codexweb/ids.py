"""Opaque, unguessable identifiers with a readable prefix (`usr_…`, `cxs_…`, `cks_…`)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    # 18 random bytes = 144 bits: unguessable, and 24 URL-safe characters after the prefix.
    return f"{prefix}_{secrets.token_urlsafe(18)}"
