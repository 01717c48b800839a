"""Keep emailed tokens out of access logs.

Verification, reset and email-change links carry their token in the URL path
(`/verify-email/<token>`, `/reset-password/<token>`, `/confirm-email/<token>`, as CONTRACT.md
§3 prescribes), and every access log prints request
paths. `redact_token_paths` masks the token; the werkzeug filter (dev server) and gunicorn's
access logger (`gunicorn.conf.py`) run every line through it.
"""

from __future__ import annotations

import logging
import re

_TOKEN_PATH = re.compile(
    r"(/(?:verify-email|reset-password|confirm-email)/)(?!resend(?:[/?#\s\"]|$))[^/?#\s\"]+"
)
# The single sign-on callback carries the authorization code and state in its query string;
# gunicorn's access log drops query strings, the dev server's request line does not.
_CALLBACK_QUERY = re.compile(r"(/auth/callback)\?[^#\s\"]*")
REDACTED = "[redacted]"


def redact_token_paths(text: str) -> str:
    text = _CALLBACK_QUERY.sub(r"\1?" + REDACTED, text)
    return _TOKEN_PATH.sub(r"\1" + REDACTED, text)


class TokenPathFilter(logging.Filter):
    """Masks token paths in a log record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_token_paths(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_token_paths(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def install_werkzeug_filter() -> None:
    """Redact the dev server's request lines (idempotent: many apps share the logger)."""
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(existing, TokenPathFilter) for existing in logger.filters):
        logger.addFilter(TokenPathFilter())
